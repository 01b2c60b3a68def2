"""The saved training state of a run (one file per run, written atomically at checkpoints), from
which a killed or preempted run resumes.

A state holds tensors and plain Python values only (str, int, float, bool, None, lists, tuples,
dicts), so that it is read with `torch.load(weights_only=True)`, which unpickles no objects: a file
put in a results folder (often a shared file system) can then never run code as the user who
resumes. The probe records (xarray pieces) are written as plain dicts of tensors for it.

A state is never deleted for failing to load: one that cannot be read (cut short, garbage) is
moved aside as `<name>.corrupt-<time>`, one that is not ours (no `format` marker of this package,
another format version, or a pickled object that weights_only refuses) as `<name>.foreign-<time>`,
and one saved by another training (its `made_for` fingerprint differs: another configuration, other
labels or another model, as after an edit of the tier's settings) as `<name>.stale-<time>`, each
with one line on stderr naming both files; the run then starts from the beginning. A state is
a cache of work, so a run that cannot use it can still give the right numbers by training again,
and the file stays for whoever wants to look at it; stopping instead would hold up a whole tier
(or a requeued Slurm task, again and again) on a file nobody can load. Errors of the machine, not
of the file (an I/O error, a CUDA out-of-memory error), are raised: the state stays where it is.
"""

from __future__ import annotations

import os
import re
import sys
import time
import zipfile
from pathlib import Path
from pickle import UnpicklingError

import numpy as np
import torch
import xarray as xr

from reproduce import faults

FORMAT = "reproduce.train-state"
VERSION = 2  # 2: states carry `made_for`
_TORCH_DTYPES = "biufc"  # numpy kinds that torch.from_numpy takes (bool, ints, floats, complex)


class RefusedState(Exception):
    """A state file that is not ours, or cannot be read: `kind` is "foreign", "stale" or "corrupt"."""

    def __init__(self, kind: str, reason: str):
        super().__init__(reason)
        self.kind = kind


def save_state(state: dict, path: Path) -> None:
    """Write `state` (tensors, plain values, and probe records: a list of (epoch, {name: DataArray}))
    atomically: a kill during the write leaves the previous state, never a partial one."""
    plain = {**state, "format": FORMAT, "version": VERSION,
             "records": [(epoch, {k: _from_xarray(v) for k, v in pieces.items()}) for epoch, pieces in state["records"]]}
    tmp = path.with_name(f"{path.name}.tmp{os.getpid()}")
    with open(tmp, "wb") as f:
        torch.save(plain, f)
        f.flush()
        os.fsync(f.fileno())
    faults.reached("state")
    os.replace(tmp, path)


def load_state(path: Path | None, made_for: str | None = None) -> dict | None:
    """The state saved at `path` (tensors on the CPU; the caller moves them), or None where there is
    none or it was refused (then moved aside, and one line says where). `made_for`: the fingerprint
    of the training that wants it; a state saved by another is refused as stale."""
    if path is None or not path.exists():
        return None
    try:
        return read_state(path, made_for)
    except RefusedState as refused:
        aside = _move_aside(path, refused.kind)
        print(f"training state {path} refused: {refused}; moved to {aside.name}, the run starts from the beginning",
              file=sys.stderr, flush=True)
        return None


