"""Coordinated snapshots and rollback, in one process on a real nats-server.

A service that loses its state (its NATS connection and gRPC server torn down
without a goodbye, a fresh process-like runtime started in its place) says
hello again; ground rolls every service back to the last commit and the
mission runs on. The mission log read back from JetStream and every core's
final state must equal those of the same mission flown without the crash.
Real processes killed with SIGKILL are tests/integration/test_chaos.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
from dataclasses import replace
from typing import Any

import nats
import orjson
import pytest
from prometheus_client import CollectorRegistry

from services.ground.service import GroundRuntime
from services.kernel.config import VEHICLES
from services.kernel.envelope import decode
from services.kernel.runtime import ServiceRuntime
from services.kernel.snapstore import SnapStore
from services.local.inproc import LocalTwin
from tests.integration.twin_helpers import nominal_until

#: A commit every this many steps: several commits over the stretch flown.
EVERY_STEPS = 40
#: Wall seconds a mission may take on a loaded machine (a hang, not a limit).
HANG_S = 300.0
PLAN_END = "2024-05-08T12:00:00Z"  # launch, cruise, LOI's finite burn


async def _mission_log(nats_url: str, mission: str) -> list[tuple[Any, ...]]:
    """Every event in the mission-log stream, in the report's order (mission
    time, source, sequence: the stream's own order interleaves publishers)."""
    nc = await nats.connect(nats_url)
    try:
        js = nc.jetstream()
        sub = await js.subscribe(f"twin.{mission}.evt.*", ordered_consumer=True)
        out: list[tuple[Any, ...]] = []
        while True:  # the stream holds ops records too: read what the filter has
            msg = await sub.next_msg(timeout=5.0)
            env = decode(msg.data, mission=mission)
            out.append((env.t, env.src, env.seq, env.step, env.body))
            if msg.metadata.num_pending == 0:
                break
        return sorted(out, key=lambda e: e[:3])
    finally:
        await nc.close()


async def _ops_log(nats_url: str, mission: str) -> list[tuple[str, str]]:
    """(source, name) of the platform's records in the mission log, in order."""
    nc = await nats.connect(nats_url)
    try:
        js = nc.jetstream()
        sub = await js.subscribe(f"twin.{mission}.ops.*", ordered_consumer=True)
        out: list[tuple[str, str]] = []
        with contextlib.suppress(TimeoutError, nats.errors.TimeoutError):
            while True:
                env = decode((await sub.next_msg(timeout=1.0)).data, mission=mission)
                out.append((env.src, env.body["name"]))
        return out
    finally:
        await nc.close()


def _finals(twin: LocalTwin) -> dict[str, Any]:
    return {name: orjson.loads(orjson.dumps(rt.core.snapshot(),
                                            option=orjson.OPT_SERIALIZE_NUMPY))
            for name, rt in twin.all.items()}


async def _crash(rt: ServiceRuntime) -> None:
    """What SIGKILL leaves: no drain, no goodbye, the state gone."""
    rt.stopping.set()
    assert rt.bus.nc is not None
    await rt.bus.nc.close()
    if rt._server is not None:
        await rt._server.stop(0)


def _fresh(rt: ServiceRuntime) -> ServiceRuntime:
    """A new process of the same service: same configuration, initial state."""
    if isinstance(rt, GroundRuntime):
        return GroundRuntime(rt.config, CollectorRegistry(), plan=rt.core.plan)
    module = importlib.import_module(f"services.{rt.name}.service")
    made: ServiceRuntime = module.make(rt.config, CollectorRegistry())
    return made


def _events_since_commit(twin: LocalTwin) -> int:
    """Events ground has seen since the last commit: what a rollback publishes again."""
    commit = twin.ground.clock.commit
    if commit is None or commit["step"] < 2 * EVERY_STEPS:
        return 0
    return sum(e["t"] > commit["t_s"] for e in twin.ground.core.events)


async def _fly(nats_url: str, mission: str,
               crash: str | None) -> tuple[list[tuple[Any, ...]], dict[str, Any], int]:
    twin = LocalTwin(nats_url, mission, nominal_until(PLAN_END), ack_timeout_s=1.0,
                     snapshot_every_steps=EVERY_STEPS, snapshot_every_s=3600.0)
    await twin.start()
    try:
        if crash is not None:
            clock = twin.ground.clock
            # Past a few commits, with events since the last: the rollback runs
            # steps again that published events, which the log must hold once.
            await asyncio.wait_for(clock.wait_until(lambda: _events_since_commit(twin) >= 2),
                                   HANG_S)
            victim = twin.all[crash]
            await _crash(victim)
            again = _fresh(victim)
            if crash == "ground":
                twin.ground = again  # type: ignore[assignment]
            else:
                twin.vehicles[crash] = again
            await again.start()
        await twin.wait_finished(HANG_S)
        rollbacks = sum(s.value for metric in twin.ground.metrics.rollbacks.collect()
                        for s in metric.samples if s.name.endswith("_total"))
        finals = _finals(twin)
    finally:
        await twin.stop()
    return await _mission_log(nats_url, mission), finals, int(rollbacks)


@pytest.mark.slow
@pytest.mark.parametrize("victim", ["lander", "orbiter", "ground"])
async def test_a_crashed_service_is_rolled_back_and_the_mission_ends_identical(
        nats_url: str, mission_id: str, victim: str) -> None:
    log, finals, rollbacks = await _fly(nats_url, f"{mission_id}-a", None)
    assert rollbacks == 0
    crashed_log, crashed_finals, crashed_rollbacks = await _fly(
        nats_url, f"{mission_id}-b", victim)
    if victim != "ground":  # a restarted ground counts in its own, fresh registry
        assert crashed_rollbacks == 1
    assert [e[4]["name"] for e in crashed_log] == [e[4]["name"] for e in log]
    assert crashed_log == log  # each event once, none missing, byte for byte
    assert crashed_finals == finals
    # The mission log says what the platform did, beside the events.
    ops = await _ops_log(nats_url, f"{mission_id}-b")
    assert ops[0] == ("ground", "rollback") and ops[-1] == ("ground", "rolled_back")
    assert sorted(src for src, name in ops if name == "restored") == sorted(
        VEHICLES)
    assert await _ops_log(nats_url, f"{mission_id}-a") == []


async def test_commits_name_every_service_and_restore_checks_digests(
        nats_url: str, mission_id: str) -> None:
    twin = LocalTwin(nats_url, mission_id, nominal_until(PLAN_END),
                     snapshot_every_steps=EVERY_STEPS, snapshot_every_s=3600.0)
    async with twin:
        await twin.wait_finished(HANG_S)
        assert twin.ground.bus.js is not None
        store = SnapStore(twin.ground.bus.js, twin.ground.subjects)
        commit = await store.last_commit()
        assert commit is not None
        assert sorted(commit["parts"]) == sorted(twin.all)
        assert commit["step"] % EVERY_STEPS == 0 and commit["step"] > 0
        from services.kernel.snapstore import SnapshotError, Stored
        part = Stored.from_json(commit["parts"]["relay"])
        snap = await store.get("relay", part)
        assert snap["service"] == "relay" and snap["step"] == commit["step"]
        with pytest.raises(SnapshotError, match="not the one committed"):
            await store.get("relay", replace(part, digest="0" * 64))
        with pytest.raises(SnapshotError, match="not the one committed"):
            await store.get("lander", part)
