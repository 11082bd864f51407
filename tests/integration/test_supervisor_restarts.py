"""The supervisor brings back a child that died, with its ports and environment,
and stops the run for a failure inside a service or a child that keeps dying.

Real processes throughout: the services themselves over a real nats-server,
and small Python children that exit with the code a test needs.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

import orjson
import pytest

from services.cli.restarts import EXIT_SERVICE_FAILED
from services.cli.supervisor import (
    ChildExit,
    Restart,
    RestartPolicy,
    RunConfig,
    Supervisor,
    read_log_tail,
    write_run_record,
)
from services.kernel.security import Security
from tests.integration.test_cli import _survivors, _twin, plan_path, twin_up
from tests.integration.twin_helpers import create_mission_streams

__all__ = ["plan_path"]  # a fixture, used by name

# Wall-clock allowances: generous, because they bound a hang, not a speed.
HANG_S = 60.0
#: Backoff of the tests whose children die at once: short, so a crash loop
#: reaches the cap in well under a second.
QUICK = RestartPolicy(first_delay_s=0.01, max_delay_s=0.02, max_restarts=3)


class ScriptChild:
    """A real child process that exits with `code` once started (a Watched)."""

    def __init__(self, code: int, log_path: Path) -> None:
        self.code = code
        self.log_path = log_path
        self.spawned: list[int] = []
        self._proc: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        script = f"import sys; print('exiting {self.code}'); sys.exit({self.code})"
        with self.log_path.open("ab") as log:
            self._proc = await asyncio.create_subprocess_exec(
                sys.executable, "-c", script, stdout=log, stderr=asyncio.subprocess.STDOUT)
        self.spawned.append(self._proc.pid)

    @property
    def pid(self) -> int | None:
        return None if self._proc is None else self._proc.pid

    async def wait_async(self) -> int:
        assert self._proc is not None
        return await self._proc.wait()

    async def restart_async(self) -> None:
        await self.start()

    def log_tail(self) -> str:
        return read_log_tail(self.log_path)


def _config(tmp_path: Path, nats_url: str, mission_id: str,
            policy: RestartPolicy = QUICK, services: tuple[str, ...] = ("relay",)) -> RunConfig:
    return RunConfig(security=Security.plaintext(), state_dir=tmp_path, nats_url=nats_url,
                     mission_id=mission_id, services=services, free_ports=True,
                     log_level="WARNING", restart=policy)


def _environ(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return dict(item.decode().split("=", 1) for item in raw if b"=" in item)


def _restart_seen(sup: Supervisor) -> asyncio.Queue[Restart]:
    seen: asyncio.Queue[Restart] = asyncio.Queue()
    sup.on_restart.append(seen.put_nowait)
    return seen


async def test_a_killed_service_comes_back_with_its_ports_and_environment(
        tmp_path: Path, nats_url: str, mission_id: str) -> None:
    await create_mission_streams(nats_url, mission_id)  # relay runs without ground
    async with Supervisor(_config(tmp_path, nats_url, mission_id)) as sup:
        seen = _restart_seen(sup)
        await sup.wait_healthy(HANG_S)
        relay = sup.children["relay"]
        old_pid, old_env = relay.pid, _environ(relay.pid)
        os.kill(old_pid, signal.SIGKILL)
        restart = await asyncio.wait_for(seen.get(), HANG_S)
        assert (restart.service, restart.old_pid, restart.exit_code, restart.count) == (
            "relay", old_pid, -signal.SIGKILL, 1)
        assert restart.new_pid == relay.pid != old_pid
        assert restart.describe() == (
            f"restarted relay (pid {old_pid} -> {relay.pid}) after SIGKILL, restart 1")
        assert _environ(relay.pid) == old_env  # the same ports, mission, seed, NATS
        await sup.wait_healthy(HANG_S)  # serving again on the same gRPC port
        assert sup.restarts == {"relay": 1}
        record = orjson.loads(write_run_record(tmp_path, sup, nats_url=nats_url,
                                               nats_pid=None).read_bytes())
        assert record["services"]["relay"]["pid"] == relay.pid
        assert record["services"]["relay"]["restarts"] == 1
        assert "restarts" not in record["nats"]  # a server it was given, not its own


async def test_a_failure_inside_a_service_is_not_restarted_and_is_named(
        tmp_path: Path, nats_url: str, mission_id: str) -> None:
    async with Supervisor(_config(tmp_path, nats_url, mission_id, services=())) as sup:
        child = ScriptChild(EXIT_SERVICE_FAILED, tmp_path / "failing.log")
        await child.start()
        sup.watch_child("failing", child)
        died = await asyncio.wait_for(sup.next_death(), HANG_S)
    assert died == ChildExit("failing", child.spawned[0], EXIT_SERVICE_FAILED,
                             f"exiting {EXIT_SERVICE_FAILED}")
    assert died.describe() == (f"failing (pid {child.spawned[0]}) stopped: exit code 70 "
                               "(a failure inside the service)")
    assert len(child.spawned) == 1 and sup.restarts == {"failing": 0}


async def test_a_child_that_keeps_dying_is_given_up_on_loudly(
        tmp_path: Path, nats_url: str, mission_id: str) -> None:
    async with Supervisor(_config(tmp_path, nats_url, mission_id, services=())) as sup:
        seen = _restart_seen(sup)
        child = ScriptChild(1, tmp_path / "looping.log")
        await child.start()
        sup.watch_child("looping", child)
        died = await asyncio.wait_for(sup.next_death(), HANG_S)
    assert len(child.spawned) == QUICK.max_restarts + 1
    assert [seen.get_nowait().count for _ in range(seen.qsize())] == [1, 2, 3]
    assert died.pid == child.spawned[-1] and died.exit_code == 1
    assert died.describe().endswith(
        "stopped: exit code 1; restarted 3 times within 60 s already: giving up")
    assert sup.restarts == {"looping": 3}


async def test_nothing_is_restarted_once_the_run_is_stopping(
        tmp_path: Path, nats_url: str, mission_id: str) -> None:
    slow = RestartPolicy(first_delay_s=0.5, max_delay_s=0.5)
    sup = Supervisor(_config(tmp_path, nats_url, mission_id, policy=slow, services=()))
    async with sup:
        child = ScriptChild(1, tmp_path / "dying.log")
        await child.start()
        sup.watch_child("dying", child)
        await child.wait_async()  # dead: the supervisor now waits 0.5 s to restart it
    await asyncio.sleep(2 * slow.first_delay_s)
    assert len(child.spawned) == 1 and sup.restarts == {"dying": 0}



# --- the CLI: a line per restart, counts in run.json and `twin status` -------------


def _recorded_pid(state_dir: Path, victim: str) -> int:
    record = orjson.loads((state_dir / "run.json").read_bytes())
    owner = record["nats"] if victim == "nats-server" else record["services"][victim]
    return int(owner["pid"])


@pytest.mark.slow
async def test_twin_up_restarts_a_killed_service_and_nats_server_saying_so(
        tmp_path: Path, plan_path: Path) -> None:
    state_dir = tmp_path / "state"
    async with twin_up(state_dir, "--plan", str(plan_path), "--paused") as up:
        await up.wait_for_line("services healthy in")
        for victim in ("lander", "nats-server"):
            pid = _recorded_pid(state_dir, victim)
            os.kill(pid, signal.SIGKILL)
            line = await up.wait_for_line(f"restarted {victim} (pid {pid} -> ")
            new_pid = int(line.split(" -> ", 1)[1].split(")", 1)[0])
            assert line.rstrip().endswith("after SIGKILL, restart 1"), line
            assert _recorded_pid(state_dir, victim) == new_pid  # run.json follows
        status = await asyncio.to_thread(_twin, "status", "--state-dir", str(state_dir))
        assert "restarts: lander 1, nats-server 1" in status.stdout, status.stdout
        up.proc.send_signal(signal.SIGINT)
        code, output = await up.finish()
    assert code == 130, output  # still running until Ctrl-C: the deaths did not stop it
    record = orjson.loads((state_dir / "run.json").read_bytes())
    assert record["services"]["lander"]["restarts"] == 1 and record["nats"]["restarts"] == 1
    assert _survivors(state_dir) == []
