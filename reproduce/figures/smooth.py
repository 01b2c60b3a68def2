"""The smooth paper's figures (Fig. 1c, 2, 3 analogues) and `sweep`, which lines runs up by width."""

from __future__ import annotations

import numpy as np
import xarray as xr
from matplotlib.figure import Figure

from reproduce.measures.sharpness import interpolation_threshold

MEASURE_LABELS = {"accuracy": "training accuracy", "loss": "training cross-entropy",
                  "jacobian": "Jacobian norm", "hessian": "tangent Hessian norm"}


def _per_run(ds: xr.Dataset, name: str) -> np.ndarray:
    """A run-level coordinate as one value per run (combining keeps a value shared by all runs scalar)."""
    return np.broadcast_to(ds[name].values, (ds.sizes["run"],))


def settings(ds: xr.Dataset) -> list[str]:
    """The sweeps in a combined Dataset, in run order."""
    return list(dict.fromkeys(str(s) for s in _per_run(ds, "setting")))


def sweep(ds: xr.Dataset, setting: str, at: str = "end", seeds: bool = False) -> xr.Dataset:
    """One setting's runs as a Dataset over `width` (mean over seeds, or every seed along `replica`
    with `seeds=True`: replica k is the same seed at every width), at the final checkpoint
    (`at="end"`) or at initialization (`at="init"`, the control). Runs are found by their
    `setting` and `width` coordinates, not by file name."""
    pieces = []
    for i in np.nonzero(_per_run(ds, "setting") == setting)[0]:
        one = ds.isel(run=i).dropna("epoch", how="all", subset=["accuracy"])
        one = one.isel(epoch=-1 if at == "end" else 0)
        pieces.append(xr.Dataset({k: one[k] if seeds else one[k].mean("replica") for k in ("accuracy", "loss", "volume_measure")})
                      .drop_vars([c for c in ("run", "status", "model", "setting", "width", "epoch") if c in one.coords],
                                 errors="ignore")
                      .expand_dims(width=[int(one["width"])]))
    if not pieces:
        raise ValueError(f"no runs of setting {setting!r}")
    out = xr.concat(pieces, "width", data_vars="all", coords="different", compat="equals", join="outer")
    return out.sortby("width")


def epoch_curves(ds: xr.Dataset, setting: str) -> dict[int, xr.Dataset]:
    """One setting's runs over epochs, by width: the Jacobian norm at the training points (all
    samples, volume 0: what Fig. 5 reads) and the noisy subset's training error on its training
    labels, dims (replica, epoch), every checkpoint the run probed (light ones included)."""
    out = {}
    for i in np.nonzero(_per_run(ds, "setting") == setting)[0]:
        one = ds.isel(run=i).dropna("epoch", how="all", subset=["accuracy"])
        out[int(one["width"])] = xr.Dataset({
            "jacobian": one.volume_measure.sel(measure="jacobian", subset="all", volume=0).transpose("replica", "epoch"),
            "noisy_error": (1 - one.accuracy.sel(split="noisy")).transpose("replica", "epoch")})
    if not out:
        raise ValueError(f"no runs of setting {setting!r}")
    return dict(sorted(out.items()))


def threshold_of(ds: xr.Dataset, setting: str, tolerance: float) -> int | None:
    """The interpolation threshold of a sweep's seed mean: the smallest width whose final training
    error on its training (noisy) labels, averaged over seeds, is below `tolerance` (the figures' mark)."""
    trained = sweep(ds, setting)
    error = 1 - trained.accuracy.sel(split="train").values
    return interpolation_threshold(trained.width.values, error, tolerance)


def thresholds(ds: xr.Dataset, setting: str, tolerance: float) -> list[int | None]:
    """The interpolation threshold of every seed (replica), each from its own training errors:
    what the claims judge the peak against."""
    trained = sweep(ds, setting, seeds=True)
    error = 1 - trained.accuracy.sel(split="train").transpose("replica", "width").values
    return [interpolation_threshold(trained.width.values, e, tolerance) for e in error]


def _mark_threshold(ax, threshold: int | None) -> None:
    if threshold is not None:
        ax.axvline(threshold, color="k", ls=":", lw=1, label=f"interpolation threshold (w={threshold})")


def tolerance(ds: xr.Dataset) -> float:
    """The training-error tolerance that defines the interpolation threshold, as the run stored it."""
    return float(ds.attrs.get("interpolation_tolerance", 0.01))


def smooth_measures(ds: xr.Dataset, subsets: tuple[str, ...] = ("all",)) -> Figure:
    """Fig. 2 (subset all) / Fig. 3 (clean, noisy) analogue: each measure against base width, one
    line per volume size (augmentations per path; seed mean, the band spans the seeds), dotted line
    at the seed-mean interpolation threshold."""
    setting = settings(ds)[0]
    trained, threshold = sweep(ds, setting), threshold_of(ds, setting, tolerance(ds))
    per_seed = sweep(ds, setting, seeds=True)
    measures = list(MEASURE_LABELS)
    fig = Figure(figsize=(3.3 * len(measures), 2.8 * len(subsets)))
    axes = fig.subplots(len(subsets), len(measures), squeeze=False)
    volumes = trained.volume.values
    colors = [(0.1, 0.3 + 0.5 * i / max(len(volumes) - 1, 1), 0.9 - 0.6 * i / max(len(volumes) - 1, 1)) for i in range(len(volumes))]
    for row, subset in zip(axes, subsets):
        for ax, measure in zip(row, measures):
            values = trained.volume_measure.sel(measure=measure, subset=subset)
            for v, color in zip(volumes, colors):
                ax.plot(trained.width, values.sel(volume=v), "o-", ms=3, color=color, label=f"{v} aug./path")
                seeds = per_seed.volume_measure.sel(measure=measure, subset=subset, volume=v)
                ax.fill_between(trained.width, seeds.min("replica"), seeds.max("replica"), color=color, alpha=0.15, lw=0)
            _mark_threshold(ax, threshold)
            ax.set_xscale("log", base=2)
            if measure in ("jacobian", "hessian", "loss"):
                ax.set_yscale("log")
            ax.set_title(f"{MEASURE_LABELS[measure]} ({subset})", fontsize=9)
            ax.set_xlabel("base width w")
    axes[0][0].legend(fontsize=6)
    fig.suptitle(setting, fontsize=9)
    fig.tight_layout()
    return fig


