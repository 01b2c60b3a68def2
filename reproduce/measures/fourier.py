"""Fourier (frequency) extraction of a two-layer modular-arithmetic network
("Unveiling Memorization-Generalization Coexistence: A Case Study on Arithmetic Tasks with Label Noise"; Gromov 2023, Doshi et al. 2024).

A network that has learned (a + b) mod P computes with neurons whose input weights for a and for
b, and whose output weights, are each a single cosine of one frequency k over the residues. Under
label noise the same neurons also carry a memorizing component spread over all frequencies. The
extraction keeps, in every weight vector, only the structure that generalization needs:

- `neuron_spectrum`: the power of each neuron's input weights (a and b) per frequency; the
  neuron's dominant frequency and its concentration (power at that frequency / all non-constant
  power);
- `extract_per_neuron`: each neuron keeps only its own dominant frequency (in both its input and
  its output weights); the constant (k = 0) component is dropped everywhere;
- `extract_global`: every neuron keeps the k frequencies strongest over the whole layer.

The Fourier basis is that of the cyclic group the task lives on. For addition and subtraction it
is Z_P itself (residues 0..P-1 in order). For multiplication it is the multiplicative group
Z_P^* = {1..P-1}, which is cyclic of order P-1 because P is prime: with a primitive root g,
a = g^i, and a * b = g^(i + j), so in the discrete-log order (residues g^0, g^1, ..., g^(P-2))
multiplication is addition mod P-1 and the same Fourier analysis applies with period P-1.
The residue 0 is outside the group: its input rows and output column are zeroed by extraction.

Weights are stacked: w_in (R, 2P, M) (rows 0..P-1 for a, P..2P-1 for b), w_out (R, M, K).

The paper's model has an output bias μ (f = W φ(U e_a + V e_b) + μ). Its frequency filtration keeps
each neuron's dominant Fourier component of (u_m, v_m, w_m) and discards the residual: the extracted
network is built from the neurons' dominant components alone, and μ, no neuron's component, is part
of the discarded residual (experiments/modnoise.py evaluates the extraction without it; a partition's
subnetwork, which only removes neurons, keeps it).
"""

from __future__ import annotations

import numpy as np
import torch

from reproduce.errors import UserError

OPERATIONS = ("add", "sub", "mul")


def _is_prime(p: int) -> bool:
    return p >= 2 and all(p % d for d in range(2, int(p**0.5) + 1))


