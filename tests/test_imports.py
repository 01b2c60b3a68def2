"""The package's modules form a layered graph: no module imports, at module level or inside a
function, a module that imports it back (directly or through others). A cycle hides which layer
owns a fact (the peak table, the device check, the parser) and breaks as soon as an import moves
to module level."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "reproduce"


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, modules: set[str]) -> set[str]:
    """Package modules imported anywhere in the file (module level and function bodies alike)."""
    found = set()
    package = _module_name(path) if path.name == "__init__.py" else _module_name(path).rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            names = [base] + [f"{base}.{alias.name}" for alias in node.names]
        else:
            continue
        for name in names:
            while name and name not in modules:  # `from reproduce.x import f` imports reproduce.x
                name = name.rpartition(".")[0]
            if name:
                found.add(name)
    found.discard(_module_name(path))
    return found


def import_graph() -> dict[str, set[str]]:
    files = sorted(PACKAGE.rglob("*.py"))
    modules = {_module_name(f) for f in files}
    # a package's own __init__ is not an edge of interest: importing reproduce.x always runs reproduce/__init__
    return {_module_name(f): _imports(f, modules) - {"reproduce"} for f in files}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle as a list of modules (first == last), or None; depth-first search with colours."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_the_cycle_finder_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_cycles_in_the_package():
    graph = import_graph()
    assert {"reproduce.engine", "reproduce.devices", "reproduce.runner"} <= set(graph)
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_the_layers_the_speed_issue_untangled():
    graph = import_graph()
    assert "reproduce.bench" not in graph["reproduce.runner"]  # the peak table lives in devices
    assert "reproduce.cli" not in graph["reproduce.bench"]  # the parser class lives in errors
    assert "reproduce.executors" not in graph["reproduce.runner"]  # executors call the runner
    assert graph["reproduce.devices"] <= {"reproduce.errors"}


def test_the_engine_is_split_by_concern_in_layers():
    """engine.py was split into spec (what to train), step (the step and its CUDA graph), probes,
    state (saved states) and timing (step times): each imports only the layers below it. allocator
    is the lowest: `python -m reproduce` asks it before anything else is imported."""
    graph = import_graph()
    assert graph["reproduce.spec"] == graph["reproduce.allocator"] == set()
    assert graph["reproduce.step"] <= {"reproduce.allocator", "reproduce.devices", "reproduce.spec"}
    assert graph["reproduce.probes"] <= {"reproduce.devices"}
    assert graph["reproduce.state"] <= {"reproduce.errors", "reproduce.faults"}
    assert graph["reproduce.timing"] <= {"reproduce.devices", "reproduce.spec", "reproduce.step"}
    below = {"reproduce.spec", "reproduce.step", "reproduce.probes", "reproduce.state", "reproduce.timing"}
    assert not any("reproduce.engine" in graph[m] for m in below)


def test_omp_wait_policy_is_set_before_torch_and_a_users_setting_wins():
    """The OpenMP runtime reads OMP_WAIT_POLICY once, when torch loads: reproduce/__init__ sets it
    (PASSIVE: waiting threads sleep instead of spinning on a shared CPU) without importing torch."""
    import os
    import subprocess
    import sys

    tree = ast.parse((PACKAGE / "__init__.py").read_text())
    imported = {alias.name for node in ast.walk(tree) if isinstance(node, (ast.Import, ast.ImportFrom))
                for alias in node.names}
    assert imported == {"os"}
    code = "import reproduce.engine, os; print(os.environ['OMP_WAIT_POLICY'])"
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    env["PYTHONPATH"] = str(PACKAGE.parent)
    for given, expected in ((None, "PASSIVE"), ("ACTIVE", "ACTIVE")):
        if given:
            env["OMP_WAIT_POLICY"] = given
        out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
        assert out.stdout.strip() == expected


def test_the_allocator_restart_imports_no_torch():
    """`python -m reproduce` restarts itself under jemalloc before torch is imported (a restart after
    would import torch twice, 2 s here): reproduce.allocator is standard library only."""
    import subprocess
    import sys

    code = "import sys, reproduce.allocator; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=PACKAGE.parent)
    assert out.stdout.strip() == "False", out.stdout + out.stderr


def test_paper_keys_name_their_modules():
    """experiments.PAPERS is written out (so that the command line need not import torch to check a
    name); each key must be its module's PAPER."""
    from reproduce.experiments import PAPERS, experiment

    assert [experiment(p).PAPER for p in PAPERS] == list(PAPERS)
    assert sorted(PAPERS) == sorted(p.stem for p in (PACKAGE / "experiments").glob("*.py")
                                    if p.stem not in ("__init__", "shrink"))
