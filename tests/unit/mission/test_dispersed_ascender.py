"""The ascender's dispersible parameters act where the physics says, through the step rule.

The ascender is handed over on the pad as in test_ascender (750 kg with
420 kg of propellant, 330 kg dry: the hand-over written there) and flown to
orbit, nominal and dispersed. Its engine is not throttled, so the mass flow
is thrust / v_e throughout the ascent: burn time = propellant used / mass
flow, whatever the guidance does. The guidance flies to the same orbit in
closed loop, so the ideal delta-v v_e ln(m0 / m1) is the same to the change
in gravity losses. Both are written here; no figure of the code is imported.
"""

from __future__ import annotations

import math
from functools import cache
from typing import Any

import pytest

from services.ascender.vehicle import AscenderCore
from services.kernel.parameters import ParameterError
from tests.unit.mission.driver import Drive
from tests.unit.mission.test_ascender import T_SEAL, pad_handover, sample_handover, to_orbit

# Event values are rounded: masses to 0.1 g, burn times to 10 ms.
MASS_TOL_KG = 1e-3
BURN_TOL_S = 0.02
#: Ideal delta-v of two ascents to the same orbit at the same thrust: their
#: gravity losses differ by the change in thrust-to-weight (< 3 % here) times
#: the ~2 % of the delta-v they make up: well under 0.1 %.
SAME_ORBIT_DV_REL = 1e-3
#: At 0.9 of the thrust the ascent lasts ~1/0.9 as long and loses more to
#: gravity: its propellant grows by less than 0.5 % (~1 % of g t over ~40 s).
WEAK_ENGINE_EXTRA_PROPELLANT_REL = 5e-3


def on_pad(params: dict[str, float] | None) -> Drive:
    core = AscenderCore(6)
    if params:
        core.set_parameters(params)
    d = Drive(core, T_SEAL - 60.0)
    d.deliver("transfer", sample_handover(), src="lander")
    d.step()
    d.deliver("transfer", pad_handover(), src="lander")
    d.step()
    return d


def ascent(params: dict[str, float] | None) -> tuple[float, float, float]:
    """(mass at liftoff, mass at orbit insertion, burn time) of one ascent."""
    return _ascent(tuple(sorted((params or {}).items())))


@cache  # each ascent is flown once per process (~0.2 s)
def _ascent(params: tuple[tuple[str, float], ...]) -> tuple[float, float, float]:
    d = to_orbit(on_pad(dict(params)))
    _, lift = d.event("ascent_liftoff")
    _, ins = d.event("ascent_orbit_insertion")
    return lift["mass_kg"], ins["mass_kg"], ins["burn_s"]


@pytest.mark.parametrize(("params", "thrust", "isp"), [
    ({"engine.thrust_scale": 0.9}, 0.9, 1.0),
    ({"engine.isp_scale": 0.98}, 1.0, 0.98),
    ({"engine.thrust_scale": 1.05, "engine.isp_scale": 1.02}, 1.05, 1.02),
])
def test_the_ascent_burns_for_its_propellant_over_the_scaled_mass_flow(
        params: dict[str, float], thrust: float, isp: float) -> None:
    """t = used / mdot, mdot = F / v_e: t1 / t0 = (used1 / used0) (v_e1 / v_e0) / (F1 / F0)."""
    m0, m1_nominal, t_nominal = ascent(None)
    m0_d, m1, t = ascent(params)
    assert m0_d == m0
    used_ratio = (m0 - m1) / (m0 - m1_nominal)
    assert t == pytest.approx(t_nominal * used_ratio * isp / thrust, abs=BURN_TOL_S)
    if thrust == 1.0:  # the same orbit for the same ideal delta-v, with the scaled v_e
        assert isp * math.log(m0 / m1) == pytest.approx(math.log(m0 / m1_nominal),
                                                        rel=SAME_ORBIT_DV_REL)


