"""CPU of the orbiter core over its whole mission, driven like the clock drives it.

The other vehicles are replaced by the messages they would send (the
ascender's target states from the aim point, its sample hand-over), so the
number is the orbiter's own. Prints the event list, step count and CPU
seconds, split into the one-off solves (TLI, TEI, return plane) and the rest.

    .venv/bin/python bench/bench_orbiter.py
"""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np
import orjson

from services.dynamics import change6
from services.dynamics.burns import rtn_basis
from services.dynamics.constants import GM_MOON_M3_S2, SAMPLE_MASS_G
from services.dynamics.propagate import Propagator
from services.dynamics.targeting import MOON_MODEL
from services.dynamics.timescale import iso_utc, mission_s_from_utc
from services.ground.plan import NOMINAL_PLAN
from services.kernel.envelope import Envelope
from services.kernel.vehicle import Outbox
from services.orbiter import legs
from services.orbiter.vehicle import OrbiterCore

#: The nominal plan's facts the orbiter's commands carry.
FACTS: dict[str, str] = orjson.loads(NOMINAL_PLAN.read_bytes())["facts"]
LOI = {"loi_utc": FACTS["loi_utc"]}
PDI = {"pdi_utc": FACTS["pdi_utc"]}
EI = {"ei_utc": FACTS["ei_utc"]}
PLAN: list[tuple[str, dict[str, Any]]] = [
        ("2024-05-03T10:04:00Z", {"op": "probe_separation", **LOI}),
        ("2024-05-04T03:00:00Z", {"op": "trajectory_correction"}),
        ("2024-05-06T12:00:00Z", {"op": "trajectory_correction"}),
        ("2024-05-08T02:12:00Z", {"op": "lunar_orbit_insertion"}),
        ("2024-05-08T08:00:00Z", {"op": "release_icubeq"}),
        ("2024-05-10T00:00:00Z", {"op": "orbit_adjust", "stage": 1, **PDI}),
        ("2024-05-14T00:00:00Z", {"op": "orbit_adjust", "stage": 2, **PDI}),
        ("2024-05-20T00:00:00Z", {"op": "orbit_adjust", "stage": 3, **PDI}),
        ("2024-05-28T12:00:00Z", {"op": "orbit_adjust", "stage": 4, **PDI}),
        ("2024-05-30T06:00:00Z", {"op": "separate_lander"}),
        ("2024-06-06T05:31:00Z", {"op": "rendezvous"}),
        ("2024-06-06T08:30:00Z", {"op": "undock"}),
        ("2024-06-15T00:00:00Z", {"op": "prepare_return", **EI}),
        ("2024-06-19T00:00:00Z", {"op": "trans_earth_injection", **EI}),
        ("2024-06-23T00:00:00Z", {"op": "trajectory_correction", "target": "entry_interface"}),
        ("2024-06-25T05:21:00Z", {"op": "separate_returner"})]
T_AIM = mission_s_from_utc("2024-06-06T05:30:00Z")
T_END = mission_s_from_utc("2024-06-25T06:37:00Z")
ONE_OFF = {"probe_separation", "prepare_return", "trans_earth_injection"}


class Ascender:
    """Reports a state 50 km ahead of and 10 km above the orbiter from the aim point."""

    def __init__(self) -> None:
        self.r: Any = None
        self.v: Any = None
        self.t = 0.0
        self.prop = Propagator(MOON_MODEL)
        self.sent_sample = False

    def messages(self, core: OrbiterCore, t: float) -> list[dict[str, Any]]:
        if t < T_AIM or core.flight is None or self.sent_sample:
            return []
        if core.phase == "docked":
            self.sent_sample = True
            return [{"type": "sample_handover", "handover_id": "sample-1", "from": "ascender",
                     "to": "returner", "container_id": "CE6-SC", "sample_mass_g": SAMPLE_MASS_G}]
        if self.r is None:
            f = core.flight
            basis = rtn_basis(f.r_m, f.v_m_s)
            self.r = f.r_m + basis.T @ np.array([10e3, 50e3, 0.0])
            speed = math.sqrt(GM_MOON_M3_S2 / float(np.linalg.norm(self.r)))
            self.v = speed * np.cross(basis[2], self.r / np.linalg.norm(self.r))
            self.t = t
        self.r, self.v = self.prop.step(self.r, self.v, self.t, t - self.t)
        self.t = t
        return [{"type": "target_state", "r_m": self.r.tolist(), "v_m_s": self.v.tolist(),
                 "t_s": t, "mass_kg": 450.0}]


def main() -> None:
    # the one-off TLI solve, timed apart (the core's separation asks for the same target)
    legs.tli_solution(change6.lunar_arrival_target(mission_s_from_utc(PLAN[0][0]),
                                                   mission_s_from_utc(FACTS["loi_utc"])))
    core, asc = OrbiterCore(1), Ascender()
    plan = [(mission_s_from_utc(u), c) for u, c in PLAN]
    stops = sorted({t for t, _ in plan} | {T_AIM})
    t, dt, seq, steps = 0.0, 1.0, 0, 0
    cpu_one_off, events = 0.0, []
    cpu0 = time.process_time()
    while t < T_END - 1e-9:
        nxt = min((s for s in stops if s > t + 1e-9), default=math.inf)
        t_to = t + max(min(dt, nxt - t, T_END - t, 600.0 if steps == 0 else math.inf), 1e-3)
        out = Outbox()
        for when, command in plan:
            if abs(when - t) < 1e-9:
                seq += 1
                c1 = time.process_time()
                core.apply(Envelope("b", "ground", seq, t, steps, "command", command), out)
                if command["op"] in ONE_OFF:
                    cpu_one_off += time.process_time() - c1
                dt = min(dt, 600.0)  # ground's coast step caps the step after a command
                t_to = t + max(min(dt, nxt - t), 1e-3)
        for body in asc.messages(core, t):
            seq += 1
            core.apply(Envelope("b", "ascender", seq, t, steps, "transfer", body), out)
        dt = core.advance(t, t_to, out)
        events += [i for i in out.items if i.kind == "evt"]
        steps, t = steps + 1, t_to
    cpu = time.process_time() - cpu0
    skip = {"burn_start", "burn_end", "closing_burn", "frame_switch"}
    for e in events:
        if e.body["name"] not in skip:
            extra = {k: round(v, 2) for k, v in e.body.items()
                     if k in ("dv_m_s", "perilune_km", "apolune_km", "period_h", "alt_m")}
            print(f"{iso_utc(e.t)}  {e.body['name']:<28} {extra}")
    print(f"steps {steps}  cpu total {cpu:.2f} s  one-off solves {cpu_one_off:.2f} s  "
          f"rest {cpu - cpu_one_off:.2f} s  (TLI solve before: ~0.5 s)")


if __name__ == "__main__":
    main()
