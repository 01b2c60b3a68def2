"""Data sets as float tensors in [0, 1], moved to the training device once.

Fashion-MNIST comes from Debian's `dataset-fashion-mnist` (/usr/share/datasets/fashion-mnist), a
cache folder, or torchvision's download; MNIST from the cache or torchvision; CIFAR-10/100 from the
standard python-pickle layout in the cache (which torchvision's download also creates). Files are
read by this module, so tests can write tiny files in the same layouts.
"""

from __future__ import annotations

import contextlib
import gzip
import os
import pickle
import shutil
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from reproduce.errors import UserError

DATASETS = ("fashion_mnist", "mnist", "cifar10", "cifar100")
# What a plan needs to know of a data set without loading it (--dry-run, model shapes):
INPUT_SHAPES = {"fashion_mnist": (1, 28, 28), "mnist": (1, 28, 28), "cifar10": (3, 32, 32), "cifar100": (3, 32, 32)}
NUM_CLASSES = {"fashion_mnist": 10, "mnist": 10, "cifar10": 10, "cifar100": 100}
TRAIN_SIZES = {"fashion_mnist": 60_000, "mnist": 60_000, "cifar10": 50_000, "cifar100": 50_000}
TEST_SIZES = {"fashion_mnist": 10_000, "mnist": 10_000, "cifar10": 10_000, "cifar100": 10_000}
DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
IDX_FILES = {
    "train_x": "train-images-idx3-ubyte",
    "train_y": "train-labels-idx1-ubyte",
    "test_x": "t10k-images-idx3-ubyte",
    "test_y": "t10k-labels-idx1-ubyte",
}


@dataclass
class ImageData:
    name: str
    train_x: torch.Tensor  # float32 in [0, 1], (N, C, H, W)
    train_y: torch.Tensor  # int64 (N,)
    test_x: torch.Tensor
    test_y: torch.Tensor
    num_classes: int
    train_index: torch.Tensor | None = None  # int64 (N,): position of each training sample in the full set

    def to(self, device: torch.device | str) -> "ImageData":
        return replace(self, train_x=self.train_x.to(device), train_y=self.train_y.to(device),
                       test_x=self.test_x.to(device), test_y=self.test_y.to(device))

    def sample_index(self) -> torch.Tensor:
        """Each training sample's position in the full data set, so stored per-sample results
        (noise masks, labels) map back to images."""
        return self.train_index if self.train_index is not None else torch.arange(self.train_y.shape[0])

    def subset(self, n_train: int | None, n_test: int | None, seed: int) -> "ImageData":
        """Stratified, seeded subsets of the training and test sets (None keeps a set whole)."""
        out = self
        if n_train is not None:
            i = stratified_indices(self.train_y, n_train, seed)
            index = self.train_index[i] if self.train_index is not None else i
            out = replace(out, train_x=self.train_x[i], train_y=self.train_y[i], train_index=index)
        if n_test is not None:
            i = stratified_indices(self.test_y, n_test, seed + 1)
            out = replace(out, test_x=self.test_x[i], test_y=self.test_y[i])
        return out


def stratified_indices(labels: torch.Tensor, n: int, seed: int) -> torch.Tensor:
    """n indices with classes as equal as possible (the remainder to the lowest classes), shuffled."""
    labels = labels.cpu()
    generator = torch.Generator().manual_seed(int(seed))
    classes = torch.unique(labels)
    if n > labels.numel():
        raise UserError(f"asked for {n} samples but the set has {labels.numel()}")
    share, extra = divmod(n, len(classes))
    picked = []
    for k, c in enumerate(classes):
        members = torch.nonzero(labels == c).flatten()
        take = share + (1 if k < extra else 0)
        if take > members.numel():
            raise UserError(f"class {int(c)} has {members.numel()} samples, fewer than the {take} asked for")
        picked.append(members[torch.randperm(members.numel(), generator=generator)[:take]])
    picked = torch.cat(picked)
    return picked[torch.randperm(picked.numel(), generator=generator)]


