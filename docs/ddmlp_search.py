"""Search for a CPU setting that shows ddmlp's epoch-wise double descent (the table in docs/ddmlp.md).

Trains one model's stacked replicas (noisy + clean-label twin per seed) through the experiment's own
code path (reproduce.experiments.ddmlp.execute) and prints, per seed, the fall of test accuracy from
its first peak and the recovery after (the claim test's functions), the twins' fall, and for MLP3 the
test-loss rise and fall. Run from the repository root, inside a CPU slot:

    python docs/ddmlp_search.py --model mlp7 --n 512 --batch 0 --lr 1e-3 --epochs 2000 --seeds 2
"""

from __future__ import annotations

import argparse
import pickle
import time

import torch

from claims.test_ddmlp import double_descent, loss_rise_and_fall, outlier
from reproduce.engine import TrainSpec, log_schedule
from reproduce.experiments.ddmlp import QUICK_WIDTHS, Run, execute
from reproduce.figures.ddmlp import replicas


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--model", default="mlp7")
    p.add_argument("--n", type=int, default=512)
    p.add_argument("--n-test", type=int, default=1000)
    p.add_argument("--batch", type=int, default=0, help="0: full batch")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--optimizer", default="adam")
    p.add_argument("--epochs", type=float, default=1000)
    p.add_argument("--seeds", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--width-div", type=int, default=1, help="divide the quick widths by this")
    p.add_argument("--noise", type=float, default=0.3)
    p.add_argument("--save", default="", help="pickle the results here before reading them")
    a = p.parse_args()
    torch.set_num_threads(1)
    widths = tuple(w // a.width_div for w in QUICK_WIDTHS[a.model])
    first = 1.0 if a.batch == 0 else 0.01
    spec = TrainSpec(optimizer=a.optimizer, lr=a.lr, batch_size=a.batch, epochs=a.epochs,
                     checkpoints=log_schedule(a.epochs, first=first))
    run = Run(a.model, widths, "fashion_mnist", a.noise, spec, a.seed, seeds_per_setting=a.seeds, n_train=a.n,
              n_test=a.n_test)
    start = time.perf_counter()
    ds = execute(run, torch.device("cpu")).expand_dims(run=[0]).assign_coords(model=("run", [a.model]))
    seconds = time.perf_counter() - start
    if a.save:
        with open(a.save, "wb") as f:
            pickle.dump(ds, f)
    print(f"{vars(a)} widths {widths}: {seconds:.0f} s ({ds.attrs['steps']} steps, lr x steps "
          f"{a.lr * ds.attrs['steps']:.1f}, probes {ds.attrs['probe_seconds']:.0f} s)")
    for setting in ("noisy", "control"):
        for k, r in enumerate(replicas(ds, a.model, setting)):
            dd, loss = double_descent(r), loss_rise_and_fall(r)
            acc = r.accuracy.sel(split="test").values
            print(f"  {setting} seed {k}: fall {100 * dd['fall']:.1f} recovery {100 * dd['recovery']:+.1f} "
                  f"(peak->min at epoch {dd['minimum_epoch']:g}), test acc final {acc[-1]:.3f}, "
                  f"noisy fitted {float(r.accuracy.sel(split='noisy')[-1]):.3f}, "
                  f"loss rise {loss['rise']:.2f} fall {loss['fall']:.2f}")
            o = outlier(r)
            print(f"    outlier: r {o['r']:.1f} (layer {o['layer']}), runner-up / r {o['runner_up_share']:.2f}, "
                  f"growth {o['growth']:.1f}")


if __name__ == "__main__":
    main()
