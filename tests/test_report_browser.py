"""The report in a real browser: ci/screenshot.sh renders report.html in headless Chromium (Debian's
`chromium`); skipped, saying how to get it, where there is none. Checks that the page renders (a PNG
of the window's size with text and colour on it); docs in README (How to read the report)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.skipif(shutil.which("chromium") is None and shutil.which("chromium-browser") is None,
                    reason="no chromium: apt-get install -y chromium (then bash ci/screenshot.sh REPORT.html)")
def test_the_report_renders_in_chromium(tmp_path):
    from test_report_view import entry

    from reproduce.report import stub_entry, write_report

    entries = [entry("ddmlp.noisy_learned_later"), {**entry("masc.beats_model", "not_reproduced"),
                                                    "expected": "not_reproduced", "why": "too few epochs"},
               stub_entry("smooth.asymmetric_untouched_only", "quick")]
    write_report(tmp_path / "quick", "quick", entries, {}, header={"command": "python -m reproduce --tier quick"})
    shot = tmp_path / "report.png"
    done = subprocess.run(["bash", str(ROOT / "ci" / "screenshot.sh"), str(tmp_path / "quick" / "report.html"),
                           str(shot), "1400,2000"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    image = np.asarray(Image.open(shot).convert("RGB"), dtype=float)
    assert image.shape[:2] == (2000, 1400)
    assert image.std() > 10  # not a blank page: text, tables and figures
    verdict_colours = {(0xd4, 0xf4, 0xd4), (0xfb, 0xee, 0xc8)}  # the reproduced and the expected-failure rows
    found = {tuple(int(v) for v in px) for px in image.reshape(-1, 3)[::7]}
    assert verdict_colours <= found
