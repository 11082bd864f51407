"""Run the six services as child processes of the CLI, and take them down.

Every child runs ``python -m services.<name>`` in a process group of its own,
so Ctrl-C in the terminal reaches only the CLI, which then stops the children
in reverse start order (SIGTERM, a grace, SIGKILL). Each child also gets
SIGKILL from the kernel if the CLI dies without cleaning up (prctl
PDEATHSIG on Linux), so no run leaves orphans behind. Output of each child
goes to ``<state_dir>/logs/<name>.log`` (a restart appends to it).

A child that dies while it should be running (a signal, an unexpected exit)
is restarted with the same environment and ports after a backoff; one that
failed inside (exit 70) or was misconfigured (exit 2), or keeps dying, stops
the run (see ``restarts.py``). The embedded nats-server is watched the same
way (:meth:`Supervisor.watch_child`).

Errors::

    SupervisorError
    ├── ServiceDied          a child exited and is not restarted
    └── ServicesNotHealthy   not all SERVING before the deadline
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import sys
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol, Self

import grpc
import orjson

import services
from services.cli.grpc_client import Endpoint, TwinChannels
from services.cli.restarts import Backoff, Restart, RestartPolicy, describe_exit, is_restartable
from services.kernel.childproc import die_with_parent, signal_group
from services.kernel.config import DEFAULT_PORTS, SERVICE_NAMES
from services.kernel.security import Security

__all__ = [
    "ChildExit",
    "Restart",
    "RestartPolicy",
    "RunConfig",
    "ServiceDied",
    "ServiceProcess",
    "ServicesNotHealthy",
    "Supervisor",
    "SupervisorError",
    "Watched",
    "pick_free_ports",
    "read_log_tail",
    "write_run_record",
]

RUN_RECORD = "run.json"


class SupervisorError(RuntimeError):
    """Base of the supervisor's errors."""


@dataclass(frozen=True)
class ChildExit:
    service: str
    pid: int
    exit_code: int
    log_tail: str
    #: Why it was not restarted although the exit alone allowed it ("" if not).
    gave_up: str = ""

    def describe(self) -> str:
        why = f"; {self.gave_up}" if self.gave_up else ""
        return f"{self.service} (pid {self.pid}) stopped: {describe_exit(self.exit_code)}{why}"


class ServiceDied(SupervisorError):
    def __init__(self, exit: ChildExit) -> None:
        self.exit = exit
        tail = f"\n--- last lines of its log ---\n{exit.log_tail}" if exit.log_tail else ""
        super().__init__(exit.describe() + tail)


class ServicesNotHealthy(SupervisorError):
    def __init__(self, services: Sequence[str], waited_s: float) -> None:
        self.services = list(services)
        self.waited_s = waited_s
        super().__init__(
            f"not healthy after {waited_s:.1f} s: {', '.join(self.services)} "
            "(see their logs in the state dir's logs/)"
        )


