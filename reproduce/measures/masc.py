"""The Minimum Angle Subspace Classifier (MASC) of "Decoding Generalization from Memorization in Deep Neural Networks".

Algorithms 1-3 of the paper: for one layer, the training outputs of each class, together with
their negatives, give a PCA basis keeping 99% of the variance (Alg. 3); a sample is assigned the
class whose subspace makes the smallest angle with it, i.e. the angle between x and its
projection P_c x (Alg. 1).

Two facts make this cheap and exact:
- PCA of [X_c; -X_c] has mean zero, so its covariance is the *uncentered* Gram X_c^T X_c / n_c:
  the basis is the top eigenvectors of X_c^T X_c, no centering, no SVD of a 2n x d matrix.
  When a class has fewer samples than dimensions, the n_c x n_c Gram X_c X_c^T has the same
  non-zero eigenvalues and gives the basis as X_c^T u / sqrt(lambda): whichever side is smaller
  is decomposed, in float64.
- The smallest angle is the largest cosine ||P_c x|| / ||x||, so prediction is one batched
  product of the samples with every class's basis.

Rules for degenerate input (each tested in tests/test_masc.py):
- a zero sample (e.g. a layer whose ReLUs are all off) makes no angle with anything: its
  cosines are NaN and its prediction is -1 ("no prediction"), which counts as a miss;
- an empty class has a 0-dimensional subspace and is never predicted;
- a one-sample class has the line through its sample (PCA of {x, -x}); a class whose outputs are
  all zero is treated as empty;
- a rank-deficient class keeps at most its numerical rank: eigenvalues below
  `rank_tol` x the largest are dropped before the 99% rule, so no basis vector is noise;
- ties between classes (e.g. x orthogonal to every subspace) go to the lowest class index.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from reproduce.errors import UserError

NO_PREDICTION = -1


@dataclass
class Subspaces:
    """One layer's class subspaces: orthonormal bases padded with zero columns to a common width."""

    bases: torch.Tensor  # float64 (K, d, r_max): columns beyond ranks[c] are zero
    ranks: torch.Tensor  # int64 (K,): number of principal components kept per class (0 = empty class)
    counts: torch.Tensor  # int64 (K,): training samples per class
    variance: float  # the fraction of variance kept (the paper: 0.99)

    @property
    def num_classes(self) -> int:
        return self.bases.shape[0]


def _check(outputs: torch.Tensor, labels: torch.Tensor, num_classes: int) -> None:
    if outputs.dim() != 2:
        raise UserError(f"MASC takes outputs of shape (samples, features), got {tuple(outputs.shape)}")
    if labels.shape != outputs.shape[:1]:
        raise UserError(f"{labels.shape[0] if labels.dim() else 0} labels for {outputs.shape[0]} samples")
    if num_classes < 1:
        raise UserError(f"num_classes must be at least 1, got {num_classes}")
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
        raise UserError(f"labels must lie in [0, {num_classes}), got {int(labels.min())}..{int(labels.max())}")
    if not torch.isfinite(outputs).all():
        raise UserError("MASC got NaN or infinite outputs (a diverged network?)")


def class_basis(x: torch.Tensor, variance: float = 0.99, rank_tol: float = 1e-10) -> torch.Tensor:
    """PCA basis of [x; -x] keeping `variance` of the variance (Alg. 3, line 7), float64 (d, r).

    Decomposes the smaller of the two Grams, x^T x (d x d) or x x^T (n x n).
    """
    x = x.to(torch.float64)
    n, d = x.shape
    if n == 0:
        return x.new_zeros(d, 0)
    gram = x.T @ x if d <= n else x @ x.T
    eigenvalues, vectors = torch.linalg.eigh(gram)  # ascending
    eigenvalues, vectors = eigenvalues.flip(0), vectors.flip(1)
    top = eigenvalues[0] if eigenvalues.numel() else x.new_zeros(())
    if top <= 0:
        return x.new_zeros(d, 0)
    keep = eigenvalues > rank_tol * top  # the numerical rank
    eigenvalues, vectors = eigenvalues[keep], vectors[:, keep]
    explained = torch.cumsum(eigenvalues, 0) / eigenvalues.sum()
    # the smallest r whose components explain at least `variance` (a hair of slack for rounding)
    rank = int(torch.searchsorted(explained, torch.tensor(variance - 1e-12, dtype=torch.float64, device=x.device))) + 1
    rank = min(rank, eigenvalues.numel())
    eigenvalues, vectors = eigenvalues[:rank], vectors[:, :rank]
    if d <= n:
        return vectors
    return (x.T @ vectors) / eigenvalues.sqrt()  # right singular vectors from left ones


