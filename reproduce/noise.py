"""Label-noise protocols shared by the four papers' claims (data/claims/*.json name them per claim).

Each protocol draws from its own seeded generator, independent of initialization and data order,
and returns the labels to train on together with the original labels and the mask of the samples
it touched (the "noisy subset"), so that every run can store both.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from reproduce.errors import UserError

PROTOCOLS = ("none", "flip", "resample", "asymmetric", "tag")


@dataclass
class NoisyLabels:
    labels: torch.Tensor  # int64 (N,): what the model trains on
    original: torch.Tensor  # int64 (N,): the true labels
    noisy: torch.Tensor  # bool (N,): the samples the protocol touched
    protocol: str
    rate: float
    seed: int


def _choose(n: int, rate: float, exact: bool, generator: torch.Generator) -> torch.Tensor:
    """Boolean mask: each sample with probability `rate`, or exactly round(n * rate) of them."""
    if exact:
        mask = torch.zeros(n, dtype=torch.bool)
        mask[torch.randperm(n, generator=generator)[: round(n * rate)]] = True
        return mask
    return torch.rand(n, generator=generator) < rate


def _other_class(labels: torch.Tensor, num_classes: int, generator: torch.Generator) -> torch.Tensor:
    """A label drawn uniformly from the K-1 classes other than `labels` (so always wrong)."""
    offset = torch.randint(1, num_classes, labels.shape, generator=generator)
    return (labels + offset) % num_classes


def corrupt_labels(
    labels: torch.Tensor,
    num_classes: int,
    protocol: str,
    rate: float,
    seed: int,
    *,
    exact: bool = False,
    classes: Sequence[int] | None = None,
) -> NoisyLabels:
    """Apply one noise protocol.

    - `none`: nothing changes (rate must be 0).
    - `flip`: a sample is corrupted with probability `rate` (exactly round(n * rate) with `exact`)
      and gets a label from the other K-1 classes: always wrong.
    - `resample`: with probability `rate` the label is redrawn from all K classes, so it may stay
      right; `noisy` marks the redrawn samples (expected wrong fraction rate * (K-1) / K).
    - `asymmetric`: only samples of `classes` are corrupted, at `rate` within those classes, to
      one of the other K-1 classes.
    - `tag`: labels unchanged; a random `rate` of samples is only *tagged* noisy, the control of
      the double-descent paper.
    """
    if protocol not in PROTOCOLS:
        raise UserError(f"unknown noise protocol {protocol!r}: choose from {', '.join(PROTOCOLS)}")
    if not 0.0 <= rate <= 1.0:
        raise UserError(f"noise rate {rate} is outside [0, 1]")
    original = labels.detach().cpu().long()
    n = original.numel()
    generator = torch.Generator().manual_seed(int(seed))
    if protocol == "none":
        if rate != 0:
            raise UserError("protocol 'none' takes rate 0")
        mask = torch.zeros(n, dtype=torch.bool)
        new = original.clone()
    elif protocol == "tag":
        mask = _choose(n, rate, exact, generator)
        new = original.clone()
    elif protocol == "flip":
        mask = _choose(n, rate, exact, generator)
        new = torch.where(mask, _other_class(original, num_classes, generator), original)
    elif protocol == "resample":
        mask = _choose(n, rate, exact, generator)
        new = torch.where(mask, torch.randint(num_classes, (n,), generator=generator), original)
    else:  # asymmetric
        if not classes:
            raise UserError("the asymmetric protocol needs the classes to corrupt (classes=...)")
        mask = torch.zeros(n, dtype=torch.bool)
        for c in classes:  # a loop over classes, not samples
            members = torch.nonzero(original == c).flatten()
            mask[members[_choose(members.numel(), rate, exact, generator)]] = True
        new = torch.where(mask, _other_class(original, num_classes, generator), original)
    return NoisyLabels(new, original, mask, protocol, float(rate), int(seed))
