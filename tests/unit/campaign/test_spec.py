"""The campaign file: checked with clear errors, units converted, seeds as the issue fixes them.

The parameters named here are a table written for the test (the parsing does
not depend on which vehicle declares what); tests/integration/test_campaign.py
flies real vehicles.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from services.campaign.spec import CampaignError, load_campaign, parse_campaign
from services.kernel.parameters import Parameter

TABLE = {
    "lander.engine.thrust_scale": Parameter("engine.thrust_scale", 1.0, "1", 0.5, 1.5, "thrust"),
    "reentry.entry.fpa_error_deg": Parameter("entry.fpa_error_deg", 0.0, "deg", -2.0, 2.0,
                                             "entry angle"),
    "relay.outage.start_s": Parameter("outage.start_s", 0.0, "s", 0.0, 5e6, "outage start"),
    "orbiter.injection.velocity_error_along_m_s": Parameter(
        "injection.velocity_error_along_m_s", 0.0, "m/s", -20.0, 20.0, "injection"),
}
ROOT_SEED = 20240503
#: Statistical tolerance on a sample standard deviation of 4,000 draws: its
#: standard error is sigma / sqrt(2 n) = 1.1 %; 5 % is 4.5 of them.
SD_REL_TOL = 0.05


def _raw(**dispersions: Any) -> dict[str, Any]:
    return {"name": "t", "seed": ROOT_SEED, "cases": 10, "plan": "short",
            "dispersions": dispersions or {
                "lander.engine.thrust_scale": {"dist": "normal", "sigma": 1, "unit": "%"}}}


def _parse(raw: dict[str, Any]) -> Any:
    return parse_campaign(raw, table=TABLE)


def _expected_stream(case: int, path: str) -> np.random.Generator:
    """The seeding the issue prescribes, written out: SeedSequence(root,
    spawn_key=(case, a 64-bit key of the parameter's name))."""
    key = int.from_bytes(hashlib.sha256(path.encode()).digest()[:8], "big")
    return np.random.default_rng(np.random.SeedSequence(ROOT_SEED, spawn_key=(case, key)))


def test_each_case_draws_from_its_own_stream_keyed_by_the_parameter_name() -> None:
    camp = _parse(_raw())
    for case in (0, 1, 7):
        expected = 1.0 + 0.01 * _expected_stream(case, "lander.engine.thrust_scale").normal(0, 1)
        assert camp.draws(case) == {"lander.engine.thrust_scale": pytest.approx(expected,
                                                                                 abs=1e-15)}


def test_adding_a_dispersion_leaves_the_other_draws_as_they_were() -> None:
    one = _parse(_raw())
    two = _parse(_raw(**{
        "lander.engine.thrust_scale": {"dist": "normal", "sigma": 1, "unit": "%"},
        "reentry.entry.fpa_error_deg": {"dist": "normal", "sigma": 3, "unit": "arcmin"}}))
    for case in range(20):
        assert two.draws(case)["lander.engine.thrust_scale"] == \
            one.draws(case)["lander.engine.thrust_scale"]
    assert len({one.draws(c)["lander.engine.thrust_scale"] for c in range(20)}) == 20


@pytest.mark.parametrize(("spec", "expected"), [
    # A deviation from the nominal value, converted to the parameter's unit.
    ({"dist": "constant", "value": 30, "unit": "arcmin"}, 0.5),
    ({"dist": "constant", "value": 1800, "unit": "arcsec"}, 0.5),
    ({"dist": "constant", "value": 0.01, "unit": "rad"}, 0.5729577951308232),
])
def test_a_deviation_is_converted_to_the_parameter_s_unit(spec: dict[str, Any],
                                                          expected: float) -> None:
    camp = _parse(_raw(**{"reentry.entry.fpa_error_deg": spec}))
    assert camp.draws(3)["reentry.entry.fpa_error_deg"] == pytest.approx(expected, rel=1e-12)


def test_a_percent_of_a_scale_factor_is_a_fraction_of_it() -> None:
    camp = _parse(_raw(**{"lander.engine.thrust_scale": {"dist": "constant", "value": -2,
                                                         "unit": "%"}}))
    assert camp.draws(0)["lander.engine.thrust_scale"] == pytest.approx(0.98, abs=1e-15)


def test_an_absolute_draw_is_the_value_itself() -> None:
    camp = _parse(_raw(**{"relay.outage.start_s": {
        "dist": "uniform", "low": 708, "high": 709, "unit": "h", "absolute": True}}))
    for case in range(50):
        assert 708 * 3600.0 <= camp.draws(case)["relay.outage.start_s"] <= 709 * 3600.0


def test_the_distributions_have_the_spread_asked_for() -> None:
    sigma_m_s = 2.0
    camp = _parse(_raw(**{
        "orbiter.injection.velocity_error_along_m_s": {"dist": "normal", "sigma": sigma_m_s},
        "reentry.entry.fpa_error_deg": {"dist": "truncnormal", "mean": 0.0, "sigma": 0.3,
                                        "low": -0.2, "high": 0.4}}))
    draws = [camp.draws(c) for c in range(4_000)]
    along = np.array([d["orbiter.injection.velocity_error_along_m_s"] for d in draws])
    assert float(np.std(along)) == pytest.approx(sigma_m_s, rel=SD_REL_TOL)
    fpa = np.array([d["reentry.entry.fpa_error_deg"] for d in draws])
    assert float(fpa.min()) >= -0.2 and float(fpa.max()) <= 0.4
    assert fpa.min() < -0.19 and fpa.max() > 0.39  # both ends reached: truncated, not clipped


def test_the_twin_seed_is_fixed_or_drawn_per_case() -> None:
    assert {_parse(_raw()).twin_seed_of(c) for c in range(5)} == {6}
    raw = _raw() | {"twin_seed": "per-case"}
    seeds = [_parse(raw).twin_seed_of(c) for c in range(5)]
    assert len(set(seeds)) == 5 and seeds == [_parse(raw).twin_seed_of(c) for c in range(5)]


def test_the_nats_sample_is_spread_over_the_campaign() -> None:
    camp = _parse(_raw() | {"nats_check": 3})
    assert camp.nats_cases(200) == [0, 100, 199]
    assert camp.nats_cases(2) == [0, 1]
    assert _parse(_raw()).nats_cases(200) == []


@pytest.mark.parametrize(("change", "message"), [
    ({"colour": "red"}, "unknown key 'colour'; a campaign file has: name, description"),
    ({"name": "Big Campaign"}, "name 'Big Campaign': give 1-40 of a-z"),
    ({"seed": -1}, "seed -1: give a whole number >= 0"),
    ({"seed": None}, "seed: required"),
    ({"cases": 0}, "cases 0: give a whole number >= 1"),
    ({"case_budget_s": 0}, "case_budget_s 0: give wall seconds > 0"),
    ({"plan": "lunar"}, "plan 'lunar': no packaged plan of that name"),
    ({"dispersions": {}}, "dispersions: give at least one"),
    ({"dispersions": {"lander.engine.thrust": {"dist": "normal", "sigma": 1}}},
     "dispersions.lander.engine.thrust: no such parameter; lander has: "
     "lander.engine.thrust_scale"),
    ({"dispersions": {"lander.engine.thrust_scale": {"dist": "gauss", "sigma": 1}}},
     "dist 'gauss': use one of normal, uniform, truncnormal, constant"),
    ({"dispersions": {"lander.engine.thrust_scale": {"dist": "normal"}}}, "normal needs sigma"),
    ({"dispersions": {"lander.engine.thrust_scale": {"dist": "normal", "sigma": -1}}},
     "sigma -1: must be > 0"),
    ({"dispersions": {"lander.engine.thrust_scale": {"dist": "normal", "sd": 1}}},
     "normal takes mean, sigma"),
    ({"dispersions": {"lander.engine.thrust_scale": {"dist": "uniform", "low": 1, "high": 0}}},
     "low 1 must be below high 0"),
    ({"dispersions": {"orbiter.injection.velocity_error_along_m_s": {
        "dist": "normal", "sigma": 1, "unit": "kg"}}}, "unit 'kg' does not convert to 'm/s'"),
    ({"dispersions": {"lander.engine.thrust_scale": {
        "dist": "uniform", "low": -60, "high": 0, "unit": "%"}}},
     r"reaches 0.4 1, outside what the vehicle can have \[0.5, 1.5\]"),
    ({"dispersions": {"lander.engine.thrust_scale": {"dist": "normal", "sigma": float("inf")}}},
     "sigma inf: give a finite number"),
])
def test_a_bad_campaign_file_says_what_to_fix(change: dict[str, Any], message: str) -> None:
    with pytest.raises(CampaignError, match=message):
        _parse(_raw() | change)


def test_files_load_as_yaml_or_json_and_their_hash_is_kept(tmp_path: Path) -> None:
    yaml_file = tmp_path / "c.yaml"
    yaml_file.write_text("name: t\nseed: 1\nplan: short\ndispersions:\n"
                         "  lander.engine.thrust_scale: {dist: normal, sigma: 1, unit: '%'}\n")
    json_file = tmp_path / "c.json"
    json_file.write_text('{"name": "t", "seed": 1, "plan": "short", "dispersions": '
                         '{"lander.engine.thrust_scale": {"dist": "normal", "sigma": 1, '
                         '"unit": "%"}}}')
    camps = [parse_campaign(yaml.safe_load(path.read_bytes()), table=TABLE,
                                 sha256=hashlib.sha256(path.read_bytes()).hexdigest())
             for path in (yaml_file, json_file)]
    assert [camps[1].draws(k) for k in range(5)] == [camps[0].draws(k) for k in range(5)]
    assert [c.sha256 for c in camps] == [hashlib.sha256(p.read_bytes()).hexdigest()
                                         for p in (yaml_file, json_file)]
    assert camps[0].sha256 != camps[1].sha256


def test_a_file_that_does_not_parse_names_the_format(tmp_path: Path) -> None:
    bad = tmp_path / "c.yaml"
    bad.write_text("name: [unclosed\n")
    with pytest.raises(CampaignError, match="is not valid YAML"):
        load_campaign(bad)
    bad_json = tmp_path / "c.json"
    bad_json.write_text("{")
    with pytest.raises(CampaignError, match="is not valid JSON"):
        load_campaign(bad_json)
    with pytest.raises(CampaignError, match="cannot read the campaign file"):
        load_campaign(tmp_path / "missing.yaml")


def test_a_plan_path_is_relative_to_the_campaign_file(tmp_path: Path) -> None:
    plan = tmp_path / "plans" / "mine.json"
    plan.parent.mkdir()
    plan.write_text("{}")
    camp = parse_campaign(_raw() | {"plan": "plans/mine.json"}, base_dir=tmp_path, table=TABLE)
    assert camp.plan == str(plan.resolve())
