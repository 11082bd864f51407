"""`twin diff`'s comparison (services/cli/diff.py) on event rows written here.

Distances are checked against the haversine formula written below with the
published radii, not against the code's own constants.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest

from services.cli.diff import (
    DiffInputError,
    LatLon,
    Mission,
    compare,
    diff_grids,
    diff_json,
    format_duration,
    plot_diff,
    rows_of_report,
)

# Published figures, typed here: the IAU mean lunar radius, the LROC site's
# height below it, the LROC site itself, and the IUGG mean Earth radius R1.
MOON_MEAN_RADIUS_M = 1_737_400.0
SITE_HEIGHT_M = -5_256.0
SITE = (-41.6385, -153.9852)
EARTH_R1_M = 6_371_008.8
#: Two exact formulas for one distance, evaluated in doubles: they agree to rounding.
DISTANCE_TOLERANCE_M = 1e-6
#: R1 is published to 0.1 m: the relative difference that leaves in an Earth distance.
R1_RELATIVE_TOLERANCE = 0.1 / EARTH_R1_M + 1e-12

TOUCHDOWN_T_S = 2_552_147.25
LANDING = (41.99841, 111.45512)


def haversine_m(lat1: float, lon1: float, lat2: float, lon2: float, radius_m: float) -> float:
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    h = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2.0 * radius_m * math.asin(math.sqrt(h))


def ev(name: str, vehicle: str, t_s: float, seq: int = 1, **values: Any) -> dict[str, Any]:
    """A row as a report's `events` hold it: the head, then the values."""
    return {"name": name, "vehicle": vehicle, "utc": f"t+{t_s}", "t_s": t_s, "step": 1,
            "seq": seq, **dict(sorted(values.items()))}


def mission_rows(touchdown: tuple[float, float] = SITE, touchdown_t_s: float = TOUCHDOWN_T_S,
                 landing: tuple[float, float] = LANDING) -> list[dict[str, Any]]:
    return [
        ev("probe_separation", "orbiter", 2_191.0, 1, mass_kg=8_350.0),
        ev("trajectory_correction", "orbiter", 60_000.0, 2, propellant_kg=12.5),
        ev("powered_descent_start", "lander", 2_551_300.0, 1),
        ev("lunar_touchdown", "lander", touchdown_t_s, 2, lat_deg=touchdown[0],
           lon_deg=touchdown[1], propellant_kg=81.893),
        ev("ascender_docked", "ascender", 2_926_854.5, 1, propellant_kg=20.25),
        ev("docking", "orbiter", 2_926_854.5, 3),
        ev("tei_burn_2", "orbiter", 4_192_096.5, 4, propellant_kg=150.0),
        ev("earth_landing", "reentry", 4_567_170.0, 1, lat_deg=landing[0], lon_deg=landing[1],
           in_zone=True, peak_decel_g=6.5, peak_heat_flux_w_m2=3.1e6),
        ev("mission_end", "ground", 4_568_970.0, 1, plan="nominal"),
    ]


def shift_of(diff: Any, name: str) -> Any:
    return next(s for s in diff.shifts if s.name == name)


# --- identical ---------------------------------------------------------------------


def test_a_mission_against_itself_has_no_difference() -> None:
    d = compare(Mission("A", mission_rows()), Mission("B", mission_rows()))
    assert d.identical
    assert d.first is None and d.by_vehicle == {}
    assert {s.status for s in d.shifts} == {"same"}
    assert all(s.dt_s == 0.0 for s in d.shifts)
    assert all(q.delta == 0.0 for q in d.quantities)
    assert d.touchdown_apart_m == 0.0 and d.landing_apart_km == 0.0
    assert "identical" in diff_grids(d)[1].notes[-1]


def test_step_seq_and_utc_are_bookkeeping_not_the_mission() -> None:
    renumbered = [{**r, "step": r["step"] + 7, "seq": r["seq"] + 100, "utc": "elsewhere"}
                  for r in mission_rows()]
    assert compare(Mission("A", mission_rows()), Mission("B", renumbered)).identical


