"""The lander on the surface: payloads, sampling, power and heat.

Sampling (reference timeline row 16: drill and scoop over ~2 days; the
total returned is constants.SAMPLE_MASS_G). Masses are kept in integer
milligrams so that the drill and scoop increments, drawn from the seeded
RNG, add up to exactly 1,935.3 g: the drill total is drawn, the scoop total
is the rest, and the last increment of each tool takes what is left.

Power: body-mounted arrays, assumed to be steered in azimuth and tilted
45 deg up (an assumption: CE-6 array geometry is unpublished), rated 1,200 W
at 1 AU; output from ``power.solar_power_w`` with the Sun's elevation at the
site; a 2,000 Wh battery (assumption). Heat: one lumped node relaxing with
a 3 h time constant towards an equilibrium set by the Sun's elevation and
the internal load (a crude stand-in for the lander's radiators).

NILS (the ESA/ESA-IRAP negative-ion instrument) warms when on; above
``NILS_OFF_C`` it is switched off until it cools below ``NILS_ON_C``,
which makes it run intermittently as it did on CE-6 (reference (c): its
operation was limited by temperature).
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field

import numpy as np

from services.dynamics import frames
from services.dynamics.constants import SAMPLE_MASS_G
from services.dynamics.power import Battery, battery_step, solar_power_w, sun_direction_eci

#: Payloads switched on by ``surface_setup`` (reference (c) "Payloads"), with
#: their power in W (assumptions, of the order of such instruments).
PAYLOAD_POWER_W: dict[str, float] = {
    "landing_camera": 8.0,
    "panoramic_camera": 12.0,
    "mineral_spectrometer": 20.0,
    "soil_structure_radar": 25.0,
    "DORN": 12.0,
    "NILS": 18.0,
    "INRRI": 0.0,  # passive laser retro-reflector
}
PASSIVE_PAYLOADS = frozenset({"INRRI"})
SAMPLE_TOTAL_MG = round(SAMPLE_MASS_G * 1000.0)
ARRAY_RATED_W = 1_200.0
ARRAY_TILT_RAD = math.radians(45.0)
BATTERY_CAPACITY_WH = 2_000.0
BASE_LOAD_W = 180.0
DRILL_LOAD_W = 300.0
SCOOP_LOAD_W = 150.0
THERMAL_TAU_S = 3.0 * 3_600.0
ENV_STEP_S = 1_800.0
NILS_OFF_C = 60.0
NILS_ON_C = 40.0
NILS_TAU_S = 1_800.0
NILS_RISE_C = 45.0  # NILS settles this much above the deck when running
#: Sampling cadence (assumptions that fit the 2-day surface stay).
DRILL_INCREMENTS = 9
DRILL_INTERVAL_S = 1_200.0
RADAR_SURVEY_S = 900.0
SCOOP_COUNT = 12
SCOOP_INTERVAL_S = 3_600.0


@dataclass
class Tool:
    """A sampling tool's remaining schedule of increments (mg)."""

    increments_mg: list[int] = field(default_factory=list)
    depths_m: list[float] = field(default_factory=list)
    next_s: float | None = None
    interval_s: float = 0.0
    done_mg: int = 0
    count: int = 0

    @property
    def active(self) -> bool:
        return self.next_s is not None


def _split(total_mg: int, parts: int, rng: random.Random) -> list[int]:
    """Random positive integer parts summing to ``total_mg`` exactly."""
    weights = [0.5 + rng.random() for _ in range(parts)]
    scale = total_mg / sum(weights)
    out = [int(w * scale) for w in weights[:-1]]
    out.append(total_mg - sum(out))
    return out