def _default_cache() -> Path:
    return Path.home() / ".cache" / "reproduce" / "data"


def cache_dir(root: str | Path | None = None) -> Path:
    return Path(root or os.environ.get("REPRODUCE_DATA") or _default_cache())


def load_dataset(name: str, root: str | Path | None = None, download: bool = True,
                 search: Sequence[Path] | None = None) -> ImageData:
    """Load a data set by name; `search` overrides the folders looked in (tests use it)."""
    found = locate(name, root, download, search)
    if name in ("fashion_mnist", "mnist"):
        return _idx_data(name, found)
    return _read_cifar(name, found)


def locate(name: str, root: str | Path | None = None, download: bool = True,
           search: Sequence[Path] | None = None) -> dict[str, Path] | Path:
    """Where a data set's files are (fetching them with torchvision when online), without reading them.

    The runner calls this for every run before training starts, so a missing data set is one
    clear error up front. Returns the four IDX files of (Fashion-)MNIST, or CIFAR's pickle folder.
    """
    if name not in DATASETS:
        raise UserError(f"unknown data set {name!r}: choose from {', '.join(DATASETS)}")
    check_named_folder(root)
    cache = cache_dir(root)
    if name in ("fashion_mnist", "mnist"):
        return _find_idx_set(name, cache, download, search)
    return _find_cifar(name, cache, download)


def check_named_folder(root: str | Path | None = None) -> None:
    """A data folder named by REPRODUCE_DATA must exist: a mistyped name would otherwise fall back,
    unsaid, to the system's copy or the default cache."""
    named = os.environ.get("REPRODUCE_DATA")
    if root is None and named and not Path(named).is_dir():
        raise UserError(f"REPRODUCE_DATA={named} is not a folder: create it (with the data sets in it), or unset "
                        f"REPRODUCE_DATA to read {DEBIAN_FASHION_MNIST} and {_default_cache()}")


def data_source(names: Sequence[str] = DATASETS) -> dict[str, str]:
    """Where each data set would be read from (found without downloading), or why it is missing:
    what --dry-run prints and the report's provenance records."""
    out = {}
    for name in names:
        try:
            found = locate(name, download=False)
        except UserError as error:
            out[name] = f"missing ({error})"
            continue
        folder = Path(next(iter(found.values()))).parent if isinstance(found, dict) else Path(found)
        out[name] = str(folder) + (" (Debian's dataset-fashion-mnist)" if folder == DEBIAN_FASHION_MNIST else "")
    return out


