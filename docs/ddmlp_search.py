"""Search for a CPU setting that shows ddmlp's epoch-wise double descent (the table in docs/ddmlp.md).

Trains one model's stacked replicas (noisy + clean-label twin per seed) through the experiment's own
code path (reproduce.experiments.ddmlp.execute) and prints, per seed, the claim's own numbers
(reproduce.claims.ddmlp): the fall of the smoothed test accuracy from its first peak and the recovery
after, the epoch the training set is fully fitted, the test-loss rise and fall, and the outlier ratio
r with its runner-up. Run from the repository root, inside a CPU slot:

    PYTHONPATH=. python docs/ddmlp_search.py --model mlp7 --n 1024 --batch 64 --lr 1e-3 --epochs 400 --seeds 3 \
        --width 0.25 --save /tmp/probe.pkl

`--softmax-output` trains the paper's softmax reading (a softmax layer fed to the cross-entropy).
`--width` scales every layer of the paper's widths by one factor (0.25: MLP7 512-512-256-256-128-128).
`--load FILE` reads a saved result instead of training (to re-read it after the measures change);
`--results DIR --tier small` reads a tier's stored results (`python -m reproduce --tier small --results DIR`),
every model trained there, as the claims read them.
"""

from __future__ import annotations

import argparse
import pickle
import time

import numpy as np
import torch

from reproduce.claims.ddmlp import double_descent, fitted_epoch, loss_rise_and_fall, outlier
from reproduce.engine import TrainSpec, log_schedule
from reproduce.experiments.ddmlp import SMALL_MANTISSAS, Run, execute, scaled_widths
from reproduce.store import replicas


def train(a) -> tuple[object, float]:
    torch.set_num_threads(a.threads)
    widths = scaled_widths(a.model, a.width)
    first = 1.0 if a.batch == 0 else 0.1
    spec = TrainSpec(optimizer=a.optimizer, lr=a.lr, batch_size=a.batch, epochs=a.epochs,
                     checkpoints=log_schedule(a.epochs, first=first, mantissas=SMALL_MANTISSAS))
    run = Run(a.model, widths, "fashion_mnist", a.noise, spec, a.seed, seeds_per_setting=a.seeds, n_train=a.n,
              n_test=a.n_test, softmax_output=a.softmax_output)
    start = time.perf_counter()
    ds = execute(run, torch.device("cpu")).expand_dims(run=[0]).assign_coords(model=("run", [a.model]))
    seconds = time.perf_counter() - start
    print(f"{vars(a)} widths {widths}: {seconds:.0f} s ({ds.attrs['steps']} steps, lr x steps "
          f"{a.lr * ds.attrs['steps']:.1f}, probes {ds.attrs['probe_seconds']:.0f} s)", flush=True)
    if a.save:
        with open(a.save, "wb") as f:
            pickle.dump(ds, f)
    return ds, seconds


def report(ds, model: str) -> None:
    for setting in ("noisy", "control"):
        for k, r in enumerate(replicas(ds, model, setting)):
            dd, raw, loss = double_descent(r), double_descent(r, decades=0), loss_rise_and_fall(r)
            acc = r.accuracy.sel(split="test").values
            o = outlier(r)
            print(f"  {setting} seed {k}: smoothed fall {100 * dd['fall']:.1f} recovery {100 * dd['recovery']:+.1f} "
                  f"(peak epoch {dd['peak_epoch']:g}, minimum epoch {dd['minimum_epoch']:g}); raw fall "
                  f"{100 * raw['fall']:.1f} recovery {100 * raw['recovery']:+.1f}; test acc final {acc[-1]:.3f}; "
                  f"train fully fitted at epoch {fitted_epoch(r):g}; loss rise {loss['rise']:.2f} fall {loss['fall']:.2f}; "
                  f"r {o['r']:.1f} (layer {o['layer']}), runner-up / r {o['runner_up_share']:.2f}")


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--model", default="mlp7")
    p.add_argument("--n", type=int, default=1024)
    p.add_argument("--n-test", type=int, default=2000)
    p.add_argument("--batch", type=int, default=64, help="0: full batch")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--optimizer", default="adam")
    p.add_argument("--epochs", type=float, default=400)
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--width", type=float, default=0.25, help="factor on the paper's widths")
    p.add_argument("--noise", type=float, default=0.3)
    p.add_argument("--softmax-output", action="store_true",
                   help="the paper's softmax reading: a softmax layer fed to the cross-entropy (Run.softmax_output)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--save", default="", help="pickle the results here before reading them")
    p.add_argument("--load", default="", help="read a saved result instead of training")
    p.add_argument("--results", default="", help="read a tier's stored results from this folder")
    p.add_argument("--tier", default="small")
    a = p.parse_args()
    if a.results:  # whatever runs of the tier are stored (a tier cut short still reads)
        from pathlib import Path

        from reproduce.store import Store

        store = Store(Path(a.results))
        names = sorted(p.stem for p in (Path(a.results) / a.tier / "ddmlp").glob("*.nc"))
        if not names:
            raise SystemExit(f"no {a.tier} ddmlp results in {a.results}")
        ds = store.combine(a.tier, "ddmlp", names)
        if ds.model.ndim == 0:  # one run stored: its model is a scalar coordinate
            ds = ds.assign_coords(model=("run", [str(ds.model.values)]))
        for model in np.atleast_1d(ds.model.values):
            print(f"{model}:")
            report(ds, str(model))
        return
    if a.load:
        with open(a.load, "rb") as f:
            ds = pickle.load(f)
        a.model = str(ds.model.values[0])
    else:
        ds, _ = train(a)
    report(ds, a.model)


if __name__ == "__main__":
    main()
