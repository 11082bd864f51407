"""The returner's dispersible parameters act where the physics says, through the step rule.

The returner is handed over as in test_reentry (the nominal entry state,
-6.4 deg at 120 km, flown back 21 min) and flown to touchdown by the step
rule, nominal and dispersed; each step's summary is its entry trace.

Physics written here: drag and lift go as rho / m (a = rho v^2 Cd A / 2m),
stagnation heat flux as sqrt(rho) (Sutton & Graves), so at the entry
interface, where both flights are still in the same state, the sensed loads
compare by those laws; a flight-path angle error turns the velocity in its
vertical plane, keeping its speed; a steeper entry or a denser atmosphere
than the guidance's model brings a harder peak (Allen & Eggers 1958: the
ballistic peak deceleration grows with sin|gamma|), and more drag than
predicted lands short.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cache
from typing import Any

import pytest

from services.kernel.parameters import ParameterError
from services.reentry.vehicle import ReentryCore
from tests.authorities import EARTH_MEAN_RADIUS_M
from tests.unit.mission.driver import Drive
from tests.unit.mission.test_reentry import handover_body

#: Standard gravity (CGPM 1901, 9.806 65 m/s^2 exactly): what "g" means.
G0_M_S2 = 9.80665
# At the interface (~120 km, drag ~1e-4 g) the two flights differ after
# the crossing step's < 1 s by far less than these.
SAME_STATE_REL = 1e-3
FPA_TOL_DEG = 1e-3
#: A landing-point shift beyond the 1 km miss the entry guidance tolerates.
GUIDANCE_MISS_TOL_M = 1_000.0


@dataclass(frozen=True)
class Flight:
    events: dict[str, dict[str, Any]]  # name -> values of its first occurrence
    trace: list[tuple[float, dict[str, float], float, float]]  # (t, values, speed, mass)
    ei_step: int  # index in trace of the step the entry interface was crossed in


@cache
def _fly(params: tuple[tuple[str, float], ...]) -> Flight:
    core = ReentryCore(6)
    core.set_parameters(dict(params))
    body = handover_body()
    d = Drive(core, body["t_s"])
    d.deliver("transfer", body, src="orbiter")
    trace: list[tuple[float, dict[str, float], float, float]] = []
    ei_step = -1
    while core.phase not in ("landed", "recovered"):
        d.step()
        s = core.summary()
        trace.append((d.t_s, dict(s.values), s.speed_m_s, s.mass_kg))
        if ei_step < 0 and "entry_interface" in d.names():
            ei_step = len(trace) - 1
    events: dict[str, dict[str, Any]] = {}
    for t, name, values in d.events:
        events.setdefault(name, {"t": t, **values})
    return Flight(events, trace, ei_step)


def fly(params: dict[str, float] | None = None) -> Flight:
    return _fly(tuple(sorted((params or {}).items())))


def at_interface(f: Flight) -> tuple[dict[str, float], float, float]:
    _, values, speed, mass = f.trace[f.ei_step]
    return values, speed, mass


def along_track_shift_m(f: Flight, nominal: Flight) -> float:
    """The landing point's shift from the nominal one along the approach (+ long),
    on a sphere: north/east offsets onto the initial bearing from the entry
    interface to the nominal landing."""
    ei, a, b = nominal.events["entry_interface"], nominal.events["earth_landing"], \
        f.events["earth_landing"]
    lat0, lat1 = math.radians(ei["lat_deg"]), math.radians(a["lat_deg"])
    dlon = math.radians(a["lon_deg"] - ei["lon_deg"])
    bearing = math.atan2(math.sin(dlon) * math.cos(lat1),
                         math.cos(lat0) * math.sin(lat1)
                         - math.sin(lat0) * math.cos(lat1) * math.cos(dlon))
    north = math.radians(b["lat_deg"] - a["lat_deg"]) * EARTH_MEAN_RADIUS_M
    east = (math.radians(b["lon_deg"] - a["lon_deg"]) * math.cos(lat1)
            * EARTH_MEAN_RADIUS_M)
    return north * math.cos(bearing) + east * math.sin(bearing)


@pytest.mark.parametrize("params", [{}, {"atmosphere.density_scale": 1.2}],
                         ids=["nominal", "dense"])
def test_the_landing_event_carries_the_peaks_of_the_entry_trace(params: dict[str, float]) -> None:
    f = fly(params)
    landing = f.events["earth_landing"]
    assert landing["peak_decel_g"] == pytest.approx(
        max(v["sensed_accel_m_s2"] for _, v, _, _ in f.trace) / G0_M_S2, rel=1e-12)
    assert landing["peak_heat_flux_w_m2"] == max(v["heat_flux_w_m2"] for _, v, _, _ in f.trace)
    assert landing["in_zone"]


def test_a_denser_atmosphere_loads_the_capsule_harder_and_lands_short() -> None:
    nominal, dense = fly(), fly({"atmosphere.density_scale": 1.2})
    v0, speed0, _ = at_interface(nominal)
    v1, speed1, _ = at_interface(dense)
    assert speed1 == pytest.approx(speed0, rel=SAME_STATE_REL)  # the same state, ...
    assert v1["sensed_accel_m_s2"] == pytest.approx(1.2 * v0["sensed_accel_m_s2"],
                                                    rel=SAME_STATE_REL)  # ... rho x 1.2
    assert v1["heat_flux_w_m2"] == pytest.approx(math.sqrt(1.2) * v0["heat_flux_w_m2"],
                                                 rel=SAME_STATE_REL)
    peak0, peak1 = nominal.events["earth_landing"], dense.events["earth_landing"]
    assert peak1["peak_decel_g"] > peak0["peak_decel_g"]
    assert peak1["peak_heat_flux_w_m2"] > peak0["peak_heat_flux_w_m2"]
    # the guidance predicts with the standard atmosphere: more drag than it expects
    assert along_track_shift_m(dense, nominal) < -GUIDANCE_MISS_TOL_M


def test_a_steeper_entry_interface_raises_the_peak_deceleration() -> None:
    nominal, steep = fly(), fly({"entry.fpa_error_deg": -0.2})
    v0, speed0, _ = at_interface(nominal)
    v1, speed1, _ = at_interface(steep)
    assert v1["flight_path_angle_deg"] == pytest.approx(v0["flight_path_angle_deg"] - 0.2,
                                                        abs=FPA_TOL_DEG)
    assert speed1 == pytest.approx(speed0, rel=1e-9)  # turned, not sped up
    assert steep.events["earth_landing"]["peak_decel_g"] > \
        nominal.events["earth_landing"]["peak_decel_g"]
    assert steep.events["earth_landing"]["in_zone"]


def test_a_heavier_returner_feels_less_drag_at_the_interface() -> None:
    """a = D / m: 10 kg more on 330 kg, 330/340 of the sensed load; the heat
    flux does not depend on the mass."""
    body = handover_body()
    nominal, heavy = fly(), fly({"mass_offset_kg": 10.0})
    v0, _, m0 = at_interface(nominal)
    v1, _, m1 = at_interface(heavy)
    assert m0 == pytest.approx(body["mass_kg"])
    assert m1 == pytest.approx(body["mass_kg"] + 10.0)
    assert v1["sensed_accel_m_s2"] == pytest.approx(v0["sensed_accel_m_s2"] * m0 / m1,
                                                    rel=SAME_STATE_REL)
    assert v1["heat_flux_w_m2"] == pytest.approx(v0["heat_flux_w_m2"], rel=SAME_STATE_REL)
    assert heavy.events["earth_landing"]["mass_kg"] == pytest.approx(body["mass_kg"] + 10.0)


def test_a_value_outside_the_returners_range_is_refused() -> None:
    with pytest.raises(ParameterError, match=r"reentry\.atmosphere\.density_scale = 3 is"):
        ReentryCore(6).set_parameters({"atmosphere.density_scale": 3})
