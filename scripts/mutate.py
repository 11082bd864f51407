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
* The stats run counts each test's setup with its call: the budget and the
  fastest-first order then see a module fixture that flies a whole descent.
* A test that reads a class- or module-scoped fixture is run for the
  functions that fixture calls (mutmut credits them only to the first test
  that set the fixture up, so a check on a shared result could kill nothing).
* Each module is judged by its own tests (:data:`TESTS`): the guidance by the
  guidance unit tests, not by every twin-flying test that passes through it.
  The stats run records only the tests of the modules being run, so a run of
  the guidance does not wait on (or break with) the integration tests.

* Each mutant keeps only the tests that executed the statement it changes
  (per-test line coverage, scripts/mutate_lines.py; ``--by-function`` off).
* A mutant's test is stopped at 5 x its recorded time (3 s floor), not 10 s.
* Each mutant's run records its CPU and wall seconds (``mutants/mutant-times.jsonl``):
  the report shows per module where a run's time goes.

``--survivors`` runs again only the mutants no test detected, against the
tests added since. Each run records its wall and CPU time in
``mutants/mutation-run.json``; on a shared machine the CPU time is the
measure of what a run costs (docs/mutation.md, "Time").
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
WALL_TIME_FILE = ROOT / "mutants" / "mutation-run.json"
#: One JSON line per mutant run: its name, exit code, CPU and wall seconds (of the
#: forked test process; a run mutmut had to kill leaves no line). The report sums
#: them per module, to show where a run's time goes.
MUTANT_TIMES_FILE = ROOT / "mutants" / "mutant-times.jsonl"

#: Decorators that only wrap a call (no registration, no state at definition):
#: safe to leave on the trampoline alone.
PLAIN_WRAPPERS = frozenset({"instrumented", "property"})

_K = "services.kernel"
_VEHICLE = f"{_K}.vehicle.xǁVehicleCoreǁ"

