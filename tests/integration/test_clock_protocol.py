"""The clock authority's side of the lock-step protocol, judged on the bus.

Ground runs for real (``GroundRuntime`` on the session's nats-server, its gRPC
server on a free port); the services it expects are played by the test, which
answers the roll call and each tick with hellos and acknowledgements written by
hand. So every field of an ack is chosen, and what the clock makes of it is
read where the contract says it shows: the next tick's body (README "NATS
subjects": ``step``, ``t_from``, ``t_to``, ``expect``), ClockState
(proto/twin/v1/clock.proto: ``mode``, ``waiting_for``, ``steps_per_second``,
the run-until target), the metrics and log lines of docs/contract.md and
docs/observability.md, and the commits and rollbacks of docs/recovery.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import math
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
import nats
import pytest
from nats.aio.client import Client
from prometheus_client import CollectorRegistry

from services.ground.service import GroundRuntime
from services.kernel import runtime
from services.kernel.config import ServiceConfig
from services.kernel.envelope import Envelope, decode, encode
from services.kernel.steprule import FIRST_STEP_S, PROMPT_STEP_S
from services.kernel.twin_pb import clock_pb2, clock_pb2_grpc, control_pb2, control_pb2_grpc
from tests.integration.twin_helpers import plan

#: The services the clock waits for here, in the order of ``TWIN_EXPECT``.
PEERS = ("orbiter", "lander")
#: A bound on a hang, not a limit on the run time.
HANG_S = 10.0
#: Wall seconds in which a step that must not be taken is looked for.
NOT_TAKEN_S = 0.3
#: Wall seconds a step is held, longer than the steps/s window of 1 s (docs/contract.md).
HELD_S = 1.2
#: Envelope kinds of mission data, which ``expect`` counts (telemetry feeds no inbox).
DATA_KINDS = ("event", "command", "transfer", "downlink")
#: Mission seconds: limits well below ground's own and the plan's length.
LONG_S, SHORT_S = 600.0, 120.0


class Peers:
    """The services the clock expects, played over a plain NATS connection."""

    def __init__(self, nc: Client, mission: str) -> None:
        self.nc, self.mission = nc, mission
        self.ticks: asyncio.Queue[tuple[Envelope, bytes]] = asyncio.Queue()
        self.rolls = 0
        self.present: dict[str, int] = {}  # who answers roll calls, in which epoch
        self.restores: list[Envelope] = []
        self.seen: list[tuple[str, Envelope]] = []  # everything on the mission's subjects
        self._seq = itertools.count(1)

    async def listen(self) -> None:
        async def on_msg(msg: Any) -> None:
            env = decode(msg.data, mission=self.mission)
            self.seen.append((msg.subject, env))
            if env.kind == "tick":
                self.ticks.put_nowait((env, msg.data))
            elif msg.subject == f"twin.{self.mission}.clock.roll":  # answered with a hello
                self.rolls += 1
                for src, epoch in list(self.present.items()):
                    await self.hello(src, epoch, flush=False)
            elif env.kind == "restore":
                self.restores.append(env)

        await self.nc.subscribe(f"twin.{self.mission}.>", cb=on_msg)
        await self.nc.flush()

    def subject(self, kind: str, service: str) -> str:
        return f"twin.{self.mission}.{kind}.{service}"

    async def send(self, subject: str, src: str, kind: str, body: dict[str, Any],
                   step: int = 0, t: float = 0.0, *, flush: bool = True) -> None:
        env = Envelope(self.mission, src, next(self._seq), t, step, kind, body)
        await self.nc.publish(subject, encode(env))
        if flush:  # not from a subscription's callback
            await self.nc.flush()

    async def hello(self, src: str, epoch: int = 0, *, flush: bool = True) -> None:
        self.present[src] = epoch
        await self.send(self.subject("clock.hello", src), src, "hello",
                        {"step": 0, "t": 0.0, "grpc_port": 0, "epoch": epoch, "boot": src},
                        flush=flush)

    async def ack(self, src: str, step: int, **body: Any) -> None:
        await self.send(self.subject("clock.ack", src), src, "ack", {"step": step, **body},
                        step=step)

    async def ack_all(self, tick: Envelope, max_dt_s: float = LONG_S, **body: Any) -> None:
        """Every peer acks ``tick`` (in its epoch, if it names one)."""
        if "epoch" in tick.body:
            body["epoch"] = tick.body["epoch"]
        for src in PEERS:
            await self.ack(src, tick.body["step"], max_dt_s=max_dt_s, **body)

    async def tick(self) -> Envelope:
        return (await self.tick_bytes())[0]

    async def tick_bytes(self) -> tuple[Envelope, bytes]:
        return await asyncio.wait_for(self.ticks.get(), HANG_S)

    async def no_tick(self) -> None:
        """No tick within NOT_TAKEN_S wall seconds: the clock is still waiting."""
        with contextlib.suppress(TimeoutError):
            env, _ = await asyncio.wait_for(self.ticks.get(), NOT_TAKEN_S)
            raise AssertionError(f"a tick was sent: {env.body}")

    async def run(self, n: int, max_dt_s: float = LONG_S, **body: Any) -> Envelope:
        """Acknowledge the next ``n`` ticks; return the one after them."""
        tick = await self.tick()
        for _ in range(n):
            await self.ack_all(tick, max_dt_s, **body)
            tick = await self.tick()
        return tick


@contextlib.asynccontextmanager
async def ground_and_peers(nats_url: str, mission: str, *, hours: float = 12.0,
                           items: list[dict[str, Any]] | None = None, present: bool = True,
                           **config: Any) -> AsyncIterator[tuple[GroundRuntime, Peers]]:
    """Ground with its clock running (or paused), and the peers it expects; with
    ``present`` the peers have answered the roll call."""
    # The protocol, not its security (tests/integration/test_secure_run.py).
    options: dict[str, Any] = {"ack_timeout_s": HANG_S, "snapshot_every_steps": 0,
                               "insecure": True}
    options.update(config)
    cfg = ServiceConfig(service="ground", mission_id=mission, nats_urls=(nats_url,),
                        grpc_port=0, metrics_port=-1, expect=PEERS, **options)
    ground = GroundRuntime(cfg, CollectorRegistry(), plan=plan(hours, items))
    nc = await nats.connect(nats_url)
    peers = Peers(nc, mission)
    await peers.listen()
    try:
        await ground.start()
        if present:
            for src in PEERS:
                await peers.hello(src)
        yield ground, peers
    finally:
        await ground.stop()
        await nc.drain()


def sample(ground: GroundRuntime, name: str, **labels: str) -> float | None:
    return ground.registry.get_sample_value(
        name, {"mission": ground.config.mission_id, "service": "ground", **labels})


async def get_time(ground: GroundRuntime) -> clock_pb2.ClockState:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{ground.grpc_port}") as ch:
        state: clock_pb2.ClockState = await clock_pb2_grpc.MissionClockStub(ch).GetTime(
            clock_pb2.GetTimeRequest())
        return state


async def until(predicate: Callable[[], bool]) -> None:
    """Wait (bounded by HANG_S) for a condition the clock's loop brings about."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + HANG_S
    while not predicate():
        assert loop.time() < deadline, "the condition never came"
        await asyncio.sleep(0.01)


