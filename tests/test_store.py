"""The results store: atomic writes, provenance, and files that must never be used."""

import json

import numpy as np
import pytest
import xarray as xr

from reproduce.store import SCHEMA_VERSION, Store, config_hash

CONFIG = {"model": "mlp3", "lr": 1e-3, "hidden": [8, 4]}


def _ds():
    return xr.Dataset({"accuracy": (("epoch", "replica"), np.arange(6.0).reshape(3, 2))}, coords={"epoch": [0.0, 1.0, 2.0]})


def test_write_then_load_round_trip_with_provenance(tmp_path):
    store = Store(tmp_path)
    path = store.write(_ds(), "quick", "ddmlp", "mlp3-s0", CONFIG, {"seed": 0, "device": "cpu"})
    assert path == tmp_path / "quick" / "ddmlp" / "mlp3-s0.nc"
    ds = store.load("quick", "ddmlp", "mlp3-s0", CONFIG)
    xr.testing.assert_equal(ds["accuracy"], _ds()["accuracy"])
    assert ds.attrs["config_hash"] == config_hash(CONFIG)
    assert json.loads(ds.attrs["config"]) == CONFIG
    assert ds.attrs["schema_version"] == SCHEMA_VERSION
    for key in ("package_version", "git_commit", "paper", "tier", "seed", "device"):
        assert key in ds.attrs
    assert not list(path.parent.glob("*.tmp*"))


def test_missing_file_is_none(tmp_path):
    assert Store(tmp_path).load("quick", "ddmlp", "nothing", CONFIG) is None


def test_config_hash_ignores_key_order():
    assert config_hash({"a": 1, "b": 2}) == config_hash({"b": 2, "a": 1})
    assert config_hash({"a": 1}) != config_hash({"a": 2})


def _flip_inside_variable(path):
    """Change one byte inside the stored values of `accuracy` (its raw bytes, found in the file)."""
    data = bytearray(path.read_bytes())
    values = _ds()["accuracy"].values
    start = max(data.find(values.astype(order).tobytes()) for order in ("<f8", ">f8"))
    assert start > 0, "the variable's bytes are not stored raw in the file"
    data[start + 8 * 3 + 2] ^= 0xFF  # inside the fourth value
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("damage", ["truncated", "flipped", "foreign", "other_config", "other_schema"])
def test_unusable_file_is_detected_and_moved_aside(tmp_path, damage):
    store = Store(tmp_path)
    path = store.write(_ds(), "quick", "ddmlp", "mlp3-s0", CONFIG, {})
    if damage == "truncated":
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    elif damage == "flipped":  # opens, attrs intact: only the checksum tells
        _flip_inside_variable(path)
    elif damage == "foreign":
        _ds().to_netcdf(path, engine="netcdf4")
    elif damage == "other_schema":
        with xr.open_dataset(path, engine="netcdf4") as opened:
            ds = opened.load()
        ds.attrs["schema_version"] = SCHEMA_VERSION + 1
        ds.to_netcdf(path, engine="netcdf4")
    config = {**CONFIG, "lr": 2e-3} if damage == "other_config" else CONFIG
    warnings = []
    assert store.load("quick", "ddmlp", "mlp3-s0", config, warn=warnings.append) is None
    assert len(warnings) == 1 and "mlp3-s0.nc" in warnings[0]
    assert not path.exists() and path.with_name("mlp3-s0.nc.rejected").exists()


def test_failed_write_leaves_no_partial_file(tmp_path, monkeypatch):
    store = Store(tmp_path)
    store.write(_ds(), "quick", "ddmlp", "mlp3-s0", CONFIG, {})

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(xr.Dataset, "to_netcdf", boom)
    with pytest.raises(OSError):
        store.write(_ds() * 2, "quick", "ddmlp", "mlp3-s0", CONFIG, {})
    files = sorted(p.name for p in (tmp_path / "quick" / "ddmlp").iterdir())
    assert files == ["mlp3-s0.nc"]  # the old file, intact, and no temporary left
    assert store.load("quick", "ddmlp", "mlp3-s0", CONFIG) is not None


def test_combine_runs_of_different_depth(tmp_path):
    store = Store(tmp_path)
    for name, layers in (("a", 3), ("b", 2)):
        ds = xr.Dataset({"cs": (("epoch", "layer"), np.ones((2, layers)))}, coords={"epoch": [0.0, 1.0], "layer": np.arange(1, layers + 1)})
        store.write(ds, "quick", "ddmlp", name, {"n": name}, {})
    combined = store.combine("quick", "ddmlp", ["a", "b"])
    assert combined["cs"].dims == ("run", "epoch", "layer")
    assert np.isnan(combined["cs"].sel(run="b", layer=3)).all()


