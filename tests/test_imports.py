"""The package's import structure: no module imports one that imports it, directly or through others
(at module level or lazily), only command lines import the run's command line, and the product
never imports the test helpers."""

from __future__ import annotations

import ast
import graphlib
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "salad_ray"
COMMAND_LINES = {"salad_ray.experiment"}  # `python -m salad_ray.experiment` is a run with two settings


def modules() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def imported(path: Path, known: dict[str, Path]) -> set[str]:
    """The package's modules a file imports anywhere in it (absolute imports: the package uses no others)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("salad_ray"):
            assert node.level == 0, f"{path}: relative import"
            for alias in node.names:
                name = f"{node.module}.{alias.name}"
                found.add(name if name in known else node.module)
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("salad_ray")}
    return found & known.keys()


def cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle of ``graph`` (module -> the modules it imports), or None."""
    try:
        tuple(graphlib.TopologicalSorter(graph).static_order())
    except graphlib.CycleError as e:
        return e.args[1]
    return None


def test_the_cycle_check_finds_a_cycle_through_three_modules():
    assert cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) is not None
    assert cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None


def test_no_import_cycles_and_only_command_lines_import_the_run():
    known = modules()
    graph = {name: imported(path, known) - {name} for name, path in known.items()}
    assert len(graph) > 50 and "salad_ray.rundir" in graph["salad_ray.driver"]  # the scan sees imports
    assert cycle(graph) is None
    assert {name for name, deps in graph.items() if "salad_ray.run" in deps} <= COMMAND_LINES


def test_the_product_never_imports_the_test_helpers():
    known = modules()
    product = {
        name: imported(path, known)
        for name, path in known.items()
        if not name.startswith("salad_ray.testing")
    }
    assert "salad_ray.testing.processes" in known  # the scan sees the helpers
    assert {
        name for name, deps in product.items() if any(d.startswith("salad_ray.testing") for d in deps)
    } == set()


def test_the_run_module_is_a_command_line_and_the_driver_stays_small():
    """run.py parses the command line and hands over; the driver declares phases (issue 15's sizes)."""
    run = ast.parse((PACKAGE / "run.py").read_text())
    defined = {n.name for n in run.body if isinstance(n, ast.FunctionDef | ast.ClassDef)}
    assert defined == {"parser", "main", "check_only", "show_plan"}  # the CLI and its three modes
    assert len((PACKAGE / "driver.py").read_text().splitlines()) < 300
