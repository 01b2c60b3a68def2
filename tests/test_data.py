"""Data loading from tiny files in the real on-disk layouts, and stratified subsets."""

import gzip
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from reproduce import data
from reproduce.data import IDX_FILES, ImageData, load_dataset, read_idx, stratified_indices
from reproduce.errors import UserError


def write_idx(path, array, gz=False):
    """An IDX file of unsigned bytes: 0, 0, type 0x08, number of dims, dims as big-endian uint32, data."""
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    raw = header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()
    if gz:
        path = path.with_name(path.name + ".gz")
        raw = gzip.compress(raw)
    path.write_bytes(raw)
    return path


def tiny_idx_arrays(seed=0):
    """Images 4 high and 5 wide (not square, so a transposition shows), with the extreme bytes present."""
    rng = np.random.default_rng(seed)
    arrays = {
        "train_x": rng.integers(0, 256, size=(12, 4, 5), dtype=np.uint8),
        "train_y": rng.integers(0, 10, size=12, dtype=np.uint8),
        "test_x": rng.integers(0, 256, size=(6, 4, 5), dtype=np.uint8),
        "test_y": rng.integers(0, 10, size=6, dtype=np.uint8),
    }
    arrays["train_x"][0, 0, :2] = [0, 255]
    return arrays


@pytest.fixture(params=["plain", "gz"])
def idx_set(request):
    """A writer of the four IDX files into a folder; returns the arrays written."""

    def write(folder):
        folder.mkdir(parents=True, exist_ok=True)
        arrays = tiny_idx_arrays()
        for key, stem in IDX_FILES.items():
            write_idx(folder / stem, arrays[key], gz=request.param == "gz")
        return arrays

    return write


@pytest.fixture
def no_debian_fashion_mnist(tmp_path, monkeypatch):
    """Hide the system's Fashion-MNIST (this machine may have Debian's package installed)."""
    monkeypatch.setattr(data, "DEBIAN_FASHION_MNIST", tmp_path / "no-debian-package")


def check_idx_data(ds, arrays, name):
    assert ds.name == name and ds.num_classes == 10
    for split in ("train", "test"):
        x, y = getattr(ds, f"{split}_x"), getattr(ds, f"{split}_y")
        expected = arrays[f"{split}_x"]
        assert x.shape == (len(expected), 1, 4, 5) and x.dtype == torch.float32
        assert 0.0 <= x.min() and x.max() <= 1.0
        assert torch.allclose(x[:, 0], torch.from_numpy(expected.astype(np.float32) / 255))
        assert y.dtype == torch.int64
        assert torch.equal(y, torch.from_numpy(arrays[f"{split}_y"].astype(np.int64)))
    assert ds.train_x[0, 0, 0, 0] == 0.0 and ds.train_x[0, 0, 0, 1] == 1.0


def test_mnist_from_the_cache_folder(tmp_path, idx_set):
    arrays = idx_set(tmp_path / "mnist")
    check_idx_data(load_dataset("mnist", root=tmp_path, download=False), arrays, "mnist")


def test_mnist_from_torchvisions_raw_folder(tmp_path, idx_set):
    arrays = idx_set(tmp_path / "MNIST" / "raw")
    check_idx_data(load_dataset("mnist", root=tmp_path, download=False), arrays, "mnist")


def test_fashion_mnist_from_a_search_folder(tmp_path, idx_set):
    arrays = idx_set(tmp_path / "elsewhere")
    ds = load_dataset("fashion_mnist", root=tmp_path / "empty", download=False, search=[tmp_path / "nothing", tmp_path / "elsewhere"])
    check_idx_data(ds, arrays, "fashion_mnist")


def test_fashion_mnist_from_the_cache_folder(tmp_path, idx_set, no_debian_fashion_mnist):
    arrays = idx_set(tmp_path / "fashion-mnist")
    check_idx_data(load_dataset("fashion_mnist", root=tmp_path, download=False), arrays, "fashion_mnist")