# --- moved, missing, added -----------------------------------------------------------


def test_a_moved_event_is_measured_exactly() -> None:
    later_s = 12.5  # both times and their difference are exact in binary
    d = compare(Mission("A", mission_rows()),
                Mission("B", mission_rows(touchdown_t_s=TOUCHDOWN_T_S + later_s)))
    touchdown = shift_of(d, "lunar_touchdown")
    assert touchdown.status == "moved"
    assert (touchdown.t_a_s, touchdown.t_b_s) == (TOUCHDOWN_T_S, TOUCHDOWN_T_S + later_s)
    assert touchdown.dt_s == later_s
    assert shift_of(d, "docking").status == "same"
    assert not d.identical
    assert d.first is not None and d.first.name == "lunar_touchdown"
    assert "+12.500 s" in d.first.what


def test_a_move_within_the_tolerance_is_no_difference() -> None:
    later_s = 12.5
    a, b = (Mission("A", mission_rows()),
            Mission("B", mission_rows(touchdown_t_s=TOUCHDOWN_T_S + later_s)))
    assert compare(a, b, tolerance_s=later_s).identical
    assert shift_of(compare(a, b, tolerance_s=later_s), "lunar_touchdown").status == \
        "within tolerance"
    assert shift_of(compare(a, b, tolerance_s=12.0), "lunar_touchdown").status == "moved"


def test_an_event_missing_on_one_side_is_named_and_the_other_way_it_is_added() -> None:
    full = mission_rows()
    without = [r for r in full if r["name"] != "ascender_docked"]
    d = compare(Mission("A", full), Mission("B", without))
    assert shift_of(d, "lunar_touchdown").status == "same"
    # ascender_docked is not a key event: the docking row is, and stays
    assert all(s.name != "ascender_docked" for s in d.shifts)
    div = d.by_vehicle["ascender"]
    assert (div.name, div.t_s, div.pending) == ("ascender_docked", 2_926_854.5, False)
    assert "missing in B" in div.what
    propellant = next(q for q in d.quantities if q.label.startswith("ascender"))
    assert (propellant.a, propellant.b, propellant.delta) == (20.25, None, None)

    key_missing = [r for r in full if r["name"] != "docking"]
    assert shift_of(compare(Mission("A", full), Mission("B", key_missing)),
                    "docking").status == "missing in B"
    added = shift_of(compare(Mission("A", key_missing), Mission("B", full)), "docking")
    assert (added.status, added.t_a_s, added.t_b_s) == ("added in B", None, 2_926_854.5)


# --- landing points ------------------------------------------------------------------


def test_touchdown_distance_and_site_miss_match_the_haversine() -> None:
    moved = (SITE[0] + 0.001, SITE[1] - 0.002)  # ~30 m north, ~45 m west
    d = compare(Mission("A", mission_rows()), Mission("B", mission_rows(touchdown=moved)))
    sphere_m = MOON_MEAN_RADIUS_M + SITE_HEIGHT_M
    expected_m = haversine_m(*SITE, *moved, sphere_m)
    assert d.touchdown_apart_m == pytest.approx(expected_m, abs=DISTANCE_TOLERANCE_M)
    assert d.site_miss_m(d.touchdown_a) == pytest.approx(0.0, abs=DISTANCE_TOLERANCE_M)
    assert d.site_miss_m(d.touchdown_b) == pytest.approx(expected_m, abs=DISTANCE_TOLERANCE_M)
    assert d.by_vehicle["lander"].name == "lunar_touchdown"
    assert "lat_deg" in d.by_vehicle["lander"].what


def test_earth_landing_distance_in_km_matches_the_haversine_on_r1() -> None:
    moved = (LANDING[0] - 0.05, LANDING[1] + 0.08)  # several km
    d = compare(Mission("A", mission_rows()), Mission("B", mission_rows(landing=moved)))
    expected_km = haversine_m(*LANDING, *moved, EARTH_R1_M) / 1000.0
    assert d.landing_apart_km == pytest.approx(expected_km, rel=R1_RELATIVE_TOLERANCE)
    assert (d.in_zone_a, d.in_zone_b) == (True, True)
    assert d.landing_b == LatLon(*moved)


