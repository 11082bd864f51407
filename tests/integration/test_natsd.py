"""The embedded nats-server: a real process, real JetStream, real ports."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import nats
import pytest

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