def test_reproduce_data_wins_over_the_system_copy(tmp_path, idx_set, monkeypatch):
    """REPRODUCE_DATA names the folder to use: its Fashion-MNIST, not the Debian package's, is read."""
    system = idx_set(tmp_path / "debian")
    mine = tiny_idx_arrays()
    mine["train_y"] = (mine["train_y"] + 1) % 10  # other labels: which copy was read shows
    (tmp_path / "mine" / "fashion-mnist").mkdir(parents=True)
    for key, stem in IDX_FILES.items():
        write_idx(tmp_path / "mine" / "fashion-mnist" / stem, mine[key])
    monkeypatch.setattr(data, "DEBIAN_FASHION_MNIST", tmp_path / "debian")
    monkeypatch.setenv("REPRODUCE_DATA", str(tmp_path / "mine"))
    assert torch.equal(load_dataset("fashion_mnist", download=False).train_y, torch.from_numpy(mine["train_y"].astype(np.int64)))
    monkeypatch.delenv("REPRODUCE_DATA")
    monkeypatch.setattr(data, "cache_dir", lambda root=None: tmp_path / "default")
    monkeypatch.setattr(data, "_chosen", lambda cache: False)
    assert torch.equal(load_dataset("fashion_mnist", download=False).train_y, torch.from_numpy(system["train_y"].astype(np.int64)))


def test_a_failed_download_leaves_no_folder(tmp_path, monkeypatch, no_debian_fashion_mnist):
    """Offline, torchvision's download makes FashionMNIST/raw/ and fails: nothing of it stays."""
    import torchvision

    def offline(root, train, download):
        (Path(root) / "FashionMNIST" / "raw").mkdir(parents=True, exist_ok=True)
        raise RuntimeError("offline")

    monkeypatch.setattr(torchvision.datasets, "FashionMNIST", offline)
    with pytest.raises(UserError, match="fashion_mnist not found"):
        load_dataset("fashion_mnist", root=tmp_path / "data", download=True)
    assert not (tmp_path / "data").exists()


def test_a_folder_with_only_some_files_is_passed_over(tmp_path, idx_set):
    idx_set(tmp_path / "mnist")
    (tmp_path / "mnist" / IDX_FILES["test_y"]).unlink(missing_ok=True)
    (tmp_path / "mnist" / f"{IDX_FILES['test_y']}.gz").unlink(missing_ok=True)
    with pytest.raises(UserError, match="mnist not found"):
        load_dataset("mnist", root=tmp_path, download=False)


@settings(max_examples=30, deadline=None)
@given(shape=st.lists(st.integers(0, 6), min_size=1, max_size=4), gz=st.booleans(), seed=st.integers(0, 1000))
def test_read_idx_round_trips_any_shape(tmp_path_factory, shape, gz, seed):
    array = np.random.default_rng(seed).integers(0, 256, size=shape, dtype=np.uint8)
    path = write_idx(tmp_path_factory.mktemp("idx") / "a-idx-ubyte", array, gz=gz)
    read = read_idx(path)
    assert read.shape == tuple(shape) and np.array_equal(read, array)


@pytest.mark.parametrize("gz", [False, True], ids=["plain", "gz"])
@pytest.mark.parametrize("cut", ["data", "header"])
def test_truncated_idx_file_is_named(tmp_path, gz, cut):
    path = write_idx(tmp_path / "train-images-idx3-ubyte", np.zeros((3, 4, 5), dtype=np.uint8))
    raw = path.read_bytes()
    raw = raw[: len(raw) - 7] if cut == "data" else raw[:10]
    if gz:
        path = tmp_path / "train-images-idx3-ubyte.gz"
        raw = gzip.compress(raw)
    path.write_bytes(raw)
    with pytest.raises(UserError, match=path.name):
        read_idx(path)


