"""Progress in a log: no carriage-return bars where the stream is not a terminal, one line per run."""

from __future__ import annotations

import io
from types import SimpleNamespace

from reproduce import runner


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def _run_fake_plan(monkeypatch, stream: io.StringIO) -> list[str]:
    """run_locally over two fake runs of 40 steps each, progress reported in epochs of 10 steps."""
    experiment = SimpleNamespace(steps_and_flops=lambda run: (40, 0.0))
    monkeypatch.setattr(runner, "experiment", lambda paper: experiment)

    def compute(store, tier, paper, run, device, *, progress=None, **kwargs) -> bool:
        for _ in range(4):
            progress(10)
        return True

    monkeypatch.setattr(runner, "compute", compute)
    lines: list[str] = []
    todo = [("ddmlp", SimpleNamespace(name="a")), ("ddmlp", SimpleNamespace(name="b"))]
    runner.run_locally(None, "quick", todo, "cpu", log=lines.append, stream=stream, log_every_s=0.0)
    return lines


def test_no_carriage_returns_when_the_stream_is_not_a_terminal(monkeypatch):
    stream = io.StringIO()
    lines = _run_fake_plan(monkeypatch, stream)
    assert "\r" not in stream.getvalue()
    assert any(line.startswith("ddmlp/a: 40/40 steps") and "steps/s" in line for line in lines)
    assert any(line.startswith("ddmlp/b: 40/40 steps") for line in lines)


def test_bars_on_a_terminal(monkeypatch):
    stream = _Terminal()
    lines = _run_fake_plan(monkeypatch, stream)
    assert "\r" in stream.getvalue()  # the tqdm bars, as before
    assert lines == []  # and no log lines beside them


def test_each_run_says_i_of_n_elapsed_and_left_and_completes_after_its_last_progress_line(monkeypatch):
    """'run i of N' with the plan's elapsed time and the estimate of what is left; the run's own
    'complete' line (logged by compute) comes after its last progress line."""
    experiment = SimpleNamespace(steps_and_flops=lambda run: (40, 0.0))
    monkeypatch.setattr(runner, "experiment", lambda paper: experiment)

    def compute(store, tier, paper, run, device, *, progress=None, log=print, **kwargs) -> bool:
        for _ in range(4):
            progress(10)
        log(f"{paper}/{run.name}: complete, 1 s of training -> x.nc")
        return True

    monkeypatch.setattr(runner, "compute", compute)
    lines: list[str] = []
    todo = [("ddmlp", SimpleNamespace(name="a")), ("ddmlp", SimpleNamespace(name="b"))]
    runner.run_locally(None, "quick", todo, "cpu", log=lines.append, stream=io.StringIO(), log_every_s=3600.0,
                       estimates={"ddmlp/a": 30.0, "ddmlp/b": 90.0})
    starts = [line for line in lines if line.startswith("run ")]
    assert starts[0].startswith("run 1 of 2: ddmlp/a; 0 s elapsed, about 2.0 min left")
    assert starts[1].startswith("run 2 of 2: ddmlp/b;") and "left" in starts[1]
    a = [line for line in lines if line.startswith("ddmlp/a")]
    assert a[0].startswith("ddmlp/a: 40/40 steps") and a[1].startswith("ddmlp/a: complete") and len(a) == 2


def test_a_run_another_process_holds_is_neither_finished_nor_left(monkeypatch):
    """--jobs: a run held by another process is passed over (said once) and leaves the time-left
    estimate, which shares the runs still to take out to the jobs; it does not count as finished in
    no time (which made the pace, and so the time left, zero)."""
    experiment = SimpleNamespace(steps_and_flops=lambda run: (40, 0.0))
    monkeypatch.setattr(runner, "experiment", lambda paper: experiment)

    def compute(store, tier, paper, run, device, *, wait=True, progress=None, log=print, **kwargs) -> bool:
        return wait or run.name != "a"  # "a" is held elsewhere until this process waits for it

    monkeypatch.setattr(runner, "compute", compute)
    lines: list[str] = []
    todo = [("ddmlp", SimpleNamespace(name=n)) for n in "abc"]
    runner.run_locally(None, "quick", todo, "cpu", log=lines.append, stream=io.StringIO(), log_every_s=3600.0,
                       estimates={"ddmlp/a": 600.0, "ddmlp/b": 60.0, "ddmlp/c": 60.0}, jobs=2)
    assert "ddmlp/a: another process is computing it; on to the next run" in lines
    starts = [line for line in lines if line.startswith("run ")]
    assert starts[0].endswith("about 10.0 min left")  # a and b side by side, then c: max(600, 60 + 60)
    assert starts[1].endswith("about 60 s left"), starts  # b and c side by side; a is another's
