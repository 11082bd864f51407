"""The key-events table: each key event's twin time beside the real mission's.

Built from a report's `comparison` rows (docs/report.md). The real times are
known to different precisions (a second, a minute, ten minutes, only the
day), so each is shown, and compared with the twin's, only as finely as it
is known: a day-only real time is "same day" or a number of days off, not
"-240.0 min" from a noon nobody claimed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from services.cli.output import Cell, Column, Grid

__all__ = ["UNCONFIRMED_NOTE", "comparison_table", "difference", "real_time", "tolerance"]

TITLE = "key events: twin vs the real Chang'e-6"
UNCONFIRMED_NOTE = "? the real time is unconfirmed (U in the reference timeline)"
_MINUTE_S = 60.0
_HOURS_FROM_MIN = 600.0  # differences this many minutes or more read in hours
_TOLERANCE_STYLES: dict[bool | None, str] = {True: "green", False: "bold red", None: "dim"}
_COLUMNS = (Column("event"), Column("real UTC"), Column("twin UTC"),
            Column("twin - real", right=True), Column("within tolerance"))


def comparison_table(rows: Sequence[Mapping[str, Any]], title: str = TITLE) -> Grid:
    """The report's `comparison` rows as a table, with a note for unsure times."""
    cells = [_row(row) for row in rows]
    unsure = any(_unconfirmed(row) for row in rows)
    return Grid(_COLUMNS, cells, title=title, notes=(UNCONFIRMED_NOTE,) if unsure else ())


def _row(row: Mapping[str, Any]) -> list[str | Cell]:
    twin = row.get("twin_utc")
    mark = "?" if _unconfirmed(row) else ""
    return [str(row["event"]), real_time(str(row["real_utc"]), str(row["precision"])) + mark,
            _compact_utc(str(twin)) if twin else "never",
            difference(row), Cell(tolerance(row), _TOLERANCE_STYLES[row.get("within")])]


def _unconfirmed(row: Mapping[str, Any]) -> bool:
    return str(row["confidence"]).startswith("U")


def real_time(utc: str, precision: str) -> str:
    """The real time only as finely as it is known (the year is always 2024)."""
    if precision == "day":
        return utc[5:10]
    if precision == "ten_minutes":
        return f"{utc[5:10]} {utc[11:15]}x"
    if precision == "minute":
        return f"{utc[5:10]} {utc[11:16]}"
    return _compact_utc(utc)


def difference(row: Mapping[str, Any]) -> str:
    """Twin minus real, at the precision of the real time ("-" if never seen)."""
    twin, real, precision = row.get("twin_utc"), str(row["real_utc"]), str(row["precision"])
    if not twin:
        return "-"
    if precision == "day":
        days = (_utc(str(twin)).date() - _utc(real).date()).days
        return "same day" if days == 0 else f"{days:+d} day{'s' if abs(days) != 1 else ''}"
    if precision == "ten_minutes":
        # Known as "05:2x": from the middle of those ten minutes, give or take five.
        known = _utc(real)
        middle = known.replace(minute=known.minute // 10 * 10, second=0, microsecond=0)
        middle += timedelta(minutes=5)
        minutes = (_utc(str(twin)) - middle).total_seconds() / _MINUTE_S
        return f"{_signed_minutes(minutes, 0)} ±5"
    diff_min = float(row["diff_min"])
    if precision == "minute":
        return _signed_minutes(diff_min, 0)
    if abs(diff_min) < 1.0:
        return f"{round(diff_min * _MINUTE_S):+d} s"
    return _signed_minutes(diff_min, 1)


def _utc(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def _signed_minutes(minutes: float, decimals: int) -> str:
    if abs(minutes) >= _HOURS_FROM_MIN:
        return f"{minutes / 60.0:+,.1f} h"
    rounded = round(minutes, decimals) + 0.0  # adding 0.0 turns -0.0 into 0.0: no "-0 min"
    return f"{rounded:+.{decimals}f} min"


def tolerance(row: Mapping[str, Any]) -> str:
    """Whether the twin kept within the acceptance window, and the window."""
    window = row.get("tolerance_min")
    if window is None:
        return "no limit set"
    verdict = "yes" if row.get("within") else "NO"
    return f"{verdict} (±{float(window):g} min)"


def _compact_utc(utc: str) -> str:
    """2024-06-01T22:23:16.000Z -> 06-01 22:23:16 (the year is always 2024)."""
    return f"{utc[5:10]} {utc[11:19]}" if len(utc) >= 19 else utc
