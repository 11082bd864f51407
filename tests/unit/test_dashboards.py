"""The generated Grafana dashboards and the checked-in Prometheus config.

Structure only: that every PromQL expression returns data from a real run is
tests/integration/test_observability.py's job.
"""

from __future__ import annotations

import importlib.util
import json
import re
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

from services.kernel.config import VEHICLES
from services.kernel.promserver import default_targets, render_config
from tests.promql import series_names

REPO = Path(__file__).resolve().parents[2]
DASHBOARDS_DIR = REPO / "deploy" / "grafana" / "dashboards"
PROVISIONING = REPO / "deploy" / "grafana" / "provisioning"
PROM_DIR = REPO / "deploy" / "prometheus"

#: Grafana unit ids the dashboards may use (grafana-data valueFormats
#: categories); "suffix:<text>" is Grafana's custom-unit syntax.
GRAFANA_UNITS = frozenset({
    "none", "short", "percentunit", "s", "dtdhms", "ops", "mps", "cps", "cpm", "reqps",
    "bytes", "massg", "lengthm", "velocityms", "forceN", "accMS2", "watt", "celsius",
})
#: Names a query may use besides the catalog: Prometheus's own series and
#: prometheus-client's process collector.
BUILTIN_SERIES = frozenset({
    "up", "ALERTS", "process_cpu_seconds_total", "process_resident_memory_bytes",
})
def _load_generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gen_dashboards", REPO / "scripts" /
                                                  "gen_dashboards.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


GEN = _load_generator()


def _dashboards() -> list[dict[str, Any]]:
    return [json.loads(p.read_text()) for p in sorted(DASHBOARDS_DIR.glob("*.json"))]


def _catalog() -> set[str]:
    """Series names of docs/contract.md's metric table, as Prometheus stores them."""
    text = (REPO / "docs" / "contract.md").read_text()
    names: set[str] = set()
    for name, kind in re.findall(r"^\| `(twin_[a-z_]+)` \| (gauge|counter|histogram) \|",
                                 text, flags=re.M):
        names.add(name)  # counters are listed with their _total already
        if kind == "histogram":
            names.update({f"{name}_bucket", f"{name}_sum", f"{name}_count"})
    return names


def _recording_rules() -> set[str]:
    groups = yaml.safe_load((PROM_DIR / "rules" / "twin-recording.yml").read_text())["groups"]
    return {rule["record"] for group in groups for rule in group["rules"]}


