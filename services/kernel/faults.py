"""Injected faults: the kinds every service knows, and how one is made.

A fault reaches a core two ways: gRPC ``InjectFault`` (the operator, at the
step the call lands before) and a flight-plan item's ``fault`` (the test
conductor, at a planned instant, as the command :data:`INJECT_FAULT_OP`). Both
make it here, so both check it the same way.
"""

from __future__ import annotations

import math
from typing import Any

from services.kernel.errors import InvalidCommand

#: Faults every service can suffer; a vehicle core adds its own (``fault_kinds``).
FAULT_KINDS_COMMON = frozenset({"stall_clock", "drop_telemetry"})
#: The command a flight-plan fault item becomes (services/ground/plan.py).
INJECT_FAULT_OP = "inject_fault"


def make_fault(fault_id: str, kind: str, known: frozenset[str], *, since_s: float,
               magnitude: float = 0.0, duration_s: float = 0.0,
               subsystem: str = "") -> dict[str, Any]:
    """A fault as a core keeps it in ``faults`` (InvalidCommand if it cannot be)."""
    if kind not in known:
        raise InvalidCommand(f"unknown fault kind {kind!r}; known: {', '.join(sorted(known))}")
    if duration_s < 0 or not math.isfinite(duration_s) or not math.isfinite(magnitude):
        raise InvalidCommand("duration_s must be >= 0 and magnitude finite")
    if kind == "stall_clock" and duration_s > 0:
        # The clock waits for the stalled service, so mission time never
        # reaches the end of a duration: the stall would never end.
        raise InvalidCommand("stall_clock holds mission time still, so duration_s can never "
                             "run out: inject it with duration_s 0 and end it with ClearFault")
    return {"fault_id": fault_id, "kind": kind, "target": subsystem, "magnitude": magnitude,
            "since": since_s, "duration_s": duration_s}
