"""Mutation testing of the kernel's step rule, messaging, clock, control, fault
handling and guidance: ``./task mutate [-- MODULE ...]`` (docs/mutation.md).

It runs mutmut 3 (configured in pyproject.toml ``[tool.mutmut]``) on the mutant
names of :data:`SCOPE`, then writes the report (scripts/mutation_report.py).
mutmut records once which tests call each function and runs, for each mutant,
only those tests, forked from a process that has already imported them.

Three small changes to mutmut are made here, in this process, before it runs:

* Methods decorated with a plain wrapper (``@instrumented``, every gRPC method
  of the servicers; ``@property``) are mutated too. mutmut skips every
  decorated function because copying one can repeat a decorator's side effects;
  these two have none, and the copies it makes are left undecorated, so the
  wrapper runs once, around the trampoline that picks the mutant.
* Each mutant's tests run fastest first (``pytest -x`` stops at the first
  failure, so a killed mutant costs one quick test, not its slowest).
* A mutant's run ends at its first failing test, before any teardown: a
  mutant that breaks a test often leaves a gRPC server or a task behind, and
  the teardown then hangs until mutmut's wall-time limit (a "timeout" that
  costs 20-40 s instead of a "killed" that costs one test).
* ``--test-budget-s`` can cap the recorded test time given to one mutant (the
  fastest tests are kept); off by default, and the report counts the capped.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
WALL_TIME_FILE = ROOT / "mutants" / "mutation-run.json"

#: Decorators that only wrap a call (no registration, no state at definition):
#: safe to leave on the trampoline alone.
PLAIN_WRAPPERS = frozenset({"instrumented", "property"})

_K = "services.kernel"
_VEHICLE = f"{_K}.vehicle.xǁVehicleCoreǁ"

#: Module label (the report's row) -> globs over mutmut's mutant names
#: (``package.module.x_function__mutmut_N``, ``...xǁClassǁmethod__mutmut_N``).
SCOPE: dict[str, tuple[str, ...]] = {
    "runtime (step rule)": (f"{_K}.runtime.*",),
    "simloop (step rule)": ("services.local.simloop.*",),
    "inproc (step rule)": ("services.local.inproc.*",),
    "inbox": (f"{_K}.inbox.*",),
    "envelope": (f"{_K}.envelope.*",),
    "clock": (f"{_K}.clock.*",),
    "control (vehicle)": (f"{_K}.control.*",),
    "control (ground clock)": ("services.ground.control.*",),
    "fault handling": (
        f"{_VEHICLE}clear_fault__mutmut_*",
        f"{_VEHICLE}note_faults__mutmut_*",
        f"{_VEHICLE}next_timed_s__mutmut_*",
        f"{_K}.vehicle.x__fault_end_s__mutmut_*",
        "services.orbiter.vehicle.xǁOrbiterCoreǁ_thrust_scale__mutmut_*",
        "services.lander.vehicle.xǁLanderCoreǁ_config__mutmut_*",
        "services.lander.vehicle.xǁLanderCoreǁ_descend__mutmut_*",
        "services.ascender.vehicle.xǁAscenderCoreǁ_ascent_config__mutmut_*",
    ),
    "guidance/__init__": ("services.dynamics.guidance.x_*", "services.dynamics.guidance.xǁ*"),
    "guidance/ascent": ("services.dynamics.guidance.ascent.*",),
    "guidance/descent": ("services.dynamics.guidance.descent.*",),
    "guidance/loi": ("services.dynamics.guidance.loi.*",),
    "guidance/rendezvous": ("services.dynamics.guidance.rendezvous.*",),
}

#: Short names for ``./task mutate -- NAME``: the first word of a label, or a
#: guidance file's name.
ALIASES: dict[str, tuple[str, ...]] = {
    "control": ("control (vehicle)", "control (ground clock)"),
    "faults": ("fault handling",),
    "guidance": tuple(k for k in SCOPE if k.startswith("guidance/")),
}


def labels_for(names: Sequence[str]) -> list[str]:
    """The SCOPE labels a command line names (all of them for none)."""
    if not names:
        return list(SCOPE)
    out: list[str] = []
    for name in names:
        found = ALIASES.get(name) or tuple(
            k for k in SCOPE if k.split(" ")[0] == name or k == f"guidance/{name}" or k == name)
        if not found:
            known = ", ".join(sorted({*ALIASES, *(k.split(' ')[0] for k in SCOPE)}))
            raise SystemExit(f"unknown module {name!r}; known: {known}")
        out.extend(k for k in found if k not in out)
    return out


def _plain_wrapped(node: Any) -> bool:
    import libcst as cst

    return bool(node.decorators) and all(
        isinstance(d.decorator, cst.Name) and d.decorator.value in PLAIN_WRAPPERS
        for d in node.decorators)


def _patch_decorated_methods() -> None:
    """Let mutmut mutate methods under :data:`PLAIN_WRAPPERS` (see the docstring)."""
    import libcst as cst
    from mutmut.mutation import file_mutation as fm

    skip = fm.MutationVisitor._skip_node_and_children

    def skip_unless_plain(self: Any, node: cst.CSTNode) -> bool:
        if isinstance(node, cst.FunctionDef) and _plain_wrapped(node):
            # Judge it as if undecorated; its decorator nodes stay skipped.
            return bool(skip(self, node.with_changes(decorators=[])))
        return bool(skip(self, node))

    arrange = fm.function_trampoline_arrangement

    def arrange_undecorated_copies(function: cst.FunctionDef, *args: Any, **kwargs: Any) -> Any:
        dicts, nodes, assignments, names = arrange(function, *args, **kwargs)
        if _plain_wrapped(function):
            # nodes[0] is the trampoline (keeps the decorator); the rest are the
            # original and the mutants, which the trampoline calls undecorated.
            nodes = [nodes[0], *(n.with_changes(decorators=[]) for n in nodes[1:])]
        return dicts, nodes, assignments, names

    fm.MutationVisitor._skip_node_and_children = skip_unless_plain  # type: ignore[method-assign]
    fm.function_trampoline_arrangement = arrange_undecorated_copies


def _patch_test_order(budget_s: float, capped: list[str]) -> None:
    """Run each mutant's tests fastest first; optionally cap their recorded time."""
    from mutmut.configuration import config
    from mutmut.state import state
    from mutmut.workers.isolation import ForkServerRunner

    submit: Callable[..., None] = ForkServerRunner.submit

    def submit_fastest_first(self: Any, mutant_name: str, tests: list[str],
                             cpu_time_limit: int, estimated_time: float) -> None:
        duration = state().duration_by_test
        ordered = sorted(tests, key=lambda t: (duration.get(t, 0.0), t))
        if budget_s > 0:
            kept: list[str] = []
            spent = 0.0
            for test in ordered:
                if kept and spent + duration.get(test, 0.0) > budget_s:
                    capped.append(mutant_name)
                    break
                kept.append(test)
                spent += duration.get(test, 0.0)
            ordered, estimated_time = kept, spent
            cfg = config()
            cpu_time_limit = math.ceil(
                (estimated_time + cfg.timeout_constant) * cfg.timeout_multiplier * 2)
        submit(self, mutant_name, ordered, cpu_time_limit, estimated_time)

    ForkServerRunner.submit = submit_fastest_first  # type: ignore[method-assign]


