"""`twin` end to end: real nats-server, the six real services, real signals.

Each test runs the CLI as a subprocess with its own state dir and free ports,
so tests never share a server, a port or a JetStream store.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import orjson
import pytest

from services.kernel.config import SERVICE_NAMES
from services.kernel.natsd import NatsServer
from services.kernel.promserver import PromServerNotFound, find_prometheus

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
TWIN = [sys.executable, "-m", "services.cli.app"]
# Wall-clock allowances for whole runs on a 2-core machine: generous, because
# they bound a hang, not a speed.
RUN_DEADLINE_S = 180.0
GONE_DEADLINE_S = 15.0

PLAN_END_S = 5400.0
# One plan item an hour after launch, end half an hour later: a few steps.
SHORT_PLAN = {
    "name": "cli-test",
    "description": "Ninety minutes after launch with one command; written by test_cli.py.",
    "end": {"at": "2024-05-03T10:57:29Z"},
    "items": [
        {"id": "cruise", "at": "2024-05-03T10:27:29Z", "target": "orbiter",
         "command": {"op": "set_mode", "mode": "cruise"}, "phase": "earth_moon_transfer"},
    ],
}


@pytest.fixture
def plan_path(tmp_path: Path) -> Path:
    path = tmp_path / "plan.json"
    path.write_bytes(orjson.dumps(SHORT_PLAN))
    return path


def _env() -> dict[str, str]:
    # Wide enough that rich never wraps a table row we look for.
    return {**os.environ, "COLUMNS": "200", "PYTHONUNBUFFERED": "1"}


def _twin(*args: str, timeout_s: float = 60.0,
          env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*TWIN, *args], cwd=REPO, env={**_env(), **(env or {})},
                          capture_output=True,
                          text=True, timeout=timeout_s, check=False)


# --- processes ----------------------------------------------------------------


def _alive_as(pid: int, marker: str) -> bool:
    """Is `pid` a live (not zombie) process whose command line holds `marker`?

    Checking the command line guards against the pid having been reused.
    """
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z" and marker in cmdline


def _recorded_children(state_dir: Path) -> dict[int, str]:
    """{pid: command-line marker} of nats-server and the services in run.json."""
    record = orjson.loads((state_dir / "run.json").read_bytes())
    children = {int(s["pid"]): f"services.{name}" for name, s in record["services"].items()}
    if record["nats"]["pid"] is not None:
        children[int(record["nats"]["pid"])] = "nats-server"
    if "prometheus" in record:
        children[int(record["prometheus"]["pid"])] = "prometheus"
    return children


def _survivors(state_dir: Path) -> list[str]:
    """Children of a run still alive after GONE_DEADLINE_S, plus any process
    whose command line names the state dir (nats-server's store)."""
    children = _recorded_children(state_dir)
    deadline = time.monotonic() + GONE_DEADLINE_S
    while time.monotonic() < deadline:
        alive = [f"{m} (pid {p})" for p, m in children.items() if _alive_as(p, m)]
        alive += [f"pid {p}" for p in _pids_mentioning(str(state_dir)) if p not in children]
        if not alive:
            return []
        time.sleep(0.1)
    return alive


def _pids_mentioning(text: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid() and _alive_as(
            int(entry.name), text
        ):
            found.append(int(entry.name))
    return found


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# --- a `twin up` in the background ----------------------------------------------


@dataclass
class UpProcess:
    proc: asyncio.subprocess.Process
    state_dir: Path
    output: list[str]

    async def wait_for_line(self, needle: str, timeout_s: float = RUN_DEADLINE_S) -> str:
        async with asyncio.timeout(timeout_s):
            assert self.proc.stdout is not None
            while True:
                raw = await self.proc.stdout.readline()
                if not raw:
                    raise AssertionError(f"twin up ended before {needle!r}:\n"
                                         + "".join(self.output))
                line = raw.decode(errors="replace")
                self.output.append(line)
                if needle in line:
                    return line

    async def finish(self, timeout_s: float = RUN_DEADLINE_S) -> tuple[int, str]:
        assert self.proc.stdout is not None
        async with asyncio.timeout(timeout_s):
            rest = await self.proc.stdout.read()
            code = await self.proc.wait()
        self.output.append(rest.decode(errors="replace"))
        return code, "".join(self.output)


@asynccontextmanager
async def twin_up(state_dir: Path, *args: str) -> AsyncIterator[UpProcess]:
    proc = await asyncio.create_subprocess_exec(
        *TWIN, "up", "--free-ports", "--state-dir", str(state_dir), *args,
        cwd=REPO, env=_env(), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )
    try:
        yield UpProcess(proc, state_dir, [])
    finally:
        if proc.returncode is None:  # a failed test: do not leave it behind
            proc.send_signal(signal.SIGINT)
            try:
                await asyncio.wait_for(proc.wait(), GONE_DEADLINE_S * 2)
            except TimeoutError:
                proc.kill()
                await proc.wait()


# --- tests --------------------------------------------------------------------


async def test_up_reaches_finished_exits_0_and_leaves_no_process(
    tmp_path: Path, plan_path: Path
) -> None:
    state_dir = tmp_path / "state"
    async with twin_up(state_dir, "--plan", str(plan_path), "--warp", "max") as up:
        await up.wait_for_line("services healthy in")
        code, output = await up.finish()
    assert code == 0, output
    assert "finished:" in output and " finished " in output, output
    assert set(_recorded_children(state_dir).values()) == {
        "nats-server", *(f"services.{n}" for n in SERVICE_NAMES)
    }
    assert _survivors(state_dir) == []
    record = orjson.loads((state_dir / "run.json").read_bytes())
    assert record["stopped"] is True
    assert set(record["exit_codes"]) == set(SERVICE_NAMES)
    for name in SERVICE_NAMES:
        assert (state_dir / "logs" / f"{name}.log").is_file()


def test_run_writes_a_report_of_the_finished_mission(tmp_path: Path, plan_path: Path) -> None:
    report = tmp_path / "out" / "report.json"
    state_dir = tmp_path / "state"
    done = _twin("run", "--plan", str(plan_path), "--state-dir", str(state_dir),
                 "--report", str(report), "--seed", "7", timeout_s=RUN_DEADLINE_S)
    assert done.returncode == 0, done.stdout + done.stderr
    body = orjson.loads(report.read_bytes())
    assert body["clock"]["mode"] == "finished"
    # The plan ends 5400 s after launch (10:57:29Z); the clock stops there.
    assert body["clock"]["end_mission_time_s"] == pytest.approx(PLAN_END_S, abs=1.0)
    assert body["clock"]["mission_time_s"] == pytest.approx(PLAN_END_S, abs=1.0)
    assert body["mission_id"] == "ce6"
    assert set(SERVICE_NAMES) <= set(body["final"])
    assert not any("error" in s for s in body["final"].values())
    assert body["wall_s"] > 0
    assert _survivors(state_dir) == []


def test_run_on_a_given_nats_leaves_that_server_running(tmp_path: Path, plan_path: Path) -> None:
    with NatsServer(tmp_path / "bus") as bus:
        state_dir = tmp_path / "state"
        done = _twin("run", "--plan", str(plan_path), "--state-dir", str(state_dir),
                     "--nats-url", bus.url, "--mission", "given-bus", "--insecure",
                     timeout_s=RUN_DEADLINE_S)  # a plaintext server: plaintext asked for
        assert done.returncode == 0, done.stdout + done.stderr
        assert "nats-server with JetStream" not in done.stdout  # it started none of its own
        assert bus.running
        assert orjson.loads((state_dir / "run.json").read_bytes())["nats"] == {
            "url": bus.url, "pid": None}
        assert _survivors(state_dir) == []


async def test_status_and_clock_against_a_running_set_then_ctrl_c(
    tmp_path: Path, plan_path: Path
) -> None:
    state_dir = tmp_path / "state"
    async with twin_up(state_dir, "--plan", str(plan_path), "--paused", "--mission", "cli-t",
                       "--warp", "max") as up:
        await up.wait_for_line("services healthy in")
        status = await asyncio.to_thread(
            _twin, "status", "--state-dir", str(state_dir), "--mission", "cli-t")
        assert status.returncode == 0, status.stdout + status.stderr
        # Not a terminal: plain rows, "<service>  up  <phase> ...".
        rows = {line.split()[0]: line.split() for line in status.stdout.splitlines()[2:8]}
        assert {n: r[1] for n, r in rows.items()} == dict.fromkeys(SERVICE_NAMES, "up"), (
            status.stdout)
        assert " paused " in status.stdout or " waiting " in status.stdout, status.stdout

        wrong = await asyncio.to_thread(
            _twin, "status", "--state-dir", str(state_dir), "--mission", "ce6")
        assert wrong.returncode == 1
        assert "expected 'ce6'" in wrong.stderr

        stepped = await asyncio.to_thread(
            _twin, "clock", "step", "2", "--state-dir", str(state_dir))
        assert stepped.returncode == 0, stepped.stdout + stepped.stderr
        shown = await _wait_for_step(state_dir, at_least=2)
        assert "paused" in shown, shown

        up.proc.send_signal(signal.SIGINT)  # what Ctrl-C sends
        code, output = await up.finish()
    assert code == 130, output
    assert "SIGINT received: stopping" in output
    assert _survivors(state_dir) == []


async def _wait_for_step(state_dir: Path, at_least: int) -> str:
    """`twin clock time` output once the clock reached `at_least` steps."""
    async with asyncio.timeout(RUN_DEADLINE_S):
        while True:
            done = await asyncio.to_thread(_twin, "clock", "time", "--state-dir", str(state_dir))
            assert done.returncode == 0, done.stdout + done.stderr
            step = int(done.stdout.split(" step ", 1)[1].split()[0])
            if step >= at_least and "paused" in done.stdout:
                return done.stdout
            await asyncio.sleep(0.2)


@pytest.mark.parametrize("victim", ["lander", "nats-server"])
async def test_a_dying_child_is_named_and_the_rest_stopped(
    tmp_path: Path, plan_path: Path, victim: str
) -> None:
    state_dir = tmp_path / "state"
    # Restarts off: a death then stops the run (test_supervisor_restarts.py has them on).
    async with twin_up(state_dir, "--plan", str(plan_path), "--paused",
                       "--max-restarts", "0") as up:
        await up.wait_for_line("services healthy in")
        record = orjson.loads((state_dir / "run.json").read_bytes())
        owner = record["nats"] if victim == "nats-server" else record["services"][victim]
        pid = owner["pid"]
        os.kill(int(pid), signal.SIGKILL)
        code, output = await up.finish()
    assert code == 1, output
    assert f"{victim} (pid {pid}) stopped: killed by SIGKILL" in output, output
    assert _survivors(state_dir) == []


def _prometheus_up_count(url: str) -> int:
    """How many scrape targets Prometheus currently sees as up."""
    query = urllib.parse.urlencode({"query": "sum(up)"})
    with urllib.request.urlopen(f"{url}/api/v1/query?{query}", timeout=5.0) as reply:
        result = orjson.loads(reply.read())["data"]["result"]
    return int(float(result[0]["value"][1])) if result else 0


async def _wait_all_scraped(url: str) -> None:
    async with asyncio.timeout(RUN_DEADLINE_S):
        while True:
            if await asyncio.to_thread(_prometheus_up_count, url) == len(SERVICE_NAMES):
                return
            await asyncio.sleep(0.5)


async def test_up_observe_scrapes_all_six_and_stays_up_until_ctrl_c(
    tmp_path: Path, plan_path: Path
) -> None:
    try:
        find_prometheus()
    except PromServerNotFound:
        pytest.fail("needs the prometheus binary: run `./task observe:install` "
                    "(`./task test` does it first)")
    state_dir = tmp_path / "state"
    async with twin_up(state_dir, "--plan", str(plan_path), "--observe", "--warp", "max") as up:
        line = await up.wait_for_line("Prometheus at ")
        url = line.split("Prometheus at ", 1)[1].split()[0]
        await up.wait_for_line("stays up")
        await _wait_all_scraped(url)
        up.proc.send_signal(signal.SIGINT)
        code, output = await up.finish()
    assert code == 0, output  # the mission had finished: Ctrl-C only ends the viewing
    assert "prometheus" in _recorded_children(state_dir).values()
    assert _survivors(state_dir) == []


def test_status_names_every_unreachable_service(tmp_path: Path) -> None:
    ports = ",".join(f"{name}={_free_port()}" for name in SERVICE_NAMES)
    # no run and so no operator certificate: plaintext, said so
    done = _twin("status", "--ports", ports, "--timeout", "0.5", env={"TWIN_INSECURE": "true"})
    assert done.returncode == 1
    for name in SERVICE_NAMES:
        assert f"{name} (127.0.0.1:" in done.stderr, done.stderr


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["up", "--warp", "fast"], "--warp"),
        (["up", "--warp", "-3"], "--warp"),
        (["up", "--mission", "Chang'e"], "--mission"),
        (["up", "--nats-url", "localhost:4222"], "--nats-url"),
        (["run", "--plan", "/no/such/plan.json"], "--plan"),
        (["run", "--seed", "-1"], "--seed"),
        (["status", "--ports", "1,2"], "--ports"),
        (["status", "--ports", "moon=1"], "--ports"),
        (["clock", "step", "0"], "steps"),
        (["clock", "until", "2024-13-40T00:00:00Z"], "TARGET"),
        (["clock", "until"], "TARGET"),
        (["clock", "until", "loi", "--list"], "--list"),
        (["clock", "bogus"], "bogus"),
    ],
)
def test_bad_arguments_exit_2_naming_what_to_fix(args: list[str], named: str) -> None:
    done = _twin(*args)
    assert done.returncode == 2, done.stdout + done.stderr
    assert named in done.stderr, done.stderr
