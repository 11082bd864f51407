"""The event catalogue is what the services publish: no more, no less.

services/kernel/events.py writes down, per publishing package, the names of
the events it publishes (ground and the CLI, which may import no vehicle
package, check `twin clock until <event>` against their union). Here every
``out.event(source, "<name>", t, ...)`` in services/ is read with ``ast`` and
the names found per package must equal the catalogue's, in both directions.

A name that is not a literal where it is published (a burn's planned event,
an entry phase reported by the entry guidance, ...) is listed in
``COMPUTED`` with the names it can take; a new such call site fails until it
is listed, and each listed name must be written in services/ (as a string,
or as what an f-string there makes).
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from services.ground.plan import parse_plan
from services.ground.targets import is_target
from services.kernel.events import KEY_EVENTS, KNOWN_EVENTS, OTHER_EVENTS, PUBLISHED

pytestmark = pytest.mark.static  # reads the sources

ROOT = Path(__file__).resolve().parents[2]
SERVICES = ROOT / "services"

#: (file, function) -> the names published there from a computed value.
COMPUTED: dict[tuple[str, str], frozenset[str]] = {
    # the planned burn's event, set when it was queued
    ("services/orbiter/vehicle.py", "_run_queued"): frozenset(
        {"orbit_adjustment", "tei_burn_1", "tei_burn_2", "avoidance_burn"}),
    # descent guidance events published under their own names
    ("services/lander/vehicle.py", "_descend"): frozenset({"hover_start"}),
    # NILS switched off and on by the surface temperature (surface.py)
    ("services/lander/vehicle.py", "_surface_step"): frozenset(
        {"payload_on", "payload_off", "drill_increment", "scoop_increment"}),
    # the entry guidance's events (services/dynamics/entry.py)
    ("services/reentry/vehicle.py", "advance"): frozenset(
        {"entry_interface", "skip_out", "second_entry", "parachute_attitude",
         "parachute_deploy", "earth_landing"}),
    # the link changes the recorder reports (services/kernel/recorder.py)
    ("services/kernel/radio.py", "run_downlink"): frozenset({"link_acquired", "link_lost"}),
}


@dataclass(frozen=True)
class Site:
    path: str  # relative to the repository
    function: str
    package: str  # kernel, orbiter, ..., ground
    name: str | None  # None: computed


def _files() -> Iterator[tuple[str, ast.Module]]:
    for path in sorted(SERVICES.rglob("*.py")):
        if "twin_pb" not in path.parts:
            yield path.relative_to(ROOT).as_posix(), ast.parse(path.read_text(), str(path))


def _functions(tree: ast.Module) -> Iterator[ast.FunctionDef]:
    yield from (n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef))


def _name_arg(call: ast.Call, index: int) -> ast.expr | None:
    return call.args[index] if len(call.args) > index else None


def _forwarders(tree: ast.Module) -> dict[str, int]:
    """A module's functions that publish an event named by one of their
    parameters: name -> that parameter's position in a call (``self`` left out)."""
    found: dict[str, int] = {}
    for fn in _functions(tree):
        params = [a.arg for a in fn.args.args]
        offset = 1 if params[:1] == ["self"] else 0
        for call in _event_calls(fn):
            arg = _name_arg(call, 1)
            if isinstance(arg, ast.Name) and arg.id in params:
                found[fn.name] = params.index(arg.id) - offset
    # one nobody here calls publishes a name this scan cannot see: computed
    called = {_callee(n) for n in ast.walk(tree) if isinstance(n, ast.Call)}
    return {name: index for name, index in found.items() if name in called}


def _callee(call: ast.Call) -> str:
    f = call.func
    return f.attr if isinstance(f, ast.Attribute) else f.id if isinstance(f, ast.Name) else ""


def _event_calls(fn: ast.FunctionDef) -> Iterator[ast.Call]:
    """``<x>.event(source, name, t, ...)``: three positional arguments, as the
    outbox takes them (a reader's ``data.event(name)`` is not a publication)."""
    for node in ast.walk(fn):
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                and node.func.attr == "event" and len(node.args) >= 3):
            yield node


def _forwarded_calls(fn: ast.FunctionDef, forwarders: dict[str, int]
                     ) -> Iterator[tuple[ast.Call, int]]:
    for node in ast.walk(fn):
        if isinstance(node, ast.Call) and _callee(node) in forwarders:
            yield node, forwarders[_callee(node)]


def _package(path: str) -> str:
    return path.split("/")[1]


