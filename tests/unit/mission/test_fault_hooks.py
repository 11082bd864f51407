"""The vehicles' fault hooks, judged by what the faulted vehicle flies.

Each vehicle is flown once to just before its powered flight (module
fixtures); each test restores a copy of that core, injects a fault (as
InjectFault does, ``inject_fault``, or as a flight-plan item does, an
``inject_fault`` command from ground) and flies on through the step rule.

Authorities: the lander's 7,500 N variable-thrust engine, the ascender's
3,000 N engine and the ~100 m hover (tests/authorities.py); the fault model's
contract (README.md, the table of fault kinds under the gRPC API): a thrust
loss takes its magnitude off the engine's thrust, clamped (lander at 90 %,
ascender at 50 %, never negative), an unset magnitude (InjectFault's 0) means
20 % for the lander and 10 % for the ascender; a hazard-sensor bias moves
the spot the hover scan chooses east by its magnitude (20 m if unset). The
same engine at a fraction of its thrust burns that fraction of the mass flow
(its exhaust velocity does not change). Offsets on the surface are worked out
here from published latitudes and longitudes on a sphere.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import orjson
import pytest

from services.ascender.vehicle import AscenderCore
from services.dynamics.guidance import descent as dg
from services.dynamics.timescale import mission_s_from_utc
from services.kernel.envelope import Envelope
from services.kernel.steprule import take_step
from services.kernel.vehicle import Outbox, Outgoing, VehicleCore
from services.lander.vehicle import LanderCore
from services.orbiter.vehicle import OrbiterCore
from tests.authorities import (
    ASCENDER_ENGINE_THRUST_N,
    GM_MOON_M3_S2,
    HOVER_HEIGHT_M,
    LANDER_ENGINE_THRUST_N,
    LANDING_SITE_HEIGHT_M,
    LANDING_SITE_LAT_DEG,
    LANDING_SITE_LON_DEG,
    LOI_UTC,
    R_MOON_M,
    SEPARATION_UTC,
)
from tests.unit.mission.driver import Drive
from tests.unit.mission.test_ascender import T_LIFTOFF, on_pad
from tests.unit.mission.test_lander import T_PDI, T_PLAN, T_SEP, la_stack_handover
from tests.unit.mission.test_orbiter import CRUISE
from tests.unit.mission.test_orbiter import resume as resume_orbiter

#: Thrust is compared to a newton: the engine's setting, not a measurement.
THRUST_TOL_N = 1.0
#: Published lat/lon are rounded to 1e-6 deg (3 cm); vertical descent holds
#: its aim to well within this.
SPOT_TOL_M = 0.5
#: Nominal touchdown speeds agree to this between flights that end alike.
SPEED_TOL_M_S = 0.05
#: Four times a soft touchdown (a few m/s, CE-3/5 legs): a crash, not a landing.
HARD_CONTACT_M_S = 10.0
#: The hover ends on a settled point: within this of the ~100 m hover height.
HOVER_TOL_M = 10.0
#: Lander fault contract (see the module docstring).
LANDER_LOSS_CLAMP = 0.9
LANDER_LOSS_DEFAULT = 0.2
BIAS_DEFAULT_M = 20.0
#: The lander's footprint radius: the hover scan keeps two of them from any rim.
FOOTPRINT_M = 4.0
#: Ascender fault contract.
ASCENDER_LOSS_CLAMP = 0.5
ASCENDER_LOSS_DEFAULT = 0.1
#: Seconds of powered flight enough to see the thrust the engine is held to.
SHORT_BURN_S = 30.0
#: The best exhaust velocity of any flown chemical engine (LH2/LOX, ~4.5 km/s):
#: a bound on what a few tens of kilograms of propellant can do.
BEST_CHEMICAL_V_E_M_S = 4_500.0


# --- flying a core through the step rule, keeping each event's publisher ---------


_POWERED = ("powered_descent", "ascent")


@dataclass
class Stamped:
    """An event with the step that published it (Drive keeps neither)."""

    t_from: float
    t_to: float
    item: Outgoing

    @property
    def name(self) -> str:
        return str(self.item.body["name"])


@dataclass
class Flight:
    """Steps as Drive takes them (the step rule), keeping what Drive drops: each
    event's publisher and step, and the thrust of each whole powered step."""

    core: VehicleCore
    t_s: float
    dt_s: float
    events: list[Stamped] = field(default_factory=list)
    powered: list[tuple[float, float]] = field(default_factory=list)  # (t_to, thrust_n)
    seq: int = 0

    def step(self, commands: Iterable[dict[str, Any]] = ()) -> None:
        held = []
        for body in commands:
            self.seq += 1
            held.append(Envelope("sim", "ground", self.seq, self.t_s, 0, "command", body))
        out = Outbox()
        t_to = self.t_s + self.dt_s
        was_powered = self.core.phase in _POWERED
        self.dt_s = take_step(self.core, held, self.t_s, t_to, out)
        self.events += [Stamped(self.t_s, t_to, i) for i in out.drain() if i.kind == "evt"]
        if was_powered and self.core.phase in _POWERED:  # a whole step of powered flight
            assert isinstance(self.core, LanderCore | AscenderCore)
            self.powered.append((t_to, self.core.thrust_n))
        self.t_s = t_to

    def until(self, done: Callable[[Flight], bool], max_steps: int = 5_000) -> Flight:
        for _ in range(max_steps):
            if done(self):
                return self
            self.step()
        raise AssertionError(f"not done after {max_steps} steps at t={self.t_s}")

    def named(self, name: str) -> list[Stamped]:
        return [e for e in self.events if e.name == name]

    def one(self, name: str) -> dict[str, Any]:
        [found] = self.named(name)
        return {"t": found.item.t, **found.item.body}

    def has(self, name: str) -> Callable[[Flight], bool]:
        return lambda f: bool(f.named(name))

    def ceiling_n(self) -> float:
        return max(thrust for _, thrust in self.powered)


