"""The ddmlp paper's figures (Fig. 1-3 and 6-8 analogues), one per claim, every seed drawn."""

from __future__ import annotations

import numpy as np
import xarray as xr
from matplotlib.figure import Figure

from reproduce.measures.activations import (SMOOTHING_DECADES, class_mean_cs, fall_from_first_peak,
                                           smoothed_over_log_epochs, tracked_outlier_ratio)
from reproduce.store import replicas


def _log_epochs(ax, epochs: np.ndarray) -> np.ndarray:
    """Plot epochs on a log axis; the epoch-0 checkpoint sits at half the first positive one."""
    positive = epochs[epochs > 0]
    ax.set_xscale("log")
    ax.set_xlabel("epoch")
    return np.where(epochs > 0, epochs, positive.min() / 2 if positive.size else 1.0)


def _seed_lines(ax, x: np.ndarray, curves: list[np.ndarray], color, label: str, style: str = "-") -> None:
    """Every seed as a thin line, their mean as a thick one: the seeds are the evidence."""
    for curve in curves:
        ax.plot(x[: len(curve)], curve, style, color=color, lw=0.6, alpha=0.6)
    n = min(len(c) for c in curves)
    ax.plot(x[:n], np.mean([c[:n] for c in curves], axis=0), style, color=color, lw=1.8, label=label)


def _panels(ds: xr.Dataset, models: list[str] | None = None, rows: int = 1, sharey: bool = False):
    models = models or [str(m) for m in ds.model.values]
    fig = Figure(figsize=(4 * len(models), 3.2 * rows))
    axes = fig.subplots(rows, len(models), squeeze=False, sharey=sharey, sharex="col")
    return fig, models, axes


def ddmlp_learning_curves(ds: xr.Dataset) -> Figure:
    """Fig. 1 analogue: accuracy on clean, noisy (noisy / original labels) and test, per model, every seed."""
    fig, models, axes = _panels(ds)
    labels = {"clean": "clean training", "noisy": "noisy training / noisy", "noisy_original": "noisy training / clean",
              "test": "test"}
    for ax, model, in zip(axes[0], models):
        noisy = replicas(ds, model, "noisy")
        x = _log_epochs(ax, noisy[0].epoch.values)
        for (split, label), color in zip(labels.items(), ("C0", "C1", "C2", "C3")):
            _seed_lines(ax, x, [r.accuracy.sel(split=split).values for r in noisy], color, label)
        _seed_lines(ax, x, [r.accuracy.sel(split="noisy").values for r in replicas(ds, model, "control")], "k",
                    "twin: tagged subset", ":")
        ax.set_title(f"{model} ({len(noisy)} seeds)")
        ax.set_ylabel("accuracy")
    axes[0, 0].legend(fontsize=7)
    return fig


def ddmlp_separation(ds: xr.Dataset) -> Figure:
    """Fig. 3 analogue: CS(l) of clean vs noisy mean activations over training, one colour per layer,
    seed means with the seeds' range as a band; the twins' lowest layer dotted."""
    fig, models, axes = _panels(ds, sharey=True)
    for ax, model in zip(axes[0], models):
        noisy = replicas(ds, model, "noisy")
        x = _log_epochs(ax, noisy[0].epoch.values)
        cs = np.stack([class_mean_cs(r.cs).values for r in noisy])  # (seed, epoch, layer)
        layers = noisy[0].layer.values
        for i, layer in enumerate(layers):
            color = (0.1, 0.2 + 0.6 * i / max(len(layers) - 1, 1), 0.9 - 0.5 * i / max(len(layers) - 1, 1))
            ax.fill_between(x, cs[:, :, i].min(0), cs[:, :, i].max(0), color=color, alpha=0.2, lw=0)
            ax.plot(x, cs[:, :, i].mean(0), color=color, label=f"layer {layer}")
        twins = [class_mean_cs(r.cs).min("layer").values for r in replicas(ds, model, "control")]
        _seed_lines(ax, x, twins, "k", "twins (min over layers)", ":")
        ax.set_title(f"{model} ({len(noisy)} seeds)")
    axes[0, 0].set_ylabel("CS(l), clean vs noisy")
    axes[0, 0].legend(fontsize=7)
    return fig


