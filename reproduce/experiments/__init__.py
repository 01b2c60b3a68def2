"""One module per paper. Each provides:

- `PAPER`: its key;
- `runs(tier, seed) -> list[Run]`: the tier's runs (a frozen dataclass with `.name`), big_vision style:
  one config function, the tier shrinks it;
- `execute(run, device, state_path, progress) -> xr.Dataset`: train and probe one run;
- `steps_and_flops(run) -> (steps, flops)` and `calibrate(run, device) -> seconds per step`, for --dry-run.
"""

from __future__ import annotations

from types import ModuleType

from reproduce.errors import UserError
from reproduce.experiments import ddmlp, masc, modnoise, smooth

EXPERIMENTS: dict[str, ModuleType] = {m.PAPER: m for m in (ddmlp, smooth, masc, modnoise)}
PAPERS = tuple(EXPERIMENTS)
TIERS = ("quick", "medium", "full")


def experiment(paper: str) -> ModuleType:
    if paper not in EXPERIMENTS:
        raise UserError(f"unknown paper {paper!r}: choose from {', '.join(PAPERS)}")
    return EXPERIMENTS[paper]


def check_tier(tier: str) -> str:
    if tier not in TIERS:
        raise UserError(f"unknown tier {tier!r}: choose from {', '.join(TIERS)}")
    return tier
