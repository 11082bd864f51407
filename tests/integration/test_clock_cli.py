"""`twin clock` against a real ground: what each reply says, `until`'s names,
times and waiting.

The twin runs in this test's event loop (real nats-server, real gRPC servers);
the CLI runs as a subprocess against ground's free port, awaited without
blocking that loop.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from services.local.inproc import LocalTwin
from tests.integration.twin_helpers import plan

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
# Wall seconds a CLI call may take on a busy 2-core machine: bounds a hang, not a speed.
CLI_DEADLINE_S = 60.0
# The --timeout of the bounded wait, and how far past it the CLI may end: process
# start and the last GetTime, on a machine shared with other test runs.
WAIT_TIMEOUT_S = 3.0
WAIT_SLACK_S = 30.0

ITEMS = [
    {"id": "cruise_mode", "at": "2024-05-03T10:27:29Z", "target": "lander",
     "command": {"op": "set_mode", "mode": "cruise"}},
    {"id": "late_check", "at": "2024-05-03T11:27:29Z", "target": "lander",
     "command": {"op": "set_mode", "mode": "cruise"}},
]


@dataclass
class Done:
    code: int
    out: str
    err: str
    wall_s: float


@asynccontextmanager
async def ground_port(nats_url: str, mission_id: str, warp: float = 0.0
                      ) -> AsyncIterator[tuple[LocalTwin, str]]:
    """A twin started paused (roll call done); yields it and ground's port."""
    async with LocalTwin(nats_url, mission_id, plan(3.0, ITEMS), start_paused=True,
                         warp=warp) as twin:
        clock = twin.ground.clock
        await asyncio.wait_for(clock.wait_until(lambda: clock.status.mode == "paused"),
                               CLI_DEADLINE_S)
        yield twin, str(twin.ground.grpc_port)


async def twin_clock(port: str, *args: str) -> Done:
    # the in-process twin is plaintext (LocalTwin's default): the CLI is told so
    env = {**os.environ, "COLUMNS": "200", "PYTHONUNBUFFERED": "1", "TWIN_INSECURE": "true"}
    started = time.monotonic()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "services.cli.app", "clock", *args, "--port", port,
        cwd=REPO, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        out, err = await asyncio.wait_for(proc.communicate(), CLI_DEADLINE_S)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode is not None
    return Done(proc.returncode, out.decode(), err.decode(), time.monotonic() - started)


def mode_of(line: str) -> str:
    """The mode word of a clock line (`... phase P  MODE  step N ...`)."""
    return line.split("  step ", 1)[0].rsplit("  ", 1)[1]


def reply_mode(done: Done) -> str:
    """The mode a successful call's reply shows."""
    assert done.code == 0, done
    return mode_of(done.out)


async def test_each_reply_shows_the_clock_after_the_action(nats_url: str,
                                                          mission_id: str) -> None:
    async with ground_port(nats_url, mission_id) as (_, port):
        stepped = await twin_clock(port, "step", "1")  # one second: the next goes to an item
        assert reply_mode(stepped) == "paused"
        assert " step 1 " in stepped.out
        warped = await twin_clock(port, "warp", "1")  # cruise_mode an hour away: far
        assert reply_mode(warped) == "paused"
        assert "warp x1" in warped.out
        resumed = await twin_clock(port, "resume")
        assert reply_mode(resumed) == "running"
        paused = await twin_clock(port, "pause")
        assert reply_mode(paused) == "paused"
        until = await twin_clock(port, "until", "cruise_mode")
        assert reply_mode(until) == "running"
        assert until.out.rstrip().endswith("until cruise_mode"), until.out
        until = await twin_clock(port, "until", "2024-05-03T10:00:00Z")
        assert reply_mode(until) == "running"
        assert until.out.rstrip().endswith("until 2024-05-03T10:00:00Z"), until.out
        paused = await twin_clock(port, "pause")
        assert mode_of(paused.out) == "paused" and "until 2024-05-03T10:00:00Z" in paused.out


async def test_until_wait_is_bounded_by_the_timeout_and_shows_progress(
        nats_url: str, mission_id: str) -> None:
    """At warp 1 the item is an hour of wall time away: the wait must give up
    after --timeout (not per call), exit 1 and leave the clock running toward it."""
    async with ground_port(nats_url, mission_id, warp=1.0) as (twin, port):
        done = await twin_clock(port, "until", "cruise_mode", "--wait",
                                "--timeout", f"{WAIT_TIMEOUT_S:g}")
        assert done.code == 1, done
        assert WAIT_TIMEOUT_S <= done.wall_s < WAIT_TIMEOUT_S + WAIT_SLACK_S, done
        assert (f"timed out after {WAIT_TIMEOUT_S:g} s waiting for cruise_mode; the mission is "
                "still running toward it") in " ".join(done.err.split()), done.err
        assert "waiting for cruise_mode (" in done.out and " running " in done.out, done.out
        clock = twin.ground.clock
        assert (clock.mode, clock.status.run_until_event) == ("running", "cruise_mode")


async def test_until_wait_returns_the_paused_clock_at_the_target(nats_url: str,
                                                                mission_id: str) -> None:
    async with ground_port(nats_url, mission_id) as (_, port):
        done = await twin_clock(port, "until", "cruise_mode", "--wait", "--timeout", "50")
        assert done.code == 0, done
        last = done.out.strip().splitlines()[-1]
        assert last.startswith("reached cruise_mode: 2024-05-03T10:27:29Z"), done.out
        assert mode_of(last) == "paused"


async def test_unknown_names_and_past_instants_exit_2_saying_what_is_valid(
        nats_url: str, mission_id: str) -> None:
    async with ground_port(nats_url, mission_id) as (_, port):
        await twin_clock(port, "step", "1")
        unknown = await twin_clock(port, "until", "not_an_event")
        assert unknown.code == 2, unknown
        err = " ".join(unknown.err.split())
        assert "INVALID_ARGUMENT: unknown event 'not_an_event'" in err, err
        assert "cruise_mode, late_check" in err and "lunar_touchdown" in err, err
        past = await twin_clock(port, "until", "2024-05-01T00:00:00Z")
        assert past.code == 2, past
        assert ("2024-05-01T00:00:00Z is not after the mission's current time "
                "2024-05-03T09:27:30.000Z") in " ".join(past.err.split()), past.err


async def test_until_list_names_plan_items_and_events(nats_url: str, mission_id: str) -> None:
    async with ground_port(nats_url, mission_id) as (_, port):
        await twin_clock(port, "until", "cruise_mode", "--wait", "--timeout", "50")
        listed = await twin_clock(port, "until", "--list")
        assert listed.code == 0, listed
        # Through a pipe: plain aligned lines, a name first, never cut.
        assert "│" not in listed.out and "…" not in listed.out
        rows = {line.split()[0]: line for line in listed.out.splitlines() if line.strip()}
        assert "2024-05-03T10:27:29Z" in rows["cruise_mode"]  # due, and issued then
        assert rows["cruise_mode"].count("2024-05-03T10:27:29Z") == 2
        assert rows["late_check"].rstrip().endswith("-")  # not yet issued
        for event in ("lunar_touchdown", "docking", "earth_landing", "sample_sealed"):
            assert event in rows, listed.out
        help_text = await twin_clock(port, "until", "--help")
        assert "flight-plan item id" in help_text.out and "mission event" in help_text.out