def length(tick: Envelope) -> float:
    return float(tick.body["t_to"] - tick.body["t_from"])


def records(caplog: pytest.LogCaptureFixture, message: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "twin.clock" and r.getMessage() == message]


# --- the roll call and the first tick ------------------------------------------


async def test_the_clock_starts_when_every_expected_service_has_said_hello(
        nats_url: str, mission_id: str) -> None:
    async with ground_and_peers(nats_url, mission_id, present=False,
                                start_paused=True) as (ground, peers):
        await until(lambda: peers.rolls >= 2)  # the roll is called again while some are missing
        state = await get_time(ground)
        assert (state.mode, list(state.waiting_for)) == ("starting", list(PEERS))
        assert state.steps_per_second == 0.0 and state.step == 0
        await peers.hello("relay")  # not expected here: changes nothing
        await peers.hello("orbiter")
        await until(lambda: ground.clock.status.waiting_for == ["lander"])
        assert (await get_time(ground)).mode == "starting"
        await peers.hello("lander")
        await until(lambda: ground.clock.status.mode == "paused")
        state = await get_time(ground)
        assert (state.mode, list(state.waiting_for), state.step) == ("paused", [], 0)
        assert state.steps_per_second == 0.0  # no step yet: no rate
        assert sample(ground, "twin_clock_paused") == 1.0
        await peers.no_tick()  # started paused: no tick before Resume
        ground.clock.resume()
        tick = await peers.tick()
        assert (tick.src, tick.step, tick.t) == ("ground", 0, 0.0)  # sent after step 0, at t 0
        assert tick.body == {"step": 1, "t_from": 0.0, "t_to": FIRST_STEP_S, "expect": {}}
        assert (await get_time(ground)).mode == "running"
        # docs/contract.md: the gauges say what the clock does now, not at its last pause.
        assert sample(ground, "twin_clock_paused") == 0.0
        ground.clock.set_warp(100.0)
        assert sample(ground, "twin_clock_warp_ratio") == 100.0
        ground.clock.pause()
        assert sample(ground, "twin_clock_paused") == 1.0
        ground.clock.request_steps(1)
        assert sample(ground, "twin_clock_paused") == 0.0


# --- which acks count ------------------------------------------------------------


async def test_only_an_expected_service_s_ack_of_the_current_step_and_epoch_counts(
        nats_url: str, mission_id: str) -> None:
    """Acks of another step or epoch, or from a service the clock does not wait
    for, are ignored (docs/recovery.md: "Ticks and acks of an older epoch are
    ignored"), and a second ack of one service counts once: none of them makes
    the clock step, nor shortens the next step with its small limit."""
    async with ground_and_peers(nats_url, mission_id) as (ground, peers):
        tick = await peers.tick()
        assert tick.body["step"] == 1
        await peers.ack("lander", 1, max_dt_s=LONG_S)
        await peers.ack("orbiter", 2, max_dt_s=5.0)  # a step not sent yet
        await peers.ack("orbiter", 0, max_dt_s=5.0)  # a step before
        await peers.ack("orbiter", 1, max_dt_s=5.0, epoch=3)  # another epoch
        await peers.ack("relay", 1, max_dt_s=5.0)  # not expected
        await peers.no_tick()
        assert ground.step == 0 and ground.clock.mode == "running"
        await peers.ack("lander", 1, max_dt_s=5.0)  # lander again: counted once
        await peers.no_tick()
        await peers.ack("orbiter", 1, max_dt_s=LONG_S)
        tick = await peers.tick()
        assert tick.body["step"] == 2 and length(tick) == LONG_S
        assert ground.step == 1
        assert sample(ground, "twin_bus_decode_errors_total", reason="bad_ack") is None


async def test_an_ack_whose_body_is_unusable_is_counted_logged_and_dropped(
        nats_url: str, mission_id: str, caplog: pytest.LogCaptureFixture) -> None:
    """docs/contract.md: ``bad_ack``, an ack for the current step whose
    ``max_dt_s`` is not a number or whose ``pub`` is not {subject: count}. A
    number may be an integer, a count may be 0, and an ack naming no limit
    leaves the next step at the first step's length."""
    caplog.set_level(logging.WARNING, logger="twin.clock")
    async with ground_and_peers(nats_url, mission_id) as (ground, peers):
        tick = await peers.tick()
        bad = ({"step": 1, "max_dt_s": "soon", "note": "x" * 300},
               {"step": 1, "max_dt_s": 60.0, "pub": {"twin.x.evt.orbiter": 1.5}},
               {"step": 1, "max_dt_s": 60.0, "pub": {"twin.x.evt.orbiter": -1}})
        for body in bad:
            await peers.send(peers.subject("clock.ack", "orbiter"), "orbiter", "ack", body, 1)
        await until(lambda: sample(ground, "twin_bus_decode_errors_total",
                                   reason="bad_ack") == len(bad))
        await peers.no_tick()
        logged = records(caplog, "dropped malformed acknowledgement")
        assert [(r.levelno, r.peer, r.step) for r in logged] == (  # type: ignore[attr-defined]
            [(logging.WARNING, "orbiter", 1)] * len(bad))
        assert [r.body for r in logged] == [repr(b)[:200] for b in bad]  # type: ignore[attr-defined]
        await peers.ack("orbiter", 1)  # no limit named
        await peers.ack("lander", 1, max_dt_s=300, pub={peers.subject("xfer", "orbiter"): 0})
        tick = await peers.tick()
        assert tick.body["step"] == 2 and length(tick) == FIRST_STEP_S
        await peers.ack("orbiter", 2, max_dt_s=300)
        await peers.ack("lander", 2, max_dt_s=400)
        tick = await peers.tick()
        assert length(tick) == 300.0
        assert sample(ground, "twin_bus_decode_errors_total", reason="bad_ack") == len(bad)


