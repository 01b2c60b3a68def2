"""The results store: one netCDF file per run, written atomically, checked before it is reused.

Layout: `<root>/<tier>/<paper>/<run>.nc`, training state for resuming in
`<root>/<tier>/<paper>/.state/<run>.pt` (one file per run, overwritten), the run's lock in
`.state/<run>.lock`, and the report files in `<root>/<tier>/`.
A file is reused only if all its data reads back under its checksums (HDF5's Fletcher-32 filter on
every numeric variable, checked by the library on every read), it carries this schema version, and
it was made for exactly the config asked for (its hash); anything else is moved aside as
`<run>.nc.rejected` and recomputed.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import hashlib
import json
import os
import socket
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import xarray as xr

from reproduce import __version__, faults
from reproduce.devices import device_name
from reproduce.errors import UserError

SCHEMA_VERSION = 4  # 2: `model` coordinate, per-sample labels and noise mask; 3: long_name and units on every
# variable; 4: a Fletcher-32 checksum on every numeric variable

# CF-style description of every variable a run may store: name -> (long_name, units). Units "1"
# for ratios, accuracies, fractions, counts and indices (dimensionless); string coordinates get a
# long_name only (units None). Store.write applies these attrs and refuses a variable with no row,
# so nothing is stored undescribed: a new variable needs one line here.
VARIABLES: dict[str, tuple[str, str | None]] = {
    # coordinates shared by the papers
    "epoch": ("training epoch", "epoch"),
    "replica": ("replica index in the stacked run", "1"),
    "init_seed": ("initialization seed of the replica", "1"),
    "setting": ("replica setting (noisy, control, noise protocol)", None),
    "split": ("data split", None),
    "sample": ("training sample's index in the full data set", "1"),
    "test_sample": ("test sample's index in the full test set", "1"),
    "class": ("class", "1"),
    "layer": ("hidden layer (1 = first)", "1"),
    "layer_width": ("neurons in the layer", "1"),
    "layer_name": ("layer name", None),
    "neuron": ("neuron index in the layer", "1"),
    "model": ("model name", None),
    "arch": ("architecture", None),
    "dataset": ("data set", None),
    "width": ("base width of the model", "1"),
    "noise_rate": ("label-noise rate", "1"),
    "degree": ("label-corruption degree", "1"),
    # per-sample labels and masks
    "label": ("label the replica trained on", "1"),
    "original_label": ("true label", "1"),
    "noisy_mask": ("sample in the noisy subset (1) or not (0)", "1"),
    "noisy_fraction": ("fraction of samples in the noisy subset", "1"),
    "test_label": ("true test label", "1"),
    # training curves
    "loss": ("cross-entropy loss", "nat"),
    "accuracy": ("accuracy", "1"),
    # ddmlp
    "cs": ("cosine similarity of clean and noisy mean activations", "1"),
    "cs_test": ("cosine similarity of test and training mean activations", "1"),
    "pair": ("test subset against training subset", None),
    "magnitude": ("mean absolute activation of the neuron", "1"),
    "outlier_by_cell": ("mean absolute activation of the layer's largest neuron on noisy samples, per (true class, noisy label) cell", "1"),
    "true_class": ("true class of the noisy samples in the cell", "1"),
    "noisy_label": ("noisy label of the noisy samples in the cell", "1"),
    # smooth
    "volume_measure": ("accuracy, loss or sharpness norm over an augmentation volume (see measure)", "1"),
    "measure": ("measure over the volume", None),
    "subset": ("training subset", None),
    "volume": ("augmentation volume (number of erased singular values)", "1"),
    "parameters": ("parameters of one replica", "1"),
    # masc
    "masc_accuracy": ("MASC accuracy", "1"),
    "masc_components": ("principal components of the class subspace", "1"),
    "masc_test_prediction": ("MASC class prediction on the test sample", "1"),
    "masc_train_prediction": ("MASC class prediction on the training sample", "1"),
    "subspace": ("labels the subspaces were fitted on", None),
    "model_accuracy": ("model accuracy", "1"),
    "model_test_prediction": ("model class prediction on the test sample", "1"),
    "test_select": ("test sample in the layer-selection split (1) or the scoring split (0)", "1"),
    "retrain_accuracy": ("accuracy of the network retrained on MASC labels or on its own (relabel_kind)", "1"),
    "retrain_epoch": ("retraining epoch", "epoch"),
    "retrain_chosen_epoch": ("retraining epoch kept (best on the selection split)", "epoch"),
    "relabel_kind": ("labels retrained on: MASC's relabeling or the model's own training labels", None),
    "memorized_epoch": ("first checkpoint with training accuracy on the corrupted labels at the target (inf: never)", "epoch"),
    "relabel_layer": ("layer whose MASC labels were used for retraining", "1"),
    "relabel": ("MASC label used for retraining", "1"),
    # modnoise
    "op": ("modular operation", None),
    "p": ("modulus", "1"),
    "a": ("first operand", "1"),
    "b": ("second operand", "1"),
    "in_holdout": ("pair in the held-out part of the training set (1) or not (0)", "1"),
    "network": ("network (trained, frequency-extracted, partitioned: held-out ablation, Strength top k, IPR top k)", None),
    "scorer": ("score of a top-k partition (the paper's Strength, IPR)", None),
    "variant": ("run beside the main one at its width (adam, adamw: the learning order)", None),
    "test_accuracy": ("test accuracy", "1"),
    "global_accuracy": ("test accuracy keeping the top-k global frequencies", "1"),
    "top_k": ("global frequencies kept", "1"),
    "frequency": ("frequency", "1"),
    "power": ("power of the neuron's weights at the frequency", "1"),
    "dominant_frequency": ("neuron's dominant frequency", "1"),
    "concentration": ("share of the neuron's power at its dominant frequency", "1"),
    "mean_concentration": ("mean over neurons of the share of power at the dominant frequency", "1"),
    "generalizing_fraction": ("fraction of neurons in the generalizing group", "1"),
    "partition_score": ("neuron's score in the task-agnostic partition", "1"),
    "partition_k": ("neurons kept by a top-k partition, k chosen on the held-out split", "1"),
    "strength_score": ("neuron's Strength ||w||_inf phi(||u||_inf + ||v||_inf)", "1"),
    "ipr_score": ("IPR of the DFT of the neuron's output weights", "1"),
}


def describe(ds: xr.Dataset) -> xr.Dataset:
    """`ds` with long_name and units from VARIABLES on every variable; an error names any without a row."""
    missing = sorted(str(name) for name in ds.variables if name not in VARIABLES)
    if missing:
        raise ValueError(f"no long_name/units for {', '.join(missing)}: add a row to VARIABLES in reproduce/store.py")
    ds = ds.copy()
    for name in ds.variables:
        long_name, units = VARIABLES[str(name)]
        ds[name].attrs.update(long_name=long_name, **({} if units is None else {"units": units}))
    return ds


ENGINE = "netcdf4"


WHEN_SET = {"config": "when_set"}  # dataclass field metadata: the field enters a run's stored config only when set


def run_config(run) -> dict:
    """The config a run's result file is made for: `dataclasses.asdict(run)`, less every field marked
    `metadata=WHEN_SET` that holds its default. A field added for new settings (modnoise's
    `Run.output_bias`) so leaves the configs, and hashes, of the runs that do not set it as they were:
    their stored results stay usable."""
    config = dataclasses.asdict(run)
    for f in dataclasses.fields(run):
        if f.metadata.get("config") == "when_set" and getattr(run, f.name) == f.default:
            del config[f.name]
    return config


def config_hash(config: dict) -> str:
    """A short, stable hash of a JSON-able config (key order does not matter)."""
    text = json.dumps(config, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def git_commit() -> str:
    """The commit of the package's checkout, with '+dirty' for uncommitted changes; 'unknown' outside git."""
    here = Path(__file__).resolve().parent
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5)
        if commit.returncode != 0:
            return "unknown"
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                               capture_output=True, text=True, timeout=5).stdout.strip()
        return commit.stdout.strip() + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _attrs_problem(attrs: dict, paper: str, tier: str, config: dict | None) -> str | None:
    """Why a file with these attrs was not made for this run of this schema, or None."""
    if attrs.get("schema") != "reproduce-results":
        return "not a results file of this package"
    if attrs.get("schema_version") != SCHEMA_VERSION:
        return f"schema version {attrs.get('schema_version')}, expected {SCHEMA_VERSION}"
    if attrs.get("paper") != paper or attrs.get("tier") != tier:
        return f"made for {attrs.get('paper')}/{attrs.get('tier')}, not {paper}/{tier}"
    if config is None:  # any config: the file must at least be the one its own attrs describe
        if attrs.get("config_hash") != config_hash(json.loads(attrs.get("config") or "{}")):
            return "its config does not match its config_hash"
    elif attrs.get("config_hash") != config_hash(config):
        return "made for another config"
    return None


