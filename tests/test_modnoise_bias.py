"""The paper's output bias μ (f = W φ(U e_a + V e_b) + μ): the model and every partition's subnetwork keep
the trained μ; the Fourier extraction (each neuron's dominant components, the residual discarded) has
none; quick stays bias-free."""

import dataclasses

import pytest
import torch
import torch.nn.functional as F
from test_fourier import _held_out, _rule_and_memory, planted

from reproduce.engine import TrainSpec, log_schedule
from reproduce.experiments import modnoise
from reproduce.experiments.shrink import SHRINK_ENV
from reproduce.measures.fourier import extract_global, extract_per_neuron, group_order
from reproduce.measures.partition import ablation_scores, choose_k, partition, subnetwork_output
from reproduce.models import StackedTwoLayer, two_layer_logits
from reproduce.step import make_optimizer
from reproduce.store import run_config

SPEC = TrainSpec(optimizer="adamw", lr=3e-3, batch_size=0, epochs=3, weight_decay=1.0, checkpoints=log_schedule(3))


@pytest.mark.parametrize("activation", ["quadratic", "relu"])
def test_bias_leaves_the_weights_and_adds_mu_to_the_logits(activation):
    """The weights of a model with μ are those without, to the bit (μ is drawn after them); μ is drawn as
    nn.Linear's bias (±1/sqrt(M)) per replica seed; the logits are those without plus μ, exactly."""
    p, m, seeds = 7, 16, [3, 4, 5]
    plain = StackedTwoLayer(p, m, p, seeds=seeds, activation=activation)
    biased = StackedTwoLayer(p, m, p, seeds=seeds, activation=activation, output_bias=True)
    assert torch.equal(plain.w_in, biased.w_in) and torch.equal(plain.w_out, biased.w_out)
    assert plain.bias is None and "bias" not in plain.state_dict() and len(list(plain.parameters())) == 2
    mu = biased.bias
    assert mu.shape == (3, 1, p) and mu.abs().max() <= m**-0.5 and mu.abs().max() > 0
    assert not torch.equal(mu[0], mu[1])  # per replica seed
    again = StackedTwoLayer(p, m, p, seeds=[4], activation=activation, output_bias=True)
    assert torch.equal(again.bias[0], mu[1])  # a replica's μ depends on its seed only
    x = modnoise.one_hot_pairs(modnoise.table("add", p)[0], p)
    with torch.no_grad():
        assert torch.equal(biased(x), plain(x) + mu)
        known = torch.randn(3, p)  # two_layer_logits takes μ as (R, K) too
        assert torch.equal(two_layer_logits(plain.w_in, plain.w_out, x, activation, bias=known),
                           plain(x) + known.unsqueeze(1))


def test_weight_decay_applies_to_mu():
    """AdamW decays every parameter, μ included (torch's default; the paper names no exception)."""
    model = StackedTwoLayer(5, 4, 5, seeds=[0], output_bias=True)
    opt = make_optimizer(model, dataclasses.replace(SPEC, weight_decay=0.1))
    params = [q for g in opt.param_groups for q in g["params"] if g["weight_decay"] == 0.1]
    assert any(q is model.bias for q in params) and len(params) == 3