# --- the next step: its length and what it expects -------------------------------


async def test_the_next_step_is_the_smallest_limit_acked_or_short_after_a_prompt(
        nats_url: str, mission_id: str) -> None:
    """The acks' largest steps bound the next (a limit of 0 sets none); an ack
    saying ``prompt`` (a message to act on at once) makes it PROMPT_STEP_S; a
    run-until target ends a step exactly there, and pauses the clock."""
    async with ground_and_peers(nats_url, mission_id) as (ground, peers):
        tick = await peers.tick()
        # (orbiter's limit, lander's limit, lander says prompt) -> the next step's length
        limits: list[tuple[float, float, bool, float]] = [
            (SHORT_S, LONG_S, False, SHORT_S),
            (LONG_S, 450.0, True, PROMPT_STEP_S),
            (LONG_S, 450.0, False, 450.0),
            (0.0, 450.0, False, 450.0)]
        for orbiter, lander, prompt, expected in limits:
            step = tick.body["step"]
            await peers.ack("orbiter", step, max_dt_s=orbiter)
            extra = {"prompt": True} if prompt else {}
            await peers.ack("lander", step, max_dt_s=lander, **extra)
            tick = await peers.tick()
            assert length(tick) == pytest.approx(expected), (orbiter, lander, prompt)
        target = tick.body["t_from"] + 1000.0
        ground.clock.run_until(target, None)
        assert (ground.clock.status.run_until_t_s, ground.clock.status.run_until_event) == (
            target, "")
        state = await get_time(ground)
        assert (state.run_until_mission_time_s, state.run_until_event) == (target, "")
        while tick.body["t_to"] < target:
            await peers.ack_all(tick, 450.0)
            tick = await peers.tick()
        assert tick.body["t_to"] == target  # 450 + 450 + 100: the last stops on it
        await peers.ack_all(tick, 450.0)
        await until(lambda: ground.clock.status.mode == "paused")
        state = await get_time(ground)
        assert (state.mission_time_s, state.mode, state.run_until_mission_time_s) == (
            target, "paused", -1.0)
        await peers.no_tick()


async def test_a_tick_expects_what_every_service_published_in_the_step_before(
        nats_url: str, mission_id: str) -> None:
    """``expect`` of tick k + 1 counts, per subject, the messages of step k: the
    vehicles' (summed over their acks' ``pub``) and ground's own (here a plan
    command to the lander, issued in the step that ends on its instant)."""
    items = [{"id": "cruise", "at": "2024-05-03T09:37:29Z", "target": "lander",  # t = 600 s
              "command": {"op": "set_mode", "mode": "cruise"}}]
    async with ground_and_peers(nats_url, mission_id, items=items) as (_, peers):
        tick = await peers.run(1, max_dt_s=SHORT_S)  # 1 s, then 120 s steps up to 600 s
        assert tick.body["expect"] == {}
        while tick.body["t_to"] < 600.0:
            await peers.ack_all(tick, SHORT_S)
            tick = await peers.tick()
            assert tick.body["expect"] == {}
        assert tick.body["t_to"] == 600.0
        step = tick.body["step"]
        cmd_lander, xfer_orbiter = peers.subject("cmd", "lander"), peers.subject("xfer", "orbiter")
        await peers.ack("orbiter", step, max_dt_s=SHORT_S, pub={cmd_lander: 2})
        await peers.ack("lander", step, max_dt_s=SHORT_S,
                        pub={xfer_orbiter: 1, cmd_lander: 1})
        after = await peers.tick()
        own: dict[str, int] = {}  # ground's messages of that step, as the bus carried them
        for subject, env in peers.seen:
            if env.src == "ground" and env.step == step and env.kind in DATA_KINDS:
                own[subject] = own.get(subject, 0) + 1
        assert own.get(cmd_lander) == 1  # the plan's command went out in that step
        expected = {xfer_orbiter: 1, cmd_lander: 2 + 1}
        for subject, n in own.items():
            expected[subject] = expected.get(subject, 0) + n
        assert after.body["expect"] == expected
        await peers.ack_all(after, SHORT_S)
        assert (await peers.tick()).body["expect"] == {}  # nothing published in that one


