"""Time scales for the twin: mission seconds, UTC, TT, TDB and UT1.

Mission time ``t_s`` counts SI seconds since ``MISSION_EPOCH_UTC`` (launch).
SI seconds run at the rate of TAI, so ``t_s`` maps to TT by a constant
offset; UTC only differs through leap seconds. No leap second was inserted
between 2017-01-01 and the mission (IERS Bulletin C 67-69), so TAI - UTC is
37 s over the whole mission, and the mapping is a constant shift.

TDB - TT is the short series of USNO Circular 179 (Kaplan 2005, eq. 2.6),
good to ~10 us, far below what anything in the twin can resolve.

UT1 - UTC (needed for the Earth rotation angle) comes from the IERS
``finals2000A.all`` file shipped in the ``skyfield-data`` package; reading it
needs no network.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from functools import lru_cache
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from services.dynamics.constants import DAY_S, MISSION_EPOCH_UTC

__all__ = [
    "J2000_JD",
    "MISSION_EPOCH_JD_UTC",
    "TAI_MINUS_UTC_S",
    "TT_MINUS_TAI_S",
    "iso_utc",
    "mission_s_from_utc",
    "tdb_jd",
    "tdb_minus_tt_s",
    "tdb_s_past_j2000",
    "tt_jd",
    "tt_minus_utc_s",
    "ut1_jd",
    "ut1_minus_utc_s",
    "utc_from_mission_s",
]

# IERS Bulletin C: TAI - UTC = 37 s from 2017-01-01 until further notice.
TAI_MINUS_UTC_S = 37.0
LEAP_TABLE_VALID_FROM_UTC = datetime(2017, 1, 1, tzinfo=UTC)
# IAU 1991 / 2000: TT = TAI + 32.184 s exactly.
TT_MINUS_TAI_S = 32.184
J2000_JD = 2_451_545.0  # 2000-01-01T12:00 (TT or TDB), IAU
_UNIX_EPOCH_JD = 2_440_587.5  # 1970-01-01T00:00 UTC

MISSION_EPOCH_JD_UTC = _UNIX_EPOCH_JD + MISSION_EPOCH_UTC.timestamp() / DAY_S
# Seconds from J2000 (TT) to the mission epoch on the TT scale, computed once
# from whole days plus a fraction so that no precision is lost.
_EPOCH_TT_S_PAST_J2000 = (
    (MISSION_EPOCH_UTC - datetime(2000, 1, 1, 12, tzinfo=UTC)).total_seconds()
    + TAI_MINUS_UTC_S
    + TT_MINUS_TAI_S
)


def utc_from_mission_s(t_s: float) -> datetime:
    """UTC instant (tz-aware) of mission time ``t_s``."""
    return MISSION_EPOCH_UTC + timedelta(seconds=float(t_s))


def mission_s_from_utc(utc: datetime | str) -> float:
    """Mission seconds of a UTC instant (datetime or ISO 8601 string)."""
    if isinstance(utc, str):
        utc = datetime.fromisoformat(utc.replace("Z", "+00:00"))
    if utc.tzinfo is None:
        raise ValueError(f"naive datetime {utc!r}: give a tz-aware UTC instant")
    if utc < LEAP_TABLE_VALID_FROM_UTC:
        raise ValueError(f"{utc.isoformat()} is before 2017-01-01; leap table covers later only")
    return (utc - MISSION_EPOCH_UTC).total_seconds()


def iso_utc(t_s: float) -> str:
    """ISO 8601 UTC with milliseconds, e.g. ``2024-06-01T22:23:16.000Z``."""
    stamp = utc_from_mission_s(t_s).strftime("%Y-%m-%dT%H:%M:%S.%f")
    return stamp[:-3] + "Z"


def tt_minus_utc_s(t_s: float | NDArray[np.float64]) -> float | NDArray[np.float64]:
    """TT - UTC in seconds (constant 69.184 s from 2017 on)."""
    offset_s = TAI_MINUS_UTC_S + TT_MINUS_TAI_S
    if np.ndim(t_s) == 0:
        return offset_s
    return np.full(np.shape(t_s), offset_s)


def tdb_minus_tt_s(tt_s_past_j2000: float | NDArray[np.float64]) -> float | NDArray[np.float64]:
    """TDB - TT in seconds, USNO Circular 179 eq. 2.6 (Kaplan 2005; error ~10 us)."""
    t_cy = np.asarray(tt_s_past_j2000) / (36_525.0 * DAY_S)
    out = (
        0.001_657 * np.sin(628.3076 * t_cy + 6.2401)
        + 0.000_022 * np.sin(575.3385 * t_cy + 4.2970)
        + 0.000_014 * np.sin(1256.6152 * t_cy + 6.1969)
        + 0.000_005 * np.sin(606.9777 * t_cy + 4.0212)
        + 0.000_005 * np.sin(52.9691 * t_cy + 0.4444)
        + 0.000_002 * np.sin(21.3299 * t_cy + 5.5431)
        + 0.000_010 * t_cy * np.sin(628.3076 * t_cy + 4.2490)
    )
    return float(out) if np.ndim(out) == 0 else out


def tdb_s_past_j2000(t_s: float | NDArray[np.float64]) -> float | NDArray[np.float64]:
    """TDB seconds since J2000 of mission time ``t_s`` (the ephemeris argument)."""
    tt_s = _EPOCH_TT_S_PAST_J2000 + np.asarray(t_s, dtype=np.float64)
    out = tt_s + tdb_minus_tt_s(tt_s)
    return float(out) if np.ndim(out) == 0 else out


def tt_jd(t_s: float | NDArray[np.float64]) -> float | NDArray[np.float64]:
    """Julian date on the TT scale."""
    out = J2000_JD + (_EPOCH_TT_S_PAST_J2000 + np.asarray(t_s, dtype=np.float64)) / DAY_S
    return float(out) if np.ndim(out) == 0 else out


def tdb_jd(t_s: float | NDArray[np.float64]) -> float | NDArray[np.float64]:
    """Julian date on the TDB scale (float64: ~40 us resolution, ample here)."""
    out = J2000_JD + np.asarray(tdb_s_past_j2000(t_s)) / DAY_S
    return float(out) if np.ndim(out) == 0 else out


@lru_cache(maxsize=1)
def _ut1_table() -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """(MJD UTC, UT1-UTC s) from IERS finals2000A.all in skyfield-data."""
    import skyfield_data

    path = Path(skyfield_data.__file__).parent / "data" / "finals2000A.all"
    mjd: list[float] = []
    dut1: list[float] = []
    for line in path.read_text().splitlines():
        field = line[58:68].strip()  # columns 59-68: UT1-UTC, Bulletin A
        if len(line) < 68 or not field:
            continue
        mjd.append(float(line[7:15]))
        dut1.append(float(field))
    return np.array(mjd), np.array(dut1)


def ut1_minus_utc_s(t_s: float | NDArray[np.float64]) -> float | NDArray[np.float64]:
    """UT1 - UTC from IERS daily values, linearly interpolated (|err| < 1 ms)."""
    mjd_tab, dut1_tab = _ut1_table()
    mjd = MISSION_EPOCH_JD_UTC - 2_400_000.5 + np.asarray(t_s, dtype=np.float64) / DAY_S
    out = np.interp(mjd, mjd_tab, dut1_tab)
    return float(out) if np.ndim(out) == 0 else out


def ut1_jd(t_s: float | NDArray[np.float64]) -> float | NDArray[np.float64]:
    """Julian date on the UT1 scale (for the Earth rotation angle)."""
    days = (np.asarray(t_s, dtype=np.float64) + np.asarray(ut1_minus_utc_s(t_s))) / DAY_S
    out = MISSION_EPOCH_JD_UTC + days
    return float(out) if np.ndim(out) == 0 else out