def _smoothed_test(run: xr.Dataset) -> np.ndarray:
    """Test accuracy smoothed over +-SMOOTHING_DECADES of log epochs, as the claim reads it."""
    return smoothed_over_log_epochs(run.accuracy.sel(split="test").values, run.epoch.values)


def _first_peak(run: xr.Dataset) -> tuple[int, int]:
    """Indices of the first peak of the smoothed test accuracy and of its later minimum (Fig. 1;
    fall_from_first_peak, as reproduce.claims.ddmlp.double_descent reads them)."""
    return fall_from_first_peak(_smoothed_test(run), run.accuracy.sel(split="noisy").values)


def _onset(run: xr.Dataset) -> float:
    """Epoch of the test-accuracy minimum after its first peak: the onset of re-generalization (Fig. 1)."""
    return float(run.epoch.values[_first_peak(run)[1]])


def ddmlp_outlier(ds: xr.Dataset) -> Figure:
    """Fig. 6-7 analogue: test accuracy (top) over r of the final-epoch largest neuron in the layer
    with the largest r (Eq. 5, bottom), noisy replicas and their clean-label twins on one log-epoch
    axis, the onset of re-generalization (test-accuracy minimum after the peak) marked."""
    fig, models, axes = _panels(ds, rows=2)
    for col, model in enumerate(models):
        top, bottom = axes[0, col], axes[1, col]
        for setting, color in (("noisy", "C3"), ("control", "C0")):
            runs = replicas(ds, model, setting)
            x = _log_epochs(bottom, runs[0].epoch.values)
            _log_epochs(top, runs[0].epoch.values)
            label = "noisy" if setting == "noisy" else "clean-label twin"
            _seed_lines(top, x, [r.accuracy.sel(split="test").values for r in runs], color, label)
            _seed_lines(bottom, x, [_best_ratio(r) for r in runs], color, label)
            if setting == "noisy":
                for run in runs:
                    onset = _onset(run)
                    for ax in (top, bottom):
                        ax.axvline(onset if onset > 0 else x[0], color="grey", lw=0.6, ls="--")
        bottom.axhline(10, color="grey", lw=0.8)
        bottom.set_yscale("log")
        bottom.set_ylim(bottom=0.5)
        top.set_title(model)
    fig.suptitle("dashed: each noisy seed's test-accuracy minimum after its peak (onset of re-generalization)", fontsize=9)
    axes[0, 0].set_ylabel("test accuracy")
    axes[1, 0].set_ylabel("r = max / RMS(rest), Eq. 5")
    axes[1, 0].legend(fontsize=7)
    return fig


def _best_ratio(run: xr.Dataset) -> np.ndarray:
    """r over checkpoints (Eq. 5) in the layer whose final-epoch largest neuron has the largest r."""
    ratios = [tracked_outlier_ratio(run.magnitude.sel(layer=l).dropna("neuron", how="all").values)[1]
              for l in run.layer.values]
    return max(ratios, key=lambda r: r[-1])


def ddmlp_test_accuracy(ds: xr.Dataset) -> Figure:
    """Fig. 1's test curve for MLP7 over log epochs: noisy replicas and their clean-label twins together,
    every seed's checkpoints as dots and its smoothed curve (the running mean over +-SMOOTHING_DECADES
    of log epochs the claim reads) as a line, with the smoothed first peak (^), later minimum (v) and
    the recovery to the end (a bar from the minimum to the last smoothed value) marked."""
    fig, _, axes = _panels(ds, ["mlp7"])
    ax = axes[0, 0]
    for setting, color, label in (("noisy", "C3", "30% noise"), ("control", "C0", "clean-label twin")):
        runs = replicas(ds, "mlp7", setting)
        x = _log_epochs(ax, runs[0].epoch.values)
        for run in runs:
            ax.plot(x[: run.sizes["epoch"]], run.accuracy.sel(split="test").values, ".", color=color, ms=2, alpha=0.5)
        _seed_lines(ax, x, [_smoothed_test(r) for r in runs], color, label + " (smoothed)")
        for run in runs:
            acc = _smoothed_test(run)
            peak, at = _first_peak(run)
            ax.plot(x[peak], acc[peak], "^", color=color, ms=5)
            ax.plot(x[at], acc[at], "v", color=color, ms=5)
            ax.plot([x[-1], x[-1]], [acc[at], acc[-1]], color=color, lw=2, alpha=0.5)
    ax.set_ylabel("test accuracy")
    ax.set_title(f"dots: checkpoints; lines: running mean over +-{SMOOTHING_DECADES:g} decades\n"
                 "^ first peak, v later minimum, bar at the end: recovery", fontsize=8)
    ax.legend(fontsize=7)
    return fig