@dataclass(frozen=True)
class RunConfig:
    """What the children are told, as TWIN_* variables (see docs/contract.md)."""

    state_dir: Path
    nats_url: str
    mission_id: str = "ce6"
    services: tuple[str, ...] = SERVICE_NAMES
    grpc_host: str = "127.0.0.1"
    free_ports: bool = False
    seed: int | None = None
    flight_plan: Path | None = None
    warp: str | None = None  # "max" or a factor, as TWIN_WARP reads it
    start_paused: bool = False
    log_level: str = "INFO"
    log_format: str = "json"
    extra_env: Mapping[str, str] = field(default_factory=dict)
    stop_grace_s: float = 10.0
    restart: RestartPolicy = field(default_factory=RestartPolicy)
    #: This run's name (TWIN_RUN_ID): a restarted ground resumes this run's
    #: commits only, not those a finished run left in the same state dir.
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    #: Required: the children's certificates and NATS users, or plaintext
    #: asked for in so many words (Security.plaintext()).
    security: Security | None = None
    #: Dispersed vehicle parameters (TWIN_PARAMETERS; services/kernel/parameters.py).
    parameters: Mapping[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.security is None:
            raise ValueError("RunConfig needs security=: Security.for_state_dir(state_dir) "
                             "(after security.provision) or Security.plaintext()")
        unknown = [s for s in self.services if s not in SERVICE_NAMES]
        if unknown:
            raise ValueError(f"unknown services {unknown}: use names from {SERVICE_NAMES}")

    def service_env(self, name: str, grpc_port: int, metrics_port: int) -> dict[str, str]:
        env = {
            "TWIN_SERVICE": name,
            "TWIN_MISSION_ID": self.mission_id,
            "TWIN_NATS_URL": self.nats_url,
            "TWIN_GRPC_HOST": self.grpc_host,
            "TWIN_GRPC_PORT": str(grpc_port),
            "TWIN_METRICS_PORT": str(metrics_port),
            "TWIN_LOG_LEVEL": self.log_level,
            "TWIN_LOG_FORMAT": self.log_format,
            "TWIN_START_PAUSED": "true" if self.start_paused else "false",
            "TWIN_EXPECT": ",".join(s for s in self.services if s != "ground"),
            "TWIN_RUN_ID": self.run_id,
            # the parent's TWIN_INSECURE, TWIN_PKI_DIR must not leak through
            "TWIN_INSECURE": "", "TWIN_PKI_DIR": "", "TWIN_NATS_CREDS": "",
            # nor the parent's TWIN_PARAMETERS: only those this run was given
            "TWIN_PARAMETERS": orjson.dumps(dict(self.parameters)).decode()
            if self.parameters else "",
        }
        assert self.security is not None
        env |= self.security.env()
        if self.seed is not None:
            env["TWIN_SEED"] = str(self.seed)
        if self.flight_plan is not None:
            env["TWIN_FLIGHT_PLAN"] = str(self.flight_plan.resolve())
        if self.warp is not None:
            env["TWIN_WARP"] = self.warp
        return {**env, **self.extra_env}


def pick_free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """`count` distinct free TCP ports on `host`.

    All sockets stay open until every port is chosen so no port repeats. A
    child can still lose a race for its port to another process; it then
    fails to start and the supervisor reports it.
    """
    with contextlib.ExitStack() as stack:
        socks = [stack.enter_context(socket.socket()) for _ in range(count)]
        for sock in socks:
            sock.bind((host, 0))
        return [int(sock.getsockname()[1]) for sock in socks]


def read_log_tail(path: Path, lines: int = 15) -> str:
    try:
        with path.open("rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 16384))
            text = f.read().decode(errors="replace")
    except FileNotFoundError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


class Watched(Protocol):
    """A child the supervisor restarts when it dies: a service or nats-server."""

    @property
    def pid(self) -> int | None: ...

    async def wait_async(self) -> int: ...

    async def restart_async(self) -> object: ...

    def log_tail(self) -> str: ...


@dataclass
class ServiceProcess:
    """One service child; `spawn` runs it, again after a death with the same
    environment and ports."""

    name: str
    grpc_port: int
    metrics_port: int
    log_path: Path
    env: Mapping[str, str] = field(default_factory=dict)
    proc: asyncio.subprocess.Process | None = None

    @property
    def pid(self) -> int:
        return -1 if self.proc is None else self.proc.pid

    async def spawn(self, *, append_log: bool = False) -> None:
        with self.log_path.open("ab" if append_log else "wb") as log:
            self.proc = await asyncio.create_subprocess_exec(
                *child_argv(self.name),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log,
                stderr=asyncio.subprocess.STDOUT,
                env=dict(self.env),
                process_group=0,
                preexec_fn=die_with_parent(),
            )

    async def wait_async(self) -> int:
        assert self.proc is not None
        return await self.proc.wait()

    async def restart_async(self) -> None:
        # The dead one's log stays above the new one's: it says why it died.
        await self.spawn(append_log=True)

    def log_tail(self) -> str:
        return read_log_tail(self.log_path)


def child_pythonpath() -> str:
    # The directory holding the `services` package, so children import the
    # same code as the CLI whether or not the project is installed.
    root = str(Path(services.__file__).resolve().parent.parent)
    current = os.environ.get("PYTHONPATH", "")
    return root if not current else f"{root}{os.pathsep}{current}"


def child_argv(name: str) -> list[str]:
    """The command line of service `name`, running the CLI's own code.

    ``-m`` puts the current directory first on sys.path, ahead of PYTHONPATH:
    run from another checkout, the child would import that checkout's
    `services`. ``-P`` (Python 3.11+) leaves it out, so `child_pythonpath`
    decides.
    """
    return [sys.executable, "-P", "-m", f"services.{name}"]


class Supervisor:
    """Start, health-check, watch and stop the service processes.

    Use as ``async with Supervisor(config) as sup:``; start and stop must run
    on the event loop's thread (the death signal is bound to the thread that
    forks). `stop()` is safe to call twice.
    """

    def __init__(self, config: RunConfig) -> None:
        self.config = config
        self.children: dict[str, ServiceProcess] = {}
        #: Restarts so far of every watched child, services and nats-server.
        self.restarts: dict[str, int] = {}
        #: Called after each restart (the CLI prints it and updates run.json).
        self.on_restart: list[Callable[[Restart], None]] = []
        self._stopping = False
        self._exits: asyncio.Queue[ChildExit] = asyncio.Queue()
        self._watchers: list[asyncio.Task[None]] = []
        self._hurry = asyncio.Event()
        # Held while a dead child is brought back, so stop() never sees the
        # old process and misses the new one.
        self._respawning = asyncio.Lock()
        self.log_dir = config.state_dir / "logs"
        self._ports: dict[str, tuple[int, int]] | None = None

    # --- start -----------------------------------------------------------

    def plan_ports(self) -> dict[str, tuple[int, int]]:
        """Each service's (gRPC, metrics) ports, chosen once: a process started
        before the services (the CCSDS gateway) may need ground's."""
        if self._ports is None:
            names = self.config.services
            if not self.config.free_ports:
                self._ports = {name: DEFAULT_PORTS[name] for name in names}
            else:
                ports = pick_free_ports(2 * len(names), self.config.grpc_host)
                self._ports = {name: (ports[2 * i], ports[2 * i + 1])
                               for i, name in enumerate(names)}
        return self._ports

    async def start(self) -> None:
        """Spawn every service; returns once all are forked (not yet healthy)."""
        if self.children:
            raise SupervisorError("this Supervisor was already started")
        self.log_dir.mkdir(parents=True, exist_ok=True)
        for name, (grpc_port, metrics_port) in self.plan_ports().items():
            env = {**os.environ, "PYTHONPATH": child_pythonpath(), "PYTHONUNBUFFERED": "1",
                   **self.config.service_env(name, grpc_port, metrics_port)}
            child = ServiceProcess(name, grpc_port, metrics_port, self.log_dir / f"{name}.log",
                                   env)
            self.children[name] = child
            await child.spawn()
            self.watch_child(name, child)

    def watch_child(self, name: str, child: Watched) -> None:
        """Restart `child` whenever it dies while it should run; a death that is
        not restarted comes out of next_death()."""
        self.restarts.setdefault(name, 0)
        self._watchers.append(asyncio.create_task(self._watch(name, child)))

    async def _watch(self, name: str, child: Watched) -> None:
        backoff = Backoff(self.config.restart)
        code = 0
        while True:
            started_s = time.monotonic()
            pid = child.pid or -1
            try:
                code = await child.wait_async()
            except RuntimeError as exc:  # a restart failed before it had a process
                await self._exits.put(ChildExit(name, pid, code, child.log_tail(),
                                                f"its restart failed: {exc}"))
                return
            if self._stopping:
                return
            died_s = time.monotonic()
            delay_s = backoff.next_delay_s(died_s, died_s - started_s)
            if not is_restartable(code) or delay_s is None:
                gave_up = "" if not is_restartable(code) else backoff.gave_up()
                await self._exits.put(ChildExit(name, pid, code, child.log_tail(), gave_up))
                return
            await asyncio.sleep(delay_s)
            if not await self._bring_back(name, child, pid, code, delay_s):
                return

    async def _bring_back(self, name: str, child: Watched, old_pid: int, code: int,
                          delay_s: float) -> bool:
        """Restart `child` unless the run is stopping; False if it is."""
        async with self._respawning:
            if self._stopping:
                return False
            try:
                await child.restart_async()
            except Exception as exc:  # a failed start is one more death: back off again
                _log_restart_failure(self.log_dir / f"{name}.restarts.log", exc)
                return True
            self.restarts[name] = self.restarts.get(name, 0) + 1
        restart = Restart(name, old_pid, child.pid or -1, code, self.restarts[name], delay_s)
        for hook in self.on_restart:
            hook(restart)
        return True

    # --- health and deaths -----------------------------------------------

    def channel_credentials(self) -> grpc.ChannelCredentials | None:
        """The operator's: what the CLI calls the services with."""
        assert self.config.security is not None
        return self.config.security.grpc_channel_credentials()

    @property
    def endpoints(self) -> dict[str, Endpoint]:
        host = self.config.grpc_host
        connect_host = "127.0.0.1" if host in ("0.0.0.0", "") else host
        return {n: Endpoint(n, connect_host, c.grpc_port) for n, c in self.children.items()}

    @property
    def pids(self) -> dict[str, int]:
        return {name: child.pid for name, child in self.children.items()}

    async def next_death(self) -> ChildExit:
        """Wait for a child to exit unexpectedly and say which and how."""
        return await self._exits.get()

    async def wait_healthy(self, timeout_s: float = 60.0) -> float:
        """Wait until every child's gRPC health says SERVING; return the wall s.

        Each child is watched on its own, so each is seen SERVING as soon as
        it is (within the channels' reconnect backoff, ~0.1 s). Raises
        ServiceDied as soon as a child exits, ServicesNotHealthy at the deadline.
        """
        started = time.monotonic()
        async with TwinChannels(self.endpoints, credentials=self.channel_credentials()) as channels:
            waits = {asyncio.create_task(channels.wait_serving(n)): n for n in self.children}
            death = asyncio.create_task(self.next_death())
            try:
                await self._until_all_done(set(waits), death, started + timeout_s)
            except TimeoutError:
                pending = [n for task, n in waits.items() if not task.done()]
                raise ServicesNotHealthy(pending, time.monotonic() - started) from None
            finally:
                for task in waits:
                    await _cancel(task)
                await self._requeue_or_cancel(death)
        return time.monotonic() - started

    @staticmethod
    async def _until_all_done(waits: set[asyncio.Task[None]], death: asyncio.Task[ChildExit],
                              deadline: float) -> None:
        """Wait for all `waits`; ServiceDied if `death` comes first, TimeoutError
        at the (monotonic) deadline."""
        while undone := {task for task in waits if not task.done()}:
            left_s = deadline - time.monotonic()
            if left_s <= 0:
                raise TimeoutError
            done, _ = await asyncio.wait({*undone, death}, timeout=left_s,
                                         return_when=asyncio.FIRST_COMPLETED)
            if death.done():
                raise ServiceDied(death.result())
            for task in done:
                task.result()  # a watch that failed other than through gRPC: raise it

    async def _requeue_or_cancel(self, death: asyncio.Task[ChildExit]) -> None:
        """Give back a death the health wait saw but did not report."""
        if death.done() and not death.cancelled():
            self._exits.put_nowait(death.result())
            return
        await _cancel(death)

    # --- stop ------------------------------------------------------------

    def hurry(self) -> None:
        """Skip the remaining grace: SIGKILL whatever SIGTERM has not stopped."""
        self._hurry.set()

    async def stop(self) -> dict[str, int | None]:
        """Stop the children in reverse start order; return their exit codes."""
        self._stopping = True
        async with self._respawning:  # a restart under way finishes first
            for task in self._watchers:
                await _cancel(task)
            self._watchers.clear()
        codes: dict[str, int | None] = {}
        for name in reversed(list(self.children)):
            codes[name] = await self._stop_child(self.children[name])
        return codes

    async def _stop_child(self, child: ServiceProcess) -> int | None:
        proc = child.proc
        if proc is None:
            return None
        if proc.returncode is None:
            signal_group(proc.pid, signal.SIGTERM)
            exited = asyncio.ensure_future(proc.wait())
            hurry = asyncio.ensure_future(self._hurry.wait())
            await asyncio.wait({exited, hurry}, timeout=self.config.stop_grace_s,
                               return_when=asyncio.FIRST_COMPLETED)
            await _cancel(hurry)
            if not exited.done():
                signal_group(proc.pid, signal.SIGKILL)
            await exited
        # Anything the service itself forked lives in its group: take it too.
        signal_group(proc.pid, signal.SIGKILL)
        return proc.returncode

    async def __aenter__(self) -> Self:
        try:
            await self.start()
        except BaseException:
            await self.stop()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()


def _log_restart_failure(path: Path, exc: BaseException) -> None:
    """Keep why a restart did not start; the watch then counts it as a death."""
    with path.open("a") as log:
        log.write(f"restart failed: {exc!r}\n")


async def _cancel(task: asyncio.Task[Any]) -> None:
    if not task.done():
        task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


def write_run_record(
    state_dir: Path,
    supervisor: Supervisor,
    *,
    nats_url: str,
    nats_pid: int | None,
    extra: Mapping[str, Any] | None = None,
) -> Path:
    """Record who runs where in ``<state_dir>/run.json`` (for status, tests, humans);
    written again after each restart, with the new pid and the restart count."""
    nats: dict[str, Any] = {"url": nats_url, "pid": nats_pid}
    if "nats-server" in supervisor.restarts:  # ours, watched: not a server we were given
        nats["restarts"] = supervisor.restarts["nats-server"]
    record = {
        "cli_pid": os.getpid(),
        "mission_id": supervisor.config.mission_id,
        "nats": nats,
        "services": {
            name: {"pid": c.pid, "grpc_port": c.grpc_port, "metrics_port": c.metrics_port,
                   "log": str(c.log_path), "restarts": supervisor.restarts.get(name, 0)}
            for name, c in supervisor.children.items()
        },
        **(extra or {}),
    }
    path = state_dir / RUN_RECORD
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(orjson.dumps(record, option=orjson.OPT_INDENT_2))
    tmp.replace(path)  # readers never see half a file
    return path