def _read(path: Path, paper: str, tier: str, config: dict | None) -> tuple[xr.Dataset | None, str | None]:
    """(the file's Dataset, None), or (None, why it cannot be used). Loading reads every chunk, and HDF5
    checks each chunk's Fletcher-32 checksum as it reads it: a changed byte in the data fails here
    like a truncated file."""
    try:
        with xr.open_dataset(path, engine=ENGINE) as ds:
            ds = ds.load()
    except Exception as error:  # truncated, not netCDF, a checksum that does not match
        return None, f"unreadable ({type(error).__name__}: {str(error)[:80]})"
    reason = _attrs_problem(dict(ds.attrs), paper, tier, config)
    return (None, reason) if reason else (ds, None)


def checksummed(ds: xr.Dataset) -> dict:
    """netCDF4 encoding: a Fletcher-32 checksum on every numeric variable (strings cannot carry one),
    no fill value on coordinates."""
    encoding = {name: {"_FillValue": None} for name in ds.coords}
    for name, var in ds.variables.items():
        if var.dtype.kind in "biuf" and var.ndim:
            encoding.setdefault(name, {})["fletcher32"] = True
    return encoding


@dataclass(frozen=True)
class Store:
    root: Path

    def path(self, tier: str, paper: str, run: str) -> Path:
        return Path(self.root) / tier / paper / f"{run}.nc"

    def state_path(self, tier: str, paper: str, run: str) -> Path:
        path = Path(self.root) / tier / paper / ".state" / f"{run}.pt"
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    @contextlib.contextmanager
    def lock(self, tier: str, paper: str, run: str, wait: bool) -> Iterator[bool]:
        """Hold the run's lock (fcntl.flock, released when the process dies) while computing it.

        Yields False instead of blocking when `wait` is false and another process holds it, so
        processes with overlapping plans each compute a run once and move on to the next.
        """
        path = self.state_path(tier, paper, run).with_suffix(".lock")
        with open(path, "a") as f:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
            except BlockingIOError:
                yield False
                return
            try:
                yield True
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    def clean_partial(self, tier: str, paper: str, run: str) -> None:
        """Remove temporary files that a killed write left (call while holding the run's lock)."""
        state = self.state_path(tier, paper, run)
        result = self.path(tier, paper, run)
        for tmp in [*state.parent.glob(f"{state.name}.tmp*"), *result.parent.glob(f"{result.name}.tmp*")]:
            tmp.unlink(missing_ok=True)

    def problem(self, path: Path, paper: str, tier: str, config: dict) -> str | None:
        """Why the file at `path` cannot be used for this run, or None if it can."""
        return _read(path, paper, tier, config)[1]

    def load(self, tier: str, paper: str, run: str, config: dict, warn=print) -> xr.Dataset | None:
        """The stored result of this run, or None when it must be (re)computed.

        A file that exists but cannot be used is renamed `<run>.nc.rejected` (kept for
        inspection, never read again) and `warn` is told why.
        """
        path = self.path(tier, paper, run)
        if not path.exists():
            return None
        ds, reason = _read(path, paper, tier, config)
        if reason is not None:
            os.replace(path, path.with_name(path.name + ".rejected"))
            warn(f"{path}: {reason}; moved aside to {path.name}.rejected and recomputing")
            return None
        return ds

    def write(self, ds: xr.Dataset, tier: str, paper: str, run: str, config: dict, provenance: dict) -> Path:
        """Write atomically: a temporary file in the same folder, fsync, then rename over the target."""
        path = self.path(tier, paper, run)
        ds = describe(ds)
        path.parent.mkdir(parents=True, exist_ok=True)
        ds.attrs.update(
            schema="reproduce-results",
            schema_version=SCHEMA_VERSION,
            paper=paper,
            tier=tier,
            run=run,
            config=json.dumps(config, sort_keys=True, default=str),
            config_hash=config_hash(config),
            package_version=__version__,
            git_commit=git_commit(),
            host=socket.gethostname(),
            **({"device_name": device_name(str(provenance["device"]))} if "device" in provenance else {}),
            **provenance,
        )
        encoding = checksummed(ds)
        tmp = path.with_name(f"{path.name}.tmp{os.getpid()}")
        try:
            ds.to_netcdf(tmp, engine=ENGINE, encoding=encoding)
            with open(tmp, "rb") as f:
                os.fsync(f.fileno())
            faults.reached("result")
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
        return path

    def combine(self, tier: str, paper: str, runs: list[str]) -> xr.Dataset:
        """All runs of a paper and tier as one Dataset with a `run` dimension (padding with NaN).

        Dimensions line up by their coordinates (an outer join on each index). `replica` has no
        index: its position means another setting in another run, so every per-replica coordinate
        (init_seed, setting, noise_rate, ...) that differs between runs is kept per run, along
        (run, replica), and is how a replica is picked (never by position). Each run's `status`
        attribute (complete | diverged) and its `config` (JSON) become coordinates along `run`.
        """
        pieces = []
        for run in runs:
            with xr.open_dataset(self.path(tier, paper, run), engine=ENGINE) as ds:
                extra = {key: ("run", [ds.attrs.get(key, default)]) for key, default in (("status", "complete"), ("config", ""))}
                pieces.append(ds.load().expand_dims(run=[run]).assign_coords(extra))
        return xr.concat(pieces, dim="run", data_vars="all", coords="different", compat="equals",
                         join="outer", combine_attrs="drop_conflicts")

    def tree(self, tier: str, papers: list[str]) -> xr.DataTree:
        """Every stored run of the papers at this tier as a DataTree /<paper>/<run>: each run's Dataset
        as stored (coordinates and attrs intact), `replica` labelled by its settings."""
        nodes = {}
        for paper in papers:
            for path in sorted((Path(self.root) / tier / paper).glob("*.nc")):
                ds, reason = _read(path, paper, tier, None)
                if reason is None and ds.attrs.get("run") != path.stem:
                    reason = f"made for run {ds.attrs.get('run')}, not {path.stem}"
                if reason is not None:
                    raise UserError(unusable(path, reason, tier, paper, path.stem, self.root))
                nodes[f"{paper}/{path.stem}"] = label_replicas(ds)
        return xr.DataTree.from_dict(nodes, name=tier)


