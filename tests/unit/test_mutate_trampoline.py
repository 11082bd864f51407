"""scripts/mutate.py's lean trampoline dispatches exactly as mutmut's does.

A mutated module is written here the way mutmut writes one (a dict of the
original and its mutants, the function decorated with the trampoline); which
function runs is checked for the run's own mutant, another mutant of the same
module, a mutant of another module, and outside a mutant's run.
"""

from __future__ import annotations

import importlib.util
import inspect
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from mutmut.mutation import trampoline as tr

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "mutate.py"


@pytest.fixture
def mutate(monkeypatch: pytest.MonkeyPatch) -> Iterator[ModuleType]:
    spec = importlib.util.spec_from_file_location("mutate_under_test", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setattr(sys, "path", [str(SCRIPT.parent), *sys.path])
    spec.loader.exec_module(module)
    # The patch replaces mutmut's decorator: undone after the test.
    monkeypatch.setattr(tr, "wrap_in_trampoline", tr.wrap_in_trampoline)
    monkeypatch.delenv("MUTANT_UNDER_TEST", raising=False)
    module._patch_fast_trampoline()
    yield module
    module._ACTIVE[0] = None


def _mutated(name: str) -> tuple[Callable[..., Any], Callable[..., Any]]:
    """(plain function, generator function), each with two mutants, made the way
    mutmut lays them out in a module named ``name``."""
    plain: dict[str, Callable[..., Any]] = {}
    gen: dict[str, Callable[..., Any]] = {}

    def x_f__mutmut_orig(a: int, *, b: int = 1) -> int:
        return a + b

    def x_f__mutmut_1(a: int, *, b: int = 1) -> int:
        return a - b

    def x_f__mutmut_2(a: int, *, b: int = 1) -> int:
        return a * b

    def x_g__mutmut_orig(n: int) -> Iterator[int]:
        yield from range(n)

    def x_g__mutmut_1(n: int) -> Iterator[int]:
        yield from range(n + 1)

    for func in (x_f__mutmut_orig, x_f__mutmut_1, x_f__mutmut_2, x_g__mutmut_orig,
                 x_g__mutmut_1):
        func.__module__ = name
    def f(a: int, *, b: int = 1) -> int:
        raise AssertionError("the trampoline never runs the decorated body")

    def g(n: int) -> Iterator[int]:
        yield from ()  # a generator function, as the original is
        raise AssertionError("the trampoline never runs the decorated body")

    f.__module__ = g.__module__ = name
    wrap = tr.wrap_in_trampoline  # looked up now, as a mutated module's import does
    f, g = wrap(plain)(f), wrap(gen)(g)
    plain.update({"_mutmut_orig": x_f__mutmut_orig, "x_f__mutmut_1": x_f__mutmut_1,
                  "x_f__mutmut_2": x_f__mutmut_2})
    gen.update({"_mutmut_orig": x_g__mutmut_orig, "x_g__mutmut_1": x_g__mutmut_1})
    return f, g


def test_the_run_s_own_mutant_runs_and_any_other_runs_the_original(mutate: ModuleType) -> None:
    f, _ = _mutated("pkg.mod")
    mutate._ACTIVE[0] = ("pkg.mod", "x_f__mutmut_1")
    assert f(5, b=2) == 3
    mutate._ACTIVE[0] = ("pkg.mod", "x_f__mutmut_2")
    assert f(5, b=2) == 10
    mutate._ACTIVE[0] = ("pkg.mod", "x_other__mutmut_1")  # same module, another function
    assert f(5, b=2) == 7
    mutate._ACTIVE[0] = ("pkg.other", "x_f__mutmut_1")  # same function name, another module
    assert f(5, b=2) == 7


def test_outside_a_mutant_s_run_mutmut_s_own_trampoline_decides(
        mutate: ModuleType, monkeypatch: pytest.MonkeyPatch) -> None:
    f, _ = _mutated("pkg.mod")
    assert mutate._ACTIVE[0] is None
    assert f(5) == 6
    monkeypatch.setenv("MUTANT_UNDER_TEST", "pkg.mod.x_f__mutmut_2")
    assert f(5, b=3) == 15
    monkeypatch.setenv("MUTANT_UNDER_TEST", "fail")  # mutmut's forced-fail check
    with pytest.raises(Exception, match="Verifying setup"):
        f(5)


def test_generators_keep_mutmut_s_trampoline(mutate: ModuleType,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    _, g = _mutated("pkg.mod")
    mutate._ACTIVE[0] = ("pkg.mod", "x_g__mutmut_1")  # ignored: mutmut's reads the variable
    assert list(g(2)) == [0, 1]
    monkeypatch.setenv("MUTANT_UNDER_TEST", "pkg.mod.x_g__mutmut_1")
    assert list(g(2)) == [0, 1, 2]


def test_the_trampoline_keeps_the_function_s_name_and_signature(mutate: ModuleType) -> None:
    f, _ = _mutated("pkg.mod")
    assert f.__name__ == "f"
    assert str(inspect.signature(f)) == "(a: 'int', *, b: 'int' = 1) -> 'int'"
