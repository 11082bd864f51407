"""The campaign file: what a Monte Carlo campaign disperses, how, and how many cases.

YAML or JSON (docs/campaign.md)::

    name: descent-and-entry        # 1-40 of a-z, 0-9, '-'
    plan: nominal                  # a packaged plan's name, or a path (relative to this file)
    seed: 20240503                 # the root of every case's random draws
    cases: 200                     # how many (twin campaign run --cases overrides)
    twin_seed: 6                   # the twin's own seed (hazard maps, ...); or "per-case"
    case_budget_s: 600             # wall seconds a case may take before it is a timeout
    nats_check: 2                  # cases also flown by the six services over NATS
    dispersions:
      lander.engine.thrust_scale: {dist: normal, sigma: 1, unit: "%"}
      reentry.entry.fpa_error_deg: {dist: normal, sigma: 3, unit: arcmin}
      relay.outage.start_s: {dist: uniform, low: 708, high: 709, unit: h, absolute: true}

A dispersion is a **deviation from the parameter's nominal value** in the unit
it names (converted with pint to the parameter's own unit; ``%`` of a
dimensionless scale factor is a fraction of it), unless ``absolute: true``,
when the draw is the value itself. Distributions: ``normal`` (mean, default 0;
sigma), ``uniform`` (low, high), ``truncnormal`` (mean, sigma, low, high: the
normal restricted to [low, high]), ``constant`` (value).

Seeds: case ``k``'s draw of parameter ``p`` comes from its own stream,
``numpy.random.SeedSequence(seed, spawn_key=(k, key(p)))`` where ``key`` is a
stable 64-bit hash of the path: adding, removing or reordering dispersions
never changes another's draws, and a case is reproducible alone.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any, Literal

import numpy as np
import orjson
import yaml

from services.campaign.registry import PLANS_DIR, parameter_table
from services.kernel.parameters import Parameter

__all__ = ["Campaign", "CampaignError", "Dispersion", "load_campaign", "parse_campaign",
           "stream_key"]

NAME_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,39}$")
DISTRIBUTIONS = ("normal", "uniform", "truncnormal", "constant")
#: The keys each distribution takes (besides dist, unit, absolute).
_DIST_KEYS: dict[str, tuple[str, ...]] = {
    "normal": ("mean", "sigma"), "uniform": ("low", "high"),
    "truncnormal": ("mean", "sigma", "low", "high"), "constant": ("value",)}
_REQUIRED: dict[str, tuple[str, ...]] = {
    "normal": ("sigma",), "uniform": ("low", "high"),
    "truncnormal": ("sigma", "low", "high"), "constant": ("value",)}
#: A case's wall-time budget when the file sets none: a nominal mission flies
#: in ~5 s of CPU in-process, so this only stops one that hangs.
DEFAULT_CASE_BUDGET_S = 600.0
#: The twin's own seed when the file sets none: the real mission's hazard map.
DEFAULT_TWIN_SEED = 6


class CampaignError(ValueError):
    """A campaign file that cannot be run; the message names the field and the fix."""


@dataclass(frozen=True)
class Dispersion:
    """How one parameter is drawn: in the file's unit, then converted."""

    path: str
    dist: Literal["normal", "uniform", "truncnormal", "constant"]
    args: Mapping[str, float]
    unit: str
    absolute: bool
    parameter: Parameter
    #: The file's unit -> the parameter's own: value * scale.
    scale: float

    def draw(self, rng: np.random.Generator) -> float:
        """One value of the parameter (its own unit) from ``rng``."""
        a = self.args
        match self.dist:
            case "normal":
                x = float(rng.normal(a.get("mean", 0.0), a["sigma"]))
            case "uniform":
                x = float(rng.uniform(a["low"], a["high"]))
            case "truncnormal":
                x = _truncnormal(rng, a.get("mean", 0.0), a["sigma"], a["low"], a["high"])
            case "constant":
                x = float(a["value"])
        value = x * self.scale
        return value if self.absolute else self.parameter.nominal + value


def _truncnormal(rng: np.random.Generator, mean: float, sigma: float, low: float,
                 high: float) -> float:
    from scipy.stats import truncnorm

    a, b = (low - mean) / sigma, (high - mean) / sigma
    return float(truncnorm.rvs(a, b, loc=mean, scale=sigma, random_state=rng))


