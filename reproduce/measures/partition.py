"""Partitions of a layer's neurons into a generalizing and a memorizing group
("Unveiling Memorization-Generalization Coexistence: A Case Study on Arithmetic Tasks with Label
Noise", Algorithm 1: rank the neurons by an importance score, keep the top k).

The paper's two scores (facts from ../shared/papers/modular-arithmetic-label-noise-details.md):

- `strength_scores`, task-agnostic: ||w_m||_inf * phi(||u_m||_inf + ||v_m||_inf), from the neuron's
  output weights w_m and its input weights for a (u_m) and b (v_m): a bound on how much the neuron
  can move any logit;
- `ipr_scores`, task-aware (it uses the task's cyclic group): the inverse participation ratio
  (||w^_m||_4 / ||w^_m||_2)^4 of the DFT of w_m: 1/2 for a single cosine, about 2/L for a random
  vector of length L. The ceiling of a neuron-level score.

`top_k` keeps the k best; `choose_k` picks k on the held-out split (the noisy labels' accuracy of
the subnetwork, which under flip noise rises with its true accuracy), since the paper's k is not
known to us.

The project's own task-agnostic score, `ablation_scores` and its fixed point `partition`, is kept
beside them. It uses no knowledge of the task's structure, only a held-out split of the *noisy* training set
(samples with noisy labels the network never trained on). A neuron that carries a rule shared by
many samples helps predict held-out samples whose label is right, so removing it raises the
held-out loss; a neuron that stores individual training samples does not help on samples it
never saw, so removing it leaves the held-out loss unchanged or lowers it. The score of a neuron
is that change of loss. `partition` removes every neuron with a non-positive score, rescores the
remaining subnetwork and repeats until no neuron leaves: a memorizing neuron can look useful only
because it cancels another memorizing neuron's output, which a single round misses (at 20% noise
one round kept 60% of the neurons and 0.17 test accuracy, the fixed point 29% and 0.46). The
subnetwork keeps only the output weights of the neurons that stay.

Any network whose last layer is linear fits: the inputs are the last hidden layer's activations
and the output weights, and the output bias where the network has one (the paper's μ in
f = W φ(U e_a + V e_b) + μ). μ belongs to no neuron: a partition acts on the neurons only, and every
subnetwork (each group, each neuron's ablation, each top k) keeps the trained μ. The paper's text,
as we hold it, says nothing otherwise.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from reproduce.models import add_output_bias


def _logits(hidden: torch.Tensor, w_out: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """The output layer: hidden (R, N, M) @ w_out (R, M, K), plus the output bias (R, 1, K) or (R, K) if any."""
    return add_output_bias(torch.bmm(hidden, w_out), bias)


def ablation_scores(hidden: torch.Tensor, w_out: torch.Tensor, labels: torch.Tensor, chunk: int = 64,
                    bias: torch.Tensor | None = None) -> torch.Tensor:
    """Change of the mean cross-entropy on the given samples when each neuron alone is removed.

    hidden: (R, N, M) last-layer activations, w_out: (R, M, K), labels: (R, N) (the noisy held-out
    labels), bias: the output bias (kept: it belongs to no neuron). Returns (R, M): loss without neuron
    m minus loss of the whole network. Exact (no Taylor approximation): removing neuron m subtracts
    h_m(x) w_m from every logit vector.
    """
    logits = _logits(hidden, w_out, bias)  # (R, N, K)
    base = F.cross_entropy(logits.transpose(1, 2), labels, reduction="none").mean(1)
    target_logit = logits.gather(2, labels.unsqueeze(-1)).squeeze(-1)  # (R, N)
    target_weight = w_out.gather(2, labels.unsqueeze(1).expand(-1, w_out.shape[1], -1))  # (R, M, N)
    scores = []
    for start in range(0, w_out.shape[1], chunk):
        sl = slice(start, start + chunk)
        h = hidden[:, :, sl].transpose(1, 2)  # (R, c, N)
        without = logits.unsqueeze(1) - h.unsqueeze(-1) * w_out[:, sl].unsqueeze(2)  # (R, c, N, K)
        loss = without.logsumexp(-1) - (target_logit.unsqueeze(1) - h * target_weight[:, sl])
        scores.append(loss.mean(-1) - base.unsqueeze(1))
    return torch.cat(scores, 1)


def generalizing_group(scores: torch.Tensor) -> torch.Tensor:
    """Boolean (R, M): the neurons whose removal raises the held-out loss."""
    return scores > 0


def partition(hidden: torch.Tensor, w_out: torch.Tensor, labels: torch.Tensor, max_rounds: int = 20,
              bias: torch.Tensor | None = None) -> torch.Tensor:
    """Boolean (R, M): the generalizing group at the fixed point of repeated ablation scoring (every
    subnetwork scored with the trained output bias, if any)."""
    group = torch.ones(w_out.shape[:2], dtype=torch.bool, device=w_out.device)
    for _ in range(max_rounds):
        scores = ablation_scores(hidden, subnetwork_output(w_out, group), labels, bias=bias)
        keep = group & generalizing_group(scores)
        if torch.equal(keep, group):
            break
        group = keep
    return group


def subnetwork_output(w_out: torch.Tensor, group: torch.Tensor) -> torch.Tensor:
    """Output weights of the subnetwork that keeps only the neurons in `group` (R, M). The output bias,
    where the network has one, is not a neuron's: the subnetwork keeps it unchanged."""
    return w_out * group.unsqueeze(-1).to(w_out.dtype)


