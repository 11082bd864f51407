"""When the supervisor restarts a child that died, and how long it waits first.

Pure: times are passed in (monotonic seconds), so the policy is tested without
processes or sleeping. A child that dies by a signal or exits unexpectedly is
restarted after an exponential backoff (reset once it has stayed up a while);
one that keeps dying is given up on, loudly, once it has been restarted too
often within a minute. Two exit codes are never restarted: a failure inside
the service (its state may be half-updated, so it must stay loud) and a bad
configuration (it would fail the same way again).
"""

from __future__ import annotations

import signal
from collections import deque
from dataclasses import dataclass, field

from services.kernel.errors import EXIT_BAD_CONFIG, EXIT_SERVICE_FAILED

__all__ = [
    "EXIT_BAD_CONFIG",
    "EXIT_SERVICE_FAILED",
    "Backoff",
    "Restart",
    "RestartPolicy",
    "describe_exit",
    "is_restartable",
]

_NEVER_RESTARTED = {
    EXIT_SERVICE_FAILED: "a failure inside the service",
    EXIT_BAD_CONFIG: "a bad configuration",
}


@dataclass(frozen=True)
class RestartPolicy:
    """Backoff before each restart and the cap past which the run gives up."""

    first_delay_s: float = 0.2
    max_delay_s: float = 5.0
    #: Up this long, a child's next death counts as a first one again.
    stable_after_s: float = 30.0
    #: Restarts of one child within `window_s`; one more and the run stops.
    #: 0 restarts nothing: any death stops the run.
    max_restarts: int = 6
    window_s: float = 60.0

    def __post_init__(self) -> None:
        if not 0.0 < self.first_delay_s <= self.max_delay_s:
            raise ValueError(f"restart delays: need 0 < first ({self.first_delay_s} s) "
                             f"<= max ({self.max_delay_s} s)")
        if self.max_restarts < 0:
            raise ValueError(f"max_restarts is {self.max_restarts}: use 0 (never) or more")
        if self.window_s <= 0.0 or self.stable_after_s <= 0.0:
            raise ValueError("window_s and stable_after_s must be > 0 s")


def is_restartable(exit_code: int) -> bool:
    """A signal or any exit but a service failure or a bad configuration."""
    return exit_code not in _NEVER_RESTARTED


def describe_exit(exit_code: int) -> str:
    """How a child ended: ``killed by SIGKILL``, ``exit code 70 (a failure ...)``."""
    if exit_code < 0:
        try:
            return f"killed by {signal.Signals(-exit_code).name}"
        except ValueError:
            return f"killed by signal {-exit_code}"
    why = _NEVER_RESTARTED.get(exit_code)
    return f"exit code {exit_code}" + (f" ({why})" if why else "")


def _signal_or_code(exit_code: int) -> str:
    """The cause as the restart line says it: ``SIGKILL`` or ``exit code 1``."""
    return describe_exit(exit_code).removeprefix("killed by ")


@dataclass
class Backoff:
    """One child's restart history: the delay before its next restart, or none."""

    policy: RestartPolicy
    _streak: int = 0
    _recent_s: deque[float] = field(default_factory=deque)

    def next_delay_s(self, died_at_s: float, up_s: float) -> float | None:
        """Seconds to wait before restarting a child that died at `died_at_s`
        after `up_s` up, or None when it was restarted too often already."""
        if up_s >= self.policy.stable_after_s:
            self._streak = 0
        while self._recent_s and died_at_s - self._recent_s[0] >= self.policy.window_s:
            self._recent_s.popleft()
        if len(self._recent_s) >= self.policy.max_restarts:
            return None
        delay_s = min(self.policy.first_delay_s * 2.0 ** self._streak, self.policy.max_delay_s)
        self._streak += 1
        self._recent_s.append(died_at_s)
        return delay_s

    def gave_up(self) -> str:
        """Why there is no next restart, for the error that stops the run."""
        if self.policy.max_restarts == 0:
            return "restarts are off"
        return (f"restarted {len(self._recent_s)} times within {self.policy.window_s:g} s "
                "already: giving up")


@dataclass(frozen=True)
class Restart:
    """One restart, as the CLI prints it and the run record counts it."""

    service: str
    old_pid: int
    new_pid: int
    exit_code: int
    count: int  # restarts of this child in the whole run, this one included
    delay_s: float

    def describe(self) -> str:
        return (f"restarted {self.service} (pid {self.old_pid} -> {self.new_pid}) "
                f"after {_signal_or_code(self.exit_code)}, restart {self.count}")
