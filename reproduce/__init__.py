"""Reproducibility benchmark for four papers on how deep networks learn noisy labels."""

import os

# OpenMP threads that wait for work spin on their core by default; on a shared machine a second
# busy process then costs a core's worth of spinning (the quick ddmlp mlp3 run took 3x as long
# beside a busy loop). PASSIVE makes them sleep instead. The runtime reads it once, when torch is
# first imported, so it is set here, before any module of the package imports torch; a value the
# user exported wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__version__ = "0.1.0"



def __getattr__(name: str):
    """`reproduce.open_results` (reproduce/store.py), imported on first use: importing the package
    must not import torch before OMP_WAIT_POLICY is set above (tests/test_imports.py)."""
    if name == "open_results":
        return __import__("reproduce.store", fromlist=["open_results"]).open_results
    raise AttributeError(f"module 'reproduce' has no attribute {name!r}")
