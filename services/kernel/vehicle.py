"""The pure side of a service: its state and transitions, no I/O.

A :class:`VehicleCore` is driven by the runtime, one clock step at a time:

1. :meth:`VehicleCore.apply` for every message received during earlier steps,
   in the deterministic order (mission time, source, sequence);
2. :meth:`VehicleCore.advance` from ``t_from`` to ``t_to``, which returns the
   largest next step the vehicle accepts.

Both write what they want published into an :class:`Outbox`. Nothing here
touches NATS, gRPC or the wall clock, so a service's behaviour is a function of
its inputs, its seed and the flight plan.
"""

from __future__ import annotations

import math
import random
import zlib
from typing import Any

from services.dynamics.timescale import mission_s_from_utc
from services.kernel.downlink import Downlink, run_downlink
from services.kernel.envelope import Envelope
from services.kernel.errors import CommandError, CommandNotAllowed, InvalidCommand
from services.kernel.outbox import PROMPT_STEP_S, PROMPT_TYPES, Outbox, Outgoing, Summary

__all__ = ["AUTONOMOUS_PHASES", "COAST_STEP_S", "COMMAND_SOURCES", "PROMPT_STEP_S",
           "PROMPT_TYPES", "Outbox", "Outgoing", "Summary", "VehicleCore", "execute_at_s"]

#: Phases that run on board without ground (CNSA: "ground cannot intervene" in
#: landing; liftoff used onboard sensors), so telecommands are refused.
AUTONOMOUS_PHASES = frozenset({"powered_descent", "ascent", "entry"})

#: Largest step any vehicle accepts by default while coasting, in mission seconds.
COAST_STEP_S = 600.0


#: Who may command a vehicle: ground, the vehicle itself (gRPC), an operator's
#: tool, and Queqiao-2 forwarding ground's commands to the far side.
COMMAND_SOURCES = frozenset({"ground", "cli", "relay"})
_TAG_KEYS = ("execute_at_s", "execute_at_utc")


def execute_at_s(command: dict[str, Any]) -> float | None:
    """The time tag of a command (``execute_at_s`` or ``execute_at_utc``), if any."""
    raw = command.get("execute_at_s")
    if raw not in (None, 0, 0.0, ""):
        try:
            t = float(raw)
        except (TypeError, ValueError) as exc:
            raise InvalidCommand("execute_at_s must be a number of mission seconds") from exc
        if not math.isfinite(t):
            raise InvalidCommand("execute_at_s must be finite")
        return t
    utc = command.get("execute_at_utc")
    if utc:
        try:
            return mission_s_from_utc(str(utc))
        except ValueError as exc:
            raise InvalidCommand(f"'execute_at_utc' must be an ISO UTC instant, "
                                 f"got {utc!r}") from exc
    return None


