"""The package layers import only downward, and no modules import each other.

Layers, bottom up (README, Layout):

    services.dynamics      pure flight dynamics: imports nothing else of ours
    services.kernel        what every service shares: the kernel and dynamics
    services.<service>     one vehicle, ground or the CCSDS gateway: itself, the kernel,
                           dynamics
    services.local         the whole twin in one process: any service
    services.campaign      Monte Carlo campaigns: the in-process twin, cases on Dask
    services.cli           the `twin` command: anything

Every import counts, wherever it is written: at the top, inside a function
(a lazy import hides a cycle, it does not remove it) or under TYPE_CHECKING.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest

pytestmark = pytest.mark.static  # reads the sources; mutation runs leave it out

ROOT = Path(__file__).resolve().parents[2]
SERVICES = ("ground", "orbiter", "lander", "ascender", "reentry", "relay", "gateway")
#: Generated code imports itself relatively and nothing of ours.
SKIP = ("services.kernel.twin_pb",)
#: The modelled comms, one concern a module, and which of the others each may
#: import: the vehicle's side (recorder, then the radio that runs it each
#: step) and ground's (archive, then the telecommands routed by it) never
#: import each other; the metrics read the recorder's figures.
COMMS_IMPORTS = {
    "services.kernel.recorder": set(),
    "services.kernel.radio": {"services.kernel.recorder"},
    "services.kernel.archive": set(),
    "services.kernel.telecommand": {"services.kernel.archive"},
    "services.kernel.linkmetrics": {"services.kernel.recorder"},
}
#: What runs the comms: the comms import none of it (they stay pure, and the
#: vehicle core and the runtime import them).
COMMS_RUNNERS = {"services.kernel.vehicle", "services.kernel.runtime", "services.kernel.bus",
                 "services.kernel.clock"}


def _layer(module: str) -> tuple[int, str]:
    """(height, the package that owns the module)."""
    parts = module.split(".")
    top = parts[1] if len(parts) > 1 else ""
    if top == "dynamics":
        return 0, "services.dynamics"
    if top == "kernel":
        return 1, "services.kernel"
    if top in SERVICES:
        return 2, f"services.{top}"
    if top == "local":
        return 3, "services.local"
    if top == "campaign":
        return 4, "services.campaign"
    if top == "cli":
        return 5, "services.cli"
    # services/__init__.py holds no code: importing it only finds the
    # installation (the CLI's supervisor does, to run its own copy).
    return -1, "services"


def _modules() -> dict[str, Path]:
    found = {}
    for path in sorted((ROOT / "services").rglob("*.py")):
        rel = path.relative_to(ROOT).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts.pop()
        name = ".".join(parts)
        if not name.startswith(SKIP):
            found[name] = path
    return found


def _imports(path: Path, known: Mapping[str, Path]) -> Iterator[str]:
    """The modules of ours that a file imports, anywhere in it."""
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # `from a.b import c`: the module a.b.c if there is one, else a.b
            names = [f"{node.module}.{alias.name}" if f"{node.module}.{alias.name}" in known
                     else node.module for alias in node.names]
        else:
            continue
        yield from (n for n in names if n.startswith("services"))


def import_graph() -> dict[str, set[str]]:
    known = _modules()
    return {name: {m for m in _imports(path, known) if m in known and m != name}
            for name, path in known.items()}


def layering_violations(graph: Mapping[str, set[str]]) -> list[str]:
    """Imports that go up a layer, or sideways between two services."""
    bad = []
    for module, imported in sorted(graph.items()):
        height, owner = _layer(module)
        for target in sorted(imported):
            t_height, t_owner = _layer(target)
            if t_owner != owner and (t_height > height or t_height == height):
                bad.append(f"{module} imports {target}")
    return bad


def cycles(graph: Mapping[str, set[str]]) -> list[list[str]]:
    """Strongly connected groups of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_every_import_goes_down_a_layer_or_stays_in_its_package() -> None:
    graph = import_graph()
    assert len(graph) > 60, "the walk found too few modules to mean anything"
    assert layering_violations(graph) == []


def test_no_two_modules_import_each_other_even_lazily() -> None:
    assert cycles(import_graph()) == []


def comms_violations(graph: Mapping[str, set[str]]) -> list[str]:
    """Imports between the comms modules outside :data:`COMMS_IMPORTS`, and
    imports of what runs them."""
    bad = []
    for module, allowed in COMMS_IMPORTS.items():
        imported = graph.get(module, set())
        for target in sorted(imported & (set(COMMS_IMPORTS) | COMMS_RUNNERS) - allowed):
            bad.append(f"{module} imports {target}")
    return bad


def test_the_comms_modules_import_one_way() -> None:
    graph = import_graph()
    assert set(COMMS_IMPORTS) <= set(graph), "a comms module was renamed: update COMMS_IMPORTS"
    assert comms_violations(graph) == []


@pytest.mark.parametrize(("graph", "expected"), [
    ({"services.kernel.recorder": {"services.kernel.radio"}},
     ["services.kernel.recorder imports services.kernel.radio"]),
    ({"services.kernel.archive": {"services.kernel.telecommand", "services.kernel.envelope"}},
     ["services.kernel.archive imports services.kernel.telecommand"]),
    ({"services.kernel.radio": {"services.kernel.recorder", "services.kernel.vehicle"}},
     ["services.kernel.radio imports services.kernel.vehicle"]),
    ({"services.kernel.telecommand": {"services.kernel.archive", "services.kernel.outbox"}}, []),
])
def test_the_comms_check_sees_imports_against_the_grain(
        graph: dict[str, set[str]], expected: list[str]) -> None:
    assert comms_violations(graph) == expected


@pytest.mark.parametrize(("graph", "expected"), [
    ({"services.kernel.a": {"services.ground.b"}, "services.ground.b": set()},
     ["services.kernel.a imports services.ground.b"]),
    ({"services.ascender.a": {"services.lander.b"}, "services.lander.b": set()},
     ["services.ascender.a imports services.lander.b"]),
    ({"services.dynamics.a": {"services.kernel.b"}, "services.kernel.b": set()},
     ["services.dynamics.a imports services.kernel.b"]),
    ({"services.cli.a": {"services.local.b"}, "services.local.b": {"services.kernel.c"},
      "services.kernel.c": set()}, []),
])
def test_the_layer_check_sees_upward_and_sideways_imports(
        graph: dict[str, set[str]], expected: list[str]) -> None:
    assert layering_violations(graph) == expected


def test_the_cycle_check_sees_a_loop_through_three_modules() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(graph) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []
