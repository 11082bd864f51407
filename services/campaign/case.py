"""One campaign case: a whole mission flown in-process, and what it came to.

A case is the flight plan, the twin's seed and the dispersed parameters. It
flies through the same vehicle cores and the same step rule as the services
over NATS (:class:`~services.local.simloop.SimLoop`: no bus), and its row
holds what the vehicles announced they applied, the key events and the
outcomes. Its digest is the SHA-256 of the mission's events (without each
message's sequence number, which counts a driver's other traffic too): the
same case flown by the six services over NATS has the same digest
(:func:`report_digest` reads it from that run's report).

Nothing here reads the wall clock except the case's budget (a watchdog on a
case that hangs, never an input to the mission).
"""

from __future__ import annotations

import hashlib
import math
import time
import traceback
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from services.campaign.registry import core_class, plan_of
from services.dynamics.timescale import iso_utc
from services.ground.vehicle import GroundCore
from services.kernel.config import VEHICLES
from services.kernel.eventrows import event_from_envelope, event_rows
from services.kernel.parameters import PARAMETERS_EVENT, split_path
from services.local.simloop import SimLoop

__all__ = ["OUTCOME_COLUMNS", "CaseSpec", "CaseTimeout", "applied_parameters", "events_digest",
           "fly_case", "not_applied", "outcomes", "report_digest"]


#: Outcome columns of a case's row (float; NaN when the event never came),
#: from the event and the field named: (column, event, field).
_FROM_EVENTS: tuple[tuple[str, str, str], ...] = (
    ("touchdown_t_s", "lunar_touchdown", "t_s"),
    ("touchdown_lat_deg", "lunar_touchdown", "lat_deg"),
    ("touchdown_lon_deg", "lunar_touchdown", "lon_deg"),
    ("touchdown_miss_m", "lunar_touchdown", "miss_m"),
    ("touchdown_speed_m_s", "lunar_touchdown", "speed_m_s"),
    ("lander_propellant_kg", "lunar_touchdown", "propellant_kg"),
    ("liftoff_t_s", "ascent_liftoff", "t_s"),
    ("docking_t_s", "docking", "t_s"),
    ("ascender_propellant_kg", "ascender_docked", "propellant_kg"),
    ("tei1_t_s", "tei_burn_1", "t_s"),
    ("orbiter_propellant_kg", "tei_burn_2", "propellant_kg"),
    ("entry_t_s", "entry_interface", "t_s"),
    ("entry_peak_g", "earth_landing", "peak_decel_g"),
    ("entry_peak_heat_flux_w_m2", "earth_landing", "peak_heat_flux_w_m2"),
    ("landing_t_s", "earth_landing", "t_s"),
    ("landing_lat_deg", "earth_landing", "lat_deg"),
    ("landing_lon_deg", "earth_landing", "lon_deg"),
    ("landing_miss_m", "earth_landing", "miss_m"),
    ("sample_mass_g", "earth_landing", "sample_mass_g"),
)
OUTCOME_COLUMNS = tuple(c for c, _, _ in _FROM_EVENTS)


class CaseTimeout(Exception):
    """The case ran past its wall-time budget."""


@dataclass(frozen=True)
class CaseSpec:
    """Everything one case is: flown alone, it gives the same row anywhere."""

    case: int
    plan: str
    twin_seed: int
    parameters: Mapping[str, float] = field(default_factory=dict)
    budget_s: float = 600.0

    def to_json(self) -> dict[str, Any]:
        return {"case": self.case, "plan": self.plan, "twin_seed": self.twin_seed,
                "parameters": dict(self.parameters), "budget_s": self.budget_s}

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> CaseSpec:
        return cls(int(raw["case"]), str(raw["plan"]), int(raw["twin_seed"]),
                   {str(k): float(v) for k, v in raw["parameters"].items()},
                   float(raw["budget_s"]))


def fly_case(spec: CaseSpec) -> dict[str, Any]:
    """Fly ``spec`` in-process; its row (never raises: a failure is a row too).

    Its status: ``ok`` (flown to the plan's end), ``failed`` (raised, or a
    dispersion did not reach its vehicle) or ``timeout`` (past its wall-time
    budget). An ok case *succeeds* when the returner landed inside the landing
    zone with the sample."""
    started = time.monotonic()  # the budget's watchdog only
    row: dict[str, Any] = {"case": spec.case, "twin_seed": spec.twin_seed}
    loop: SimLoop | None = None
    try:
        loop = _loop(spec)

        def watchdog(sim: SimLoop) -> None:
            if time.monotonic() - started > spec.budget_s:
                raise CaseTimeout(f"past its budget of {spec.budget_s:g} wall s at mission "
                                  f"time {sim.t_s:.0f} s (step {sim.step})")

        result = loop.run(on_step=watchdog)
        rows = event_rows(event_from_envelope(e) for e in result.events)
        applied = applied_parameters(rows)
        row |= {"status": "ok", "reason": "", "end_t_s": result.t_s, "steps": result.steps,
                "digest": events_digest(rows), "applied": applied, **outcomes(rows)}
        if applied != dict(spec.parameters):
            row |= {"status": "failed", "reason": not_applied(spec.parameters, applied)}
    except CaseTimeout as exc:
        row |= {"status": "timeout", "reason": str(exc)}
    except Exception as exc:  # a case that raises is a failed case; the campaign goes on
        row |= {"status": "failed", "reason": failure_reason(exc, loop)}
    row["success"] = bool(row["status"] == "ok" and row.get("landing_in_zone")
                          and (row.get("sample_mass_g") or 0.0) > 0.0)
    row["parameters"] = dict(spec.parameters)
    return row


def failure_reason(exc: BaseException, loop: SimLoop | None) -> str:
    """What raised, where in the code (the deepest frame, and the participant's
    own frame nearest it) and when in the mission."""
    frames = traceback.extract_tb(exc.__traceback__)
    parts = [f"{type(exc).__name__}: {exc}"]
    if frames:
        deepest = frames[-1]
        where = f"{Path(deepest.filename).name}:{deepest.lineno}"
        owners = (*VEHICLES, "ground")
        own = next((f for f in reversed(frames) if Path(f.filename).parent.name in owners), None)
        if own is not None and own is not deepest:
            where += (f"; in {Path(own.filename).parent.name}/{Path(own.filename).name}:"
                      f"{own.lineno} {own.name}")
        parts.append(f"({where})")
    if loop is not None and loop.step:
        parts.append(f"in step {loop.step} from {iso_utc(loop.t_s)}")
    return " ".join(parts)


def _loop(spec: CaseSpec) -> SimLoop:
    given: dict[str, dict[str, float]] = {}
    for path, value in spec.parameters.items():
        vehicle, name = split_path(path)
        given.setdefault(vehicle, {})[name] = value
    unknown = sorted(set(given) - set(VEHICLES))
    if unknown:
        raise ValueError(f"no vehicle {unknown[0]!r}: parameters name one of {VEHICLES}")
    cores = {}
    for vehicle in VEHICLES:
        core = core_class(vehicle)(spec.twin_seed)
        core.set_parameters(given.get(vehicle, {}))
        cores[vehicle] = core
    return SimLoop(GroundCore(spec.twin_seed, plan_of(spec.plan)), cores)


def applied_parameters(rows: Iterable[Mapping[str, Any]]) -> dict[str, float]:
    """What the vehicles announced they applied (``parameters_applied``)."""
    out: dict[str, float] = {}
    for row in rows:
        if row["name"] == PARAMETERS_EVENT:
            out.update({str(k): float(v) for k, v in row["parameters"].items()})
    return dict(sorted(out.items()))


def not_applied(given: Mapping[str, float], applied: Mapping[str, float]) -> str:
    missing = sorted(set(given) - set(applied))
    if missing:
        return f"dispersion not applied: no vehicle announced {missing[0]}"
    wrong = sorted(p for p in given if applied.get(p) != given[p])
    if wrong:
        p = wrong[0]
        return f"dispersion not applied: {p} drawn {given[p]!r}, vehicle applied {applied[p]!r}"
    extra = sorted(set(applied) - set(given))
    return f"a vehicle announced {extra[0]}, which the case did not disperse"


def outcomes(rows: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """The outcome columns from a mission's event rows (the first of each event)."""
    first: dict[str, Mapping[str, Any]] = {}
    for row in rows:
        first.setdefault(str(row["name"]), row)
    out: dict[str, Any] = {}
    for column, event, key in _FROM_EVENTS:
        value = first.get(event, {}).get(key)
        out[column] = float(value) if isinstance(value, (int, float)) else math.nan
    landing = first.get("earth_landing")
    out["landing_in_zone"] = None if landing is None else bool(landing.get("in_zone"))
    return out


def events_digest(rows: Iterable[Mapping[str, Any]]) -> str:
    """SHA-256 of a mission's event rows (report order), each without ``seq``."""
    h = hashlib.sha256()
    for row in rows:
        h.update(orjson.dumps({k: v for k, v in row.items() if k != "seq"},
                              option=orjson.OPT_SORT_KEYS))
        h.update(b"\n")
    return h.hexdigest()


def report_digest(report: Mapping[str, Any]) -> str:
    """The digest of a mission flown by the services (`twin run --report`)."""
    return events_digest(report["events"])