@pytest.mark.parametrize("damage", ["cut_short", "flipped_byte"])
def test_damaged_gzip_stream_is_named(tmp_path, damage):
    """A download cut short leaves a .gz that ends mid-stream; a flipped byte breaks the deflate data."""
    array = np.random.default_rng(0).integers(0, 4, size=(30, 28, 28), dtype=np.uint8)
    path = write_idx(tmp_path / "train-images-idx3-ubyte", array, gz=True)
    raw = bytearray(path.read_bytes())
    if damage == "cut_short":
        raw = raw[: len(raw) // 2]
    else:
        raw[40] ^= 0xFF
    path.write_bytes(bytes(raw))
    with pytest.raises(UserError, match=path.name):
        read_idx(path)


@pytest.mark.parametrize("content", [b"", b"<html>not found</html>", bytes([0, 0, 0x0D, 1, 0, 0, 0, 1]) + bytes(4)],
                         ids=["empty", "html", "float-idx"])
def test_non_idx_file_is_named(tmp_path, content):
    path = tmp_path / "train-labels-idx1-ubyte"
    path.write_bytes(content)
    with pytest.raises(UserError, match=path.name):
        read_idx(path)


def test_non_gzip_file_with_gz_suffix_is_named(tmp_path):
    path = tmp_path / "train-labels-idx1-ubyte.gz"
    path.write_bytes(b"<html>not found</html>")
    with pytest.raises(UserError, match=path.name):
        read_idx(path)


def test_broken_file_is_named_when_loading_a_data_set(tmp_path, idx_set):
    idx_set(tmp_path / "mnist")
    for stale in (tmp_path / "mnist").glob("t10k-labels*"):
        stale.unlink()
    (tmp_path / "mnist" / "t10k-labels-idx1-ubyte").write_bytes(b"garbage")
    with pytest.raises(UserError, match="t10k-labels-idx1-ubyte"):
        load_dataset("mnist", root=tmp_path, download=False)


# CIFAR


def write_cifar(root, name, per_file=3, seed=0):
    """The python-pickle layout; returns the images (N, 3072) and labels in file order, per split."""
    folder, train_files, test_files, label_key, num_classes, _ = data.CIFAR_LAYOUT[name]
    rng = np.random.default_rng(seed)
    (root / folder).mkdir(parents=True)
    written = {}
    for split, files in (("train", train_files), ("test", test_files)):
        images, labels = [], []
        for f in files:
            x = rng.integers(0, 256, size=(per_file, 3072), dtype=np.uint8)
            y = [int(v) for v in rng.integers(0, num_classes, size=per_file)]
            batch = {b"data": x, label_key: y, b"filenames": [b"x.png"] * per_file}
            if name == "cifar100":
                batch[b"coarse_labels"] = [num_classes + 1] * per_file  # must not be read
            with open(root / folder / f, "wb") as handle:
                pickle.dump(batch, handle)
            images.append(x)
            labels.extend(y)
        written[split] = (np.concatenate(images), np.array(labels))
    return written


@pytest.mark.parametrize("name, num_classes, train_files", [("cifar10", 10, 5), ("cifar100", 100, 1)])
def test_cifar_pickles(tmp_path, name, num_classes, train_files):
    written = write_cifar(tmp_path, name)
    ds = load_dataset(name, root=tmp_path, download=False)
    assert ds.name == name and ds.num_classes == num_classes
    for split, n in (("train", 3 * train_files), ("test", 3)):
        x, y = getattr(ds, f"{split}_x"), getattr(ds, f"{split}_y")
        images, labels = written[split]
        assert x.shape == (n, 3, 32, 32) and x.dtype == torch.float32
        assert y.dtype == torch.int64 and torch.equal(y, torch.from_numpy(labels))
        assert torch.equal(x, torch.from_numpy(images).float().div(255).reshape(n, 3, 32, 32))


def test_cifar_pixel_layout_is_row_major_channel_planes(tmp_path):
    """A row of 3072 bytes is the red 32x32 plane, then green, then blue, each row by row."""
    written = write_cifar(tmp_path, "cifar10")
    x = load_dataset("cifar10", root=tmp_path, download=False).train_x
    row = written["train"][0][4]
    for c, h, w in [(0, 0, 0), (0, 0, 31), (0, 1, 0), (1, 0, 0), (2, 31, 31), (1, 17, 5)]:
        assert round(float(x[4, c, h, w]) * 255) == row[c * 1024 + h * 32 + w]


@pytest.mark.parametrize("name, folder", [("cifar10", "cifar-10-batches-py"), ("cifar100", "cifar-100-python")])
def test_missing_cifar_names_its_folder(tmp_path, name, folder):
    with pytest.raises(UserError) as error:
        load_dataset(name, root=tmp_path, download=False)
    assert str(tmp_path / folder) in str(error.value)


def test_cifar_with_a_missing_batch_is_missing(tmp_path):
    write_cifar(tmp_path, "cifar10")
    (tmp_path / "cifar-10-batches-py" / "data_batch_3").unlink()
    with pytest.raises(UserError, match="data_batch_3"):
        load_dataset("cifar10", root=tmp_path, download=False)


# missing and unknown sets


def test_missing_mnist_names_its_folder(tmp_path):
    with pytest.raises(UserError) as error:
        load_dataset("mnist", root=tmp_path, download=False)
    assert str(tmp_path / "mnist") in str(error.value)


def test_missing_fashion_mnist_names_its_folder_and_the_debian_package(tmp_path, no_debian_fashion_mnist):
    with pytest.raises(UserError) as error:
        load_dataset("fashion_mnist", root=tmp_path, download=False)
    assert str(tmp_path / "fashion-mnist") in str(error.value)
    assert "dataset-fashion-mnist" in str(error.value)


def test_unknown_data_set(tmp_path):
    with pytest.raises(UserError, match="svhn"):
        load_dataset("svhn", root=tmp_path, download=False)


# subsets


@st.composite
def class_labels(draw):
    """Shuffled labels of 1-8 classes (not necessarily 0..K-1), each with its own count."""
    classes = draw(st.lists(st.integers(0, 50), min_size=1, max_size=8, unique=True))
    counts = draw(st.lists(st.integers(1, 20), min_size=len(classes), max_size=len(classes)))
    labels = torch.tensor([c for c, m in zip(classes, counts) for _ in range(m)])
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(draw(st.integers(0, 1000))))
    return labels[order], min(counts)


