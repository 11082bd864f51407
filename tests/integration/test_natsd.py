"""The embedded nats-server: a real process, real JetStream, real ports."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import nats
import pytest
from prometheus_client import CollectorRegistry

from services.kernel.bus import Bus
from services.kernel.envelope import Envelope, decode
from services.kernel.metrics import Metrics
from services.kernel.natsd import NatsServer, NatsServerNotFound

_GONE_DEADLINE_S = 10.0


def _port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def _process_gone(pid: int) -> bool:
    """True once `pid` no longer names a live process (a zombie counts as gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] == "Z"


def _wait_gone(pid: int) -> bool:
    deadline = time.monotonic() + _GONE_DEADLINE_S
    while time.monotonic() < deadline:
        if _process_gone(pid):
            return True
        time.sleep(0.05)
    return False


async def test_async_start_gives_jetstream_then_frees_port(tmp_path: Path) -> None:
    async with NatsServer(tmp_path) as server:
        assert server.url.startswith("nats://127.0.0.1:")
        nc = await nats.connect(server.url)
        js = nc.jetstream()
        stream = f"T_{uuid.uuid4().hex[:8]}".upper()
        await js.add_stream(name=stream, subjects=[f"{stream}.>"])
        ack = await js.publish(f"{stream}.x", b"hello")
        assert ack.seq == 1
        msg = await js.get_msg(stream, 1)
        assert msg.data == b"hello"
        await nc.close()
        port, pid = server.port, server.pid
    assert pid is not None and _process_gone(pid)
    assert _port_is_free(port)
    # The stream was stored in the state dir we gave.
    assert (tmp_path / "jetstream").is_dir()


def test_sync_context_manager_and_double_stop(tmp_path: Path) -> None:
    server = NatsServer(tmp_path)
    with server:
        assert server.running
        with socket.create_connection(("127.0.0.1", server.port), timeout=2.0) as conn:
            assert conn.recv(4).startswith(b"INFO")
    assert not server.running
    assert server.stop() == server.stop()


def test_missing_binary_says_how_to_fix(tmp_path: Path) -> None:
    server = NatsServer(tmp_path, binary=tmp_path / "no-such-nats-server")
    with pytest.raises(NatsServerNotFound, match="task setup"):
        server.start()
    server.stop()  # safe even though it never started


_ORPHAN_SCRIPT = """
import sys, time
from pathlib import Path
from services.kernel.natsd import NatsServer
server = NatsServer(Path(sys.argv[1])).start()
print(server.pid, flush=True)
time.sleep(600)
"""


