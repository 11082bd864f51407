"""`twin clock until` takes every published event, not only the report's.

``command_rejected`` is published by the shared vehicle core, never by a
vehicle's own module: the catalogue (services/kernel/events.py) must still
name it, or ground refuses to run until it. Here a flight plan sends the
stowed lander a command it must refuse, and the CLI runs the clock until the
refusal against a real ground (real nats-server, real gRPC servers).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest

from services.dynamics.timescale import mission_s_from_utc
from services.local.inproc import LocalTwin
from tests.integration.test_clock_cli import CLI_DEADLINE_S, mode_of, twin_clock
from tests.integration.twin_helpers import plan

pytestmark = pytest.mark.slow

# Surface set-up while stowed in the CE-6 stack: the lander refuses it.
REFUSED_AT_UTC = "2024-05-03T10:27:29Z"
SAME_INSTANT_S = 1e-6
ITEMS = [{"id": "early_setup", "at": REFUSED_AT_UTC, "target": "lander",
          "command": {"op": "surface_setup"}}]


@asynccontextmanager
async def paused_twin(nats_url: str, mission_id: str) -> AsyncIterator[tuple[LocalTwin, str]]:
    async with LocalTwin(nats_url, mission_id, plan(2.0, ITEMS), start_paused=True) as twin:
        clock = twin.ground.clock
        await asyncio.wait_for(clock.wait_until(lambda: clock.status.mode == "paused"),
                               CLI_DEADLINE_S)
        yield twin, str(twin.ground.grpc_port)


async def test_until_command_rejected_is_accepted_and_pauses_at_the_refusal(
        nats_url: str, mission_id: str) -> None:
    async with paused_twin(nats_url, mission_id) as (twin, port):
        done = await twin_clock(port, "until", "command_rejected", "--wait", "--timeout", "50")
        assert done.code == 0, done
        last = done.out.strip().splitlines()[-1]
        assert last.startswith("reached command_rejected: "), done.out
        assert mode_of(last) == "paused"
        # refused in the step that applied the command issued at the plan instant
        seen_s = twin.ground.core.seen["command_rejected"]
        assert seen_s == pytest.approx(mission_s_from_utc(REFUSED_AT_UTC), abs=SAME_INSTANT_S)