@dataclass(frozen=True)
class Campaign:
    name: str
    plan: str  # a packaged plan's name or a resolved path
    seed: int
    cases: int
    twin_seed: int | Literal["per-case"]
    case_budget_s: float
    nats_check: int
    dispersions: tuple[Dispersion, ...]
    #: SHA-256 of the file's bytes: a resumed campaign must be this one.
    sha256: str
    #: The file as parsed (for the manifest).
    raw: Mapping[str, Any] = field(repr=False, default_factory=dict)

    def draws(self, case: int) -> dict[str, float]:
        """Case ``case``'s value of every dispersed parameter (path -> value)."""
        return {d.path: d.draw(np.random.default_rng(np.random.SeedSequence(
            self.seed, spawn_key=(case, stream_key(d.path))))) for d in self.dispersions}

    def twin_seed_of(self, case: int) -> int:
        """The twin's seed in case ``case`` (fixed, or drawn from its own stream)."""
        if self.twin_seed != "per-case":
            return self.twin_seed
        ss = np.random.SeedSequence(self.seed, spawn_key=(case, stream_key("twin.seed")))
        return int(ss.generate_state(1, dtype=np.uint32)[0])

    def nats_cases(self, cases: int) -> list[int]:
        """The cases also flown over NATS: spread evenly over the campaign."""
        n = min(self.nats_check, cases)
        return sorted({round(i * (cases - 1) / max(n - 1, 1)) for i in range(n)}) if n else []


def stream_key(path: str) -> int:
    """A stable 64-bit key of a parameter path (SHA-256's first 8 bytes)."""
    return int.from_bytes(hashlib.sha256(path.encode()).digest()[:8], "big")


