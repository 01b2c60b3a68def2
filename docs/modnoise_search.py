"""Search for the Fourier extraction's plateau at the paper's setting (the table in docs/modnoise.md).

Trains addition mod 113 (ReLU, cross-entropy, full-batch AdamW, weight decay 0.1) at one width with
`--seeds` replicas at one flip-noise rate, through the experiment's own code path
(reproduce.experiments.modnoise.execute), and prints per checkpoint and seed the test accuracy of the
model and of its per-neuron Fourier extraction (what `modnoise.fourier_extraction_recovers` reads),
and the step the noisy training set is memorized. `--bias` (the default) trains the paper's model with its
output bias μ, as the small tier does; `--no-bias` Gromov's bias-free network (the searches before issue
33's μ). `--mu-diagnosis` (with μ) also prints, at every checkpoint, the per-neuron extraction's test
accuracy with the trained μ dropped and the spread over classes (std, mean over test samples) of μ and
of the extracted network's logits: the stored extraction keeps μ. Run from the repository root, inside
a CPU slot:

    PYTHONPATH=. python docs/modnoise_search.py --width 2049 --epochs 400 --every 50 --seeds 3 --no-bias
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from reproduce.engine import TrainSpec
from reproduce.experiments import modnoise
from reproduce.experiments.modnoise import PAPER_ACTIVATION, PAPER_LR, PAPER_P, PAPER_WEIGHT_DECAY, Run, execute
from reproduce.measures.fourier import extract_per_neuron, group_order
from reproduce.models import two_layer_logits


def _fmt(values) -> str:
    return " ".join(f"{v:.3f}" for v in values)


def diagnose_mu(make_probe):
    """`make_probe` wrapped: each probe also prints the extraction without μ and the spreads of μ and of
    the extracted logits (the model's own numbers are unchanged: the wrapped probe's are returned)."""
    def wrapped(run, data, done=0):
        inner = make_probe(run, data, done)
        n_set = data.labels.shape[1]
        x_test, y_test = modnoise._inputs(run, data.pairs[n_set:]), data.targets[n_set:]
        lookup, epochs, calls = modnoise._lookup(run), modnoise.checkpoint_epochs(run), [done]

        def probe(model):
            epoch = epochs[calls[0]]
            calls[0] += 1
            with torch.no_grad():
                extracted = extract_per_neuron(model.w_in, model.w_out, group_order(run.op, run.p))
                dropped = modnoise._accuracy(*extracted, x_test, y_test, run.activation, lookup)
                logits = two_layer_logits(*extracted, x_test, run.activation, lookup=lookup)
                print(f"  epoch {epoch:g}: extraction without mu {_fmt(dropped.tolist())}; std over classes: mu "
                      f"{_fmt(model.bias.std(-1).flatten().tolist())}, extracted logits {_fmt(logits.std(-1).mean(-1).tolist())}",
                      flush=True)
            return inner(model)
        return probe
    return wrapped


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--width", type=int, default=2049)
    ap.add_argument("--epochs", type=int, default=400)
    ap.add_argument("--every", type=int, default=50, help="a checkpoint every this many epochs")
    ap.add_argument("--lr", type=float, default=PAPER_LR)
    ap.add_argument("--noise", type=float, default=0.8)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0, help="base seed (replica seeds 100 seed + k)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--bias", action=argparse.BooleanOptionalAction, default=True,
                    help="the paper's output bias mu (--no-bias: Gromov's bias-free network)")
    ap.add_argument("--mu-diagnosis", action="store_true", help="also the extraction with mu dropped (with --bias)")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    checkpoints = tuple(float(e) for e in range(a.every, a.epochs + 1, a.every))
    spec = TrainSpec(optimizer="adamw", lr=a.lr, batch_size=0, epochs=a.epochs, weight_decay=PAPER_WEIGHT_DECAY,
                     checkpoints=checkpoints)
    run = Run("add", a.width, (("flip", a.noise),), spec, a.seed, p=PAPER_P, activation=PAPER_ACTIVATION,
              seeds_per_setting=a.seeds, output_bias=a.bias)
    if a.mu_diagnosis and a.bias:
        modnoise.make_probe = diagnose_mu(modnoise.make_probe)  # execute looks make_probe up at call time
    start = time.perf_counter()
    ds = execute(run, torch.device("cpu"))
    wall = time.perf_counter() - start
    print(f"{vars(a)}: output_bias {ds.attrs['output_bias']}, {wall:.0f} s wall, train_seconds {ds.attrs['train_seconds']:.0f} "
          f"({ds.attrs['steps']} steps)", flush=True)
    acc = ds.test_accuracy
    noisy = ds.accuracy.sel(split="noisy") if "accuracy" in ds else None
    for e in acc.epoch.values:
        fourier = acc.sel(epoch=e, network="fourier").values
        model = acc.sel(epoch=e, network="model").values
        line = f"  epoch {e:g}: extraction {' '.join(f'{v:.3f}' for v in fourier)} (mean {np.mean(fourier):.3f}); " \
               f"model {' '.join(f'{v:.3f}' for v in model)}"
        if noisy is not None:
            line += f"; noisy train {' '.join(f'{v:.3f}' for v in noisy.sel(epoch=e).values)}"
        print(line, flush=True)


if __name__ == "__main__":
    main()
