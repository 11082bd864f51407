"""Snapshot and restore over the whole nominal mission, in the NATS-free loop.

At the first step of every phase of every vehicle, each core is snapshotted,
the snapshot goes through orjson (what a real one goes through) into a fresh
core of the same class, and the fresh core's snapshot must be the same bytes.
At a few of those steps (at least one per vehicle) the whole loop is forked:
every core restored into a fresh one, the loop's own state copied, and the
fork flown alongside the original for FORK_STEPS steps; both must publish the
same events and end in the same state, byte for byte.

The fresh cores are built with another seed: whatever a core draws from its
seed must come back from the snapshot.
"""

from __future__ import annotations

import contextlib
import copy
import importlib
from dataclasses import dataclass, field

import orjson
import pytest

from services.ground.plan import load_plan
from services.ground.vehicle import GroundCore
from services.kernel.config import VEHICLES
from services.kernel.vehicle import VehicleCore
from services.local.simloop import SimLoop

pytestmark = pytest.mark.slow

SEED = 6
FRESH_SEED = 7  # the fresh cores' own seed, which the snapshot must override
#: Steps each fork flies alongside the original.
FORK_STEPS = 200
#: (vehicle, phase): the loop is forked at the first step of each.
FORK_AT = (
    ("relay", "relay_ops"),  # its only phase: from the first step
    ("orbiter", "lunar_orbit_insertion"),  # the finite LOI burn under way
    ("lander", "powered_descent"),  # on-board guidance, 1 s steps
    ("ascender", "phasing"),  # phasing burns planned against the orbiter
    ("orbiter", "rendezvous"),  # closing legs, then the terminal approach
    ("reentry", "entry"),  # skip entry, bank guidance
    ("ground", "surface_operations"),  # plan items waiting on events
)
Place = tuple[str, str]  # (vehicle, phase)


def _snap(core: VehicleCore) -> bytes:
    return orjson.dumps(core.snapshot())


def _fresh(core: VehicleCore) -> VehicleCore:
    if isinstance(core, GroundCore):
        return GroundCore(FRESH_SEED, core.plan)
    return type(core)(FRESH_SEED)


def _restored(core: VehicleCore) -> VehicleCore:
    twin = _fresh(core)
    twin.restore(orjson.loads(_snap(core)))
    return twin


def _participants(loop: SimLoop) -> dict[str, VehicleCore]:
    return {**loop.cores, "ground": loop.ground}


@dataclass
class LoopEnd:
    """Where a loop stands after the compared steps, as bytes."""

    step: int
    t_s: float
    events: bytes  # the events published since the fork
    snapshots: dict[str, bytes]

    @classmethod
    def of(cls, loop: SimLoop, first_event: int) -> LoopEnd:
        events = [(e.src, e.seq, e.t, e.step, e.body) for e in loop.events[first_event:]]
        return cls(loop.step, loop.t_s, orjson.dumps(events, option=orjson.OPT_SERIALIZE_NUMPY),
                   {name: _snap(core) for name, core in _participants(loop).items()})


class _ForkDone(Exception):
    """Ends a fork's run after its last compared step."""


def _fork(loop: SimLoop) -> SimLoop:
    """The loop with every core restored into a fresh one; the loop's own state
    between steps (sequence numbers, messages held for the next step, the next
    step size) copied as it is."""
    cores = {name: _restored(core) for name, core in loop.cores.items()}
    ground = _restored(loop.ground)
    assert isinstance(ground, GroundCore)
    twin = SimLoop(ground, cores)
    for key, value in vars(loop).items():
        if key not in ("ground", "cores", "inbound", "events"):
            setattr(twin, key, copy.deepcopy(value))
    twin.events = []
    return twin


def _fly_fork(loop: SimLoop) -> LoopEnd:
    fork = _fork(loop)
    last = fork.step + FORK_STEPS

    def stop(sim: SimLoop) -> None:
        if sim.step >= last:
            raise _ForkDone

    with contextlib.suppress(_ForkDone):
        fork.run(on_step=stop)
    return LoopEnd.of(fork, 0)


