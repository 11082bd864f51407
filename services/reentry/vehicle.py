"""The returner after separation: coast, skip entry, landing, recovery. Pure.

``stowed`` until the orbiter's ``handover`` of the returner on ``xfer.reentry``
(ECI state at separation, ~5,000 km up, ~20 min before the entry interface;
reference row 27). From then `entry.step` flies it every clock step: in the
vacuum coast (J2 gravity, 10 s RK4 substeps) with steps that shrink to 1 s as
the entry interface nears, then 1 s steps through the skip entry, chute and
touchdown (the guidance and events are `entry`'s; the capsule's figures and
the Siziwang target point are `change6`'s).

Events: ``handover_accepted``, ``sample_custody``, then `entry`'s
``entry_interface``, ``skip_out``, ``second_entry``, ``parachute_attitude``,
``parachute_deploy``, ``earth_landing`` (with the miss from the Siziwang
target point and the sample mass), and ``recovery`` when the recovery team
reaches the capsule, ``RECOVERY_DELAY_S`` after touchdown; the recorder is
then read out on site (frames still on board go to ground at once).

Communications: plasma blackout (no link at all) while faster than
``BLACKOUT_SPEED_M_S`` below ``BLACKOUT_ALT_M``.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, ClassVar

from services.dynamics import change6, entry
from services.dynamics.entry import (
    EntryOutputs,
    EntryPhase,
    EntryState,
)
from services.dynamics.links import eci_from_ecef_state_fast
from services.kernel.envelope import Envelope
from services.kernel.messages import Handover, HandoverAck, Transfer
from services.kernel.parameters import Parameter
from services.kernel.radio import downlink_of, publish_frames
from services.kernel.recorder import downlink_values
from services.kernel.vehicle import Outbox, Summary, VehicleCore

Vec3 = tuple[float, float, float]

# CE-6's recovery time is not published (CE-5's team "soon" found the capsule
# at night); 25 min puts it inside the flight plan's end, touchdown + 30 min.
RECOVERY_DELAY_S = 25.0 * 60.0
# Landing zone: within 50 km of the target point counts as in the Siziwang zone
# (the zone spans some 60 x 60 km of grassland; chosen).
ZONE_RADIUS_M = 50_000.0
# Plasma blackout: the ionised sheath of a lunar-return capsule blocks S-band
# between roughly 90 and 40 km while it is fast (Apollo: 3-4 min); chosen as
# faster than 6 km/s below 90 km.
BLACKOUT_ALT_M = 90_000.0
BLACKOUT_SPEED_M_S = 6_000.0
COAST_MAX_STEP_S = 60.0
ATMOSPHERE_STEP_S = 1.0  # docs/mission.md: ~1 s in atmospheric flight
# Where nothing is steered and the next event is an altitude crossing, longer
# steps that shrink to ATMOSPHERE_STEP_S as the crossing nears (events are
# stamped at step ends, so they keep their 1 s resolution): the ballistic
# arc of the skip above SKIP_ALT_M (drag < 0.01 g, no bank updates) and the
# descent under the main canopy (~10 m/s, slowing as the air thickens). The
# physics is the same either way: `entry` integrates on its own fixed
# substeps whatever the caller's step.
BALLISTIC_MAX_STEP_S = {EntryPhase.SKIP: 10.0, EntryPhase.PARACHUTE: 20.0}
_CROSSING_MARGIN_S = 5.0
STOWED_STEP_S = 3_600.0  # a stowed returner never constrains the clock

_EVENT_PHASE = {"entry_interface": "entry", "earth_landing": "landed"}

# Dispersion ranges (chosen). Density at 40-90 km departs from the US76
# standard by some tens of per cent with season, latitude and solar activity;
# +-40 % covers it. The flight-path angle at the interface is set by the last
# correction and by navigation, to a few hundredths of a degree on a healthy
# return; +-1 deg reaches the edges of a lunar-return corridor (Apollo's was
# about 2 deg wide). The returner's mass (330 kg, change6.RETURNER) is known
# to a few kg once weighed; +-20 kg (~6 %) covers the unpublished figure.
_DENSITY_SCALE_RANGE = (0.6, 1.4)
_FPA_ERROR_DEG = 1.0
_MASS_OFFSET_KG = 20.0
#: The returner's dispersible quantities (services/kernel/parameters.py).
REENTRY_PARAMETERS = (
    Parameter("atmosphere.density_scale", 1.0, "1", *_DENSITY_SCALE_RANGE,
              "the atmosphere's density over US76 in the flown dynamics and the sensed "
              "loads (drag, lift, heat flux); the guidance's predictor keeps US76"),
    Parameter("entry.fpa_error_deg", 0.0, "deg", -_FPA_ERROR_DEG, _FPA_ERROR_DEG,
              "added to the Earth-relative flight-path angle at the entry interface "
              "(the velocity turned in its vertical plane, speed kept); < 0 is steeper"),
    Parameter("mass_offset_kg", 0.0, "kg", -_MASS_OFFSET_KG, _MASS_OFFSET_KG,
              "added to the returner's mass at the hand-over"),
)


class ReentryCore(VehicleCore):
    name = "reentry"
    PARAMETERS: ClassVar[tuple[Parameter, ...]] = REENTRY_PARAMETERS

    state: EntryState | None
    sample_mass_g: float
    landed_t_s: float | None
    recovery_t_s: float | None
    #: The largest sensed deceleration (g) and stagnation heat flux (W/m^2) at
    #: the end of any step so far: the entry's peaks, for ``earth_landing``.
    peak_decel_g: float
    peak_heat_flux_w_m2: float

    def __init__(self, seed: int) -> None:
        super().__init__(seed)
        self.phase = "stowed"
        self.state = None
        self.sample_mass_g = 0.0
        self.landed_t_s = None
        self.recovery_t_s = None
        self.peak_decel_g = 0.0
        self.peak_heat_flux_w_m2 = 0.0
        # Derived from the state (restored() rebuilds it), a cache, and a flag
        # that lives within one step.
        self.last: EntryOutputs | None = None
        self._eci_cache: tuple[float, Vec3, Vec3] | None = None
        self._read_out = False  # set in the step the recovery team arrives

    # --- messages -----------------------------------------------------------------
    def receive(self, message: Transfer, msg: Envelope, out: Outbox) -> None:
        match message:
            case Handover(what="returner"):
                self._take(message, msg, out)

    def _take(self, h: Handover, msg: Envelope, out: Outbox) -> None:
        """The returner with the sample container in it (its mass in the hand-over)."""
        if h.frame != "ECI":
            raise ValueError(f"returner hand-over must be in ECI, got {h.frame!r}")
        mass_kg = h.mass_kg
        if "mass_offset_kg" in self.params:
            mass_kg += self.param("mass_offset_kg")
        cap = dataclasses.replace(change6.RETURNER, mass_kg=mass_kg)
        self.state = self._dispersed(
            entry.entry_state_from_eci(h.r_m, h.v_m_s, h.t_s, cap, change6.SIZIWANG))
        self.last = entry.outputs(self.state)
        self.phase = "coast"
        out.event(self.name, "handover_accepted", msg.t, what="returner",
                  handover_id=h.handover_id, **self._where())
        out.transfer(msg.src, msg.t, HandoverAck(handover_id=h.handover_id, accepted=True))
        if h.sample_mass_g > 0.0:
            self._set_sample(h.sample_mass_g, msg.t, out)

    def _dispersed(self, state: EntryState) -> EntryState:
        """The entry state with this run's atmosphere and interface error, if dispersed."""
        if "atmosphere.density_scale" in self.params:
            state = dataclasses.replace(state,
                                        density_scale=self.param("atmosphere.density_scale"))
        if "entry.fpa_error_deg" in self.params:
            state = dataclasses.replace(
                state, ei_fpa_error_rad=math.radians(self.param("entry.fpa_error_deg")))
        return state

    def _set_sample(self, mass_g: float, t_s: float, out: Outbox) -> None:
        """The container is in the returner: set, never add (a repeated hand-over
        names it again)."""
        if mass_g == self.sample_mass_g:
            return
        self.sample_mass_g = mass_g
        out.event(self.name, "sample_custody", t_s, owner=self.name, sample_mass_g=mass_g)

    # --- steps ----------------------------------------------------------------------
    def advance(self, t_from: float, t_to: float, out: Outbox) -> float:
        self.t_s = t_to
        if self.state is None:
            return STOWED_STEP_S
        if self.state.phase is not EntryPhase.LANDED:
            self.state, self.last = entry.step(self.state, max(0.0, t_to - self.state.t_s))
            self.peak_decel_g = max(self.peak_decel_g, self.last.sensed_decel_g)
            self.peak_heat_flux_w_m2 = max(self.peak_heat_flux_w_m2, self.last.heat_flux_w_m2)
            for name in self.last.events:
                self._on_entry_event(name, t_to, out)
        return self._after_entry_step(t_to, out)

    def _on_entry_event(self, name: str, t_s: float, out: Outbox) -> None:
        self.phase = _EVENT_PHASE.get(name, self.phase)
        extra: dict[str, Any] = {}
        if name == "earth_landing":
            assert self.last is not None
            self.landed_t_s = t_s
            self.recovery_t_s = t_s + RECOVERY_DELAY_S
            miss = self.last.range_to_target_m
            extra = {"sample_mass_g": self.sample_mass_g, "miss_m": round(miss, 1),
                     "in_zone": miss <= ZONE_RADIUS_M, "peak_decel_g": self.peak_decel_g,
                     "peak_heat_flux_w_m2": self.peak_heat_flux_w_m2}
        out.event(self.name, name, t_s, **self._where(), **extra)

    def _after_entry_step(self, t_to: float, out: Outbox) -> float:
        """Recovery when its time has come; the largest next step."""
        assert self.state is not None and self.last is not None
        phase = self.state.phase
        if phase is EntryPhase.LANDED:
            assert self.recovery_t_s is not None
            left = self.recovery_t_s - t_to
            if left <= 1e-6 and self.phase == "landed":
                self.phase = "recovered"
                self._read_out = True
                out.event(self.name, "recovery", t_to, **self._where(),
                          sample_mass_g=self.sample_mass_g)
            return STOWED_STEP_S if self.phase == "recovered" else min(600.0, left)
        if phase is EntryPhase.EXO:  # stop ~5 s before the entry interface
            return self._to_crossing_step(COAST_MAX_STEP_S, entry.ENTRY_INTERFACE_ALT_M)
        if phase is EntryPhase.SKIP:
            return self._to_crossing_step(BALLISTIC_MAX_STEP_S[phase], entry.SKIP_ALT_M)
        if phase is EntryPhase.PARACHUTE:
            return self._to_crossing_step(BALLISTIC_MAX_STEP_S[phase],
                                          self.state.target.ground_height_m)
        return ATMOSPHERE_STEP_S

    def _to_crossing_step(self, max_step_s: float, level_m: float) -> float:
        """Up to max_step_s, ending ~5 s before the predicted crossing of an
        altitude (the sink rate now, which only falls under the canopy)."""
        o = self.last
        assert o is not None
        sink = -o.speed_m_s * math.sin(math.radians(o.flight_path_angle_deg))
        if sink <= 0.0:
            return max_step_s
        to_level = (o.altitude_m - level_m) / sink
        return min(max_step_s, max(ATMOSPHERE_STEP_S, to_level - _CROSSING_MARGIN_S))

    def after_step(self, t_from: float, t_to: float, out: Outbox) -> None:
        super().after_step(t_from, t_to, out)
        if self._read_out:  # the recovery team reads the recorder out on site
            self._read_out = False
            publish_frames(self.name, downlink_of(self).dump(t_to), out, t_to)

    def link_blocked(self) -> bool:
        o = self.last
        return (self.phase == "entry" and o is not None and o.altitude_m < BLACKOUT_ALT_M
                and o.speed_m_s > BLACKOUT_SPEED_M_S)

    # --- views --------------------------------------------------------------------------
    def _where(self) -> dict[str, float]:
        o = self.last
        if o is None or self.state is None:
            return {}
        return {"lat_deg": round(o.lat_deg, 5), "lon_deg": round(o.lon_deg, 5),
                "alt_m": round(o.altitude_m, 1), "speed_m_s": round(o.speed_m_s, 2),
                "mass_kg": self.state.mass_kg}

    def _eci(self, st: EntryState) -> tuple[Vec3, Vec3]:
        """The state in ECI, converted once per step (summary is asked several times)."""
        if self._eci_cache is None or self._eci_cache[0] != st.t_s:
            self._eci_cache = (st.t_s, *eci_from_ecef_state_fast(st.r_ecef_m, st.v_ecef_m_s,
                                                                 st.t_s))
        return self._eci_cache[1], self._eci_cache[2]

    def summary(self) -> Summary:
        st, o = self.state, self.last
        if st is None or o is None:
            return Summary(phase=self.phase)
        r, v = self._eci(st)
        values = {"sensed_accel_m_s2": o.sensed_decel_m_s2, "heat_flux_w_m2": o.heat_flux_w_m2,
                  "bank_deg": o.bank_deg, "flight_path_angle_deg": o.flight_path_angle_deg,
                  "range_to_target_m": o.range_to_target_m,
                  **downlink_values(self.downlink)}
        return Summary(phase=self.phase, frame="ECI", central_body="earth", r_m=r, v_m_s=v,
                       altitude_m=o.altitude_m, speed_m_s=o.speed_m_s, mass_kg=st.mass_kg,
                       sample_mass_g=self.sample_mass_g, values=values,
                       info={"entry_phase": str(st.phase),
                             "lat_lon_deg": f"{o.lat_deg:.4f},{o.lon_deg:.4f}"})

    # --- snapshots ------------------------------------------------------------------------
    def restored(self) -> None:
        self.last = None if self.state is None else entry.outputs(self.state)
        self._eci_cache = None
