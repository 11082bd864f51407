"""Clock, clock servicer and runtime behaviours the mutation run found unchecked
(docs/mutation-survivors.md), each in a quick test.

The mutation run gives each mutant its fastest tests first, within a few
seconds of recorded test time; the clock's slower tests (a roll call at its
real period, a one-second rate window, a rollback waiting out an ack timeout)
come too late for most of them. So here the waits are made short: the roll-call
period and the rate window are module constants set small, the ack timeout and
the delivery timeout are configured or set small, and a wait for "something
happens" returns at once when what happened instead is a pause, a tick or a
failure. Ground runs for real, with the services it expects played by hand
(``ground_and_peers`` of test_clock_protocol.py); one service's runtime runs
for real (``Probe`` of test_runtime_protocol.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import signal
import time
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client import CollectorRegistry

from services.ground.control import ClockServicer
from services.ground.service import GroundRuntime
from services.kernel import clock as clock_module
from services.kernel import runtime
from services.kernel.clock import ClockAuthority
from services.kernel.envelope import Envelope
from services.kernel.natsd import NatsServer
from services.kernel.runtime import ServiceRuntime
from services.kernel.snapstore import SnapshotError
from services.kernel.steprule import FIRST_STEP_S
from tests.integration.test_clock_protocol import (
    HANG_S,
    LONG_S,
    PEERS,
    Peers,
    get_time,
    ground_and_peers,
    length,
    part,
    records,
    run_with_parts,
    sample,
    until,
)
from tests.integration.test_runtime_protocol import Probe, _config
from tests.integration.twin_helpers import create_mission_streams, plan

#: Wall s between looks at the clock's state while a tick, a pause or a failure is awaited.
POLL_S = 0.005
#: Wall s: the roll-call period and the ack timeout, made short so the tests
#: that wait for a second roll call, an overdue ack or a restore sent again take
#: a few tenths of a second.
ROLL_PERIOD_S = 0.05
ACK_TIMEOUT_S = 0.15
#: Mission s: a limit that takes the second step far into the mission at once
#: (below ground's own, an hour).
FAR_S = 3_000.0
#: Mission s per step at a warp of 1 (real time): 5 paced steps take 0.1 wall s.
PACED_STEP_S = 0.02
#: Mission s: float rounding of a mission time compared with warp x wall time.
PACE_TOLERANCE_S = 1e-6
#: Wall s: a snapshot store made slow, several ack timeouts long.
SLOW_STORE_S = 0.3
#: Wall s: a steps/s window, and how long a step is held to outlast it.
WINDOW_S = 0.05
HELD_S = 0.06


async def next_of(ground: GroundRuntime, peers: Peers) -> Envelope | str:
    """The next tick; or what came instead: ``"paused"`` (the clock holds) or
    ``"failed"`` (ground stopped on an error). Bounded by HANG_S."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + HANG_S
    clock = ground.clock
    while peers.ticks.empty():
        if ground.failure is not None:
            return "failed"
        if clock.paused and clock.status.mode == "paused":
            return "paused"
        assert loop.time() < deadline, "no tick, pause or failure came"
        await asyncio.sleep(POLL_S)
    return peers.ticks.get_nowait()[0]


async def next_tick(ground: GroundRuntime, peers: Peers) -> Envelope:
    got = await next_of(ground, peers)
    assert isinstance(got, Envelope), f"no tick: {got} ({ground.failure!r})"
    return got


async def hello(peers: Peers, src: str, boot: str, t: float = 0.0) -> None:
    """A hello from ``src``'s process ``boot`` (``t`` tells one hello from another)."""
    await peers.send(peers.subject("clock.hello", src), src, "hello",
                     {"step": 0, "t": t, "grpc_port": 0, "epoch": 0, "boot": boot})


# --- the roll call, the first tick, the watchdog ----------------------------------


