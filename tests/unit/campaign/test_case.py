"""A case's row from its events: outcomes, the applied-dispersion check, the digest.

Event rows are written here as a mission's report holds them; the whole
mission is flown in tests/integration/test_campaign.py.
"""

from __future__ import annotations

import math
from typing import Any

from services.campaign.case import (
    applied_parameters,
    events_digest,
    not_applied,
    outcomes,
)


def _row(name: str, vehicle: str, t_s: float, seq: int, **values: Any) -> dict[str, Any]:
    return {"name": name, "vehicle": vehicle, "utc": "", "t_s": t_s, "step": 1, "seq": seq,
            **values}


ROWS = [
    _row("parameters_applied", "lander", 0.0, 1,
         parameters={"lander.engine.thrust_scale": 0.97}),
    _row("parameters_applied", "reentry", 0.0, 1,
         parameters={"reentry.entry.fpa_error_deg": -0.1}),
    _row("lunar_touchdown", "lander", 2.55e6, 40, lat_deg=-41.6383, lon_deg=-153.9844,
         miss_m=18.0, speed_m_s=2.7, propellant_kg=85.5),
    _row("docking", "orbiter", 2.93e6, 77, range_m=0.3),
    _row("earth_landing", "reentry", 4.567e6, 90, lat_deg=42.0, lon_deg=111.45, miss_m=460.0,
         in_zone=True, sample_mass_g=1935.3, peak_decel_g=4.5, peak_heat_flux_w_m2=3.1e6),
]


def test_the_outcomes_are_the_first_event_s_fields_and_nan_where_none_came() -> None:
    got = outcomes(ROWS)
    assert (got["touchdown_t_s"], got["touchdown_miss_m"], got["lander_propellant_kg"]) == \
        (2.55e6, 18.0, 85.5)
    assert got["docking_t_s"] == 2.93e6
    assert (got["entry_peak_g"], got["entry_peak_heat_flux_w_m2"]) == (4.5, 3.1e6)
    assert got["landing_in_zone"] is True and got["sample_mass_g"] == 1935.3
    assert math.isnan(got["orbiter_propellant_kg"])  # no tei_burn_2 in these rows
    assert outcomes(ROWS[:2])["landing_in_zone"] is None


def test_what_the_vehicles_announced_is_what_was_applied() -> None:
    applied = applied_parameters(ROWS)
    assert applied == {"lander.engine.thrust_scale": 0.97, "reentry.entry.fpa_error_deg": -0.1}


def test_a_dispersion_that_never_arrived_or_arrived_changed_is_named() -> None:
    drawn = {"lander.engine.thrust_scale": 0.97, "reentry.entry.fpa_error_deg": -0.1,
             "relay.outage.duration_s": 600.0}
    applied = applied_parameters(ROWS)
    assert not_applied(drawn, applied) == ("dispersion not applied: no vehicle announced "
                                            "relay.outage.duration_s")
    changed = {**applied, "lander.engine.thrust_scale": 1.0}
    assert not_applied({k: v for k, v in drawn.items() if k in applied}, changed) == (
        "dispersion not applied: lander.engine.thrust_scale drawn 0.97, vehicle applied 1.0")


def test_the_digest_ignores_sequence_numbers_and_nothing_else() -> None:
    renumbered = [{**r, "seq": r["seq"] + 1000} for r in ROWS]
    assert events_digest(renumbered) == events_digest(ROWS)
    moved = [*ROWS[:-1], {**ROWS[-1], "miss_m": 460.0000001}]
    assert events_digest(moved) != events_digest(ROWS)
    assert events_digest(ROWS[:-1]) != events_digest(ROWS)