@dataclass(frozen=True)
class Start:
    """A core's snapshot (through JSON, as a real one) and the clock there."""

    snap: bytes
    t_s: float
    dt_s: float

    def flight(self, make: Callable[[int], VehicleCore]) -> Flight:
        core = make(6)
        core.restore(orjson.loads(self.snap))
        return Flight(core, self.t_s, self.dt_s)


def _start(d: Drive) -> Start:
    return Start(orjson.dumps(d.core.snapshot(), option=orjson.OPT_SERIALIZE_NUMPY),
                 d.t_s, d.dt_s)


def _plan_fault(plan_id: str, kind: str, magnitude: float) -> dict[str, Any]:
    """What ground sends for a flight-plan fault item (services/ground/plan.py)."""
    return {"op": "inject_fault", "kind": kind, "magnitude": magnitude, "duration_s": 0.0,
            "subsystem": "", "plan_id": plan_id}


# --- the lander -------------------------------------------------------------------


def _east_north_m(spot: dict[str, Any], origin_lat_deg: float, origin_lon_deg: float
                  ) -> tuple[float, float]:
    """East and north of the origin along the sphere through ``spot`` (tens of
    metres: the tangent plane and the sphere differ by far less than a mm)."""
    r = R_MOON_M + float(spot["alt_m"])
    d_lon = (math.radians(spot["lon_deg"] - origin_lon_deg) + math.pi) % math.tau - math.pi
    return (r * math.cos(math.radians(origin_lat_deg)) * d_lon,
            r * math.radians(spot["lat_deg"] - origin_lat_deg))


def _from_site(f: Flight) -> tuple[float, float]:
    return _east_north_m(f.one("lunar_touchdown"), LANDING_SITE_LAT_DEG, LANDING_SITE_LON_DEG)


