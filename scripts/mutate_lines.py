"""Which tests run the line a mutant changes: per-test line coverage for mutmut.

mutmut selects a mutant's tests by *function*: every test that called the
mutated function at all. In the kernel nearly every integration test calls
nearly every function (a step runs the whole protocol), so a mutant of an error
branch that one test reaches ran, until its budget ran out, dozens of tests
that never execute its line and so cannot tell it from the original. A test
that does not run a line in the original run does not run it under a mutant
of that line either (everything before the line is unchanged), so leaving it
out loses nothing. This module narrows each mutant's tests to those that
executed the mutated statement:

1. :func:`record` runs the selected tests once under coverage.py, on the
   original sources, switching coverage's context to each test's node id (its
   setup, call and teardown), as pytest-cov's ``--cov-context=test`` does.
2. :func:`mutated_lines` finds the lines of the original source a mutant
   changes, by comparing mutmut's copy of the function with the mutant's copy
   (``mutants/<path>`` and its ``.spans`` index), aligned on the ``def`` line.
3. :func:`statement_of` maps each line to the statement it belongs to (coverage
   records the lines a statement's bytecode starts on, which for a statement
   over several lines may be any of them), and :class:`LineTests` answers the
   tests that ran any line of those statements.

A mutant of a function's signature (a default value: evaluated when the module
is imported, in no test) or of a line no statement covers keeps mutmut's
function-level selection.
"""

from __future__ import annotations

import ast
import difflib
import json
import sys
from collections import defaultdict
from collections.abc import Iterable, Sequence
from functools import cache
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
#: Coverage data of the per-test run (in mutants/, made afresh with it).
DATA_FILE = ROOT / "mutants" / "line-coverage.sqlite"


class _TestContexts:
    """pytest plugin: coverage's dynamic context is the running test's node id."""

    def __init__(self, cov: Any) -> None:
        self.cov = cov

    def pytest_runtest_protocol(self, item: Any, nextitem: Any) -> None:
        self.cov.switch_context(item.nodeid)

    def pytest_runtest_logfinish(self, nodeid: str, location: Any) -> None:
        self.cov.switch_context("")


def record(pytest_args: Sequence[str], data_file: Path = DATA_FILE) -> int:
    """Run the tests under coverage with one context per test; pytest's exit code."""
    import coverage
    import pytest

    data_file.unlink(missing_ok=True)
    cov = coverage.Coverage(data_file=str(data_file), source=[str(ROOT / "services")],
                            branch=False)
    cov.start()
    try:
        code = int(pytest.main(list(pytest_args), plugins=[_TestContexts(cov)]))
    finally:
        cov.stop()
        cov.save()
    return code


class Recording:
    """:func:`record` in a fresh interpreter at the repository's root (the
    original sources, not mutmut's copies; no tracer left in mutmut's process),
    started now and waited for later, so that it runs beside mutmut's stats run."""

    def __init__(self, pytest_args: Sequence[str], data_file: Path = DATA_FILE) -> None:
        import subprocess

        self.cmd = [sys.executable, str(Path(__file__)), str(data_file), *pytest_args]
        self.proc = subprocess.Popen(self.cmd, cwd=ROOT)

    def wait(self) -> None:
        code = self.proc.wait()
        if code != 0:
            raise SystemExit(f"the per-test coverage run failed (pytest exit {code}); "
                             f"run it alone to see why: {' '.join(self.cmd)}")


@cache
def _statements(path: str) -> dict[int, int | None]:
    """Line -> the first line of the innermost statement it belongs to (a compound
    statement: its header only). None for a ``def`` or ``class`` header."""
    tree = ast.parse((ROOT / path).read_text())
    out: dict[int, int | None] = {}
    for node in ast.walk(tree):  # outer statements first: inner ones overwrite
        if not isinstance(node, ast.stmt):
            continue
        body = getattr(node, "body", None)
        end = node.end_lineno or node.lineno
        if isinstance(body, list) and body:
            end = body[0].lineno - 1
        first: int | None = node.lineno
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            first = None
        for line in range(node.lineno, max(end, node.lineno) + 1):
            out[line] = first
    return out