def test_a_weaker_engine_lengthens_the_ascent_by_about_its_inverse() -> None:
    m0, m1_nominal, t_nominal = ascent(None)
    _, m1, t = ascent({"engine.thrust_scale": 0.9})
    assert m1 < m1_nominal  # longer under gravity: more propellant
    assert (m0 - m1) / (m0 - m1_nominal) < 1.0 + WEAK_ENGINE_EXTRA_PROPELLANT_REL
    assert t / t_nominal == pytest.approx(1.0 / 0.9, rel=WEAK_ENGINE_EXTRA_PROPELLANT_REL)


def test_dry_mass_offset_adds_to_the_ascender_and_its_propellant_use() -> None:
    """The same ideal delta-v from a heavier start: used = m0 (1 - exp(-dv / v_e)) goes as m0."""
    body = pad_handover()
    pad = on_pad({"dry_mass_offset_kg": 20.0}).core.summary()
    assert pad.mass_kg == pytest.approx(body["mass_kg"] + 20.0)
    assert pad.propellant_kg == pytest.approx(body["propellant_kg"])
    m0, m1_nominal, _ = ascent(None)
    m0_heavy, m1, _ = ascent({"dry_mass_offset_kg": 20.0})
    assert m0_heavy == pytest.approx(m0 + 20.0)
    assert (m0_heavy - m1) / (m0 - m1_nominal) == pytest.approx(m0_heavy / m0,
                                                                rel=SAME_ORBIT_DV_REL)


def to_first_phasing_burn(params: dict[str, float] | None) -> dict[str, Any]:
    d = to_orbit(on_pad(params))
    d.until_t(d.event("ascent_orbit_insertion")[0] + 1_800.0)
    d.deliver("command", {"op": "plan_phasing"})
    d.until(lambda x: "phasing_burn" in x.names())
    _, burn = d.event("burn_end")
    _, after = d.event("phasing_burn")
    return {**burn, "m0_kg": after["mass_kg"] + burn["propellant_kg"]}


def test_isp_scale_spends_a_phasing_burns_propellant_by_the_rocket_equation() -> None:
    nominal = to_first_phasing_burn(None)
    # the rocket equation solved for v_e: dv = v_e ln(m0 / (m0 - used))
    v_e = nominal["dv_m_s"] / math.log(nominal["m0_kg"]
                                       / (nominal["m0_kg"] - nominal["propellant_kg"]))
    low = to_first_phasing_burn({"engine.isp_scale": 0.98})
    assert low["propellant_kg"] == pytest.approx(
        low["m0_kg"] * (1.0 - math.exp(-low["dv_m_s"] / (0.98 * v_e))), abs=MASS_TOL_KG)


def test_the_docked_event_carries_the_propellant_left() -> None:
    """Left = mass - dry mass, the dry mass being the hand-over's plus the offset."""
    d = to_orbit(on_pad({"dry_mass_offset_kg": 10.0}))
    d.until_t(d.event("ascent_orbit_insertion")[0] + 1_800.0)
    d.deliver("command", {"op": "plan_phasing"})
    d.until(lambda x: "rendezvous_aim_point" in x.names())
    s = d.core.summary()
    d.deliver("transfer", {"type": "docked", "r_m": list(s.r_m), "v_m_s": list(s.v_m_s),
                           "t_s": d.t_s}, src="orbiter")
    d.step()
    _, docked = d.event("ascender_docked")
    dry_kg = pad_handover()["dry_mass_kg"] + 10.0
    assert docked["propellant_kg"] == pytest.approx(docked["mass_kg"] - dry_kg, abs=MASS_TOL_KG)
    assert 0.0 < docked["propellant_kg"] < pad_handover()["propellant_kg"]
    assert d.core.summary().propellant_kg == pytest.approx(docked["propellant_kg"],
                                                           abs=MASS_TOL_KG)


def test_a_value_outside_the_ascenders_range_is_refused() -> None:
    with pytest.raises(ParameterError, match=r"ascender\.engine\.isp_scale = 0\.5 is outside"):
        AscenderCore(6).set_parameters({"engine.isp_scale": 0.5})
