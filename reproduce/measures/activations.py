"""Measures of the double-descent paper, as plain functions of arrays.

A measure knows nothing about training: it takes activations, labels and masks (or the stored
per-neuron magnitudes) and returns numbers. Equation numbers refer to
Kubo et al., "Deep Exploration of Epoch-wise Double Descent in Noisy Data" (2025).
"""

from __future__ import annotations

import numpy as np
import torch
import xarray as xr

from reproduce.verdict import StatisticError


def group_sums(h: torch.Tensor, group: torch.Tensor, num_groups: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Sum of activations per group, in one batched product instead of a loop over groups.

    h: (R, n, W) activations; group: (R, n) int64 in [0, num_groups), or -1 for "in no group".
    Returns sums (R, G, W) and counts (R, G), in float64 so that sums over 50k samples stay exact
    enough for cosine similarities near 1.
    """
    valid = group >= 0
    onehot = torch.zeros(*group.shape, num_groups, dtype=torch.float64, device=h.device)
    onehot.scatter_(-1, group.clamp(min=0).unsqueeze(-1), valid.unsqueeze(-1).to(torch.float64))
    sums = torch.bmm(onehot.transpose(1, 2), h.to(torch.float64))
    return sums, onehot.sum(1)


def cosine_similarity(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Cosine similarity along the last axis (Eq. 1); NaN where either vector is zero or missing.

    Mean activations S_clean,c and S_noisy,c go in; scaling either leaves the result unchanged, so
    sums can be passed instead of means. A class with no noisy sample gives NaN, not a fake 1.
    """
    a = a.to(torch.float64)
    b = b.to(torch.float64)
    norms = a.norm(dim=-1) * b.norm(dim=-1)
    cs = (a * b).sum(-1) / norms
    return torch.where(norms > 0, cs, torch.full_like(cs, float("nan")))


def outlier_ratio(magnitude: np.ndarray, neuron: int) -> np.ndarray:
    """Eq. 5: a_{i*} / sqrt(mean over i != i* of a_i^2), along the last axis (neurons).

    magnitude: mean absolute activation per neuron, any leading shape (e.g. epoch). `neuron` is
    i*, chosen by the caller (the paper: the largest neuron at the final epoch, tracked back).
    NaN entries (padding of narrower layers) are ignored.
    """
    a = np.asarray(magnitude, dtype=np.float64)
    others = np.delete(a, neuron, axis=-1)
    rms = np.sqrt(np.nanmean(others**2, axis=-1))
    with np.errstate(divide="ignore", invalid="ignore"):
        return a[..., neuron] / rms


def tracked_outlier_ratio(magnitude: np.ndarray) -> tuple[int, np.ndarray]:
    """Eq. 5 over checkpoints, as Fig. 7 draws it: i* is the largest neuron at the *last* checkpoint,
    and its ratio is tracked back through every earlier one.

    magnitude: (epoch, neuron). Returns (i*, r per epoch).
    """
    a = np.asarray(magnitude, dtype=np.float64)
    neuron = largest_neuron(a[-1])
    return neuron, outlier_ratio(a, neuron)


def runner_up_ratio(magnitude: np.ndarray) -> float:
    """Eq. 5 for the second-largest neuron, measured against the rest *without* the largest.

    A single outlier neuron means this stays small while the largest is far above; two outliers
    together would both show here. magnitude: 1-D, NaN padding ignored.
    """
    a = np.asarray(magnitude, dtype=np.float64)
    a = a[~np.isnan(a)]
    order = np.argsort(a)[::-1]
    rest = a[order[2:]]
    return float(a[order[1]] / np.sqrt(np.mean(rest**2)))


def largest_neuron(magnitude: np.ndarray) -> int:
    """Index i* of the largest neuron (NaN padding ignored)."""
    return int(np.nanargmax(np.asarray(magnitude, dtype=np.float64)))


def first_crossing(epochs: np.ndarray, values: np.ndarray, fraction: float = 0.5) -> float:
    """The first epoch at which `values` reaches `fraction` of its final value.

    Used for "clean learned first": the half-way checkpoint of clean accuracy against that of
    noisy-sample accuracy on their noisy labels. NaN if it is never reached.
    """
    values = np.asarray(values, dtype=np.float64)
    target = fraction * values[-1]
    hits = np.nonzero(values >= target)[0]
    return float(np.asarray(epochs)[hits[0]]) if hits.size else float("nan")


def largest_drop(values: np.ndarray) -> tuple[float, int]:
    """The largest fall of `values` from a peak to a later checkpoint, and the index of that later
    minimum. Fig. 1's double descent: test accuracy peaks, falls while the noisy labels are fitted,
    and recovers after the minimum (the onset of re-generalization); for a rise, pass -values."""
    values = np.asarray(values, dtype=np.float64)
    drop = np.maximum.accumulate(values) - values
    at = int(np.argmax(drop))
    return float(drop[at]), at


# Fig. 1 read from a smoothed curve: a centred running mean over the checkpoints within
# SMOOTHING_DECADES of each one on the log-epoch axis (10^0.25 = a factor 1.78 either side: at ten
# checkpoints a decade with rounded mantissas, two neighbours lie within 0.19-0.21 decades and the third
# beyond 0.29, so every inner checkpoint averages five). Test accuracy jumps by up to 6 points between neighbouring checkpoints
# while the noisy labels are fitted (docs/ddmlp.md), so the lowest single checkpoint exaggerates the
# fall and with it the recovery; a dip broad on the log axis, as in Fig. 1, survives the mean.
SMOOTHING_DECADES = 0.25


def smoothed_over_log_epochs(values: np.ndarray, epochs: np.ndarray, decades: float = SMOOTHING_DECADES) -> np.ndarray:
    """Each checkpoint's value replaced by the mean over the checkpoints whose log10 epoch lies within
    `decades` of its own (the window is cut at the ends of the run, so the last value is the mean of the
    last checkpoints within `decades` before it). The epoch-0 checkpoint has no log epoch and is kept
    as it is, and is in no other's window. decades=0 returns the values unchanged (single checkpoints)."""
    values = np.asarray(values, dtype=np.float64)
    epochs = np.asarray(epochs, dtype=np.float64)
    if values.shape != epochs.shape:
        raise ValueError(f"values {values.shape} and epochs {epochs.shape} differ in shape")
    out = values.copy()
    positive = epochs > 0
    log_e = np.log10(epochs[positive])
    near = np.abs(log_e[:, None] - log_e[None, :]) <= decades + 1e-9
    out[positive] = (near * values[positive][None, :]).sum(1) / near.sum(1)
    return out


def fall_from_first_peak(accuracy: np.ndarray, fitted: np.ndarray, half: float = 0.5) -> tuple[int, int]:
    """Fig. 1's first descent: the first peak is the highest test accuracy before the noisy subset is
    half fitted to its noisy labels (`fitted`, their accuracy on the noisy labels, first reaches `half`),
    and the fall runs from there to the lowest test accuracy at or after it. Returns the indices
    (peak, minimum); the fall is accuracy[peak] - accuracy[minimum], the recovery accuracy[-1] -
    accuracy[minimum]. If the subset is never half fitted, every checkpoint may hold the peak.
    Learning's early wiggles (0.42 -> 0.31 at epoch 0.2 on the way to 0.70) cannot be taken for the
    fall: the peak is the highest value of the whole clean-learning phase, not a running maximum."""
    accuracy = np.asarray(accuracy, dtype=np.float64)
    reached = np.nonzero(np.asarray(fitted, dtype=np.float64) >= half)[0]
    end = max(int(reached[0]), 1) if reached.size else accuracy.size
    peak = int(np.argmax(accuracy[:end]))
    return peak, peak + int(np.argmin(accuracy[peak:]))


def class_mean_cs(cs: xr.DataArray) -> xr.DataArray:
    """CS(l) of Eq. 4: the mean of CS_c(l) over *all* classes. A class without noisy (or clean)
    samples has no CS_c (NaN); skipping it would average over fewer classes than Eq. 4 does, so it
    raises StatisticError naming the classes instead."""
    missing = cs.isnull().any([d for d in cs.dims if d != "class"])
    if bool(missing.any()):
        raise StatisticError(f"Eq. 4 averages CS over every class, but class(es) {[int(c) for c in cs['class'][missing].values]} "
                             "have no noisy or no clean sample at this tier")
    return cs.mean("class", skipna=False)


def cell_spreads(cells: np.ndarray) -> tuple[float, float, int]:
    """Fig. 8 on equal footing: a neuron's mean |activation| on noisy samples per (true class, noisy
    label) cell, (K, K) with NaN for empty cells (the diagonal, under flip noise). Returns the spread
    over true classes with the noisy label fixed (std down each column, averaged over columns), the
    spread over noisy labels with the true class fixed (std along each row, averaged over rows), and
    the number of off-diagonal cells left out as empty. Each spread is taken over the same cells, so
    a neuron that follows only the input has a large first and a small second spread, one that
    follows only the noisy label the reverse."""
    cells = np.asarray(cells, dtype=np.float64)
    k = cells.shape[0]
    filled = ~np.isnan(cells)

    def spread(table: np.ndarray, mask: np.ndarray) -> float:
        stds = [np.std(col[m]) for col, m in zip(table.T, mask.T) if m.sum() >= 2]
        return float(np.mean(stds)) if stds else float("nan")

    empty = int((~filled).sum() - (~filled[np.arange(k), np.arange(k)]).sum())
    return spread(cells, filled), spread(cells.T, filled.T), empty