def statement_of(path: str, line: int) -> int | None:
    """The first line of the statement ``line`` of ``path`` is part of, or None."""
    return _statements(path).get(line)


@cache
def _def_lines(path: str) -> dict[str, int]:
    """Qualified name (``Class.method``, ``function``) -> line of its ``def``."""
    tree = ast.parse((ROOT / path).read_text())
    out: dict[str, int] = {}

    def visit(body: Iterable[ast.stmt], prefix: str) -> None:
        for node in body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                out[prefix + node.name] = node.lineno
            elif isinstance(node, ast.ClassDef):
                visit(node.body, f"{prefix}{node.name}.")

    visit(tree.body, "")
    return out


@cache
def _mutants_file(path: str) -> tuple[list[str], dict[str, tuple[int, int]]]:
    mutants = ROOT / "mutants" / path
    spans = json.loads(Path(f"{mutants}.spans").read_text())["spans"]
    return mutants.read_text().splitlines(), {k: (int(a), int(b)) for k, (a, b) in spans.items()}


def _copy(lines: list[str], span: tuple[int, int], key: str) -> list[str]:
    """A function's copy from its ``def`` line, its generated name taken out."""
    text = lines[span[0] - 1:span[1]]
    start = next(i for i, ln in enumerate(text) if ln.lstrip().startswith(("def ", "async def ")))
    return [ln.replace(key, "") for ln in text[start:]]


def mutated_lines(path: str, mutant_key: str) -> list[int] | None:
    """Lines of ``path`` (the original source) that the mutant named ``mutant_key``
    (``xǁClassǁmethod__mutmut_3``, as in the ``.spans`` index) changes; None if
    they cannot be placed."""
    from mutmut.utils.format_utils import orig_function_and_class_names_from_key

    lines, spans = _mutants_file(path)
    stem = mutant_key.partition("__mutmut_")[0]
    orig_key = f"{stem}__mutmut_orig"
    if mutant_key not in spans or orig_key not in spans:
        return None
    func, cls = orig_function_and_class_names_from_key(mutant_key)
    def_line = _def_lines(path).get(f"{cls}.{func}" if cls else func)
    if def_line is None:
        return None
    orig = _copy(lines, spans[orig_key], orig_key)
    mutant = _copy(lines, spans[mutant_key], mutant_key)
    changed: set[int] = set()
    matcher = difflib.SequenceMatcher(a=orig, b=mutant, autojunk=False)
    for tag, i1, i2, _, _ in matcher.get_opcodes():
        if tag != "equal":
            # An insertion changes the line before it (i1 == i2): count that one.
            changed.update(range(i1, max(i2, i1 + 1)))
    return sorted(def_line + i for i in changed)


class LineTests:
    """Tests that ran each statement, from the data :func:`record` wrote."""

    def __init__(self, data_file: Path = DATA_FILE) -> None:
        import coverage

        data = coverage.CoverageData(basename=str(data_file))
        data.read()
        self._by_path: dict[str, dict[int, set[str]]] = {}
        for measured in data.measured_files():
            rel = Path(measured).resolve().relative_to(ROOT).as_posix()
            by_statement: dict[int, set[str]] = defaultdict(set)
            for line, contexts in data.contexts_by_lineno(measured).items():
                first = statement_of(rel, line)
                if first is not None:
                    by_statement[first].update(c for c in contexts if c)
            self._by_path[rel] = dict(by_statement)

    def tests_of(self, path: str, mutant_key: str) -> set[str] | None:
        """The tests that ran a statement the mutant changes; None: unknown (keep
        the function's tests)."""
        lines = mutated_lines(path, mutant_key)
        if not lines:
            return None
        firsts = {statement_of(path, line) for line in lines}
        if None in firsts:
            return None  # a signature (defaults run at import) or an unplaced line
        ran = self._by_path.get(path, {})
        return set().union(*(ran.get(first, set()) for first in firsts if first is not None))


if __name__ == "__main__":
    raise SystemExit(record(sys.argv[2:], Path(sys.argv[1])))