def smooth_subsets(ds: xr.Dataset) -> Figure:
    """Fig. 3 analogue: the measures over volumes around clean (top) and noisy (bottom) samples."""
    return smooth_measures(ds, subsets=("clean", "noisy"))


def smooth_test_error(ds: xr.Dataset) -> Figure:
    """Fig. 1c analogue: test and training error against width, the threshold marked, with the
    control (the same widths at initialization) dashed."""
    fig = Figure(figsize=(4.5, 3.2))
    ax = fig.subplots()
    for setting in settings(ds):
        trained, start = sweep(ds, setting), sweep(ds, setting, at="init")
        ax.plot(trained.width, 1 - trained.accuracy.sel(split="test"), "o-", label=f"{setting}: test")
        ax.plot(trained.width, 1 - trained.accuracy.sel(split="train"), "s--", label=f"{setting}: train (noisy labels)")
        ax.plot(start.width, 1 - start.accuracy.sel(split="test"), "k:", lw=1, label="test at initialization")
        _mark_threshold(ax, threshold_of(ds, setting, tolerance(ds)))
    ax.set_xscale("log", base=2)
    ax.set_xlabel("base width w")
    ax.set_ylabel("error")
    ax.legend(fontsize=6)
    fig.tight_layout()
    return fig


def _every_seed(ds: xr.Dataset, measure: str, log: bool) -> Figure:
    """One measure at the training points (volume 0) against width: every seed a thin line, each
    seed's own interpolation threshold a tick of its colour, trained (left) and at initialization (right)."""
    setting = settings(ds)[0]
    fig = Figure(figsize=(7.5, 3.0))
    seed_thresholds = thresholds(ds, setting, tolerance(ds))
    for ax, at in zip(fig.subplots(1, 2), ("end", "init")):
        values = sweep(ds, setting, at=at, seeds=True).volume_measure.sel(measure=measure, subset="all", volume=0)
        for r, threshold in enumerate(seed_thresholds):
            line, = ax.plot(values.width, values.isel(replica=r), "o-", lw=0.8, ms=2, label=f"seed {r}")
            if threshold is not None:
                ax.axvline(threshold, color=line.get_color(), ls=":", lw=0.8)
        ax.set_xscale("log", base=2)
        if log:
            ax.set_yscale("log")
        ax.set_title(f"{MEASURE_LABELS[measure]}, {'trained' if at == 'end' else 'at initialization'}", fontsize=9)
        ax.set_xlabel("base width w (dotted: each seed's threshold)")
    fig.axes[0].legend(fontsize=6)
    fig.tight_layout()
    return fig


def smooth_epochwise(ds: xr.Dataset) -> Figure:
    """Fig. 5 (right) analogue, smooth.epochwise_jacobian_peak: the Jacobian norm at the training
    points over epochs (log-log; epoch 0 left out of the axis), one panel per width, every seed a
    line; a dot where that seed's noisy subset is first fitted (training error below the tolerance),
    a cross at its peak."""
    from reproduce.measures.sharpness import epochwise_peak

    setting = settings(ds)[0]
    curves = epoch_curves(ds, setting)
    fig = Figure(figsize=(2.6 * len(curves), 2.8))
    for ax, (width, c) in zip(fig.subplots(1, len(curves), squeeze=False)[0], curves.items()):
        epochs = c.epoch.values
        for r in range(c.sizes["replica"]):
            norm, error = c.jacobian.values[r], c.noisy_error.values[r]
            stat = epochwise_peak(epochs, norm, error, tolerance(ds))
            line, = ax.plot(epochs[epochs > 0], norm[epochs > 0], "-", lw=0.8, label=f"seed {r}")
            ax.plot(stat["peak_epoch"], stat["peak"], "x", color=line.get_color(), ms=5)
            if stat["fit_epoch"] is not None:
                ax.plot(stat["fit_epoch"], norm[list(epochs).index(stat["fit_epoch"])], "o", color=line.get_color(), ms=4)
        fitted = int(sum(epochwise_peak(epochs, j, e, tolerance(ds))["fitted"]
                         for j, e in zip(c.jacobian.values, c.noisy_error.values)))
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_title(f"w = {width}: noisy subset fitted in {fitted} of {c.sizes['replica']} seeds", fontsize=8)
        ax.set_xlabel("epoch")
    fig.axes[0].set_ylabel("Jacobian norm at the training points", fontsize=8)
    fig.axes[0].legend(fontsize=6)
    fig.suptitle(f"{setting}: o where the noisy subset is first fitted, x the peak (epoch 0 off the log axis)", fontsize=9)
    fig.tight_layout()
    return fig


def smooth_hessian(ds: xr.Dataset) -> Figure:
    """smooth.hessian_peaks_too: the tangent Hessian norm (Eq. 5) of every seed against width."""
    return _every_seed(ds, "hessian", log=True)


def smooth_volume_accuracy(ds: xr.Dataset) -> Figure:
    """smooth.volume_accuracy_grows: training accuracy at the points of every seed against width."""
    return _every_seed(ds, "accuracy", log=False)
