"""Time scales against IERS conventions and skyfield's built-in timescale."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from skyfield.api import load

from services.dynamics.constants import DAY_S, MISSION_EPOCH_UTC
from services.dynamics.timescale import (
    J2000_JD,
    iso_utc,
    mission_s_from_utc,
    tdb_jd,
    tdb_s_past_j2000,
    tt_jd,
    tt_minus_utc_s,
    ut1_jd,
    utc_from_mission_s,
)

TOUCHDOWN_ISO = "2024-06-01T22:23:16Z"
# skyfield's timescale is the authority; 1 us of TDB is ~1 mm of Moon motion.
TIME_TOL_S = 1e-6
# UT1 from the same IERS series, interpolated differently: 0.5 ms = 0.2 m at the equator.
UT1_TOL_S = 5e-4


def test_epoch_is_mission_zero() -> None:
    assert mission_s_from_utc(MISSION_EPOCH_UTC) == 0.0
    assert utc_from_mission_s(0.0) == MISSION_EPOCH_UTC


def test_iso_round_trip_and_format() -> None:
    t_s = mission_s_from_utc(TOUCHDOWN_ISO)
    assert iso_utc(t_s) == "2024-06-01T22:23:16.000Z"
    assert mission_s_from_utc(iso_utc(t_s)) == pytest.approx(t_s, abs=1e-3)


def test_rejects_naive_and_pre_2017() -> None:
    with pytest.raises(ValueError, match="naive"):
        mission_s_from_utc(datetime(2024, 6, 1))
    with pytest.raises(ValueError, match="2017"):
        mission_s_from_utc(datetime(2016, 6, 1, tzinfo=UTC))


def test_tt_minus_utc_is_69_184_s_in_2024() -> None:
    # IERS Bulletin C: TAI - UTC = 37 s since 2017-01-01; TT - TAI = 32.184 s.
    assert tt_minus_utc_s(mission_s_from_utc(TOUCHDOWN_ISO)) == pytest.approx(69.184, abs=1e-9)


@pytest.mark.parametrize("iso", ["2024-05-03T09:27:29Z", TOUCHDOWN_ISO, "2024-06-25T06:07:00Z"])
def test_tt_tdb_ut1_match_skyfield(iso: str) -> None:
    ts = load.timescale(builtin=True)
    t_s = mission_s_from_utc(iso)
    t = ts.from_datetime(utc_from_mission_s(t_s))
    # Compare in seconds past J2000 from skyfield's two-part dates, because a
    # float64 Julian date alone only resolves ~40 us.
    whole_s = (t.whole - J2000_JD) * DAY_S
    assert float(tt_jd(t_s)) == pytest.approx(t.tt, abs=1e-9)
    assert tdb_s_past_j2000(t_s) - whole_s == pytest.approx(t.tdb_fraction * DAY_S, abs=TIME_TOL_S)
    assert float(tdb_jd(t_s)) == pytest.approx(t.tdb, abs=1e-9)
    assert float(ut1_jd(t_s)) == pytest.approx(t.ut1, abs=UT1_TOL_S / DAY_S)