def ddmlp_test_loss(ds: xr.Dataset) -> Figure:
    """Fig. 1-2's test loss for MLP7, MLP5 and MLP3 where trained (noisy replicas), every seed, smoothed
    over +-SMOOTHING_DECADES of log epochs as the claim reads it."""
    fig, models, axes = _panels(ds, [m for m in ("mlp7", "mlp5", "mlp3") if m in ds.model.values], sharey=True)
    for ax, model in zip(axes[0], models):
        runs = replicas(ds, model, "noisy")
        x = _log_epochs(ax, runs[0].epoch.values)
        _seed_lines(ax, x, [smoothed_over_log_epochs(r.loss.sel(split="test").values, r.epoch.values) for r in runs],
                    "C3", "test loss, 30% noise (smoothed)")
        ax.set_title(model)
    axes[0, 0].set_ylabel("test loss (nats)")
    axes[0, 0].legend(fontsize=7)
    return fig


def ddmlp_outlier_layers(ds: xr.Dataset) -> Figure:
    """Where the largest r sits: r at the final checkpoint per hidden layer, every noisy seed."""
    fig, models, axes = _panels(ds, sharey=True)
    for ax, model in zip(axes[0], models):
        for run in replicas(ds, model, "noisy"):
            r_end = [tracked_outlier_ratio(run.magnitude.sel(layer=l).dropna("neuron", how="all").values)[1][-1]
                     for l in run.layer.values]
            ax.plot(run.layer.values, r_end, "o-", lw=0.6, color="C3", alpha=0.7)
        ax.axhline(10, color="grey", lw=0.8)
        ax.axvline(3.5, color="grey", lw=0.8, ls=":")
        ax.set_yscale("log")
        ax.set_xlabel("hidden layer")
        ax.set_title(model)
    axes[0, 0].set_ylabel("r at the last checkpoint (Eq. 5)")
    return fig


def ddmlp_outlier_by_class(ds: xr.Dataset) -> Figure:
    """Fig. 8 analogue: the largest neuron's mean |activation| on noisy samples (final checkpoint, in
    the layer with the largest r) by true class (averaged over noisy labels) and by noisy label
    (averaged over true classes), every noisy seed; both from the same (true class, noisy label) cells."""
    fig, models, axes = _panels(ds)
    for ax, model in zip(axes[0], models):
        for run in replicas(ds, model, "noisy"):
            ratios = {int(l): tracked_outlier_ratio(run.magnitude.sel(layer=l).dropna("neuron", how="all").values)[1][-1]
                      for l in run.layer.values}
            cells = run.outlier_by_cell.isel(epoch=-1).sel(layer=max(ratios, key=ratios.get)).values
            classes = np.arange(cells.shape[0])
            ax.plot(classes, np.nanmean(cells, axis=1), "o-", color="C3", lw=0.6)
            ax.plot(classes, np.nanmean(cells, axis=0), "s--", color="C0", lw=0.6)
        ax.plot([], [], "o-", color="C3", label="by true class")
        ax.plot([], [], "s--", color="C0", label="by noisy label")
        ax.set_xlabel("class")
        ax.set_title(model)
    axes[0, 0].set_ylabel("mean |activation| of the outlier")
    axes[0, 0].legend(fontsize=7)
    return fig
