"""The ddmlp paper's figures (Fig. 1, 3 and 7 analogues) and `replica`, which picks one replica."""

from __future__ import annotations

import numpy as np
import xarray as xr
from matplotlib.figure import Figure

from reproduce.measures.activations import tracked_outlier_ratio


def replica(ds: xr.Dataset, model: str, setting: str) -> xr.Dataset:
    """The first replica of `model`'s run trained in `setting` (noisy | control), padding dropped.

    Runs are found by their `model` coordinate, not their file name, so any base seed works.
    """
    one = ds.isel(run=list(ds["model"].values).index(model))
    index = int(np.nonzero(one["setting"].values == setting)[0][0])
    one = one.isel(replica=index)
    layers = int(np.isfinite(one["layer_width"]).sum()) if "layer_width" in one else one.sizes["layer"]
    return one.isel(layer=slice(0, layers)).dropna("epoch", how="all", subset=["accuracy"])


def replicas(ds: xr.Dataset, model: str, setting: str) -> list[xr.Dataset]:
    """Every seed's replica of `model`'s run trained in `setting`, in seed order: the unit of evidence."""
    one = ds.isel(run=list(ds["model"].values).index(model))
    indices = np.nonzero(one["setting"].values == setting)[0]
    layers = int(np.isfinite(one["layer_width"]).sum()) if "layer_width" in one else one.sizes["layer"]
    return [one.isel(replica=int(i), layer=slice(0, layers)).dropna("epoch", how="all", subset=["accuracy"])
            for i in indices]


def _log_epochs(ax, epochs: np.ndarray) -> np.ndarray:
    """Plot epochs on a log axis; the epoch-0 checkpoint sits at half the first positive one."""
    positive = epochs[epochs > 0]
    ax.set_xscale("log")
    ax.set_xlabel("epoch")
    return np.where(epochs > 0, epochs, positive.min() / 2 if positive.size else 1.0)


def ddmlp_learning_curves(ds: xr.Dataset) -> Figure:
    """Fig. 1 analogue: accuracy on clean, noisy (noisy / original labels) and test, per model."""
    runs = list(ds.model.values)
    fig = Figure(figsize=(4 * len(runs), 3.2))
    axes = fig.subplots(1, len(runs), squeeze=False)[0]
    labels = {"clean": "clean training", "noisy": "noisy training / noisy", "noisy_original": "noisy training / clean",
              "test": "test"}
    for ax, run in zip(axes, runs):
        noisy = replica(ds, run, "noisy")
        x = _log_epochs(ax, noisy.epoch.values)
        for split, label in labels.items():
            ax.plot(x, noisy.accuracy.sel(split=split), label=label)
        control = replica(ds, run, "control")
        ax.plot(_log_epochs(ax, control.epoch.values), control.accuracy.sel(split="noisy"), "k:",
                label="control: tagged subset")
        ax.set_title(str(run))
        ax.set_ylabel("accuracy")
    axes[0].legend(fontsize=7)
    return fig


def ddmlp_separation(ds: xr.Dataset) -> Figure:
    """Fig. 3 analogue: CS(l) of clean vs noisy mean activations over training, one line per layer."""
    runs = list(ds.model.values)
    fig = Figure(figsize=(4 * len(runs), 3.2))
    axes = fig.subplots(1, len(runs), squeeze=False, sharey=True)[0]
    for ax, run in zip(axes, runs):
        noisy = replica(ds, run, "noisy")
        x = _log_epochs(ax, noisy.epoch.values)
        cs = noisy.cs.mean("class")
        layers = noisy.layer.values
        colors = [(0.1, 0.2 + 0.6 * i / max(len(layers) - 1, 1), 0.9 - 0.5 * i / max(len(layers) - 1, 1)) for i in range(len(layers))]
        for layer, color in zip(layers, colors):
            ax.plot(x, cs.sel(layer=layer), color=color, label=f"layer {layer}")
        control = replica(ds, run, "control").cs.mean("class")
        ax.plot(x[: control.sizes["epoch"]], control.min("layer"), "k:", label="control (min over layers)")
        ax.set_title(str(run))
    axes[0].set_ylabel("CS(l), clean vs noisy")
    axes[0].legend(fontsize=7)
    return fig


def ddmlp_outlier(ds: xr.Dataset) -> Figure:
    """Fig. 7 analogue: ratio of the final-epoch largest neuron to the RMS of the rest (Eq. 5)."""
    runs = list(ds.model.values)
    fig = Figure(figsize=(4 * len(runs), 3.2))
    axes = fig.subplots(1, len(runs), squeeze=False, sharey=True)[0]
    for ax, run in zip(axes, runs):
        noisy = replica(ds, run, "noisy")
        x = _log_epochs(ax, noisy.epoch.values)
        for layer in noisy.layer.values:
            mag = noisy.magnitude.sel(layer=layer).dropna("neuron", how="all").values
            _, ratio = tracked_outlier_ratio(mag)
            style = "-" if ratio[-1] > 10 else "--"
            ax.plot(x, ratio, style, label=f"layer {layer}")
        ax.axhline(10, color="grey", lw=0.8)
        ax.set_yscale("log")
        ax.set_ylim(bottom=0.1)  # a neuron still dead early on would stretch the axis to 1e-5
        ax.set_title(str(run))
    axes[0].set_ylabel("max / RMS(rest)")
    axes[0].legend(fontsize=7)
    return fig