def read_state(path: Path, made_for: str | None = None) -> dict:
    """Read a state with weights_only=True; RefusedState where it is corrupt, not ours, or (given
    `made_for`) saved by another training. OSError and torch.cuda.OutOfMemoryError (a RuntimeError)
    pass through untouched."""
    if not zipfile.is_zipfile(path):  # torch.save writes a zip archive; anything else is not a state of ours
        raise RefusedState("corrupt", "not a torch zip archive (cut short or garbage)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except UnpicklingError as error:  # weights_only refused a global: the file pickles an object
        found = re.search(r"GLOBAL (\S+)", str(error))
        what = f"it pickles {found.group(1)}" if found else "it pickles objects"
        raise RefusedState("foreign", f"{what}, which is never loaded") from None
    except torch.cuda.OutOfMemoryError:
        raise
    except (RuntimeError, EOFError, ValueError) as error:  # a damaged archive
        raise RefusedState("corrupt", f"unreadable ({str(error).splitlines()[0][:120]})") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise RefusedState("foreign", f"no {FORMAT!r} marker: not a training state of this package")
    if state.get("version") != VERSION:
        raise RefusedState("foreign", f"format version {state.get('version')!r}, this package reads {VERSION}")
    if made_for is not None and state.get("made_for") != made_for:
        raise RefusedState("stale", f"saved by another training (fingerprint {state.get('made_for')}, this one {made_for}:"
                                    " another configuration, other labels or another model)")
    state["records"] = [(epoch, {k: _to_xarray(v) for k, v in pieces.items()}) for epoch, pieces in state["records"]]
    return state


def _move_aside(path: Path, kind: str) -> Path:
    """`<name>.<kind>-<UTC time>` beside `path` (a counter added if that name is taken): kept, never deleted."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    aside, n = path.with_name(f"{path.name}.{kind}-{stamp}"), 1
    while aside.exists():
        aside, n = path.with_name(f"{path.name}.{kind}-{stamp}-{n}"), n + 1
    os.replace(path, aside)
    return aside


def _from_xarray(da: xr.DataArray) -> dict:
    """A DataArray as plain values and tensors (weights_only loads no xarray or numpy objects)."""
    return {"dims": list(da.dims), "data": _plain(da.values), "name": da.name, "attrs": _plain(da.attrs),
            "coords": {str(k): {"dims": list(c.dims), "data": _plain(c.values), "attrs": _plain(c.attrs)}
                       for k, c in da.coords.items()}}


def _to_xarray(d: dict) -> xr.DataArray:
    coords = {k: xr.Variable(c["dims"], _unplain(c["data"]), _unplain(c["attrs"])) for k, c in d["coords"].items()}
    return xr.DataArray(_unplain(d["data"]), dims=d["dims"], coords=coords, name=d["name"], attrs=_unplain(d["attrs"]))


def _plain(value):
    """numpy arrays -> {"__array__": tensor or list, "dtype": ...}; numpy scalars -> Python scalars;
    containers recursively; anything else as it is (weights_only refuses what is not plain)."""
    if isinstance(value, np.ndarray):
        a = np.ascontiguousarray(value)
        if a.dtype.kind in "Mm":  # datetimes as their int64 counts
            a = a.view("i8")
        if a.dtype.kind in _TORCH_DTYPES and a.dtype.isnative:
            try:
                return {"__array__": torch.from_numpy(a.copy() if not a.flags.writeable else a), "dtype": value.dtype.str}
            except TypeError:  # a dtype torch has no tensor for
                pass
        return {"__array__": a.tolist(), "dtype": value.dtype.str, "shape": list(a.shape)}
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_plain(v) for v in value)
    return value


def _unplain(value):
    if isinstance(value, dict) and "__array__" in value:
        data, dtype = value["__array__"], np.dtype(value["dtype"])
        if isinstance(data, torch.Tensor):
            a = data.numpy()
            return a.view(dtype) if dtype.kind in "Mm" else a.astype(dtype, copy=False)
        return np.array(data, dtype=dtype).reshape(value["shape"])
    if isinstance(value, dict):
        return {k: _unplain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_unplain(v) for v in value)
    return value


def probes_done(path: Path | str | None, made_for: str) -> int:
    """Checkpoints a resumed run has probed already (0 for a fresh one), so that a probe that counts
    its calls (light and full checkpoints, smooth) goes on from there. `made_for`: the training's
    fingerprint, so a state the engine will refuse as stale counts 0."""
    if path is None or not Path(path).exists():
        return 0
    try:
        return len(read_state(Path(path), made_for)["records"])
    except RefusedState:  # the engine moves a state it refuses aside and starts afresh
        return 0