def fit_subspaces(outputs: torch.Tensor, labels: torch.Tensor, num_classes: int, variance: float = 0.99,
                  rank_tol: float = 1e-10) -> Subspaces:
    """One subspace per class from a layer's training outputs (n, d) and labels (n,) (Alg. 2-3).

    Works on the device of `outputs`; each class's Gram and eigendecomposition are float64.
    """
    _check(outputs, labels, num_classes)
    if not 0.0 < variance <= 1.0:
        raise UserError(f"the variance kept must lie in (0, 1], got {variance}")
    labels = labels.to(outputs.device)
    bases = [class_basis(outputs[labels == c], variance, rank_tol) for c in range(num_classes)]
    ranks = torch.tensor([b.shape[1] for b in bases], dtype=torch.int64)
    width = max(1, int(ranks.max()))
    d = outputs.shape[1]
    padded = torch.zeros(num_classes, d, width, dtype=torch.float64, device=outputs.device)
    for c, b in enumerate(bases):
        padded[c, :, : b.shape[1]] = b
    counts = torch.bincount(labels.long().cpu(), minlength=num_classes)[:num_classes]
    return Subspaces(padded, ranks, counts, float(variance))


def cosines(subspaces: Subspaces, x: torch.Tensor, batch: int = 4096) -> torch.Tensor:
    """cos of the angle between each sample and its projection on each class subspace, (n, K) float64.

    ||P_c x|| / ||x||, with P_c = B_c B_c^T for the orthonormal basis B_c. NaN for zero samples;
    0 for empty classes. Computed in batches of `batch` samples.
    """
    k, d, r = subspaces.bases.shape
    if x.dim() != 2 or x.shape[1] != d:
        raise UserError(f"samples of shape {tuple(x.shape)} do not match subspaces of dimension {d}")
    flat = subspaces.bases.reshape(k, d, r).permute(1, 0, 2).reshape(d, k * r)
    out = []
    for start in range(0, x.shape[0], batch):
        xb = x[start : start + batch].to(device=flat.device, dtype=torch.float64)
        projected = (xb @ flat).view(-1, k, r).pow(2).sum(-1).sqrt()
        norm = xb.norm(dim=1, keepdim=True)
        out.append(torch.where(norm > 0, projected / norm.clamp_min(torch.finfo(torch.float64).tiny), float("nan")))
    return torch.cat(out) if out else x.new_zeros(0, k, dtype=torch.float64)


def predict(subspaces: Subspaces, x: torch.Tensor, batch: int = 4096) -> torch.Tensor:
    """MASC's class for each sample (Alg. 1): the largest cosine, i.e. the smallest angle.

    int64 (n,); NO_PREDICTION (-1) for zero samples. Empty classes are never predicted.
    """
    cos = cosines(subspaces, x, batch)
    if bool((subspaces.ranks == 0).all()):
        return torch.full((cos.shape[0],), NO_PREDICTION, dtype=torch.int64, device=cos.device)
    empty = (subspaces.ranks == 0).to(cos.device)
    cos = cos.masked_fill(empty, float("-inf"))
    predicted = cos.nan_to_num(nan=float("-inf")).argmax(1)
    return torch.where(torch.isnan(cos).any(1), torch.full_like(predicted, NO_PREDICTION), predicted)


def accuracy(predicted: torch.Tensor, labels: torch.Tensor) -> float:
    """Fraction of samples predicted as their label; a NO_PREDICTION is a miss. NaN for no samples."""
    if predicted.numel() == 0:
        return float("nan")
    return float((predicted == labels.to(predicted.device)).double().mean())