@dataclass
class Flown:
    """What the nominal mission showed, gathered in one run."""

    phase_starts: list[tuple[int, str, str]] = field(default_factory=list)
    round_trips: int = 0
    #: (step, core): the snapshot and the restored core's, where they differ
    mismatches: dict[tuple[int, str], tuple[bytes, bytes]] = field(default_factory=dict)
    forks: dict[Place, LoopEnd] = field(default_factory=dict)
    originals: dict[Place, LoopEnd] = field(default_factory=dict)


class Watcher:
    """The on_step hook: round trips at phase starts, forks, their originals."""

    def __init__(self) -> None:
        self.flown = Flown()
        self.phases: dict[str, str] = {}
        self.due: dict[int, list[tuple[Place, int]]] = {}  # step -> (place, first event)

    def __call__(self, loop: SimLoop) -> None:
        new = self._new_phases(loop)
        if new:
            self._round_trip(loop)
        for place in new:
            if place in FORK_AT and place not in self.flown.forks:
                self.flown.forks[place] = _fly_fork(loop)
                self.due.setdefault(loop.step + FORK_STEPS, []).append(
                    (place, len(loop.events)))
        for place, first_event in self.due.pop(loop.step, []):
            self.flown.originals[place] = LoopEnd.of(loop, first_event)

    def _new_phases(self, loop: SimLoop) -> list[Place]:
        new = []
        for name, core in _participants(loop).items():
            if self.phases.get(name) != core.phase:
                self.phases[name] = core.phase
                self.flown.phase_starts.append((loop.step, name, core.phase))
                new.append((name, core.phase))
        return new

    def _round_trip(self, loop: SimLoop) -> None:
        for name, core in _participants(loop).items():
            before = _snap(core)
            after = _snap(_restored(core))
            self.flown.round_trips += 1
            if after != before:
                self.flown.mismatches[(loop.step, name)] = (before, after)


@pytest.fixture(scope="module")
def flown() -> Flown:
    cores: dict[str, VehicleCore] = {}
    for name in VEHICLES:
        module = importlib.import_module(f"services.{name}.vehicle")
        cores[name] = getattr(module, name.capitalize() + "Core")(SEED)
    loop = SimLoop(GroundCore(SEED, load_plan(None)), cores)
    watcher = Watcher()
    loop.run(on_step=watcher)
    assert loop.ground.finished
    return watcher.flown


def test_every_vehicle_is_checked_at_every_phase_it_enters(flown: Flown) -> None:
    seen = {(name, phase) for _, name, phase in flown.phase_starts}
    assert {name for name, _ in seen} == {*VEHICLES, "ground"}
    assert set(FORK_AT) <= seen
    # every participant, each step a phase began
    steps = {step for step, _, _ in flown.phase_starts}
    assert flown.round_trips == len(steps) * (len(VEHICLES) + 1)


def test_a_restored_core_snapshots_to_the_same_bytes(flown: Flown) -> None:
    if flown.mismatches:
        (step, name), (before, after) = next(iter(flown.mismatches.items()))
        pytest.fail(f"{len(flown.mismatches)} round trips differ; the first: {name} at step "
                    f"{step}, in {_keys_differing(before, after)}")


@pytest.mark.parametrize("place", FORK_AT, ids=[f"{v}-{p}" for v, p in FORK_AT])
def test_a_restored_mission_flies_on_exactly_as_the_original(flown: Flown, place: Place) -> None:
    fork, original = flown.forks[place], flown.originals[place]
    assert (fork.step, fork.t_s) == (original.step, original.t_s)
    if fork.events != original.events:
        pytest.fail(f"events differ from {_first_event_differing(fork.events, original.events)}")
    for name, snap in original.snapshots.items():
        if fork.snapshots[name] != snap:
            pytest.fail(f"{name} differs after {FORK_STEPS} steps, in "
                        f"{_keys_differing(fork.snapshots[name], snap)}")


def _keys_differing(a: bytes, b: bytes) -> list[str]:
    x, y = orjson.loads(a), orjson.loads(b)
    return sorted(k for k in x.keys() | y.keys() if x.get(k) != y.get(k))


def _first_event_differing(a: bytes, b: bytes) -> str:
    x, y = orjson.loads(a), orjson.loads(b)
    for mine, theirs in zip(x, y, strict=False):
        if mine != theirs:
            return f"{theirs} (fork: {mine})"
    return f"the end of the shorter list ({len(x)} in the fork, {len(y)} in the original)"
