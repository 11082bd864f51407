"""Errors of the twin, each carrying its data as fields.

Hierarchy::

    TwinError
    ├── ConfigError          a bad configuration value (process stops at start)
    ├── EnvelopeError        a malformed or foreign bus message (counted, dropped)
    ├── MessageError         a transfer body that is not its type (an event, dropped)
    ├── CommandError         a command the vehicle refuses
    │   ├── InvalidCommand       bad arguments       -> gRPC INVALID_ARGUMENT
    │   └── CommandNotAllowed    wrong state for it  -> gRPC FAILED_PRECONDITION
    └── FlightPlanError      a flight plan that cannot be run
"""

from __future__ import annotations

#: Exit status of a service stopped by an exception inside it (BSD sysexits
#: EX_SOFTWARE): loud, never restarted (services/cli/restarts.py).
EXIT_SERVICE_FAILED = 70
#: Exit status of a service whose configuration is bad: never restarted either.
EXIT_BAD_CONFIG = 2


class TwinError(Exception):
    """Base of every error the twin raises on purpose."""


class ConfigError(TwinError):
    def __init__(self, variable: str, value: str, problem: str, fix: str) -> None:
        self.variable = variable
        self.value = value
        self.problem = problem
        self.fix = fix
        super().__init__(f"{variable}={value!r}: {problem}; {fix}")


class EnvelopeError(TwinError):
    def __init__(self, reason: str, detail: str = "") -> None:
        self.reason = reason
        self.detail = detail
        super().__init__(f"{reason}: {detail}" if detail else reason)


class MessageError(TwinError):
    """A message body that does not match its type: which type, which field, why."""

    def __init__(self, message_type: str, field: str, problem: str) -> None:
        self.message_type = message_type
        self.field = field
        self.problem = problem
        super().__init__(f"{message_type} message: {field!r} {problem}")


class CommandError(TwinError):
    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


class InvalidCommand(CommandError):
    """The command's arguments are wrong whatever the vehicle's state."""


class CommandNotAllowed(CommandError):
    """The command is well formed but the vehicle cannot take it now."""


class FlightPlanError(TwinError):
    def __init__(self, where: str, problem: str) -> None:
        self.where = where
        self.problem = problem
        super().__init__(f"flight plan {where}: {problem}")