def test_server_dies_with_a_killed_parent(tmp_path: Path) -> None:
    parent = subprocess.Popen(
        [sys.executable, "-c", _ORPHAN_SCRIPT, str(tmp_path)],
        stdout=subprocess.PIPE,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert parent.stdout is not None
    line = parent.stdout.readline()
    child_pid = int(line)
    assert not _process_gone(child_pid)
    os.kill(parent.pid, signal.SIGKILL)  # no chance to clean up
    parent.wait()
    assert _wait_gone(child_pid), f"nats-server {child_pid} outlived its killed parent"


def _environ(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return dict(item.decode().split("=", 1) for item in raw if b"=" in item)


def test_embedded_server_runs_one_go_scheduler_thread_unless_told(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GOMAXPROCS", raising=False)
    with NatsServer(tmp_path / "a") as server:
        assert server.pid is not None
        assert _environ(server.pid)["GOMAXPROCS"] == "1"
    with NatsServer(tmp_path / "b", gomaxprocs=None) as server:
        assert server.pid is not None
        assert "GOMAXPROCS" not in _environ(server.pid)
    monkeypatch.setenv("GOMAXPROCS", "2")  # the operator's own setting wins
    with NatsServer(tmp_path / "c") as server:
        assert server.pid is not None
        assert _environ(server.pid)["GOMAXPROCS"] == "2"


# --- a server that dies and comes back under connected services ---------------------

#: How long a step of the restart test may take on loopback: it bounds a hang,
#: it does not measure a speed.
_ARRIVAL_S = 15.0
_WATCH_INTERVAL_S = 0.01


def _bus(mission: str, source: str) -> Bus:
    def fail(where: str, exc: BaseException) -> None:
        raise AssertionError(f"{where} failed: {exc!r}")

    return Bus(mission, source, Metrics(mission, source, CollectorRegistry()), fail)


async def _until_connected(bus: Bus, connected: bool) -> None:
    """Wait until the client's connection state is `connected` (nats-py keeps no
    event for it; its flush() does not wait through a reconnect)."""
    try:
        async with asyncio.timeout(_ARRIVAL_S):
            while bus.nc is None or bus.nc.is_connected != connected:  # noqa: ASYNC110
                await asyncio.sleep(_WATCH_INTERVAL_S)
    except TimeoutError:
        state = "connected" if connected else "disconnected"
        raise AssertionError(f"not {state} after {_ARRIVAL_S} s") from None


async def _reconnected(bus: Bus) -> None:
    """Connected again, and the server has every subscription replayed (the
    PONG to a PING sent after them)."""
    await _until_connected(bus, True)
    assert bus.nc is not None
    await bus.nc.flush(timeout=int(_ARRIVAL_S))


class _Heard:
    """Each envelope a subscription got, and an event per arrival."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []
        self.arrived = asyncio.Event()

    def __call__(self, env: Envelope, _subject: str) -> None:
        self.bodies.append(env.body)
        self.arrived.set()

    @property
    def numbers(self) -> list[int]:
        return [int(b["n"]) for b in self.bodies]

    async def until(self, n: int) -> list[int]:
        """Every number heard, once message `n` is among them."""
        async with asyncio.timeout(_ARRIVAL_S):
            while n not in self.numbers:
                self.arrived.clear()
                await self.arrived.wait()
        return self.numbers


async def test_restart_keeps_the_port_and_the_store(tmp_path: Path, mission_id: str) -> None:
    async with NatsServer(tmp_path) as server:
        writer = _bus(mission_id, "orbiter")
        await writer.connect((server.url,), "writer")
        await writer.ensure_stream()
        subject = writer.subjects.event("orbiter")
        await writer.send(subject, "event", {"n": 1}, 1.0, 1, durable=True)
        port, monitor_port, old_pid = server.port, server.monitor_port, server.pid
        assert old_pid is not None
        os.kill(old_pid, signal.SIGKILL)
        assert await server.wait_async() == -signal.SIGKILL
        await server.restart_async()
        assert (server.port, server.monitor_port) == (port, monitor_port)
        assert server.pid not in (None, old_pid)
        await _reconnected(writer)
        assert writer.js is not None
        stored = await writer.js.get_msg(writer.subjects.stream_name, 1)
        assert stored.data is not None
        assert decode(stored.data, mission=mission_id).body == {"n": 1}
        await writer.drain()
    assert server.store_dir == tmp_path / "jetstream" and server.store_dir.is_dir()


async def test_a_bus_publishes_and_hears_again_after_the_server_restarts(
        tmp_path: Path, mission_id: str) -> None:
    async with NatsServer(tmp_path) as server:
        one, other = _bus(mission_id, "orbiter"), _bus(mission_id, "ground")
        await one.connect((server.url,), "one")
        await other.connect((server.url,), "other")
        assert one.nc is not None and other.nc is not None
        subject = one.subjects.event("orbiter")
        own, heard = _Heard(), _Heard()
        await one.subscribe(subject, own)
        await other.subscribe(subject, heard)
        await other.nc.flush()
        await one.send(subject, "event", {"n": 1}, 1.0, 1)
        assert await heard.until(1) == [1]

        assert server.pid is not None
        os.kill(server.pid, signal.SIGKILL)
        await server.wait_async()
        # What is published next must go to the client's reconnect buffer.
        await _until_connected(one, False)
        # Buffered by the client while there is no server (pending_size), sent
        # after the subscriptions are replayed on the same connection.
        await one.send(subject, "event", {"n": 2}, 2.0, 2)
        await server.restart_async()
        assert await own.until(2) == [1, 2]

        await _reconnected(other)
        await one.send(subject, "event", {"n": 3}, 3.0, 3)
        # Whether it heard 2 depends on which client reconnected first: core
        # NATS keeps nothing for a subscriber that is not there.
        assert await heard.until(3) in ([1, 2, 3], [1, 3])
        for bus in (one, other):
            await bus.drain()