# --- the first divergence ------------------------------------------------------------


def test_the_first_divergence_is_the_earliest_event_that_differs() -> None:
    a = mission_rows()
    b = mission_rows(touchdown_t_s=TOUCHDOWN_T_S + 30.0)
    b[1] = {**b[1], "propellant_kg": 12.75}  # the orbiter's TCM, long before touchdown
    d = compare(Mission("A", a), Mission("B", b))
    first = d.first
    assert first is not None
    assert (first.t_s, first.vehicle, first.name) == (60_000.0, "orbiter", "trajectory_correction")
    assert "propellant_kg 12.5 -> 12.75" in first.what
    assert d.by_vehicle["lander"].name == "lunar_touchdown"  # each vehicle's own, later
    assert set(d.by_vehicle) == {"orbiter", "lander"}


def test_a_different_event_in_its_place_is_named_with_both_sides() -> None:
    a = mission_rows()
    b = mission_rows()
    b[2] = ev("hover_start", "lander", 2_551_300.0, 1)
    first = compare(Mission("A", a), Mission("B", b)).first
    assert first is not None and first.name == "powered_descent_start"
    assert "A: powered_descent_start" in first.what and "B: hover_start" in first.what


def test_a_running_side_that_has_not_got_there_is_pending_not_divergent() -> None:
    parent = mission_rows()
    fork = [r for r in parent if r["t_s"] < TOUCHDOWN_T_S]  # its log stops before touchdown
    d = compare(Mission("A", parent), Mission("B", fork, finished=False))
    assert d.first is None
    assert not d.identical
    assert all(div.pending for div in d.by_vehicle.values())
    assert shift_of(d, "lunar_touchdown").status == "not yet in B"
    assert shift_of(d, "probe_separation").status == "same"


def test_parameters_are_compared_apart_from_the_events() -> None:
    applied = ev("parameters_applied", "orbiter", 0.0, 0,
                 parameters={"orbiter.engine.isp_scale": 0.99})
    d = compare(Mission("A", mission_rows()), Mission("B", [applied, *mission_rows()]))
    assert d.first is None and not d.identical
    assert dict(d.parameters_b) == {"orbiter.engine.isp_scale": 0.99}
    assert any("orbiter.engine.isp_scale nominal -> 0.99" in n for n in diff_grids(d)[1].notes)


# --- input, output -------------------------------------------------------------------


@pytest.mark.parametrize("body", [[], {"events": "none"}, {"events": [{"name": "x"}]},
                                  {"events": [{"name": "x", "vehicle": "v", "t_s": True}]}])
def test_what_is_not_a_report_is_refused_saying_what_to_give(body: object) -> None:
    with pytest.raises(DiffInputError, match="twin run --report"):
        rows_of_report(body, "r.json")


def test_a_negative_tolerance_is_refused() -> None:
    with pytest.raises(DiffInputError, match=">= 0"):
        compare(Mission("A", []), Mission("B", []), tolerance_s=-1.0)


@pytest.mark.parametrize(("dt_s", "text"), [(0.0, "0 s"), (12.5, "+12.500 s"),
                                            (-90.0, "-1.50 min"), (5_400.0, "+1.50 h"),
                                            (129_600.0, "+1.500 d"), (2.5e-8, "+2.50e-08 s")])
def test_durations_read_in_their_unit(dt_s: float, text: str) -> None:
    assert format_duration(dt_s) == text


def test_json_and_plot_of_a_diff(tmp_path: Path) -> None:
    moved = (SITE[0] + 0.001, SITE[1])
    d = compare(Mission("A", mission_rows()), Mission("B", mission_rows(touchdown=moved)))
    body = diff_json(d)
    assert body["identical"] is False
    assert body["first_divergence"]["name"] == "lunar_touchdown"
    assert body["lunar_touchdown"]["b"] == {"lat_deg": moved[0], "lon_deg": moved[1]}
    png = plot_diff(d, tmp_path / "d.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