def _mu(p: int, scale: float, seed: int = 5) -> torch.Tensor:
    return scale * torch.randn(1, 1, p, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def _by_hand(w_in, w_out, mu, op: str, p: int) -> float:
    """Accuracy over every pair of (w_in (R, 2P, M), w_out, μ), quadratic, computed without two_layer_logits."""
    pairs, y = modnoise.table(op, p)
    hidden = (modnoise.one_hot_pairs(pairs, p).double() @ w_in[0]) ** 2
    return float(((hidden @ w_out[0] + mu[0, 0]).argmax(-1) == y).double().mean())


@pytest.mark.parametrize("op", ["add", "mul"])
def test_planted_fourier_network_with_mu_extracts_consistently(op):
    """A planted Fourier network under memorization noise, with a non-zero μ: the extraction keeps μ
    (the accuracy the experiment computes equals the hand-computed one of the extracted weights plus μ);
    a moderate μ leaves the extraction perfect; a μ that dominates the logits makes the extracted
    network predict μ's class (μ is used, not dropped)."""
    p = 23
    w_in, w_out = planted(op, p, 300, noise=0.3)
    pairs, y = modnoise.table(op, p)
    x = modnoise.one_hot_pairs(pairs, p).double()
    order = group_order(op, p)
    for extracted in (extract_per_neuron(w_in, w_out, order), extract_global(w_in, w_out, order, 13)):
        for scale in (0.5, 1e6):
            mu = _mu(p, scale)
            acc = float(modnoise._accuracy(*extracted, x, y, "quadratic", bias=mu))
            assert acc == _by_hand(*extracted, mu, op, p)
        assert float(modnoise._accuracy(*extracted, x, y, "quadratic", bias=_mu(p, 0.5))) == 1.0
    dominant = int(_mu(p, 1e6)[0, 0].argmax())
    assert float(modnoise._accuracy(*extract_per_neuron(w_in, w_out, order), x, y, "quadratic", bias=_mu(p, 1e6))) \
        == pytest.approx(float((y == dominant).double().mean()))


def test_ablation_scores_with_mu_equal_brute_force_removal_keeping_mu():
    """Removing a neuron keeps μ: each score is the loss of (h, w_out without row m, μ) minus that of the network."""
    g = torch.Generator().manual_seed(0)
    hidden, w_out = torch.rand(2, 30, 7, generator=g), torch.randn(2, 7, 5, generator=g)
    labels, mu = torch.randint(5, (2, 30), generator=g), 2 * torch.randn(2, 1, 5, generator=g)
    scores = ablation_scores(hidden, w_out, labels, chunk=3, bias=mu)
    assert not torch.allclose(scores, ablation_scores(hidden, w_out, labels, chunk=3))  # μ matters here
    for r in range(2):
        base = F.cross_entropy(hidden[r] @ w_out[r] + mu[r], labels[r]).item()
        for m in range(7):
            cut = w_out[r].clone()
            cut[m] = 0
            brute = F.cross_entropy(hidden[r] @ cut + mu[r], labels[r]).item() - base
            assert float(scores[r, m]) == pytest.approx(brute, abs=1e-5)


def test_partitions_with_mu_find_the_planted_rule_and_keep_mu():
    """Planted rule neurons beside weaker memorizing ones, with a moderate μ: the ablation fixed point and
    the IPR top k (k chosen with μ) keep rule neurons only, and their subnetworks with μ are as accurate as
    the rule's neurons with μ; the k chosen is the one whose subnetwork with μ predicts best."""
    from reproduce.measures.partition import ipr_scores

    p = 23
    w_in, w_out, truth = _rule_and_memory("add", p, memory_scale=0.2)
    hidden, noisy, y = _held_out("add", p, w_in, w_out, "quadratic")
    mu = _mu(p, 0.5 * float(torch.bmm(hidden, w_out).std()))

    def acc(group):
        return float(((torch.bmm(hidden, subnetwork_output(w_out, group)) + mu).argmax(-1) == y).double().mean())

    rule = acc(truth)
    group, k = choose_k(ipr_scores(w_out, group_order("add", p)), hidden, w_out, noisy, bias=mu)
    assert (group <= truth).all() and acc(group) >= rule - 0.01
    fixed = partition(hidden, 0.02 * w_out, y.unsqueeze(0), bias=0.02 * mu)  # scored on true labels, loss not saturated
    assert fixed[0, :200].float().mean() > 0.9 and acc(fixed) >= rule - 0.05


def _planted_mu_model(run: modnoise.Run) -> StackedTwoLayer:
    """The run's model with μ set to a huge value on class 1: every network that keeps μ predicts 1."""
    model = modnoise._model(run)
    with torch.no_grad():
        model.bias.zero_()
        model.bias[:, :, 1] = 1e6
    return model


def test_every_subnetwork_keeps_mu_and_the_extraction_discards_it():
    """Through the experiment's own code: with a planted μ that dominates, the model and every partition's
    subnetwork (held-out ablation, Strength, IPR) score exactly the test set's share of class 1: each keeps
    the model's μ. The Fourier extractions (per neuron, global top k) score as those of the same weights
    with μ zero: μ is part of the residual the frequency filtration discards."""
    run = modnoise.Run("add", 9, (("flip", 0.8), ("flip", 0.2)), SPEC, seed=2, p=7, activation="relu", output_bias=True)
    data = modnoise.prepare(run, torch.device("cpu"))
    model = _planted_mu_model(run)
    n_set = data.labels.shape[1]
    share = float((data.targets[n_set:] == 1).double().mean())
    with torch.no_grad():
        pieces = modnoise.make_probe(run, data)(model)
        parts = modnoise._partitions(run, model, data, group_order(run.op, run.p))
    assert (pieces["test_accuracy"].sel(network="model").values == share).all()
    with torch.no_grad():
        model.bias.zero_()
        without = modnoise.make_probe(run, data)(model)
    for name in ("test_accuracy", "global_accuracy"):
        extracted = pieces[name].sel(network="fourier") if name == "test_accuracy" else pieces[name]
        expected = without[name].sel(network="fourier") if name == "test_accuracy" else without[name]
        assert (extracted.values == expected.values).all(), name
    with torch.no_grad():
        model.bias[:, :, 1] = 1e6
    assert set(parts.accuracy) == {"partition", "strength", "ipr"}
    assert all((a == share).all() for a in parts.accuracy.values())
    assert modnoise.calibrate_after(run, torch.device("cpu")) > 0  # the dry run's partitions, with μ


def test_quick_is_bias_free_and_the_papers_setting_has_mu(monkeypatch):
    """quick builds Gromov's bias-free network and its stored configs are as before (no output_bias key:
    its config hashes, so its stored results, are unchanged); small, medium and full train the paper's μ."""
    monkeypatch.delenv(SHRINK_ENV, raising=False)
    for run in modnoise.runs("quick"):
        assert not run.output_bias and modnoise._model(run).bias is None
        assert "output_bias" not in run_config(run)
        assert run_config(run) == {k: v for k, v in dataclasses.asdict(run).items() if k != "output_bias"}
    for tier in ("small", "medium", "full"):
        runs = modnoise.runs(tier)
        assert runs and all(r.output_bias and run_config(r)["output_bias"] is True for r in runs), tier
    small = modnoise.runs("small")
    assert modnoise._model(small[-1]).bias.shape == (len(small[-1].replicas), 1, modnoise.PAPER_P)
    monkeypatch.setenv(SHRINK_ENV, "1")
    assert all(r.output_bias for tier in ("small", "medium") for r in modnoise.runs(tier))


def test_biased_run_trains_mu_and_stores_it_in_attrs():
    """A short biased run end to end: μ is a trained parameter (its fingerprint differs from the bias-free
    model's, so a saved bias-free state never resumes into it) and the dataset says the run had μ."""
    from reproduce.engine import fingerprint

    run = modnoise.Run("add", 9, (("flip", 0.8),), SPEC, seed=2, p=7, output_bias=True)
    ds = modnoise.execute(run, torch.device("cpu"))
    assert ds.attrs["output_bias"] == 1
    plain = dataclasses.replace(run, output_bias=False)
    assert modnoise.execute(plain, torch.device("cpu")).attrs["output_bias"] == 0
    x, labels = torch.zeros(3, 14), torch.zeros(1, 3, dtype=torch.long)
    assert fingerprint(modnoise._model(run), x, labels, SPEC, [0]) != fingerprint(modnoise._model(plain), x, labels, SPEC, [0])
