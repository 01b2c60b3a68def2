"""The modular-arithmetic paper's figures, one per claim: a neuron-by-frequency heat map (Fourier
extraction); test accuracy against width (width scaling); model, partition and Fourier extraction
against noise level (partition); learning curves of the clean and noisy training subsets (early
memorization). Every seed is drawn (thin lines); `replicas` picks a setting's seeds by coordinates."""

from __future__ import annotations

import numpy as np
import xarray as xr
from matplotlib.figure import Figure

from reproduce.experiments.modnoise import ORDER_LEVEL, WIDTH_NOISE

NETWORK_STYLE = {"model": ("model", "k-o"), "fourier": ("Fourier extraction", "C0-s"),
                 "strength": ("Strength top k (paper, task-agnostic)", "C1-v"), "ipr": ("IPR top k (task-aware)", "C2-D"),
                 "partition": ("held-out ablation", "C3-^")}


def run_of(ds: xr.Dataset, model: str) -> xr.Dataset:
    """One run, found by its `model` coordinate (e.g. 'add-m513'), not its file name."""
    return ds.isel(run=list(ds["model"].values).index(model))


def replica(ds: xr.Dataset, model: str, setting: str = "flip", rate: float = 0.8) -> xr.Dataset:
    """The first seed's replica of `model`'s run with this noise setting and rate (see `replicas`)."""
    return replicas(ds, model, setting, rate)[0]


def replicas(ds: xr.Dataset, model: str, setting: str = "flip", rate: float = 0.8) -> list[xr.Dataset]:
    """Every seed's replica of `model`'s run with this noise setting and rate, in seed order: the
    unit of evidence of a claim (padding dropped)."""
    one = run_of(ds, model)
    hits = np.nonzero((one["setting"].values == setting) & np.isclose(one["noise_rate"].values, rate))[0]
    if not hits.size:
        raise KeyError(f"{model} has no replica {setting} {rate}")
    out = []
    for i in hits:
        rep = one.isel(replica=int(i)).dropna("epoch", how="all", subset=["accuracy"])
        out.append(rep.dropna("neuron", how="all", subset=["concentration"]) if "neuron" in rep.dims else rep)
    return out


def models(ds: xr.Dataset, op: str, variant: str = "") -> list[tuple[int, str]]:
    """(width, model) of every run of operation `op` and this variant ("" the main runs; "adam", "adamw"
    the learning-order runs beside them), by width."""
    # a coordinate that is the same in every run (one width, one operation) stays scalar when runs combine
    n = ds.sizes["run"]
    model, o, w = (np.broadcast_to(ds[k].values, (n,)) for k in ("model", "op", "width"))
    v = np.broadcast_to(ds["variant"].values, (n,)) if "variant" in ds.coords else np.full(n, "")
    return sorted((int(wi), str(m)) for m, oi, wi, vi in zip(model, o, w, v) if oi == op and str(vi) == variant)


def final_accuracy(run: xr.Dataset) -> dict[str, float]:
    """Test accuracy of the model and of each extracted subnetwork at one replica's final checkpoint."""
    last = run.test_accuracy.isel(epoch=-1)
    return {str(n): float(last.sel(network=n)) for n in last.network.values}


def _seeds(ax, x: list, per_seed: np.ndarray, style: str, label: str, **kw) -> None:
    """Every seed as a thin line, the seed mean as a thick one."""
    color = style[:-2] if len(style) > 2 else style[:-1]
    for y in per_seed:
        ax.plot(x, y, color=color, linewidth=0.6, alpha=0.4, **kw)
    ax.plot(x, per_seed.mean(0), color=color, marker=style[-1], label=label, **kw)


def _final(ds: xr.Dataset, model: str, rate: float, network: str) -> np.ndarray:
    """(seed,) final test accuracies of `network` over the seeds of `model` at `rate` flip noise."""
    return np.array([final_accuracy(r)[network] for r in replicas(ds, model, "flip", rate)])


def modnoise_width(ds: xr.Dataset) -> Figure:
    """Test accuracy of the model (and its Fourier extraction) against width M, addition, at every
    flip-noise level the width sweep holds; thin lines are seeds."""
    pairs = models(ds, "add")
    rates = sorted({float(r) for s, r in zip(run_of(ds, pairs[0][1]).setting.values, run_of(ds, pairs[0][1]).noise_rate.values)
                    if s == "flip"})
    fig = Figure(figsize=(4 * len(rates), 3.2))
    axes = fig.subplots(1, len(rates), squeeze=False, sharey=True)[0]
    for ax, rate in zip(axes, rates):
        have = [(w, m) for w, m in pairs if _has(ds, m, "flip", rate) and _has(ds, m, "flip", WIDTH_NOISE)]  # the sweep
        widths = [w for w, _ in have]
        for network in ("model", "fourier"):
            label, style = NETWORK_STYLE[network]
            _seeds(ax, widths, np.stack([_final(ds, m, rate, network) for _, m in have], 1), style, label)
        ax.set_xscale("log", base=2)
        ax.set_xlabel("width M (addition)")
        ax.set_title(f"{rate:.0%} flip noise", fontsize=9)
    axes[0].set_ylabel("test accuracy")
    axes[0].legend(fontsize=7)
    return fig


