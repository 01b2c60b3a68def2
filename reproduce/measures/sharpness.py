"""Input-space sharpness of the loss over data-driven volumes (Gamba et al., "Deep double descent via smooth interpolation", 2023).

- Jacobian norm (Eq. 1-2): the Frobenius norm of d loss / d x at a training point. Samples are
  independent in eval mode, so one backward pass of the *summed* loss gives every sample's own
  input gradient: one pass per batch, not per sample.
- Weak augmentation (Sec. 3.4), as the authors' code builds it (svd-path): one SVD per colour
  channel of the base image; strength k erases the s_k smallest NON-ZERO singular values (s_k the
  authors' 5, 10, 15, 20, 22, 25 of 32, scaled to the channel's rank), direction p shifts that
  window by p. Erasing values that are already zero would move nothing (most 14x14 Fashion-MNIST
  channels have several), so they are never counted.
- Tangent Hessian norm (Eq. 5): finite differences of Jacobians along M weak colour
  transformations of each path point (Sec. 3.2: photometric changes stay on the data manifold),
  as the authors' code draws them (MultiColorJitter, TangentHessianNorm): per base image M = 4
  directions, each a brightness, contrast and saturation factor from [0.99, 1.01] out of a seeded
  stream, the same at every point of the image's paths; reported as
  sqrt(mean_m ||J(x) - J(T_m x)||^2) / 0.1. On one-channel images saturation is the identity
  (the grey image is its own greyscale), so only brightness and contrast move a Fashion-MNIST point.
- Volumes (Eq. 6-7): P geodesic paths x -> x^{p,1} -> ... -> x^{p,K} of increasing strength; a
  measure is integrated along each path (trapezoids over its Euclidean segments), normalised by the
  path's length and averaged over paths. Volume size v uses the first v augmentations per path;
  v = 0 is the measure at the point itself.

Models follow the project's stacked convention but nothing else: `model(x)` maps inputs of shape
(*lead, *sample_shape) to logits (*lead, K), with labels of shape `lead` (for a plain classifier
lead = (B,); for R stacked replicas lead = (R, B)).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from reproduce.errors import UserError
from reproduce.verdict import StatisticError

Model = Callable[[torch.Tensor], torch.Tensor]


def loss_input_gradient(model: Model, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-sample input gradients of the cross-entropy (Eq. 1), with the loss and correctness.

    One backward pass of the summed loss: sample n's loss depends on x_n alone (eval mode, no
    batch statistics), so d(sum loss)/dx_n = d loss_n / dx_n. Works under `torch.no_grad()`.
    Returns (gradient like x, loss like y, correct like y).
    """
    with torch.enable_grad():
        x = x.detach().requires_grad_(True)
        logits = model(x)
        if logits.shape[:-1] != y.shape:
            raise UserError(f"model gave logits of shape {tuple(logits.shape)} for labels of shape {tuple(y.shape)}")
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1), reduction="none").view(y.shape)
        (grad,) = torch.autograd.grad(loss.sum(), x)
    return grad, loss.detach(), (logits.argmax(-1) == y).detach()


