"""Sample a running service with py-spy and rank where its CPU goes.

py-spy is optional (``pip install py-spy``); it needs ptrace rights over the
target. ``--nonblocking`` keeps it from pausing the process it samples, so the
clock's timing is not disturbed; idle samples (waiting in epoll) are left out
by py-spy itself, so the shares below are shares of busy CPU.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

_LINE_RE = re.compile(r" \((?P<file>[^()]*):\d+\)$")


@dataclass(frozen=True)
class Profile:
    samples: int
    self_share: list[tuple[str, float]]  # function -> share of samples where it is on top
    total_share: list[tuple[str, float]]  # function -> share of samples where it is on the stack
    error: str = ""


def find_py_spy() -> str | None:
    beside_python = Path(sys.executable).parent / "py-spy"
    return str(beside_python) if beside_python.exists() else shutil.which("py-spy")


async def record(pid: int, duration_s: float, out: Path, rate_hz: int = 200) -> str:
    """Run py-spy for ``duration_s``; return "" or the reason it failed."""
    exe = find_py_spy()
    if exe is None:
        return "py-spy not installed (pip install py-spy)"
    proc = await asyncio.create_subprocess_exec(
        exe, "record", "-p", str(pid), "-d", str(max(1, round(duration_s))), "-r", str(rate_hz),
        "-f", "raw", "-o", str(out), "--nonblocking",
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
    _, err = await proc.communicate()
    if proc.returncode != 0 or not await asyncio.to_thread(out.exists):
        return f"py-spy exit {proc.returncode}: {err.decode(errors='replace').strip()[-300:]}"
    return ""


def _frame_name(frame: str) -> str:
    """``func (path/to/file.py:12)`` -> ``file.py:func``: one name per function."""
    m = _LINE_RE.search(frame)
    if m is None:
        return frame
    return f"{Path(m.group('file')).name}:{frame[:m.start()]}"


def rank(collapsed: str, top: int = 12) -> Profile:
    """Self and inclusive shares per function from py-spy's raw (collapsed) output."""
    own: Counter[str] = Counter()
    total: Counter[str] = Counter()
    samples = 0
    for line in collapsed.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        names = [_frame_name(f) for f in stack.split(";")]
        samples += count
        own[names[-1]] += count
        for name in set(names):
            total[name] += count
    if samples == 0:
        return Profile(0, [], [], "no samples")
    return Profile(samples,
                   [(n, c / samples) for n, c in own.most_common(top)],
                   [(n, c / samples) for n, c in total.most_common(top)])