def _at_ceiling_steps(f: Flight, ceiling_n: float) -> int:
    return sum(1 for _, thrust in f.powered if thrust >= ceiling_n - THRUST_TOL_N)


def _lowest_lit_n(f: Flight) -> float:
    return min(thrust for _, thrust in f.powered if thrust > 0.0)


@pytest.fixture(scope="module")
def before_pdi() -> Start:
    """The lander in the parking orbit a minute before powered-descent ignition."""
    d = Drive(LanderCore(6), T_SEP)
    d.deliver("transfer", la_stack_handover(120.0), src="orbiter")
    d.step()
    d.until_t(T_PLAN)
    d.deliver("command", {"op": "plan_descent", "pdi_utc": "2024-06-01T22:09:00Z",
                          "plan_id": "descent_plan"})
    d.until_t(T_PDI - 60.0)
    assert d.core.phase == "lunar_orbit"
    return _start(d)


def _descend(start: Start, setup: Callable[[LanderCore], None] | None = None,
             commands: Iterable[dict[str, Any]] = ()) -> Flight:
    f = start.flight(LanderCore)
    assert isinstance(f.core, LanderCore)
    if setup is not None:
        setup(f.core)
    f.step(commands)
    return f.until(f.has("lunar_touchdown"))


@pytest.fixture(scope="module")
def nominal(before_pdi: Start) -> Flight:
    return _descend(before_pdi)


def _inject(kind: str, magnitude: float = 0.0, seed: int | None = None
            ) -> Callable[[LanderCore], None]:
    def setup(core: LanderCore) -> None:
        if seed is not None:
            core.seed = seed  # the terrain under the lander is its seed's
        core.inject_fault(f"lander-{kind}-1", kind, magnitude=magnitude)
    return setup


def test_nominal_descent_is_flown_step_by_step_to_the_full_engine_thrust(
        nominal: Flight) -> None:
    """Each phase is reported by the lander in the step in which it began, in the
    order of the real descent (reference row 13): braking, approach, hover at
    ~100 m, hazard avoidance, slow vertical descent, engine cut, touchdown."""
    assert nominal.ceiling_n() == pytest.approx(LANDER_ENGINE_THRUST_N, abs=THRUST_TOL_N)
    phases = nominal.named("descent_phase")
    assert [p.item.body["phase"] for p in phases] == [
        "approach_start", "avoidance_start", "vertical_descent_start", "engine_cutoff"]
    [hover] = nominal.named("hover_start")
    t_cut = phases[-1].t_to
    ordered = [phases[0], hover, *phases[1:], *nominal.named("lunar_touchdown")]
    assert [e.t_to for e in ordered] == sorted(e.t_to for e in ordered)
    for e in ordered:
        assert e.item.target == "lander"
        assert e.t_from < e.item.t <= e.t_to + 1e-9, e  # stamped within its own step
    assert hover.item.body["alt_m"] == pytest.approx(LANDING_SITE_HEIGHT_M + HOVER_HEIGHT_M,
                                                     abs=HOVER_TOL_M)
    assert 600.0 < t_cut - T_PDI < 1_100.0  # ~14 min (reference: CE-5 analogue)


def test_the_lander_touches_down_on_the_spot_its_hover_scan_chooses(nominal: Flight) -> None:
    chosen = dg.choose_safe_spot(dg.hazard_map(6), FOOTPRINT_M)
    east, north = _from_site(nominal)
    assert math.hypot(east - chosen[0], north - chosen[1]) < SPOT_TOL_M
    assert nominal.one("lunar_touchdown")["speed_m_s"] < 4.0  # soft: a few m/s