async def test_ground_takes_a_vehicle_s_event_in_the_step_it_was_published(
        nats_url: str, mission_id: str) -> None:
    """Ground takes each step last, with what the vehicles published in it: an
    ack counting an event that is still on its way holds the step until it is in."""
    async with ground_and_peers(nats_url, mission_id) as (ground, peers):
        tick = await peers.run(2)
        step, at = tick.body["step"], tick.body["t_to"]
        evt = peers.subject("evt", "lander")
        await peers.ack("orbiter", step, max_dt_s=LONG_S)
        await peers.ack("lander", step, max_dt_s=LONG_S, pub={evt: 1})
        await asyncio.sleep(NOT_TAKEN_S)  # the event comes after the ack
        assert ground.step == step - 1
        await peers.send(evt, "lander", "event", {"name": "test_mark"}, step, at)
        after = await peers.tick()  # so ground has taken the step
        assert after.body["step"] == step + 1
        assert ground.core.seen.get("test_mark") == at


# --- a late ack ----------------------------------------------------------------


async def test_an_overdue_ack_is_reported_and_the_report_cleared_when_it_comes(
        nats_url: str, mission_id: str, caplog: pytest.LogCaptureFixture) -> None:
    """docs/observability.md: ``twin_clock_ack_overdue{peer}`` is 1 while that
    peer's ack is later than the ack timeout; ClockState says "waiting" and
    names it; the tick is sent again. When it comes, the report is cleared."""
    caplog.set_level(logging.INFO, logger="twin.clock")
    timeout_s = 0.4
    async with ground_and_peers(nats_url, mission_id, ack_timeout_s=timeout_s) as (ground, peers):
        clock = ground.clock
        tick, data = await peers.tick_bytes()
        sent = time.monotonic()
        await peers.ack("lander", 1, max_dt_s=LONG_S)
        _, again_data = await peers.tick_bytes()  # the same tick, sent again...
        assert again_data == data
        assert time.monotonic() - sent >= timeout_s / 2  # ... once the ack is overdue
        await until(lambda: clock.status.waiting_for == ["orbiter"])
        state = await get_time(ground)
        assert (state.mode, list(state.waiting_for), state.step) == ("waiting", ["orbiter"], 0)
        assert sample(ground, "twin_clock_ack_overdue", peer="orbiter") == 1.0
        assert sample(ground, "twin_clock_ack_overdue", peer="lander") == 0.0
        waiting = records(caplog, "waiting for acknowledgement")
        assert waiting and waiting[0].levelno == logging.WARNING
        assert (waiting[0].step, waiting[0].waiting_for) == (1, "orbiter")  # type: ignore[attr-defined]
        clock.pause()  # no further step starts; the one in flight still waits
        state = await get_time(ground)
        assert (state.mode, list(state.waiting_for)) == ("paused", ["orbiter"])
        clock.resume()
        assert (await get_time(ground)).mode == "waiting"
        modes: list[str] = []

        def stepped() -> bool:
            if ground.step >= 1 and not modes:
                modes.append(clock.status.mode)
            return bool(modes)

        done = asyncio.ensure_future(clock.wait_until(stepped))
        await peers.ack("orbiter", 1, max_dt_s=LONG_S)
        await asyncio.wait_for(done, HANG_S)
        assert modes == ["running"]
        tick = await peers.tick()
        while tick.body["step"] == 1:  # a copy sent again before the ack landed
            tick = await peers.tick()
        assert tick.body["step"] == 2
        state = await get_time(ground)
        assert (state.mode, list(state.waiting_for)) == ("running", [])
        assert clock.status.waiting_for == []
        assert sample(ground, "twin_clock_ack_overdue", peer="orbiter") == 0.0
        complete = records(caplog, "acknowledgements complete again")
        assert [(r.levelno, r.step) for r in complete] == [  # type: ignore[attr-defined]
            (logging.INFO, 1)]


