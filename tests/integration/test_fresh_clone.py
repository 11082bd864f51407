"""A fresh clone sets itself up from the lock and passes its own generated-code checks.

This is what CI and a new user do first: `./task` on a clone with no `.venv`.
The clone is made from this working tree as it is (tracked and new files,
uncommitted edits included) and committed, so `git status` in it starts
clean; it installs into a new venv from requirements/dev.lock (pip's cache
makes that fast after the first time).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
# A first install downloads ~100 MB on a slow link: a bound on a hang, not a speed.
SETUP_DEADLINE_S = 900.0
GIT_ID = ["-c", "user.email=ci@change6-twin.invalid", "-c", "user.name=fresh-clone-test"]


def _git(cwd: Path, *args: str) -> str:
    done = subprocess.run(["git", *GIT_ID, *args], cwd=cwd, capture_output=True, text=True,
                          check=True)
    return done.stdout


def _clone_of_working_tree(dest: Path) -> None:
    listed = _git(REPO, "ls-files", "-z", "--cached", "--others", "--exclude-standard")
    for rel in filter(None, listed.split("\0")):
        src = REPO / rel
        if src.is_file():  # a file deleted in the tree but still in the index is skipped
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)
    _git(dest, "init", "-q")
    _git(dest, "add", "-A")
    _git(dest, "commit", "-q", "-m", "the working tree under test")


def _base_python() -> str:
    """The interpreter this test's venv was made from (a new venv is made from it)."""
    base: str = getattr(sys, "_base_executable", sys.executable)
    return base


def _fresh_env() -> dict[str, str]:
    """The caller's environment without this test run's venv."""
    venv_bin = str(Path(sys.prefix) / "bin")
    path = os.pathsep.join(p for p in os.environ["PATH"].split(os.pathsep) if p != venv_bin)
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    return {**env, "PATH": path, "PYTHON": _base_python()}


def _task(clone: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["./task", *args], cwd=clone, env=_fresh_env(), capture_output=True,
                          text=True, timeout=SETUP_DEADLINE_S, check=False)


@pytest.fixture(scope="module")
def clone(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, str]]:
    """A clone whose first `./task proto-check` has run: (its root, that run's stderr)."""
    root = tmp_path_factory.mktemp("fresh") / "change6-twin"
    root.mkdir()
    _clone_of_working_tree(root)
    first = _task(root, "proto-check")
    assert first.returncode == 0, f"stdout:\n{first.stdout}\nstderr:\n{first.stderr}"
    assert "generated code up to date" in first.stdout
    yield root, first.stderr


def test_fresh_clone_passes_proto_check_and_leaves_git_status_clean(
        clone: tuple[Path, str]) -> None:
    root, _ = clone
    assert _git(root, "status", "--porcelain") == ""


def test_setup_prints_one_line_per_stage_and_no_tool_noise(clone: tuple[Path, str]) -> None:
    _, stderr = clone
    stages = [line for line in stderr.splitlines() if line.startswith("setup ")]
    assert [s.split(":")[0] for s in stages[:3]] == ["setup 1/3", "setup 2/3", "setup 3/3"]
    assert len(stages) == 4 and stages[3].startswith("setup done in "), stderr
    for noise in ("WARNING", "Warning", "****", "[notice]", "Editable installation"):
        assert noise not in stderr, f"{noise!r} in the setup output:\n{stderr}"


def _locked_pins() -> dict[str, str]:
    """name -> version of every lock line whose marker holds on this interpreter."""
    env = {key: str(value) for key, value in default_environment().items()}
    pins: dict[str, str] = {}
    for line in (REPO / "requirements" / "dev.lock").read_text().splitlines():
        if not line or line[0] in " #-":
            continue
        req = Requirement(line.rstrip(" \\"))
        if req.marker is None or req.marker.evaluate(dict(env)):
            (spec,) = req.specifier
            assert spec.operator == "==", line
            pins[canonicalize_name(req.name)] = spec.version
    return pins


def test_the_fresh_venv_holds_exactly_the_locked_versions(clone: tuple[Path, str]) -> None:
    root, _ = clone
    listed = subprocess.run([str(root / ".venv/bin/python"), "-m", "pip", "list",
                             "--format=json", "--disable-pip-version-check"],
                            capture_output=True, text=True, check=True).stdout
    installed = {canonicalize_name(p["name"]): p["version"] for p in json.loads(listed)}
    assert installed.pop(canonicalize_name("change6-twin")) == "0.1.0"
    assert installed == _locked_pins()


def test_proto_check_fails_on_drift_and_never_rewrites_the_tree(
        clone: tuple[Path, str]) -> None:
    root, _ = clone
    grpc_module = root / "services/kernel/twin_pb/clock_pb2_grpc.py"
    drifted = grpc_module.read_text() + "# drift\n"
    grpc_module.write_text(drifted)
    try:
        done = _task(root, "proto-check")
        assert done.returncode != 0
        assert "clock_pb2_grpc.py: content differs" in done.stderr
        assert grpc_module.read_text() == drifted, "proto-check rewrote the tree"
    finally:
        _git(root, "checkout", "--", str(grpc_module.relative_to(root)))