def test_a_planned_slight_thrust_loss_lowers_the_ceiling_the_lander_flies(
        before_pdi: Start, nominal: Flight) -> None:
    """5 %: within the braking margin. The engine sits at its lowered ceiling for
    minutes, its throttle floor is unchanged, and the lander lands as before."""
    f = _descend(before_pdi, commands=[_plan_fault("weak", "engine_thrust_loss", 0.05)])
    injected = f.named("fault_injected")[0]
    # Struck as the step it arrived before starts (the step rule's order).
    assert (injected.item.target, injected.item.t) == ("lander", before_pdi.t_s)
    assert injected.item.body == {"name": "fault_injected", "kind": "engine_thrust_loss",
                                  "fault_id": "weak", "magnitude": 0.05}
    ceiling_n = 0.95 * LANDER_ENGINE_THRUST_N
    assert f.ceiling_n() == pytest.approx(ceiling_n, abs=THRUST_TOL_N)
    assert _at_ceiling_steps(f, ceiling_n) > _at_ceiling_steps(
        nominal, LANDER_ENGINE_THRUST_N) + 60
    assert _lowest_lit_n(f) == pytest.approx(_lowest_lit_n(nominal), abs=THRUST_TOL_N)
    east, north = _from_site(f)
    east0, north0 = _from_site(nominal)
    assert math.hypot(east - east0, north - north0) < SPOT_TOL_M
    assert f.one("lunar_touchdown")["speed_m_s"] == pytest.approx(
        nominal.one("lunar_touchdown")["speed_m_s"], abs=SPEED_TOL_M_S)


def test_a_thrust_loss_without_a_magnitude_takes_a_fifth_and_the_lander_crashes(
        before_pdi: Start, nominal: Flight) -> None:
    """20 %: beyond the ~10 % braking margin, the guided path meets the ground early."""
    f = _descend(before_pdi, setup=_inject("engine_thrust_loss"))
    assert f.ceiling_n() == pytest.approx((1.0 - LANDER_LOSS_DEFAULT) * LANDER_ENGINE_THRUST_N,
                                          abs=THRUST_TOL_N)
    td = f.one("lunar_touchdown")
    assert td["vertical_speed_m_s"] > HARD_CONTACT_M_S
    assert td["t"] < nominal.one("lunar_touchdown")["t"] - 60.0


def test_a_thrust_loss_above_the_clamp_leaves_a_tenth_of_the_engine(before_pdi: Start) -> None:
    """Braking asks for full thrust; 95 % asked, 90 % taken: 750 N every step,
    below the lander's throttle floor at full thrust, so that floor comes down too."""
    f = before_pdi.flight(LanderCore)
    assert isinstance(f.core, LanderCore)
    _inject("engine_thrust_loss", 0.95)(f.core)
    f.until(lambda x: bool(x.powered) and x.powered[-1][0] >= T_PDI + SHORT_BURN_S)
    kept_n = (1.0 - LANDER_LOSS_CLAMP) * LANDER_ENGINE_THRUST_N
    assert len(f.powered) >= SHORT_BURN_S
    for _, thrust in f.powered:
        assert thrust == pytest.approx(kept_n, abs=THRUST_TOL_N)


def test_a_hazard_sensor_bias_moves_the_touchdown_east_by_the_bias(
        before_pdi: Start, nominal: Flight) -> None:
    f = _descend(before_pdi, setup=_inject("hazard_sensor_bias", 15.0))
    td0 = nominal.one("lunar_touchdown")
    east, north = _east_north_m(f.one("lunar_touchdown"), td0["lat_deg"], td0["lon_deg"])
    assert east == pytest.approx(15.0, abs=SPOT_TOL_M)
    assert north == pytest.approx(0.0, abs=SPOT_TOL_M)
    assert f.one("lunar_touchdown")["speed_m_s"] == pytest.approx(td0["speed_m_s"],
                                                                  abs=SPEED_TOL_M_S)


