"""Search for a CPU regime where smooth's sharpness peaks at the interpolation threshold (docs/smooth.md, issue 32).

Trains one setting (training images, resolution, optimizer, epochs) over a width grid through the
experiment's own code path (reproduce.experiments.smooth.execute, seeds stacked as replicas) and
prints, per width and seed, the claim's own numbers: training accuracy and cross-entropy on the
training (noisy) labels, the Jacobian norm (Eq. 2) and the tangent Hessian norm (Eq. 5) at the
training points (volume 0); then per seed the interpolation threshold, the argmax of each measure,
its grid steps from the threshold and the largest width / peak ratio (measures.sharpness). Every
width is saved (pickled dataset) as soon as it is trained, so a search cut short still reads.

    PYTHONPATH=. python docs/smooth_search.py --n 2000 --epochs 150 --lr 0.02 --widths 1 2 3 4 6 \
        --seeds 3 --save results/search/n2000

`--load PREFIX` re-reads saved widths. `--every E` adds probes every E epochs (the epoch-wise view
of Fig. 5; each probe costs the volume measures). The search uses one path of one strength (P = 1,
K = 1): the measures at volume 0 (the training points), which the peak claims judge, do not depend
on P and K.
"""

from __future__ import annotations

import argparse
import pickle
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
import xarray as xr

from reproduce.engine import TrainSpec
from reproduce.experiments.smooth import INTERPOLATION_TOLERANCE, Run, execute
from reproduce.measures.sharpness import VolumeSpec, interpolation_threshold, peak_at_threshold


def make_run(a, width: int) -> Run:
    """The search setting at one width; the small tier's data and noise protocol unless changed."""
    checkpoints = tuple(float(e) for e in np.arange(a.every, a.epochs, a.every)) if a.every else ()
    spec = TrainSpec(optimizer="sgd", lr=a.lr, momentum=0.9, batch_size=a.batch, epochs=a.epochs,
                     warmup_epochs=a.warmup, checkpoints=checkpoints)
    volumes = VolumeSpec(paths=1, strengths=1, chunk=125)
    return Run(f"search-n{a.n}-r{28 // a.downsample}", width, "fashion_mnist", "flip", 0.2, spec, volumes, a.seed,
               a.seeds, n_train=a.n, n_test=2000, downsample=a.downsample)


def train_width(a, width: int) -> xr.Dataset:
    torch.set_num_threads(a.threads)
    start = time.perf_counter()
    ds = execute(make_run(a, width), torch.device("cpu"))
    ds.attrs["wall_seconds"] = time.perf_counter() - start
    print(f"w={width}: {ds.attrs['wall_seconds']:.0f} s wall ({ds.attrs['steps']} steps, probes "
          f"{ds.attrs['probe_seconds']:.0f} s)", flush=True)
    return ds


def per_width(ds: xr.Dataset, epoch: float | None = None) -> dict[str, np.ndarray]:
    """Per seed at one epoch (default the last): accuracy, loss, Jacobian and Hessian at volume 0."""
    at = ds.isel(epoch=-1) if epoch is None else ds.sel(epoch=epoch)
    vm = at.volume_measure.sel(subset="all", volume=0)
    return dict(acc=at.accuracy.sel(split="train").values, ce=at.loss.sel(split="train").values,
                jac=vm.sel(measure="jacobian").values, hes=vm.sel(measure="hessian").values,
                jac_noisy=at.volume_measure.sel(subset="noisy", volume=0, measure="jacobian").values)


def report(results: dict[int, xr.Dataset]) -> None:
    widths = sorted(results)
    rows = {w: per_width(results[w]) for w in widths}
    seeds = len(rows[widths[0]]["acc"])
    for w in widths:
        r, s = rows[w], results[w].attrs
        fmt = lambda v: " ".join(f"{x:.3g}" for x in v)  # noqa: E731
        print(f"w={w} ({s.get('wall_seconds', s['train_seconds']):.0f} s): acc {fmt(r['acc'])} | CE {fmt(r['ce'])} | "
              f"J {fmt(r['jac'])} | J noisy {fmt(r['jac_noisy'])} | H {fmt(r['hes'])}")
    for k in range(seeds):
        err = [1 - rows[w]["acc"][k] for w in widths]
        t = interpolation_threshold(widths, err, INTERPOLATION_TOLERANCE)
        out = []
        for m in ("jac", "hes", "ce"):
            p = peak_at_threshold(widths, [rows[w][m][k] for w in widths], t)
            out.append(f"{m} argmax w={p['peak_width']} steps {p['grid_steps']} largest/peak {p['ratio']:.2g}")
        print(f"seed {k}: threshold w={t}; " + "; ".join(out))
    epochs = results[widths[0]].epoch.values
    if len(epochs) > 2:  # the epoch-wise view: Jacobian norm (seed mean) and train accuracy over epochs
        print("epoch-wise (seed mean): epoch " + " ".join(f"{e:g}" for e in epochs))
        for w in widths:
            vals = [per_width(results[w], e) for e in epochs]
            print(f"  w={w}: J " + " ".join(f"{v['jac'].mean():.3g}" for v in vals)
                  + " | acc " + " ".join(f"{v['acc'].mean():.3f}" for v in vals))


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--n", type=int, default=500)
    p.add_argument("--downsample", type=int, default=2, help="2: 14x14, 1: 28x28")
    p.add_argument("--lr", type=float, default=0.02)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--warmup", type=float, default=5)
    p.add_argument("--epochs", type=float, default=300)
    p.add_argument("--every", type=float, default=0, help="probe every E epochs as well (0: only 0 and the end)")
    p.add_argument("--widths", type=int, nargs="+", default=[1, 2, 3, 4, 6])
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--save", default="", help="prefix: each width pickled to PREFIX-wW.pkl")
    p.add_argument("--load", default="", help="prefix: read saved widths instead of training")
    a = p.parse_args()
    results = {}
    if a.load:
        for f in sorted(Path(a.load).parent.glob(Path(a.load).name + "-w*.pkl")):
            with open(f, "rb") as fh:
                ds = pickle.load(fh)
            results[int(ds.width)] = ds
    else:
        print(vars(a), flush=True)
        for w in a.widths:
            results[w] = train_width(a, w)
            if a.save:
                Path(a.save).parent.mkdir(parents=True, exist_ok=True)
                with open(f"{a.save}-w{w}.pkl", "wb") as fh:
                    pickle.dump(results[w], fh)
    report(results)


if __name__ == "__main__":
    main()