# --- pacing, rates, stopping ----------------------------------------------------


async def test_at_a_warp_mission_time_keeps_pace_with_wall_time(
        nats_url: str, mission_id: str) -> None:
    """SetWarp while running, and Step while paused at a warp: mission time never
    runs ahead of warp x the wall time since the call, and does not fall far
    behind it either (generous: the machine is shared)."""
    warp, step_s = 1200.0, 60.0
    async with ground_and_peers(nats_url, mission_id) as (ground, peers):
        clock = ground.clock
        tick = await peers.run(8, max_dt_s=step_s)  # as fast as possible: 1 s, then 60 s
        called = time.monotonic()
        clock.set_warp(warp)  # with the step in flight
        t0 = tick.body["t_to"]  # where the paced steps start
        await peers.ack_all(tick, step_s)
        seen: list[tuple[float, float]] = []
        while not seen or seen[-1][0] - called < 1.0:
            tick = await peers.tick()
            seen.append((time.monotonic(), tick.body["t_to"]))
            await peers.ack_all(tick, step_s)
        for wall, t_to in seen:
            assert t_to - t0 <= warp * (wall - called) + 1e-6
        wall, t_to = seen[-1]
        assert t_to - t0 >= warp * (wall - called) / 3.0
        clock.pause()
        with contextlib.suppress(TimeoutError):  # a step sent before the pause completes
            late, _ = await asyncio.wait_for(peers.ticks.get(), NOT_TAKEN_S)
            await peers.ack_all(late, step_s)
        await until(lambda: clock.status.mode == "paused")
        t0, called = ground.t_s, time.monotonic()
        clock.request_steps(5)  # paced too
        for _ in range(5):
            tick = await peers.tick()
            assert tick.body["t_to"] - t0 <= warp * (time.monotonic() - called) + 1e-6
            await peers.ack_all(tick, step_s)
        await until(lambda: clock.status.mode == "paused")
        assert ground.t_s == t0 + 5 * step_s
        assert (await get_time(ground)).warp == warp


async def test_steps_per_second_is_the_rate_so_far_then_the_last_window_s(
        nats_url: str, mission_id: str) -> None:
    """ClockState.steps_per_second: before a one-second window has closed, the
    steps since stepping began over the wall time since; then the last window's
    rate, also ``twin_clock_step_rate_per_second``."""
    async with ground_and_peers(nats_url, mission_id, start_paused=True) as (ground, peers):
        clock = ground.clock
        await until(lambda: clock.status.mode == "paused")
        assert clock.steps_per_second() == 0.0
        resumed = time.monotonic()
        clock.request_steps(3)
        tick = await peers.tick()
        ticked = time.monotonic()
        for n in range(3):
            await peers.ack_all(tick)
            if n < 2:
                tick = await peers.tick()
        await until(lambda: clock.status.mode == "paused")
        before = time.monotonic()
        rate = clock.steps_per_second()
        after = time.monotonic()
        if clock.status.steps_per_second == 0.0:  # no window closed (the usual case)
            assert 3 / (after - resumed) <= rate <= 3 / (before - ticked)
        assert sample(ground, "twin_clock_steps_total") == 3.0
        state = await get_time(ground)
        assert state.steps_per_second > 0.0 and state.step == 3
        # A step held longer than the window: one step over that wall time.
        earlier = clock.status.steps_per_second  # 0.0 unless a loaded machine closed one
        clock.resume()
        tick = await peers.tick()
        await asyncio.sleep(HELD_S)
        await peers.ack_all(tick)
        await peers.tick()
        closed = time.monotonic()
        await until(lambda: clock.status.steps_per_second not in (0.0, earlier))
        rate = clock.steps_per_second()
        assert 1 / (closed - resumed) <= rate <= 1 / HELD_S
        assert sample(ground, "twin_clock_step_rate_per_second") == rate
        assert (await get_time(ground)).steps_per_second == rate


