"""`twin campaign report DIR`: the statistics, plots and Markdown summary of a campaign.

:func:`write_report` reads ``DIR/cases.parquet`` (one row per case) and
``DIR/manifest.json``, and writes ``DIR/report/summary.md`` with the PNGs
beside it. The numbers come from `services.campaign.stats`, the pictures from
`services.campaign.plots`; this module reads, reduces and writes. Nothing in
the output depends on the wall clock or the machine, so a campaign's report
is the same bytes wherever it is made.

Conventions, stated in the summary itself:

* success rate: every case counts in the denominator; a run that failed or
  timed out did not show the mission succeeding (leaving those out would
  flatter the rate with exactly the cases that went wrong);
* percentiles and the ellipses: over the ``ok`` runs, each quantity over the
  runs where its event happened (NaN is "did not happen");
* the lunar touchdown plane is east/north metres about the LROC site on the
  sphere through it (R_MOON_M + its height), where the lander's own miss is
  measured; the Earth plane is east/north about the returner's aim point on
  the sphere of R_EARTH_EQ_M, the radius the twin's landing miss uses
  (`services.dynamics.entry`): within 0.25 % of the WGS 84 radii of curvature
  at 42 N (meridian 6,364 km, prime vertical 6,388 km), ~110 m across the
  50 km zone.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa  # type: ignore[import-untyped, unused-ignore]
import pyarrow.parquet as pq  # type: ignore[import-untyped, unused-ignore]
from numpy.typing import NDArray

from services.campaign import plots
from services.campaign.spec import CampaignError
from services.campaign.stats import (
    ELLIPSE_K,
    PERCENTILE_METHOD,
    PERCENTILES,
    Ellipse,
    Spread,
    StatsError,
    SuccessRate,
    dispersion_ellipse,
    east_north_m,
    gaussian_share,
    spread,
    success_rate,
)
from services.dynamics.change6 import SIZIWANG_LAT_DEG, SIZIWANG_LON_DEG
from services.dynamics.constants import (
    LANDING_SITE_HEIGHT_M,
    LANDING_SITE_LAT_DEG,
    LANDING_SITE_LON_DEG,
    R_EARTH_EQ_M,
    R_MOON_M,
)
from services.reentry.vehicle import ZONE_RADIUS_M

__all__ = ["OUTCOMES", "CampaignReportError", "Outcome", "write_report"]

Vec = NDArray[np.float64]
_KM = 1000.0
REPORT_DIR = "report"
SUMMARY_NAME = "summary.md"
TOUCHDOWN_PNG = "touchdown.png"
LANDING_PNG = "landing.png"
MARGINS_PNG = "margins.png"
#: The sphere the lunar touchdown plane lies on: the one through the site.
MOON_SITE_RADIUS_M = R_MOON_M + LANDING_SITE_HEIGHT_M
STATUS_ORDER = ("ok", "failed", "timeout")
PARAMETER_PREFIX = "p."


class CampaignReportError(CampaignError):
    """A campaign directory the report cannot read; the message says what to fix
    (a CampaignError, so `twin campaign report` prints it and exits 2)."""


@dataclass(frozen=True)
class Outcome:
    """A column of the results table summarised by percentiles.

    ``worse`` says which tail is the margin ("high": the P99 and max are the
    ones to watch, "low": the min is), ``fmt`` how many digits mean something."""

    column: str
    label: str
    unit: str
    worse: str
    fmt: str
    histogram: bool = True


OUTCOMES = (
    Outcome("touchdown_miss_m", "lunar touchdown miss from the LROC site", "m", "high", ",.1f"),
    Outcome("touchdown_speed_m_s", "lunar touchdown speed", "m/s", "high", ".3f"),
    Outcome("lander_propellant_kg", "lander propellant left at touchdown", "kg", "low", ",.1f"),
    Outcome("docking_t_s", "docking time (mission seconds)", "s", "-", ",.0f"),
    Outcome("orbiter_propellant_kg", "orbiter propellant left after TEI-2", "kg", "low", ",.1f"),
    Outcome("entry_peak_g", "entry peak deceleration", "g", "high", ".2f"),
    Outcome("entry_peak_heat_flux_w_m2", "entry peak heat flux", "W/m^2", "high", ",.0f"),
    Outcome("landing_miss_m", "Earth landing miss from the aim point", "m", "high", ",.0f"),
    Outcome("sample_mass_g", "sample mass returned", "g", "low", ",.1f"),
    Outcome("end_t_s", "run end (mission seconds)", "s", "-", ",.0f", histogram=False),
    Outcome("steps", "steps run", "1", "-", ",.0f", histogram=False),
)
_POSITIONS = ("touchdown_lat_deg", "touchdown_lon_deg", "landing_lat_deg", "landing_lon_deg")
_REQUIRED = ("case", "status", "reason", "success", "landing_in_zone",
             *(o.column for o in OUTCOMES), *_POSITIONS)
_MANIFEST_REQUIRED = ("name", "campaign_sha256", "cases")


# --- reading ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Cases:
    """The results table as arrays: one entry per case, sorted by case number."""

    case: NDArray[np.int64]
    status: list[str]
    reason: list[str]
    success: NDArray[np.bool_]
    in_zone: NDArray[np.bool_]
    numbers: dict[str, Vec]  # every numeric column, null as NaN

    def __len__(self) -> int:
        return len(self.status)

    @property
    def ok(self) -> NDArray[np.bool_]:
        return np.array([s == "ok" for s in self.status], dtype=bool)


def _flags(values: list[Any]) -> NDArray[np.bool_]:
    """A bool column with null read as False (an outcome not reached is not met)."""
    return np.array([bool(v) if v is not None else False for v in values], dtype=bool)


def read_cases(path: Path) -> Cases:
    """``cases.parquet`` as :class:`Cases`; raises naming what is missing."""
    if not path.is_file():
        raise CampaignReportError(f"no {path}: give the directory `twin campaign run` wrote "
                                  "(it holds cases.parquet and manifest.json)")
    try:
        table = pq.read_table(path)
    except (OSError, ValueError) as exc:
        raise CampaignReportError(f"{path} is not a readable Parquet table: {exc}") from exc
    missing = [c for c in _REQUIRED if c not in table.column_names]
    if missing:
        raise CampaignReportError(f"{path} lacks the column(s) {', '.join(missing)}; rerun the "
                                  "campaign with this version of the twin")
    numeric = {f.name for f in table.schema
               if pa.types.is_integer(f.type) or pa.types.is_floating(f.type)}
    wrong = [c for c in (*(o.column for o in OUTCOMES), *_POSITIONS) if c not in numeric]
    if wrong:
        raise CampaignReportError(f"{path}: the column(s) {', '.join(wrong)} must be numbers")
    raw = {name: table.column(name).to_pylist() for name in table.column_names}
    order = sorted(range(table.num_rows), key=lambda i: int(raw["case"][i]))
    numbers = {name: np.array([math.nan if raw[name][i] is None else float(raw[name][i])
                               for i in order], dtype=np.float64)
               for name in sorted(numeric - {"case"})}
    return Cases(
        case=np.array([int(raw["case"][i]) for i in order], dtype=np.int64),
        status=[str(raw["status"][i] or "") for i in order],
        reason=[str(raw["reason"][i] or "") for i in order],
        success=_flags([raw["success"][i] for i in order]),
        in_zone=_flags([raw["landing_in_zone"][i] for i in order]),
        numbers=numbers,
    )


def read_manifest(path: Path) -> dict[str, Any]:
    """``manifest.json`` as a dict with at least name, campaign_sha256 and cases."""
    if not path.is_file():
        raise CampaignReportError(f"no {path}: give the directory `twin campaign run` wrote "
                                  "(it holds cases.parquet and manifest.json)")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise CampaignReportError(f"{path} is not readable JSON: {exc}") from exc
    if not isinstance(manifest, dict):
        raise CampaignReportError(f"{path} must hold a JSON object, not {type(manifest).__name__}")
    missing = [k for k in _MANIFEST_REQUIRED if k not in manifest]
    if missing:
        raise CampaignReportError(f"{path} lacks {', '.join(missing)}; rerun the campaign with "
                                  "this version of the twin")
    return manifest


# --- reducing --------------------------------------------------------------------------


@dataclass(frozen=True)
class Reduced:
    """Everything the summary and the plots show, computed once."""

    rate: SuccessRate | None
    statuses: list[tuple[str, int]]
    spreads: dict[str, Spread]
    touchdown_en_m: tuple[Vec, Vec]
    landing_en_m: tuple[Vec, Vec]
    touchdown_ellipse: Ellipse | None
    landing_ellipse: Ellipse | None


def _statuses(cases: Cases) -> list[tuple[str, int]]:
    counts = Counter(cases.status)
    known = [(s, counts[s]) for s in STATUS_ORDER]
    return known + sorted((s, n) for s, n in counts.items() if s not in STATUS_ORDER)


def _ellipse(east: Vec, north: Vec) -> Ellipse | None:
    try:
        return dispersion_ellipse(east, north)
    except StatsError:  # too few points: the summary says how many there were
        return None


def reduce_cases(cases: Cases) -> Reduced:
    ok = cases.ok
    rate = success_rate(int(cases.success.sum()), len(cases)) if len(cases) else None
    spreads = {o.column: spread(cases.numbers[o.column][ok]) for o in OUTCOMES}
    touchdown = east_north_m(cases.numbers["touchdown_lat_deg"][ok],
                             cases.numbers["touchdown_lon_deg"][ok],
                             LANDING_SITE_LAT_DEG, LANDING_SITE_LON_DEG, MOON_SITE_RADIUS_M)
    landing = east_north_m(cases.numbers["landing_lat_deg"][ok],
                           cases.numbers["landing_lon_deg"][ok],
                           SIZIWANG_LAT_DEG, SIZIWANG_LON_DEG, R_EARTH_EQ_M)
    return Reduced(rate, _statuses(cases), spreads, touchdown, landing, _ellipse(*touchdown),
                   _ellipse(*landing))


# --- writing the summary ---------------------------------------------------------------


def _num(value: float, fmt: str) -> str:
    return "–" if not math.isfinite(value) else format(value, fmt)


def _cell(text: str) -> str:
    """Text safe inside a Markdown table cell."""
    return text.replace("|", "\\|").replace("\n", " ").strip() or "–"


def _pct(x: float) -> str:
    return f"{100.0 * x:.1f} %"


def _head(manifest: dict[str, Any], cases: Cases, red: Reduced) -> list[str]:
    by_status = ", ".join(f"{s} {n}" for s, n in red.statuses)
    lines = [f"# Campaign `{manifest['name']}`: Monte Carlo summary", "",
             "| | |", "|---|---|",
             f"| campaign | `{manifest['name']}` |",
             f"| campaign_sha256 | `{manifest['campaign_sha256']}` |"]
    for key in ("version", "plan", "root_seed"):
        if key in manifest:
            lines.append(f"| {key} | `{manifest[key]}` |")
    lines.append(f"| cases | {len(cases)} ({by_status}) |")
    if int(manifest["cases"]) != len(cases):
        lines.append(f"| note | the manifest asks for {manifest['cases']} cases; the table holds "
                     f"{len(cases)} |")
    return [*lines, ""]


def _success(red: Reduced) -> list[str]:
    lines = ["## Success", ""]
    rate = red.rate
    if rate is None:
        return [*lines, "No cases: no success rate.", ""]
    conf = f"{100 * rate.confidence:g} %"
    return [*lines,
            f"**Success rate {_pct(rate.rate)}** ({rate.successes} / {rate.cases} cases); "
            f"{conf} two-sided Clopper-Pearson interval [{_pct(rate.low)}, {_pct(rate.high)}], "
            f"{conf} one-sided lower bound {_pct(rate.lower_one_sided)}.", "",
            "Success: the sample on Earth inside the landing zone "
            f"({ZONE_RADIUS_M / _KM:.0f} km of the aim point). Every case counts in the "
            "denominator: a run that failed or timed out did not show the mission succeeding. "
            "The interval is the exact (Clopper-Pearson) one, which never covers less than "
            "its confidence.", "",
            "| status | cases |", "|---|---:|",
            *(f"| {s} | {n} |" for s, n in red.statuses), ""]


def _dispersions(manifest: dict[str, Any], cases: Cases) -> list[str]:
    written = manifest.get("dispersions") or {}
    paths = sorted({*written, *(c[len(PARAMETER_PREFIX):] for c in cases.numbers
                                if c.startswith(PARAMETER_PREFIX))})
    if not paths:
        return []
    lines = ["## Dispersed parameters", "",
             "Values applied, over all cases (the distribution as the campaign file wrote it).", "",
             "| parameter | distribution | min | P50 | max |", "|---|---|---:|---:|---:|"]
    for path in paths:
        dist = json.dumps(written.get(path, "–"), sort_keys=True, separators=(", ", ": "))
        s = spread(cases.numbers.get(PARAMETER_PREFIX + path, np.array([])))
        lines.append(f"| `{path}` | `{_cell(dist)}` | {_num(s.minimum, '.6g')} | "
                     f"{_num(s.at(50.0), '.6g')} | {_num(s.maximum, '.6g')} |")
    return [*lines, ""]


def _percentiles(red: Reduced) -> list[str]:
    qs = " | ".join(f"P{q:g}" for q in PERCENTILES)
    lines = ["## Margins and outcomes", "",
             f"Over the ok runs where the event happened (n). Percentiles: numpy, "
             f'method="{PERCENTILE_METHOD}" (Hyndman & Fan 1996 definition 7, R\'s default and '
             "Excel's PERCENTILE.INC). 'worse' names the tail that is the margin.", "",
             f"| quantity | unit | n | {qs} | min | max | worse |",
             "|---|---|---:|" + "---:|" * (len(PERCENTILES) + 2) + "---|"]
    for o in OUTCOMES:
        s = red.spreads[o.column]
        values = " | ".join(_num(v, o.fmt) for _, v in s.percentiles)
        lines.append(f"| {o.label} | {o.unit} | {s.count} | {values} | "
                     f"{_num(s.minimum, o.fmt)} | {_num(s.maximum, o.fmt)} | {o.worse} |")
    return [*lines, ""]


def _ellipse_row(what: str, ellipse: Ellipse | None, points: int, scale: float,
                 unit: str) -> str:
    if ellipse is None:
        return f"| {what} | {points} | too few points for an ellipse | | | | | |"
    f = ".3f" if unit == "km" else ".1f"
    return (f"| {what} | {ellipse.count} | {ellipse.centre_east / scale:{f}} | "
            f"{ellipse.centre_north / scale:{f}} | {ellipse.centre_offset / scale:{f}} | "
            f"{ellipse.semi_major / scale:{f}} | {ellipse.semi_minor / scale:{f}} | "
            f"{ellipse.orientation_deg:.1f} |")


def _ellipses(red: Reduced) -> list[str]:
    k = ELLIPSE_K
    share = 100.0 * gaussian_share(k)
    touch_n = int(np.isfinite(red.touchdown_en_m[0]).sum())
    land_n = int(np.isfinite(red.landing_en_m[0]).sum())
    return ["## Dispersion ellipses", "",
            f"{k:g}-sigma ellipses of the ok runs' points: k = {k:g} standard deviations along "
            "the principal axes of the sample covariance (eigen-decomposition, divisor n - 1), "
            f"which hold 1 - exp(-k^2/2) = {share:.1f} % of a 2-D Gaussian. Centre: the mean "
            "point, as its offset east and north of the reference; orientation: the major "
            "axis, degrees from north towards east, 0-180. Planes: azimuthal equidistant "
            f"(distance and bearing kept), on the Moon about the LROC site "
            f"({LANDING_SITE_LAT_DEG:.4f}, {LANDING_SITE_LON_DEG:.4f}) in metres, on Earth "
            f"about the returner's aim point ({SIZIWANG_LAT_DEG:.2f} N, "
            f"{SIZIWANG_LON_DEG:.2f} E) in km.", "",
            "| points | n | centre east | centre north | centre offset | semi-major | "
            "semi-minor | orientation [deg] |",
            "|---|---:|---:|---:|---:|---:|---:|---:|",
            _ellipse_row("lunar touchdown [m]", red.touchdown_ellipse, touch_n, 1.0, "m"),
            _ellipse_row("Earth landing [km]", red.landing_ellipse, land_n, _KM, "km"), ""]


def _plots() -> list[str]:
    return ["## Plots", "",
            f"- [Lunar touchdown dispersion]({TOUCHDOWN_PNG})",
            f"- [Earth landing dispersion]({LANDING_PNG})",
            f"- [Margin histograms]({MARGINS_PNG})", "",
            f"![Lunar touchdown dispersion]({TOUCHDOWN_PNG})", "",
            f"![Earth landing dispersion]({LANDING_PNG})", "",
            f"![Margin histograms]({MARGINS_PNG})", ""]


def _why_unsuccessful(cases: Cases, i: int) -> str:
    miss = cases.numbers["landing_miss_m"][i]
    if not math.isfinite(miss):
        return "no Earth landing"
    if not cases.in_zone[i]:
        return f"landed outside the zone ({miss / _KM:,.1f} km from the aim point)"
    return f"landed in the zone ({miss / _KM:,.1f} km) but a success criterion was not met"


def _failures(cases: Cases) -> list[str]:
    lines = ["## Failures", ""]
    broken = [i for i in range(len(cases)) if cases.status[i] != "ok"]
    if broken:
        lines += ["Runs that did not finish:", "", "| case | status | reason |", "|---:|---|---|",
                  *(f"| {cases.case[i]} | {cases.status[i]} | {_cell(cases.reason[i])} |"
                    for i in broken), ""]
    missed = [i for i in range(len(cases)) if cases.status[i] == "ok" and not cases.success[i]]
    if missed:
        lines += ["Runs that finished without meeting the success criteria:", "",
                  "| case | why |", "|---:|---|",
                  *(f"| {cases.case[i]} | {_why_unsuccessful(cases, i)} |" for i in missed), ""]
    if not broken and not missed:
        lines += ["None: every case finished and succeeded.", ""]
    return lines


def render_summary(manifest: dict[str, Any], cases: Cases, red: Reduced) -> str:
    """The Markdown summary."""
    parts = [_head(manifest, cases, red), _success(red), _percentiles(red), _ellipses(red),
             _dispersions(manifest, cases), _plots(), _failures(cases)]
    return "\n".join(line for part in parts for line in part).rstrip("\n") + "\n"


# --- the entry point -------------------------------------------------------------------


def _margins(cases: Cases) -> list[plots.Margin]:
    ok = cases.ok
    out = []
    for o in OUTCOMES:
        if o.histogram:
            values = cases.numbers[o.column][ok]
            values = values[np.isfinite(values)]
            out.append(plots.Margin(o.label, o.unit, values, spread(values)))
    return out


def write_report(directory: Path) -> list[Path]:
    """Read ``directory``'s cases.parquet and manifest.json, write
    ``directory/report/summary.md`` and its PNGs; return the paths written
    (the summary first)."""
    directory = Path(directory)
    manifest = read_manifest(directory / "manifest.json")
    cases = read_cases(directory / "cases.parquet")
    red = reduce_cases(cases)
    out = directory / REPORT_DIR
    out.mkdir(parents=True, exist_ok=True)
    touchdown, landing, margins = out / TOUCHDOWN_PNG, out / LANDING_PNG, out / MARGINS_PNG
    plots.plot_touchdown(*red.touchdown_en_m, red.touchdown_ellipse, touchdown)
    ok = cases.ok
    plots.plot_landing(cases.numbers["landing_lat_deg"][ok], cases.numbers["landing_lon_deg"][ok],
                       red.landing_ellipse, (SIZIWANG_LAT_DEG, SIZIWANG_LON_DEG), ZONE_RADIUS_M,
                       R_EARTH_EQ_M, landing)
    plots.plot_margins(_margins(cases), margins)
    summary = out / SUMMARY_NAME
    summary.write_text(render_summary(manifest, cases, red), encoding="utf-8")
    return [summary, touchdown, landing, margins]
