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
from collections.abc import Callable, Mapping
from typing import Any, ClassVar

from services.dynamics.timescale import mission_s_from_utc
from services.kernel.envelope import Envelope
from services.kernel.errors import (
    CommandError,
    CommandNotAllowed,
    InvalidCommand,
    MessageError,
)
from services.kernel.faults import FAULT_KINDS_COMMON, INJECT_FAULT_OP, make_fault
from services.kernel.messages import Transfer, parse
from services.kernel.outbox import PROMPT_STEP_S, PROMPT_TYPES, Outbox, Outgoing, Summary
from services.kernel.parameters import Parameter, check_values
from services.kernel.radio import run_downlink
from services.kernel.recorder import Downlink
from services.kernel.state import restore_state, snapshot_state

__all__ = ["AUTONOMOUS_PHASES", "COAST_STEP_S", "COMMAND_SOURCES", "PROMPT_STEP_S",
           "PROMPT_TYPES", "CommandHandler", "Outbox", "Outgoing", "Summary", "VehicleCore",
           "execute_at_s"]

#: Phases that run on board without ground (CNSA: "ground cannot intervene" in
#: landing; liftoff used onboard sensors), so telecommands are refused.
AUTONOMOUS_PHASES = frozenset({"powered_descent", "ascent", "entry"})

#: Largest step any vehicle accepts by default while coasting, in mission seconds.
COAST_STEP_S = 600.0


#: Who may command a vehicle: ground, the vehicle itself (gRPC), an operator's
#: tool, and Queqiao-2 forwarding ground's commands to the far side.
COMMAND_SOURCES = frozenset({"ground", "cli", "relay"})
_TAG_KEYS = ("execute_at_s", "execute_at_utc")


#: The id a command uplinked by an operator's control system carries (ground's
#: Uplink call, services/gateway/): the vehicle names it when it runs or refuses
#: the command, so the control system's verifiers can follow it. Plan commands
#: carry none, and their events stay as they were.
UPLINK_ID = "command_id"


def _uplink_id(command: dict[str, Any]) -> dict[str, Any]:
    return {UPLINK_ID: command[UPLINK_ID]} if UPLINK_ID in command else {}


def service_rng(seed: int, name: str) -> random.Random:
    """The stream of random numbers of service ``name`` in a mission of ``seed``."""
    return random.Random(seed * 1_000_003 + zlib.crc32(name.encode()))


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


#: Carries out one validated command: (command, mission time, outbox).
CommandHandler = Callable[[dict[str, Any], float, Outbox], None]