async def test_a_paused_clock_stops_when_its_service_fails(
        nats_url: str, mission_id: str) -> None:
    async with ground_and_peers(nats_url, mission_id, start_paused=True) as (ground, peers):
        clock = ground.clock
        await until(lambda: clock.status.mode == "paused")
        ground.fail("handler", RuntimeError("a handler failed"))
        await asyncio.wait_for(clock.finished.wait(), HANG_S)
        assert clock.status.mode == "paused" and ground.step == 0
        await peers.no_tick()


# --- snapshots ----------------------------------------------------------------


def part(src: str, step: int) -> dict[str, Any]:
    """What a peer acks as its snapshot's place (opaque to the clock)."""
    return {"seq": step, "who": src}


async def run_with_parts(peers: Peers, tick: Envelope, max_dt_s: float = LONG_S) -> None:
    """Ack ``tick`` in its epoch, with a snapshot part when it asks for one."""
    snap, epoch = tick.body.get("snap"), tick.body.get("epoch", 0)
    for src in PEERS:
        body = {"snap": part(src, snap)} if snap is not None else {}
        await peers.ack(src, tick.body["step"], max_dt_s=max_dt_s, epoch=epoch, **body)


async def test_a_snapshot_is_asked_on_the_first_tick_then_every_n_steps(
        nats_url: str, mission_id: str) -> None:
    """docs/recovery.md: on the first tick and then every TWIN_SNAPSHOT_EVERY_STEPS
    steps tick k + 1 carries ``snap: k``; the set is committed (step k, its
    mission time, every part) when every ack of k + 1 is in."""
    async with ground_and_peers(nats_url, mission_id, snapshot_every_steps=3,
                                snapshot_every_s=3600.0) as (ground, peers):
        ticks = []
        tick = await peers.tick()
        for _ in range(7):
            ticks.append(tick)
            await run_with_parts(peers, tick)
            tick = await peers.tick()
        assert [t.body.get("snap") for t in ticks] == [0, None, None, 3, None, None, 6]
        assert sample(ground, "twin_snapshot_commits_total") == 3.0
        assert ground.snapstore is not None
        commit = await ground.snapstore.last_commit()
        assert commit is not None
        assert (commit["step"], commit["t_s"], commit["epoch"]) == (
            6, ticks[6].body["t_from"], 0)
        assert {k: commit["parts"][k] for k in PEERS} == {p: part(p, 6) for p in PEERS}
        assert set(commit["parts"]) == {*PEERS, "ground"}


async def test_a_snapshot_is_asked_once_its_wall_period_has_passed(
        nats_url: str, mission_id: str) -> None:
    async with ground_and_peers(nats_url, mission_id, snapshot_every_steps=1000,
                                snapshot_every_s=0.3) as (ground, peers):
        tick = await peers.tick()
        assert tick.body["snap"] == 0
        await run_with_parts(peers, tick)
        tick = await peers.tick()
        assert "snap" not in tick.body  # quick: neither period has passed
        await asyncio.sleep(0.5)
        await run_with_parts(peers, tick)
        tick = await peers.tick()
        assert tick.body["snap"] == 2
        await run_with_parts(peers, tick)
        await peers.tick()
        assert sample(ground, "twin_snapshot_commits_total") == 2.0


async def test_with_snapshots_off_no_tick_asks_for_one(nats_url: str, mission_id: str) -> None:
    """And every step is counted and timed (docs/observability.md): the peers
    here ack at once, so each step takes far less than the top bucket's 5 s."""
    async with ground_and_peers(nats_url, mission_id) as (ground, peers):
        tick = await peers.run(5)
        assert tick.body["step"] == 6 and ground.step == 5
        assert not any("snap" in e.body for _, e in peers.seen if e.kind == "tick")
        assert sample(ground, "twin_snapshot_commits_total") is None
        assert sample(ground, "twin_clock_steps_total") == 5.0
        duration = "twin_clock_step_duration_seconds"
        assert sample(ground, f"{duration}_count") == 5.0
        assert sample(ground, f"{duration}_bucket", le="5.0") == 5.0
        for peer in PEERS:
            assert sample(ground, "twin_clock_ack_latency_seconds_count", peer=peer) == 5.0