#: Module label (the report's row) -> globs over mutmut's mutant names
#: (``package.module.x_function__mutmut_N``, ``...xǁClassǁmethod__mutmut_N``).
SCOPE: dict[str, tuple[str, ...]] = {
    "steprule": (f"{_K}.steprule.*",),
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
        f"{_VEHICLE}run_timed__mutmut_*",
        f"{_VEHICLE}receive_command__mutmut_*",
        f"{_K}.vehicle.x__fault_end_s__mutmut_*",
        f"{_VEHICLE}fault_kinds_known__mutmut_*",
        f"{_VEHICLE}inject_fault__mutmut_*",
        f"{_VEHICLE}planned_fault__mutmut_*",
        f"{_K}.faults.*",
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

#: Module label -> the test paths (prefixes of pytest node ids) that may judge
#: its mutants; a label not listed is judged by every selected test. mutmut
#: records every test that *calls* a function, and an integration test calls
#: nearly all of them: without this, a guidance survivor would run, after the
#: unit tests that check it, every twin-flying test that merely passes through
#: it (seconds each, none of them looking at the numbers it changes).
_IT = "tests/integration/"
TESTS: dict[str, tuple[str, ...]] = {
    **{label: ("tests/unit/guidance/",) for label in SCOPE if label.startswith("guidance/")},
    # The servicers are judged by the tests that call them over gRPC.
    "control (vehicle)": tuple(f"{_IT}test_{name}.py" for name in (
        "vehicle_control", "control_effects", "burn_commands", "fault_effects", "grpc")),
    "control (ground clock)": tuple(f"{_IT}test_{name}.py" for name in (
        "clock", "clock_control", "clock_mutants", "control_effects", "grpc", "fault_effects")),
    # The step rule and the kernel by the tests that drive them: the loop and
    # the unit missions, the clock and its services over a real nats-server.
    "steprule": ("tests/unit/test_steprule.py", "tests/unit/test_simloop.py",
                 "tests/unit/test_parameters.py",
                 "tests/unit/test_vehicle_commands.py", "tests/unit/test_subjects_inbox.py",
                 "tests/unit/mission/", f"{_IT}test_clock.py", f"{_IT}test_fault_effects.py"),
    "simloop (step rule)": ("tests/unit/test_simloop.py", "tests/unit/test_vehicle_commands.py",
                            "tests/unit/mission/"),
    "inproc (step rule)": (f"{_IT}test_localtwin.py", f"{_IT}test_clock.py",
                           f"{_IT}test_snapshot.py"),
    "runtime (step rule)": (*(f"{_IT}test_{name}.py" for name in (
        "clock", "vehicle_control", "failures_loud", "grpc", "snapshot", "rollback",
        "rollback_fast", "service_main", "runtime_protocol", "fault_effects", "clock_mutants")),
        "tests/unit/mission/test_relay.py", "tests/unit/test_parameters.py",
        # the plaintext health port (the rest of the file renders manifests)
        *(f"{_IT}test_k8s_security.py::test_the_health_port_{name}" for name in (
            "answers_health_in_plaintext_and_nothing_else",
            "is_off_unless_asked_for_and_has_a_port_of_its_own"))),
    "clock": tuple(f"{_IT}test_{name}.py" for name in (
        "clock", "clock_protocol", "clock_mutants", "control_effects", "failures_loud",
        "rollback", "rollback_fast", "grpc")),
    "inbox": ("tests/unit/test_subjects_inbox.py", f"{_IT}test_clock.py"),
    "envelope": ("tests/unit/test_envelope.py", f"{_IT}test_bus.py"),
    "fault handling": ("tests/unit/test_fault_handling.py", "tests/unit/test_fault_mutants.py",
                       "tests/unit/test_vehicle_commands.py",
                       "tests/unit/test_plan.py",
                       "tests/unit/mission/", f"{_IT}test_fault_effects.py",
                       f"{_IT}test_vehicle_control.py", f"{_IT}test_burn_commands.py"),
}
#: Every test of a label without its own list (the pyproject selection).
ALL_TESTS = ("tests/",)


def tests_of(labels: Sequence[str]) -> tuple[str, ...]:
    """The test paths that judge the mutants of ``labels``."""
    paths: list[str] = []
    for label in labels:
        paths.extend(p for p in TESTS.get(label, ALL_TESTS) if p not in paths)
    return tuple(paths)


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


#: The mutant a forked run tests, as (module, mutant name): set in that run's
#: process before its tests start. ``None`` in every other run (stats, clean,
#: forced-fail), which take mutmut's own trampoline.
_ACTIVE: list[tuple[str, str] | None] = [None]


def _patch_fast_trampoline() -> None:
    """Give plain functions a leaner trampoline in a mutant's run.

    mutmut's trampoline reads ``os.environ`` on every call of a mutated
    function, copies the arguments and splits the mutant's name; a descent
    makes ~100,000 such calls, which made it fly 26 % slower in mutants/ than
    in the repository. In a mutant's run the mutant is fixed, so it is split
    once (:data:`_ACTIVE`) and each call costs two tuple reads and a dict
    lookup. Generators, coroutines and classmethods keep mutmut's trampoline,
    and so does every call outside a mutant's run (the stats run's recording,
    the forced-fail check)."""
    import functools
    import inspect

    from mutmut.mutation import trampoline as tr

    wrap = tr.wrap_in_trampoline

    def wrap_lean(mutants_dict: dict[str, Callable[..., Any]],
                  is_classmethod: bool = False) -> Callable[..., Any]:
        mutmut_decorator = wrap(mutants_dict, is_classmethod)

        def decorate(func: Callable[..., Any]) -> Callable[..., Any]:
            mutmut_trampoline = mutmut_decorator(func)
            if is_classmethod or not inspect.isfunction(func) or (
                    inspect.isgeneratorfunction(func) or inspect.iscoroutinefunction(func)
                    or inspect.isasyncgenfunction(func)):
                return mutmut_trampoline
            module = func.__module__

            @functools.wraps(func)
            def trampoline(*args: Any, **kwargs: Any) -> Any:
                active = _ACTIVE[0]
                if active is None:
                    return mutmut_trampoline(*args, **kwargs)
                if active[0] == module:
                    mutant = mutants_dict.get(active[1])
                    if mutant is not None:
                        return mutant(*args, **kwargs)
                return mutants_dict["_mutmut_orig"](*args, **kwargs)

            return trampoline

        return decorate

    tr.wrap_in_trampoline = wrap_lean  # type: ignore[assignment]


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


class _MutantClock:
    """The CPU and wall time of one mutant's run (in its forked process),
    appended to :data:`MUTANT_TIMES_FILE` when the run ends."""

    def __init__(self, mutant_name: str) -> None:
        self.name = mutant_name
        self.cpu0 = time.process_time()
        self.wall0 = time.monotonic()  # cost accounting only, never a verdict

    def record(self, exit_code: int, hang: bool = False) -> None:
        line = json.dumps({"name": self.name, "exit": exit_code, "hang": hang,
                           "cpu_s": round(time.process_time() - self.cpu0, 3),
                           "wall_s": round(time.monotonic() - self.wall0, 3)})
        # One short O_APPEND write per line: the workers' lines never interleave.
        fd = os.open(MUTANT_TIMES_FILE, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, (line + "\n").encode())
        finally:
            os.close(fd)


class _EndAtFirstFailure:
    """pytest plugin for a mutant's run: the first failure (setup, call or
    teardown) is the verdict, so leave at once with pytest's failure code."""

    def __init__(self, clock: _MutantClock | None = None) -> None:
        self.clock = clock

    def pytest_runtest_logreport(self, report: Any) -> None:
        if report.failed:
            if self.clock is not None:
                # pytest-timeout's failure: the hang limit (_HangLimit) stopped it.
                self.clock.record(1, hang="from pytest-timeout" in str(report.longrepr)[-4_000:])
            os._exit(1)


#: A mutant's test is stopped (and the mutant counted detected) after this many
#: times its recorded duration (setup + call), but never sooner than
#: :data:`HANG_FLOOR_S`: a mutant that makes a loop endless (the finite-LOI
#: secant's) cost pyproject's flat 10 s per test before. The margin covers a
#: loaded machine (4 workers on 2 cores run tests at about half speed).
HANG_FACTOR = 5.0
HANG_FLOOR_S = 3.0


class _HangLimit:
    """pytest plugin for a mutant's run: pytest-timeout's limit per test from its
    recorded duration (a ``timeout`` marker, which pytest-timeout reads)."""

    def __init__(self, durations: dict[str, float]) -> None:
        self.durations = durations

    def pytest_collection_modifyitems(self, items: list[Any]) -> None:
        import pytest

        for item in items:
            recorded = self.durations.get(item.nodeid)
            if recorded is not None:
                limit = max(HANG_FLOOR_S, HANG_FACTOR * recorded)
                item.add_marker(pytest.mark.timeout(math.ceil(limit)))


class _SetupTime:
    """Stats-run plugin: add each test's setup time to the time mutmut records
    (its call only). A test whose module fixture flies a descent costs that
    flight in every mutant's run; counted, the budget and the fastest-first
    order see it."""

    def pytest_runtest_logreport(self, report: Any) -> None:
        if report.when == "setup":
            from mutmut.state import state

            state().duration_by_test[report.nodeid] += report.duration


def _patch_stats_setup_time() -> None:
    from mutmut.runners.harness import PytestRunner

    execute = PytestRunner.execute_pytest

    def execute_with_setup_time(self: Any, params: list[str], **kwargs: Any) -> int:
        plugins = kwargs.get("plugins") or []
        if any(type(p).__name__ == "StatsCollector" for p in plugins):
            kwargs["plugins"] = [*plugins, _SetupTime()]
        return int(execute(self, params, **kwargs))

    PytestRunner.execute_pytest = execute_with_setup_time  # type: ignore[method-assign]


def _patch_end_at_first_failure() -> None:
    from mutmut.runners.harness import PytestRunner
    from mutmut.state import state
    from mutmut.utils.file_utils import change_cwd

    run_tests = PytestRunner.run_tests

    def run_mutant_tests(self: Any, *, mutant_name: str | None, tests: Any) -> int:
        if mutant_name is None:  # the clean and forced-fail runs report normally
            return int(run_tests(self, mutant_name=mutant_name, tests=tests))
        clock = _MutantClock(mutant_name)
        module, _, name = mutant_name.rpartition(".")
        _ACTIVE[0] = (module, name)
        with change_cwd("mutants"):
            code = int(self.execute_pytest(self._pytest_args_regular_run(tests),
                                           plugins=[_EndAtFirstFailure(clock), _HangLimit(
                                               dict(state().duration_by_test))]))
        clock.record(code)
        return code

    PytestRunner.run_tests = run_mutant_tests  # type: ignore[method-assign]


def _patch_clean_run() -> None:
    """Skip mutmut's clean run when this run's stats run has just run every
    selected test on the unmutated code: mutmut stops at once if that run
    fails, so running the same tests again proves nothing and cost 1.5 min.
    A run that loads its stats (``--survivors``, ``--resume``) keeps it."""
    import mutmut.__main__ as mm

    stats_ran_every_test = [False]
    collect_stats = mm.run_stats_collection

    def run_stats_collection(runner: Any, tests: Any = None) -> None:
        collect_stats(runner, tests)
        stats_ran_every_test[0] = not tests  # mutmut's "None or empty: all"

    get_runner = vars(mm)["get_mutant_runner"]

    def get_runner_without_clean_rerun(max_children: int) -> Any:
        runner = get_runner(max_children)
        clean = runner.run_clean_tests

        def run_clean_tests(tests: Any) -> int:
            if stats_ran_every_test[0]:
                print("    skipped: the stats run has just run them unmutated and they passed")
                return 0
            return int(clean(tests))

        runner.run_clean_tests = run_clean_tests
        return runner

    vars(mm)["run_stats_collection"] = run_stats_collection
    vars(mm)["get_mutant_runner"] = get_runner_without_clean_rerun


def waits_on_servers(tests: Iterable[str]) -> bool:
    """A mutant judged by an integration test spends its run waiting on a
    nats-server or a gRPC call (or on a hang limit) far more than computing."""
    return any(t.startswith(_IT) for t in tests)


def interleaved(names: Sequence[str], estimate: Callable[[str], float],
                waits: Callable[[str], bool]) -> dict[str, float]:
    """Mutant name -> its place in the run (0 to 1): the mutants that wait and
    those that compute, each fastest first by ``estimate``, merged in
    proportion, so that every stretch of the run has both and the workers
    waiting on servers leave the cores to those that compute."""
    place: dict[str, float] = {}
    for group in ([n for n in names if waits(n)], [n for n in names if not waits(n)]):
        ordered = sorted(group, key=lambda n: (estimate(n), n))
        place.update({n: (i + 0.5) / len(ordered) for i, n in enumerate(ordered)})
    return place


def _patch_run_order() -> None:
    """Run the mutants in the :func:`interleaved` order instead of mutmut's
    (fastest first overall, which put the 2,000 kernel mutants that wait on
    servers in one stretch and the guidance's that compute in another)."""
    import mutmut.__main__ as mm
    from mutmut.state import state

    estimate = vars(mm)["estimated_worst_case_time"]
    collect = mm.collect_source_file_mutation_data
    place: dict[str, float] = {}

    def tests_of_mutant(name: str) -> set[str]:
        mangled = vars(mm)["mangled_name_from_mutant_name"]  # _narrow_by_line's, if set
        return set(state().tests_by_mangled_function_name.get(mangled(name), set()))

    def collect_and_place(*, mutant_names: Any) -> Any:
        mutants, by_path = collect(mutant_names=mutant_names)
        place.update(interleaved([m[1] for m in mutants], estimate,
                                 lambda n: waits_on_servers(tests_of_mutant(n))))
        return mutants, by_path

    def place_in_run(name: str) -> float:
        return place.get(name, math.inf)

    vars(mm)["collect_source_file_mutation_data"] = collect_and_place
    vars(mm)["estimated_worst_case_time"] = place_in_run


def _patch_test_selection(labels: Sequence[str], by_line: bool) -> None:
    """Collect, record and run only the tests of ``labels`` (:data:`TESTS`);
    with ``by_line``, of those only the tests that ran the mutated statement
    (scripts/mutate_lines.py)."""
    import fnmatch

    import mutate_lines
    import mutmut.__main__ as mm
    from mutmut.runners.harness import PytestRunner
    from mutmut.state import state

    paths = tests_of(labels)
    init = PytestRunner.__init__

    def init_narrowed(self: Any) -> None:
        init(self)
        # pyproject's selection names the test root; the markers stay as they are.
        args = self._pytest_add_cli_args_test_selection
        self._pytest_add_cli_args_test_selection = [
            *(p for a in args for p in (paths if a in ALL_TESTS else (a,)))]

    collect = mm.collect_or_load_stats

    def collect_and_narrow(*args: Any, **kwargs: Any) -> None:
        selection = PytestRunner()._pytest_add_cli_args_test_selection
        # The per-test line coverage runs the originals at the repository's
        # root: it needs nothing of mutmut's and runs beside its stats run.
        recording = mutate_lines.Recording(
            [*selection, "-p", "no:cacheprovider", "-q", "--timeout=60"]) if by_line else None
        try:
            collect(*args, **kwargs)
        except BaseException:
            if recording is not None:
                recording.proc.kill()
            raise
        sharing = _fixture_sharing(selection)
        # In memory only: the stats file keeps every caller for the next run.
        for function, tests in state().tests_by_mangled_function_name.items():
            tests.update(*(sharing.get(t, ()) for t in list(tests)))
            label = next((k for k, globs in SCOPE.items() if any(
                fnmatch.fnmatchcase(f"{function}__mutmut_1", g) for g in globs)), None)
            keep = TESTS.get(label or "", ALL_TESTS)
            tests.intersection_update({t for t in tests if t.startswith(keep)})
        if recording is not None:
            recording.wait()
            _narrow_by_line(labels, sharing)

    PytestRunner.__init__ = init_narrowed  # type: ignore[method-assign]
    mm.collect_or_load_stats = collect_and_narrow


def _narrow_by_line(labels: Sequence[str], sharing: dict[str, set[str]]) -> None:
    """Give each mutant of ``labels`` its own test set: its function's tests that
    ran the statement it changes (and the tests sharing their fixtures), from
    the per-test line coverage just recorded (mutate_lines.Recording).

    mutmut looks a mutant's tests up by its function's name; the lookup is
    redirected to a per-mutant entry where there is one, so its "no tests",
    ordering and time estimates all follow the narrower set."""
    import fnmatch

    import mutate_lines
    import mutmut.__main__ as mm
    from mutmut.state import state
    from mutmut.utils.format_utils import mangled_name_from_mutant_name as mangled

    line_tests = mutate_lines.LineTests()
    globs = [g for label in labels for g in SCOPE[label]]
    tests_by = state().tests_by_mangled_function_name
    per_mutant: dict[str, set[str]] = {}
    for meta in sorted((ROOT / "mutants" / "services").rglob("*.py.meta")):
        path = meta.relative_to(ROOT / "mutants").as_posix().removesuffix(".meta")
        module = path.removesuffix(".py").removesuffix("/__init__").replace("/", ".")
        for name in json.loads(meta.read_text())["exit_code_by_key"]:
            short = name.replace("__init__.", "")
            func_tests = tests_by.get(short.partition("__mutmut_")[0])
            if not func_tests or not any(fnmatch.fnmatchcase(short, g) for g in globs):
                continue
            ran = line_tests.tests_of(path, short.removeprefix(module + "."))
            if ran is None:
                continue
            ran |= set().union(*(sharing.get(t, ()) for t in ran))
            per_mutant[short] = func_tests & ran
    tests_by.update(per_mutant)

    def mutant_or_function(name: str) -> str:
        return name if name in per_mutant else mangled(name)

    vars(mm)["mangled_name_from_mutant_name"] = mutant_or_function  # the loop's global
    narrowed = sum(len(t) for t in per_mutant.values())
    print(f"line coverage: {len(per_mutant)} mutants narrowed to {narrowed} test runs "
          f"({sum(not t for t in per_mutant.values())} run by no selected test)")


#: Recorded test seconds one mutant may use (fastest tests first): past it, a
#: mutant that survives has run every fast test that executes its line.
DEFAULT_BUDGET_S = 3.0

#: Fixture scopes whose value one test computes and later tests only read.
SHARED_SCOPES = frozenset({"class", "module", "package"})
#: Where a session fixture is a computed result (the nominal descent, flown
#: once per session: tests/unit/guidance/conftest.py), not a server.
SHARED_SESSION_FIXTURES_UNDER = "tests/unit/"


def _shares_a_result(fixturedef: Any) -> bool:
    """A fixture whose one value several tests read (see :func:`_fixture_sharing`)."""
    return bool(fixturedef.scope in SHARED_SCOPES or (
        fixturedef.scope == "session"
        and fixturedef.baseid.startswith(SHARED_SESSION_FIXTURES_UNDER)))


def _fixture_sharing(selection: Sequence[str]) -> dict[str, set[str]]:
    """Test id -> every test that shares a class-, module- or package-scoped
    fixture with it.

    mutmut credits a function to the test during whose setup, call or teardown
    it ran: a module fixture that flies a whole descent is credited to the
    first test that asks for it, and the tests that then check the flight
    (duration, miss distance, propellant) are never run against a mutant of it.
    Adding them back is what lets a check on a shared result kill anything.
    (Session fixtures count only under :data:`SHARED_SESSION_FIXTURES_UNDER`:
    elsewhere they are servers, not results.)
    """
    from collections import defaultdict

    import pytest
    from mutmut.utils.file_utils import change_cwd

    users: dict[tuple[str, str, str], set[str]] = defaultdict(set)
    keys_of: dict[str, set[tuple[str, str, str]]] = {}

    class Collector:
        @pytest.hookimpl(trylast=True)  # after the markers have deselected
        def pytest_collection_modifyitems(self, items: list[Any]) -> None:
            for item in items:
                defs = getattr(getattr(item, "_fixtureinfo", None), "name2fixturedefs", {})
                # A parametrized fixture is one value per parameter.
                params = getattr(getattr(item, "callspec", None), "params", {})
                keys = {(name, d[-1].baseid, repr(params.get(name)))
                        for name, d in defs.items() if d and _shares_a_result(d[-1])}
                keys_of[item.nodeid] = keys
                for key in keys:
                    users[key].add(item.nodeid)

    with change_cwd("mutants"):
        pytest.main(["--rootdir=.", "--collect-only", "-qq", "-p", "no:cacheprovider",
                     *selection], plugins=[Collector()])
    return {test: set().union(*(users[k] for k in keys)) - {test}
            for test, keys in keys_of.items() if keys}


def unfinished(globs: Sequence[str]) -> list[str]:
    """Mutants of ``globs`` without a result in mutants/ (to resume a stopped run)."""
    import fnmatch

    names: list[str] = []
    for meta in sorted((ROOT / "mutants" / "services").rglob("*.py.meta")):
        codes = json.loads(meta.read_text())["exit_code_by_key"]
        names.extend(n for n, code in codes.items()
                     if code is None and any(fnmatch.fnmatchcase(n, g) for g in globs))
    return names


#: mutmut's exit codes of a mutant no test detected: survived, no tests ran.
UNDETECTED = frozenset({0, 5, 33})


def forget_survivors(globs: Sequence[str]) -> int:
    """Clear the result of every undetected mutant of ``globs``, so that
    ``--resume`` runs them (and only them) against the tests added since."""
    import fnmatch

    count = 0
    for meta in sorted((ROOT / "mutants" / "services").rglob("*.py.meta")):
        data = json.loads(meta.read_text())
        codes = data["exit_code_by_key"]
        names = [n for n, code in codes.items()
                 if code in UNDETECTED and any(fnmatch.fnmatchcase(n, g) for g in globs)]
        codes.update(dict.fromkeys(names))
        count += len(names)
        meta.write_text(json.dumps(data, indent=4))
    return count


def run(labels: Sequence[str], budget_s: float, workers: int | None, resume: bool,
        by_line: bool = True) -> None:
    """Run mutmut on the mutants of ``labels`` and record the wall time."""
    import mutmut.__main__ as mm

    _patch_decorated_methods()
    _patch_fast_trampoline()
    _patch_end_at_first_failure()
    _patch_stats_setup_time()
    _patch_clean_run()
    _patch_run_order()
    capped: list[str] = []
    _patch_test_order(budget_s, capped)
    _patch_test_selection(labels, by_line)
    globs = [g for label in labels for g in SCOPE[label]]
    if resume:
        globs = unfinished(globs)
        if not globs:
            return
    else:
        MUTANT_TIMES_FILE.unlink(missing_ok=True)  # a fresh run's times only
    started = time.monotonic()  # wall time of the run, for the report only
    started_utc = _utc_now()
    cpu_before = _cpu_s()
    try:
        mm._run(globs, workers)
    finally:
        _record_run({"labels": list(labels), "resumed": resume,
                     "started_utc": started_utc, "ended_utc": _utc_now(),
                     "wall_time_s": round(time.monotonic() - started, 1),
                     "cpu_s": round(_cpu_s() - cpu_before, 1),
                     "workers": workers or os.cpu_count(), "test_budget_s": budget_s,
                     "capped": len(capped)})


def _cpu_s() -> float:
    """CPU seconds of this process and every process it has reaped (mutmut's
    fork server and, through it, every mutant's run): what the run costs on a
    machine shared with others, where its wall time says more about the others."""
    import resource

    own, children = (resource.getrusage(who) for who in
                     (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN))
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


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
    parser.add_argument("--test-budget-s", type=float, default=DEFAULT_BUDGET_S,
                        help="cap the recorded test time per mutant, fastest tests kept "
                             f"(default {DEFAULT_BUDGET_S:g}; 0: no cap)")
    parser.add_argument("--workers", type=int, default=3 * (os.cpu_count() or 1),
                        help="mutants tested at once (default: three times the CPU count: "
                             "a third of the runs wait on a server or a hang limit, and "
                             "the run order mixes them with those that compute)")
    parser.add_argument("--resume", action="store_true",
                        help="run only the mutants without a result in mutants/")
    parser.add_argument("--survivors", action="store_true",
                        help="run again only the mutants no test detected (after new tests)")
    parser.add_argument("--no-report", action="store_true", help="skip writing docs/mutation.md")
    parser.add_argument("--by-function", action="store_true",
                        help="select each mutant's tests by its function only, as mutmut "
                             "does (default: only those that ran the mutated statement)")
    args = parser.parse_args(argv)
    labels = labels_for(args.modules)
    if args.survivors:
        forgotten = forget_survivors([g for label in labels for g in SCOPE[label]])
        print(f"{forgotten} undetected mutants to run again")
    run(labels, args.test_budget_s, args.workers, args.resume or args.survivors,
        by_line=not args.by_function)
    if not args.no_report:
        sys.path.insert(0, str(Path(__file__).parent))
        import mutation_report

        # Only a run of every module rewrites docs/mutation.md; one module's
        # run prints its rows (the others show as not run).
        partial = args.modules or args.resume or args.survivors
        mutation_report.main(["--no-doc"] if partial else [])


if __name__ == "__main__":
    main()