def replicas(ds: xr.Dataset, model: str, setting: str) -> list[xr.Dataset]:
    """Every seed's replica of `model`'s run trained in `setting` (a combined Dataset with a `run` of
    that model and a per-replica `setting`), in seed order: the unit of evidence. Layers padded by
    the combination (NaN widths) and epochs the run never reached are dropped."""
    one = ds.isel(run=list(ds["model"].values).index(model))
    indices = np.nonzero(one["setting"].values == setting)[0]
    layers = int(np.isfinite(one["layer_width"]).sum()) if "layer_width" in one else one.sizes["layer"]
    return [one.isel(replica=int(i), layer=slice(0, layers)).dropna("epoch", how="all", subset=["accuracy"])
            for i in indices]


def label_replicas(ds: xr.Dataset) -> xr.Dataset:
    """`replica` indexed by the per-replica coordinates (a pandas MultiIndex of setting, noise_rate,
    init_seed, ...), so replicas are selected by what they are, `.sel(setting="flip", noise_rate=0.8)`,
    never by position."""
    if "replica" not in ds.dims:
        return ds
    keys = [str(k) for k, c in ds.coords.items() if c.dims == ("replica",) and k != "replica"]
    ds = ds.drop_vars("replica", errors="ignore")  # the bare position 0..n-1 goes
    return ds.set_index(replica=keys) if keys else ds


def unusable(path: Path, reason: str, tier: str, paper: str, run: str, results: Path | str) -> str:
    """The one line for a stored file that cannot be used, with the command that remakes it (the
    command line's `report` and `open_results` say the same)."""
    return (f"{path} cannot be used: {reason}; remake it with `python -m reproduce --tier {tier} --paper {paper} "
            f"--run {run} --results {results}` (the file is then moved aside)")


def open_results(results: str | Path, tier: str, paper: str | None = None) -> xr.DataTree:
    """The stored results of a tier as an xarray.DataTree: one node per paper, under it one per run,
    each the run's Dataset as stored, with `replica` labelled by its settings (init_seed, noise rate,
    ...), never by position. `paper` None: every paper with results. `reproduce.open_results` is this.

        tree = reproduce.open_results("results", "quick", "modnoise")
        tree["modnoise/add-m513-s0"].to_dataset()
    """
    from reproduce.experiments import PAPERS, check_paper, check_tier

    check_tier(tier)
    papers = [check_paper(paper)] if paper else [p for p in PAPERS if (Path(results) / tier / p).is_dir()]
    return Store(Path(results)).tree(tier, papers)
