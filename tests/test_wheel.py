"""The wheel carries what a report needs: the package, its claim tests (package `claims`) and the claim
catalogue (data/claims/*.json as reproduce/catalogue/), and an install of it finds them from any folder."""

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """Built offline from a copy of the tracked files (the checkout's build/ folder is left alone)."""
    tmp = tmp_path_factory.mktemp("wheel")
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, capture_output=True, text=True)
    if files.returncode != 0:
        pytest.skip("not a git checkout: the wheel is built from its tracked files")
    source = tmp / "source"
    for name in files.stdout.splitlines():
        if (ROOT / name).is_file():
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, source / name)
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                            "-w", str(tmp / "dist"), str(source)], capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, built.stderr
    return next((tmp / "dist").glob("reproduce-*.whl"))


def test_wheel_holds_the_claim_tests_the_catalogue_and_the_measured_expectations(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    tracked = {str(p.relative_to(ROOT)) for p in (ROOT / "claims").glob("*.py")}
    assert tracked and tracked <= names
    catalogue = {f"reproduce/catalogue/{p.name}" for p in (ROOT / "data" / "claims").glob("*.json")}
    assert len(catalogue) == 4 and catalogue <= names
    expected = {f"reproduce/expected/{p.name}" for p in (ROOT / "data" / "expected").glob("*.json")}
    assert expected and expected <= names
    modules = {str(p.relative_to(ROOT)) for p in (ROOT / "reproduce").rglob("*.py")}
    assert modules <= names, sorted(modules - names)  # every subpackage listed in pyproject.toml


def test_installed_wheel_judges_from_another_folder(wheel, tmp_path):
    site = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(site), str(wheel)],
                   check=True, timeout=300)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {**os.environ, "PYTHONPATH": str(site)}
    code = ("import reproduce, reproduce.judge as j; "
            "print(reproduce.__file__); print(j.CATALOGUE); print(len(j.declared())); print(len(j.measured('quick')))")
    out = subprocess.run([sys.executable, "-c", code], cwd=elsewhere, env=env, capture_output=True, text=True, timeout=120)
    where, catalogue, count, measured = out.stdout.split()
    assert where.startswith(str(site)) and catalogue == str(site / "reproduce" / "catalogue")
    assert int(count) > 10 and int(measured) > 0
    collect = (f"import sys, pytest; sys.exit(pytest.main([{str(site / 'claims')!r}, '--collect-only', '-q', '-m', "
               f"'quick', '-p', 'no:cacheprovider', '--rootdir', {str(site)!r}, '-W', 'ignore::pytest.PytestUnknownMarkWarning']))")
    collected = subprocess.run([sys.executable, "-c", collect], cwd=elsewhere, env=env, capture_output=True, text=True,
                               timeout=300)
    assert collected.returncode == 0 and " tests collected" in collected.stdout, collected.stdout[-2000:]