class VehicleCore:
    """Base of every service's state machine. Subclasses override the hooks.

    State: the attributes a core class annotates in its body, here and in each
    subclass, are its state; :meth:`snapshot` and :meth:`restore` encode them
    by their types (services/kernel/state.py). Attributes only assigned in
    ``__init__`` are derived (caches, constants, the command table) and are
    rebuilt by :meth:`restored`.
    """

    name = "vehicle"

    # One stream of random numbers per service, derived from the mission seed.
    rng: random.Random
    t_s: float
    phase: str
    faults: dict[str, dict[str, Any]]  # kind -> fault (set by InjectFault)
    cleared_faults: list[dict[str, Any]]  # ended, not yet announced
    timed: list[dict[str, Any]]  # time-tagged commands, soonest first
    #: The on-board recorder and radio (services/kernel/recorder.py), from
    #: the first step that runs it.
    downlink: Downlink | None
    #: The dispersible quantities of this vehicle (services/kernel/parameters.py).
    PARAMETERS: ClassVar[tuple[Parameter, ...]] = ()
    #: The values this run gave (by name within the vehicle); the rest are nominal.
    params: dict[str, float]
    #: False until the first step has announced ``params`` (``parameters_applied``).
    params_announced: bool

    def __init__(self, seed: int) -> None:
        self.rng = service_rng(seed, self.name)
        self.t_s = 0.0
        self.phase = "prelaunch"
        self.faults = {}
        self.cleared_faults = []
        self.timed = []
        self.downlink = None
        self.params = {}
        self.params_announced = True  # nothing to announce
        #: op -> the bound method that carries it out, built once.
        self.command_handlers: dict[str, CommandHandler] = self.command_table()

    # --- hooks -------------------------------------------------------------
    def apply(self, msg: Envelope, out: Outbox) -> None:
        """Apply one message received during an earlier step."""
        if msg.kind == "command" and (msg.src in COMMAND_SOURCES or msg.src == self.name):
            if msg.body.get("op") == INJECT_FAULT_OP and msg.src == "ground":
                self.planned_fault(msg.body, out)
            else:
                self.receive_command(msg.body, out)
        elif msg.kind == "transfer":
            self._receive_transfer(msg, out)

    def _receive_transfer(self, msg: Envelope, out: Outbox) -> None:
        """Type a transfer once, here, for :meth:`receive`. A malformed one is
        reported (``message_rejected``) and dropped: a bad message is never fatal."""
        try:
            message = parse(msg)
        except MessageError as exc:
            out.event(self.name, "message_rejected", self.t_s, message_type=exc.message_type,
                      src=msg.src, field=exc.field, reason=exc.problem)
            return
        self.receive(message, msg, out)

    def receive(self, message: Transfer, msg: Envelope, out: Outbox) -> None:
        """Act on a typed transfer from ``msg.src``: each core matches its own types
        (tests/unit/test_messages.py checks that every type sent is handled)."""

    # --- commands, time tags --------------------------------------------------
    def receive_command(self, command: dict[str, Any], out: Outbox) -> None:
        """Validate on board; run now, or keep until its time tag."""
        try:
            self.validate(command)
            due = execute_at_s(command)
        except CommandError as exc:
            out.event(self.name, "command_rejected", self.t_s, op=command.get("op"),
                      plan_id=command.get("plan_id"), reason=exc.reason,
                      **_uplink_id(command))
            return
        if due is not None and due > self.t_s + 1e-6:
            self.timed.append(dict(command))
            self.timed.sort(key=lambda c: float(execute_at_s(c) or 0.0))
            return
        self.execute(command, self.t_s, out)
        if UPLINK_ID in command:  # a mission control system follows its commands by it
            out.event(self.name, "command_executed", self.t_s, op=command.get("op"),
                      command_id=command[UPLINK_ID])

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
    def fault_kinds_known(self) -> frozenset[str]:
        """Every fault kind this core can suffer."""
        return FAULT_KINDS_COMMON | getattr(self, "fault_kinds", frozenset())

    def inject_fault(self, fault_id: str, kind: str, *, magnitude: float = 0.0,
                     duration_s: float = 0.0, subsystem: str = "") -> dict[str, Any]:
        """Start a fault now (InjectFault or a plan's fault item): it is announced
        at the start of the next step; InvalidCommand if it cannot be."""
        fault = make_fault(fault_id, kind, self.fault_kinds_known(), since_s=self.t_s,
                           magnitude=magnitude, duration_s=duration_s, subsystem=subsystem)
        self.faults[kind] = fault
        return fault

    def planned_fault(self, command: dict[str, Any], out: Outbox) -> None:
        """A flight-plan fault item (services/ground/plan.py): the plan item's id
        is the fault's, so runs and drivers name it alike."""
        try:
            self.inject_fault(str(command.get("plan_id", "")), str(command.get("kind", "")),
                              magnitude=float(command.get("magnitude", 0.0)),
                              duration_s=float(command.get("duration_s", 0.0)),
                              subsystem=str(command.get("subsystem", "")))
        except (CommandError, TypeError, ValueError) as exc:
            reason = exc.reason if isinstance(exc, CommandError) else str(exc)
            out.event(self.name, "command_rejected", self.t_s, op=INJECT_FAULT_OP,
                      plan_id=command.get("plan_id"), reason=reason)

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

    #: Run the modelled downlink (services/kernel/radio.py) after every step:
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
        """The ops this vehicle knows: those of its command table."""
        return frozenset(self.command_handlers)

    def command_table(self) -> dict[str, CommandHandler]:
        """op -> handler; a subclass extends its parent's table."""
        return {"set_mode": self._set_mode}

    def validate_set_mode(self, command: dict[str, Any]) -> None:
        mode = command.get("mode")
        if not isinstance(mode, str) or not mode:
            raise InvalidCommand("set_mode needs a non-empty 'mode'")
        if self.phase in AUTONOMOUS_PHASES:
            raise CommandNotAllowed(f"{self.name} is in the autonomous phase {self.phase!r}; "
                                    "ground cannot intervene until it ends")

    def execute(self, command: dict[str, Any], t: float, out: Outbox) -> None:
        """Carry out a validated command at the start of a step."""
        handler = self.command_handlers.get(str(command.get("op")))
        if handler is not None:
            handler(command, t, out)

    def _set_mode(self, command: dict[str, Any], t: float, out: Outbox) -> None:
        mode = str(command.get("mode", ""))
        out.event(self.name, "mode_changed", t, mode=mode, previous=self.phase)
        self.phase = mode

    def check_allowed(self, allowed_phases: tuple[str, ...], what: str) -> None:
        if self.phase not in allowed_phases:
            raise CommandNotAllowed(f"{what} is not allowed in phase {self.phase!r}; "
                                    f"allowed in: {', '.join(allowed_phases)}")

    # --- dispersible parameters --------------------------------------------
    def set_parameters(self, values: Mapping[str, float]) -> None:
        """Take values of some of :attr:`PARAMETERS` (names within the vehicle),
        before the first step; the rest keep their nominal values. Raises
        :class:`~services.kernel.parameters.ParameterError` naming what to fix."""
        self.params = check_values(self.name, self.PARAMETERS, values)
        self.params_announced = not self.params

    def param(self, name: str) -> float:
        """The value of parameter ``name`` in this run (its nominal one if not given)."""
        value = self.params.get(name)
        return _nominal_values(type(self))[name] if value is None else value

    def announce_parameters(self, t: float, out: Outbox) -> None:
        """The values this run gave, as the vehicle applies them (first step)."""
        out.event(self.name, "parameters_applied", t,  # PARAMETERS_EVENT
                  parameters={f"{self.name}.{k}": v for k, v in sorted(self.params.items())})
        self.params_announced = True

    # --- snapshots ---------------------------------------------------------
    def snapshot(self) -> dict[str, Any]:
        """A JSON-able copy of the whole state (restored by :meth:`restore`)."""
        return snapshot_state(self)

    def restore(self, snap: dict[str, Any]) -> None:
        restore_state(self, snap)
        self.restored()

    def restored(self) -> None:
        """Rebuild what is derived from the state, after :meth:`restore`."""


_NOMINALS: dict[type[VehicleCore], dict[str, float]] = {}


def _nominal_values(cls: type[VehicleCore]) -> dict[str, float]:
    """Parameter name -> nominal value of a core class (built once per class)."""
    found = _NOMINALS.get(cls)
    if found is None:
        found = _NOMINALS[cls] = {p.name: p.nominal for p in cls.PARAMETERS}
    return found


def _fault_end_s(fault: dict[str, Any]) -> float | None:
    """When a fault ends by itself (``duration_s`` > 0); None: until cleared."""
    duration = float(fault.get("duration_s") or 0.0)
    return float(fault["since"]) + duration if duration > 0 else None

