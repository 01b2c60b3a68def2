"""Label-noise protocols: who gets touched, to what, how many, and from which random stream."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from reproduce.errors import UserError
from reproduce.noise import corrupt_labels

LARGE = 20_000


def _labels(n, num_classes, seed=0):
    return torch.randint(num_classes, (n,), generator=torch.Generator().manual_seed(seed))


def _near(count, trials, p, sds=5):
    """`count` successes out of `trials` is within `sds` binomial standard deviations of trials * p."""
    return abs(count - trials * p) <= sds * math.sqrt(trials * p * (1 - p)) + 1e-9


sizes = st.integers(1, 400)
class_counts = st.integers(2, 12)
rates = st.floats(0.0, 1.0)
seeds = st.integers(0, 2**31 - 1)


# flip


@settings(max_examples=30, deadline=None)
@given(n=sizes, k=class_counts, rate=rates, seed=seeds, exact=st.booleans())
def test_flip_changes_exactly_the_noisy_samples(n, k, rate, seed, exact):
    labels = _labels(n, k, seed)
    out = corrupt_labels(labels, k, "flip", rate, seed, exact=exact)
    assert (out.labels[out.noisy] != out.original[out.noisy]).all()
    assert torch.equal(out.labels[~out.noisy], out.original[~out.noisy])
    assert ((out.labels >= 0) & (out.labels < k)).all()
    if exact:
        assert int(out.noisy.sum()) == round(n * rate)


@settings(max_examples=30, deadline=None)
@given(rate=rates, seed=seeds)
def test_flip_fraction_is_near_the_rate(rate, seed):
    out = corrupt_labels(_labels(LARGE, 10, seed), 10, "flip", rate, seed)
    assert _near(int(out.noisy.sum()), LARGE, rate)


def test_flipped_labels_are_uniform_over_the_other_classes():
    """Every (true, noisy) pair with true != noisy is equally likely: no cell of the table strays."""
    k, n = 5, 100_000
    labels = torch.arange(n) % k
    out = corrupt_labels(labels, k, "flip", 1.0, seed=3)
    table = torch.zeros(k, k, dtype=torch.long)
    table.index_put_((out.original, out.labels), torch.ones(n, dtype=torch.long), accumulate=True)
    assert table.diagonal().sum() == 0
    per_cell = n / k / (k - 1)
    off_diagonal = table[~torch.eye(k, dtype=torch.bool)]
    assert (off_diagonal - per_cell).abs().max() < 5 * math.sqrt(per_cell)


# resample


@settings(max_examples=30, deadline=None)
@given(n=sizes, k=class_counts, rate=rates, seed=seeds, exact=st.booleans())
def test_resample_keeps_labels_outside_the_mask(n, k, rate, seed, exact):
    out = corrupt_labels(_labels(n, k, seed), k, "resample", rate, seed, exact=exact)
    assert torch.equal(out.labels[~out.noisy], out.original[~out.noisy])
    assert ((out.labels >= 0) & (out.labels < k)).all()
    if exact:
        assert int(out.noisy.sum()) == round(n * rate)


@settings(max_examples=30, deadline=None)
@given(k=class_counts, rate=st.floats(0.2, 1.0), seed=seeds)
def test_resampled_labels_are_wrong_at_rate_k_minus_one_over_k(k, rate, seed):
    """A redrawn label may land on the true class, so some noisy samples stay right."""
    out = corrupt_labels(_labels(LARGE, k, seed), k, "resample", rate, seed)
    masked = int(out.noisy.sum())
    wrong = int((out.labels != out.original)[out.noisy].sum())
    assert _near(wrong, masked, (k - 1) / k)
    assert wrong < masked


# asymmetric


@settings(max_examples=30, deadline=None)
@given(
    n=sizes,
    k=class_counts,
    rate=rates,
    seed=seeds,
    exact=st.booleans(),
    data=st.data(),
)
def test_asymmetric_touches_only_the_chosen_classes(n, k, rate, seed, exact, data):
    classes = data.draw(st.lists(st.integers(0, k - 1), min_size=1, max_size=k, unique=True))
    labels = _labels(n, k, seed)
    out = corrupt_labels(labels, k, "asymmetric", rate, seed, exact=exact, classes=classes)
    chosen = torch.isin(labels, torch.tensor(classes))
    assert not out.noisy[~chosen].any()
    assert (out.labels[out.noisy] != labels[out.noisy]).all()
    assert torch.equal(out.labels[~out.noisy], labels[~out.noisy])
    if exact:
        for c in classes:
            members = labels == c
            assert int(out.noisy[members].sum()) == round(int(members.sum()) * rate)


@settings(max_examples=30, deadline=None)
@given(rate=rates, seed=seeds)
def test_asymmetric_rate_applies_within_the_chosen_classes(rate, seed):
    labels = _labels(LARGE, 10, seed)
    out = corrupt_labels(labels, 10, "asymmetric", rate, seed, classes=[2, 7])
    chosen = (labels == 2) | (labels == 7)
    assert _near(int(out.noisy.sum()), int(chosen.sum()), rate)


# tag


@settings(max_examples=30, deadline=None)
@given(n=sizes, k=class_counts, rate=rates, seed=seeds)
def test_tag_never_changes_labels_and_tags_exactly_the_rate(n, k, rate, seed):
    labels = _labels(n, k, seed)
    out = corrupt_labels(labels, k, "tag", rate, seed, exact=True)
    assert torch.equal(out.labels, labels)
    assert int(out.noisy.sum()) == round(n * rate)


@settings(max_examples=30, deadline=None)
@given(rate=rates, seed=seeds)
def test_tag_fraction_is_near_the_rate(rate, seed):
    labels = _labels(LARGE, 10, seed)
    out = corrupt_labels(labels, 10, "tag", rate, seed)
    assert torch.equal(out.labels, labels)
    assert _near(int(out.noisy.sum()), LARGE, rate)


# bad input


def test_none_changes_nothing():
    labels = _labels(50, 10)
    out = corrupt_labels(labels, 10, "none", 0.0, seed=0)
    assert torch.equal(out.labels, labels)
    assert not out.noisy.any()


def test_none_with_a_rate_is_refused():
    with pytest.raises(UserError, match="none"):
        corrupt_labels(_labels(10, 3), 3, "none", 0.2, seed=0)


def test_unknown_protocol_is_refused():
    with pytest.raises(UserError, match="pairflip"):
        corrupt_labels(_labels(10, 3), 3, "pairflip", 0.2, seed=0)


@pytest.mark.parametrize("rate", [-0.1, 1.0001, 2.0, float("inf"), float("nan")])
@pytest.mark.parametrize("protocol", ["flip", "resample", "tag", "none"])
def test_rate_outside_unit_interval_is_refused(protocol, rate):
    with pytest.raises(UserError, match="outside"):
        corrupt_labels(_labels(10, 3), 3, protocol, rate, seed=0)


# common to every protocol

protocols = st.sampled_from(["none", "flip", "resample", "asymmetric", "tag"])


def _corrupt(labels, k, protocol, rate, seed, exact=False):
    rate = 0.0 if protocol == "none" else rate
    return corrupt_labels(labels, k, protocol, rate, seed, exact=exact, classes=[0, k - 1])


@settings(max_examples=30, deadline=None)
@given(protocol=protocols, n=st.integers(0, 300), k=class_counts, rate=rates, seed=seeds, exact=st.booleans())
def test_result_shapes_and_original_labels(protocol, n, k, rate, seed, exact):
    labels = _labels(n, k, seed)
    before = labels.clone()
    out = _corrupt(labels, k, protocol, rate, seed, exact)
    assert torch.equal(labels, before)  # the input is not modified
    assert torch.equal(out.original, labels)
    assert out.noisy.dtype == torch.bool and out.noisy.shape == (n,)
    assert out.labels.dtype == torch.int64 and out.labels.shape == (n,)
    assert (out.protocol, out.rate, out.seed) == (protocol, (0.0 if protocol == "none" else rate), seed)


def test_original_is_int64_whatever_the_input_type():
    labels = _labels(30, 4).to(torch.int32)
    out = corrupt_labels(labels, 4, "flip", 0.5, seed=0)
    assert out.original.dtype == torch.int64 and torch.equal(out.original, labels.long())


@settings(max_examples=30, deadline=None)
@given(protocol=protocols, k=class_counts, rate=rates, seed=seeds, exact=st.booleans())
def test_same_seed_same_result(protocol, k, rate, seed, exact):
    labels = _labels(200, k, seed)
    a = _corrupt(labels, k, protocol, rate, seed, exact)
    b = _corrupt(labels, k, protocol, rate, seed, exact)
    assert torch.equal(a.labels, b.labels) and torch.equal(a.noisy, b.noisy)


@settings(max_examples=30, deadline=None)
@given(protocol=st.sampled_from(["flip", "resample", "tag"]), seed=seeds, exact=st.booleans())
def test_other_seed_other_mask(protocol, seed, exact):
    labels = _labels(200, 10)
    a = corrupt_labels(labels, 10, protocol, 0.5, seed, exact=exact)
    b = corrupt_labels(labels, 10, protocol, 0.5, seed + 1, exact=exact)
    assert not torch.equal(a.noisy, b.noisy)


@settings(max_examples=30, deadline=None)
@given(protocol=protocols, k=class_counts, rate=rates, seed=seeds, exact=st.booleans())
def test_global_torch_seed_has_no_influence(protocol, k, rate, seed, exact):
    labels = _labels(200, k, seed)
    state = torch.get_rng_state()
    try:
        torch.manual_seed(1)
        a = _corrupt(labels, k, protocol, rate, seed, exact)
        torch.manual_seed(2)
        torch.rand(7)  # and at another position in the global stream
        b = _corrupt(labels, k, protocol, rate, seed, exact)
    finally:
        torch.set_rng_state(state)
    assert torch.equal(a.labels, b.labels) and torch.equal(a.noisy, b.noisy)
