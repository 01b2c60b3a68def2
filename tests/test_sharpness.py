"""Unit tests of the input-space sharpness measures against planted ground truths."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from reproduce.errors import UserError
from reproduce.measures.sharpness import (
    VolumeSpec,
    OFFICIAL_ERASED,
    colour_jitter,
    colour_jitter_factors,
    jacobian_norm,
    loss_input_gradient,
    sharpness_over_volumes,
    svd_paths,
    tangent_hessian_norm,
    volume_integral,
)
from reproduce.models import StackedConvNet


def _convnet(replicas: int = 2) -> StackedConvNet:
    return StackedConvNet((1, 6, 6), 1, 3, seeds=list(range(replicas))).double().eval()


def test_batched_jacobian_matches_per_sample_loop_and_finite_differences():
    torch.manual_seed(0)
    model = _convnet()
    x = torch.rand(2, 5, 1, 6, 6, dtype=torch.float64)
    y = torch.randint(3, (2, 5))
    batched = jacobian_norm(model, x, y)
    grad, loss, _ = loss_input_gradient(model, x, y)
    for r in range(2):
        for n in range(5):
            xi = x.clone().requires_grad_(True)
            (g,) = torch.autograd.grad(F.cross_entropy(model(xi)[r, n][None], y[r, n][None]), xi)
            assert torch.allclose(g[r, n], grad[r, n], atol=1e-10)
            assert g[r, n].norm() == pytest.approx(batched[r, n].item(), rel=1e-9)
            assert g.abs().sum() == pytest.approx(g[r, n].abs().sum().item())  # no leak to other samples
    # central finite differences, coordinate by coordinate, for one sample of each replica
    eps = 1e-6
    for r in range(2):
        fd = torch.zeros(36, dtype=torch.float64)
        for i in range(36):
            e = torch.zeros(36, dtype=torch.float64)
            e[i] = eps
            e = e.view(1, 6, 6)
            plus, minus = x.clone(), x.clone()
            plus[r, 0] += e
            minus[r, 0] -= e
            lp = F.cross_entropy(model(plus)[r, 0][None], y[r, 0][None])
            lm = F.cross_entropy(model(minus)[r, 0][None], y[r, 0][None])
            fd[i] = (lp - lm) / (2 * eps)
        assert fd.norm().item() == pytest.approx(batched[r, 0].item(), rel=1e-5)
    assert torch.allclose(loss[0, 0], F.cross_entropy(model(x)[0, :1], y[0, :1]))


def test_jacobian_works_under_no_grad_and_rejects_wrong_labels():
    model = _convnet()
    x = torch.rand(2, 3, 1, 6, 6, dtype=torch.float64)
    with torch.no_grad():
        assert jacobian_norm(model, x, torch.zeros(2, 3, dtype=torch.long)).shape == (2, 3)
    with pytest.raises(UserError):
        jacobian_norm(model, x, torch.zeros(3, dtype=torch.long))


def _planted(s: list[float], size: int, seed: int = 0) -> torch.Tensor:
    """A one-channel image (1, 1, size, size) with singular values s (the rest exactly 0)."""
    g = torch.Generator().manual_seed(seed)
    u = torch.linalg.qr(torch.randn(size, size, generator=g, dtype=torch.float64)).Q[:, : len(s)]
    v = torch.linalg.qr(torch.randn(size, size, generator=g, dtype=torch.float64)).Q[:, : len(s)]
    return ((u * torch.tensor(s, dtype=torch.float64)) @ v.T).view(1, 1, size, size)


def test_full_rank_32x32_erases_the_official_counts_from_the_base_image():
    s = [float(32 - i) for i in range(32)]  # 32 ... 1
    x = _planted(s, 32)
    points = svd_paths(x, paths=2, strengths=6)
    assert torch.equal(points[:, 0], x.expand(2, *x.shape))
    for p in range(2):
        for k, count in enumerate(OFFICIAL_ERASED, start=1):
            left = torch.linalg.svdvals(points[p, k, 0, 0])
            kept = sorted(s[: 32 - p - count] + s[32 - p :], reverse=True)  # p smallest kept, next `count` erased
            np.testing.assert_allclose(left[: len(kept)].numpy(), kept, atol=1e-9)
            assert left[len(kept) :].abs().max() < 1e-9
            erased = s[32 - p - count : 32 - p]
            assert (points[p, k] - x).norm().item() == pytest.approx(float(np.sqrt(np.sum(np.square(erased)))))


@settings(max_examples=8, deadline=None)
@given(seed=st.integers(0, 10_000), rank=st.integers(4, 10))  # rank 4 keeps two values at the strongest erasure
def test_rank_deficient_image_moves_along_every_path(seed, rank):
    """The old degenerate case: an image with null singular values. Paths must erase non-zero
    values only: every point k >= 1 moves, farther with k, and the directions p differ."""
    s = sorted(torch.rand(rank, generator=torch.Generator().manual_seed(seed)).add(0.1).tolist(), reverse=True)
    x = _planted(s, 12, seed)
    points = svd_paths(x, paths=3, strengths=4)
    distance = (points - x).flatten(2).norm(dim=-1)  # (P, K+1)
    assert (distance[:, 1:] > 1e-3).all()
    assert (distance[:, 1:].diff(dim=1) >= -1e-12).all()  # nested erasures: never closer with k
    assert not torch.allclose(points[0, 1], points[1, 1])  # directions p differ


def test_colour_directions_are_reproducible_from_their_seed():
    """The tangent directions (Sec. 3.2, the authors' MultiColorJitter): 4 per image, factors in
    [0.99, 1.01], the same for the same seed whatever the number of images drawn after, another
    draw for another seed."""
    f = colour_jitter_factors(50)
    assert f.shape == (50, 4, 3) and f.dtype == torch.float64
    assert (f >= 0.99).all() and (f <= 1.01).all() and f.std() > 0.004  # spread over the whole range
    assert torch.equal(f, colour_jitter_factors(50, seed=44))
    assert torch.equal(colour_jitter_factors(80)[:50], f)  # image i's directions do not depend on N
    assert not torch.allclose(colour_jitter_factors(50, seed=45), f)


def test_colour_jitter_planted_factors():
    """T x = b (c (s x + (1 - s) grey) + (1 - c) mean(grey)): brightness scales, contrast pulls
    toward the mean grey, saturation toward the grey image; on one channel saturation is the identity."""
    torch.manual_seed(3)
    x = torch.rand(2, 5, 3, 4, 4, dtype=torch.float64)  # (lead, N, C, H, W)
    one = torch.ones(5, 1, 3, dtype=torch.float64)
    only = lambda i, v: one.clone().index_fill_(2, torch.tensor([i]), v)  # noqa: E731
    assert torch.allclose(colour_jitter(x, one)[0], x)
    assert torch.allclose(colour_jitter(x, only(0, 1.01))[0], 1.01 * x)
    grey = (x * torch.tensor([0.2989, 0.587, 0.114], dtype=torch.float64).view(3, 1, 1)).sum(-3, keepdim=True)
    mean = grey.mean(dim=(-3, -2, -1), keepdim=True)
    assert torch.allclose(colour_jitter(x, only(1, 0.99))[0], 0.99 * x + 0.01 * mean)
    assert torch.allclose(colour_jitter(x, only(2, 0.99))[0], 0.99 * x + 0.01 * grey)
    mono = x[:, :, :1]
    assert torch.allclose(colour_jitter(mono, only(2, 0.99))[0], mono)  # saturation: identity on one channel
    factors = colour_jitter_factors(5)
    out = colour_jitter(mono, factors)
    assert out.shape == (4, 2, 5, 1, 4, 4)
    b, c = factors[..., 0].T.reshape(4, 1, 5, 1, 1, 1), factors[..., 1].T.reshape(4, 1, 5, 1, 1, 1)
    assert torch.allclose(out, b * (c * mono + (1 - c) * mono.mean(dim=(-3, -2, -1), keepdim=True)))


def test_tangent_hessian_of_a_quadratic_loss_along_colour_directions():
    """A loss with a known input Hessian, L(x) = 1/2 (x - a)^T A (x - a): J(x) = A (x - a) is linear,
    so Eq. 5 along the colour directions is exactly sqrt(mean_m ||A (T_m x - x)||^2) / 0.1, and
    for brightness alone (T x = b x) it is |b - 1| ||A x|| / 0.1."""
    torch.manual_seed(4)
    d = 1 * 4 * 4
    q = torch.randn(d, d, dtype=torch.float64)
    hessian, a = q @ q.T, torch.randn(d, dtype=torch.float64)
    jac = lambda z: (z.flatten(-3) - a) @ hessian  # noqa: E731  (A symmetric)
    x = torch.rand(3, 1, 4, 4, dtype=torch.float64)
    factors = colour_jitter_factors(3)
    shifted = colour_jitter(x, factors)  # (M, N, C, H, W)
    estimate = tangent_hessian_norm(jac(x), jac(shifted), 0.1, lead=1)
    moves = (shifted - x).flatten(-3)  # (M, N, d)
    truth = (moves @ hessian).norm(dim=-1).pow(2).mean(0).sqrt() / 0.1
    torch.testing.assert_close(estimate, truth)
    brightness = torch.ones(3, 4, 3, dtype=torch.float64)
    brightness[..., 0] = torch.tensor([0.99, 1.01, 0.995, 1.005], dtype=torch.float64)
    along = tangent_hessian_norm(jac(x), jac(colour_jitter(x, brightness)), 0.1, lead=1)
    planted = (x.flatten(-3) @ hessian).norm(dim=-1) * torch.tensor([0.01, 0.01, 0.005, 0.005]).pow(2).mean().sqrt() / 0.1
    torch.testing.assert_close(along, planted.double())


def test_volumes_use_the_colour_directions_of_each_image_at_every_path_point():
    """sharpness_over_volumes' Hessian at volume 0 is Eq. 5 along image n's own colour directions,
    whatever the chunk size."""
    torch.manual_seed(5)
    w = torch.randn(3, 16, dtype=torch.float64)
    model = lambda z: z.flatten(-3) @ w.T  # noqa: E731
    x, y = torch.rand(6, 1, 4, 4, dtype=torch.float64), torch.randint(3, (6,))
    out = sharpness_over_volumes(model, x, y, VolumeSpec(paths=2, strengths=2, chunk=4))
    g0, _, _ = loss_input_gradient(model, x, y)
    shifted = torch.stack([loss_input_gradient(model, t, y)[0] for t in colour_jitter(x, colour_jitter_factors(6))])
    torch.testing.assert_close(out["hessian"][:, 0], tangent_hessian_norm(g0, shifted, 0.1, lead=1))
    again = sharpness_over_volumes(model, x, y, VolumeSpec(paths=2, strengths=2, chunk=6))
    torch.testing.assert_close(again["hessian"], out["hessian"])


def test_fourteen_pixel_scaling_and_bad_input():
    x = _planted([float(14 - i) for i in range(14)], 14)
    points = svd_paths(x, paths=1, strengths=3)
    counts = [int((torch.linalg.svdvals(points[0, k, 0, 0]) > 1e-9).sum()) for k in range(4)]
    assert counts == [14, 12, 10, 7]  # 5, 10, 15 of 32 scaled to 14 values: 2, 4, 7 erased
    with pytest.raises(UserError):
        svd_paths(x[0, 0], paths=1, strengths=1)
    with pytest.raises(UserError):
        svd_paths(x, paths=1, strengths=7)


def _linear(w: torch.Tensor, b: torch.Tensor):
    return lambda x: x.flatten(-3) @ w.T + b


def test_tangent_hessian_of_a_linear_model_matches_the_analysis():
    """For logits Wx + b the loss Hessian is W^T (diag(s) - s s^T) W, s = softmax: Eq. 5 with a
    small step must give the RMS of ||H u_m||, exactly 0 along directions W cannot see, and fall
    to 0 as the prediction saturates on the right class."""
    torch.manual_seed(1)
    d, k = 12, 4
    w, b = torch.randn(k, d, dtype=torch.float64), torch.zeros(k, dtype=torch.float64)
    model = _linear(w, b)
    x = torch.rand(1, 1, 3, 4, dtype=torch.float64)
    y = torch.tensor([2])
    u = torch.randn(3, 1, 1, 3, 4, dtype=torch.float64)
    delta = 1e-5
    g0, _, _ = loss_input_gradient(model, x, y)
    shifted = torch.stack([loss_input_gradient(model, x + delta * u[m], y)[0] for m in range(3)])
    estimate = tangent_hessian_norm(g0, shifted, delta, lead=1)
    s = torch.softmax(model(x)[0], -1)
    hessian = w.T @ (torch.diag(s) - torch.outer(s, s)) @ w
    truth = torch.stack([(hessian @ u[m].flatten()).norm() for m in range(3)]).pow(2).mean().sqrt()
    assert estimate.item() == pytest.approx(truth.item(), rel=1e-4)
    # directions in the null space of W: the logits, hence the Jacobian, do not move
    null = torch.linalg.svd(w, full_matrices=True).Vh[k:]
    along_null = torch.stack([loss_input_gradient(model, x + 0.5 * null[i].view(1, 1, 3, 4), y)[0] for i in range(3)])
    assert tangent_hessian_norm(g0, along_null, 0.5, lead=1).item() < 1e-12
    # a confident correct prediction flattens the loss: Hessian norm falls with the margin
    norms = []
    for scale in (1.0, 10.0, 100.0):
        confident = _linear(w, b + scale * F.one_hot(y, k)[0].double())
        g, _, _ = loss_input_gradient(confident, x, y)
        sh = torch.stack([loss_input_gradient(confident, x + delta * u[m], y)[0] for m in range(3)])
        norms.append(tangent_hessian_norm(g, sh, delta, lead=1).item())
    assert norms[0] > norms[1] > norms[2] and norms[2] < 1e-20


def test_volume_integral_planted_values():
    points = torch.zeros(2, 4, 3, 1, 2, 2, dtype=torch.float64)  # (P, K+1, N, C, H, W)
    for k in range(4):
        points[:, k, :, 0, 0, 0] = k * torch.tensor([1.0, 3.0])[:, None]  # straight paths, unit/3x segments
    constant = torch.full((2, 4, 3), 7.0, dtype=torch.float64)
    assert torch.allclose(volume_integral(constant, points, lead=1), torch.full((4, 3), 7.0, dtype=torch.float64))
    linear = torch.arange(4, dtype=torch.float64).view(1, 4, 1).expand(2, 4, 3)  # value k at step k
    out = volume_integral(linear, points, lead=1)
    assert torch.allclose(out[:, 0], torch.tensor([0.0, 0.5, 1.0, 1.5], dtype=torch.float64))  # mean of a line = midpoint
    degenerate = volume_integral(linear, torch.zeros_like(points), lead=1)  # zero-length paths: plain mean
    assert torch.allclose(degenerate[:, 0], torch.tensor([0.0, 0.5, 1.0, 1.5], dtype=torch.float64))


def test_stacked_volumes_equal_each_replica_alone():
    torch.manual_seed(2)
    stacked = _convnet(2)
    x = torch.rand(5, 1, 6, 6, dtype=torch.float64)
    y = torch.randint(3, (2, 5))
    spec = VolumeSpec(paths=2, strengths=2, hessian_directions=2, chunk=3)
    both = sharpness_over_volumes(stacked, x, y, spec)
    for r in range(2):
        alone = StackedConvNet((1, 6, 6), 1, 3, seeds=[r]).double().eval()
        one = sharpness_over_volumes(lambda z: alone(z.unsqueeze(0))[0], x, y[r], spec)
        for name in both:
            assert both[name].shape == (2, 5, 3)
            np.testing.assert_allclose(both[name][r].numpy(), one[name].numpy(), rtol=1e-9, atol=1e-12)
    assert torch.allclose(both["jacobian"][..., 0], jacobian_norm(stacked, x.expand(2, *x.shape), y))
