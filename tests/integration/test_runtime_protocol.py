"""One service's side of the clock protocol, judged on the wire: the test is the
clock, and one ServiceRuntime (a small in-file orbiter core) runs on a real
nats-server and a real gRPC server.

Expected values come from the written contract: the README's "NATS subjects"
table (tick, ack, hello bodies; envelope fields; ``seq`` counted per source,
separately for clock control, truth telemetry and mission data), docs/recovery.md
(snapshots at a tick barrier hold the state *and* the messages taken for the
next step; ticks of another epoch are ignored; a re-run step publishes the same
messages with the same sequence numbers; stale and duplicate messages are
dropped), docs/contract.md's metric catalog, and the runtime's documented start
and stop order (health NOT_SERVING, then gRPC stops with grace).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
import urllib.request
from collections.abc import AsyncIterator, Callable
from typing import Any, TypeVar

import grpc
import nats
import orjson
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from nats.aio.client import Client
from nats.aio.msg import Msg
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from services.kernel import gauges, runtime
from services.kernel.config import ServiceConfig
from services.kernel.envelope import Envelope, decode, encode_fields
from services.kernel.errors import ConfigError
from services.kernel.natsd import NatsServer
from services.kernel.outbox import Outbox
from services.kernel.runtime import ServiceRuntime
from services.kernel.snapstore import SnapStore, Stored
from services.kernel.subjects import Subjects
from services.kernel.twin_pb import control_pb2, control_pb2_grpc
from services.kernel.vehicle import VehicleCore
from tests.integration.twin_helpers import create_mission_streams

T = TypeVar("T")

WAIT_S = 5.0  # wall s: a bound on a wait that should end at once
MAX_DT_S = 37.5  # mission s: the largest next step the probe accepts
STEP_S = 60.0  # mission s: the length of the ticks the tests send
#: Wall s a receiver waits for a counted message, in the tests where one never comes.
SHORT_DELIVERY_S = 0.3
#: Wall s between looks at a condition no message on the wire announces (a metric).
POLL_S = 0.01

#: Writes one step's publication: (outbox, the step's end time).
Write = Callable[[Outbox, float], None]


class Probe(VehicleCore):
    """An orbiter that publishes what its script says at each step's end time,
    accepts MAX_DT_S as the next step, records what it applies, and listens on
    one extra subject (the relay's downlink) as ground does on evt and dl."""

    name = "orbiter"
    downlink_enabled = False  # the modelled radio is tested elsewhere

    def __init__(self, seed: int, script: dict[float, list[Write]] | None = None,
                 fail_at_s: float | None = None) -> None:
        super().__init__(seed)
        self.script = script or {}
        self.fail_at_s = fail_at_s
        self.applied: list[Envelope] = []

    def extra_subjects(self, s: Subjects) -> list[str]:
        return [s.downlink("relay")]

    def apply(self, msg: Envelope, out: Outbox) -> None:
        self.applied.append(msg)
        super().apply(msg, out)

    def advance(self, t_from: float, t_to: float, out: Outbox) -> float:
        if t_to == self.fail_at_s:
            raise ZeroDivisionError("a bug in the physics")
        self.t_s = t_to
        for write in self.script.get(t_to, ()):
            write(out, t_to)
        return MAX_DT_S


class Wire:
    """The test's own NATS connection: every message of the mission, in the
    order received, and the clock's (ground's) side of the protocol."""

    def __init__(self, nc: Client, mission: str) -> None:
        self.nc, self.mission = nc, mission
        self.s = Subjects(mission)
        self.raw: list[tuple[str, bytes]] = []
        self._changed = asyncio.Event()
        self._control_seq = 0
        self._data_seq = 0

    @classmethod
    async def open(cls, url: str, mission: str) -> Wire:
        wire = cls(await nats.connect(url), mission)
        await wire.nc.subscribe(wire.s.everything, cb=wire._on_msg)
        await wire.nc.flush()
        return wire

    async def _on_msg(self, msg: Msg) -> None:
        self.raw.append((msg.subject, msg.data))
        self._changed.set()

    def on(self, subject: str) -> list[Envelope]:
        return [decode(d, mission=self.mission) for s, d in self.raw if s == subject]

    def data_on(self, subject: str) -> list[bytes]:
        return [d for s, d in self.raw if s == subject]

    async def until(self, found: Callable[[], T], what: str) -> T:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + WAIT_S
        while not (result := found()):
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise AssertionError(f"no {what} within {WAIT_S} s")
            self._changed.clear()
            with contextlib.suppress(TimeoutError):  # a message, or a look again soon
                await asyncio.wait_for(self._changed.wait(), min(remaining, POLL_S))
        return result

    async def publish(self, subject: str, kind: str, body: dict[str, Any], t: float,
                      step: int, *, src: str = "ground", seq: int | None = None) -> bytes:
        if seq is None:
            if kind in ("tick", "roll", "restore"):
                self._control_seq += 1
                seq = self._control_seq
            else:
                self._data_seq += 1
                seq = self._data_seq
        data = encode_fields(self.mission, src, seq, t, step, kind, body)
        await self.nc.publish(subject, data)
        await self.nc.flush()
        return data

    async def tick(self, step: int, expect: dict[str, int] | None = None,
                   **extra: Any) -> None:
        """Tick ``step`` from (step - 1) * STEP_S to step * STEP_S, as ground sends it."""
        t_from, t_to = (step - 1) * STEP_S, step * STEP_S
        body = {"step": step, "t_from": t_from, "t_to": t_to, "expect": expect or {}, **extra}
        await self.publish(self.s.tick, "tick", body, t_from, step - 1)

    async def command(self, body: dict[str, Any], step: int, *, seq: int | None = None,
                      t: float | None = None) -> bytes:
        """Ground's telecommand to the orbiter, published during ``step``."""
        return await self.publish(self.s.command("orbiter"), "command", body,
                                  step * STEP_S if t is None else t, step, seq=seq)

    def acks(self, since: int = 0) -> list[Envelope]:
        """The orbiter's acks, from the ``since``-th message received on."""
        subject = self.s.ack("orbiter")
        return [decode(d, mission=self.mission) for s, d in self.raw[since:] if s == subject]

    async def ack(self, step: int, since: int = 0) -> Envelope:
        found = await self.until(
            lambda: [a for a in self.acks(since) if a.body["step"] == step],
            f"ack of step {step}")
        return found[0]

    async def close(self) -> None:
        await self.nc.drain()


def _config(nats_url: str, mission: str, **overrides: Any) -> ServiceConfig:
    settings: dict[str, Any] = {"service": "orbiter", "grpc_port": 0, "metrics_port": -1,
                                "insecure": True, "snapshot_every_steps": 0, **overrides}
    return ServiceConfig(mission_id=mission, nats_urls=(nats_url,), **settings)


@contextlib.asynccontextmanager
async def serving(nats_url: str, mission: str, core: VehicleCore | None = None,
                  **overrides: Any) -> AsyncIterator[tuple[ServiceRuntime, Wire]]:
    """A started orbiter runtime and the wire, listening from before its start.
    Ready once it has said hello, as ground waits for it: its subscriptions,
    sent to nats-server before the hello, are in place."""
    wire = await Wire.open(nats_url, mission)
    await create_mission_streams(nats_url, mission)  # ground's part: it is not here
    rt = ServiceRuntime(core or Probe(6), _config(nats_url, mission, **overrides),
                        CollectorRegistry())
    try:
        await rt.start()
        await wire.until(lambda: wire.on(wire.s.hello("orbiter")), "hello at start")
        yield rt, wire
    finally:
        await rt.stop()
        await wire.close()


def _sample(rt: ServiceRuntime, name: str, **labels: str) -> float | None:
    return rt.registry.get_sample_value(
        name, {"mission": rt.config.mission_id, "service": rt.name, **labels})


def _set_mode(mode: str) -> dict[str, Any]:
    return {"op": "set_mode", "mode": mode}


async def _ticks_received(rt: ServiceRuntime, wire: Wire, n: int) -> None:
    """Until the service has received ``n`` ticks (its handler then runs at once)."""
    await wire.until(lambda: (_sample(rt, "twin_bus_messages_in_total", kind="tick") or 0) >= n,
                     f"{n} ticks received")


# --- hello and ack --------------------------------------------------------------------


async def test_a_hello_names_step_time_port_epoch_and_process(
        nats_url: str, mission_id: str) -> None:
    async with serving(nats_url, mission_id) as (_rt, wire):
        hello = wire.s.hello("orbiter")
        first = (await wire.until(lambda: wire.on(hello), "hello at start"))[0]
        assert (first.src, first.kind) == ("orbiter", "hello")
        assert set(first.body) == {"step", "t", "grpc_port", "epoch", "boot"}
        assert (first.body["step"], first.body["t"], first.body["epoch"]) == (0, 0.0, 0)
        boot = first.body["boot"]
        assert isinstance(boot, str) and boot
        # The port it names is where its gRPC server answers.
        port = first.body["grpc_port"]
        assert port > 0
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            health = health_pb2_grpc.HealthStub(channel)
            reply = await health.Check(health_pb2.HealthCheckRequest(service=""), timeout=WAIT_S)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING

        await wire.tick(1)
        await wire.ack(1)
        # A roll call, and a restore of an epoch already joined, are answered by a
        # hello where the service now is, from the same process.
        await wire.publish(wire.s.roll, "roll", {}, 0.0, 0)
        await wire.until(lambda: len(wire.on(hello)) >= 2, "hello answering the roll call")
        await wire.publish(wire.s.restore, "restore", {"epoch": 0, "commit": {}}, 0.0, 0)
        later = await wire.until(lambda: wire.on(hello)[2:], "hello answering the restore")
        for env in (wire.on(hello)[1], later[0]):
            assert env.body == {"step": 1, "t": STEP_S, "grpc_port": port, "epoch": 0,
                                "boot": boot}


async def test_an_ack_carries_the_step_its_limit_and_what_the_step_published(
        nats_url: str, mission_id: str) -> None:
    """README: ack {step, max_dt_s; pub {subject: count} when it published, prompt
    when a message it sent must be acted on at once}; the envelope is stamped
    with the step and its end time; mission data numbered 1, 2, ... per source."""

    def transfers_and_event(out: Outbox, t: float) -> None:
        out.send("xfer", "lander", t, {"n": 1})
        out.send("xfer", "lander", t, {"n": 2})
        out.event("orbiter", "probe_mark", t, value=7.0)

    def telecommand(out: Outbox, t: float) -> None:
        out.send("cmd", "relay", t, _set_mode("relay"))

    script: dict[float, list[Write]] = {STEP_S: [transfers_and_event],
                                        2 * STEP_S: [telecommand]}
    async with serving(nats_url, mission_id, Probe(6, script), run_id="r7") as (rt, wire):
        s = wire.s
        xfer, evt, cmd = s.transfer("lander"), s.event("orbiter"), s.command("relay")
        await wire.tick(1)
        ack = await wire.ack(1)
        assert (ack.src, ack.kind, ack.t, ack.step) == ("orbiter", "ack", STEP_S, 1)
        assert ack.body == {"step": 1, "epoch": 0, "max_dt_s": MAX_DT_S,
                            "pub": {xfer: 2, evt: 1}}
        assert (rt.step, rt.t_s) == (1, STEP_S)

        published = [*wire.on(xfer), *wire.on(evt)]
        assert [(e.kind, e.seq, e.step, e.t) for e in published] == [
            ("transfer", 1, 1, STEP_S), ("transfer", 2, 1, STEP_S), ("event", 3, 1, STEP_S)]
        assert [e.body for e in published] == [{"n": 1}, {"n": 2},
                                               {"name": "probe_mark", "value": 7.0}]
        # Events go to the mission log, their id run:source:seq (docs/recovery.md).
        js = wire.nc.jetstream()
        logged = await js.get_last_msg(s.stream_name, evt)
        assert logged.headers is not None and logged.headers["Nats-Msg-Id"] == "r7:orbiter:3"
        assert decode(logged.data or b"", mission=mission_id).body["name"] == "probe_mark"
        assert _sample(rt, "twin_mission_events_total", event="probe_mark") == 1.0

        await wire.tick(2)
        ack = await wire.ack(2)
        assert ack.body == {"step": 2, "epoch": 0, "max_dt_s": MAX_DT_S, "pub": {cmd: 1},
                            "prompt": True}
        sent = wire.on(cmd)[0]
        assert (sent.kind, sent.seq, sent.step, sent.t) == ("command", 4, 2, 2 * STEP_S)

        await wire.tick(3)  # a step that publishes nothing says only its limit
        ack = await wire.ack(3)
        assert ack.body == {"step": 3, "epoch": 0, "max_dt_s": MAX_DT_S}


async def test_gauges_follow_events_and_phases_not_every_step(
        nats_url: str, mission_id: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """services/kernel/gauges.py: refreshed when something happened (an event, a
    new phase) or every REFRESH_S wall seconds, which this test makes endless."""
    monkeypatch.setattr(gauges, "REFRESH_S", 1e9)

    def mark(out: Outbox, t: float) -> None:
        out.event("orbiter", "probe_mark", t)

    async with serving(nats_url, mission_id, Probe(6, {3 * STEP_S: [mark]})) as (rt, wire):
        # Created at start, with the phase the service is in.
        assert _sample(rt, "twin_mission_phase", phase="prelaunch") == 1.0
        assert _sample(rt, "twin_mission_time_seconds") == 0.0
        readings = []
        for step in (1, 2, 3):
            await wire.tick(step)
            await wire.ack(step)
            readings.append(_sample(rt, "twin_mission_time_seconds"))
        # Step 1: the first refresh; step 2: nothing happened; step 3: an event.
        assert readings == [STEP_S, STEP_S, 3 * STEP_S]
        assert _sample(rt, "twin_mission_phase", phase="prelaunch") == 1.0


async def test_a_frame_waits_for_its_batch_and_goes_out_at_stop(
        nats_url: str, mission_id: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A frame waits up to TWIN_TM_DELAY_S for others to share its tm message;
    steps that make no frame do not send it early; stop sends what waits."""
    monkeypatch.setattr(gauges, "REFRESH_S", 1e9)
    async with serving(nats_url, mission_id, tm_interval_s=1000.0, tm_batch=32,
                       tm_delay_s=60.0) as (rt, wire):
        tm = wire.s.telemetry("orbiter")
        for step in (1, 2, 3):  # a frame at step 1 only (one per 1,000 mission s)
            await wire.tick(step)
            await wire.ack(step)
        assert wire.on(tm) == []
        await rt.stop()
        sent = await wire.until(lambda: wire.on(tm), "telemetry at stop")
        assert [(e.kind, e.step, e.t, e.seq) for e in sent] == [("telemetry", 1, STEP_S, 1)]
        assert [f[0] for f in sent[0].body["frames"]] == [1]


# --- ticks: again, out of order, another epoch ----------------------------------------


async def test_a_tick_sent_again_gets_the_same_ack_and_others_none(
        nats_url: str, mission_id: str) -> None:
    async with serving(nats_url, mission_id) as (rt, wire):
        ack_subject = wire.s.ack("orbiter")
        await wire.tick(1)
        await wire.ack(1)
        first = wire.data_on(ack_subject)
        await wire.tick(1)  # lost ack? the same message again, same sequence number
        await wire.until(lambda: len(wire.data_on(ack_subject)) == 2, "the ack sent again")
        await wire.tick(3)  # ahead of the service: not taken, not answered
        await wire.tick(2, epoch=1)  # an epoch it has not joined: ignored
        await wire.tick(2)
        await wire.ack(2)
        await wire.tick(3)  # the last: every answer to the ticks above is in before it
        await wire.ack(3)
        answers = wire.data_on(ack_subject)
        assert answers[0] == answers[1] == first[0]
        assert [decode(a, mission=mission_id).body["step"] for a in answers[2:]] == [2, 3]
        assert (rt.step, rt.t_s) == (3, 3 * STEP_S)


# --- what a tick waits for ------------------------------------------------------------


async def test_a_tick_waits_for_the_messages_it_counts_for_this_service(
        nats_url: str, mission_id: str) -> None:
    """expect {subject: count}: the service waits for its own subjects' messages
    (commands, transfers, and extra subjects its core listens on), ignores the
    others' counts, and applies them in (time, source, sequence) order."""
    async with serving(nats_url, mission_id) as (rt, wire):
        s, core = wire.s, rt.core
        assert isinstance(core, Probe)
        await wire.tick(1)
        await wire.ack(1)
        mine = {s.command("orbiter"): 1, s.transfer("orbiter"): 1, s.downlink("relay"): 1}
        await wire.tick(2, expect={**mine, s.transfer("lander"): 3})
        await _ticks_received(rt, wire, 2)
        # Sent only now, after the tick that counts them.
        await wire.publish(s.downlink("relay"), "downlink", {"frame_seq": 1}, STEP_S, 1,
                           src="relay")
        await wire.publish(s.transfer("orbiter"), "transfer", {"type": "nothing_known"},
                           STEP_S, 1, src="lander")
        await wire.command(_set_mode("coast"), 1)
        ack = await wire.ack(2)
        assert [m.src for m in core.applied] == ["ground", "lander", "relay"]
        assert core.phase == "coast"
        assert "missing" not in ack.body
        assert ack.body["pub"] == {s.event("orbiter"): 2}  # mode_changed, message_rejected
        assert {e.body["name"]: e.step for e in wire.on(s.event("orbiter"))} == {
            "mode_changed": 2, "message_rejected": 2}


async def test_messages_that_never_arrive_are_acknowledged_as_missing(
        nats_url: str, mission_id: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The step is not taken; the ack says what is missing (ground rolls back),
    stamped where the service still is; twin_bus_messages_missing_total counts it."""
    monkeypatch.setattr(runtime, "DELIVERY_TIMEOUT_S", SHORT_DELIVERY_S)
    async with serving(nats_url, mission_id) as (rt, wire):
        core, cmd = rt.core, wire.s.command("orbiter")
        assert isinstance(core, Probe)
        await wire.tick(1)
        await wire.ack(1)
        await wire.command(_set_mode("coast"), 1)
        await wire.tick(2, expect={cmd: 3})
        ack = await wire.ack(2)
        assert (ack.src, ack.kind, ack.t, ack.step) == ("orbiter", "ack", STEP_S, 1)
        assert ack.body == {"step": 2, "epoch": 0, "missing": {cmd: 2}}
        assert (rt.step, rt.t_s, core.phase, core.applied) == (1, STEP_S, "prelaunch", [])
        assert _sample(rt, "twin_bus_messages_missing_total") == 2.0
        assert rt.failure is None


async def test_a_stop_ends_a_waiting_tick_without_an_ack(nats_url: str, mission_id: str) -> None:
    async with serving(nats_url, mission_id) as (rt, wire):
        await wire.tick(1)
        await wire.ack(1)
        await wire.tick(2, expect={wire.s.command("orbiter"): 1})  # never sent
        await _ticks_received(rt, wire, 2)
        await rt.stop()
        await wire.nc.flush()
        assert [a.body["step"] for a in wire.acks()] == [1]
        assert rt.step == 1
        # Stopping ended the wait: nothing was lost, so nothing is reported missing.
        assert not _sample(rt, "twin_bus_messages_missing_total")


# --- inbound messages: stale, duplicate, own, local ------------------------------------


async def test_stale_and_duplicate_messages_are_counted_and_dropped(
        nats_url: str, mission_id: str) -> None:
    """docs/recovery.md: a receiver drops a message of a step it has taken
    (stale) or one it holds already (duplicate); twin_bus_messages_dropped_total."""
    async with serving(nats_url, mission_id) as (rt, wire):
        core, cmd = rt.core, wire.s.command("orbiter")
        assert isinstance(core, Probe)

        def dropped() -> tuple[float | None, float | None]:
            return (_sample(rt, "twin_bus_messages_dropped_total", reason="stale"),
                    _sample(rt, "twin_bus_messages_dropped_total", reason="duplicate"))

        await wire.tick(1)
        await wire.ack(1)
        assert dropped() == (0.0, 0.0)
        first = await wire.command(_set_mode("coast"), 1)
        await wire.nc.publish(cmd, first)  # the same message again
        await wire.until(lambda: dropped()[1] == 1.0, "the duplicate dropped")
        # Its own message on its subject is known already: neither held nor counted.
        await wire.publish(cmd, "command", _set_mode("own"), STEP_S, 1, src="orbiter", seq=1)
        await wire.tick(2, expect={cmd: 1})
        await wire.ack(2)
        assert dropped() == (0.0, 1.0)
        # Step 1's messages are taken: one more of step 1 is stale.
        await wire.command(_set_mode("late"), 1)
        await wire.until(lambda: dropped()[0] == 1.0, "the stale message dropped")
        await wire.tick(3)
        await wire.ack(3)
        assert dropped() == (1.0, 1.0)
        assert [(m.src, m.body["mode"]) for m in core.applied] == [("ground", "coast")]


async def test_a_local_command_is_applied_in_order_with_the_bus_messages(
        nats_url: str, mission_id: str) -> None:
    """A command given by gRPC (local_command) is stamped with the service's
    mission time and applied at the next step in (time, source, sequence) order."""
    async with serving(nats_url, mission_id) as (rt, wire):
        core, cmd = rt.core, wire.s.command("orbiter")
        assert isinstance(core, Probe)
        await wire.tick(1)
        await wire.ack(1)
        rt.local_command(_set_mode("second"))
        await wire.command(_set_mode("first"), 1, t=STEP_S)
        await wire.tick(2, expect={cmd: 1})
        await wire.ack(2)
        assert [(m.src, m.t, m.body["mode"]) for m in core.applied] == [
            ("ground", STEP_S, "first"), ("orbiter", STEP_S, "second")]
        changes = [e.body for e in wire.on(wire.s.event("orbiter"))]
        assert [(c["previous"], c["mode"]) for c in changes] == [("prelaunch", "first"),
                                                                 ("first", "second")]


# --- snapshots and restore ------------------------------------------------------------


def _through_json(snap: dict[str, Any]) -> dict[str, Any]:
    """A snapshot as another process reads it back."""
    out: dict[str, Any] = orjson.loads(orjson.dumps(snap))
    return out


def _mark_each_step(out: Outbox, t: float) -> None:
    out.send("xfer", "lander", t, {"at": t})


async def test_a_snapshot_holds_state_and_held_messages_and_a_restore_reruns_identically(
        nats_url: str, mission_id: str) -> None:
    """docs/recovery.md: at a tick with ``snap`` the service stores its state and
    the messages it took for the step, acknowledges with where it lies; restored,
    the step runs again publishing the same messages with the same numbers."""
    script: dict[float, list[Write]] = {STEP_S * k: [_mark_each_step] for k in range(1, 6)}
    async with serving(nats_url, mission_id, Probe(6, script), snapshot_every_steps=1000,
                       tm_batch=1) as (rt, wire):
        s, core = wire.s, rt.core
        assert isinstance(core, Probe)
        cmd = s.command("orbiter")
        for step in (1, 2):
            await wire.tick(step)
            await wire.ack(step)
        command = await wire.command(_set_mode("coast"), 2)
        await wire.tick(3, expect={cmd: 1}, snap=2)
        ack = await wire.ack(3)
        assert set(ack.body["snap"]) == {"seq", "digest", "bytes"}
        await wire.tick(4)
        await wire.ack(4)

        published = (s.transfer("lander"), s.event("orbiter"))

        def step_3(since: int) -> list[tuple[str, bytes]]:
            """The mission data the orbiter published in step 3, received after ``since``."""
            return [(sub, d) for sub, d in wire.raw[since:]
                    if sub in published and decode(d, mission=mission_id).step == 3]

        first_run = step_3(0)
        assert {sub for sub, _ in first_run} == set(published)

        store = SnapStore(wire.nc.jetstream(), s)
        snap = await store.get("orbiter", Stored.from_json(ack.body["snap"]))
        assert (snap["service"], snap["mission"]) == ("orbiter", mission_id)
        assert (snap["step"], snap["t_s"], snap["core"]["phase"]) == (2, 2 * STEP_S,
                                                                      "prelaunch")
        assert snap["seq"] == 2 and snap["tm_seq"] == 2  # a transfer and a frame a step
        assert [Envelope(*h) for h in snap["held"]] == [decode(command, mission=mission_id)]

        rt.restore(_through_json(snap))
        assert (rt.step, rt.t_s, core.phase) == (2, 2 * STEP_S, "prelaunch")
        await wire.tick(2)  # the step restored was not acknowledged by this incarnation
        await wire.command(_set_mode("stale"), 2)  # of a step taken: dropped
        await wire.until(lambda: _sample(rt, "twin_bus_messages_dropped_total",
                                         reason="stale") == 1.0, "the stale message dropped")
        before = len(wire.raw)
        await wire.tick(3)  # ground's tick after a rollback counts nothing
        await wire.ack(3, since=before)
        assert step_3(before) == first_run
        assert [a.body["step"] for a in wire.acks()] == [1, 2, 3, 4, 3]
        assert core.phase == "coast"
        # Truth telemetry is numbered on from the snapshot's last number too.
        await wire.tick(4)
        await wire.ack(4, since=before)
        tm = [decode(d, mission=mission_id) for sub, d in wire.raw[before:]
              if sub == s.telemetry("orbiter")]
        assert tm[0].seq == snap["tm_seq"] + 1


async def test_a_snapshot_tick_without_snapshots_configured_is_an_ordinary_step(
        nats_url: str, mission_id: str) -> None:
    async with serving(nats_url, mission_id, snapshot_every_steps=0) as (rt, wire):
        await wire.tick(1, snap=0)
        ack = await wire.ack(1)
        assert ack.body == {"step": 1, "epoch": 0, "max_dt_s": MAX_DT_S}
        assert rt.failure is None


async def test_a_snapshot_of_another_service_or_mission_does_not_restore(
        nats_url: str, mission_id: str) -> None:
    rt = ServiceRuntime(Probe(6), _config(nats_url, mission_id), CollectorRegistry())
    snap = rt.snapshot()
    for field, other in (("service", "lander"), ("mission", "another-mission")):
        with pytest.raises(ValueError) as caught:
            rt.restore({**snap, field: other, "step": 9})
        assert f"{snap['service']}/{snap['mission']}" in str(caught.value)
        assert other in str(caught.value)
    assert rt.step == 0


async def test_a_snapshot_without_telemetry_numbers_or_held_messages_starts_them_afresh(
        nats_url: str, mission_id: str) -> None:
    """A snapshot written before truth telemetry had its own numbers (no
    ``tm_seq``) and with no ``held``: telemetry numbering starts again at 1."""
    async with serving(nats_url, mission_id, tm_batch=1) as (rt, wire):
        tm = wire.s.telemetry("orbiter")
        for step in (1, 2):
            await wire.tick(step)
            await wire.ack(step)
        snap = _through_json(rt.snapshot())
        assert snap["tm_seq"] == 2 and snap["held"] == []
        del snap["tm_seq"], snap["held"]
        rt.restore(snap)
        await wire.tick(3)
        await wire.ack(3)
        assert [e.seq for e in wire.on(tm)] == [1, 2, 1]


# --- failure, stop, gRPC, metrics -----------------------------------------------------


async def test_a_failing_step_is_counted_logged_with_its_traceback_and_stops_the_service(
        nats_url: str, mission_id: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.ERROR, logger="twin.runtime")
    async with serving(nats_url, mission_id, Probe(6, fail_at_s=2 * STEP_S)) as (rt, wire):
        await wire.tick(1)
        await wire.ack(1)
        await wire.tick(2)
        await asyncio.wait_for(rt.stopping.wait(), WAIT_S)
        failure = rt.failure
        assert isinstance(failure, ZeroDivisionError)
        assert _sample(rt, "twin_service_failures_total", where="handler") == 1.0
        records = [r for r in caplog.records if r.name == "twin.runtime"]
        assert len(records) == 1 and records[0].levelno == logging.ERROR
        assert records[0].exc_info is not None and records[0].exc_info[1] is failure
        assert records[0].__dict__.get("where") == "handler"
        rt.fail("clock", RuntimeError("a later one"))  # counted; the first is kept
        assert rt.failure is failure
        assert _sample(rt, "twin_service_failures_total", where="clock") == 1.0
        assert [a.body["step"] for a in wire.acks()] == [1]


async def test_stop_before_start_and_twice_is_safe(nats_url: str, mission_id: str,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    """_main stops a runtime whose start failed half-way; a second stop does nothing."""
    never = ServiceRuntime(Probe(6), _config(nats_url, mission_id), CollectorRegistry())
    await never.stop()
    assert never.stopping.is_set()

    caplog.set_level(logging.DEBUG, logger="twin")
    await create_mission_streams(nats_url, mission_id)
    rt = ServiceRuntime(Probe(6), _config(nats_url, mission_id), CollectorRegistry())
    await rt.start()
    await rt.stop()
    caplog.clear()
    await rt.stop()
    assert [r.getMessage() for r in caplog.records if r.name.startswith("twin.")] == []


async def test_stop_says_not_serving_then_lets_open_streams_end_cleanly(
        nats_url: str, mission_id: str) -> None:
    """Health goes NOT_SERVING first; then gRPC stops with grace, so an open
    WatchTelemetry stream ends normally instead of being cut."""
    async with serving(nats_url, mission_id) as (rt, wire):
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{rt.grpc_port}")
        health = health_pb2_grpc.HealthStub(channel)
        watch = health.Watch(health_pb2.HealthCheckRequest(service=""))
        statuses = [(await watch.read()).status]
        stream = control_pb2_grpc.VehicleControlStub(channel).WatchTelemetry(
            control_pb2.WatchTelemetryRequest())
        await wire.until(lambda: rt.telemetry.watchers, "the stream watching")
        await wire.tick(1)
        first = await asyncio.wait_for(stream.read(), WAIT_S)
        assert isinstance(first, control_pb2.TelemetryFrame) and first.step == 1

        async def health_until_not_serving() -> None:
            while statuses[-1] != health_pb2.HealthCheckResponse.NOT_SERVING:
                statuses.append((await watch.read()).status)
            watch.cancel()

        watching = asyncio.create_task(health_until_not_serving())
        await rt.stop()
        await asyncio.wait_for(watching, WAIT_S)
        assert statuses[0] == health_pb2.HealthCheckResponse.SERVING
        assert statuses[-1] == health_pb2.HealthCheckResponse.NOT_SERVING
        while (await stream.read()) is not grpc.aio.EOF:  # ends without an error
            pass
        assert await stream.code() == grpc.StatusCode.OK
        await channel.close()


async def test_metrics_are_served_on_the_configured_host_and_the_nats_connection_is_named(
        nats_server: NatsServer, mission_id: str) -> None:
    """TWIN_METRICS_PORT=0 picks a free port, on TWIN_GRPC_HOST only, serving this
    service's metrics; its NATS connection is named after mission and service."""
    async with serving(nats_server.url, mission_id, metrics_port=0) as (rt, _wire):
        port = rt.metrics_port
        assert port > 0
        url = f"http://127.0.0.1:{port}/metrics"
        text = await asyncio.to_thread(lambda: urllib.request.urlopen(url, timeout=WAIT_S)
                                       .read().decode())
        phases = [(sample.labels, sample.value)
                  for family in text_string_to_metric_families(text)
                  for sample in family.samples if sample.name == "twin_mission_phase"]
        assert phases == [({"mission": mission_id, "service": "orbiter",
                            "phase": "prelaunch"}, 1.0)]
        with socket.socket() as other, pytest.raises(ConnectionRefusedError):
            other.settimeout(WAIT_S)
            other.connect(("127.0.0.2", port))  # loopback too, but not the bound address

        connz = await asyncio.to_thread(lambda: json.loads(urllib.request.urlopen(
            f"{nats_server.monitor_url}/connz", timeout=WAIT_S).read()))
        names = [c.get("name", "") for c in connz["connections"]]
        assert any(mission_id in n and "orbiter" in n for n in names)


async def test_metrics_off_by_default_in_tests_is_minus_one(nats_url: str,
                                                            mission_id: str) -> None:
    async with serving(nats_url, mission_id, metrics_port=-1) as (rt, _wire):
        assert rt.metrics_port == -1


async def test_a_mission_log_asked_with_three_replicas_is_not_made_with_one(
        nats_url: str, mission_id: str) -> None:
    """TWIN_JS_REPLICAS=3 needs a NATS cluster of at least three servers: on the
    tests' single server the stream cannot be made so, and start fails rather
    than running with an unreplicated mission log."""
    # Ground makes the streams (a vehicle only waits for them).
    rt = ServiceRuntime(Probe(6), _config(nats_url, mission_id, js_replicas=3,
                                          service="ground"), CollectorRegistry())
    try:
        with pytest.raises(nats.js.errors.APIError):
            await rt.start()
    finally:
        await rt.stop()
    nc = await nats.connect(nats_url)
    try:
        with pytest.raises(nats.js.errors.NotFoundError):
            await nc.jetstream().stream_info(Subjects(mission_id).stream_name)
    finally:
        await nc.drain()


@pytest.mark.parametrize("variable", ["TWIN_GRPC_PORT", "TWIN_HEALTH_PORT"])
async def test_a_taken_port_is_a_configuration_error_naming_the_variable(
        nats_url: str, mission_id: str, variable: str) -> None:
    """README: a bad setting says which variable, its value and how to fix it
    (exit 2 from run_service), not a traceback from grpcio: the control port and
    the plaintext health port alike."""
    await create_mission_streams(nats_url, mission_id)
    field = variable.removeprefix("TWIN_").lower()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        rt = ServiceRuntime(Probe(6), _config(nats_url, mission_id, grpc_host="127.0.0.1",
                                              **{field: port}), CollectorRegistry())
        try:
            with pytest.raises(ConfigError) as info:
                await rt.start()
        finally:
            await rt.stop()
    assert (info.value.variable, info.value.value) == (variable, str(port))
    assert "port is taken" in str(info.value)
    assert f"{variable}=0" in info.value.fix  # the way out: a free port