# --- the paper's scores (Algorithm 1) -------------------------------------------------------

PHI = {"relu": torch.relu, "quadratic": torch.square}  # phi of the network, applied to ||u||_inf + ||v||_inf
FRACTIONS = (0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 1.0)  # the k of top-k tried, as fractions of the width


def strength_scores(w_in: torch.Tensor, w_out: torch.Tensor, activation: str) -> torch.Tensor:
    """(R, M): ||w_m||_inf * phi(||u_m||_inf + ||v_m||_inf); w_in (R, 2P, M), rows 0..P-1 read a, P..2P-1 b."""
    p = w_in.shape[1] // 2
    u, v = w_in[:, :p].abs().amax(1), w_in[:, p:].abs().amax(1)
    return w_out.abs().amax(2) * PHI[activation](u + v)


def ipr_scores(w_out: torch.Tensor, order) -> torch.Tensor:
    """(R, M): IPR (||w^||_4 / ||w^||_2)^4 of the DFT of each neuron's output weights along the group
    (`order`: the residues in the group's order, measures/fourier.group_order; all L bins, constant included)."""
    w = w_out[:, :, torch.as_tensor(order, device=w_out.device)].double()
    power = torch.fft.fft(w, dim=-1).abs() ** 2
    total = power.sum(-1)
    return torch.where(total > 0, (power**2).sum(-1) / total.clamp(min=1e-300) ** 2, torch.zeros_like(total))


def top_k(scores: torch.Tensor, k: torch.Tensor | int) -> torch.Tensor:
    """Boolean (R, M): the k highest-scoring neurons of each replica (k an int or (R,))."""
    rank = scores.argsort(1, descending=True).argsort(1)
    k = torch.as_tensor(k, device=scores.device).reshape(-1, 1)
    return rank < k


def choose_k(scores: torch.Tensor, hidden: torch.Tensor, w_out: torch.Tensor, labels: torch.Tensor,
             fractions=FRACTIONS, bias: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The top-k group per replica with k chosen on held-out samples: the k (of `fractions` of the
    width) whose subnetwork (with the trained output bias, if any) predicts the held-out (noisy)
    labels best; ties go to the smaller k.

    hidden (R, N, M) held-out activations, labels (R, N). Returns the group (R, M) and k (R,)."""
    width = scores.shape[1]
    ks = sorted({max(1, round(f * width)) for f in fractions})
    best_acc = torch.full((scores.shape[0],), -1.0, dtype=torch.float64, device=scores.device)
    best_k = torch.full_like(best_acc, ks[0], dtype=torch.long)
    for k in ks:
        group = top_k(scores, k)
        acc = (_logits(hidden, subnetwork_output(w_out, group), bias).argmax(-1) == labels).double().mean(1)
        better = acc > best_acc
        best_acc, best_k = torch.where(better, acc, best_acc), torch.where(better, k, best_k)
    return top_k(scores, best_k), best_k