def test_a_bias_without_a_magnitude_moves_the_seeds_chosen_spot_20_m_east(
        before_pdi: Start) -> None:
    """Over another seed's terrain (seed 7), so the chosen spot is that terrain's."""
    f = _descend(before_pdi, setup=_inject("hazard_sensor_bias", seed=7))
    chosen = dg.choose_safe_spot(dg.hazard_map(7), FOOTPRINT_M)
    assert chosen != dg.choose_safe_spot(dg.hazard_map(6), FOOTPRINT_M)
    east, north = _from_site(f)
    assert east == pytest.approx(chosen[0] + BIAS_DEFAULT_M, abs=SPOT_TOL_M)
    assert north == pytest.approx(chosen[1], abs=SPOT_TOL_M)


def test_a_lander_short_of_propellant_runs_dry_and_falls(before_pdi: Start) -> None:
    """100 kg of propellant at ignition: even the best chemical engine gets
    ~140 m/s out of it, a tenth of the ~1.7 km/s orbital speed to be cancelled."""
    def short(core: LanderCore) -> None:
        core.dry_mass_kg = core.mass_kg - 100.0

    r_m = R_MOON_M + 15_000.0
    start_mass_kg = orjson.loads(before_pdi.snap)["mass_kg"]
    assert BEST_CHEMICAL_V_E_M_S * math.log(start_mass_kg / (start_mass_kg - 100.0)) \
        < 0.1 * math.sqrt(GM_MOON_M3_S2 / r_m)
    f = _descend(before_pdi, setup=short)
    phases = [e.item.body["phase"] for e in f.named("descent_phase")]
    assert phases[0] == "propellant_exhausted" and "engine_cutoff" in phases
    td = f.one("lunar_touchdown")
    assert td["propellant_kg"] < 1.0
    assert td["speed_m_s"] > HARD_CONTACT_M_S


# --- the ascender ------------------------------------------------------------------


@pytest.fixture(scope="module")
def before_liftoff() -> Start:
    """On the pad with the sample, liftoff time-tagged, a minute before it."""
    d = on_pad()
    d.deliver("command", {"op": "liftoff", "execute_at_utc": "2024-06-03T23:38:10Z"})
    d.until_t(T_LIFTOFF - 60.0)
    return _start(d)


def _ascend(start: Start, setup: Callable[[AscenderCore], None] | None = None,
            commands: Iterable[dict[str, Any]] = (), burn_s: float | None = None) -> Flight:
    f = start.flight(AscenderCore)
    assert isinstance(f.core, AscenderCore)
    if setup is not None:
        setup(f.core)
    f.step(commands)
    if burn_s is not None:
        return f.until(lambda x: bool(x.powered) and x.powered[-1][0] >= T_LIFTOFF + burn_s)
    return f.until(f.has("ascent_orbit_insertion"))


@pytest.fixture(scope="module")
def nominal_ascent(before_liftoff: Start) -> Flight:
    return _ascend(before_liftoff)


def _lit(f: Flight) -> list[float]:
    return [thrust for _, thrust in f.powered if thrust > 0.0]


def test_a_planned_ascender_thrust_loss_is_flown_longer_on_the_same_engine(
        before_liftoff: Start, nominal_ascent: Flight) -> None:
    """30 %: the guidance flies full (lowered) thrust to the target orbit, so the
    same orbit comes from a longer burn: the nominal's propellant alone would
    take 1/0.7 of its time at 70 % of the mass flow; the longer climb against
    gravity adds a little."""
    f = _ascend(before_liftoff, commands=[_plan_fault("weak", "thrust_loss", 0.3)])
    assert set(_lit(nominal_ascent)) == {ASCENDER_ENGINE_THRUST_N}
    for thrust in _lit(f):
        assert thrust == pytest.approx(0.7 * ASCENDER_ENGINE_THRUST_N, abs=THRUST_TOL_N)
    ins, ins0 = f.one("ascent_orbit_insertion"), nominal_ascent.one("ascent_orbit_insertion")
    assert ins0["burn_s"] / 0.7 < ins["burn_s"] < 1.1 * ins0["burn_s"] / 0.7
    start_kg = orjson.loads(before_liftoff.snap)["mass_kg"]
    flow, flow0 = ((start_kg - i["mass_kg"]) / i["burn_s"] for i in (ins, ins0))
    assert flow / flow0 == pytest.approx(0.7, rel=0.01)  # same exhaust velocity
    for key in ("perilune_alt_m", "apolune_alt_m"):
        assert ins[key] == pytest.approx(ins0[key], abs=1_000.0)