async def test_the_roll_is_called_once_a_period_until_all_are_present_then_the_clock_holds(
        nats_url: str, mission_id: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """README / docs/contract.md: roll calls go out every period while a service
    is missing (never faster), ClockState names the missing, no rate before a
    step; once all are present a clock started paused holds, waits for no one,
    and twin_clock_paused says so until Resume; the first tick is sent after
    step 0."""
    monkeypatch.setattr(clock_module, "ROLL_CALL_PERIOD_S", ROLL_PERIOD_S)
    started = time.monotonic()
    async with ground_and_peers(nats_url, mission_id, present=False,
                                start_paused=True) as (ground, peers):
        clock = ground.clock
        await until(lambda: peers.rolls >= 3)
        assert peers.rolls <= (time.monotonic() - started) / ROLL_PERIOD_S + 1
        state = await get_time(ground)
        assert (state.mode, list(state.waiting_for), state.steps_per_second) == (
            "starting", list(PEERS), 0.0)
        await peers.hello("orbiter")
        await until(lambda: clock.status.waiting_for == ["lander"])
        await peers.hello("lander")
        await until(lambda: clock.status.mode == "paused")
        state = await get_time(ground)
        assert (state.mode, list(state.waiting_for), state.steps_per_second) == ("paused", [], 0.0)
        assert clock.status.waiting_for == []
        assert sample(ground, "twin_clock_paused") == 1.0
        # An ack before its tick answers no step: ignored, even one saying
        # messages were lost (which would roll the mission back).
        await peers.ack("orbiter", 1, missing={peers.subject("xfer", "orbiter"): 1})
        await until(lambda: sample(ground, "twin_bus_messages_in_total", kind="ack") == 1.0)
        clock.resume()
        assert sample(ground, "twin_clock_paused") == 0.0
        tick = await next_tick(ground, peers)
        assert (tick.step, tick.body["step"], tick.body["expect"]) == (0, 1, {})


async def test_a_clock_started_paused_still_reports_an_overdue_ack_and_sends_the_tick_again(
        nats_url: str, mission_id: str) -> None:
    """The watchdog, started with the clock, outlives a pause before the first
    tick: an ack later than the timeout is reported (ClockState, the
    twin_clock_ack_overdue gauge) and the same tick is sent again."""
    async with ground_and_peers(nats_url, mission_id, start_paused=True,
                                ack_timeout_s=ACK_TIMEOUT_S) as (ground, peers):
        clock = ground.clock
        await until(lambda: clock.status.mode == "paused")
        await asyncio.sleep(ACK_TIMEOUT_S / 2)  # the watchdog looks while nothing is in flight
        clock.resume()
        _, data = await peers.tick_bytes()
        await peers.ack("lander", 1, max_dt_s=LONG_S)
        _, again = await peers.tick_bytes()
        assert again == data
        await until(lambda: clock.status.waiting_for == ["orbiter"])
        assert sample(ground, "twin_clock_ack_overdue", peer="orbiter") == 1.0
        assert (await get_time(ground)).mode == "waiting"


# --- which acks count, and the step they shape -----------------------------------


async def test_only_each_expected_service_s_first_usable_ack_of_the_step_and_epoch_counts(
        nats_url: str, mission_id: str) -> None:
    """A second ack of one service, an ack of another step or epoch, one from a
    service not expected and one whose limit is no number (``bad_ack``) change
    nothing: the next step is as long as the real acks allow. A limit may be
    an integer; an ack naming none leaves the next step at the first step's."""
    async with ground_and_peers(nats_url, mission_id) as (ground, peers):
        tick = await peers.tick()
        assert ground.clock.status.mode == "running"  # the loop's own mode, a step in flight
        await peers.ack("lander", 1, max_dt_s=LONG_S)
        short = 5.0
        for src, step, extra in (("lander", 1, {}), ("orbiter", 2, {}), ("orbiter", 0, {}),
                                 ("orbiter", 1, {"epoch": 3}), ("relay", 1, {})):
            await peers.ack(src, step, max_dt_s=short, **extra)
        await peers.ack("orbiter", 1, max_dt_s=LONG_S)
        tick = await next_tick(ground, peers)
        assert (tick.body["step"], length(tick)) == (2, LONG_S)
        await peers.ack("orbiter", 2, max_dt_s="soon")
        await peers.ack("orbiter", 2)  # no limit named
        await peers.ack("lander", 2, max_dt_s=300)
        tick = await next_tick(ground, peers)
        assert (tick.body["step"], length(tick)) == (3, FIRST_STEP_S)
        assert sample(ground, "twin_bus_decode_errors_total", reason="bad_ack") == 1.0


async def test_a_run_until_target_pauses_the_clock_on_it_not_a_step_before(
        nats_url: str, mission_id: str) -> None:
    """A target within the first step's second is a target too, and a step
    ending half a second short of one does not reach it."""
    async with ground_and_peers(nats_url, mission_id, start_paused=True) as (ground, peers):
        clock = ground.clock
        await until(lambda: clock.status.mode == "paused")
        clock.run_until(0.5, None)
        tick = await next_tick(ground, peers)
        assert (tick.body["t_from"], tick.body["t_to"]) == (0.0, 0.5)
        await peers.ack_all(tick, 1.0)
        assert await next_of(ground, peers) == "paused"
        assert (ground.t_s, clock.status.run_until_t_s) == (0.5, -1.0)
        clock.run_until(2.0, None)
        tick = await next_tick(ground, peers)
        assert (tick.body["t_from"], tick.body["t_to"]) == (0.5, 1.5)
        await peers.ack_all(tick, 1.0)
        tick = await next_tick(ground, peers)
        assert (tick.body["t_from"], tick.body["t_to"]) == (1.5, 2.0)
        await peers.ack_all(tick, 1.0)
        assert await next_of(ground, peers) == "paused"
        assert (ground.t_s, clock.status.run_until_t_s) == (2.0, -1.0)


async def test_a_warp_paces_the_steps_from_the_mission_time_where_it_was_set(
        nats_url: str, mission_id: str) -> None:
    """A warp from the configuration paces the first steps; one set later paces
    from the mission time the clock is at then, never ahead of warp x the wall
    time since (a warp of 1, real time, too), and not hours behind it."""
    warp = 1.0
    async with ground_and_peers(nats_url, mission_id, warp=1e6) as (ground, peers):
        tick = await next_tick(ground, peers)
        await peers.ack_all(tick, FAR_S)
        tick = await next_tick(ground, peers)
        assert tick.body["t_to"] == FIRST_STEP_S + FAR_S
        called = time.monotonic()
        ground.clock.set_warp(warp)  # with the step in flight: paced from its end
        t0 = tick.body["t_to"]
        await peers.ack_all(tick, PACED_STEP_S)
        for _ in range(5):
            tick = await next_tick(ground, peers)
            ahead_s = tick.body["t_to"] - t0 - warp * (time.monotonic() - called)
            assert ahead_s <= PACE_TOLERANCE_S
            await peers.ack_all(tick, PACED_STEP_S)


# --- steps per second -------------------------------------------------------------


async def test_steps_per_second_is_the_rate_since_stepping_began_then_each_closed_window_s(
        nats_url: str, mission_id: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """ClockState.steps_per_second: before a window has closed, the steps since
    the clock was set running over the wall time since; then the last closed
    window's steps over its length (twin_clock_step_rate_per_second too)."""
    async with ground_and_peers(nats_url, mission_id, start_paused=True) as (ground, peers):
        clock = ground.clock
        await until(lambda: clock.status.mode == "paused")
        resumed = time.monotonic()
        clock.request_steps(3)
        tick = await next_tick(ground, peers)
        ticked = time.monotonic()
        for n in range(3):
            await peers.ack_all(tick)
            if n < 2:
                tick = await next_tick(ground, peers)
        assert await next_of(ground, peers) == "paused"
        before = time.monotonic()
        rate = clock.steps_per_second()
        after = time.monotonic()
        if after - resumed < clock_module.RATE_WINDOW_S:  # no window can have closed
            assert clock.status.steps_per_second == 0.0
            assert 3 / (after - resumed) <= rate <= 3 / (before - ticked)
        monkeypatch.setattr(clock_module, "RATE_WINDOW_S", WINDOW_S)
        clock.resume()
        for _ in range(2):  # each step outlasts a window: one step per window
            tick = await next_tick(ground, peers)
            await asyncio.sleep(HELD_S)
            await peers.ack_all(tick)
        await next_tick(ground, peers)
        rate = clock.steps_per_second()
        assert 0.0 < rate <= 1 / HELD_S
        assert sample(ground, "twin_clock_step_rate_per_second") == rate


# --- waits, the end -----------------------------------------------------------------


async def test_at_the_mission_s_end_every_wait_ends_and_the_clock_says_finished(
        nats_url: str, mission_id: str, caplog: pytest.LogCaptureFixture) -> None:
    """A wait whose caller went away (a cancelled RunUntil) holds up no other;
    one for a condition that never comes ends with the mission."""
    caplog.set_level(logging.INFO, logger="twin.clock")
    async with ground_and_peers(nats_url, mission_id, hours=0.1) as (ground, peers):  # 360 s
        clock = ground.clock
        gone = asyncio.ensure_future(clock.wait_until(lambda: False))
        waiting = asyncio.ensure_future(clock.wait_until(lambda: False))
        await asyncio.sleep(0)  # both wait
        gone.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await gone
        tick = await next_tick(ground, peers)
        await peers.ack_all(tick, LONG_S)
        tick = await next_tick(ground, peers)
        assert tick.body["t_to"] == 360.0
        await peers.ack_all(tick, LONG_S)
        await asyncio.wait_for(waiting, HANG_S)
        assert clock.mode == "finished"
        stopped = records(caplog, "clock stopped")
        assert [r.mode for r in stopped] == ["finished"]  # type: ignore[attr-defined]


# --- restarts, reconnects, commits, rollbacks ---------------------------------------


async def test_a_new_process_of_a_service_is_a_restart_only_once_the_mission_has_run(
        nats_url: str, mission_id: str) -> None:
    """docs/recovery.md: a hello from a new process while the mission runs means
    the service lost its state (with snapshots off, ground stops saying nothing
    is committed). Before the first step nothing was lost, and a hello from the
    same process again (as after a reconnect) is no restart."""
    async with ground_and_peers(nats_url, mission_id, start_paused=True) as (ground, peers):
        clock = ground.clock
        await until(lambda: clock.status.mode == "paused")
        await hello(peers, "orbiter", "orbiter-2")
        await until(lambda: clock.present["orbiter"]["boot"] == "orbiter-2")
        clock.request_steps(1)
        await peers.ack_all(await next_tick(ground, peers))
        assert await next_of(ground, peers) == "paused"
        await hello(peers, "orbiter", "orbiter-2", t=1.0)
        await until(lambda: clock.present["orbiter"]["t"] == 1.0)
        clock.request_steps(1)
        await next_tick(ground, peers)  # step 2 in flight: ground is at step 1
        await hello(peers, "lander", "lander-2")
        await asyncio.wait_for(ground.stopping.wait(), HANG_S)
        assert isinstance(ground.failure, SnapshotError)
        assert str(ground.failure).startswith(
            "a rollback is needed (restart) but nothing is committed")


async def test_a_hello_without_a_boot_id_is_dropped_not_taken_for_a_restart(
        nats_url: str, mission_id: str) -> None:
    """A hello ground cannot read (no string ``boot``, no integer ``step``) is a
    malformed message: counted as ``bad_hello`` (docs/contract.md) and dropped.
    Read as a new process it would cost the whole mission a rollback, here
    (nothing committed) a stop."""
    async with ground_and_peers(nats_url, mission_id, start_paused=True) as (ground, peers):
        clock = ground.clock
        await until(lambda: clock.status.mode == "paused")
        clock.request_steps(1)
        await peers.ack_all(await next_tick(ground, peers))
        assert await next_of(ground, peers) == "paused"
        await peers.send(peers.subject("clock.hello", "lander"), "lander", "hello", {})
        await peers.send(peers.subject("clock.hello", "lander"), "lander", "hello",
                         {"step": "1", "boot": "lander-2"})
        labels = {"mission": mission_id, "service": "ground", "reason": "bad_hello"}
        await until(lambda: ground.registry.get_sample_value(
            "twin_bus_decode_errors_total", labels) == 2)
        clock.request_steps(1)
        await peers.ack_all(await next_tick(ground, peers))
        assert await next_of(ground, peers) == "paused"
        assert ground.failure is None and clock.present["lander"].get("boot") != "lander-2"


async def test_no_peer_is_overdue_while_ground_stores_the_snapshot_before_a_tick(
        nats_url: str, mission_id: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A commit's tick goes out after ground's own part is stored. The wait for
    acks begins with the tick: a slow store (a JetStream put under load) must not
    make the watchdog report peers overdue for a tick not yet sent, nor send an
    old one again."""
    store = GroundRuntime.store_snapshot

    async def slow_store(self: GroundRuntime, held: Any) -> Any:
        await asyncio.sleep(SLOW_STORE_S)
        return await store(self, held)

    monkeypatch.setattr(GroundRuntime, "store_snapshot", slow_store)
    async with ground_and_peers(nats_url, mission_id, ack_timeout_s=ACK_TIMEOUT_S / 3,
                                snapshot_every_steps=1000) as (ground, peers):
        modes: set[str] = set()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + HANG_S
        while peers.ticks.empty():
            modes.add(ground.clock.status.mode)
            assert loop.time() < deadline, "no tick came"
            await asyncio.sleep(POLL_S)
        tick = peers.ticks.get_nowait()[0]
        assert tick.body["step"] == 1 and "snap" in tick.body
        assert "waiting" not in modes and ground.clock.status.waiting_for == []
        assert peers.ticks.empty()  # the tick once, nothing sent before it


async def test_ground_back_on_nats_before_the_first_commit_runs_on(
        nats_url: str, mission_id: str) -> None:
    """Nothing has run that a lost message could have changed: no rollback."""
    async with ground_and_peers(nats_url, mission_id) as (ground, peers):
        tick = await next_tick(ground, peers)
        await ground.reconnected()
        await peers.ack_all(tick)
        tick = await next_tick(ground, peers)
        assert tick.body["step"] == 2 and "epoch" not in tick.body


async def test_a_snapshot_set_without_every_part_is_not_committed(
        nats_url: str, mission_id: str, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    """docs/recovery.md: only a whole set is committed. A service that sends no
    part (its snapshots are off) leaves nothing to roll back to: when ground's
    own messages of a step then never come, it stops saying so, and the step
    it gave up is not counted."""
    monkeypatch.setattr(runtime, "DELIVERY_TIMEOUT_S", 0.1)
    caplog.set_level(logging.ERROR, logger="twin.clock")
    async with ground_and_peers(nats_url, mission_id, snapshot_every_steps=1000,
                                snapshot_every_s=3600.0) as (ground, peers):
        tick = await next_tick(ground, peers)
        assert tick.body["snap"] == 0
        await peers.ack("orbiter", 1, max_dt_s=LONG_S, snap=part("orbiter", 0))
        await peers.ack("lander", 1, max_dt_s=LONG_S)
        tick = await next_tick(ground, peers)
        assert ground.clock.commit is None
        logged = records(caplog, "snapshot parts missing, not committed")
        assert [r.missing for r in logged] == [["lander"]]  # type: ignore[attr-defined]
        await peers.ack("orbiter", 2, max_dt_s=LONG_S)
        await peers.ack("lander", 2, max_dt_s=LONG_S, pub={peers.subject("evt", "lander"): 1})
        await asyncio.wait_for(ground.stopping.wait(), HANG_S)  # the event never comes
        assert isinstance(ground.failure, SnapshotError)
        assert str(ground.failure).startswith(
            "a rollback is needed (missing) but nothing is committed")
        assert ground.step == 1
        assert sample(ground, "twin_clock_steps_total") == 1.0


async def test_a_rollback_reads_recovering_asks_a_late_service_again_and_replays_held_commands(
        nats_url: str, mission_id: str) -> None:
    """docs/recovery.md: ClockState says "recovering" while the restore waits;
    it is sent again once an ack timeout has passed without every service back
    (not on every hello); ground's own snapshot holds the command queued for the
    next step, so the step run again applies it again."""
    async with ground_and_peers(nats_url, mission_id, start_paused=True,
                                ack_timeout_s=ACK_TIMEOUT_S, snapshot_every_steps=1,
                                snapshot_every_s=3600.0) as (ground, peers):
        clock = ground.clock
        await until(lambda: clock.status.mode == "paused")
        ground.local_command({"op": "set_mode", "mode": "hold"})  # as SendCommand queues it
        clock.resume()
        tick = await next_tick(ground, peers)
        assert tick.body["snap"] == 0  # ground's part: its state and the held command
        await run_with_parts(peers, tick)
        tick = await next_tick(ground, peers)  # commits step 0 once every ack of 2 is in
        await peers.ack("orbiter", 2, max_dt_s=LONG_S, snap=part("orbiter", 1))
        await peers.ack("lander", 2, missing={peers.subject("xfer", "lander"): 1})
        await until(lambda: bool(peers.restores))
        asked = time.monotonic()
        assert (await get_time(ground)).mode == "recovering"
        await peers.hello("orbiter", 1)  # the lander is late
        await until(lambda: len(peers.restores) >= 2)
        assert time.monotonic() - asked >= ACK_TIMEOUT_S / 2
        assert peers.restores[1].body == peers.restores[0].body
        await peers.hello("lander", 1)
        tick = await next_tick(ground, peers)
        assert (tick.body["step"], tick.body["t_from"], tick.body["epoch"]) == (1, 0.0, 1)
        await run_with_parts(peers, tick)
        await next_tick(ground, peers)
        applied = [e.step for _, e in peers.seen
                   if e.src == "ground" and e.kind == "event" and e.body["name"] == "mode_changed"]
        assert applied == [1, 1]


async def test_a_restarted_ground_resumes_its_run_s_last_commit(
        nats_url: str, mission_id: str) -> None:
    """docs/recovery.md: a ground that starts and finds a commit of its run
    (TWIN_RUN_ID) rolls every service back to it."""
    options: dict[str, Any] = {"run_id": "run-a", "snapshot_every_steps": 1000,
                               "snapshot_every_s": 3600.0}
    async with ground_and_peers(nats_url, mission_id, **options) as (ground, peers):
        await run_with_parts(peers, await next_tick(ground, peers))
        await next_tick(ground, peers)  # step 0 is committed
    async with ground_and_peers(nats_url, mission_id, **options) as (ground, peers):
        await until(lambda: bool(peers.restores) or not peers.ticks.empty())
        assert peers.ticks.empty()
        restore = peers.restores[0].body
        assert (restore["epoch"], restore["commit"]["step"]) == (1, 0)


# --- the clock servicer, the runtime ------------------------------------------------


def test_the_clock_servicer_refuses_a_clock_that_does_not_run_ground_s_plan(
        nats_url: str, mission_id: str) -> None:
    class OtherPlan:
        finished = False

    config = dataclasses.replace(_config(nats_url, mission_id), service="ground")
    ground = GroundRuntime(config, CollectorRegistry(), plan=plan(1.0))
    other = ClockAuthority(ground, OtherPlan(), (), 0.0, True, 1.0)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="must be a GroundCore, not OtherPlan"):
        ClockServicer(other)


class HeldHello(ServiceRuntime):
    """A runtime whose hello waits for the test's word."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.at_hello, self.go = asyncio.Event(), asyncio.Event()

    async def say_hello(self) -> None:
        self.at_hello.set()
        await self.go.wait()
        await super().say_hello()


async def test_a_service_is_not_serving_until_it_has_said_hello(
        nats_url: str, mission_id: str) -> None:
    """gRPC is up before the hello, but health says NOT_SERVING (overall) until
    the service has said hello: only then can ground count it."""
    await create_mission_streams(nats_url, mission_id)
    rt = HeldHello(Probe(6), _config(nats_url, mission_id), CollectorRegistry())
    starting = asyncio.ensure_future(rt.start())
    try:
        await asyncio.wait_for(rt.at_hello.wait(), HANG_S)
        async with grpc.aio.insecure_channel(f"127.0.0.1:{rt.grpc_port}") as ch:
            health = health_pb2_grpc.HealthStub(ch)
            request = health_pb2.HealthCheckRequest(service="")
            assert (await health.Check(request)).status == (
                health_pb2.HealthCheckResponse.NOT_SERVING)
            rt.go.set()
            await asyncio.wait_for(starting, HANG_S)
            assert (await health.Check(request)).status == health_pb2.HealthCheckResponse.SERVING
    finally:
        rt.go.set()
        with contextlib.suppress(Exception):
            await starting
        await rt.stop()


async def test_a_service_back_on_nats_after_an_outage_says_hello_again(
        tmp_path: Path, mission_id: str) -> None:
    """Messages may have been lost while it was away: its hello makes a ground
    in the middle of a rollback send the restore again (runtime.reconnected).
    Its own nats-server, killed and started again on the same port."""
    async with NatsServer(tmp_path) as server:
        await create_mission_streams(server.url, mission_id)
        rt = ServiceRuntime(Probe(6), _config(server.url, mission_id), CollectorRegistry())

        def hellos() -> float | None:
            return rt.registry.get_sample_value("twin_bus_messages_out_total", {
                "mission": mission_id, "service": rt.name, "kind": "hello"})

        try:
            await rt.start()
            assert hellos() == 1.0
            assert server.pid is not None
            os.kill(server.pid, signal.SIGKILL)
            await server.wait_async()
            await server.restart_async()
            await until(lambda: hellos() == 2.0)
        finally:
            await rt.stop()
