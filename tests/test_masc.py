"""MASC (reproduce/measures/masc.py) against planted subspaces and its degenerate-input rules."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from reproduce.errors import UserError
from reproduce.measures.masc import NO_PREDICTION, accuracy, class_basis, cosines, fit_subspaces, predict


def planted(num_classes: int, dim: int, rank: int, per_class: int, seed: int):
    """Samples of class c lie in a random `rank`-dimensional subspace of R^dim (with random signs)."""
    g = torch.Generator().manual_seed(seed)
    bases = [torch.linalg.qr(torch.randn(dim, rank, generator=g, dtype=torch.float64))[0] for _ in range(num_classes)]
    x = torch.cat([torch.randn(per_class, rank, generator=g, dtype=torch.float64) @ b.T for b in bases])
    y = torch.arange(num_classes).repeat_interleave(per_class)
    return x.float(), y, bases


@pytest.mark.parametrize("dim,per_class", [(40, 200), (300, 30)])  # primal (d <= n) and dual (d > n) Gram
def test_planted_subspaces_are_classified_perfectly(dim, per_class):
    x, y, bases = planted(5, dim, 4, per_class, seed=0)
    sub = fit_subspaces(x[::2], y[::2], 5)
    assert sub.ranks.tolist() == [4] * 5  # 99% of the variance needs all 4 planted directions, never more
    assert accuracy(predict(sub, x[1::2]), y[1::2]) == 1.0
    for c, b in enumerate(bases):  # the fitted basis spans the planted one
        fitted = sub.bases[c, :, :4]
        assert torch.allclose(fitted.T @ fitted, torch.eye(4, dtype=torch.float64), atol=1e-8)
        assert torch.linalg.matrix_norm(b - fitted @ (fitted.T @ b)) < 1e-5


def test_ninety_nine_percent_rule_counts_components():
    """Variances 0.9, 0.095, 0.005: 99% needs two of the three planted directions."""
    g = torch.Generator().manual_seed(1)
    z = torch.randn(20_000, 3, generator=g, dtype=torch.float64)
    z = z / z.std(0) * torch.tensor([0.9, 0.095, 0.005]).sqrt()
    x = torch.cat([z, torch.zeros(20_000, 5, dtype=torch.float64)], 1)
    assert class_basis(x, 0.99).shape == (8, 2)
    assert class_basis(x, 0.999).shape == (8, 3)
    assert class_basis(x, 0.5).shape == (8, 1)


@settings(max_examples=20, deadline=None)
@given(scale=st.floats(1e-3, 1e3), seed=st.integers(0, 10_000), flip=st.booleans())
def test_prediction_is_invariant_to_scaling_a_sample(scale, seed, flip):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(60, 12, generator=g, dtype=torch.float64)
    y = torch.randint(3, (60,), generator=g)
    sub = fit_subspaces(x, y, 3, variance=0.9)
    test = torch.randn(20, 12, generator=g, dtype=torch.float64)
    factor = -scale if flip else scale  # the negatives are in every subspace, so the sign does not matter either
    assert torch.allclose(cosines(sub, test), cosines(sub, factor * test), atol=1e-9)
    assert torch.equal(predict(sub, test), predict(sub, factor * test))


@settings(max_examples=20, deadline=None)
@given(scale=st.floats(1e-3, 1e3), seed=st.integers(0, 10_000))
def test_subspaces_are_invariant_to_scaling_training_samples(scale, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(50, 6, generator=g, dtype=torch.float64)
    y = torch.randint(2, (50,), generator=g)
    test = torch.randn(10, 6, generator=g, dtype=torch.float64)
    a, b = fit_subspaces(x, y, 2), fit_subspaces(scale * x, y, 2)
    assert torch.equal(a.ranks, b.ranks)
    assert torch.allclose(cosines(a, test), cosines(b, test), atol=1e-7)


def test_zero_sample_gets_no_prediction_and_counts_as_a_miss():
    x, y, _ = planted(3, 10, 2, 50, seed=2)
    sub = fit_subspaces(x, y, 3)
    test = torch.cat([x[:4], torch.zeros(1, 10)])
    predicted = predict(sub, test)
    assert predicted[-1] == NO_PREDICTION
    assert torch.isnan(cosines(sub, test)[-1]).all()
    assert accuracy(predicted, torch.cat([y[:4], torch.tensor([0])])) == pytest.approx(0.8)


def test_zero_training_samples_add_nothing():
    x, y, _ = planted(2, 10, 2, 50, seed=3)
    with_zeros = fit_subspaces(torch.cat([x, torch.zeros(30, 10)]), torch.cat([y, torch.zeros(30, dtype=torch.long)]), 2)
    assert with_zeros.ranks.tolist() == fit_subspaces(x, y, 2).ranks.tolist()


def test_empty_class_is_never_predicted():
    x, y, _ = planted(3, 10, 2, 40, seed=4)
    keep = y != 1
    sub = fit_subspaces(x[keep], y[keep], 3)
    assert sub.ranks[1] == 0 and sub.counts[1] == 0
    assert (predict(sub, x) != 1).all()  # even the samples of class 1 go elsewhere
    all_zero = fit_subspaces(torch.cat([x[keep], torch.zeros(5, 10)]), torch.cat([y[keep], torch.ones(5, dtype=torch.long)]), 3)
    assert all_zero.ranks[1] == 0  # a class of zero outputs counts as empty


def test_one_sample_class_is_the_line_through_it():
    x, y, _ = planted(2, 10, 3, 40, seed=5)
    lone = torch.randn(1, 10, generator=torch.Generator().manual_seed(0))
    sub = fit_subspaces(torch.cat([x, lone]), torch.cat([y, torch.tensor([2])]), 3)
    assert sub.ranks[2] == 1
    assert torch.allclose(cosines(sub, torch.cat([lone, -3 * lone]))[:, 2], torch.ones(2, dtype=torch.float64))
    assert (predict(sub, torch.cat([lone, -3 * lone])) == 2).all()


def test_rank_deficient_class_keeps_only_its_rank():
    """Duplicated samples and more dimensions than samples: the basis never exceeds the true rank."""
    x, y, _ = planted(2, 500, 3, 20, seed=6)
    x = torch.cat([x, x])
    y = torch.cat([y, y])
    sub = fit_subspaces(x, y, 2, variance=1.0)
    assert sub.ranks.tolist() == [3, 3]
    basis = sub.bases[0, :, :3]
    assert torch.allclose(basis.T @ basis, torch.eye(3, dtype=torch.float64), atol=1e-8)


def test_no_samples_at_all_predicts_nothing():
    sub = fit_subspaces(torch.zeros(0, 4), torch.zeros(0, dtype=torch.long), 3)
    assert (predict(sub, torch.ones(2, 4)) == NO_PREDICTION).all()


def test_ties_go_to_the_lowest_class():
    x = torch.tensor([[1.0, 0, 0], [0, 1.0, 0]])
    sub = fit_subspaces(x, torch.tensor([0, 1]), 2)
    assert predict(sub, torch.tensor([[0, 0, 1.0], [1.0, 1.0, 0]])).tolist() == [0, 0]


@pytest.mark.parametrize(
    "outputs,labels,k,message",
    [
        (torch.zeros(3), torch.zeros(3, dtype=torch.long), 2, "shape"),
        (torch.zeros(3, 2), torch.zeros(2, dtype=torch.long), 2, "labels for"),
        (torch.zeros(3, 2), torch.tensor([0, 1, 5]), 2, "must lie in"),
        (torch.full((3, 2), float("nan")), torch.zeros(3, dtype=torch.long), 2, "NaN"),
    ],
)
def test_bad_input_is_one_user_error(outputs, labels, k, message):
    with pytest.raises(UserError, match=message):
        fit_subspaces(outputs, labels, k)


def test_dimension_mismatch_is_a_user_error():
    sub = fit_subspaces(torch.randn(10, 4), torch.zeros(10, dtype=torch.long), 1)
    with pytest.raises(UserError, match="do not match"):
        predict(sub, torch.randn(2, 5))


def test_matches_sklearn_style_pca_of_the_doubled_data():
    """The Gram shortcut equals PCA (centered SVD) of [X; -X], the paper's Alg. 3 done literally."""
    g = torch.Generator().manual_seed(7)
    x = torch.randn(80, 6, generator=g, dtype=torch.float64) @ torch.randn(6, 6, generator=g, dtype=torch.float64)
    doubled = torch.cat([x, -x]).numpy()
    _, s, vt = np.linalg.svd(doubled - doubled.mean(0), full_matrices=False)
    share = np.cumsum(s**2) / np.sum(s**2)
    rank = int(np.searchsorted(share, 0.99) + 1)
    basis = class_basis(x, 0.99)
    assert basis.shape[1] == rank
    reference = torch.tensor(vt[:rank].T)
    assert torch.allclose(basis @ basis.T, reference @ reference.T, atol=1e-8)
