"""The whole twin in one process (``LocalTwin``) with idle vehicle cores.

::

    python bench/_kernel_inproc.py --nats URL --mission M --plan PLAN.json --seconds S

Every service keeps its own NATS connection, so the clock protocol runs over
the server exactly as between processes, on one uvloop event loop (as
``run_service`` uses). The vehicles do no physics: what is left is the
kernel's own cost per step. Runs ``--seconds`` of wall time from the first
step, then prints one JSON line (steps done, wall seconds, steps/s).
``--cprofile`` prints where the Python time goes per function (to stderr);
the profiler slows everything, so read its shares, not its rate.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import sys
import time
from pathlib import Path
from typing import Any

import orjson
from _stats import run_on

from services.ground.plan import load_plan
from services.kernel.config import VEHICLES
from services.kernel.vehicle import Outbox, VehicleCore
from services.local.inproc import CoreFactory, LocalTwin


class IdleCore(VehicleCore):
    """A vehicle that only keeps time (600 s coast steps): no physics, no downlink."""

    downlink_enabled = False

    def __init__(self, name: str, seed: int) -> None:
        self.name = name  # before super().__init__: it seeds the rng from the name
        super().__init__(seed)

    def after_step(self, t_from: float, t_to: float, out: Outbox) -> None:
        """Nothing: the base class runs the modelled downlink here."""


def idle(name: str) -> CoreFactory:
    return lambda seed: IdleCore(name, seed)


async def run(nats_url: str, mission: str, plan_path: Path, seconds: float) -> dict[str, Any]:
    cores = {v: idle(v) for v in VEHICLES}
    async with LocalTwin(nats_url, mission, load_plan(plan_path), cores=cores) as twin:
        clock, ground = twin.ground.clock, twin.ground
        await clock.wait_until(lambda: ground.step >= 1)
        first_step, started = ground.step, time.perf_counter()
        await clock.wait_until(lambda: time.perf_counter() - started >= seconds)
        steps, wall_s = ground.step - first_step, time.perf_counter() - started
    return {"steps": steps, "wall_s": wall_s, "steps_per_s": steps / wall_s}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nats", required=True)
    parser.add_argument("--mission", required=True)
    parser.add_argument("--plan", type=Path, required=True)
    parser.add_argument("--seconds", type=float, default=11.0)
    parser.add_argument("--cprofile", action="store_true",
                        help="run under cProfile; print the top functions to stderr")
    a = parser.parse_args()
    result: dict[str, Any] = {}

    async def go() -> None:
        result.update(await run(a.nats, a.mission, a.plan, a.seconds))

    if a.cprofile:
        profile = cProfile.Profile()
        profile.runcall(run_on, "uvloop", go)
        stats = pstats.Stats(profile, stream=sys.stderr)
        stats.sort_stats("tottime").print_stats(25)
    else:
        run_on("uvloop", go)
    sys.stdout.write(orjson.dumps(result).decode() + "\n")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
