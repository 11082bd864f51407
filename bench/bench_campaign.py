"""Monte Carlo throughput: missions per core-minute, and 1 against 2 Dask workers.

Run: ``.venv/bin/python bench/bench_campaign.py [--cases 8] [--plan nominal]``

Prints tables; asserts nothing (target: at least 4 nominal missions per
core-minute in-process).

1. One process, no Dask: the nominal mission flown ``--repeat`` times by
   ``fly_case`` (SimLoop, the one step rule, no bus): CPU seconds per
   mission and missions per core-minute, and where the CPU goes (cProfile of
   one mission, by vehicle core and by the kernel's step rule and routing).
2. The same ``--cases`` dispersed cases on a LocalCluster of 1 and then 2
   worker processes (``fly_cases``, what ``twin campaign run`` calls): wall
   seconds, cases per wall minute, the speed-up, and the workers' CPU per
   case. On this 2-core machine the ideal speed-up is 2.
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import tempfile
import time
from pathlib import Path

from rich.console import Console

from services.campaign.case import CaseSpec, fly_case
from services.campaign.run import CampaignDir, case_spec, fly_cases
from services.campaign.spec import parse_campaign

#: Dispersions of the scaling run: every vehicle's, so each case flies a
#: slightly different mission (the cost of a case, not of the nominal one).
DISPERSIONS = {
    "lander.engine.thrust_scale": {"dist": "normal", "sigma": 1, "unit": "%"},
    "lander.navigation.bias_east_m": {"dist": "normal", "sigma": 10, "unit": "m"},
    "orbiter.engine.isp_scale": {"dist": "normal", "sigma": 0.3, "unit": "%"},
    "reentry.atmosphere.density_scale": {"dist": "normal", "sigma": 5, "unit": "%"},
}


def in_process(plan: str, repeat: int) -> None:
    cpu: list[float] = []
    for i in range(repeat):
        t0 = time.process_time()
        row = fly_case(CaseSpec(i, plan, 6, {}))
        cpu.append(time.process_time() - t0)
        assert row["status"] == "ok", row["reason"]
    best, mean = min(cpu), sum(cpu) / len(cpu)
    print(f"\n## In-process ({plan}, {repeat} runs, no Dask)\n")
    print("| figure | value |\n|---|---|")
    print(f"| CPU s per mission (best / mean) | {best:.2f} / {mean:.2f} |")
    print(f"| missions per core-minute (mean) | {60.0 / mean:.1f} (target >= 4) |")
    prof = cProfile.Profile()
    prof.enable()
    fly_case(CaseSpec(99, plan, 6, {}))
    prof.disable()
    stats = pstats.Stats(prof)
    total = sum(v[2] for v in stats.stats.values())  # type: ignore[attr-defined]
    by_area: dict[str, float] = {}
    for (file, _, _), (_, _, tt, _, _) in stats.stats.items():  # type: ignore[attr-defined]
        area = _area(file)
        by_area[area] = by_area.get(area, 0.0) + tt
    print("\nWhere one mission's CPU goes (own time of the functions in each area):\n")
    print("| area | share |\n|---|---|")
    for area, tt in sorted(by_area.items(), key=lambda kv: -kv[1])[:10]:
        print(f"| {area} | {100.0 * tt / total:.0f} % |")


def _area(file: str) -> str:
    parts = Path(file).parts
    if "services" in parts:
        i = parts.index("services")
        return "/".join(parts[i:i + 3]).removesuffix(".py")
    if "numpy" in parts:
        return "numpy"
    if "scipy" in parts:
        return "scipy"
    return "python (builtins, stdlib)"


def scaling(plan: str, cases: int) -> None:
    camp = parse_campaign({"name": "bench", "seed": 7, "plan": plan, "cases": cases,
                           "dispersions": DISPERSIONS})
    specs = [case_spec(camp, k) for k in range(cases)]
    console = Console(quiet=True)
    results: dict[int, tuple[float, float]] = {}
    for workers in (1, 2):
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.monotonic()
            rows = fly_cases(specs, CampaignDir(Path(tmp)), workers=workers, scheduler=None,
                             console=console, campaign="bench")
            wall = time.monotonic() - t0
        assert all(r["status"] == "ok" for r in rows), [r["reason"] for r in rows]
        cpu = sum(r["cost"]["cpu_s"] for r in rows) / len(rows)
        results[workers] = (wall, cpu)
    print(f"\n## LocalCluster, {cases} dispersed cases ({plan})\n")
    print("| workers | wall s (cluster start included) | cases per wall minute | "
          "CPU s per case | speed-up |\n|---|---|---|---|---|")
    for workers, (wall, cpu) in results.items():
        print(f"| {workers} | {wall:.1f} | {60.0 * cases / wall:.1f} | {cpu:.2f} | "
              f"{results[1][0] / wall:.2f} |")
    print(f"\n{os.cpu_count()} cores; load average {os.getloadavg()[0]:.1f} at the end.")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--plan", default="nominal")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--cases", type=int, default=8)
    args = parser.parse_args()
    in_process(args.plan, args.repeat)
    scaling(args.plan, args.cases)


if __name__ == "__main__":
    main()