def publication_sites(files: Iterable[tuple[str, ast.Module]] | None = None) -> list[Site]:
    """Every place in services/ (or ``files``) that publishes an event, with its
    name if literal."""
    sites = []
    for path, tree in _files() if files is None else files:
        forwarders = _forwarders(tree)
        for fn in _functions(tree):
            calls = [(c, 1) for c in _event_calls(fn)] + list(_forwarded_calls(fn, forwarders))
            for call, index in calls:
                arg = _name_arg(call, index)
                if fn.name in forwarders and isinstance(arg, ast.Name):
                    continue  # the forwarder itself: its callers name the event
                name = arg.value if isinstance(arg, ast.Constant) and isinstance(
                    arg.value, str) else None
                sites.append(Site(path, fn.name, _package(path), name))
    return sites


def published() -> dict[str, set[str]]:
    """package -> the event names its code publishes."""
    found: dict[str, set[str]] = {}
    for site in publication_sites():
        names = {site.name} if site.name else COMPUTED.get((site.path, site.function), set())
        found.setdefault(site.package, set()).update(names)
    return found


def _written_in_services() -> tuple[set[str], list[re.Pattern[str]]]:
    """Every string constant in services/, and a pattern for every f-string."""
    strings: set[str] = set()
    patterns = []
    for _, tree in _files():
        for node in ast.walk(tree):
            if isinstance(node, ast.JoinedStr):
                parts = [re.escape(str(v.value)) if isinstance(v, ast.Constant) else "[a-z0-9_]+"
                         for v in node.values]
                patterns.append(re.compile("".join(parts)))
            elif isinstance(node, ast.Constant) and isinstance(node.value, str):
                strings.add(node.value)
    return strings, patterns


def test_the_scan_finds_the_publications() -> None:
    sites = publication_sites()
    assert len(sites) > 80, "the scan found too few event publications to mean anything"
    assert {s.package for s in sites} == set(PUBLISHED)


def test_every_computed_event_name_is_listed() -> None:
    computed = {(s.path, s.function) for s in publication_sites() if s.name is None}
    assert computed == set(COMPUTED), (
        "an event published from a computed name: list what it can be in COMPUTED")


def test_every_listed_computed_name_is_written_in_services() -> None:
    strings, patterns = _written_in_services()
    stale = sorted(name for names in COMPUTED.values() for name in names
                   if name not in strings and not any(p.fullmatch(name) for p in patterns))
    assert stale == []


@pytest.mark.parametrize("package", sorted(PUBLISHED))
def test_each_package_publishes_exactly_its_catalogue(package: str) -> None:
    found = published().get(package, set())
    assert sorted(found - PUBLISHED[package]) == [], "published but not in the catalogue"
    assert sorted(PUBLISHED[package] - found) == [], "in the catalogue but never published"


def test_known_events_are_the_union_and_key_events_are_known() -> None:
    assert set().union(*published().values()) == KNOWN_EVENTS
    assert set(KEY_EVENTS) <= KNOWN_EVENTS
    assert set(OTHER_EVENTS) == KNOWN_EVENTS - set(KEY_EVENTS)
    assert len(set(KEY_EVENTS + OTHER_EVENTS)) == len(KEY_EVENTS + OTHER_EVENTS)


def test_ground_runs_until_any_published_event() -> None:
    """`twin clock until` refused ``command_rejected`` and a dozen others when
    the catalogue was written by hand (tests/integration/test_until_catalogue_events.py
    runs until one through the CLI)."""
    empty = parse_plan({"name": "none", "end": {"at": "2024-05-03T10:27:29Z"}, "items": []})
    refused = sorted(n for names in published().values() for n in names
                     if not is_target(empty, n))
    assert refused == []
    assert not is_target(empty, "not_an_event")


_NEW_MODULE = """
def plain(out, t):
    out.event("relay", "brand_new", t)

def through(out, t, n):
    out.event("relay", n + "_event", t)

class Core:
    def _note(self, out, name, t):
        out.event(self.name, name, t)

    def step(self, out, t):
        self._note(out, "noted", t)

def unused_forwarder(out, what, t):
    out.event("relay", what, t)
"""


def test_the_scan_sees_literal_forwarded_and_computed_names() -> None:
    tree = ast.parse(_NEW_MODULE)
    sites = publication_sites([("services/relay/extra.py", tree)])
    assert sorted((s.function, s.name or "") for s in sites) == [
        ("plain", "brand_new"), ("step", "noted"), ("through", ""), ("unused_forwarder", "")]
    assert {s.package for s in sites} == {"relay"}
