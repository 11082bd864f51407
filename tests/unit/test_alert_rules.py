"""Static checks of the alerting rules that promtool's unit tests cannot make.

promtool evaluates every group at the same instants, so it never shows what a
real Prometheus does: each group is evaluated at its own offset, and a
recorded series read by another group may be one scrape older or newer than
the raw series beside it. An alert that fires at once must not join such a
pair (the nominal mission once raised TwinLinkLostInCriticalPhase from a link
gap of one scrape and the ascent of the next).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.promql import series_names

RULES = Path(__file__).resolve().parents[2] / "deploy" / "prometheus" / "rules"


def _groups() -> list[dict[str, Any]]:
    groups: list[dict[str, Any]] = []
    for path in sorted(RULES.glob("*.yml")):
        groups += yaml.safe_load(path.read_text())["groups"]
    return groups


def _rule(key: str, name: str) -> dict[str, Any]:
    found: list[dict[str, Any]] = [r for g in _groups() for r in g["rules"]
                                   if r.get(key) == name]
    assert len(found) == 1, f"{key} {name}: {len(found)} rules"
    return found[0]


def _joining_alerts_at_once() -> list[tuple[str, dict[str, Any]]]:
    """(group, alert) of every alert with no `for` that reads two series or more."""
    return [(g["name"], r) for g in _groups() for r in g["rules"]
            if "alert" in r and "for" not in r and len(series_names(r["expr"])) > 1]


def test_the_link_and_propellant_alerts_are_checked_below() -> None:
    assert {r["alert"] for _, r in _joining_alerts_at_once()} >= {
        "TwinLinkLostInCriticalPhase", "TwinPropellantBelowReserve"}


@pytest.mark.parametrize("group_and_rule", _joining_alerts_at_once(),
                         ids=lambda gr: gr[1]["alert"])
def test_an_alert_that_fires_at_once_reads_one_moment(
        group_and_rule: tuple[str, dict[str, Any]]) -> None:
    """With no `for`, an alert joining several series reads raw series, or
    series recorded before it in its own group (same evaluation instant)."""
    group_name, alert = group_and_rule
    names = series_names(alert["expr"])
    group = next(g for g in _groups() if g["name"] == group_name)
    earlier = set()
    for rule in group["rules"]:
        if rule is alert:
            break
        if "record" in rule:
            earlier.add(rule["record"])
    foreign = {n for n in names if ":" in n and n not in earlier}
    assert not foreign, (f"{alert['alert']} joins {sorted(names)}; {sorted(foreign)} are "
                         f"recorded by other groups, at other instants")


def test_the_link_alert_uses_the_recorded_critical_phase_set() -> None:
    """The critical phase set is spelled in the recording rule (dashboards) and in
    the alert (one evaluation); the two must name the same phases."""
    pattern = re.compile(r'twin_mission_phase\{phase=~"([^"]+)"\}')
    recorded = pattern.findall(_rule("record", "mission_service:twin_mission_phase:critical")
                               ["expr"])
    alerted = pattern.findall(_rule("alert", "TwinLinkLostInCriticalPhase")["expr"])
    assert len(recorded) == 1 and len(alerted) == 1
    assert set(recorded[0].split("|")) == set(alerted[0].split("|")) == {
        "powered_descent", "ascent"}
