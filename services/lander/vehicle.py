"""The lander core: the lander-ascender (LA) stack from separation to the surface.

Phases: ``stowed`` (inside the CE-6 stack, flown by the orbiter) ->
``lunar_orbit`` (after the orbiter's ``la_stack`` hand-over; coasting under
the full lunar force model, then the phasing and descent-orbit-lowering
burns of :mod:`services.lander.descent_plan`) -> ``powered_descent`` (on
board, started by the time tag set by ``plan_descent``; 1 s clock steps,
``guidance.descent.step``) -> ``surface`` (Moon-fixed; payloads, sampling,
power and heat in :mod:`services.lander.surface`). Sealing the sample hands
the container, then the ascender's body, to the ascender; the lander stays
as the launch pad. Messages and events follow docs/mission.md. What a Monte
Carlo case may disperse (engine, loaded mass, navigation and terrain errors),
and where each acts: :mod:`services.lander.dispersions`.
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any

import numpy as np

from services.dynamics import frames
from services.dynamics.burns import Engine
from services.dynamics.constants import (
    LANDING_SITE_HEIGHT_M,
    LANDING_SITE_LAT_DEG,
    LANDING_SITE_LON_DEG,
    R_MOON_M,
)
from services.dynamics.guidance import MoonRotation
from services.dynamics.guidance import descent as dg
from services.dynamics.guidance.ascent import ASCENDER_DRY_MASS_KG, ASCENDER_WET_MASS_KG
from services.kernel.envelope import Envelope
from services.kernel.errors import CommandNotAllowed, InvalidCommand
from services.kernel.messages import (
    Handover,
    HandoverAck,
    HandoverExtra,
    SampleAck,
    SampleHandover,
    Transfer,
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
from services.kernel.vehicle import CommandHandler, Outbox, Summary, VehicleCore, execute_at_s
from services.lander import descent_plan as dp
from services.lander import dispersions
from services.lander.surface import PASSIVE_PAYLOADS, PAYLOAD_POWER_W, Surface

OPERATIONS = ("drill", "scoop", "seal_sample")
CONTAINER_ID = "CE6-SC"
#: Events of the descent guidance published under their own names.
_DESCENT_EVENTS = {"hover_start": "hover_start"}
# Phases in which the lander holds still (or flies nothing): idle step limit.
_IDLE_PHASES = ("stowed", "surface", "dormant")


def command_arg(command: dict[str, Any]) -> str:
    """What an ``operation``/``deploy`` command names (``name``, ``what`` or ``item``)."""
    for key in ("name", "what", "item", "operation"):
        if isinstance(command.get(key), str):
            return str(command[key])
    raise InvalidCommand(f"{command.get('op')} needs 'name' (e.g. drill, scoop, seal_sample, flag)")


class LanderCore(VehicleCore):
    name = "lander"
    fault_kinds = frozenset({"engine_thrust_loss", "hazard_sensor_bias"})
    PARAMETERS = dispersions.PARAMETERS

    seed: int
    coast: Coast | None
    mass_kg: float
    dry_mass_kg: float
    t_pdi_s: float | None
    burns: list[PlannedBurn]
    descent: dg.DescentState | None
    thrust_n: float
    surface: Surface | None
    sample_sent_mg: int
    sealed: bool
    ascender_gone: bool
    orbiter_state: dict[str, Any]

    def __init__(self, seed: int) -> None:
        super().__init__(seed)
        self.phase = "stowed"
        self.seed = seed
        self.coast = None
        self.mass_kg = 0.0
        self.dry_mass_kg = dg.LANDER_DRY_MASS_KG
        self.t_pdi_s = None
        self.burns = []
        self.descent = None
        self.thrust_n = 0.0
        self.surface = None
        self.sample_sent_mg = 0
        self.sealed = False
        self.ascender_gone = False
        self.orbiter_state = {}
        # Derived from t_pdi_s (restored() rebuilds them) and a cache.
        self._targets: dp.DescentTargets | None = None
        self._rotation: MoonRotation | None = None
        self._site = FixedPointState()

    # --- messages --------------------------------------------------------------
    def receive(self, message: Transfer, msg: Envelope, out: Outbox) -> None:
        match message:
            case Handover(what="la_stack"):
                self._take_la_stack(message, msg, out)
            case SampleAck():
                self._sample_acked(message, out)
            case HandoverAck():
                out.event(self.name, "handover_acknowledged", self.t_s,
                          handover_id=message.handover_id, by=msg.src)

    def _take_la_stack(self, h: Handover, msg: Envelope, out: Outbox) -> None:
        if self.phase != "stowed":
            return
        r, v, t = as_vec(h.r_m), as_vec(h.v_m_s), h.t_s
        if h.frame == "ECI":
            r, v = frames.mci_from_eci_state(r, v, t)
        self.coast = Coast(r, v, t)
        self.coast.to(self.t_s)
        self.mass_kg = h.mass_kg
        if "mass_offset_kg" in self.params:  # propellant loaded off the nominal
            self.mass_kg += self.param("mass_offset_kg")
        self.dry_mass_kg = h.dry_mass_kg or dg.LANDER_DRY_MASS_KG
        x = h.extra
        if x.orbiter_r_m is not None and x.orbiter_v_m_s is not None and x.orbiter_t_s is not None:
            self.orbiter_state = {"orbiter_r_m": list(x.orbiter_r_m),
                                  "orbiter_v_m_s": list(x.orbiter_v_m_s),
                                  "orbiter_t_s": x.orbiter_t_s}
        else:  # at the separation instant the OR stack is where the LA stack is
            self.orbiter_state = {"orbiter_r_m": as_list(r), "orbiter_v_m_s": as_list(v),
                                  "orbiter_t_s": t}
        self.phase = "lunar_orbit"
        out.event(self.name, "handover_accepted", self.t_s, what="la_stack",
                  handover_id=h.handover_id, **self._here())
        out.transfer(msg.src, self.t_s, HandoverAck(handover_id=h.handover_id, accepted=True))

    # --- commands ----------------------------------------------------------------
    def command_table(self) -> dict[str, CommandHandler]:
        return {**super().command_table(), "plan_descent": self._plan_descent,
                "surface_setup": self._surface_setup, "operation": self._operation,
                "deploy": self._deploy_flag}

    def validate(self, command: dict[str, Any]) -> None:
        super().validate(command)
        execute_at_s(command)
        op = command["op"]
        if op == "plan_descent":
            t_pdi = utc_arg(command, "pdi_utc")
            self.check_allowed(("lunar_orbit",), "plan_descent")
            if t_pdi < self.t_s + 4 * 3_600.0:
                raise CommandNotAllowed("PDI must be at least 4 h ahead to phase for it")
        elif op == "surface_setup":
            self.check_allowed(("surface",), "surface_setup")
        elif op == "operation":
            self._validate_operation(command_arg(command))
        elif op == "deploy":
            if command_arg(command) != "flag":
                raise InvalidCommand("deploy knows only 'flag'")
            self.check_allowed(("surface",), "deploy flag")

    def _validate_operation(self, what: str) -> None:
        if what not in OPERATIONS:
            raise InvalidCommand(f"unknown operation {what!r}; known: {', '.join(OPERATIONS)}")
        self.check_allowed(("surface",), f"operation {what}")
        s = self.surface
        assert s is not None
        if not s.setup_done:
            raise CommandNotAllowed(f"operation {what} needs surface_setup first")
        if what == "drill" and (s.drill.active or s.drill_done):
            raise CommandNotAllowed("the drill has already run")
        if what == "scoop" and (not s.drill_done or s.scoop.active or s.scoop_done):
            raise CommandNotAllowed("scooping follows a completed drill, once")
        if what == "seal_sample" and (not s.scoop_done or self.sample_sent_mg):
            raise CommandNotAllowed("sealing needs drill and scoop complete, once")

    def _deploy_flag(self, command: dict[str, Any], t: float, out: Outbox) -> None:
        assert self.surface is not None
        self.surface.flag = True
        out.event(self.name, "flag_deployed", self.t_s, **self._here())

    def _plan_descent(self, command: dict[str, Any], t: float, out: Outbox) -> None:
        assert self.coast is not None
        t_pdi = utc_arg(command, "pdi_utc")
        targets, burns = dp.plan_all(self.coast.r_mci_m, self.coast.v_mci_m_s, self.t_s, t_pdi)
        self.t_pdi_s, self._targets, self.burns = t_pdi, targets, burns
        out.event(self.name, "descent_planned", self.t_s, pdi_s=t_pdi, doi_s=targets.t_doi_s,
                  burns=[{"burn": b.label, "t_s": round(b.t_s, 3), "dv_m_s": round(b.dv_m_s, 3)}
                         for b in burns])

    def _surface_setup(self, command: dict[str, Any], t: float, out: Outbox) -> None:
        s = self.surface
        assert s is not None
        out.event(self.name, "surface_setup", self.t_s, solar_arrays="deployed",
                  antenna="directional", **self._here())
        for name in PAYLOAD_POWER_W:
            if name not in s.payloads_on:
                s.payloads_on.append(name)
                out.event(self.name, "payload_on", self.t_s, payload=name,
                          passive=name in PASSIVE_PAYLOADS)
        s.setup_done = True

    def _operation(self, command: dict[str, Any], t: float, out: Outbox) -> None:
        s = self.surface
        assert s is not None
        what = command_arg(command)
        if what == "drill":
            s.start_drill(self.t_s, self.rng)
            out.event(self.name, "drill_start", self.t_s, radar_survey_s=900.0)
        elif what == "scoop":
            s.start_scoop(self.t_s, self.rng)
            out.event(self.name, "scoop_start", self.t_s)
        else:
            self.sample_sent_mg, s.sample_mg = s.sample_mg, 0
            hid = f"sample-{self.t_s:.3f}"
            out.transfer("ascender", self.t_s, SampleHandover(
                handover_id=hid, from_="lander", to="ascender", container_id=CONTAINER_ID,
                sample_mass_g=self.sample_sent_mg / 1000.0))
            out.event(self.name, "sample_custody", self.t_s, owner="lander", sample_mass_g=0.0,
                      to="ascender", handover_id=hid)

    def _sample_acked(self, ack: SampleAck, out: Outbox) -> None:
        if self.sealed or not self.sample_sent_mg:
            return
        self.sealed = True
        grams = self.sample_sent_mg / 1000.0
        out.event(self.name, "sample_sealed", self.t_s, container_id=CONTAINER_ID,
                  sample_mass_g=grams, handover_id=ack.handover_id)
        out.event(self.name, "sampling_complete", self.t_s, sample_mass_g=grams)
        self._hand_over_ascender(out)

    def _hand_over_ascender(self, out: Outbox) -> None:
        """The ascender takes its body on the pad; the lander stays as the pad."""
        assert self.surface is not None
        r, v = self._surface_state(self.t_s)
        prop = ASCENDER_WET_MASS_KG - ASCENDER_DRY_MASS_KG
        out.transfer("ascender", self.t_s, Handover(
            handover_id=f"ascender-{self.t_s:.3f}", what="ascender", frame="MCI",
            r_m=vec3(r), v_m_s=vec3(v), t_s=self.t_s, mass_kg=ASCENDER_WET_MASS_KG,
            propellant_kg=prop, dry_mass_kg=ASCENDER_DRY_MASS_KG, sample_mass_g=0.0,
            extra=self._pad_extra()))
        self.mass_kg -= ASCENDER_WET_MASS_KG
        self.dry_mass_kg -= ASCENDER_WET_MASS_KG
        self.ascender_gone = True

    def _pad_extra(self) -> HandoverExtra:
        """The pad, and the OR stack as known from the separation (for the ascent
        plane and the phasing)."""
        assert self.surface is not None
        o = self.orbiter_state
        known = bool(o)
        return HandoverExtra(
            fixed_r_m=vec3(self.surface.site_fixed_m),
            orbiter_r_m=vec3(o["orbiter_r_m"]) if known else None,
            orbiter_v_m_s=vec3(o["orbiter_v_m_s"]) if known else None,
            orbiter_t_s=o["orbiter_t_s"] if known else None)

    # --- time ---------------------------------------------------------------------
    def advance(self, t_from: float, t_to: float, out: Outbox) -> float:
        self.t_s = t_to
        if self.phase == "lunar_orbit":
            self._orbit(t_to, out)
        if self.phase == "powered_descent" and self._descent_t_s() < t_to - 1e-9:
            self._descend(t_from, t_to, out)
        elif self.phase == "surface":
            self._surface_step(t_from, t_to, out)
        self.run_timed(t_to, out)
        return step_limit(t_to, self._next_event_s(), self.phase == "powered_descent",
                          idle=self.phase in _IDLE_PHASES)

    def _descent_t_s(self) -> float:
        return math.inf if self.descent is None else self.descent.t_s

    def _next_event_s(self) -> float | None:
        times = [b.t_s for b in self.burns]
        if self.t_pdi_s is not None and self.phase == "lunar_orbit":
            times.append(self.t_pdi_s)
        times += [float(execute_at_s(c) or 0.0) for c in self.timed]
        if self.surface is not None and (t := self.surface.next_event_s()) is not None:
            times.append(t)
        later = [t for t in times if t > self.t_s + 1e-6]
        return min(later) if later else None

    def _orbit(self, t_to: float, out: Outbox) -> None:
        """Coast to ``t_to``, stopping inside the step for burns at their planned
        instants; at PDI ignite (the step limit puts PDI on a step boundary)."""
        assert self.coast is not None
        while self.burns and self.burns[0].t_s <= t_to + 1e-6:
            burn = self.burns.pop(0)
            self.coast.to(burn.t_s)
            self._burn(self._replanned(burn), out)
        if self.t_pdi_s is not None and t_to >= self.t_pdi_s - 1e-6:
            self.coast.to(self.t_pdi_s)
            self._ignite(out)
        else:
            self.coast.to(t_to)

    def _replanned(self, burn: PlannedBurn) -> PlannedBurn:
        """Burns 2 and 3 from the state really reached (absorbs execution errors)."""
        assert self.coast is not None and self._targets is not None
        c = self.coast
        if burn.label == "descent-phasing-2":
            return dp.plan_correction_burn(c.r_mci_m, c.v_mci_m_s, c.t_s, self._targets)
        if burn.label == "descent-orbit-lowering":
            return dp.plan_doi_burn(c.v_mci_m_s, self._targets)
        return burn

    def _burn(self, burn: PlannedBurn, out: Outbox) -> None:
        assert self.coast is not None
        used = propellant_for_dv_kg(self.mass_kg, burn.dv_m_s, self._engine().v_e_m_s)
        out.event(self.name, "burn_start", burn.t_s, burn=burn.label,
                  dv_m_s=round(burn.dv_m_s, 4), propellant_kg=round(used, 4))
        self.coast.v_mci_m_s = self.coast.v_mci_m_s + np.asarray(burn.dv_mci_m_s)
        self.mass_kg -= used
        out.event(self.name, "burn_end", burn.t_s, burn=burn.label,
                  dv_m_s=round(burn.dv_m_s, 4), propellant_kg=round(used, 4))
        if burn.label == "descent-orbit-lowering":
            here = event_values(self.coast.r_mci_m, self.coast.v_mci_m_s, burn.t_s, self.mass_kg)
            out.event(self.name, "descent_orbit_lowering", burn.t_s,
                      dv_m_s=round(burn.dv_m_s, 4), **here)

    def _engine(self) -> Engine:
        """The lander's engine as built: its figures times this run's scale factors."""
        if "engine.thrust_scale" not in self.params and "engine.isp_scale" not in self.params:
            return dg.LANDER_ENGINE
        return dispersions.scaled_engine(dg.LANDER_ENGINE, self.param("engine.thrust_scale"),
                                         self.param("engine.isp_scale"))

    def _config(self) -> dg.DescentConfig:
        assert self._rotation is not None
        loss = self.faults.get("engine_thrust_loss")
        engine = self._engine()
        if loss is not None:
            keep = 1.0 - min(0.9, max(0.0, float(loss.get("magnitude") or 0.2)))
            engine = Engine(engine.max_thrust_n * keep, engine.v_e_m_s,
                            min(engine.min_thrust_n, engine.max_thrust_n * keep))
        cfg = dg.DescentConfig(rotation=self._rotation, engine=engine,
                               dry_mass_kg=self.dry_mass_kg, seed=self.seed)
        return self._dispersed(cfg) if self.params else cfg

    def _dispersed(self, cfg: dg.DescentConfig) -> dg.DescentConfig:
        """The run's navigation bias and terrain error on the descent (see
        services/lander/dispersions.py): the guidance flies its estimate to the
        site, and meets the ground where it really is."""
        if "navigation.bias_east_m" in self.params or "navigation.bias_north_m" in self.params:
            lat_deg, lon_deg = dispersions.believed_site_deg(
                self.param("navigation.bias_east_m"), self.param("navigation.bias_north_m"))
            cfg = replace(cfg, site_lat_deg=lat_deg, site_lon_deg=lon_deg)
        if "terrain.height_error_m" in self.params:
            cfg = replace(cfg, terrain_error_m=self.param("terrain.height_error_m"))
        return cfg

    def _ignite(self, out: Outbox) -> None:
        assert self.coast is not None and self.t_pdi_s is not None
        t = self.t_pdi_s
        self._rotation = MoonRotation.at(t)
        self.descent = dg.DescentState.at_ignition(t, self.coast.r_mci_m, self.coast.v_mci_m_s,
                                                   self.mass_kg)
        out.event(self.name, "powered_descent_start", t,
                  **event_values(self.coast.r_mci_m, self.coast.v_mci_m_s, t, self.mass_kg))
        self.coast, self.phase = None, "powered_descent"


    def _descend(self, t_from: float, t_to: float, out: Outbox) -> None:
        assert self.descent is not None
        state = self.descent
        bias = self.faults.get("hazard_sensor_bias")
        state, res = dg.step(state, t_to - state.t_s, self._config())
        if bias is not None and "avoidance_start" in res.events:
            e, n = state.aim_en_m  # the sensor's bias moves the chosen spot
            state = replace(state, aim_en_m=(e + float(bias.get("magnitude") or 20.0), n))
        self.descent, self.mass_kg, self.thrust_n = state, state.mass_kg, res.thrust_n
        for name in res.events:
            if name in _DESCENT_EVENTS:
                out.event(self.name, _DESCENT_EVENTS[name], t_to, **self._here())
            elif name not in ("touchdown", "ignition"):
                out.event(self.name, "descent_phase", t_to, phase=name)
        if state.phase == "landed":
            self._touchdown(state, out)

    def _touchdown(self, state: dg.DescentState, out: Outbox) -> None:
        assert state.landed_fixed_m is not None and state.touchdown_v_m_s is not None
        fixed = list(state.landed_fixed_m)
        self.surface = Surface(site_fixed_m=fixed)
        self.phase, self.descent, self.thrust_n = "surface", None, 0.0
        lat, lon, alt = frames.selenographic_from_moon_fixed(fixed)
        site_height_m = LANDING_SITE_HEIGHT_M
        if "terrain.height_error_m" in self.params:  # the site is on the real ground
            site_height_m += self.param("terrain.height_error_m")
        site = frames.moon_fixed_from_selenographic(LANDING_SITE_LAT_DEG, LANDING_SITE_LON_DEG,
                                                    site_height_m)
        miss = float(np.linalg.norm(np.asarray(fixed) - site))
        out.event(self.name, "lunar_touchdown", state.phase_start_s, lat_deg=round(lat, 6),
                  lon_deg=round(lon, 6), alt_m=round(alt, 3),
                  speed_m_s=round(float(np.hypot(*state.touchdown_v_m_s)), 4),
                  vertical_speed_m_s=round(state.touchdown_v_m_s[0], 4),
                  mass_kg=round(self.mass_kg, 4), miss_m=round(miss, 2),
                  propellant_kg=round(self.mass_kg - self.dry_mass_kg, 3))

    def _surface_step(self, t_from: float, t_to: float, out: Outbox) -> None:
        s = self.surface
        assert s is not None
        if s.environment_due(t_to):
            for kind, payload in s.update_environment(t_to):
                out.event(self.name, kind, t_to, payload=payload, reason="thermal",
                          nils_temperature_c=round(s.nils_temperature_c, 2))
            if self.ascender_gone and s.sun_elevation_deg < 0.0:
                self._go_dormant(t_to, out)
        was_drilling, was_scooping = s.drill.active, s.scoop.active
        for tool, mg, depth in s.take_increments(t_to):
            first = s.sample_mg == mg
            out.event(self.name, f"{tool}_increment", t_to, mass_g=mg / 1000.0, depth_m=depth,
                      sample_mass_g=s.sample_mg / 1000.0)
            if first:
                out.event(self.name, "sample_custody", t_to, owner="lander",
                          sample_mass_g=s.sample_mg / 1000.0)
        if was_drilling and not s.drill.active:
            s.drill_done = True
            out.event(self.name, "drill_complete", t_to, sample_mass_g=s.drill.done_mg / 1000.0,
                      depth_m=round(sum(s.drill.depths_m), 4))
        if was_scooping and not s.scoop.active:
            s.scoop_done = True
            out.event(self.name, "scoop_complete", t_to, sample_mass_g=s.scoop.done_mg / 1000.0,
                      total_g=s.sample_mg / 1000.0, scoops=s.scoop.count)

    def _go_dormant(self, t: float, out: Outbox) -> None:
        """Sunset after the ascender has gone: the lander's work is done (CE-6's
        lander was not built to survive the lunar night)."""
        assert self.surface is not None
        for name in list(self.surface.payloads_on):
            self.surface.payloads_on.remove(name)
            out.event(self.name, "payload_off", t, payload=name, reason="sunset")
        self.phase = "dormant"
        out.event(self.name, "lander_dormant", t, **self._here())

    # --- reporting ------------------------------------------------------------------
    def _surface_state(self, t: float) -> tuple[Any, Any]:
        """MCI state of the lander on the surface (cached: summaries ask every step)."""
        assert self.surface is not None
        return self._site.at(self.surface.site_fixed_m, t)

    def _state(self) -> tuple[Any, Any] | None:
        if self.coast is not None:
            return self.coast.r_mci_m, self.coast.v_mci_m_s
        if self.descent is not None:
            return self.descent.r_mci_m, self.descent.v_mci_m_s
        if self.surface is not None:
            return self._surface_state(self.t_s)
        return None

    def _here(self) -> dict[str, float]:
        state = self._state()
        return {} if state is None else event_values(state[0], state[1], self.t_s, self.mass_kg)

    def summary(self) -> Summary:
        state = self._state()
        if state is None:
            return Summary(phase=self.phase)
        r, v = state
        s = self.surface
        values = {"thrust_n": self.thrust_n,
                  "propellant_reserve_kg": max(0.0, self.mass_kg - self.dry_mass_kg)}
        if s is not None:
            values.update(s.values())
        radius = float(np.linalg.norm(r))
        return Summary(
            phase=self.phase, frame="MCI", central_body="moon", r_m=_triple(r), v_m_s=_triple(v),
            altitude_m=radius - R_MOON_M,
            speed_m_s=0.0 if s is not None else float(np.linalg.norm(v)),
            mass_kg=self.mass_kg, propellant_kg=max(0.0, self.mass_kg - self.dry_mass_kg),
            sample_mass_g=(s.sample_mg / 1000.0) if s is not None else 0.0, values=values,
            info={"descent_phase": self.descent.phase} if self.descent is not None else {})

    # --- snapshots --------------------------------------------------------------------
    def restored(self) -> None:
        self._targets = None if self.t_pdi_s is None else dp.descent_targets(self.t_pdi_s)
        self._rotation = None if self.t_pdi_s is None else MoonRotation.at(self.t_pdi_s)
        self._site = FixedPointState()


def _triple(v: Any) -> tuple[float, float, float]:
    return float(v[0]), float(v[1]), float(v[2])