class _EndAtFirstFailure:
    """pytest plugin for a mutant's run: the first failure (setup, call or
    teardown) is the verdict, so leave at once with pytest's failure code."""

    def pytest_runtest_logreport(self, report: Any) -> None:
        if report.failed:
            os._exit(1)


def _patch_end_at_first_failure() -> None:
    from mutmut.runners.harness import PytestRunner
    from mutmut.utils.file_utils import change_cwd

    run_tests = PytestRunner.run_tests

    def run_mutant_tests(self: Any, *, mutant_name: str | None, tests: Any) -> int:
        if mutant_name is None:  # the clean and forced-fail runs report normally
            return int(run_tests(self, mutant_name=mutant_name, tests=tests))
        with change_cwd("mutants"):
            return int(self.execute_pytest(self._pytest_args_regular_run(tests),
                                           plugins=[_EndAtFirstFailure()]))

    PytestRunner.run_tests = run_mutant_tests  # type: ignore[method-assign]


def unfinished(globs: Sequence[str]) -> list[str]:
    """Mutants of ``globs`` without a result in mutants/ (to resume a stopped run)."""
    import fnmatch

    names: list[str] = []
    for meta in sorted((ROOT / "mutants" / "services").rglob("*.py.meta")):
        codes = json.loads(meta.read_text())["exit_code_by_key"]
        names.extend(n for n, code in codes.items()
                     if code is None and any(fnmatch.fnmatchcase(n, g) for g in globs))
    return names


def run(labels: Sequence[str], budget_s: float, workers: int | None, resume: bool) -> None:
    """Run mutmut on the mutants of ``labels`` and record the wall time."""
    import mutmut.__main__ as mm

    _patch_decorated_methods()
    _patch_end_at_first_failure()
    capped: list[str] = []
    _patch_test_order(budget_s, capped)
    globs = [g for label in labels for g in SCOPE[label]]
    if resume:
        globs = unfinished(globs)
        if not globs:
            return
    started = time.monotonic()  # wall time of the run, for the report only
    started_utc = _utc_now()
    try:
        mm._run(globs, workers)
    finally:
        _record_run({"labels": list(labels), "resumed": resume,
                     "started_utc": started_utc, "ended_utc": _utc_now(),
                     "wall_time_s": round(time.monotonic() - started, 1),
                     "workers": workers or os.cpu_count(), "test_budget_s": budget_s,
                     "capped": len(capped)})


def _utc_now() -> str:
    """Wall-clock time of day, for the report's account of a run only."""
    return datetime.now(UTC).isoformat(timespec="seconds")


def _record_run(run: dict[str, Any]) -> None:
    """Append this run to the list the report sums (a resumed run adds to it)."""
    runs = json.loads(WALL_TIME_FILE.read_text()) if WALL_TIME_FILE.exists() else []
    WALL_TIME_FILE.parent.mkdir(exist_ok=True)
    WALL_TIME_FILE.write_text(json.dumps([*runs, run], indent=1))


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("modules", nargs="*",
                        help="modules to mutate (default: all): " + ", ".join(SCOPE))
    parser.add_argument("--test-budget-s", type=float, default=0.0,
                        help="cap the recorded test time per mutant (0: no cap)")
    parser.add_argument("--workers", type=int, default=None,
                        help="mutants tested at once (default: the CPU count)")
    parser.add_argument("--resume", action="store_true",
                        help="run only the mutants without a result in mutants/")
    parser.add_argument("--no-report", action="store_true", help="skip writing docs/mutation.md")
    args = parser.parse_args(argv)
    labels = labels_for(args.modules)
    run(labels, args.test_budget_s, args.workers, args.resume)
    if not args.no_report:
        sys.path.insert(0, str(Path(__file__).parent))
        import mutation_report

        # Only a run of every module rewrites docs/mutation.md; one module's
        # run prints its rows (the others show as not run).
        mutation_report.main([] if not args.modules and not args.resume else ["--no-doc"])


if __name__ == "__main__":
    main()