async def test_ground_announces_a_fault_injected_into_it_at_the_start_of_its_next_step(
        nats_url: str, mission_id: str) -> None:
    """Ground takes every step by the step rule too: a fault injected between
    steps is announced (``fault_injected``) at the start of the next one, and
    the tick after it counts that event."""
    async with ground_and_peers(nats_url, mission_id) as (ground, peers):
        tick = await peers.run(2)
        async with grpc.aio.insecure_channel(f"127.0.0.1:{ground.grpc_port}") as ch:
            control = control_pb2_grpc.VehicleControlStub(ch)
            await control.InjectFault(control_pb2.InjectFaultRequest(kind="drop_telemetry"))
        await peers.ack_all(tick)
        after = await peers.tick()
        events = [(subject, e) for subject, e in peers.seen
                  if e.src == "ground" and e.kind == "event"]
        assert [(e.body["name"], e.step, e.t) for _, e in events] == [
            ("fault_injected", tick.body["step"], tick.body["t_from"])]
        assert after.body["expect"] == {events[0][0]: 1}


# --- messages that never arrived: a rollback --------------------------------------


async def answer_restores(peers: Peers, delay_s: float) -> None:
    """The peers restore whatever ground asks and say hello in its epoch."""
    answered = 0
    while True:
        if len(peers.restores) > answered:
            epoch = peers.restores[-1].body["epoch"]
            answered = len(peers.restores)
            await asyncio.sleep(delay_s)
            for src in PEERS:
                await peers.hello(src, epoch)
        await asyncio.sleep(0.01)


async def test_messages_that_never_arrived_roll_the_mission_back(
        nats_url: str, mission_id: str, caplog: pytest.LogCaptureFixture,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A vehicle acks that messages never reached it, or ground's own never
    come: the mission goes back to the last commit (reason ``missing``), the
    clock reads "recovering" until every service is back, and the steps run
    again in the new epoch, which every tick then carries."""
    monkeypatch.setattr(runtime, "DELIVERY_TIMEOUT_S", 0.2)
    caplog.set_level(logging.ERROR, logger="twin.clock")
    async with ground_and_peers(nats_url, mission_id, snapshot_every_steps=2,
                                snapshot_every_s=3600.0) as (ground, peers):
        answering = asyncio.ensure_future(answer_restores(peers, 0.3))
        try:
            tick = await peers.tick()
            while tick.body["step"] < 4:  # commits at steps 0 and 2
                await run_with_parts(peers, tick)
                tick = await peers.tick()
            assert ground.clock.commit is not None and ground.clock.commit["step"] == 2
            redo_from = ground.clock.commit["t_s"]
            lost = {peers.subject("xfer", "orbiter"): 1}
            await peers.ack("orbiter", 4, missing=lost)
            await until(lambda: bool(peers.restores))
            assert ground.clock.mode == "recovering"  # as GetTime answers it
            tick = await peers.tick()
            assert (tick.body["step"], tick.body["t_from"], tick.body["epoch"]) == (
                3, redo_from, 1)
            assert sample(ground, "twin_rollbacks_total", reason="missing") == 1.0
            logged = records(caplog, "messages never reached a service")
            assert [(r.peer, r.step, r.missing) for r in logged] == [  # type: ignore[attr-defined]
                ("orbiter", 4, lost)]
            # Ground's own: an event an ack counts never comes.
            await peers.ack("orbiter", 3, max_dt_s=LONG_S, epoch=1)
            await peers.ack("lander", 3, max_dt_s=LONG_S, epoch=1,
                            pub={peers.subject("evt", "lander"): 1})
            await until(lambda: len(peers.restores) >= 2)
            tick = await peers.tick()
            assert (tick.body["step"], tick.body["epoch"]) == (3, 2)
            assert sample(ground, "twin_rollbacks_total", reason="missing") == 2.0
            assert math.isclose(tick.body["t_from"], redo_from)
            await run_with_parts(peers, tick)
            await until(lambda: ground.step == 3)
        finally:
            answering.cancel()