def jacobian_norm(model: Model, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """||J(x_n, y_n)||_F for every sample (Eq. 2 before the expectation), shape of y."""
    grad, _, _ = loss_input_gradient(model, x, y)
    return grad.flatten(y.dim()).norm(dim=-1)


# Singular values erased per channel at strengths k = 1..6, out of 32 (the authors' code: SVDTransform,
# strategy svd-path, on 32x32 CIFAR); scaled here to the number of non-zero singular values of a channel.
OFFICIAL_ERASED = (5, 10, 15, 20, 22, 25)
OFFICIAL_SIZE = 32


def nonzero_singular_values(s: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    """Which singular values (descending, last dim) are not numerically zero: above
    s_max * max(h, w) * eps, numpy's matrix_rank tolerance. Erasing a zero one moves nothing."""
    return s > s[..., :1] * max(shape) * torch.finfo(s.dtype).eps


def erasure_masks(s: torch.Tensor, shape: tuple[int, int], paths: int, strengths: int) -> torch.Tensor:
    """Which singular values path p erases at strength k: (P, K+1, *s.shape) bool (Sec. 3.4).

    Every augmentation starts from the base image's S (the authors' svd-path): strength k erases the
    s_k smallest NON-ZERO values, s_k = OFFICIAL_ERASED[k-1] / 32 of the channel's rank (at least 1),
    and direction p shifts that window by p (keeps the p smallest non-zero values), so the P
    directions differ and the points of one path are nested (x^{p,k+1} erases a superset of x^{p,k}).
    A channel of rank r <= p shifts by p mod r instead; a channel of rank 0 is never moved."""
    if strengths > len(OFFICIAL_ERASED):
        raise UserError(f"at most {len(OFFICIAL_ERASED)} augmentation strengths (the authors' svd-path), got {strengths}")
    nonzero = nonzero_singular_values(s, shape)
    rank = nonzero.sum(-1, keepdim=True)  # (..., 1)
    ascending = rank - 1 - torch.arange(s.shape[-1], device=s.device)  # 0 = smallest non-zero value
    out = torch.zeros(paths, strengths + 1, *s.shape, dtype=torch.bool, device=s.device)
    for p in range(paths):
        offset = p % rank.clamp_min(1)
        room = rank - offset
        for k in range(1, strengths + 1):
            count = torch.minimum((rank * OFFICIAL_ERASED[k - 1] / OFFICIAL_SIZE).round().long().clamp_min(1), room)
            out[p, k] = nonzero & (ascending >= offset) & (ascending < offset + count)
    return out


def svd_paths(x: torch.Tensor, paths: int, strengths: int) -> torch.Tensor:
    """Geodesic paths of weak augmentations (Sec. 3.3-3.4): the points x^{p,k} (P, K+1, *x.shape)
    of x (..., C, H, W), one SVD per channel matrix, k = 0 being x itself."""
    if x.dim() < 3:
        raise UserError(f"svd_paths needs images (..., C, H, W), got shape {tuple(x.shape)}")
    u, s, vh = torch.linalg.svd(x, full_matrices=False)
    erased = erasure_masks(s, tuple(x.shape[-2:]), paths, strengths)  # (P, K+1, ..., C, w)
    points = (u * (s * ~erased).unsqueeze(-2)) @ vh
    points[:, 0] = x
    return points


# The authors' weak colour transformation for the tangent Hessian (MultiColorJitter): factors from
# [1 - JITTER, 1 + JITTER], hue untouched, 4 directions from a stream seeded with 44; the Jacobian
# difference is divided by TANGENT_STEP.
JITTER = 0.01
TANGENT_DIRECTIONS = 4
TANGENT_SEED = 44
TANGENT_STEP = 0.1
GREY_WEIGHTS = (0.2989, 0.587, 0.114)  # ITU-R 601-2 luma, as torchvision's rgb_to_grayscale


def colour_jitter_factors(n: int, directions: int = TANGENT_DIRECTIONS, seed: int = TANGENT_SEED,
                          jitter: float = JITTER) -> torch.Tensor:
    """Brightness, contrast and saturation factors (n, M, 3) of the M tangent directions of each of
    n base images, uniform in [1 - jitter, 1 + jitter], drawn image after image from one stream
    seeded with `seed` (float64): image i's directions depend on the seed and i only, so they are the
    same at every width, model seed, checkpoint and chunk size."""
    rng = np.random.default_rng(seed)
    return torch.from_numpy(rng.uniform(1 - jitter, 1 + jitter, (n, directions, 3)))


def _grey(x: torch.Tensor) -> torch.Tensor:
    """The greyscale image of x (..., C, H, W) broadcast over its C channels (C = 1: x itself)."""
    if x.shape[-3] == 1:
        return x
    if x.shape[-3] != 3:
        raise UserError(f"colour transformations need 1 or 3 channels, got {x.shape[-3]}")
    w = x.new_tensor(GREY_WEIGHTS).view(3, 1, 1)
    return (x * w).sum(-3, keepdim=True).expand_as(x)


def colour_jitter(x: torch.Tensor, factors: torch.Tensor) -> torch.Tensor:
    """The M colour-transformed copies T_m x (M, *x.shape) of images x (..., N, C, H, W), factors
    (N, M, 3) as `colour_jitter_factors` (brightness b, contrast c, saturation s):
    T x = b * (c * (s x + (1 - s) grey(x)) + (1 - c) mean(grey(x))), torchvision's adjust_brightness,
    adjust_contrast and adjust_saturation composed. They are linear and commute, so the random order
    of the authors' code does not change T x; unlike torchvision we do not clamp to [0, 1]
    (a clamp is not a colour change, and SVD-path points leave [0, 1] by small amounts)."""
    f = factors.to(x).movedim(1, 0)  # (M, N, 3)
    b, c, s = (f[..., i].view(f.shape[0], *([1] * (x.dim() - 4)), f.shape[1], 1, 1, 1) for i in range(3))
    grey = _grey(x)
    saturated = s * x + (1 - s) * grey
    mean = grey.mean(dim=(-3, -2, -1), keepdim=True)  # the grey of a saturation change is grey(x)
    return b * (c * saturated + (1 - c) * mean)


def volume_integral(values: torch.Tensor, points: torch.Tensor, lead: int) -> torch.Tensor:
    """Eq. 6 for every volume size: values (P, K+1, *lead_shape) of a measure at the path points
    (P, K+1, *lead_shape, *sample) -> (K+1, *lead_shape), entry v = the length-normalised
    trapezoid integral along the first v segments, averaged over the P paths (v = 0: the value at x).

    A path whose first v segments have zero length (erased singular values that were already 0)
    contributes the plain mean of its points."""
    seg = (points[:, 1:] - points[:, :-1]).flatten(2 + lead).norm(dim=-1)  # (P, K, *lead_shape)
    trapezoid = 0.5 * (values[:, 1:] + values[:, :-1])
    out = [values[:, 0].mean(0)]
    for v in range(1, values.shape[1]):
        length = seg[:, :v].sum(1)
        integral = (trapezoid[:, :v] * seg[:, :v]).sum(1)
        plain = values[:, : v + 1].mean(1)
        out.append(torch.where(length > 0, integral / length.clamp_min(1e-30), plain).mean(0))
    return torch.stack(out)


def tangent_hessian_norm(grad: torch.Tensor, shifted_grads: torch.Tensor, step: float, lead: int) -> torch.Tensor:
    """Eq. 5 per sample as the authors compute it: sqrt(mean_m ||J(x) - J(T_m x)||_F^2) / step.

    `grad` (*lead_shape, *sample) is J at the points, `shifted_grads` (M, same) at the M weak
    colour transformations T_m x = x + delta u_m. With step = delta this tends to the RMS over m of
    ||H u_m||, the Hessian along the tangent directions u_m; the authors divide by 0.1 whatever the
    size of T_m x - x (about 1% of x). The paper's constant 1/(M^2 delta^2) in place of the mean
    only rescales every model alike."""
    diff = (shifted_grads - grad.unsqueeze(0)).flatten(1 + lead).pow(2).sum(-1)  # (M, *lead_shape)
    return diff.mean(0).sqrt() / step


@dataclass(frozen=True)
class VolumeSpec:
    """How far and how finely to sample volumes: P paths of K strengths; the tangent Hessian's M
    colour directions per image (factors within 1 +- jitter, stream seeded by tangent_seed)."""

    paths: int = 3
    strengths: int = 3
    hessian_directions: int = TANGENT_DIRECTIONS
    jitter: float = JITTER
    tangent_seed: int = TANGENT_SEED
    step: float = TANGENT_STEP  # what the Jacobian difference is divided by (the authors' 0.1)
    chunk: int = 256  # base samples per batch of the measure
    method: str = "svd-path-nonzero, colour-jitter tangent"  # how the paths and the tangent directions are built


def sharpness_over_volumes(model: Model, x: torch.Tensor, y: torch.Tensor, spec: VolumeSpec = VolumeSpec()) -> dict[str, torch.Tensor]:
    """Accuracy, loss, Jacobian norm and tangent Hessian norm over volumes around every sample.

    x: (N, C, H, W) base images, shared by all replicas; y: (*lead, N) labels (lead = () for one
    classifier, (R,) for stacked replicas, whose model takes (R, B, C, H, W)). Image n's tangent
    directions are the n-th of `colour_jitter_factors`, applied at every point of its paths.
    Returns each measure as (*lead, N, V) with V = K+1 volume sizes (0 = at the point).
    """
    lead = y.dim() - 1
    outs: dict[str, list[torch.Tensor]] = {"accuracy": [], "loss": [], "jacobian": [], "hessian": []}
    m = spec.hessian_directions
    factors = colour_jitter_factors(x.shape[0], m, spec.tangent_seed, spec.jitter)
    for start in range(0, x.shape[0], spec.chunk):
        xb, yb = x[start : start + spec.chunk], y[..., start : start + spec.chunk]
        points = svd_paths(xb, spec.paths, spec.strengths)  # (P, K+1, n, C, H, W)
        every = torch.cat([points.unsqueeze(0), colour_jitter(points, factors[start : start + spec.chunk])])
        flat = every.reshape(-1, *xb.shape[1:])  # ((1+M)(P)(K+1) n, C, H, W)
        count = flat.shape[0] // xb.shape[0]
        lead_shape = yb.shape[:-1]
        xs = flat.expand(*lead_shape, *flat.shape).contiguous() if lead else flat
        ys = yb.repeat(*([1] * lead), count)
        grad, loss, correct = loss_input_gradient(model, xs, ys)

        def split(t: torch.Tensor) -> torch.Tensor:  # (*lead, count*n, ...) -> (1+M, P, K+1, *lead, n, ...)
            t = t.reshape(*lead_shape, 1 + m, spec.paths, spec.strengths + 1, xb.shape[0], *t.shape[lead + 1 :])
            return t.movedim(tuple(range(lead, lead + 3)), (0, 1, 2))

        grad, loss, correct = split(grad), split(loss), split(correct.float())
        path_points = points.view(*points.shape[:2], *([1] * lead), *points.shape[2:]).expand(
            *points.shape[:2], *lead_shape, *points.shape[2:])  # (P, K+1, *lead, n, C, H, W)
        jac = grad[0].flatten(3 + lead).norm(dim=-1)
        hess = tangent_hessian_norm(grad[0], grad[1:], spec.step, lead + 3)
        for name, values in (("accuracy", correct[0]), ("loss", loss[0]), ("jacobian", jac), ("hessian", hess)):
            outs[name].append(volume_integral(values, path_points, lead + 1).movedim(0, -1))
    return {name: torch.cat(parts, dim=-2) for name, parts in outs.items()}


def _no_nan(widths: np.ndarray, values: np.ndarray, what: str) -> None:
    """A width whose statistic is NaN (a diverged run, an empty subset) would silently drop out of
    the argmax or the threshold and move them: an error of the statistic instead."""
    bad = [int(w) for w, v in zip(widths, values) if np.isnan(v)]
    if bad:
        raise StatisticError(f"{what} is NaN at width(s) {bad}: the sweep cannot be judged without them")


def interpolation_threshold(widths, train_error, tolerance: float) -> int | None:
    """The smallest width whose training error (on the labels it trained on, noisy ones included)
    is below `tolerance` (Belkin et al.'s interpolation threshold); None if no width gets there."""
    widths, train_error = np.asarray(widths), np.asarray(train_error, dtype=float)
    _no_nan(widths, train_error, "the training error")
    for i in np.argsort(widths):
        if train_error[i] < tolerance:
            return int(widths[i])
    return None


def peak_at_threshold(widths, values, threshold: int | None) -> dict:
    """The paper's model-wise peak (Fig. 2): the argmax width is within one grid step of the
    threshold width, and the largest width's value is below half the peak."""
    widths, values = np.asarray(widths), np.asarray(values, dtype=float)
    order = np.argsort(widths)
    widths, values = widths[order], values[order]
    _no_nan(widths, values, "the measure")
    peak = int(np.argmax(values))
    ratio = float(values[-1] / values[peak]) if values[peak] > 0 else float("nan")
    steps = abs(peak - int(np.nonzero(widths == threshold)[0][0])) if threshold in widths else None
    holds = bool(steps is not None and steps <= 1 and ratio < 0.5)
    return dict(peak_width=int(widths[peak]), peak=float(values[peak]), largest_width=int(widths[-1]),
                largest=float(values[-1]), ratio=ratio, threshold_width=threshold, grid_steps=steps, holds=holds)


def epochwise_peak(epochs, norm, noisy_error, tolerance: float) -> dict:
    """The epoch-wise view of one model (Sec. 4.3, Fig. 5): its Jacobian norm at the training points
    (Eq. 2) over the checkpoints, against the first checkpoint where its noisy subset is fitted.

    Past the interpolation threshold the paper sees the norm rise and fall over epochs (epoch-wise
    double descent); below it the norm does not decrease. Returns the peak (argmax over checkpoints)
    and its epoch, the first checkpoint whose noisy-subset error on the training labels is below
    `tolerance` (None: never), whether the noisy subset is fitted at the last checkpoint, the ratios
    norm at the first (epoch 0) / peak (the rise) and at the last / peak (the fall), and `steps`: the
    checkpoints from the fit to the peak (negative: the peak comes first; None where never fitted)."""
    epochs, norm, noisy_error = (np.asarray(a, dtype=float) for a in (epochs, norm, noisy_error))
    order = np.argsort(epochs)
    epochs, norm, noisy_error = epochs[order], norm[order], noisy_error[order]
    for values, what in ((norm, "the Jacobian norm"), (noisy_error, "the noisy-subset error")):
        if np.isnan(values).any():  # a checkpoint dropped silently would move the peak or the fit
            raise StatisticError(f"{what} is NaN at epoch(s) {epochs[np.isnan(values)].tolist()}")
    peak = int(np.argmax(norm))
    fitted_at = np.nonzero(noisy_error < tolerance)[0]
    fit = int(fitted_at[0]) if fitted_at.size else None
    return dict(peak_epoch=float(epochs[peak]), peak=float(norm[peak]),
                fit_epoch=None if fit is None else float(epochs[fit]), fitted=bool(noisy_error[-1] < tolerance),
                start_ratio=float(norm[0] / norm[peak]), end_ratio=float(norm[-1] / norm[peak]),
                steps=None if fit is None else peak - fit)