def _queried(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    """The panels that query (a row header only groups the panels below it)."""
    return [p for p in dashboard["panels"] if p["type"] != "row"]


def _all_exprs(dashboard: dict[str, Any]) -> list[str]:
    exprs = [t["expr"] for p in _queried(dashboard) for t in p["targets"]]
    return exprs + [a["expr"] for a in dashboard["annotations"]["list"] if "expr" in a]


def test_checked_in_json_is_what_the_generator_writes() -> None:
    expected = GEN.rendered_files()
    on_disk = {p.name: p.read_text() for p in DASHBOARDS_DIR.glob("*.json")}
    assert sorted(on_disk) == sorted(expected), "run `task observe:dashboards`"
    for name, text in expected.items():
        assert on_disk[name] == text, f"{name} is stale: run `task observe:dashboards`"


def test_the_issue_asks_for_these_dashboards() -> None:
    uids = {d["uid"] for d in _dashboards()}
    vehicle_uids = {f"twin-vehicle-{v}" for v in VEHICLES}
    assert uids == {"twin-overview", "twin-comms", "twin-platform"} | vehicle_uids


def test_uids_and_titles_are_unique_and_short() -> None:
    dashboards = _dashboards()
    uids = [d["uid"] for d in dashboards]
    titles = [d["title"] for d in dashboards]
    assert len(set(uids)) == len(uids)
    assert len(set(titles)) == len(titles)
    assert all(re.fullmatch(r"[a-z0-9-]{1,40}", uid) for uid in uids)


@pytest.mark.parametrize("dashboard", _dashboards(), ids=lambda d: d["uid"])
def test_every_panel_has_a_query_a_unit_and_the_prometheus_datasource(
    dashboard: dict[str, Any],
) -> None:
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(set(ids)) == len(ids)
    for panel in _queried(dashboard):
        where = f"{dashboard['uid']} / {panel['title']}"
        assert panel["datasource"] == {"type": "prometheus", "uid": "prometheus"}, where
        assert panel["targets"], f"{where} has no query"
        ref_ids = [t["refId"] for t in panel["targets"]]
        assert len(set(ref_ids)) == len(ref_ids), where
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == "prometheus", where
            assert target["expr"].strip(), where
        unit = panel["fieldConfig"]["defaults"].get("unit", "")
        assert unit in GRAFANA_UNITS or unit.startswith("suffix:"), f"{where}: unit {unit!r}"


@pytest.mark.parametrize("dashboard", _dashboards(), ids=lambda d: d["uid"])
def test_every_query_is_scoped_to_the_mission_variable(dashboard: dict[str, Any]) -> None:
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["mission"]["datasource"]["uid"] == "prometheus"
    for expr in _all_exprs(dashboard):
        assert 'mission="$mission"' in expr, expr


@pytest.mark.parametrize("dashboard", _dashboards(), ids=lambda d: d["uid"])
def test_every_series_is_in_the_catalog_or_a_recording_rule(dashboard: dict[str, Any]) -> None:
    known = _catalog() | _recording_rules() | BUILTIN_SERIES
    for expr in _all_exprs(dashboard):
        unknown = series_names(expr) - known
        assert not unknown, f"{dashboard['uid']}: {sorted(unknown)} in {expr}"


def test_series_name_extraction_sees_through_promql() -> None:
    # The catalog check above is only as good as this parser.
    expr = ('histogram_quantile(0.99, sum by (peer, le) (rate(twin_x_bucket{mission="$m", '
            'a=~"b|c"}[$__rate_interval]))) or vector(0) * on (mission) group_left rec:y:z')
    assert series_names(expr) == {"twin_x_bucket", "rec:y:z"}
    expr = ('max by (mission, link) (twin_link_up) == 0 and on (mission, link) '
            'label_replace(x:y:z{phase=~"a|b"} == 1, "link", "$1", "service", "(.*)")')
    assert series_names(expr) == {"twin_link_up", "x:y:z"}


@pytest.mark.parametrize("dashboard", _dashboards(), ids=lambda d: d["uid"])
def test_panels_fit_the_grid_without_overlapping(dashboard: dict[str, Any]) -> None:
    taken: set[tuple[int, int]] = set()
    for panel in dashboard["panels"]:
        g = panel["gridPos"]
        assert g["x"] >= 0 and g["x"] + g["w"] <= 24, panel["title"]
        cells = {(x, y) for x in range(g["x"], g["x"] + g["w"])
                 for y in range(g["y"], g["y"] + g["h"])}
        assert not cells & taken, f"{panel['title']} overlaps another panel"
        taken |= cells


def test_rows_are_full_width_headers_without_queries() -> None:
    rows = [(d["uid"], p) for d in _dashboards() for p in d["panels"] if p["type"] == "row"]
    assert rows, "no dashboard has a row"
    for uid, row in rows:
        where = f"{uid} / {row['title']}"
        assert row["title"] and not row.get("targets"), where
        assert row["gridPos"] == {**row["gridPos"], "x": 0, "w": 24, "h": 1}, where
        assert row["collapsed"] is False and row["panels"] == [], where


def test_the_platform_recovery_row_shows_every_recovery_metric() -> None:
    panels = json.loads((DASHBOARDS_DIR / "twin-platform.json").read_text())["panels"]
    start = [p["title"] for p in panels].index("Recovery") + 1
    end = next((i for i in range(start, len(panels)) if panels[i]["type"] == "row"),
               len(panels))
    read = set().union(*(series_names(t["expr"]) for p in panels[start:end]
                         for t in p["targets"]))
    assert read >= {
        "twin_rollbacks_total", "twin_restores_total", "twin_snapshot_commits_total",
        "twin_snapshot_bytes", "twin_snapshot_duration_seconds_bucket",
        "twin_bus_messages_missing_total", "twin_bus_messages_dropped_total"}


def test_mission_overview_shows_events_as_annotations() -> None:
    overview = json.loads((DASHBOARDS_DIR / "twin-overview.json").read_text())
    exprs = [a.get("expr", "") for a in overview["annotations"]["list"]]
    assert any("twin_mission_events_total" in e for e in exprs)


def test_provisioning_points_at_the_prometheus_uid_and_the_dashboards() -> None:
    datasources = yaml.safe_load((PROVISIONING / "datasources" / "twin.yml").read_text())
    assert [d["uid"] for d in datasources["datasources"]] == ["prometheus"]
    providers = yaml.safe_load((PROVISIONING / "dashboards" / "twin.yml").read_text())
    assert providers["providers"][0]["type"] == "file"


def test_checked_in_prometheus_yml_matches_render_config() -> None:
    on_disk = yaml.safe_load((PROM_DIR / "prometheus.yml").read_text())
    rendered = render_config(default_targets(), mission="ce6",
                             rule_files=["rules/twin-recording.yml", "rules/twin-alerts.yml"])
    assert on_disk == rendered
    services = [c["labels"]["service"] for c in on_disk["scrape_configs"][0]["static_configs"]]
    assert services == ["ground", "orbiter", "lander", "ascender", "reentry", "relay"]
