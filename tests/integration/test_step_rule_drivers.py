"""One step rule, every driver: the in-process loop and the services over NATS
publish the same messages and end in the same state.

The same flight plan and seed are flown twice: by ``SimLoop`` (one thread, no
NATS) and by the six services, each with its own NATS connection and gRPC
server, on a real nats-server (``LocalTwin``). Every mission message (events,
commands, transfers, downlink frames) the services put on the bus is read
back from it and compared with SimLoop's, message by message: subject, source,
sequence number, mission time, step, kind and body. Then every core's final
state is compared. The second plan adds faults and a time-tagged command.
"""

from __future__ import annotations

import asyncio
import importlib
from typing import Any

import nats
import orjson
import pytest

from services.ground.plan import NOMINAL_PLAN, FlightPlan, parse_plan
from services.ground.vehicle import GroundCore
from services.kernel.config import VEHICLES
from services.kernel.envelope import decode
from services.kernel.vehicle import VehicleCore
from services.local.inproc import LocalTwin
from services.local.simloop import SimLoop

pytestmark = pytest.mark.slow

SEED = 6
#: Message kinds of the mission itself. Clock traffic (tick, ack, hello, roll)
#: and truth telemetry are how the NATS driver runs, and SimLoop has none.
MISSION_KINDS = frozenset({"event", "command", "transfer", "downlink"})
#: Wall seconds a mission may take on a loaded 2-core machine before the test
#: gives up (a hang, not a speed limit).
HANG_S = 600.0

Message = tuple[str, str, int, float, int, str, Any]


def _nominal_raw() -> dict[str, Any]:
    raw: dict[str, Any] = orjson.loads(NOMINAL_PLAN.read_bytes())
    return raw


def _through_lunar_orbit() -> FlightPlan:
    """The nominal plan from launch to a day after lunar orbit insertion: the
    cruise corrections, LOI's finite burn, ICUBE-Q, the first orbit adjustment."""
    raw = _nominal_raw()
    raw["end"] = {"at": "2024-05-10T12:00:00Z"}
    return parse_plan(raw, "through-lunar-orbit")


def _with_faults_and_timed_commands() -> FlightPlan:
    """As :func:`_through_lunar_orbit`, with an engine that delivers 5 % less
    thrust through LOI, telemetry dropped for an hour, and an operator's burn
    uploaded early with a time tag."""
    raw = _nominal_raw()
    raw["end"] = {"at": "2024-05-10T12:00:00Z"}
    raw["items"] += [
        {"id": "weak_engine", "at": "2024-05-08T01:30:00Z", "target": "orbiter",
         "fault": {"kind": "thrust_loss", "magnitude": 0.05, "duration_s": 7200.0}},
        {"id": "quiet_relay", "at": "2024-05-05T00:00:00Z", "target": "relay",
         "fault": {"kind": "drop_telemetry", "duration_s": 3600.0}},
        {"id": "raise", "at": "2024-05-08T12:00:00Z", "target": "orbiter",
         "command": {"op": "burn", "delta_v_m_s": {"y": 2.0}, "frame": "RTN",
                     "execute_at_utc": "2024-05-09T06:00:00Z"}},
    ]
    return parse_plan(raw, "faults-and-timed")


def _cores() -> dict[str, VehicleCore]:
    cores: dict[str, VehicleCore] = {}
    for name in VEHICLES:
        module = importlib.import_module(f"services.{name}.vehicle")
        cores[name] = getattr(module, name.capitalize() + "Core")(SEED)
    return cores


def _json(value: Any) -> Any:
    """As the value reads after a trip through the bus."""
    return orjson.loads(orjson.dumps(value, option=orjson.OPT_SERIALIZE_NUMPY))


def _fly_in_process(plan: FlightPlan, mission: str) -> tuple[list[Message], dict[str, Any]]:
    cores = _cores()
    ground = GroundCore(SEED, plan)
    loop = SimLoop(ground, cores, mission=mission, record=True)
    loop.run()
    assert loop.published is not None
    messages = [(subject, e.src, e.seq, e.t, e.step, e.kind, _json(e.body))
                for subject, e in loop.published]
    finals = {name: _json(core.snapshot()) for name, core in {**cores, "ground": ground}.items()}
    return messages, finals


async def _fly_over_nats(plan: FlightPlan, nats_url: str,
                         mission: str) -> tuple[list[Message], dict[str, Any]]:
    seen: list[Message] = []
    nc = await nats.connect(nats_url)

    async def keep(msg: Any) -> None:
        env = decode(msg.data, mission=mission)
        if env.kind in MISSION_KINDS:
            seen.append((msg.subject, env.src, env.seq, env.t, env.step, env.kind, env.body))

    await nc.subscribe(f"twin.{mission}.>", cb=keep, pending_msgs_limit=1_000_000)
    try:
        async with LocalTwin(nats_url, mission, plan, seed=SEED) as twin:
            await twin.wait_finished(HANG_S)
            await nc.flush()
            await asyncio.sleep(0.5)  # the last step's messages reach this subscriber too
            finals = {name: _json(rt.core.snapshot()) for name, rt in twin.all.items()}
    finally:
        await nc.close()
    # NATS keeps each publisher's order but interleaves publishers freely, so
    # the comparison is per source, in sequence order.
    return seen, finals


def _by_source(messages: list[Message]) -> dict[str, list[Message]]:
    out: dict[str, list[Message]] = {}
    for m in messages:
        out.setdefault(m[1], []).append(m)
    return out


def _assert_same(sim: tuple[list[Message], dict[str, Any]],
                 bus: tuple[list[Message], dict[str, Any]]) -> None:
    sim_by, bus_by = _by_source(sim[0]), _by_source(bus[0])
    assert sorted(sim_by) == sorted(bus_by)
    for source, want in sim_by.items():
        got = bus_by[source]
        for i, (a, b) in enumerate(zip(want, got, strict=False)):
            assert a == b, f"{source}'s message #{i + 1} differs:\n in-process {a}\n over NATS {b}"
        assert len(got) == len(want), (f"{source}: {len(want)} messages in-process, "
                                       f"{len(got)} over NATS")
    for name, state in sim[1].items():
        assert bus[1][name] == state, f"{name}'s final state differs between the drivers"


async def test_in_process_loop_and_services_over_nats_fly_the_same_mission(
        nats_url: str, mission_id: str) -> None:
    plan = _through_lunar_orbit()
    sim = _fly_in_process(plan, mission_id)
    events = [m[6]["name"] for m in sim[0] if m[5] == "event"]
    # The stretch flown is the one meant: LOI's finite burn and an orbit adjustment.
    assert {"lunar_orbit_insertion", "orbit_adjustment", "mission_end"} <= set(events)
    _assert_same(sim, await _fly_over_nats(plan, nats_url, mission_id))


async def test_faults_and_time_tagged_commands_fly_the_same_in_every_driver(
        nats_url: str, mission_id: str) -> None:
    plan = _with_faults_and_timed_commands()
    sim = _fly_in_process(plan, mission_id)
    events = {(m[6]["name"], m[6].get("fault_id") or m[6].get("burn", "")) for m in sim[0]
              if m[5] == "event"}
    # Every fault struck and ended on schedule, and the tagged burn ran.
    assert {("fault_injected", "weak_engine"), ("fault_cleared", "weak_engine"),
            ("fault_injected", "quiet_relay"), ("fault_cleared", "quiet_relay")} <= events
    assert any(name == "commanded_burn" for name, _ in events)
    _assert_same(sim, await _fly_over_nats(plan, nats_url, mission_id))