def read_idx(path: Path) -> np.ndarray:
    """An IDX file (plain or .gz): big-endian header, magic 0x08 0x0N, then uint8 data."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except (EOFError, gzip.BadGzipFile, zlib.error) as error:  # a download cut short, or not gzip at all
        raise UserError(f"{path} is a damaged gzip file ({error})") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise UserError(f"{path} is not an IDX file of unsigned bytes")
    if len(raw) < 4 + 4 * raw[3]:
        raise UserError(f"{path} is truncated: its header is cut short")
    dims = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(raw[3])]
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * len(dims))
    if data.size != int(np.prod(dims)):
        problem = "truncated" if data.size < int(np.prod(dims)) else "longer than its header says"
        raise UserError(f"{path} is {problem}: {data.size} bytes of data for shape {dims}")
    return data.reshape(dims)


def _find_idx(folder: Path, stem: str) -> Path | None:
    for candidate in (folder / stem, folder / f"{stem}.gz"):
        if candidate.exists():
            return candidate
    return None


def _find_idx_set(name: str, cache: Path, download: bool, search: Sequence[Path] | None) -> dict[str, Path]:
    torchvision_name = "FashionMNIST" if name == "fashion_mnist" else "MNIST"
    folder_name = "fashion-mnist" if name == "fashion_mnist" else "mnist"
    if search is None:  # a folder the user named (root, REPRODUCE_DATA) wins over the system's copy
        system = [DEBIAN_FASHION_MNIST] if name == "fashion_mnist" else []
        search = [cache / folder_name, cache / torchvision_name / "raw"]
        search = search + system if _chosen(cache) else system + search
    for folder in search:
        files = {key: _find_idx(folder, stem) for key, stem in IDX_FILES.items()}
        if all(files.values()):
            return files
    if download and _torchvision_download(torchvision_name, cache):
        return _find_idx_set(name, cache, False, [cache / torchvision_name / "raw"])
    hint = "install Debian's dataset-fashion-mnist (apt-get install dataset-fashion-mnist) or " if name == "fashion_mnist" else ""
    raise UserError(f"{name} not found: {hint}put its four IDX files in {cache / folder_name} "
                    f"(or set REPRODUCE_DATA to a folder that has {folder_name}/)")


def _idx_data(name: str, files: dict[str, Path]) -> ImageData:
    images = {k: torch.from_numpy(read_idx(files[k]).copy()).float().div_(255).unsqueeze(1) for k in ("train_x", "test_x")}
    labels = {k: torch.from_numpy(read_idx(files[k]).astype(np.int64)) for k in ("train_y", "test_y")}
    return ImageData(name, images["train_x"], labels["train_y"], images["test_x"], labels["test_y"], 10)


def _chosen(cache: Path) -> bool:
    """Whether the data folder was named by the user (an argument or REPRODUCE_DATA), not the default."""
    return cache != _default_cache()


def _torchvision_download(dataset: str, cache: Path) -> bool:
    """Let torchvision fetch a data set into `cache` (only works online); False when it cannot, with
    every folder the attempt made removed again (a failed download leaves nothing behind)."""
    made = [p for p in (cache, cache / dataset) if not p.exists()]
    try:
        import torchvision

        getattr(torchvision.datasets, dataset)(str(cache), train=True, download=True)
        getattr(torchvision.datasets, dataset)(str(cache), train=False, download=True)
        return True
    except Exception:  # offline, or a mirror refused: the caller explains what to do instead
        for folder in reversed(made):
            shutil.rmtree(folder, ignore_errors=True) if folder.name == dataset else _remove_if_empty(folder)
        return False


def _remove_if_empty(folder: Path) -> None:
    with contextlib.suppress(OSError):
        folder.rmdir()


CIFAR_LAYOUT = {
    "cifar10": ("cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)], ["test_batch"], b"labels", 10, "CIFAR10"),
    "cifar100": ("cifar-100-python", ["train"], ["test"], b"fine_labels", 100, "CIFAR100"),
}


def _find_cifar(name: str, cache: Path, download: bool) -> Path:
    folder, train_files, test_files, _, _, tv_name = CIFAR_LAYOUT[name]
    base = cache / folder
    if not all((base / f).exists() for f in train_files + test_files):
        if download and _torchvision_download(tv_name, cache):
            return _find_cifar(name, cache, False)
        raise UserError(f"{name} not found: put the python-pickle files ({', '.join(train_files + test_files)}) "
                        f"in {base}, or run where torchvision can download it")
    return base


def _read_cifar(name: str, base: Path) -> ImageData:
    _, train_files, test_files, label_key, classes, _ = CIFAR_LAYOUT[name]

    def read(files: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        xs, ys = [], []
        for f in files:
            with open(base / f, "rb") as handle:
                batch = pickle.load(handle, encoding="bytes")
            xs.append(np.asarray(batch[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
            ys.append(np.asarray(batch[label_key], dtype=np.int64))
        return torch.from_numpy(np.concatenate(xs)).float().div_(255), torch.from_numpy(np.concatenate(ys))

    train_x, train_y = read(train_files)
    test_x, test_y = read(test_files)
    return ImageData(name, train_x, train_y, test_x, test_y, classes)