def test_combine_carries_each_runs_status(tmp_path):
    """A diverged run stays visible after combining, so a claim can refuse to judge it."""
    store = Store(tmp_path)
    store.write(_ds(), "quick", "ddmlp", "a", {"n": "a"}, {"status": "complete"})
    store.write(_ds(), "quick", "ddmlp", "b", {"n": "b"}, {"status": "diverged"})
    combined = store.combine("quick", "ddmlp", ["a", "b"])
    assert list(combined.status.values) == ["complete", "diverged"]


def _noise_run(rates):
    """Replicas that differ by noise rate, in another order per run (as two widths' runs may stack them)."""
    return xr.Dataset({"accuracy": (("epoch", "replica"), np.array([rates, rates]) * 0.5)},
                      coords={"epoch": [0.0, 1.0], "replica": np.arange(len(rates)), "noise_rate": ("replica", rates),
                              "init_seed": ("replica", [0] * len(rates))})


def test_combine_keeps_each_runs_replica_settings_and_config(tmp_path):
    """Replica 1 is 100% noise in one run and 80% in the other: the settings stay per run, with the config."""
    store = Store(tmp_path)
    store.write(_noise_run([0.8, 1.0]), "quick", "modnoise", "a", {"n": "a"}, {})
    store.write(_noise_run([1.0, 0.8]), "quick", "modnoise", "b", {"n": "b"}, {})
    combined = store.combine("quick", "modnoise", ["a", "b"])
    assert combined.noise_rate.dims == ("run", "replica")
    picked = combined.accuracy.where(combined.noise_rate == 0.8).max("replica")
    assert (picked == 0.4).all()
    assert [json.loads(c) for c in combined.config.values] == [{"n": "a"}, {"n": "b"}]


def test_open_results_is_a_tree_of_runs_with_replicas_labelled_by_settings(tmp_path):
    import reproduce

    store = Store(tmp_path)
    store.write(_noise_run([0.8, 1.0]), "quick", "modnoise", "a", {"n": "a"}, {})
    store.write(_noise_run([1.0, 0.8]), "quick", "modnoise", "b", {"n": "b"}, {})
    tree = reproduce.open_results(tmp_path, "quick")
    assert isinstance(tree, xr.DataTree) and set(tree.children) == {"modnoise"}
    a, b = tree["modnoise/a"].to_dataset(), tree["modnoise/b"].to_dataset()
    picked = dict(noise_rate=0.8, init_seed=0)  # replicas are indexed by their settings, not by position
    assert float(a.accuracy.sel(**picked)[0]) == float(b.accuracy.sel(**picked)[0]) == 0.4
    assert json.loads(a.attrs["config"]) == {"n": "a"}
    assert reproduce.open_results(tmp_path, "quick", "modnoise")["modnoise"].children.keys() == {"a", "b"}


def test_open_results_selects_replicas_by_setting_and_noise_rate(tmp_path):
    """modnoise stacks a flip and a tag setting at one noise rate: `.sel(setting=..., noise_rate=...)` picks
    the flip seeds (the bare position index gave xarray's 'more than one index' error)."""
    import reproduce

    ds = xr.Dataset({"accuracy": (("replica",), [0.1, 0.2, 0.3, 0.4])},
                    coords={"replica": np.arange(4), "setting": ("replica", ["flip", "flip", "tag", "tag"]),
                            "noise_rate": ("replica", [0.8] * 4), "init_seed": ("replica", [0, 1, 0, 1])})
    Store(tmp_path).write(ds, "quick", "modnoise", "add", {"n": "add"}, {})
    run = reproduce.open_results(tmp_path, "quick", "modnoise")["modnoise/add"].to_dataset()
    flip = run.accuracy.sel(setting="flip", noise_rate=0.8)
    assert list(flip.values) == [0.1, 0.2] and list(flip.init_seed.values) == [0, 1]


@pytest.mark.parametrize("damage", ["truncated", "foreign"])
def test_open_results_refuses_a_damaged_or_foreign_file_with_the_command_lines_line(tmp_path, damage):
    """A truncated file, or a ddmlp file renamed into modnoise, is one UserError line naming the file and
    the command that remakes it, as `report` says it; nothing is moved or served."""
    import reproduce
    from reproduce.errors import UserError

    store = Store(tmp_path)
    if damage == "truncated":
        path = store.write(_noise_run([0.8]), "quick", "modnoise", "a", {"n": "a"}, {})
        path.write_bytes(path.read_bytes()[:200])
    else:
        made = store.write(_noise_run([0.8]), "quick", "ddmlp", "mlp3-s0", {"n": "a"}, {})
        path = store.path("quick", "modnoise", "add-m513-s0")
        path.parent.mkdir(parents=True)
        made.rename(path)
    with pytest.raises(UserError) as refused:
        reproduce.open_results(tmp_path, "quick", "modnoise")
    message = str(refused.value)
    assert "\n" not in message and message.startswith(f"{path} cannot be used: ")
    assert ("unreadable" if damage == "truncated" else "made for ddmlp/quick, not modnoise/quick") in message
    assert f"remake it with `python -m reproduce --tier quick --paper modnoise --run {path.stem}" in message
    assert path.exists()
