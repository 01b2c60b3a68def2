"""One module per paper. Each provides:

- `PAPER`: its key;
- `runs(tier, seed) -> list[Run]`: the tier's runs (a frozen dataclass with `.name`), big_vision style:
  one config function, the tier shrinks it;
- `execute(run, device, state_path, progress) -> xr.Dataset`: train and probe one run;
- `steps_and_flops(run) -> (steps, flops)` and `calibrate(run, device) -> seconds per step`, for --dry-run.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from reproduce.errors import UserError

# The paper keys, each the name of its module here. Modules are imported on first use, so that the
# command line answers bad input (an unknown tier or paper) before torch is imported, in 0.1 s.
PAPERS = ("ddmlp", "smooth", "masc", "modnoise")
TIERS = ("quick", "small", "medium", "full")  # small: one CPU machine, what quick cannot fit


def check_paper(paper: str) -> str:
    if paper not in PAPERS:
        raise UserError(f"unknown paper {paper!r}: choose from {', '.join(PAPERS)}")
    return paper


def experiment(paper: str) -> ModuleType:
    return importlib.import_module(f"reproduce.experiments.{check_paper(paper)}")


def check_tier(tier: str) -> str:
    if tier not in TIERS:
        raise UserError(f"unknown tier {tier!r}: choose from {', '.join(TIERS)}")
    return tier