def primitive_root(p: int) -> int:
    """The smallest generator of the multiplicative group mod the prime `p`."""
    if not _is_prime(p):
        raise UserError(f"P = {p} is not prime: the multiplicative group mod P is cyclic only for a prime")
    if p == 2:
        return 1
    n = p - 1
    factors = {d for d in range(2, n + 1) if n % d == 0 and _is_prime(d)}
    for g in range(2, p):
        if all(pow(g, n // q, p) != 1 for q in factors):
            return g
    raise AssertionError("unreachable: every prime has a primitive root")


def discrete_log_order(p: int) -> np.ndarray:
    """Residues g^0, g^1, ..., g^(P-2) mod P: position i holds the residue whose discrete log is i."""
    g = primitive_root(p)
    return np.array([pow(g, i, p) for i in range(p - 1)], dtype=np.int64)


def discrete_log(p: int) -> np.ndarray:
    """log[a] for a in 0..P-1 (log[0] = -1: zero has no logarithm)."""
    log = np.full(p, -1, dtype=np.int64)
    log[discrete_log_order(p)] = np.arange(p - 1)
    return log


def group_order(op: str, p: int) -> np.ndarray:
    """The residues along the cyclic group of the task, in the order its Fourier basis is taken."""
    if op in ("add", "sub"):
        return np.arange(p, dtype=np.int64)
    if op == "mul":
        return discrete_log_order(p)
    raise UserError(f"unknown operation {op!r}: choose from {', '.join(OPERATIONS)}")


def _signals(w_in: torch.Tensor, w_out: torch.Tensor, order: np.ndarray) -> tuple[torch.Tensor, ...]:
    """Each neuron's weights along the group: u_a, u_b (R, M, L) and v (R, M, L)."""
    p = w_in.shape[1] // 2
    idx = torch.as_tensor(order, device=w_in.device)
    u_a = w_in[:, idx, :].transpose(1, 2)
    u_b = w_in[:, idx + p, :].transpose(1, 2)
    v = w_out[:, :, idx]
    return u_a, u_b, v


def neuron_spectrum(w_in: torch.Tensor, w_out: torch.Tensor, order: np.ndarray) -> dict[str, torch.Tensor]:
    """Per neuron: the power of its input weights per frequency k = 1..L//2 (a and b summed),
    the dominant frequency, and the concentration on it (1 for a pure cosine, about 2/L for noise).

    Returns power (R, M, L//2), dominant (R, M) in 1..L//2, concentration (R, M).
    """
    u_a, u_b, _ = _signals(w_in, w_out, order)
    power = (torch.fft.rfft(u_a.double(), dim=-1).abs() ** 2 + torch.fft.rfft(u_b.double(), dim=-1).abs() ** 2)[..., 1:]
    total = power.sum(-1)
    top = power.max(-1)
    concentration = torch.where(total > 0, top.values / total, torch.zeros_like(total))
    return {"power": power, "dominant": top.indices + 1, "concentration": concentration}


def _project(u: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """Keep only the rfft bins where `keep` (…, L//2+1) is true, back in the residue domain."""
    n = u.shape[-1]
    return torch.fft.irfft(torch.fft.rfft(u.double(), dim=-1) * keep, n=n, dim=-1).to(u.dtype)


def _assemble(w_in: torch.Tensor, w_out: torch.Tensor, order: np.ndarray, keep: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """New weights whose group signals keep only the `keep` bins; rows and columns off the group are 0."""
    p = w_in.shape[1] // 2
    u_a, u_b, v = _signals(w_in, w_out, order)
    idx = torch.as_tensor(order, device=w_in.device)
    new_in = torch.zeros_like(w_in)
    new_out = torch.zeros_like(w_out)
    new_in[:, idx, :] = _project(u_a, keep).transpose(1, 2)
    new_in[:, idx + p, :] = _project(u_b, keep).transpose(1, 2)
    new_out[:, :, idx] = _project(v, keep)
    return new_in, new_out


def extract_per_neuron(w_in: torch.Tensor, w_out: torch.Tensor, order: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """The extracted network: every neuron keeps only its dominant frequency, in its input weights
    for a and b and in its output weights (the per-neuron variant of the paper's frequency-based
    retrieval)."""
    dominant = neuron_spectrum(w_in, w_out, order)["dominant"]
    bins = order.shape[0] // 2 + 1
    keep = torch.zeros(*dominant.shape, bins, dtype=torch.float64, device=w_in.device)
    keep.scatter_(-1, dominant.unsqueeze(-1), 1.0)
    return _assemble(w_in, w_out, order, keep)


def global_frequencies(w_in: torch.Tensor, w_out: torch.Tensor, order: np.ndarray, k: int) -> torch.Tensor:
    """The k frequencies (R, k) with the largest input-weight power summed over all neurons."""
    power = neuron_spectrum(w_in, w_out, order)["power"].sum(1)
    return power.topk(min(k, power.shape[-1]), dim=-1).indices + 1


def extract_global(w_in: torch.Tensor, w_out: torch.Tensor, order: np.ndarray, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The global variant: every neuron keeps the k layer-wide strongest frequencies."""
    freqs = global_frequencies(w_in, w_out, order, k)
    bins = order.shape[0] // 2 + 1
    keep = torch.zeros(freqs.shape[0], bins, dtype=torch.float64, device=w_in.device)
    keep.scatter_(-1, freqs, 1.0)
    return _assemble(w_in, w_out, order, keep.unsqueeze(1))
