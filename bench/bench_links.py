"""Cost of the modelled comms per clock step, and link statistics of a scenario.

Prints: microseconds per `links.link_for` call (new instant / cached instant),
per `run_downlink` (a vehicle's whole after_step), and, for a SimLoop scenario
of 3 days from touchdown (a lander at the site, a 200 km orbiter, Queqiao-2
and ground, 600 s steps), each vehicle's frames sent / received / played back
/ missing, max backlog, link fraction and acquisitions as ground reports them.

    .venv/bin/python bench/bench_links.py
"""

from __future__ import annotations

import math
import time

from services.dynamics import comms, frames, links
from services.dynamics.constants import GM_MOON_M3_S2, R_MOON_M
from services.dynamics.kepler import Elements, propagate_kepler, rv_from_elements
from services.dynamics.timescale import mission_s_from_utc
from services.ground.plan import parse_plan
from services.ground.vehicle import GroundCore
from services.kernel.radio import run_downlink
from services.kernel.vehicle import Outbox, Summary, VehicleCore
from services.local.simloop import SimLoop
from services.relay.vehicle import RelayCore

T0_S = mission_s_from_utc("2024-06-01T22:23:16Z")


class SiteCore(VehicleCore):
    name = "lander"

    def advance(self, t_from: float, t_to: float, out: Outbox) -> float:
        self.t_s = t_to
        return 600.0

    def summary(self) -> Summary:
        r = comms.landing_site_mci_m(self.t_s)
        return Summary(phase="surface", frame="MCI", central_body="moon",
                       r_m=(float(r[0]), float(r[1]), float(r[2])))


class OrbitCore(VehicleCore):
    name = "orbiter"
    el = Elements(R_MOON_M + 200_000.0, 0.0, math.radians(137.0), 0.3, 0.0, 0.0)

    def advance(self, t_from: float, t_to: float, out: Outbox) -> float:
        self.t_s = t_to
        return 600.0

    def summary(self) -> Summary:
        r0, v0 = rv_from_elements(self.el, GM_MOON_M3_S2)
        r, v = propagate_kepler(r0, v0, self.t_s - T0_S, GM_MOON_M3_S2)
        return Summary(phase="lunar_orbit", frame="MCI", central_body="moon",
                       r_m=(float(r[0]), float(r[1]), float(r[2])),
                       v_m_s=(float(v[0]), float(v[1]), float(v[2])))


def per_call_us(fn: object, n: int) -> float:
    """CPU microseconds per call (process time: steadier than wall on a busy machine)."""
    t0 = time.process_time()
    for k in range(n):
        fn(k)  # type: ignore[operator]
    return (time.process_time() - t0) / n * 1e6


def main() -> None:
    site = frames.eci_from_mci(comms.landing_site_mci_m(T0_S), T0_S)
    links.link_for("lander", site, T0_S)  # warm the tables
    new = per_call_us(lambda k: links.link_for("lander", site, T0_S + 17.0 * k + 0.5), 2_000)
    cached = per_call_us(lambda k: links.link_for("lander", site, T0_S + 17.0), 2_000)
    print(f"link_for, new instant:     {new:7.1f} us")
    print(f"link_for, cached instant:  {cached:7.1f} us")
    r_site = comms.landing_site_mci_m(T0_S)

    class FixedCore(SiteCore):  # summary() at no cost: measures the downlink alone
        def summary(self) -> Summary:
            return Summary(phase="surface", frame="MCI", central_body="moon",
                           r_m=(float(r_site[0]), float(r_site[1]), float(r_site[2])))

    core = FixedCore(6)
    out = Outbox()

    def one(k: int) -> None:
        core.t_s = T0_S + 600.0 * (k + 1)
        run_downlink(core, core.t_s - 600.0, core.t_s, out)
        out.drain()

    print(f"run_downlink (after_step): {per_call_us(one, 2_000):7.1f} us per vehicle step")

    plan = parse_plan({"name": "bench", "end": {"at": "2024-06-04T22:23:16Z"}, "items": []})
    ground = GroundCore(6, plan)
    cores: dict[str, VehicleCore] = {"lander": SiteCore(6), "orbiter": OrbitCore(6),
                                     "relay": RelayCore(6)}
    loop = SimLoop(ground, cores)
    loop.t_s = T0_S
    for c in cores.values():
        c.t_s = T0_S
    t0 = time.process_time()
    res = loop.run()
    wall = time.process_time() - t0
    print(f"SimLoop 3 days, 3 vehicles + ground: {res.steps} steps, {wall:.2f} s CPU, "
          f"{wall / res.steps * 1e3:.2f} ms/step, {res.messages} messages")
    v = ground.summary().values
    print(f"{'vehicle':8} {'sent':>6} {'recv':>6} {'played':>6} {'relayed':>7} {'missing':>7} "
          f"{'maxbl':>5} {'link%':>6} {'acq':>4}")
    for name in ("lander", "orbiter", "relay"):
        print(f"{name:8} {v[f'frames_sent_{name}']:6.0f} {v[f'frames_received_{name}']:6.0f} "
              f"{v[f'frames_played_back_{name}']:6.0f} {v[f'frames_relayed_{name}']:7.0f} "
              f"{v[f'frames_missing_{name}']:7.0f} {v[f'max_backlog_{name}']:5.0f} "
              f"{100 * v[f'link_fraction_{name}']:6.1f} {v[f'link_acquisitions_{name}']:4.0f}")
    print("relay store max:", cores["relay"].summary().values["relay_max_store_frames"],
          "battery soc:", round(cores["relay"].summary().values["battery_soc_ratio"], 3))
    print("paths:", {k: s for k, s in ground.summary().info.items() if k.startswith("path_")})


if __name__ == "__main__":
    main()