def modnoise_partition(ds: xr.Dataset) -> Figure:
    """Test accuracy of model, partition subnetwork and Fourier extraction against the flip-noise
    level, largest width of each operation; thin lines are seeds."""
    ops = [op for op in ("add", "sub", "mul") if op in set(np.atleast_1d(ds["op"].values))]
    fig = Figure(figsize=(4 * len(ops), 3.2))
    axes = fig.subplots(1, len(ops), squeeze=False, sharey=True)[0]
    for ax, op in zip(axes, ops):
        width, model = models(ds, op)[-1]
        one = run_of(ds, model)
        rates = sorted({float(r) for s, r in zip(one.setting.values, one.noise_rate.values) if s == "flip"})
        for network, (label, style) in NETWORK_STYLE.items():
            if network in one.network.values:  # runs made before the paper's scores have no Strength or IPR
                _seeds(ax, rates, np.stack([_final(ds, model, r, network) for r in rates], 1), style, label)
        ax.set_title(f"{op} mod {int(one.p)}, width {width}")
        ax.set_xlabel("flip noise level")
    axes[0].set_ylabel("test accuracy")
    axes[0].legend(fontsize=7)
    return fig


def _has(ds: xr.Dataset, model: str, setting: str, rate: float) -> bool:
    try:
        replica(ds, model, setting, rate)
        return True
    except KeyError:
        return False


def modnoise_heatmap(ds: xr.Dataset, model: str | None = None) -> Figure:
    """Neuron-by-frequency power of the input weights at the final checkpoint, neurons sorted by
    dominant frequency: 80% noise beside 0% and the 100%-noise control."""
    model = model or models(ds, "add")[-1][1]
    panels = [(s, r) for s, r in (("flip", 0.0), ("flip", 0.8), ("flip", 1.0)) if _has(ds, model, s, r)]
    fig = Figure(figsize=(4 * len(panels), 3.6))
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, (setting, rate) in zip(axes, panels):
        one = replica(ds, model, setting, rate)
        power = one.power.values
        power = power / power.sum(1, keepdims=True)
        order = np.lexsort((-one.concentration.values, one.dominant_frequency.values))
        ax.imshow(power[order], aspect="auto", interpolation="nearest", cmap="viridis",
                  extent=(0.5, power.shape[1] + 0.5, power.shape[0], 0))
        ax.set_title(f"{model}, {setting} {rate:.0%}, first seed: mean concentration {one.concentration.mean().item():.2f}", fontsize=8)
        ax.set_xlabel("frequency k" + (" (discrete-log basis)" if str(one.op.values) == "mul" else ""))
    axes[0].set_ylabel("neuron (sorted by dominant frequency)")
    return fig


def modnoise_learning_curves(ds: xr.Dataset, model: str | None = None) -> Figure:
    """Accuracy of the clean and noisy training subsets (against their training labels) over steps
    (full batch: a step is an epoch), every seed, with the step at which each subset reaches
    ORDER_LEVEL (the learning-order statistic) marked. One row per learning-order run (small: Adam and
    AdamW), one panel per flip-noise level and the tag control; else the main addition run at 80%."""
    rows = [m for v in ("adam", "adamw") for _, m in models(ds, "add", v)[-1:]] or [model or models(ds, "add")[-1][1]]
    panels = {m: _order_panels(run_of(ds, m)) for m in rows}
    columns = max(len(v) for v in panels.values())
    fig = Figure(figsize=(3.2 * columns, 2.8 * len(rows)), layout="constrained")
    axes = fig.subplots(len(rows), columns, sharey=True, squeeze=False)
    subsets = (("clean", "clean subset", "C0"), ("noisy", "noisy subset (noisy labels)", "C3"),
               ("noisy_original", "noisy subset (true labels)", "C2"), ("test", "test", "0.5"))
    for row, m in zip(axes, rows):
        for ax, (setting, rate) in zip(row, panels[m]):
            for k, one in enumerate(replicas(ds, m, setting, rate)):
                epochs = one.epoch.values
                for split, label, color in subsets:
                    acc = one.accuracy.sel(split=split).values
                    ax.plot(epochs, acc, color=color, linewidth=0.8, alpha=0.6, label=label if k == 0 else None)
                    hits = np.nonzero(acc >= ORDER_LEVEL)[0] if split in ("clean", "noisy") else []
                    if len(hits):  # a subset that never reaches the level has no marker
                        ax.plot([epochs[hits[0]]], [acc[hits[0]]], "o" if split == "clean" else "x", color=color,
                                markersize=5, label=f"{split} at {ORDER_LEVEL:.0%}" if k == 0 else None)
            ax.set_xlim(0, _order_until(run_of(ds, m)))
            ax.set_xlabel("step (= epoch, full batch)")
            title = f"tagged {rate:.0%}, labels clean (control)" if setting == "tag" else f"{rate:.0%} flip noise"
            ax.set_title(f"{m}: {title}", fontsize=8)
        for ax in row[len(panels[m]):]:
            ax.set_visible(False)
        row[0].set_ylabel("accuracy")
    axes[0, 0].legend(fontsize=6)
    return fig


def _order_panels(run: xr.Dataset) -> list[tuple[str, float]]:
    """(setting, rate) of a run's learning-order panels: its flip levels up to 80% and its tag control."""
    have = sorted({(str(s), float(r)) for s, r in zip(run.setting.values, run.noise_rate.values)
                   if s in ("flip", "tag") and np.isfinite(r)}, key=lambda x: (x[0] == "tag", x[1]))
    return [(s, r) for s, r in have if s == "tag" or r <= 0.8]


def _order_until(run: xr.Dataset) -> float:
    """The last epoch of the per-step part of a run's schedule (its order_until), else its last epoch."""
    epochs = run.epoch.values[np.isfinite(run.epoch.values)]
    steps = np.diff(epochs)
    dense = np.nonzero(steps > 1)[0]
    return float(epochs[dense[0]] if dense.size and dense[0] > 0 else epochs[-1])