class VehicleCore:
    """Base of every service's state machine. Subclasses override the hooks."""

    name = "vehicle"

    def __init__(self, seed: int) -> None:
        # One stream of random numbers per service, derived from the mission seed.
        self.rng = random.Random(seed * 1_000_003 + zlib.crc32(self.name.encode()))
        self.t_s = 0.0
        self.phase = "prelaunch"
        self.faults: dict[str, dict[str, Any]] = {}  # kind -> fault (set by InjectFault)
        self.cleared_faults: list[dict[str, Any]] = []  # ended, not yet announced
        self.timed: list[dict[str, Any]] = []  # time-tagged commands, soonest first
        #: The on-board recorder and radio (services/kernel/downlink.py), from
        #: the first step that runs it.
        self.downlink: Downlink | None = None

    # --- hooks -------------------------------------------------------------
    def apply(self, msg: Envelope, out: Outbox) -> None:
        """Apply one message received during an earlier step."""
        if msg.kind == "command" and (msg.src in COMMAND_SOURCES or msg.src == self.name):
            self.receive_command(msg.body, out)

    # --- commands, time tags --------------------------------------------------
    def receive_command(self, command: dict[str, Any], out: Outbox) -> None:
        """Validate on board; run now, or keep until its time tag."""
        try:
            self.validate(command)
            due = execute_at_s(command)
        except CommandError as exc:
            out.event(self.name, "command_rejected", self.t_s, op=command.get("op"),
                      plan_id=command.get("plan_id"), reason=exc.reason)
            return
        if due is not None and due > self.t_s + 1e-6:
            self.timed.append(dict(command))
            self.timed.sort(key=lambda c: float(execute_at_s(c) or 0.0))
            return
        self.execute(command, self.t_s, out)

    def run_timed(self, t: float, out: Outbox) -> None:
        """Run the time-tagged commands due by ``t`` (the runtime calls this each step)."""
        while self.timed and float(execute_at_s(self.timed[0]) or 0.0) <= t + 1e-6:
            command = {k: v for k, v in self.timed.pop(0).items() if k not in _TAG_KEYS}
            self.receive_command(command, out)

    def next_timed_s(self) -> float | None:
        """Mission time of the next time-tagged command or fault end, if any (the
        clock stops on it)."""
        ends = [end for f in self.faults.values() if (end := _fault_end_s(f)) is not None]
        if self.timed:
            ends.append(float(execute_at_s(self.timed[0]) or 0.0))
        return min(ends) if ends else None

    # --- injected faults -------------------------------------------------------
    def clear_fault(self, fault_id: str) -> bool:
        """End a fault now (ClearFault); False if no active fault has that id."""
        for kind, fault in list(self.faults.items()):
            if fault["fault_id"] == fault_id:
                self.cleared_faults.append({**self.faults.pop(kind), "reason": "cleared"})
                return True
        return False

    def note_faults(self, t: float, out: Outbox) -> None:
        """At the start of each step: end the faults whose ``duration_s`` has run
        out, and announce every fault injected or ended since the last step."""
        for kind, fault in list(self.faults.items()):
            end = _fault_end_s(fault)
            if end is not None and end <= t + 1e-6:
                self.cleared_faults.append({**self.faults.pop(kind), "reason": "expired"})
        for _, fault in sorted(self.faults.items()):
            if not fault.get("noted"):
                self._note_injected(fault, t, out)
        for fault in self.cleared_faults:
            # A fault that ended before any step ran (a stalled service runs
            # none while it lasts) is logged as injected first.
            if not fault.get("noted"):
                self._note_injected(fault, t, out)
            out.event(self.name, "fault_cleared", t, kind=fault["kind"],
                      fault_id=fault["fault_id"], reason=fault["reason"])
        self.cleared_faults = []

    def _note_injected(self, fault: dict[str, Any], t: float, out: Outbox) -> None:
        fault["noted"] = True
        out.event(self.name, "fault_injected", t, kind=fault["kind"],
                  fault_id=fault["fault_id"], magnitude=fault.get("magnitude"))

    def advance(self, t_from: float, t_to: float, out: Outbox) -> float:
        """Advance the state to ``t_to``; return the largest next step (s)."""
        self.t_s = t_to
        return COAST_STEP_S

    #: Run the modelled downlink (services/kernel/downlink.py) after every step:
    #: record a frame from :meth:`summary`, send what the link path allows.
    downlink_enabled = True

    def after_step(self, t_from: float, t_to: float, out: Outbox) -> None:
        """Called by the runtime after :meth:`advance`: the on-board downlink."""
        if self.downlink_enabled:
            run_downlink(self, t_from, t_to, out)

    def telemetry_interval_s(self) -> float:
        """Mission seconds between telemetry frames (0: one every step)."""
        return 0.0

    def link_blocked(self) -> bool:
        """True while the vehicle cannot transmit at all (e.g. entry plasma blackout)."""
        return False

    def summary(self) -> Summary:
        return Summary(phase=self.phase)

    def validate(self, command: dict[str, Any]) -> None:
        """Raise InvalidCommand / CommandNotAllowed for a command it cannot take."""
        op = command.get("op")
        if not isinstance(op, str) or not op:
            raise InvalidCommand("command has no 'op'")
        if op not in self.operations():
            raise InvalidCommand(f"{self.name} has no operation {op!r}; "
                                 f"known: {', '.join(sorted(self.operations()))}")
        if op == "set_mode":
            self.validate_set_mode(command)
        execute_at_s(command)  # a malformed time tag makes the command invalid

    def operations(self) -> frozenset[str]:
        return frozenset({"set_mode"})

    def validate_set_mode(self, command: dict[str, Any]) -> None:
        mode = command.get("mode")
        if not isinstance(mode, str) or not mode:
            raise InvalidCommand("set_mode needs a non-empty 'mode'")
        if self.phase in AUTONOMOUS_PHASES:
            raise CommandNotAllowed(f"{self.name} is in the autonomous phase {self.phase!r}; "
                                    "ground cannot intervene until it ends")

    def execute(self, command: dict[str, Any], t: float, out: Outbox) -> None:
        """Carry out a validated command at the start of a step."""
        if command.get("op") == "set_mode":
            mode = str(command.get("mode", ""))
            out.event(self.name, "mode_changed", t, mode=mode, previous=self.phase)
            self.phase = mode

    def check_allowed(self, allowed_phases: tuple[str, ...], what: str) -> None:
        if self.phase not in allowed_phases:
            raise CommandNotAllowed(f"{what} is not allowed in phase {self.phase!r}; "
                                    f"allowed in: {', '.join(allowed_phases)}")

    # --- snapshots ---------------------------------------------------------
    def snapshot(self) -> dict[str, Any]:
        """A JSON-able copy of the whole state (restored by :meth:`restore`)."""
        snap: dict[str, Any] = {"t_s": self.t_s, "phase": self.phase, "faults": self.faults,
                                "cleared_faults": self.cleared_faults,
                                "rng": _rng_state(self.rng), "timed": self.timed}
        if self.downlink is not None:
            snap["downlink"] = self.downlink.snapshot()
        return snap

    def restore(self, snap: dict[str, Any]) -> None:
        self.t_s = float(snap["t_s"])
        self.phase = str(snap["phase"])
        self.faults = dict(snap["faults"])
        self.cleared_faults = list(snap.get("cleared_faults", []))
        self.timed = list(snap.get("timed", []))
        self.rng.setstate(_rng_from(snap["rng"]))
        if "downlink" in snap:
            self.downlink = Downlink.from_snapshot(snap["downlink"])


def _fault_end_s(fault: dict[str, Any]) -> float | None:
    """When a fault ends by itself (``duration_s`` > 0); None: until cleared."""
    duration = float(fault.get("duration_s") or 0.0)
    return float(fault["since"]) + duration if duration > 0 else None


def _rng_state(rng: random.Random) -> list[Any]:
    version, internal, gauss = rng.getstate()
    return [version, list(internal), gauss]


def _rng_from(raw: list[Any]) -> tuple[Any, ...]:
    return (raw[0], tuple(raw[1]), raw[2])