def load_campaign(path: Path) -> Campaign:
    """Read and check a campaign file (YAML or JSON)."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise CampaignError(f"cannot read the campaign file {path}: {exc.strerror}") from None
    try:
        raw = orjson.loads(data) if path.suffix == ".json" else yaml.safe_load(data)
    except (orjson.JSONDecodeError, yaml.YAMLError) as exc:
        raise CampaignError(f"{path} is not valid {'JSON' if path.suffix == '.json' else 'YAML'}"
                            f": {exc}") from None
    return parse_campaign(raw, sha256=hashlib.sha256(data).hexdigest(), base_dir=path.parent)


_TOP_KEYS = ("name", "description", "plan", "seed", "cases", "twin_seed", "case_budget_s",
             "nats_check", "dispersions")


def parse_campaign(raw: Any, *, sha256: str = "", base_dir: Path | None = None,
                   table: Mapping[str, Parameter] | None = None) -> Campaign:
    """Check a parsed campaign file; raises :class:`CampaignError` naming what to fix.
    ``table``: the parameters it may name (default: every vehicle's)."""
    if not isinstance(raw, dict):
        raise CampaignError("a campaign file is a mapping with name, seed and dispersions")
    unknown = sorted(set(raw) - set(_TOP_KEYS))
    if unknown:
        raise CampaignError(f"unknown key {unknown[0]!r}; a campaign file has: "
                            f"{', '.join(_TOP_KEYS)}")
    name = raw.get("name")
    if not isinstance(name, str) or not NAME_RE.fullmatch(name):
        raise CampaignError(f"name {name!r}: give 1-40 of a-z, 0-9 and '-', starting with a "
                            "letter or digit")
    seed = _int(raw, "seed", None, low=0)
    cases = _int(raw, "cases", 100, low=1)
    twin_seed_raw = raw.get("twin_seed", DEFAULT_TWIN_SEED)
    twin_seed: int | Literal["per-case"]
    if twin_seed_raw == "per-case":
        twin_seed = "per-case"
    else:
        twin_seed = _int(raw, "twin_seed", DEFAULT_TWIN_SEED, low=0)
    budget = raw.get("case_budget_s", DEFAULT_CASE_BUDGET_S)
    if not _number(budget) or not budget > 0:
        raise CampaignError(f"case_budget_s {budget!r}: give wall seconds > 0, e.g. 600")
    nats_check = _int(raw, "nats_check", 0, low=0)
    plan = raw.get("plan", "nominal")
    if not isinstance(plan, str) or not plan:
        raise CampaignError(f"plan {plan!r}: give a packaged plan's name (nominal, short) or "
                            "a flight-plan file's path")
    plan = _resolve_plan(plan, base_dir)
    dispersions = raw.get("dispersions")
    if not isinstance(dispersions, dict) or not dispersions:
        raise CampaignError("dispersions: give at least one, e.g. "
                            "lander.engine.thrust_scale: {dist: normal, sigma: 1, unit: '%'}")
    return Campaign(name, plan, seed, cases, twin_seed, float(budget), nats_check,
                    tuple(_dispersion(str(p), spec, parameter_table() if table is None else table)
                          for p, spec in sorted(dispersions.items())),
                    sha256, raw)


def _resolve_plan(plan: str, base_dir: Path | None) -> str:
    if (PLANS_DIR / f"{plan}.json").is_file() and "/" not in plan:
        return plan
    path = Path(plan)
    if not path.is_absolute() and base_dir is not None:
        path = base_dir / path
    if not path.is_file():
        packaged = ", ".join(sorted(p.stem for p in PLANS_DIR.glob("*.json")))
        raise CampaignError(f"plan {plan!r}: no packaged plan of that name ({packaged}) and "
                            f"no file {path}")
    return str(path.resolve())


def _dispersion(path: str, spec: Any, table: Mapping[str, Parameter]) -> Dispersion:
    where = f"dispersions.{path}"
    param = table.get(path)
    if param is None:
        vehicle = path.partition(".")[0]
        same = sorted(p for p in table if p.startswith(vehicle + "."))
        hint = f"{vehicle} has: {', '.join(same)}" if same else "twin parameters lists them"
        raise CampaignError(f"{where}: no such parameter; {hint}")
    if not isinstance(spec, dict):
        raise CampaignError(f"{where}: give a mapping such as {{dist: normal, sigma: 1, "
                            f"unit: {param.unit!r}}}")
    dist = spec.get("dist")
    if dist not in DISTRIBUTIONS:
        raise CampaignError(f"{where}.dist {dist!r}: use one of {', '.join(DISTRIBUTIONS)}")
    allowed = {"dist", "unit", "absolute", *_DIST_KEYS[dist]}
    extra = sorted(set(spec) - allowed)
    if extra:
        raise CampaignError(f"{where}: {dist} takes {', '.join(_DIST_KEYS[dist])} (and unit, "
                            f"absolute), not {extra[0]!r}")
    missing = [k for k in _REQUIRED[dist] if k not in spec]
    if missing:
        raise CampaignError(f"{where}: {dist} needs {', '.join(missing)}")
    args: dict[str, float] = {}
    for key in _DIST_KEYS[dist]:
        if key in spec:
            if not _number(spec[key]):
                raise CampaignError(f"{where}.{key} {spec[key]!r}: give a finite number")
            args[key] = float(spec[key])
    if "sigma" in args and not args["sigma"] > 0:
        raise CampaignError(f"{where}.sigma {args['sigma']:g}: must be > 0")
    if "low" in args and not args["low"] < args["high"]:
        raise CampaignError(f"{where}: low {args['low']:g} must be below high {args['high']:g}")
    if dist == "truncnormal" and not args["low"] <= args.get("mean", 0.0) <= args["high"]:
        raise CampaignError(f"{where}: the mean must lie in [low, high]")
    absolute = spec.get("absolute", False)
    if not isinstance(absolute, bool):
        raise CampaignError(f"{where}.absolute {absolute!r}: true or false")
    unit = spec.get("unit", param.unit)
    if not isinstance(unit, str):
        raise CampaignError(f"{where}.unit {unit!r}: give a unit such as {param.unit!r}")
    scale = unit_scale(unit, param.unit, where)
    d = Dispersion(path, dist, args, unit, absolute, param, scale)
    _check_reach(d, where)
    return d


def _check_reach(d: Dispersion, where: str) -> None:
    """Refuse a distribution whose bounded support leaves the parameter's range
    (an unbounded normal is checked per draw, by the vehicle, when it is flown)."""
    a = d.args
    keys = {"uniform": ("low", "high"), "truncnormal": ("low", "high"),
            "constant": ("value", "value")}.get(d.dist)
    if keys is None:
        return
    p = d.parameter
    for end in (a[keys[0]], a[keys[1]]):
        value = end * d.scale + (0.0 if d.absolute else p.nominal)
        if not p.low <= value <= p.high:
            raise CampaignError(
                f"{where}: reaches {value:g} {p.unit}, outside what the vehicle can have "
                f"[{p.low:g}, {p.high:g}] {p.unit}"
                + ("" if d.absolute else f" (a deviation from the nominal {p.nominal:g})"))


def unit_scale(unit: str, to: str, where: str = "unit") -> float:
    """The factor that turns a number in ``unit`` into one in ``to`` ("1": dimensionless)."""
    registry = _units()
    try:
        return float(registry.Quantity(1.0, _pint_name(unit)).to(_pint_name(to)).magnitude)
    except Exception as exc:  # pint's errors: undefined unit, dimensionality
        raise CampaignError(f"{where}.unit {unit!r} does not convert to {to!r}: {exc}") from None


def _pint_name(unit: str) -> str:
    return {"1": "dimensionless", "%": "percent"}.get(unit, unit)


@cache
def _units() -> Any:
    import pint

    return pint.UnitRegistry()


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(
        value)


def _int(raw: Mapping[str, Any], key: str, default: int | None, *, low: int) -> int:
    value = raw.get(key, default)
    if value is None:
        raise CampaignError(f"{key}: required (a whole number >= {low})")
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise CampaignError(f"{key} {value!r}: give a whole number >= {low}")
    return value
