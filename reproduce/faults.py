"""Deliberate kills for the fault tests: `REPRODUCE_KILL_AT=POINT:N` SIGKILLs this process at the N-th
time it reaches POINT (1-based), so a test can hit the inside of a write on purpose instead of by luck.

Points: `state` (a training state written to its temporary file, not yet renamed) and `result` (a
results file written to its temporary file, not yet renamed). Unset, `reached` costs one dict lookup.
"""

from __future__ import annotations

import os
import signal
from collections import Counter

_seen: Counter[str] = Counter()


def reached(point: str) -> None:
    """Kill this process with SIGKILL if REPRODUCE_KILL_AT names this point and its count."""
    spec = os.environ.get("REPRODUCE_KILL_AT")
    if not spec:
        return
    name, _, count = spec.partition(":")
    if name != point:
        return
    _seen[point] += 1
    if _seen[point] == int(count or 1):
        os.kill(os.getpid(), signal.SIGKILL)
