"""REPRODUCE_SHRINK=1: every paper's small and medium runs shrunk to CPU size, with the same names and the
same code path, so that a CPU test (tests/test_<paper>_experiment.py) drives the medium claim
cases end to end without a GPU. A shrunk run's config differs from the real one, so the store
never mistakes one for the other."""

from __future__ import annotations

import os

SHRINK_ENV = "REPRODUCE_SHRINK"


def shrinking() -> bool:
    """True when the small and medium runs are to be shrunk to CPU size."""
    return os.environ.get(SHRINK_ENV) == "1"