@pytest.mark.parametrize(("magnitude", "kept"), [
    (0.0, 1.0 - ASCENDER_LOSS_DEFAULT),  # unset: the default loss
    (0.8, 1.0 - ASCENDER_LOSS_CLAMP),  # above the clamp: the clamp
])
def test_an_ascender_thrust_loss_default_and_clamp(before_liftoff: Start, magnitude: float,
                                                   kept: float) -> None:
    def inject(core: AscenderCore) -> None:
        core.inject_fault("ascender-thrust_loss-1", "thrust_loss", magnitude=magnitude)

    f = _ascend(before_liftoff, setup=inject, burn_s=SHORT_BURN_S)
    lit = _lit(f)
    assert len(lit) >= SHORT_BURN_S
    for thrust in lit:
        assert thrust == pytest.approx(kept * ASCENDER_ENGINE_THRUST_N, abs=THRUST_TOL_N)


def test_an_ascender_short_of_propellant_burns_no_more_than_it_holds(
        before_liftoff: Start) -> None:
    """50 kg of propellant: at most ~310 m/s with the best chemical engine, far
    from orbit; the engine stops when the tanks are dry, the rest is structure."""
    dry_kg: list[float] = []

    def short(core: AscenderCore) -> None:
        core.dry_mass_kg = core.mass_kg - 50.0
        dry_kg.append(core.dry_mass_kg)

    f = _ascend(before_liftoff, setup=short)
    ins = f.one("ascent_orbit_insertion")
    assert ins["mass_kg"] >= dry_kg[0] - 1e-3
    assert ins["perilune_alt_m"] < 0.0  # the orbit meets the Moon


# --- the orbiter ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def before_tcm1() -> tuple[dict[str, Any], float]:
    d = Drive(OrbiterCore(6), mission_s_from_utc(SEPARATION_UTC))
    d.deliver("command", {"op": "probe_separation", "loi_utc": LOI_UTC})
    d.step()
    return orjson.loads(orjson.dumps(d.core.snapshot(), option=orjson.OPT_SERIALIZE_NUMPY)), \
        d.dt_s


def _tcm1_dv_m_s(before: tuple[dict[str, Any], float], magnitude: float | None) -> float:
    d = resume_orbiter(*before)
    if magnitude is not None:
        d.core.inject_fault("orbiter-thrust_loss-1", "thrust_loss", magnitude=magnitude)
    utc, command = CRUISE[0]
    d.until_t(mission_s_from_utc(utc))
    d.deliver("command", dict(command))
    d.step()
    return float(d.event("burn_start")[1]["dv_m_s"])


@pytest.mark.parametrize(("magnitude", "kept"), [
    (0.25, 0.75),  # a quarter of the thrust lost: a quarter of the impulse
    (-0.5, 1.0),  # a negative loss adds nothing
    (1.5, 0.0),  # more than all of it: no thrust at all
])
def test_an_orbiter_thrust_loss_scales_the_burn_it_delivers(
        before_tcm1: tuple[dict[str, Any], float], magnitude: float, kept: float) -> None:
    nominal_dv = _tcm1_dv_m_s(before_tcm1, None)
    assert nominal_dv > 0.1
    assert _tcm1_dv_m_s(before_tcm1, magnitude) == pytest.approx(kept * nominal_dv, rel=1e-9,
                                                                 abs=1e-9)