@dataclass
class Surface:
    """Surface state of the lander."""

    site_fixed_m: list[float]
    payloads_on: list[str] = field(default_factory=list)
    setup_done: bool = False
    drill: Tool = field(default_factory=Tool)
    scoop: Tool = field(default_factory=Tool)
    drill_done: bool = False
    scoop_done: bool = False
    flag: bool = False
    sample_mg: int = 0
    battery_wh: float = 0.5 * BATTERY_CAPACITY_WH
    temperature_c: float = 20.0
    nils_temperature_c: float = 20.0
    solar_w: float = 0.0
    load_w: float = BASE_LOAD_W
    sun_elevation_deg: float = 0.0
    env_t_s: float | None = None  # when power and heat were last brought up to date

    # --- sampling ---------------------------------------------------------
    def start_drill(self, t_s: float, rng: random.Random) -> None:
        # Drill share drawn per seed (CE-5 drilled far less than it scooped).
        drill_mg = rng.randint(round(0.15 * SAMPLE_TOTAL_MG), round(0.35 * SAMPLE_TOTAL_MG))
        depths = [round(0.08 + 0.06 * rng.random(), 4) for _ in range(DRILL_INCREMENTS)]
        self.drill = Tool(_split(drill_mg, DRILL_INCREMENTS, rng), depths,
                          t_s + RADAR_SURVEY_S + DRILL_INTERVAL_S, DRILL_INTERVAL_S)

    def start_scoop(self, t_s: float, rng: random.Random) -> None:
        scoop_mg = SAMPLE_TOTAL_MG - self.drill.done_mg
        self.scoop = Tool(_split(scoop_mg, SCOOP_COUNT, rng), [], t_s + SCOOP_INTERVAL_S,
                          SCOOP_INTERVAL_S)

    def next_event_s(self) -> float | None:
        times = [t.next_s for t in (self.drill, self.scoop) if t.next_s is not None]
        return min(times) if times else None

    def take_increments(self, t_s: float) -> list[tuple[str, int, float]]:
        """Increments due by ``t_s``: (tool, mg, depth_m)."""
        got: list[tuple[str, int, float]] = []
        for name, tool in (("drill", self.drill), ("scoop", self.scoop)):
            while tool.next_s is not None and tool.next_s <= t_s + 1e-6:
                mg = tool.increments_mg[tool.count]
                depth = sum(tool.depths_m[: tool.count + 1]) if tool.depths_m else 0.0
                tool.count += 1
                tool.done_mg += mg
                self.sample_mg += mg
                got.append((name, mg, round(depth, 4)))
                done = tool.count >= len(tool.increments_mg)
                tool.next_s = None if done else tool.next_s + tool.interval_s
        return got

    # --- power and heat ---------------------------------------------------
    def environment_due(self, t_s: float) -> bool:
        """Power and heat change over hours (3 h and 30 min time constants, exact
        relaxation over any step): update every ENV_STEP_S."""
        return self.env_t_s is None or t_s - self.env_t_s >= ENV_STEP_S - 1e-6

    def update_environment(self, t_s: float) -> list[tuple[str, str]]:
        """Advance power, battery and temperatures; return NILS switchings."""
        dt_s = 0.0 if self.env_t_s is None else t_s - self.env_t_s
        self.env_t_s = t_s
        r_mci = frames.mci_from_moon_fixed(np.asarray(self.site_fixed_m), t_s)
        up = r_mci / np.linalg.norm(r_mci)
        r_eci = frames.eci_from_mci(r_mci, t_s)
        sin_el = float(sun_direction_eci(r_eci, t_s) @ up)
        elev = math.asin(max(-1.0, min(1.0, sin_el)))
        self.sun_elevation_deg = math.degrees(elev)
        cos_inc = math.cos(elev - ARRAY_TILT_RAD) if elev > 0.0 else 0.0
        self.solar_w = solar_power_w(ARRAY_RATED_W, r_eci, t_s, cos_inc) if elev > -0.01 else 0.0
        self.load_w = (BASE_LOAD_W + sum(PAYLOAD_POWER_W[p] for p in self.payloads_on)
                       + (DRILL_LOAD_W if self.drill.active else 0.0)
                       + (SCOOP_LOAD_W if self.scoop.active else 0.0))
        battery = Battery(BATTERY_CAPACITY_WH, min(max(self.battery_wh, 0.0), BATTERY_CAPACITY_WH))
        self.battery_wh = battery_step(battery, self.solar_w, self.load_w, dt_s).battery.charge_wh
        t_eq = -40.0 + 110.0 * max(0.0, sin_el) + 0.05 * self.load_w
        self.temperature_c = _relax(self.temperature_c, t_eq, dt_s, THERMAL_TAU_S)
        return self._nils_thermal(dt_s)

    def _nils_thermal(self, dt_s: float) -> list[tuple[str, str]]:
        running = "NILS" in self.payloads_on
        target = self.temperature_c + (NILS_RISE_C if running else 0.0)
        self.nils_temperature_c = _relax(self.nils_temperature_c, target, dt_s, NILS_TAU_S)
        if running and self.nils_temperature_c >= NILS_OFF_C:
            self.payloads_on.remove("NILS")
            return [("payload_off", "NILS")]
        if (self.setup_done and not running and self.nils_temperature_c <= NILS_ON_C
                and self.temperature_c + NILS_RISE_C > NILS_ON_C):
            self.payloads_on.append("NILS")
            return [("payload_on", "NILS")]
        return []

    def values(self) -> dict[str, float]:
        return {"power_w": round(self.solar_w, 3), "load_w": round(self.load_w, 3),
                "battery_soc_ratio": round(self.battery_wh / BATTERY_CAPACITY_WH, 6),
                "temperature_c": round(self.temperature_c, 3),
                "nils_temperature_c": round(self.nils_temperature_c, 3),
                "sun_elevation_deg": round(self.sun_elevation_deg, 4),
                "drill_depth_m": round(sum(self.drill.depths_m[: self.drill.count]), 4),
                "drill_sample_g": self.drill.done_mg / 1000.0,
                "scoop_sample_g": self.scoop.done_mg / 1000.0}


def _relax(value: float, target: float, dt_s: float, tau_s: float) -> float:
    return target + (value - target) * math.exp(-dt_s / tau_s)
