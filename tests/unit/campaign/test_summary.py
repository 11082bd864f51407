"""`write_report` on a synthetic 50-case campaign built here, with known answers."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pyarrow as pa  # type: ignore[import-untyped, unused-ignore]
import pyarrow.parquet as pq  # type: ignore[import-untyped, unused-ignore]
import pytest
from scipy.stats import beta

from services.campaign.summary import CampaignReportError, write_report
from tests.authorities import (
    EARTH_MEAN_RADIUS_M,
    LANDING_SITE_HEIGHT_M,
    LANDING_SITE_LAT_DEG,
    LANDING_SITE_LON_DEG,
    R_MOON_M,
    SAMPLE_MASS_G,
    SIZIWANG_SEAT_LAT_DEG,
    SIZIWANG_SEAT_LON_DEG,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
N_CASES = 50
OK_CASES = 45  # cases 0-44 finish; 45-47 fail, 48-49 time out
SUCCESSES = 40  # cases 0-39 land in the zone; 40-44 land 80 km out
FAILED = {45: "lander: descent diverged", 46: "ascender: no docking", 47: "worker lost | retried"}
TIMEOUT_REASON = "case budget 600 s exceeded"
#: The touchdown pattern: +-A along 30 deg from north, +-B across, 11 times
#: each, plus one point at the mean, all about CENTRE (east, north) of the site.
A_M, B_M, THETA_DEG, CENTRE_M = 300.0, 100.0, 30.0, (50.0, -20.0)
SHA = "ab" * 32


def _destination(lat_deg: float, lon_deg: float, east_m: float, north_m: float,
                 radius_m: float) -> tuple[float, float]:
    """The point at great-circle distance hypot(e, n) and bearing atan2(e, n) on a
    sphere (the direct problem; Williams, Aviation Formulary)."""
    p1, l1 = math.radians(lat_deg), math.radians(lon_deg)
    th, d = math.atan2(east_m, north_m), math.hypot(east_m, north_m) / radius_m
    p2 = math.asin(math.sin(p1) * math.cos(d) + math.cos(p1) * math.sin(d) * math.cos(th))
    l2 = l1 + math.atan2(math.sin(th) * math.sin(d) * math.cos(p1),
                         math.cos(d) - math.sin(p1) * math.sin(p2))
    return math.degrees(p2), math.degrees(l2)


def _touchdown_offsets() -> list[tuple[float, float]]:
    t = math.radians(THETA_DEG)
    u, v = (math.sin(t), math.cos(t)), (math.cos(t), -math.sin(t))
    cross = [(A_M * u[0], A_M * u[1]), (-A_M * u[0], -A_M * u[1]),
             (B_M * v[0], B_M * v[1]), (-B_M * v[0], -B_M * v[1])]
    pts = cross * 11 + [(0.0, 0.0)]
    return [(CENTRE_M[0] + e, CENTRE_M[1] + n) for e, n in pts]


def _table() -> pa.Table:
    nan = math.nan
    site_r = R_MOON_M + LANDING_SITE_HEIGHT_M
    # The twin's aim point is not ours to know here: the landings are placed
    # about the banner seat (published), which is all this test needs.
    rows: dict[str, list[object]] = {k: [] for k in (
        "case", "status", "reason", "success", "digest", "end_t_s", "steps",
        "p.lander.engine.thrust_scale", "touchdown_lat_deg", "touchdown_lon_deg",
        "touchdown_miss_m", "touchdown_speed_m_s", "lander_propellant_kg", "docking_t_s",
        "orbiter_propellant_kg", "entry_peak_g", "entry_peak_heat_flux_w_m2",
        "landing_lat_deg", "landing_lon_deg", "landing_miss_m", "landing_in_zone",
        "sample_mass_g")}
    offsets = _touchdown_offsets()
    for case in range(N_CASES):
        ok = case < OK_CASES
        status = "ok" if ok else ("failed" if case in FAILED else "timeout")
        in_zone = case < SUCCESSES
        t_lat, t_lon = (_destination(LANDING_SITE_LAT_DEG, LANDING_SITE_LON_DEG, *offsets[case],
                                     site_r) if ok else (nan, nan))
        l_e, l_n = (1_000.0 * (case % 7 - 3), 1_500.0 * (case % 5 - 2)) if in_zone else (
            80_000.0, 0.0)
        l_lat, l_lon = (_destination(SIZIWANG_SEAT_LAT_DEG, SIZIWANG_SEAT_LON_DEG, l_e, l_n,
                                     EARTH_MEAN_RADIUS_M) if ok else (nan, nan))
        values: dict[str, object] = {
            "case": case, "status": status, "success": ok and in_zone,
            "reason": "" if ok else FAILED.get(case, TIMEOUT_REASON), "digest": f"{case:064x}",
            "end_t_s": 4.57e6 if ok else 1.0e6, "steps": 9_000 + case,
            "p.lander.engine.thrust_scale": 1.0 + 0.001 * (case - 25),
            "touchdown_lat_deg": t_lat, "touchdown_lon_deg": t_lon,
            "touchdown_miss_m": math.hypot(*offsets[case]) if ok else nan,
            "touchdown_speed_m_s": 1.5 if ok else nan,
            "lander_propellant_kg": 100.0 + case if ok else nan,
            "docking_t_s": 2.96e6 + case if ok else nan,
            "orbiter_propellant_kg": 300.0 - case if ok else nan,
            "entry_peak_g": 6.0 + 0.01 * case if ok else nan,
            "entry_peak_heat_flux_w_m2": 2.0e6 if ok else nan,
            "landing_lat_deg": l_lat, "landing_lon_deg": l_lon,
            "landing_miss_m": math.hypot(l_e, l_n) if ok else nan,
            "landing_in_zone": in_zone if ok else None,
            "sample_mass_g": SAMPLE_MASS_G if ok else nan,
        }
        for key, value in values.items():
            rows[key].append(value)
    types = {"case": pa.int64(), "steps": pa.int64(), "status": pa.string(),
             "reason": pa.string(), "digest": pa.string(), "success": pa.bool_(),
             "landing_in_zone": pa.bool_()}
    cols = {k: pa.array(v, type=types.get(k, pa.float64()),
                        from_pandas=k not in types)  # NaN as null, as the runner writes
            for k, v in rows.items()}
    return pa.table(cols)


def _campaign(directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    pq.write_table(_table(), directory / "cases.parquet")
    manifest = {"name": "synthetic-50", "campaign_sha256": SHA, "version": "0.1.0",
                "root_seed": 20240503, "cases": N_CASES, "plan": "nominal",
                "dispersions": {"lander.engine.thrust_scale": {"dist": "normal", "sigma": 1,
                                                                "unit": "%"}}}
    (directory / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    return directory


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Path], str]:
    directory = _campaign(tmp_path_factory.mktemp("campaign"))
    paths = write_report(directory)
    return directory, paths, paths[0].read_text(encoding="utf-8")


def _pct(x: float) -> str:
    return f"{100.0 * x:.1f} %"


def test_the_report_writes_the_summary_and_three_pngs(
        report: tuple[Path, list[Path], str]) -> None:
    directory, paths, _ = report
    out = directory / "report"
    assert paths == [out / "summary.md", out / "touchdown.png", out / "landing.png",
                     out / "margins.png"]
    for png in paths[1:]:
        assert png.read_bytes()[:8] == PNG_MAGIC
    text = paths[0].read_text(encoding="utf-8")
    for png in paths[1:]:
        assert f"]({png.name})" in text


def test_the_summary_names_the_success_rate_and_its_exact_interval(
        report: tuple[Path, list[Path], str]) -> None:
    _, _, text = report
    # Clopper-Pearson as beta quantiles: low = B(alpha/2; k, n-k+1),
    # high = B(1-alpha/2; k+1, n-k); one-sided low = B(alpha; k, n-k+1).
    k, n = SUCCESSES, N_CASES
    low, high = beta.ppf(0.025, k, n - k + 1), beta.ppf(0.975, k + 1, n - k)
    one_sided = beta.ppf(0.05, k, n - k + 1)
    assert "**Success rate 80.0 %** (40 / 50 cases)" in text
    assert f"[{_pct(low)}, {_pct(high)}]" in text
    assert f"one-sided lower bound {_pct(one_sided)}" in text
    assert "| cases | 50 (ok 45, failed 3, timeout 2) |" in text
    assert "synthetic-50" in text and SHA in text


def test_the_percentile_table_holds_the_hand_computed_values(
        report: tuple[Path, list[Path], str]) -> None:
    _, _, text = report
    # lander propellant 100 + case over the 45 ok cases: 100 ... 144.
    # Hyndman & Fan 7, h = 44 p: P50 = 122, P90 = 100 + 39.6 = 139.6, P99 = 143.56.
    assert "| lander propellant left at touchdown | kg | 45 | 122.0 | 139.6 | 143.6 | " \
           "100.0 | 144.0 | low |" in text
    # failed runs carry no outcome; an empty column would read '0' for n
    assert "| sample mass returned | g | 45 | 1,935.3 | 1,935.3 | 1,935.3 |" in text


def test_the_touchdown_ellipse_is_the_patterns(report: tuple[Path, list[Path], str]) -> None:
    _, _, text = report
    # 11 crosses (+-A, +-B) and one point at the centre: 45 points; the
    # covariance is 22 A^2 / 44 = A^2 / 2 along 30 deg, B^2 / 2 across, so the
    # 3-sigma semi-axes are 3 A / sqrt 2 = 636.4 m and 3 B / sqrt 2 = 212.1 m.
    row = (f"| lunar touchdown [m] | 45 | {CENTRE_M[0]:.1f} | {CENTRE_M[1]:.1f} | "
           f"{math.hypot(*CENTRE_M):.1f} | {3 * A_M / math.sqrt(2):.1f} | "
           f"{3 * B_M / math.sqrt(2):.1f} | {THETA_DEG:.1f} |")
    assert row in text
    assert "98.9 %" in text
    assert "| Earth landing [km] | 45 |" in text


def test_failures_are_listed_by_case_with_their_reason(
        report: tuple[Path, list[Path], str]) -> None:
    _, _, text = report
    assert "| 45 | failed | lander: descent diverged |" in text
    assert "| 47 | failed | worker lost \\| retried |" in text  # a '|' cannot break the table
    assert f"| 48 | timeout | {TIMEOUT_REASON} |" in text
    for case in range(SUCCESSES, OK_CASES):
        assert f"| {case} | landed outside the zone" in text
    assert "| 39 |" not in text


def test_the_same_table_gives_the_same_bytes(report: tuple[Path, list[Path], str],
                                             tmp_path: Path) -> None:
    directory, paths, _ = report
    again = tmp_path / "again"
    again.mkdir()
    for name in ("cases.parquet", "manifest.json"):
        shutil.copy(directory / name, again / name)
    for first, second in zip(paths, write_report(again), strict=True):
        assert first.read_bytes() == second.read_bytes(), first.name


def test_a_directory_without_a_campaign_is_refused_saying_what_to_give(tmp_path: Path) -> None:
    with pytest.raises(CampaignReportError, match="twin campaign run"):
        write_report(tmp_path)


def test_a_table_without_an_outcome_column_is_refused_naming_it(tmp_path: Path) -> None:
    directory = _campaign(tmp_path / "c")
    table = pq.read_table(directory / "cases.parquet").drop_columns(["entry_peak_g"])
    pq.write_table(table, directory / "cases.parquet")
    with pytest.raises(CampaignReportError, match="entry_peak_g"):
        write_report(directory)

