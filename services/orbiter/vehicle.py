"""The orbiter's core: the CE-6 stack from separation, then the OR stack, and ICUBE-Q.

Flow (docs/mission.md, "Flight plan"): ``probe_separation`` (state from
``targeting.plan_tli``) -> cruise with ``trajectory_correction`` -> 3,000 N
finite ``lunar_orbit_insertion`` -> ``release_icubeq`` -> ``orbit_adjust``
stages 1..4 -> ``separate_lander`` (LA stack hand-over) -> ``rendezvous``
(closing approach, docking) -> sample transfer -> ``undock`` ->
``prepare_return`` -> ``trans_earth_injection`` -> ``trajectory_correction``
-> ``separate_returner`` (hand-over to reentry), avoidance burn.

Planning lives in ``legs`` and ``closing``, the trajectory in ``flight``,
resources in ``onboard``; this module keeps the state machine, the burn
queue and the messages.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np

from services.dynamics import change6
from services.dynamics.burns import (
    Engine,
    Steering,
    finite_burn,
    inertial_from_rtn,
    steer_inertial,
    steer_rtn,
    steer_velocity,
)
from services.dynamics.constants import GM_MOON_M3_S2, R_EARTH_EQ_M
from services.dynamics.guidance.loi import (
    PARKING_HEIGHT_M,
    PARKING_INCLINATION_DEG,
    plan_loi_finite,
)
from services.dynamics.kepler import elements_from_rv, propagate_kepler
from services.dynamics.power import PropellantError, PropellantTank
from services.dynamics.targeting import MOON_SOI_SWITCH_S, plan_tcm, plan_tei_detailed
from services.kernel.envelope import Envelope
from services.kernel.errors import CommandError, InvalidCommand
from services.kernel.messages import (
    Docked,
    Handover,
    HandoverAck,
    HandoverExtra,
    SampleAck,
    SampleHandover,
    TargetState,
    Transfer,
    Undocked,
    vec3,
)
from services.kernel.onboard import utc_arg
from services.kernel.parameters import Parameter
from services.kernel.vehicle import CommandHandler, Outbox, Summary, VehicleCore
from services.orbiter import closing, design, dispersions, legs, onboard
from services.orbiter.flight import Flight, Vec, apsides_km, period_h, unit, vec
from services.orbiter.schedule import (
    Carried,
    Counts,
    FiniteBurn,
    PeriluneAim,
    QueuedBurn,
    Recentring,
    Rendezvous,
    Steer,
)

CRUISE_STEP_S = 3_600.0
ORBIT_STEP_S = 1_800.0
NEAR_EVENT_S = 600.0  # within this of an on-board event, steps of ...
NEAR_EVENT_STEP_S = 60.0
TERMINAL_STEP_S = 1.0
# Separation of the ascender at undocking: 0.5 m/s retrograde (assumption),
# so it drifts away for good instead of returning each revolution.
UNDOCK_DV_M_S = 0.5
AVOIDANCE_DELAY_S = 120.0  # the avoidance burn follows the returner separation
_EPS_S = 1e-6

_PHASES_IN_ORBIT = ("lunar_orbit",)
#: op -> the phases it is allowed in (every op but set_mode has a rule).
OP_PHASES = {
    "probe_separation": ("launch",),
    "trajectory_correction": ("earth_moon_transfer", "moon_earth_transfer"),
    "lunar_orbit_insertion": ("earth_moon_transfer",),
    "release_icubeq": _PHASES_IN_ORBIT,
    "orbit_adjust": _PHASES_IN_ORBIT,
    "separate_lander": _PHASES_IN_ORBIT,
    "rendezvous": _PHASES_IN_ORBIT,
    "undock": ("docked",),
    "prepare_return": _PHASES_IN_ORBIT,
    "trans_earth_injection": _PHASES_IN_ORBIT,
    "separate_returner": ("moon_earth_transfer",),
    # Operator burns (gRPC SendCommand impulsive_burn / finite_burn): an
    # impulse in any free flight; a finite burn only about the Moon, where the
    # powered integrator's gravity model (burns.finite_burn) applies.
    "burn": ("lunar_orbit", "earth_moon_transfer", "moon_earth_transfer"),
    "finite_burn": _PHASES_IN_ORBIT,
}
#: op -> the flight plan's fact (an ISO UTC instant) it must carry: what it aims
#: at. The orbiter holds no mission dates of its own (docs/mission.md, "Flight plan").
OP_FACTS = {
    "probe_separation": "loi_utc",  # the coast ends at a perilune then
    "orbit_adjust": "pdi_utc",  # the plane is aimed over the site at PDI
    "prepare_return": "ei_utc",  # the return plane and TEI aim at the entry interface
    "trans_earth_injection": "ei_utc",
}
#: Frames an operator's burn may be given in. MCI and ECI share the ICRF axes,
#: so a delta-v vector reads the same in both; RTN is the local orbital frame.
BURN_FRAMES = ("RTN", "MCI", "ECI")
#: Longest operator finite burn: LOI, the longest planned, takes ~15 min.
MAX_COMMANDED_BURN_S = 3_600.0


class OrbiterCore(VehicleCore):
    name = "orbiter"
    fault_kinds = frozenset({"thrust_loss"})
    #: Engine, burn execution, mass and injection errors (services/orbiter/dispersions.py).
    PARAMETERS: ClassVar[tuple[Parameter, ...]] = dispersions.PARAMETERS

    flight: Flight | None
    tank: PropellantTank
    carrying: Carried
    ascender_kg: float
    sample_g: float
    burns: list[QueuedBurn]  # impulsive burns queued, by time
    finite: FiniteBurn | None
    switch: Recentring | None
    loi_epoch_s: float  # the plan's LOI (probe_separation's loi_utc); nan before
    ei_epoch_s: float  # the plan's entry interface (ei_utc of the return commands); nan before
    perilune_aim: PeriluneAim | None
    pending: dict[str, str]  # hand-over id -> what, awaiting ack
    samples_seen: list[str]
    target: closing.Target | None
    rdv: Rendezvous | None
    icubeq: onboard.Icubeq | None
    power: onboard.Power
    thrust_n: float
    counts: Counts

    def __init__(self, seed: int) -> None:
        super().__init__(seed)
        self.phase = "launch"
        self.flight = None
        self.tank = PropellantTank("orbiter", design.ORBITER_PROPELLANT_KG,
                                   design.ORBITER_PROPELLANT_KG, design.PROPELLANT_RESERVE_KG)
        self.carrying = Carried()
        self.ascender_kg = 0.0
        self.sample_g = 0.0
        self.burns = []
        self.finite = None
        self.switch = None
        self.loi_epoch_s = math.nan
        self.ei_epoch_s = math.nan
        self.perilune_aim = None
        self.pending = {}
        self.samples_seen = []
        self.target = None
        self.rdv = None
        self.icubeq = None
        self.power = onboard.Power.initial()
        self.thrust_n = 0.0
        self.counts = Counts()

    # --- dispersible parameters ---------------------------------------------------------
    def set_parameters(self, values: Mapping[str, float]) -> None:
        """As the base, and the propellant loaded follows ``propellant_offset_kg``
        (the tank is state from launch on, so it is filled here, before the first step)."""
        super().set_parameters(values)
        load = design.ORBITER_PROPELLANT_KG
        if "propellant_offset_kg" in self.params:
            load += self.param("propellant_offset_kg")
        self.tank = PropellantTank("orbiter", load, load, design.PROPELLANT_RESERVE_KG)

    def _dry_mass_kg(self) -> float:
        if "dry_mass_offset_kg" in self.params:
            return design.ORBITER_DRY_MASS_KG + self.param("dry_mass_offset_kg")
        return design.ORBITER_DRY_MASS_KG

    def _engine(self) -> Engine:
        """The main engine as it performs in this run (the planners keep the design's)."""
        if "engine.thrust_scale" not in self.params and "engine.isp_scale" not in self.params:
            return design.MAIN_ENGINE
        e = design.MAIN_ENGINE
        return Engine(e.max_thrust_n * self.param("engine.thrust_scale"),
                      e.v_e_m_s * self.param("engine.isp_scale"), e.min_thrust_n)

    def _executed(self, dv: Vec) -> Vec:
        """A commanded impulsive delta-v as the vehicle executes it: (1 + e) times
        its length, turned by the thrust misalignment (each only when dispersed,
        so a nominal run is bit-identical)."""
        if "burn.magnitude_error" in self.params:
            dv = dv * (1.0 + self.param("burn.magnitude_error"))
        if "burn.pointing_error_x_deg" in self.params or "burn.pointing_error_y_deg" in self.params:
            f = self._fly()
            dv = dispersions.misaligned(dv, f.r_m, f.v_m_s, self.param("burn.pointing_error_x_deg"),
                                       self.param("burn.pointing_error_y_deg"))
        return dv

    def _steering(self, steering: Steering) -> Steering:
        """A finite burn's steering law with the thrust misalignment, if dispersed."""
        if "burn.pointing_error_x_deg" not in self.params and \
                "burn.pointing_error_y_deg" not in self.params:
            return steering
        x_deg = self.param("burn.pointing_error_x_deg")
        y_deg = self.param("burn.pointing_error_y_deg")

        def misaligned(t: float, r: Vec, v: Vec, m: float) -> Vec:
            return dispersions.misaligned(steering(t, r, v, m), r, v, x_deg, y_deg)
        return misaligned

    def _injected(self, r_m: Vec, v_m_s: Vec) -> tuple[Vec, Vec]:
        """The separation state the launcher delivers: the solver's plus the
        injection error, if dispersed (radial / along-track / cross-track)."""
        if not any(name in self.params for name in dispersions.INJECTION_PARAMETERS):
            return r_m, v_m_s
        errors = [self.param(name) for name in dispersions.INJECTION_PARAMETERS]
        return dispersions.injected_state(r_m, v_m_s, vec(errors[:3]), vec(errors[3:]))

    # --- bookkeeping --------------------------------------------------------------------
    def mass_kg(self) -> float:
        m = self._dry_mass_kg() + self.tank.mass_kg + self.ascender_kg
        if self.carrying.la_stack:
            m += design.LA_STACK_MASS_KG
        if self.carrying.icubeq:
            m += design.ICUBEQ_MASS_KG
        if self.carrying.returner:
            m += design.RETURNER_EMPTY_MASS_KG + self.sample_g / 1_000.0
        return m

    def _fly(self) -> Flight:
        if self.flight is None:
            raise CommandError("the orbiter has no trajectory before probe separation")
        return self.flight

    def _event(self, out: Outbox, name: str, t: float, **values: Any) -> None:
        where = self.flight.where() if self.flight is not None else {}
        out.event(self.name, name, t, **where, mass_kg=self.mass_kg(), **values)

    def _thrust_scale(self) -> float:
        fault = self.faults.get("thrust_loss")
        if fault is None:
            return 1.0
        return min(1.0, max(0.0, 1.0 - float(fault.get("magnitude", 0.0))))

    # --- commands -----------------------------------------------------------------------
    def command_table(self) -> dict[str, CommandHandler]:
        return {**super().command_table(),
                "probe_separation": self._do_probe_separation,
                "trajectory_correction": self._do_trajectory_correction,
                "lunar_orbit_insertion": self._do_lunar_orbit_insertion,
                "release_icubeq": self._do_release_icubeq,
                "orbit_adjust": self._do_orbit_adjust,
                "separate_lander": self._do_separate_lander,
                "rendezvous": self._do_rendezvous,
                "undock": self._do_undock,
                "prepare_return": self._do_prepare_return,
                "trans_earth_injection": self._do_trans_earth_injection,
                "separate_returner": self._do_separate_returner,
                "burn": self._do_burn,
                "finite_burn": self._do_finite_burn}

    def validate(self, command: dict[str, Any]) -> None:
        super().validate(command)
        op = str(command["op"])
        if op in OP_PHASES:
            self.check_allowed(OP_PHASES[op], op)
        if op == "orbit_adjust":
            stage = command.get("stage")
            if not isinstance(stage, int) or isinstance(stage, bool) or not 1 <= stage <= 4:
                raise InvalidCommand("orbit_adjust needs an integer 'stage' in 1..4")
        if op in OP_FACTS:
            utc_arg(command, OP_FACTS[op])
        if op == "burn":
            _burn_vector(command, "delta_v_m_s", "the delta-v")
        if op == "finite_burn":
            self._validate_finite(command)
        if op == "trajectory_correction":
            self._validate_correction(command)
        self._validate_state(op)

    def _validate_correction(self, command: dict[str, Any]) -> None:
        if command.get("target") not in (None, "perilune", "entry_interface"):
            raise InvalidCommand("trajectory_correction 'target' is perilune or entry_interface")
        if self._correction_target(command) == "entry_interface" and math.isnan(self.ei_epoch_s):
            raise InvalidCommand("trajectory_correction to the entry interface needs the "
                                 "'ei_utc' of trans_earth_injection first")

    def _correction_target(self, command: dict[str, Any]) -> str:
        return str(command.get("target") or (
            "perilune" if self.phase == "earth_moon_transfer" else "entry_interface"))

    def _validate_finite(self, command: dict[str, Any]) -> None:
        _burn_vector(command, "direction", "the thrust direction")
        thrust = _number(command, "thrust_n")
        max_n = design.MAIN_ENGINE.max_thrust_n
        if not 0.0 < thrust <= max_n:
            raise InvalidCommand(f"finite_burn thrust_n must be in (0, {max_n:g}] N "
                                 f"(the main engine), got {thrust:g}")
        duration = _number(command, "duration_s")
        if not 0.0 < duration <= MAX_COMMANDED_BURN_S:
            raise InvalidCommand(f"finite_burn duration_s must be in (0, "
                                 f"{MAX_COMMANDED_BURN_S:g}] s, got {duration:g}")
        if self.finite is not None:
            raise InvalidCommand(f"a finite burn ({self.finite.label}) is already planned "
                                 "or under way")

    def _validate_state(self, op: str) -> None:
        if op == "release_icubeq" and not self.carrying.icubeq:
            raise InvalidCommand("ICUBE-Q was already released")
        if op == "separate_lander" and not self.carrying.la_stack:
            raise InvalidCommand("the LA stack was already separated")
        if op == "rendezvous" and self.carrying.la_stack:
            raise InvalidCommand("rendezvous needs the LA stack separated first")
        if op == "separate_returner" and not self.carrying.returner:
            raise InvalidCommand("the returner was already separated")

    def execute(self, command: dict[str, Any], t: float, out: Outbox) -> None:
        try:
            self.validate(command)
        except CommandError as exc:
            out.event(self.name, "command_rejected", t, op=str(command.get("op")),
                      reason=str(exc), plan_id=command.get("plan_id"))
            return
        if command["op"] != "set_mode" and self.flight is not None:
            self.flight.coast_to(t)  # commands act at the start of a step: already there
        super().execute(command, t, out)

    def _do_burn(self, command: dict[str, Any], t: float, out: Outbox) -> None:
        f = self._fly()
        frame, dv = _burn_vector(command, "delta_v_m_s", "the delta-v")
        dv_inertial = inertial_from_rtn(f.r_m, f.v_m_s, dv) if frame == "RTN" else dv
        label = self._command_label(command)
        got = self._impulse(dv_inertial, label, t, out)
        self._event(out, "commanded_burn", t, burn=label, frame=frame,
                    dv_m_s=got, **self._orbit_values(f))

    def _do_finite_burn(self, command: dict[str, Any], t: float, out: Outbox) -> None:
        frame, direction = _burn_vector(command, "direction", "the thrust direction")
        duration = _number(command, "duration_s")
        throttle = _number(command, "thrust_n") / design.MAIN_ENGINE.max_thrust_n
        label = self._command_label(command)
        engine, m0 = design.MAIN_ENGINE, self.mass_kg()
        burnt_kg = duration * engine.mass_flow_kg_s(throttle * engine.max_thrust_n)
        planned_dv = engine.v_e_m_s * math.log(m0 / max(m0 - burnt_kg, self._dry_for_burn_kg()))
        self.finite = FiniteBurn(label, t, t + duration, planned_dv,
                                 steer=Steer(frame, direction), throttle=throttle)

    def _command_label(self, command: dict[str, Any]) -> str:
        """An operator burn's name in events: its command id, else its ordinal."""
        return f"CMD-{command.get('command_id') or self.counts.burns + 1}"

    def _orbit_values(self, f: Flight) -> dict[str, float]:
        if f.central != "moon":
            el = f.elements()
            return {"perigee_alt_m": el.a_m * (1.0 - el.e) - R_EARTH_EQ_M}
        peri, apo = apsides_km(f.elements())
        return {"perilune_km": peri, "apolune_km": apo}

    def _do_probe_separation(self, command: dict[str, Any], t: float, out: Outbox) -> None:
        """The free coast from now to a perilune at the plan's LOI."""
        self.loi_epoch_s = utc_arg(command, "loi_utc")
        sol = legs.tli_solution(change6.lunar_arrival_target(t, self.loi_epoch_s))
        r_sep, v_sep = self._injected(vec(sol.r_sep_eci_m), vec(sol.v_sep_eci_m_s))
        self.flight = Flight("earth", r_sep, v_sep, t)
        self.switch = Recentring(self.loi_epoch_s - MOON_SOI_SWITCH_S, "moon")
        self.phase = "earth_moon_transfer"
        self._event(out, "probe_separation", t, perilune_alt_m=sol.perilune_alt_m,
                    perilune_inclination_deg=sol.inclination_deg,
                    perilune_t_s=sol.t_perilune_s, solver_iterations=sol.iterations)

    def _do_trajectory_correction(self, command: dict[str, Any], t: float, out: Outbox) -> None:
        f = self._fly()
        target = self._correction_target(command)
        r_eci, v_eci = f.eci()
        if target == "perilune":
            if self.perilune_aim is None:  # centre the LOI burn on perilune, once
                self.perilune_aim = self._loi_aim(r_eci, v_eci, t)
            aim = self.perilune_aim
            dv, peri = legs.plan_cruise_tcm(r_eci, v_eci, t, self._switch_t(), aim.t_s,
                                            aim.alt_m, PARKING_INCLINATION_DEG)
            info = {"perilune_alt_m": peri.alt_m, "perilune_t_s": peri.t_s,
                    "perilune_inclination_deg": peri.inclination_deg}
        else:
            dv = plan_tcm((r_eci, v_eci), t, change6.entry_interface_target(self.ei_epoch_s))
            info = {"target_t_ei_s": self.ei_epoch_s}
        self._impulse(dv, "TCM", t, out)
        self._event(out, "trajectory_correction", t, dv_m_s=float(np.linalg.norm(dv)),
                    target=target, **info)

    def _switch_t(self) -> float:
        return self.switch.t_s if self.switch else self.loi_epoch_s - MOON_SOI_SWITCH_S

    def _loi_aim(self, r_eci: Vec, v_eci: Vec, t: float) -> PeriluneAim:
        """Time and altitude of the approach perilune that centres the LOI burn on it
        (burn starting at the LOI epoch) and leaves a 200 km perilune after it:
        a ~15 min burn lowers the perilune by ~13 km, so aim that much higher."""
        peri = legs.predict_perilune(r_eci, v_eci, t, self._switch_t())
        # planned from ten minutes before perilune: plan_loi needs the perilune ahead
        r, v = propagate_kepler(peri.r_mci_m, peri.v_mci_m_s, -600.0, GM_MOON_M3_S2)
        plan = plan_loi_finite(r, v, self.mass_kg(), peri.t_s - 600.0,
                               design.MAIN_ENGINE, dry_mass_kg=self._dry_for_burn_kg(),
                               substep_s=5.0)  # only its outcome is used: plenty
        res = plan.result
        peri_after_m, _ = apsides_km(elements_from_rv(res.r_mci_m, res.v_mci_m_s, GM_MOON_M3_S2))
        drop_m = peri.alt_m - 1e3 * peri_after_m
        return PeriluneAim(self.loi_epoch_s + 0.5 * plan.duration_s, PARKING_HEIGHT_M + drop_m)

    def _dry_for_burn_kg(self) -> float:
        return self.mass_kg() - self.tank.available_kg(use_reserve=True)

    def _do_lunar_orbit_insertion(self, command: dict[str, Any], t: float, out: Outbox) -> None:
        f = self._fly()
        f.recentre("moon")
        self.switch = None
        plan = plan_loi_finite(f.r_m, f.v_m_s, self.mass_kg(), t, design.MAIN_ENGINE,
                               dry_mass_kg=self._dry_for_burn_kg())
        start = max(t, plan.t_start_s)
        self.finite = FiniteBurn("LOI", start, start + plan.duration_s, plan.result.dv_m_s,
                                 late_s=max(0.0, t - plan.t_start_s))
        self.phase = "lunar_orbit_insertion"

    def _do_release_icubeq(self, command: dict[str, Any], t: float, out: Outbox) -> None:
        f = self._fly()
        dv = design.ICUBEQ_RELEASE_DV_M_S * unit(f.r_m)  # radially away from the orbiter
        self.icubeq = onboard.Icubeq(f.r_m.copy(), f.v_m_s + dv, t)
        self.carrying.icubeq = False
        self._event(out, "icubeq_release", t, icubeq_mass_kg=design.ICUBEQ_MASS_KG,
                    separation_dv_m_s=design.ICUBEQ_RELEASE_DV_M_S)

    def _do_orbit_adjust(self, command: dict[str, Any], t: float, out: Outbox) -> None:
        f = self._fly()
        stage = int(command["stage"])
        burns = legs.plan_adjustment(stage, f.r_m, f.v_m_s, t, utc_arg(command, "pdi_utc"))
        for b in burns:
            self._queue(b.t_s, b.dv_mci_m_s, b.label, "orbit_adjustment", stage=stage)
        out.event(self.name, "orbit_adjustment_planned", t, stage=stage, burns=len(burns),
                  dv_m_s=sum(b.dv_m_s for b in burns))

    def _do_separate_lander(self, command: dict[str, Any], t: float, out: Outbox) -> None:
        f = self._fly()
        from services.dynamics.guidance.descent import LANDER_DRY_MASS_KG

        self.carrying.la_stack = False
        hid = f"la_stack-{t:.0f}"
        self._handover(out, "lander", hid, "la_stack", f, t, design.LA_STACK_MASS_KG,
                       design.LA_STACK_MASS_KG - LANDER_DRY_MASS_KG, LANDER_DRY_MASS_KG, 0.0)
        self._event(out, "la_or_separation", t, handover_id=hid,
                    la_stack_mass_kg=design.LA_STACK_MASS_KG)

    def _handover(self, out: Outbox, to: str, hid: str, what: str, f: Flight, t: float,
                  mass: float, prop: float, dry: float, sample_g: float) -> None:
        self.pending[hid] = what
        out.transfer(to, t, Handover(
            handover_id=hid, what=what, frame=f.frame, r_m=vec3(f.r_m), v_m_s=vec3(f.v_m_s),
            t_s=t, mass_kg=mass, propellant_kg=prop, dry_mass_kg=dry, sample_mass_g=sample_g,
            extra=HandoverExtra(central_body=f.central)))

    def _do_rendezvous(self, command: dict[str, Any], t: float, out: Outbox) -> None:
        self.rdv = Rendezvous(0, t)
        self.phase = "rendezvous"

    def _do_undock(self, command: dict[str, Any], t: float, out: Outbox) -> None:
        f = self._fly()
        v_asc = f.v_m_s - UNDOCK_DV_M_S * unit(f.v_m_s)
        out.transfer("ascender", t, Undocked(t_s=t, frame="MCI", r_m=vec3(f.r_m),
                                             v_m_s=vec3(v_asc), mass_kg=self.ascender_kg))
        asc = self.ascender_kg
        self.ascender_kg = 0.0
        self.phase = "lunar_orbit"
        self._event(out, "undocking", t, ascender_mass_kg=asc, separation_dv_m_s=UNDOCK_DV_M_S)

    def _do_prepare_return(self, command: dict[str, Any], t: float, out: Outbox) -> None:
        f = self._fly()
        self.ei_epoch_s = utc_arg(command, "ei_utc")
        burns, angle = legs.plan_return_plane(f.r_m, f.v_m_s, t,
                                              change6.entry_interface_target(self.ei_epoch_s))
        for b in burns:
            self._queue(b.t_s, b.dv_mci_m_s, "return-plane", "orbit_adjustment",
                        stage="return_plane")
        out.event(self.name, "orbit_adjustment_planned", t, stage="return_plane",
                  burns=len(burns), dv_m_s=sum(b.dv_m_s for b in burns),
                  plane_angle_deg=angle)

    def _do_trans_earth_injection(self, command: dict[str, Any], t: float,
                                  out: Outbox) -> None:
        f = self._fly()
        self.ei_epoch_s = utc_arg(command, "ei_utc")
        plan = plan_tei_detailed(f.r_m, f.v_m_s, t, change6.entry_interface_target(self.ei_epoch_s))
        for i, b in enumerate(plan.burns, start=1):
            self._queue(b.t_s, b.dv_mci_m_s, b.label, f"tei_burn_{i}")
        self.phase = "trans_earth_injection"
        ei = plan.entry
        out.event(self.name, "tei_planned", t, tei1_t_s=plan.burns[0].t_s,
                  tei2_t_s=plan.burns[1].t_s, ei_lat_deg=ei.lat_deg, ei_lon_deg=ei.lon_deg,
                  ei_alt_m=ei.altitude_m, ei_fpa_deg=ei.fpa_deg)

    def _do_separate_returner(self, command: dict[str, Any], t: float, out: Outbox) -> None:
        f = self._fly()
        f.recentre("earth")
        self.switch = None
        sample = self.sample_g
        self.carrying.returner = False
        self.sample_g = 0.0
        hid = f"returner-{t:.0f}"
        self._handover(out, "reentry", hid, "returner", f, t,
                       design.RETURNER_EMPTY_MASS_KG + sample / 1_000.0, 0.0,
                       design.RETURNER_EMPTY_MASS_KG, sample)
        self._event(out, "returner_separation", t, handover_id=hid, sample_mass_g=sample,
                    returner_mass_kg=design.RETURNER_EMPTY_MASS_KG + sample / 1_000.0)
        self._queue(t + AVOIDANCE_DELAY_S, None, "avoidance", "avoidance_burn")
        self.phase = "extended_mission"

    # --- messages -----------------------------------------------------------------------
    def receive(self, message: Transfer, msg: Envelope, out: Outbox) -> None:
        match message:
            case TargetState():
                self._on_target_state(message)
            case HandoverAck():
                self._on_ack(message, msg, out)
            case SampleHandover():
                self._on_sample(message, msg, out)

    def _on_target_state(self, m: TargetState) -> None:
        if self.target is None or m.t_s >= self.target.t_s:
            self.target = closing.Target(vec(m.r_m), vec(m.v_m_s), m.t_s, m.mass_kg)

    def _on_ack(self, ack: HandoverAck, msg: Envelope, out: Outbox) -> None:
        hid = ack.handover_id
        what = self.pending.pop(hid, None)
        if what is None:  # stale or duplicate: already recorded
            self.counts.ignored_acks += 1
            return
        self._event(out, "handover_acknowledged", msg.t, handover_id=hid, what=what,
                    accepted=ack.accepted, by=msg.src)

    def _on_sample(self, sample: SampleHandover, msg: Envelope, out: Outbox) -> None:
        hid, grams = sample.handover_id, sample.sample_mass_g
        out.transfer(msg.src, msg.t, SampleAck(handover_id=hid, sample_mass_g=grams))
        if hid in self.samples_seen:
            return
        self.samples_seen.append(hid)
        self.sample_g += grams
        self._event(out, "sample_transfer", msg.t, handover_id=hid, sample_mass_g=grams,
                    container_id=sample.container_id, from_vehicle=msg.src)
        self._event(out, "sample_custody", msg.t, owner="returner", sample_mass_g=self.sample_g)

    # --- burns --------------------------------------------------------------------------
    def _queue(self, t: float, dv: Vec | None, label: str, event: str, **values: Any) -> None:
        self.burns.append(QueuedBurn(t, None if dv is None else vec(dv), label, event, values))
        self.burns.sort(key=lambda b: (b.t_s, b.label))

    def _impulse(self, dv: Vec, label: str, t: float, out: Outbox) -> float:
        """Apply an impulsive burn (thrust faults honoured); returns the delta-v delivered."""
        f = self._fly()
        engine = self._engine()
        dv = self._executed(vec(dv)) * self._thrust_scale()
        mag = float(np.linalg.norm(dv))
        m0 = self.mass_kg()
        used = m0 * (1.0 - math.exp(-mag / engine.v_e_m_s))
        out.event(self.name, "burn_start", t, burn=label, dv_m_s=mag, propellant_kg=used)
        try:
            self.tank = self.tank.draw(used)
        except PropellantError:
            try:
                self.tank = self.tank.draw(used, use_reserve=True)
                out.event(self.name, "propellant_reserve_used", t, burn=label)
            except PropellantError as exc:
                out.event(self.name, "burn_failed", t, burn=label, reason=str(exc))
                return 0.0
        f.v_m_s = f.v_m_s + dv
        self.counts.burns += 1
        self.thrust_n = engine.max_thrust_n * self._thrust_scale()
        out.event(self.name, "burn_end", t, burn=label, dv_m_s=mag, propellant_kg=used)
        return mag

    def _run_queued(self, burn: QueuedBurn, t: float, out: Outbox) -> None:
        f = self._fly()
        if burn.dv is None:  # planned at execution: the avoidance burn
            r_eci, v_eci = f.eci()
            dv = legs.avoidance_dv(r_eci, v_eci)
        else:
            dv = burn.dv
        got = self._impulse(dv, burn.label, t, out)
        extra: dict[str, Any] = dict(burn.values)
        if burn.event in ("tei_burn_1", "tei_burn_2"):
            extra["propellant_kg"] = self.tank.mass_kg  # left for the return (campaigns)
        if burn.event == "tei_burn_2":
            self.phase = "moon_earth_transfer"
            self.switch = Recentring(t + MOON_SOI_SWITCH_S, "earth")
        if burn.event == "avoidance_burn":
            el = f.elements()
            extra["perigee_alt_m"] = el.a_m * (1.0 - el.e) - R_EARTH_EQ_M
        if burn.event == "orbit_adjustment" and f.central == "moon":
            peri, apo = apsides_km(f.elements())
            extra.update(perilune_km=peri, apolune_km=apo,
                         inclination_deg=legs.inclination_deg(f.r_m, f.v_m_s, t))
        self._event(out, burn.event, t, burn=burn.label, dv_m_s=got, **extra)

    # --- stepping -----------------------------------------------------------------------
    def advance(self, t_from: float, t_to: float, out: Outbox) -> float:
        self.t_s = t_to
        self.counts.steps += 1
        self.thrust_n = 0.0
        f = self.flight
        if f is None:
            return CRUISE_STEP_S
        # a restored core may be asked to catch up to a time it has already flown
        t_from = max(t_from, min(f.t_s, t_to))
        start = (f.central, f.r_m.copy(), f.v_m_s.copy(), f.mu_m3_s2)
        t = t_from
        self._due(t, out)
        while t < t_to - _EPS_S:
            if self._terminal_active():
                self._terminal(t, t_to, out)
                break
            burning = self.finite is not None and t >= self.finite.t_start_s - _EPS_S
            if burning:
                self._ignite(t, out)  # before the next event is read: it may move the cut-off
            t_next = min(t_to, self._next_event_after(t))
            if burning and self.finite is not None:
                t_next = min(t_next, self.finite.t_end_s)
                self._burn_finite(t, t_next, out)
            else:
                f.coast_to(t_next)
            t = t_next
            self._due(t, out)
        central, r0, v0, mu = start
        onboard.update(self.power, self.icubeq, central, r0, v0, mu, t_from, t_to)
        return self._max_step(t_to)

    def _terminal_active(self) -> bool:
        return self.rdv is not None and self.rdv.leg >= len(closing.LEG_FRACTIONS)

    def _on_board_times(self) -> list[float]:
        times = [b.t_s for b in self.burns]
        if self.switch is not None:
            times.append(self.switch.t_s)
        if self.finite is not None:
            times += [self.finite.t_start_s, self.finite.t_end_s]
        if self.rdv is not None and not self._terminal_active() and self.target is not None:
            times.append(self.rdv.next_s)
        return times

    def _next_event_after(self, t: float) -> float:
        return min((x for x in self._on_board_times() if x > t + _EPS_S), default=math.inf)

    def _max_step(self, t_to: float) -> float:
        f = self.flight
        limit = ORBIT_STEP_S
        if f is not None and (f.central == "earth" or self.phase == "earth_moon_transfer"):
            limit = CRUISE_STEP_S
        if self.finite is not None and t_to >= self.finite.t_start_s - _EPS_S:
            limit = design.BURN_STEP_S
        if self.phase in ("rendezvous",):
            limit = TERMINAL_STEP_S if self._terminal_active() else NEAR_EVENT_STEP_S
        t_e = self._next_event_after(t_to)
        if t_e - t_to <= NEAR_EVENT_S:
            limit = min(limit, NEAR_EVENT_STEP_S)
        return max(min(limit, t_e - t_to), 1e-3)

    def _due(self, t: float, out: Outbox) -> None:
        """Carry out the on-board events that fall at ``t``."""
        f = self._fly()
        while self.burns and self.burns[0].t_s <= t + _EPS_S:
            self._run_queued(self.burns.pop(0), t, out)
        if self.switch is not None and self.switch.t_s <= t + _EPS_S:
            f.recentre(self.switch.central)
            out.event(self.name, "frame_switch", t, central_body=f.central)
            self.switch = None
        if (self.rdv is not None and self.target is not None and not self._terminal_active()
                and self.rdv.next_s <= t + _EPS_S):
            self._closing_burn(t, out)

    def _closing_burn(self, t: float, out: Outbox) -> None:
        """At a hold point: stop on it (after leg 0), then start the next leg."""
        assert self.rdv is not None and self.target is not None
        f = self._fly()
        rt, vt = self.target.at(t)
        leg = self.rdv.leg
        if self.rdv.arrived:
            dv = closing.stop_dv(rt, vt, f.r_m, f.v_m_s)
            self._small_burn(dv, f"closing-arrival-{leg}", t, out)
            leg += 1
        if leg < len(closing.LEG_FRACTIONS):
            dv, t_arrive = closing.leg_departure(rt, vt, f.r_m, f.v_m_s, t, leg)
            self._small_burn(dv, f"closing-departure-{leg}", t, out)
            self.rdv = Rendezvous(leg, t_arrive, arrived=True)
        else:
            self.rdv = Rendezvous(leg, t, arrived=True)  # terminal approach

    def _small_burn(self, dv: Vec, label: str, t: float, out: Outbox) -> None:
        assert self.target is not None
        got = self._impulse(dv, label, t, out)
        rt, vt = self.target.at(t)
        f = self._fly()
        rel_r, _ = closing.relative(rt, vt, f.r_m, f.v_m_s)
        self._event(out, "closing_burn", t, burn=label, dv_m_s=got,
                    range_m=float(np.linalg.norm(rel_r)))

    def _terminal(self, t_from: float, t_to: float, out: Outbox) -> None:
        assert self.target is not None
        f = self._fly()
        r, v, m, captured, thrust, rel_r, rel_v = closing.terminal_step(
            self.target, f.r_m, f.v_m_s, self.mass_kg(), t_from, t_to, self._thrust_scale())
        used = max(0.0, self.mass_kg() - m)
        self.tank = self.tank.draw(min(used, self.tank.mass_kg), use_reserve=True)
        f.r_m, f.v_m_s, f.t_s = r, v, t_to
        f.prop.step_hint_s = None
        self.thrust_n = thrust
        if captured:
            self._dock(t_to, rel_r, rel_v, out)

    def _dock(self, t: float, rel_r: Vec, rel_v: Vec, out: Outbox) -> None:
        assert self.target is not None
        f = self._fly()
        self.ascender_kg = self.target.mass_kg
        self.rdv = None
        self.phase = "docked"
        self._event(out, "docking", t, range_m=float(np.linalg.norm(rel_r)),
                    closing_speed_m_s=float(np.linalg.norm(rel_v)),
                    ascender_mass_kg=self.ascender_kg)
        out.transfer("ascender", t, Docked(t_s=t, frame="MCI", r_m=vec3(f.r_m),
                                           v_m_s=vec3(f.v_m_s), mass_kg=self.mass_kg()))

    def _ignite(self, t: float, out: Outbox) -> None:
        """Start the finite burn (once). When the engine or the burn execution is
        dispersed, its end moves to the accelerometer cut-off: the instant the
        engine as it performs has delivered (1 + e) times the planned delta-v
        (dispersions.cutoff_duration_s; the plan's duration assumed the design
        engine). A thrust_loss fault is a failure the cut-off does not foresee:
        it still under-burns, as in a nominal run."""
        burn = self.finite
        assert burn is not None
        if burn.started:
            return
        burn.started, burn.m0_kg = True, self.mass_kg()
        out.event(self.name, "burn_start", t, burn=burn.label,
                  dv_m_s=burn.planned_dv_m_s, propellant_kg=0.0)
        if any(name in self.params for name in dispersions.ENGINE_PARAMETERS):
            dv = burn.planned_dv_m_s * (1.0 + self.param("burn.magnitude_error"))
            burn.t_end_s = t + dispersions.cutoff_duration_s(
                burn.m0_kg, dv, self._engine(), burn.throttle,
                self.tank.available_kg(use_reserve=True))

    def _burn_finite(self, t_from: float, t_to: float, out: Outbox) -> None:
        """Fly the finite burn from t_from to t_to (1 s guidance cycle): LOI
        retrograde at full thrust, an operator's burn as commanded."""
        burn = self.finite
        assert burn is not None and burn.started
        f = self._fly()
        steer = burn.steer
        steering = steer_velocity(-1.0)
        if steer is not None:
            steering = (steer_rtn(steer.direction) if steer.frame == "RTN"
                        else steer_inertial(steer.direction))
        throttle = burn.throttle * self._thrust_scale()
        engine = self._engine()
        m = self.mass_kg()
        res = finite_burn(f.r_m, f.v_m_s, m, t_from, t_to - t_from, engine,
                          self._steering(steering), dry_mass_kg=self._dry_for_burn_kg(),
                          throttle=max(1e-6, throttle), substep_s=design.BURN_SUBSTEP_S)
        self.tank = self.tank.draw(m - res.mass_kg, use_reserve=True)
        f.r_m, f.v_m_s, f.t_s = res.r_mci_m, res.v_mci_m_s, t_to
        self.thrust_n = engine.max_thrust_n * throttle
        if t_to >= burn.t_end_s - _EPS_S:
            if steer is None:
                self._end_loi(t_to, out)
            else:
                self._end_commanded_finite(t_to, out)

    def _end_commanded_finite(self, t: float, out: Outbox) -> None:
        burn = self.finite
        assert burn is not None
        used = burn.m0_kg - self.mass_kg()
        dv = self._engine().v_e_m_s * math.log(burn.m0_kg / self.mass_kg())
        self.finite = None
        self.counts.burns += 1
        assert burn.steer is not None
        out.event(self.name, "burn_end", t, burn=burn.label, dv_m_s=dv, propellant_kg=used)
        self._event(out, "commanded_burn", t, burn=burn.label,
                    frame=burn.steer.frame, dv_m_s=dv, propellant_kg=used,
                    burn_s=t - burn.t_start_s, **self._orbit_values(self._fly()))

    def _end_loi(self, t: float, out: Outbox) -> None:
        burn = self.finite
        assert burn is not None
        f = self._fly()
        used = burn.m0_kg - self.mass_kg()
        dv = self._engine().v_e_m_s * math.log(burn.m0_kg / self.mass_kg())
        self.finite = None
        self.counts.burns += 1
        out.event(self.name, "burn_end", t, burn="LOI", dv_m_s=dv, propellant_kg=used)
        el = f.elements()
        peri, apo = apsides_km(el)
        self.phase = "lunar_orbit"
        self._event(out, "lunar_orbit_insertion", t, perilune_km=peri, apolune_km=apo,
                    period_h=period_h(el, GM_MOON_M3_S2), dv_m_s=dv, propellant_kg=used,
                    burn_s=t - burn.t_start_s,
                    inclination_deg=legs.inclination_deg(f.r_m, f.v_m_s, t),
                    late_start_s=burn.late_s)

    # --- status ---------------------------------------------------------------------------
    def summary(self) -> Summary:
        values = {"thrust_n": self.thrust_n, "power_w": self.power.power_w,
                  "battery_soc_ratio": self.power.battery.soc,
                  "temperature_c": self.power.temperature_c,
                  "propellant_reserve_kg": self.tank.reserve_kg,
                  "sunlit_ratio": self.power.sunlit}
        info: dict[str, str] = {}
        if self.icubeq is not None:
            r_q, v_q = self.icubeq.state(self.t_s)
            values.update(icubeq_images=float(self.icubeq.images),
                          icubeq_altitude_m=float(np.linalg.norm(r_q)) - 1_737_400.0)
            info.update(icubeq_r_mci_m=",".join(f"{x:.1f}" for x in r_q),
                        icubeq_v_mci_m_s=",".join(f"{x:.4f}" for x in v_q))
        f = self.flight
        if f is None:
            return Summary(phase=self.phase, mass_kg=self.mass_kg(),
                           propellant_kg=self.tank.mass_kg, values=values, info=info)
        return Summary(
            phase=self.phase, frame=f.frame, central_body=f.central,
            r_m=(float(f.r_m[0]), float(f.r_m[1]), float(f.r_m[2])),
            v_m_s=(float(f.v_m_s[0]), float(f.v_m_s[1]), float(f.v_m_s[2])),
            altitude_m=f.altitude_m(), speed_m_s=float(np.linalg.norm(f.v_m_s)),
            mass_kg=self.mass_kg(), propellant_kg=self.tank.mass_kg,
            sample_mass_g=self.sample_g, values=values, info=info)


def _number(values: dict[str, Any], key: str, where: str = "") -> float:
    raw = values.get(key, 0.0)  # proto3 JSON leaves zeros out
    if isinstance(raw, bool) or not isinstance(raw, int | float) or not math.isfinite(raw):
        raise InvalidCommand(f"{where or values.get('op')} {key} must be a finite number, "
                             f"got {raw!r}")
    return float(raw)


def _burn_vector(command: dict[str, Any], key: str, what: str) -> tuple[str, Vec]:
    """The command's frame and vector ``key`` ({x, y, z}; omitted components are 0)."""
    frame = str(command.get("frame") or "RTN").upper()
    if frame not in BURN_FRAMES:
        raise InvalidCommand(f"{command.get('op')} frame must be one of "
                             f"{', '.join(BURN_FRAMES)}, got {command.get('frame')!r}")
    raw = command.get(key)
    if not isinstance(raw, dict) or not raw or set(raw) - {"x", "y", "z"}:
        raise InvalidCommand(f"{command.get('op')} needs {key} as {{x, y, z}} ({what}), "
                             f"got {raw!r}")
    parts = {axis: _number(raw, axis, f"{command.get('op')} {key}") for axis in "xyz"}
    value = vec([parts["x"], parts["y"], parts["z"]])
    if not float(np.linalg.norm(value)) > 0.0:
        raise InvalidCommand(f"{command.get('op')} {key}: {what} must not be zero")
    return frame, value
