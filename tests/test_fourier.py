"""Fourier extraction and the task-agnostic partition against planted ground truth."""

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from reproduce.errors import UserError
from reproduce.experiments.modnoise import one_hot_pairs, table
from reproduce.measures.fourier import (discrete_log, discrete_log_order, extract_global, extract_per_neuron,
                                        group_order, neuron_spectrum, primitive_root)
from reproduce.measures.partition import (ablation_scores, choose_k, generalizing_group, ipr_scores, partition,
                                          strength_scores, subnetwork_output, top_k)
from reproduce.models import two_layer_logits

PRIMES = [5, 7, 11, 13, 17, 23, 29, 31, 37, 41, 43, 47, 53, 59, 61, 97]


def planted(op: str, p: int, width: int, seed: int = 0, noise: float = 0.0):
    """A quadratic network that computes (a ∘ b) mod P with exact Fourier features (Gromov 2023).

    Neuron n has one frequency k and random phases phi, psi: u_a = cos(w i_a + phi),
    u_b = cos(w i_b + psi) and v = cos(w i_c + phi + psi), where i_x is x's position along the
    group (the residue itself, or its discrete log for multiplication) and w = 2 pi k / L. The
    cross term of the square gives cos(w (i_a + i_b - i_c)) per neuron: largest where c = a ∘ b.
    For subtraction, u_b uses -i_b. `noise` adds i.i.d. Gaussian weights (a stand-in for memorization).
    """
    g = torch.Generator().manual_seed(seed)
    order = group_order(op, p)
    n = len(order)
    pos = torch.arange(n, dtype=torch.float64)
    k = torch.randint(1, n // 2 + (n % 2), (width,), generator=g).double()
    phi, psi = (torch.rand(width, generator=g, dtype=torch.float64) * 2 * math.pi for _ in range(2))
    w = 2 * math.pi * k[:, None] / n
    sign_b = -1.0 if op == "sub" else 1.0
    w_in = torch.zeros(1, 2 * p, width, dtype=torch.float64)
    w_out = torch.zeros(1, width, p, dtype=torch.float64)
    idx = torch.as_tensor(order)
    w_in[0, idx, :] = torch.cos(w * pos + phi[:, None]).T
    w_in[0, idx + p, :] = torch.cos(sign_b * w * pos + psi[:, None]).T
    w_out[0, :, idx] = torch.cos(w * pos + (phi + psi)[:, None])
    if noise:
        w_in += noise * torch.randn(w_in.shape, generator=g, dtype=torch.float64)
        w_out += noise * torch.randn(w_out.shape, generator=g, dtype=torch.float64)
    return w_in, w_out


def accuracy(op: str, p: int, w_in: torch.Tensor, w_out: torch.Tensor) -> float:
    pairs, y = table(op, p)
    x = one_hot_pairs(pairs, p).to(w_in.dtype)
    return float((two_layer_logits(w_in, w_out, x).argmax(-1) == y).double().mean())


@pytest.mark.parametrize("op", ["add", "sub", "mul"])
def test_planted_fourier_network_extracts_to_perfect_accuracy(op):
    w_in, w_out = planted(op, 31, 400)
    assert accuracy(op, 31, w_in, w_out) == 1.0
    extracted = extract_per_neuron(w_in, w_out, group_order(op, 31))
    assert accuracy(op, 31, *extracted) == 1.0
    spectrum = neuron_spectrum(w_in, w_out, group_order(op, 31))
    assert torch.allclose(spectrum["concentration"], torch.ones_like(spectrum["concentration"]))


@pytest.mark.parametrize("op", ["add", "sub", "mul"])
def test_extraction_removes_planted_memorization_noise(op):
    """Fourier features buried under i.i.d. weights: the model errs, the extraction does not."""
    w_in, w_out = planted(op, 31, 400, noise=1.5)
    assert accuracy(op, 31, w_in, w_out) < 0.9
    assert accuracy(op, 31, *extract_per_neuron(w_in, w_out, group_order(op, 31))) == 1.0


@pytest.mark.parametrize("op", ["add", "sub", "mul"])
def test_random_network_stays_near_chance(op):
    g = torch.Generator().manual_seed(3)
    p = 31
    w_in, w_out = torch.randn(1, 2 * p, 400, generator=g), torch.randn(1, 400, p, generator=g)
    assert accuracy(op, p, *extract_per_neuron(w_in, w_out, group_order(op, p))) < 0.12
    assert accuracy(op, p, *extract_global(w_in, w_out, group_order(op, p), 3)) < 0.12


def test_extraction_is_a_projection():
    w_in, w_out = planted("add", 23, 50)
    order = group_order("add", 23)
    once = extract_per_neuron(w_in, w_out, order)
    twice = extract_per_neuron(*once, order)
    assert all(torch.allclose(a, b) for a, b in zip(once, twice))
    assert torch.allclose(once[0], w_in) and torch.allclose(once[1], w_out)  # already pure, zero mean
    everything = extract_global(w_in, w_out, order, 11)  # all 11 non-constant frequencies of P = 23
    assert torch.allclose(everything[0], w_in) and torch.allclose(everything[1], w_out)


@settings(max_examples=20, deadline=None)
@given(st.sampled_from([31, 32, 58, 59]), st.integers(1, 15), st.floats(0, 2 * math.pi))
def test_pure_cosine_neuron_has_its_frequency_and_full_concentration(length, k, phase):
    k = min(k, length // 2)
    x = torch.arange(length, dtype=torch.float64)
    u = torch.cos(2 * math.pi * k * x / length + phase) + 0.7  # the constant must not count
    w_in = torch.stack([u, 2 * u]).reshape(1, 2 * length, 1)  # rows: a then b
    s = neuron_spectrum(w_in, torch.zeros(1, 1, length, dtype=torch.float64), np.arange(length))
    assert int(s["dominant"][0, 0]) == k
    assert float(s["concentration"][0, 0]) == pytest.approx(1.0)


@settings(max_examples=20, deadline=None)
@given(st.sampled_from(PRIMES))
def test_discrete_log_basis_change_is_exact(p):
    order = discrete_log_order(p)
    log = discrete_log(p)
    assert sorted(order.tolist()) == list(range(1, p))  # a bijection 0..P-2 -> 1..P-1
    assert (log[order] == np.arange(p - 1)).all() and log[0] == -1
    a, b = np.meshgrid(np.arange(1, p), np.arange(1, p))
    assert ((log[(a * b) % p]) == (log[a] + log[b]) % (p - 1)).all()  # multiplication becomes addition mod P-1
    assert pow(primitive_root(p), (p - 1) // 2, p) != 1 or p == 2


def test_non_prime_modulus_is_a_user_error():
    with pytest.raises(UserError, match="not prime"):
        primitive_root(60)
    with pytest.raises(UserError, match="unknown operation"):
        group_order("div", 7)


def test_multiplication_table_excludes_zero():
    pairs, y = table("mul", 7)
    assert pairs.shape == (36, 2) and pairs.min() == 1 and (y > 0).all()
    assert (y == (pairs[:, 0] * pairs[:, 1]) % 7).all()


# --- partition ----------------------------------------------------------------------------

def test_ablation_scores_equal_brute_force_removal():
    g = torch.Generator().manual_seed(0)
    hidden, w_out = torch.rand(2, 30, 7, generator=g), torch.randn(2, 7, 5, generator=g)
    labels = torch.randint(5, (2, 30), generator=g)
    scores = ablation_scores(hidden, w_out, labels, chunk=3)
    for r in range(2):
        base = torch.nn.functional.cross_entropy(hidden[r] @ w_out[r], labels[r]).item()
        for m in range(7):
            cut = w_out[r].clone()
            cut[m] = 0
            brute = torch.nn.functional.cross_entropy(hidden[r] @ cut, labels[r]).item() - base
            assert float(scores[r, m]) == pytest.approx(brute, abs=1e-6)


def test_partition_finds_planted_generalizing_neurons():
    """Fourier neurons (a rule) beside neurons that store random labels: scored on held-out samples
    with correct labels, the rule's neurons form the generalizing group and the subnetwork beats the network."""
    p = 23
    rule_in, rule_out = planted("add", p, 200)
    g = torch.Generator().manual_seed(1)
    mem_in = torch.randn(1, 2 * p, 200, generator=g, dtype=torch.float64)
    mem_out = torch.randn(1, 200, p, generator=g, dtype=torch.float64)
    w_in, w_out = torch.cat([rule_in, mem_in], 2), torch.cat([0.02 * rule_out, 0.02 * mem_out], 1)  # loss not saturated
    pairs, y = table("add", p)
    _, hidden = two_layer_logits(w_in, w_out, one_hot_pairs(pairs, p).double(), return_hidden=True)
    group = generalizing_group(ablation_scores(hidden, w_out, y.unsqueeze(0)))
    assert group[0, :200].float().mean() > 0.9
    assert group[0, 200:].float().mean() < 0.6
    full, sub = accuracy("add", p, w_in, w_out), accuracy("add", p, w_in, subnetwork_output(w_out, group))
    assert sub > full + 0.1, (full, sub)
    fixed = partition(hidden, w_out, y.unsqueeze(0))  # repeated scoring only ever removes neurons
    assert (fixed <= group).all() and fixed[0, :200].float().mean() > 0.9 and fixed[0, 200:].float().mean() < 0.3
    assert accuracy("add", p, w_in, subnetwork_output(w_out, fixed)) >= sub


# --- the paper's scores: Strength (task-agnostic) and IPR (task-aware), top k chosen on held-out samples ---

def _rule_and_memory(op: str, p: int, memory_scale: float, n: int = 200):
    """n planted Fourier neurons (the rule, neurons 0..n-1) beside n i.i.d. Gaussian neurons of the
    given scale (a stand-in for memorization), and which neurons are the rule's."""
    rule_in, rule_out = planted(op, p, n)
    g = torch.Generator().manual_seed(1)
    mem_in = memory_scale * torch.randn(1, 2 * p, n, generator=g, dtype=torch.float64)
    mem_out = memory_scale * torch.randn(1, n, p, generator=g, dtype=torch.float64)
    truth = torch.arange(2 * n).unsqueeze(0) < n
    return torch.cat([rule_in, mem_in], 2), torch.cat([rule_out, mem_out], 1), truth


def _held_out(op: str, p: int, w_in, w_out, activation: str, flip: float = 0.5):
    """Hidden activations of every pair and its label, `flip` of them replaced by a wrong one (noisy held-out labels)."""
    pairs, y = table(op, p)
    _, hidden = two_layer_logits(w_in, w_out, one_hot_pairs(pairs, p).double(), activation, return_hidden=True)
    g = torch.Generator().manual_seed(2)
    wrong = (y + torch.randint(1, p, y.shape, generator=g)) % p
    noisy = torch.where(torch.rand(y.shape, generator=g) < flip, wrong, y)
    return hidden, noisy.unsqueeze(0), y


def test_strength_is_the_papers_formula():
    w_in = torch.tensor([[[1.0, -0.5], [-2.0, 0.1], [0.5, 0.2], [0.0, -0.3]]])  # P = 2: rows a0, a1, b0, b1; 2 neurons
    w_out = torch.tensor([[[0.5, -3.0], [1.0, 1.0]]])
    # neuron 0: ||u||inf 2, ||v||inf 0.5, ||w||inf 3; neuron 1: 0.5, 0.3, 1
    assert torch.allclose(strength_scores(w_in, w_out, "relu"), torch.tensor([[3 * 2.5, 1 * 0.8]]))
    assert torch.allclose(strength_scores(w_in, w_out, "quadratic"), torch.tensor([[3 * 2.5**2, 1 * 0.8**2]]))


def test_ipr_of_a_cosine_a_constant_and_noise():
    n = 31
    cosine = torch.cos(2 * math.pi * 3 * torch.arange(n) / n + 0.4).double()
    w_out = torch.stack([cosine, torch.ones(n, dtype=torch.float64), torch.randn(n, generator=torch.Generator().manual_seed(0),
                                                                                  dtype=torch.float64)]).unsqueeze(0)
    ipr = ipr_scores(w_out, np.arange(n))[0]
    assert float(ipr[0]) == pytest.approx(0.5) and float(ipr[1]) == pytest.approx(1.0)
    assert float(ipr[2]) < 0.15  # about 2/L for a Gaussian vector


@pytest.mark.parametrize("activation", ["relu", "quadratic"])
@pytest.mark.parametrize("op", ["add", "sub", "mul"])
def test_scores_rank_planted_rule_neurons_first(op, activation):
    """Memorizing neurons weaker than the rule's: both scores put all rule neurons on top, and the k
    chosen on noisy held-out labels gives a subnetwork as accurate as the rule's neurons alone."""
    p = 23
    w_in, w_out, truth = _rule_and_memory(op, p, memory_scale=0.2)
    hidden, noisy, y = _held_out(op, p, w_in, w_out, activation)
    rule_acc = float((torch.bmm(hidden, subnetwork_output(w_out, truth)).argmax(-1) == y).double().mean())
    for scores in (strength_scores(w_in, w_out, activation), ipr_scores(w_out, group_order(op, p))):
        assert torch.equal(top_k(scores, 200), truth)
        group, k = choose_k(scores, hidden, w_out, noisy)
        assert int(k) <= 200 and (group <= truth).all()  # never a memorizing neuron
        assert float((torch.bmm(hidden, subnetwork_output(w_out, group)).argmax(-1) == y).double().mean()) >= rule_acc - 0.01


@pytest.mark.parametrize("op", ["add", "sub", "mul"])
def test_ipr_finds_rule_neurons_strength_does_not_when_memory_is_strong(op):
    """Memorizing neurons as strong as the rule's: IPR (task-aware) still finds the rule and its chosen
    subnetwork beats the network; Strength (weight magnitudes only) ranks the memorizing neurons on top
    and its chosen subnetwork gains nothing: the comparison can fail."""
    p = 23
    w_in, w_out, truth = _rule_and_memory(op, p, memory_scale=1.0)
    hidden, noisy, y = _held_out(op, p, w_in, w_out, "quadratic")
    full = float((torch.bmm(hidden, w_out).argmax(-1) == y).double().mean())
    group, _ = choose_k(ipr_scores(w_out, group_order(op, p)), hidden, w_out, noisy)
    assert (group <= truth).all()
    assert float((torch.bmm(hidden, subnetwork_output(w_out, group)).argmax(-1) == y).double().mean()) > full + 0.3
    strength = strength_scores(w_in, w_out, "quadratic")
    assert not (top_k(strength, 200) & truth).any()
    group, _ = choose_k(strength, hidden, w_out, noisy)
    assert float((torch.bmm(hidden, subnetwork_output(w_out, group)).argmax(-1) == y).double().mean()) <= full + 0.01


def test_top_k_and_ties_of_choose_k():
    scores = torch.tensor([[0.1, 0.9, 0.5, 0.3], [4.0, 3.0, 2.0, 1.0]])
    assert top_k(scores, torch.tensor([2, 1])).tolist() == [[False, True, True, False], [True, False, False, False]]
    hidden = torch.zeros(2, 5, 4)  # every subnetwork predicts class 0: all k tie, the smallest wins
    _, k = choose_k(scores, hidden, torch.randn(2, 4, 3), torch.zeros(2, 5, dtype=torch.long), fractions=(0.5, 1.0))
    assert k.tolist() == [2, 2]
