"""The ascender core: from the lander's deck to rendezvous, then to impact.

Phases: ``stowed`` -> ``on_pad`` (the sample container, then the body, handed
over by the lander when the container is sealed) -> ``ascent`` (liftoff,
time-tagged, on board; ``guidance.ascent.step`` in 1 s clock steps, target
plane the orbiter's) -> ``lunar_orbit`` -> ``phasing`` (four burns of
:mod:`services.ascender.phasing`) -> ``rendezvous`` (at the aim point; sends
``target_state`` to the orbiter every step) -> ``docked`` (follows the OR
stack) -> ``free`` (after ``undocked``) -> ``deorbit`` -> ``impacted`` (the
wreck turns with the Moon; no radio, so no link of its own, see
``link_blocked``). Messages and events follow docs/mission.md.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import numpy as np

from services.ascender import phasing as ph
from services.dynamics import frames
from services.dynamics.burns import Engine
from services.dynamics.constants import GM_MOON_M3_S2, R_MOON_M
from services.dynamics.guidance import MoonRotation
from services.dynamics.guidance import ascent as ag
from services.dynamics.kepler import elements_from_rv
from services.dynamics.timescale import mission_s_from_utc
from services.kernel.envelope import Envelope
from services.kernel.errors import CommandNotAllowed
from services.kernel.messages import (
    Docked,
    Handover,
    HandoverAck,
    SampleAck,
    SampleHandover,
    TargetState,
    Transfer,
    Undocked,
    vec3,
)
from services.kernel.onboard import (
    Coast,
    FixedPointState,
    PlannedBurn,
    as_list,
    as_vec,
    event_values,
    propellant_for_dv_kg,
    step_limit,
    utc_arg,
)
from services.kernel.parameters import Parameter
from services.kernel.vehicle import CommandHandler, Outbox, Summary, VehicleCore, execute_at_s

CONTAINER_ID = "CE6-SC"
#: Default aim window: docking was at 2024-06-06T06:48Z (timeline row 21) and
#: the orbiter's closing approach takes 1-2 h; aim times are one orbiter
#: period (~2 h 8 min) apart, so the window is a little wider than that.
AIM_AFTER_UTC = "2024-06-06T04:20:00Z"
AIM_BEFORE_UTC = "2024-06-06T06:30:00Z"
AIM_HALF_WINDOW_S = 65 * 60.0
RENDEZVOUS_STEP_S = 60.0
# Phases in which the ascender holds still (or flies nothing): idle step limit.
_IDLE_PHASES = ("stowed", "on_pad", "impacted")

# Dispersion ranges (chosen; the ascender's acceptance figures are unpublished):
# a healthy 3 kN bipropellant engine delivers its rated thrust to a few per
# cent and its Isp to ~1 %; the bounds reach a drifted pressure regulator
# (+-20 % thrust) and a mixture ratio well off design (+-5 % Isp). Outright
# failure is the thrust_loss fault's domain. The 330 kg dry mass is an
# assumption (guidance/ascent.py): +-30 kg (~9 %).
_THRUST_SCALE_RANGE = (0.8, 1.2)
_ISP_SCALE_RANGE = (0.95, 1.05)
_DRY_MASS_OFFSET_KG = 30.0
#: The ascender's dispersible quantities (services/kernel/parameters.py).
ASCENDER_PARAMETERS = (
    Parameter("engine.thrust_scale", 1.0, "1", *_THRUST_SCALE_RANGE,
              "ascent engine thrust factor: the ascent (guided to its orbit) burns "
              "longer or shorter"),
    Parameter("engine.isp_scale", 1.0, "1", *_ISP_SCALE_RANGE,
              "ascent engine exhaust velocity factor: the ascent and every phasing and "
              "deorbit burn spend propellant with v_e * scale"),
    Parameter("dry_mass_offset_kg", 0.0, "kg", -_DRY_MASS_OFFSET_KG, _DRY_MASS_OFFSET_KG,
              "added to the ascender's dry mass (and so its mass) at the hand-over on the pad"),
)


class AscenderCore(VehicleCore):
    name = "ascender"
    fault_kinds = frozenset({"thrust_loss"})
    PARAMETERS: ClassVar[tuple[Parameter, ...]] = ASCENDER_PARAMETERS

    mass_kg: float
    dry_mass_kg: float
    sample_mg: int
    pad_fixed_m: list[float] | None
    orbiter: ph.KnownState | None
    coast: Coast | None
    ascent: ag.AscentState | None
    target_normal: list[float] | None
    burns: list[PlannedBurn]
    t_aim_s: float | None
    t_impact_s: float | None
    impact: dict[str, float]
    impact_fixed_m: list[float] | None
    thrust_n: float

    def __init__(self, seed: int) -> None:
        super().__init__(seed)
        self.phase = "stowed"
        self.mass_kg = 0.0
        self.dry_mass_kg = ag.ASCENDER_DRY_MASS_KG
        self.sample_mg = 0
        self.pad_fixed_m = None
        self.orbiter = None
        self.coast = None
        self.ascent = None
        self.target_normal = None
        self.burns = []
        self.t_aim_s = None
        self.t_impact_s = None
        self.impact = {}
        self.impact_fixed_m = None
        self.thrust_n = 0.0
        self._pad = FixedPointState()

    # --- messages --------------------------------------------------------------
    def receive(self, message: Transfer, msg: Envelope, out: Outbox) -> None:
        match message:
            case SampleHandover():
                self._take_sample(message, msg, out)
            case Handover(what="ascender"):
                self._take_body(message, msg, out)
            case Docked() if self.phase in ("rendezvous", "docked"):
                self._follow(message, out, docked_now=self.phase != "docked")
            case Undocked() if self.phase == "docked":
                self._follow(message, out, docked_now=False)
                self.phase = "free"
                out.event(self.name, "ascender_free", self.t_s, **self._here())
            case SampleAck():
                out.event(self.name, "handover_acknowledged", self.t_s,
                          handover_id=message.handover_id, by=msg.src)

    def _take_sample(self, sample: SampleHandover, msg: Envelope, out: Outbox) -> None:
        self.sample_mg += round(sample.sample_mass_g * 1000.0)
        out.event(self.name, "sample_custody", self.t_s, owner="ascender",
                  sample_mass_g=self.sample_mg / 1000.0, handover_id=sample.handover_id,
                  container_id=sample.container_id)
        out.transfer(msg.src, self.t_s, SampleAck(handover_id=sample.handover_id,
                                                  sample_mass_g=self.sample_mg / 1000.0))

    def _take_body(self, h: Handover, msg: Envelope, out: Outbox) -> None:
        if self.phase != "stowed":
            return
        x = h.extra
        fixed = x.fixed_r_m or as_list(frames.moon_fixed_from_mci(list(h.r_m), h.t_s))
        self.pad_fixed_m = [float(c) for c in fixed]
        self.mass_kg = h.mass_kg
        self.dry_mass_kg = h.dry_mass_kg or ag.ASCENDER_DRY_MASS_KG
        if "dry_mass_offset_kg" in self.params:  # the body weighs more; the propellant is as loaded
            self.mass_kg += self.param("dry_mass_offset_kg")
            self.dry_mass_kg += self.param("dry_mass_offset_kg")
        # The OR stack as the LA stack knew it at separation: the orbiter coasts
        # from then until it closes in on the ascender, so the prediction holds.
        if (x.orbiter_r_m is not None and x.orbiter_v_m_s is not None
                and x.orbiter_t_s is not None and self.orbiter is None):
            self.orbiter = ph.KnownState(as_vec(x.orbiter_r_m), as_vec(x.orbiter_v_m_s),
                                         x.orbiter_t_s)
        self.phase = "on_pad"
        out.event(self.name, "handover_accepted", self.t_s, what="ascender",
                  handover_id=h.handover_id, **self._here())
        out.transfer(msg.src, self.t_s, HandoverAck(handover_id=h.handover_id, accepted=True))

    def _follow(self, stack: Docked | Undocked, out: Outbox, docked_now: bool) -> None:
        self.coast = Coast(as_vec(stack.r_m), as_vec(stack.v_m_s), stack.t_s)
        self.coast.to(self.t_s)
        if docked_now:
            self.phase = "docked"
            out.event(self.name, "ascender_docked", self.t_s, **self._here(),
                      propellant_kg=round(self.mass_kg - self.dry_mass_kg, 4))

    # --- commands ----------------------------------------------------------------
    def command_table(self) -> dict[str, CommandHandler]:
        return {**super().command_table(), "liftoff": self._liftoff,
                "plan_phasing": self._plan_phasing, "transfer_sample": self._transfer_sample,
                "deorbit": self._plan_deorbit}

    def validate(self, command: dict[str, Any]) -> None:
        super().validate(command)
        execute_at_s(command)
        op = command["op"]
        if op == "liftoff":
            self.check_allowed(("on_pad", "stowed"), "liftoff")
            if self.phase != "on_pad" or self.sample_mg <= 0:
                raise CommandNotAllowed("liftoff needs the sample sealed in the ascender and "
                                        "the ascender handed over on the pad")
        elif op == "plan_phasing":
            self.check_allowed(("lunar_orbit",), "plan_phasing")
            for key in ("aim_after_utc", "aim_before_utc", "aim_utc"):
                if key in command:
                    utc_arg(command, key)
            if self.orbiter is None:
                raise CommandNotAllowed("no orbiter state known yet to phase against")
        elif op == "transfer_sample":
            self.check_allowed(("docked",), "transfer_sample")
            if self.sample_mg <= 0:
                raise CommandNotAllowed("the ascender holds no sample")
        elif op == "deorbit":
            self.check_allowed(("free",), "deorbit")

    def _ascent_config(self) -> ag.AscentConfig:
        assert self.ascent is not None and self.pad_fixed_m is not None
        assert self.target_normal is not None
        lat, lon, h = frames.selenographic_from_moon_fixed(self.pad_fixed_m)
        engine = self._engine()
        loss = self.faults.get("thrust_loss")
        if loss is not None:
            thrust = engine.max_thrust_n * (1.0 - min(0.5, max(0.0, float(
                loss.get("magnitude") or 0.1))))
            engine = Engine(thrust, engine.v_e_m_s, thrust)
        return ag.AscentConfig(rotation=MoonRotation.at(self.ascent.liftoff_s),
                               target_normal_mci=as_vec(self.target_normal), site_lat_deg=lat,
                               site_lon_deg=lon, site_height_m=h, engine=engine,
                               dry_mass_kg=self.dry_mass_kg)

    def _engine(self) -> Engine:
        """The ascent engine as it performs in this run (non-throttled: its lowest
        lit thrust is its thrust). The guidance flies to its orbit in closed loop
        with it; the phasing planner's delta-v is met whatever the engine."""
        if "engine.thrust_scale" not in self.params and "engine.isp_scale" not in self.params:
            return ag.ASCENDER_ENGINE
        e = ag.ASCENDER_ENGINE
        thrust = e.max_thrust_n * self.param("engine.thrust_scale")
        return Engine(thrust, e.v_e_m_s * self.param("engine.isp_scale"), thrust)

    def _liftoff(self, command: dict[str, Any], t_cmd: float, out: Outbox) -> None:
        assert self.pad_fixed_m is not None
        t = self.t_s
        if self.orbiter is not None:
            normal = self.orbiter.normal_at(t)
        else:  # no orbiter known: a 137 deg plane (loi.py) through the pad
            from services.dynamics.guidance.loi import plane_normal_over_site

            normal = plane_normal_over_site(frames.mci_from_moon_fixed(self.pad_fixed_m, t),
                                            frames.moon_pole_mci(t), math.radians(137.0))
        self.target_normal = as_list(normal)
        r, v = self._pad_state(t)
        self.ascent = ag.AscentState(t, r, v, self.mass_kg, "vertical_rise", t)
        self.phase = "ascent"
        out.event(self.name, "ascent_liftoff", t, **self._here())

    def _plan_phasing(self, command: dict[str, Any], t: float, out: Outbox) -> None:
        assert self.coast is not None and self.orbiter is not None
        after = mission_s_from_utc(str(command.get("aim_after_utc", AIM_AFTER_UTC)))
        before = mission_s_from_utc(str(command.get("aim_before_utc", AIM_BEFORE_UTC)))
        if "aim_utc" in command:  # a centre: aim times come one orbiter period apart
            centre = mission_s_from_utc(str(command["aim_utc"]))
            after, before = centre - AIM_HALF_WINDOW_S, centre + AIM_HALF_WINDOW_S
        self.burns, self.t_aim_s = ph.plan_four_burns(
            self.coast.r_mci_m, self.coast.v_mci_m_s, self.t_s, self.orbiter, after, before)
        self.phase = "phasing"
        out.event(self.name, "phasing_planned", self.t_s, aim_s=round(self.t_aim_s, 3),
                  burns=[{"burn": b.label, "t_s": round(b.t_s, 3), "dv_m_s": round(b.dv_m_s, 3)}
                         for b in self.burns])

    def _transfer_sample(self, command: dict[str, Any], t: float, out: Outbox) -> None:
        grams, self.sample_mg = self.sample_mg / 1000.0, 0
        hid = f"sample-{self.t_s:.3f}"
        out.transfer("orbiter", self.t_s, SampleHandover(
            handover_id=hid, from_="ascender", to="returner", container_id=CONTAINER_ID,
            sample_mass_g=grams))
        out.event(self.name, "sample_custody", self.t_s, owner="ascender", sample_mass_g=0.0,
                  to="returner", handover_id=hid)

    def _plan_deorbit(self, command: dict[str, Any], t: float, out: Outbox) -> None:
        assert self.coast is not None
        self.burns = [ph.plan_deorbit(self.coast.r_mci_m, self.coast.v_mci_m_s, self.t_s)]
        self.phase = "deorbit"
        out.event(self.name, "deorbit_planned", self.t_s, burn_s=round(self.burns[0].t_s, 3),
                  dv_m_s=round(self.burns[0].dv_m_s, 3))

    # --- time ---------------------------------------------------------------------
    def advance(self, t_from: float, t_to: float, out: Outbox) -> float:
        self.t_s = t_to
        if self.phase == "ascent":
            self._ascend(t_to, out)
        elif self.coast is not None and self.phase != "impacted":
            self._coast(t_to, out)
        if self.phase == "rendezvous" and self.coast is not None:
            out.transfer("orbiter", t_to, TargetState(
                r_m=vec3(self.coast.r_mci_m), v_m_s=vec3(self.coast.v_mci_m_s), t_s=t_to,
                mass_kg=self.mass_kg))
        self.run_timed(t_to, out)
        if self.phase == "rendezvous":
            return RENDEZVOUS_STEP_S
        return step_limit(t_to, self._next_event_s(), self.phase == "ascent",
                          idle=self.phase in _IDLE_PHASES)

    def _next_event_s(self) -> float | None:
        times = [b.t_s for b in self.burns] + [float(execute_at_s(c) or 0.0) for c in self.timed]
        times += [t for t in (self.t_aim_s, self.t_impact_s) if t is not None]
        later = [t for t in times if t > self.t_s + 1e-6]
        return min(later) if later else None

    def _ascend(self, t_to: float, out: Outbox) -> None:
        assert self.ascent is not None
        state, res = ag.step(self.ascent, t_to - self.ascent.t_s, self._ascent_config())
        self.ascent, self.mass_kg, self.thrust_n = state, state.mass_kg, res.thrust_n
        if state.phase != "coast":
            return
        self.coast = Coast(state.r_mci_m, state.v_mci_m_s, state.t_s)
        self.coast.to(t_to)
        self.ascent, self.phase, self.thrust_n = None, "lunar_orbit", 0.0
        el = elements_from_rv(self.coast.r_mci_m, self.coast.v_mci_m_s, GM_MOON_M3_S2)
        assert state.cutoff_s is not None
        out.event(self.name, "ascent_orbit_insertion", state.cutoff_s,
                  perilune_alt_m=round(el.a_m * (1 - el.e) - R_MOON_M, 1),
                  apolune_alt_m=round(el.a_m * (1 + el.e) - R_MOON_M, 1),
                  inclination_deg=round(math.degrees(el.i_rad), 4),
                  burn_s=round(state.cutoff_s - state.liftoff_s, 2), **self._here())

    def _coast(self, t_to: float, out: Outbox) -> None:
        """Coast, stopping inside the step for burns, the aim point, impact."""
        assert self.coast is not None
        while self.burns and self.burns[0].t_s <= t_to + 1e-6:
            burn = self.burns.pop(0)
            self.coast.to(burn.t_s)
            self._burn(burn, out)
        if self.t_aim_s is not None and t_to >= self.t_aim_s - 1e-6:
            self.coast.to(self.t_aim_s)
            self._at_aim_point(out)
        if self.t_impact_s is not None and t_to >= self.t_impact_s - 1e-6:
            self.coast.to(self.t_impact_s)
            self._impact(out)
            return
        self.coast.to(t_to)

    def _burn(self, burn: PlannedBurn, out: Outbox) -> None:
        assert self.coast is not None
        c = self.coast
        if burn.label == "phasing-4" and self.orbiter is not None and self.t_aim_s is not None:
            burn = ph.replan_trim(c.r_mci_m, c.v_mci_m_s, c.t_s, self.orbiter, self.t_aim_s)
        used = propellant_for_dv_kg(self.mass_kg, burn.dv_m_s, self._engine().v_e_m_s)
        values = {"burn": burn.label, "dv_m_s": round(burn.dv_m_s, 4),
                  "propellant_kg": round(used, 4)}
        out.event(self.name, "burn_start", burn.t_s, **values)
        c.v_mci_m_s = c.v_mci_m_s + np.asarray(burn.dv_mci_m_s)
        self.mass_kg -= used
        out.event(self.name, "burn_end", burn.t_s, **values)
        if burn.label.startswith("phasing-"):
            out.event(self.name, "phasing_burn", burn.t_s, n=int(burn.label[-1]),
                      dv_m_s=values["dv_m_s"], **event_values(c.r_mci_m, c.v_mci_m_s,
                                                               burn.t_s, self.mass_kg))
        else:
            out.event(self.name, "ascender_deorbit_burn", burn.t_s, dv_m_s=values["dv_m_s"],
                      **event_values(c.r_mci_m, c.v_mci_m_s, burn.t_s, self.mass_kg))
            self.t_impact_s = ph.impact_time_s(c.r_mci_m, c.v_mci_m_s, burn.t_s,
                                               R_MOON_M + self._pad_height_m())

    def _at_aim_point(self, out: Outbox) -> None:
        assert self.coast is not None and self.orbiter is not None and self.t_aim_s is not None
        rel = ph.relative_lvlh(self.orbiter, self.coast.r_mci_m, self.t_aim_s)
        out.event(self.name, "rendezvous_aim_point", self.t_aim_s, radial_m=round(float(rel[0]), 1),
                  along_track_m=round(float(rel[1]), 1),
                  cross_track_m=round(float(rel[2]), 1),
                  **event_values(self.coast.r_mci_m, self.coast.v_mci_m_s, self.t_aim_s,
                                 self.mass_kg))
        self.t_aim_s, self.phase = None, "rendezvous"

    def _impact(self, out: Outbox) -> None:
        assert self.coast is not None and self.t_impact_s is not None
        c = self.coast
        self.impact = event_values(c.r_mci_m, c.v_mci_m_s, self.t_impact_s, self.mass_kg)
        out.event(self.name, "ascender_impact", self.t_impact_s, **self.impact)
        # The wreck turns with the Moon from now on (not frozen in MCI).
        self.impact_fixed_m = as_list(frames.moon_fixed_from_mci(c.r_mci_m, self.t_impact_s))
        self.phase, self.t_impact_s = "impacted", None

    def _pad_height_m(self) -> float:
        # Terrain unmodelled: the surface is taken at the landing site's height.
        return 0.0 if self.pad_fixed_m is None else float(
            np.linalg.norm(self.pad_fixed_m)) - R_MOON_M

    # --- the radio ------------------------------------------------------------------
    def link_blocked(self) -> bool:
        """An impacted ascender has no radio: no path of its own from the impact on.

        Its summary keeps the impact point (status shows where it hit), which
        `links.link_for` would otherwise treat as a live surface user in view of
        Queqiao-2 and the stations for the rest of the mission."""
        return self.phase == "impacted"

    def after_step(self, t_from: float, t_to: float, out: Outbox) -> None:
        """The downlink runs in the impact step (a blocked path: ``link_lost``
        if it had one) and never after: a destroyed recorder records nothing."""
        downlink = self.downlink
        if self.phase == "impacted" and (downlink is None or not downlink.link.up):
            return
        super().after_step(t_from, t_to, out)

    # --- reporting ------------------------------------------------------------------
    def _pad_state(self, t: float) -> tuple[Any, Any]:
        """MCI state on the pad (cached: summaries ask every step)."""
        assert self.pad_fixed_m is not None
        return self._pad.at(self.pad_fixed_m, t)

    def _state(self) -> tuple[Any, Any] | None:
        if self.phase in ("stowed",):
            return None
        if self.impact_fixed_m is not None:
            return self._pad.at(self.impact_fixed_m, self.t_s)
        if self.ascent is not None:
            return self.ascent.r_mci_m, self.ascent.v_mci_m_s
        if self.coast is not None:
            return self.coast.r_mci_m, self.coast.v_mci_m_s
        if self.pad_fixed_m is not None:
            return self._pad_state(self.t_s)
        return None

    def _here(self) -> dict[str, float]:
        state = self._state()
        return {} if state is None else event_values(state[0], state[1], self.t_s, self.mass_kg)

    def summary(self) -> Summary:
        state = self._state()
        if state is None:
            return Summary(phase=self.phase, sample_mass_g=self.sample_mg / 1000.0)
        r, v = state
        still = self.phase in ("on_pad", "impacted")
        propellant = max(0.0, self.mass_kg - self.dry_mass_kg)
        return Summary(
            phase=self.phase, frame="MCI", central_body="moon",
            r_m=(float(r[0]), float(r[1]), float(r[2])),
            v_m_s=(float(v[0]), float(v[1]), float(v[2])),
            altitude_m=float(np.linalg.norm(r)) - R_MOON_M,
            speed_m_s=0.0 if still else float(np.linalg.norm(v)), mass_kg=self.mass_kg,
            propellant_kg=propellant, sample_mass_g=self.sample_mg / 1000.0,
            values={"thrust_n": self.thrust_n, "propellant_reserve_kg": propellant})

    # --- snapshots --------------------------------------------------------------------
    def restored(self) -> None:
        self._pad = FixedPointState()

