"""Reproducibility benchmark for four papers on how deep networks learn noisy labels."""

import os

# OpenMP threads that wait for work spin on their core by default; on a shared machine a second
# busy process then costs a core's worth of spinning (the quick ddmlp mlp3 run took 3x as long
# beside a busy loop). PASSIVE makes them sleep instead. The runtime reads it once, when torch is
# first imported, so it is set here, before any module of the package imports torch; a value the
# user exported wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__version__ = "0.1.0"


def open_results(results, tier: str, paper: str | None = None):
    """The stored results of a tier as an xarray.DataTree: one node per paper, under it one per run,
    each the run's Dataset as stored, with `replica` labelled by its settings (init_seed, noise rate,
    ...), never by position. `paper` None: every paper with results.

        tree = reproduce.open_results("results", "quick", "modnoise")
        tree["modnoise/add-m33-s0"].to_dataset().accuracy.sel(split="test")
    """
    from pathlib import Path

    from reproduce.experiments import PAPERS, check_paper, check_tier
    from reproduce.store import Store

    check_tier(tier)
    papers = [check_paper(paper)] if paper else [p for p in PAPERS if (Path(results) / tier / p).is_dir()]
    return Store(Path(results)).tree(tier, papers)
