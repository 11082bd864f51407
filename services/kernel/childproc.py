"""A server run as a child process: spawn, wait until ready, stop, clean up.

Shared by the embedded nats-server (``natsd.py``) and the local Prometheus
(``promserver.py``). The child leads its own process group (Ctrl-C in the
terminal does not reach it directly; stopping signals the whole group) and,
on Linux, dies with its parent, so no run leaves an orphan behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
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

_POLL_INTERVAL_S = 0.02
_PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>


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


def signal_group(pid: int, sig: int) -> None:
    """Signal the child's process group (it leads its own), or just it."""
    try:
        os.killpg(pid, sig)
    except ProcessLookupError:
        return
    except PermissionError:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)


def http_ok(url: str, timeout_s: float = 1.0) -> bool:
    """Whether a GET of `url` answers 200 (a readiness probe)."""
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as reply:
            return bool(reply.status == 200)
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return False


class ChildServer:
    """Base of a server child process; subclasses say how to run and probe it.

    Subclasses implement :meth:`_command` (the argv), :meth:`_ready_once` (one
    readiness probe) and :meth:`_start_failed` (their error type); they may
    override :meth:`_prepare` (before spawning) and :meth:`_cleanup` (after
    stopping). ``stop()`` is safe to call twice.
    """

    what = "server"

    def __init__(self, state_dir: Path, log_name: str, *, start_timeout_s: float,
                 stop_grace_s: float) -> None:
        self.state_dir = Path(state_dir)
        self.start_timeout_s = start_timeout_s
        self.stop_grace_s = stop_grace_s
        self._proc: subprocess.Popen[bytes] | None = None
        self._log_file = self.state_dir / log_name

    # --- hooks ---------------------------------------------------------------
    def _prepare(self) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)

    def _command(self) -> list[str]:
        raise NotImplementedError

    def _ready_once(self) -> bool:
        raise NotImplementedError

    def _start_failed(self, reason: str, log_tail: str) -> Exception:
        raise NotImplementedError

    def _already_started(self) -> Exception:
        return RuntimeError(f"this {self.what} was already started")

    def _cleanup(self) -> None:
        """After the process has exited."""

    def _environment(self) -> dict[str, str] | None:
        """The child's environment (None: this process's own)."""
        return None

    # --- state ---------------------------------------------------------------
    @property
    def pid(self) -> int | None:
        return None if self._proc is None else self._proc.pid

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def exited_check(self) -> None:
        """Fail the start at once if the child has already exited."""
        assert self._proc is not None
        if self._proc.poll() is not None:
            self._fail(f"exited with code {self._proc.returncode}")

    # --- start ---------------------------------------------------------------
    def _spawn(self) -> None:
        if self._proc is not None:
            raise self._already_started()
        self._prepare()
        with self._log_file.open("ab") as log:
            self._proc = subprocess.Popen(
                self._command(), stdin=subprocess.DEVNULL, stdout=log,
                stderr=subprocess.STDOUT, env=self._environment(),
                process_group=0,  # Ctrl-C in the terminal must not reach it directly
                preexec_fn=die_with_parent(),
            )

    def start(self) -> Self:
        """Start the server and block until it is ready."""
        self._spawn()
        deadline = time.monotonic() + self.start_timeout_s
        while not self._ready_once():
            if time.monotonic() > deadline:
                self._fail(f"not ready after {self.start_timeout_s:.1f} s")
            time.sleep(_POLL_INTERVAL_S)
        return self

    async def start_async(self) -> Self:
        """Like start(), without blocking the event loop while waiting."""
        # Spawn in this (the loop's) thread: the death signal is tied to it.
        self._spawn()
        deadline = time.monotonic() + self.start_timeout_s
        while not await asyncio.to_thread(self._ready_once):
            if time.monotonic() > deadline:
                self._fail(f"not ready after {self.start_timeout_s:.1f} s")
            await asyncio.sleep(_POLL_INTERVAL_S)
        return self

    def _fail(self, reason: str) -> None:
        self.stop()
        raise self._start_failed(reason, self.log_tail())

    def log_tail(self, lines: int = 20) -> str:
        try:
            text = self._log_file.read_text(errors="replace")
        except FileNotFoundError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    # --- stop ----------------------------------------------------------------
    def stop(self) -> int | None:
        """SIGTERM, then SIGKILL after the grace; returns the exit code."""
        proc = self._proc
        if proc is None:
            return None
        if proc.poll() is None:
            signal_group(proc.pid, signal.SIGTERM)
            try:
                proc.wait(self.stop_grace_s)
            except subprocess.TimeoutExpired:
                signal_group(proc.pid, signal.SIGKILL)
                proc.wait()
        self._cleanup()
        return proc.returncode

    async def stop_async(self) -> int | None:
        return await asyncio.to_thread(self.stop)

    async def wait_async(self) -> int:
        """Wait (in a thread) until the server exits, for whatever reason."""
        if self._proc is None:
            raise RuntimeError(f"this {self.what} was not started")
        return await asyncio.to_thread(self._proc.wait)

    # --- context managers ----------------------------------------------------
    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    async def __aenter__(self) -> Self:
        return await self.start_async()

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        await self.stop_async()
