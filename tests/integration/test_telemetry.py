"""Truth telemetry (``tm.<service>``) over a real nats-server: one frame per
service per step, grouped into messages of at most ``tm_batch`` frames, none
held back longer than ``tm_delay_s`` or past a status answer."""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

import grpc
import nats
from nats.aio.msg import Msg

from services.cli.mission_log import telemetry_frames
from services.kernel.config import VEHICLES
from services.kernel.envelope import Envelope, decode
from services.kernel.twin_pb import control_pb2, control_pb2_grpc
from services.local.inproc import LocalTwin
from tests.integration.twin_helpers import chatty, plan


class _Telemetry:
    """Every tm message of a mission, decoded, in arrival order per source."""

    def __init__(self) -> None:
        self.messages: dict[str, list[Envelope]] = {}
        self.nc: Any = None

    async def start(self, nats_url: str, mission: str) -> None:
        self.nc = await nats.connect(nats_url)

        async def cb(msg: Msg) -> None:
            env = decode(msg.data, mission=mission)
            self.messages.setdefault(env.src, []).append(env)

        await self.nc.subscribe(f"twin.{mission}.tm.*", cb=cb)
        await self.nc.flush()

    def steps(self, src: str) -> list[int]:
        return [f["step"] for e in self.messages.get(src, []) for f in telemetry_frames(e)]

    async def wait_steps(self, sources: tuple[str, ...], steps: list[int],
                         timeout_s: float) -> bool:
        """Until every source's frames cover exactly ``steps`` (False at the timeout)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while any(self.steps(s) != steps for s in sources):
            if loop.time() > deadline:
                return False
            await asyncio.sleep(0.01)
        return True


async def _single_steps(twin: LocalTwin, n: int) -> None:
    """From the paused start, ``n`` single steps; back when the clock is paused again."""
    clock = twin.ground.clock
    await clock.wait_until(lambda: clock.status.mode == "paused")
    clock.request_steps(n)
    await clock.wait_until(lambda: twin.ground.step >= n and clock.paused)


async def test_every_step_has_one_frame_and_messages_hold_at_most_a_batch(
        nats_url: str, mission_id: str) -> None:
    tm = _Telemetry()
    await tm.start(nats_url, mission_id)
    cores = {v: chatty(v) for v in VEHICLES}
    async with LocalTwin(nats_url, mission_id, plan(hours=3.0), cores=cores,
                         tm_batch=5) as twin:
        await twin.wait_finished(60)
        steps = twin.ground.step
    await tm.nc.drain()
    assert set(tm.messages) == {"ground", *VEHICLES}
    for src in VEHICLES:  # ground sends one frame an hour (GroundCore.telemetry_interval_s)
        assert tm.steps(src) == list(range(1, steps + 1)), src  # none lost, none twice
        envs = tm.messages[src]
        assert sum(len(telemetry_frames(e)) == 5 for e in envs) >= steps // 5 - 2  # they fill
    for envs in tm.messages.values():
        assert all(1 <= len(telemetry_frames(e)) == len(e.body["frames"]) <= 5 for e in envs)
        # telemetry counts its own sequence: 1, 2, 3, ... whatever else was sent
        assert [e.seq for e in envs] == list(range(1, len(envs) + 1))
        for e in envs:  # the envelope is stamped with its last frame
            last = telemetry_frames(e)[-1]
            assert (e.step, e.t) == (last["step"], last["t"])
        frames = [f for e in envs for f in telemetry_frames(e)]
        assert all(a["t"] < b["t"] for a, b in itertools.pairwise(frames))


async def test_a_paused_clock_leaves_no_frame_waiting(nats_url: str, mission_id: str) -> None:
    """Three single steps, then nothing: the frames go out within tm_delay_s."""
    tm = _Telemetry()
    await tm.start(nats_url, mission_id)
    async with LocalTwin(nats_url, mission_id, plan(hours=3.0), start_paused=True,
                         tm_batch=1000, tm_delay_s=0.1) as twin:
        await _single_steps(twin, 3)
        assert await tm.wait_steps(VEHICLES, [1, 2, 3], 5.0)
        assert all(len(tm.messages[v]) == 1 for v in VEHICLES)  # one message of three
        await tm.nc.drain()


async def test_status_answers_after_the_telemetry_up_to_it(nats_url: str,
                                                          mission_id: str) -> None:
    """With a delay far longer than the test, only GetStatus can have sent the frames."""
    tm = _Telemetry()
    await tm.start(nats_url, mission_id)
    async with LocalTwin(nats_url, mission_id, plan(hours=3.0), start_paused=True,
                         tm_batch=1000, tm_delay_s=3600.0) as twin:
        await _single_steps(twin, 4)
        await asyncio.sleep(0.2)
        assert tm.steps("lander") == []  # still waiting for company
        async with grpc.aio.insecure_channel(
                f"127.0.0.1:{twin.vehicles['lander'].grpc_port}") as ch:
            status = await control_pb2_grpc.VehicleControlStub(ch).GetStatus(
                control_pb2.GetStatusRequest())
        assert status.step == 4
        await tm.nc.flush()
        assert await tm.wait_steps(("lander",), [1, 2, 3, 4], 2.0)
        assert tm.steps("orbiter") == []  # asked nobody else
    # Stopping sends what is left.
    assert await tm.wait_steps(("orbiter",), [1, 2, 3, 4], 2.0)
    await tm.nc.drain()