@settings(max_examples=30, deadline=None)
@given(drawn=class_labels(), pick=st.data(), seed=st.integers(0, 2**31 - 1))
def test_stratified_indices_are_balanced_distinct_and_seeded(drawn, pick, seed):
    labels, smallest = drawn
    num_classes = len(torch.unique(labels))
    n = pick.draw(st.integers(0, smallest * num_classes))
    i = stratified_indices(labels, n, seed)
    assert i.dtype == torch.int64 and len(i) == n
    assert len(torch.unique(i)) == n and (0 <= i).all() and (i < len(labels)).all()
    counts = torch.stack([(labels[i] == c).sum() for c in torch.unique(labels)])
    assert counts.max() - counts.min() <= 1
    assert torch.equal(i, stratified_indices(labels, n, seed))


def test_stratified_remainder_goes_to_the_lowest_classes():
    labels = torch.tensor([7, 3, 5] * 10)
    picked = labels[stratified_indices(labels, 11, seed=0)]
    assert [int((picked == c).sum()) for c in (3, 5, 7)] == [4, 4, 3]


def test_stratified_other_seed_other_indices():
    labels = torch.arange(200) % 4
    assert not torch.equal(stratified_indices(labels, 100, seed=0), stratified_indices(labels, 100, seed=1))


def test_asking_for_more_than_the_set_has():
    with pytest.raises(UserError, match="31"):
        stratified_indices(torch.arange(30) % 3, 31, seed=0)


def test_asking_for_more_than_a_class_has():
    """Balance is a promise: a short class is an error, not a silently skewed subset."""
    labels = torch.tensor([0] * 10 + [1] * 2)
    with pytest.raises(UserError, match="class 1"):
        stratified_indices(labels, 8, seed=0)


@pytest.fixture
def image_data():
    """Each image is filled with its own index, so rows can be matched to labels after subsetting."""
    def images(n):
        return torch.arange(n, dtype=torch.float32).view(n, 1, 1, 1).expand(n, 1, 2, 2).contiguous()

    return ImageData("tiny", images(40), torch.arange(40) % 4, images(20), torch.arange(20) % 4, 4)


def test_subset_keeps_images_with_their_labels(image_data):
    sub = image_data.subset(10, 8, seed=3)
    assert sub.train_x.shape == (10, 1, 2, 2) and sub.test_x.shape == (8, 1, 2, 2)
    for x, y, whole_y in ((sub.train_x, sub.train_y, image_data.train_y), (sub.test_x, sub.test_y, image_data.test_y)):
        index = x[:, 0, 0, 0].long()
        assert torch.equal(whole_y[index], y)
        assert len(torch.unique(index)) == len(index)
        assert torch.bincount(y, minlength=4).tolist() in ([3, 3, 2, 2], [2, 2, 2, 2])
    assert (sub.name, sub.num_classes) == ("tiny", 4)


def test_subset_none_keeps_a_set_whole(image_data):
    sub = image_data.subset(None, 4, seed=0)
    assert sub.train_x is image_data.train_x and sub.train_y is image_data.train_y
    assert len(sub.test_y) == 4
    assert image_data.subset(None, None, seed=0) is image_data


def test_subset_is_seeded(image_data):
    a, b, c = image_data.subset(12, 8, seed=0), image_data.subset(12, 8, seed=0), image_data.subset(12, 8, seed=1)
    assert torch.equal(a.train_y, b.train_y) and torch.equal(a.train_x, b.train_x)
    assert torch.equal(a.test_x, b.test_x)
    assert not torch.equal(a.train_x, c.train_x)


def test_subset_larger_than_the_set_is_refused(image_data):
    with pytest.raises(UserError):
        image_data.subset(41, None, seed=0)
    with pytest.raises(UserError):
        image_data.subset(None, 21, seed=0)


def test_to_cpu_keeps_values(image_data):
    moved = image_data.to("cpu")
    for field in ("train_x", "train_y", "test_x", "test_y"):
        assert torch.equal(getattr(moved, field), getattr(image_data, field))
        assert getattr(moved, field).device.type == "cpu"
    assert (moved.name, moved.num_classes) == ("tiny", 4)
