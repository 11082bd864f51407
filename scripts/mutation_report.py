"""Per-module mutation score from mutmut's results (``mutants/**/*.meta``).

Prints the table, and rewrites the generated block of docs/mutation.md and of
docs/mutation-survivors.md (between the ``mutation-report`` markers; the prose
around it is kept): the table with the baseline's score beside each module's,
the run's wall and CPU time, and every surviving mutant per module (function,
line, diff), so a test writer can go and kill it. A module this run did not
test keeps its row and its survivors from the last doc. ``--survivors PATH``
writes that list alone.
Run from the repository root after ``./task mutate`` (which calls it).
"""

from __future__ import annotations

import argparse
import ast
import fnmatch
import json
import os
import sys
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
# A sibling script, on sys.path above.
from mutate import MUTANT_TIMES_FILE, ROOT, SCOPE, WALL_TIME_FILE

DOC = ROOT / "docs" / "mutation.md"
#: Every surviving mutant with its diff: long, so apart from the scores.
SURVIVORS_DOC = ROOT / "docs" / "mutation-survivors.md"
BEGIN, END = "<!-- mutation-report:begin -->", "<!-- mutation-report:end -->"

#: mutmut's exit codes (mutmut.stats.status_by_exit_code) folded into our columns.
#: A test that fails under pytest-timeout is "killed"; one mutmut has to stop
#: (SIGXCPU after its wall or CPU budget) is "timeout": both detected the mutant.
COLUMN_BY_EXIT_CODE: dict[int | None, str] = {
    1: "killed", 3: "killed", 0: "survived", 5: "no tests", 33: "no tests",
    36: "timeout", -24: "timeout", 24: "timeout", 152: "timeout", 255: "timeout",
    -11: "crashed", -9: "crashed", None: "not run",
}
COLUMNS = ("killed", "timeout", "survived", "no tests", "crashed", "not run")
#: Scores of the baseline run (bd5d83f, docs/mutation.md), the "before" column.
BEFORE: dict[str, str] = {
    "runtime (step rule)": "64.0 %", "simloop (step rule)": "73.5 %",
    "inproc (step rule)": "86.8 %", "inbox": "90.9 %", "envelope": "75.1 %", "clock": "63.4 %",
    "control (vehicle)": "50.8 %", "control (ground clock)": "40.6 %",
    "fault handling": "54.3 %", "guidance/__init__": "60.5 %", "guidance/ascent": "74.4 %",
    "guidance/descent": "82.3 %", "guidance/loi": "85.2 %", "guidance/rendezvous": "77.8 %",
    "**all**": "72.2 %",
}


@dataclass
class Mutant:
    name: str
    path: str
    column: str


@dataclass
class Row:
    label: str
    counts: Counter[str] = field(default_factory=Counter)
    survivors: list[Mutant] = field(default_factory=list)

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    @property
    def tested(self) -> int:
        return self.total - self.counts["not run"]

    @property
    def score(self) -> float | None:
        """Detected (killed or timed out) over every mutant that was run."""
        if not self.tested:
            return None
        return 100.0 * (self.counts["killed"] + self.counts["timeout"]) / self.tested


def load_mutants() -> list[Mutant]:
    out: list[Mutant] = []
    for meta in sorted((ROOT / "mutants" / "services").rglob("*.py.meta")):
        path = str(meta.relative_to(ROOT / "mutants"))[: -len(".meta")]
        codes = json.loads(meta.read_text())["exit_code_by_key"]
        out.extend(Mutant(name, path, COLUMN_BY_EXIT_CODE.get(code, "crashed"))
                   for name, code in codes.items())
    return out


def label_of(name: str) -> str | None:
    for label, globs in SCOPE.items():
        if any(fnmatch.fnmatchcase(name, g) for g in globs):
            return label
    return None


def tabulate(mutants: list[Mutant], labels: list[str]) -> list[Row]:
    rows = {label: Row(label) for label in labels}
    for m in mutants:
        label = label_of(m.name)
        if label not in rows:
            continue
        rows[label].counts[m.column] += 1
        if m.column in ("survived", "no tests"):
            rows[label].survivors.append(m)
    return [r for r in rows.values() if r.total]


def function_of(name: str) -> str:
    """``Class.method`` or ``function`` from a mutant name."""
    from mutmut.utils.format_utils import orig_function_and_class_names_from_key

    func, cls = orig_function_and_class_names_from_key(name)
    return f"{cls}.{func}" if cls else func


def _def_span(path: str, qualname: str) -> tuple[int, int]:
    tree = ast.parse((ROOT / path).read_text())
    parts = qualname.split(".")
    body: list[ast.stmt] = tree.body
    node: ast.AST | None = None
    for part in parts:
        node = next((n for n in body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef,
                                                        ast.ClassDef)) and n.name == part), None)
        if node is None:
            return 0, 0
        body = node.body
    assert node is not None
    return node.lineno, node.end_lineno or node.lineno  # type: ignore[attr-defined]


def diff_and_line(m: Mutant) -> tuple[str, int]:
    """mutmut's diff of the mutant, and the source line of its first removed line."""
    from mutmut.mutation.diff_apply import get_diff_for_mutant

    cwd = os.getcwd()
    os.chdir(ROOT)  # mutmut reads mutants/<path> relative to the working directory
    try:
        diff = get_diff_for_mutant(m.name, path=m.path)
    finally:
        os.chdir(cwd)
    start, end = _def_span(m.path, function_of(m.name))
    lines = (ROOT / m.path).read_text().splitlines()
    removed = [d[1:].strip() for d in diff.splitlines()[2:] if d.startswith("-")]
    for want in removed[:1]:
        for n in range(start, end + 1):
            if lines[n - 1].strip() == want:
                return diff, n
    return diff, start


def table_markdown(rows: list[Row]) -> str:
    head = "| module | mutants | " + " | ".join(COLUMNS) + " | before | score |"
    out = [head, "|" + "---|" * (len(COLUMNS) + 4)]
    total = Row("**all**")
    for r in rows:
        total.counts.update(r.counts)
        out.append(_row_line(r))
    out.append(_row_line(total))
    return "\n".join(out)


def _row_line(r: Row) -> str:
    score = "-" if r.score is None else f"{r.score:.1f} %"
    cells = " | ".join(str(r.counts[c]) for c in COLUMNS)
    return f"| {r.label} | {r.total} | {cells} | {BEFORE.get(r.label, '-')} | {score} |"


def previous_rows(text: str) -> dict[str, Row]:
    """The rows of the table in the doc's generated block, by module."""
    block = text.partition(BEGIN)[2].partition(END)[0]
    lines = [ln for ln in block.splitlines() if ln.startswith("| ")]
    if not lines:
        return {}
    names = [c.strip() for c in lines[0].strip("|").split("|")]
    rows: dict[str, Row] = {}
    for line in lines[1:]:
        cells = dict(zip(names, (c.strip() for c in line.strip("|").split("|")), strict=False))
        row = Row(cells["module"])
        row.counts.update({c: int(cells[c]) for c in COLUMNS if cells.get(c, "").isdigit()})
        rows[row.label] = row
    return rows


def keep_unrun(rows: list[Row], previous: dict[str, Row]) -> list[Row]:
    """This run's rows, and the last doc's for every module this run left alone
    (a run of some modules updates their rows only)."""
    ran = {r.label: r for r in rows if r.tested}
    return [ran.get(label) or previous.get(label) or Row(label) for label in SCOPE
            if label in ran or label in previous]


def survivors_text(rows: list[Row], fence: bool) -> str:
    """Every survivor per module: where, which function, and its diff (the full
    hunk for the text file; only the changed lines, folded per module, in the doc)."""
    out: list[str] = []
    for r in rows:
        if not r.survivors:
            continue
        title = f"{r.label}: {len(r.survivors)} not detected"
        out.append(f"<details><summary>{title}</summary>\n" if fence else f"### {title}\n")
        for m in sorted(r.survivors, key=lambda m: (m.path, _num(m.name))):
            diff, line = diff_and_line(m)
            hunk = diff.splitlines()[2:]
            if fence:
                hunk = [d for d in hunk if d[:1] in "+-" and not d.startswith("@@")]
            out.append(f"`{m.path}:{line}` {function_of(m.name)} ({m.column}) `{m.name}`\n")
            body = "\n".join(hunk)
            out.append(f"```diff\n{body}\n```\n" if fence else body + "\n")
        if fence:
            out.append("</details>\n")
    return "\n".join(out)


def _num(name: str) -> int:
    return int(name.rpartition("__mutmut_")[2])


def wall_time_line() -> str:
    """The runs that made these results (a stopped run resumed is two)."""
    if not WALL_TIME_FILE.exists():
        return "Wall time: not recorded."
    runs = json.loads(WALL_TIME_FILE.read_text())
    total_s = sum(r["wall_time_s"] for r in runs)
    parts = [f"{r['wall_time_s'] / 60:.1f} min ({', '.join(r['labels'])}; {r['workers']} workers"
             + (f"; {r['cpu_s'] / 60:.1f} CPU min" if "cpu_s" in r else "")
             + ("; resumed" if r.get("resumed") else "")
             + (f"; test time capped at {r['test_budget_s']:g} s per mutant"
                if r["test_budget_s"] else "") + ")" for r in runs]
    head = f"Wall time: {total_s / 60:.1f} min in {len(runs)} run(s)"
    if all("cpu_s" in r for r in runs):
        head += f" ({sum(r['cpu_s'] for r in runs) / 60:.1f} CPU min)"
    if len(runs) > 1 and all("started_utc" in r for r in runs):
        # Runs may overlap (shards side by side): the span is the elapsed time.
        span_s = (datetime.fromisoformat(max(r["ended_utc"] for r in runs))
                  - datetime.fromisoformat(min(r["started_utc"] for r in runs))).total_seconds()
        head += f", {span_s / 60:.1f} min from the first start to the last end"
    return f"{head}, on {os.cpu_count()} cores: " + "; ".join(parts) + "."


def time_table() -> str:
    """Where the run's time went: each module's mutants' CPU and wall seconds
    (summed over their forked test runs), and the survivors' share of the CPU
    (a survivor runs every test in its budget; a killed mutant stops at one)."""
    if not MUTANT_TIMES_FILE.exists():
        return "Time per module: not recorded."
    runs = [json.loads(line) for line in MUTANT_TIMES_FILE.read_text().splitlines() if line]
    cpu: Counter[str] = Counter()
    wall: Counter[str] = Counter()
    survivors_cpu: Counter[str] = Counter()
    count: Counter[str] = Counter()
    hangs: Counter[str] = Counter()
    for r in runs:
        label = label_of(r["name"]) or "other"
        count[label] += 1
        cpu[label] += r["cpu_s"]
        wall[label] += r["wall_s"]
        hangs[label] += bool(r.get("hang"))
        if r["exit"] == 0:
            survivors_cpu[label] += r["cpu_s"]
    out = ["| module | runs timed | CPU min | CPU s per mutant | wall min (summed) "
           "| survivors' CPU share | killed by the hang limit |", "|---|---|---|---|---|---|---|"]
    for label in [*SCOPE, "other"]:
        if count[label]:
            share = 100.0 * survivors_cpu[label] / cpu[label] if cpu[label] else 0.0
            out.append(f"| {label} | {count[label]} | {cpu[label] / 60:.1f} | "
                       f"{cpu[label] / count[label]:.2f} | {wall[label] / 60:.1f} | "
                       f"{share:.0f} % | {hangs[label]} |")
    total_cpu = sum(cpu.values())
    out.append(f"| **all** | {sum(count.values())} | {total_cpu / 60:.1f} | "
               f"{total_cpu / max(sum(count.values()), 1):.2f} | {sum(wall.values()) / 60:.1f} | "
               f"{100.0 * sum(survivors_cpu.values()) / max(total_cpu, 1e-9):.0f} % | "
               f"{sum(hangs.values())} |")
    return "\n".join(out)


def _replace_block(path: Path, title: str, block: str) -> None:
    """Rewrite the text between the markers of ``path``; the rest is kept."""
    text = path.read_text() if path.exists() else f"# {title}\n\n{BEGIN}\n{END}\n"
    if BEGIN not in text:
        text = f"# {title}\n\n{BEGIN}\n{END}\n"
    before, _, rest = text.partition(BEGIN)
    _, _, after = rest.partition(END)
    path.write_text(f"{before}{BEGIN}\n\n{block}\n\n{END}{after}")


def previous_survivors(text: str) -> dict[str, str]:
    """The survivors section of each module in the last survivors doc."""
    block = text.partition(BEGIN)[2].partition(END)[0] if BEGIN in text else text
    sections: dict[str, str] = {}
    for part in block.split("<details><summary>")[1:]:
        label = part.partition(":")[0]
        sections[label] = "<details><summary>" + part.partition("</details>")[0] + "</details>\n"
    return sections


def write_doc(table: str, survivors: str, kept: list[str]) -> None:
    """The table block of docs/mutation.md and the list of survivors; the
    sections of ``kept`` (modules this run left alone) stay as they were."""
    old = previous_survivors(SURVIVORS_DOC.read_text()) if SURVIVORS_DOC.exists() else {}
    new = previous_survivors(survivors)
    sections = [new.get(label) or old.get(label, "") for label in SCOPE
                if label in new or label in kept]
    _replace_block(SURVIVORS_DOC, "Surviving mutants", "\n".join(s for s in sections if s))
    _replace_block(DOC, "Mutation testing", (
        f"{table}\n\n{wall_time_line()}\n\n{time_table()}\n\n"
        f"Every surviving mutant, with its diff: "
        f"[mutation-survivors.md](mutation-survivors.md).\n\n"
        f"Regenerated by `scripts/mutation_report.py`; edit outside the markers."))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--survivors", type=Path, help="also write the survivors list here")
    parser.add_argument("--no-doc", action="store_true", help="print only")
    args = parser.parse_args(argv)
    rows = tabulate(load_mutants(), list(SCOPE))
    ran = [r for r in rows if r.tested]
    shown = keep_unrun(rows, previous_rows(DOC.read_text()) if DOC.exists() else {})
    table = table_markdown(shown)
    print(table)
    print(wall_time_line())
    print(time_table())
    if args.survivors:
        args.survivors.write_text(survivors_text(ran, fence=False))
    if not args.no_doc:
        kept = [r.label for r in shown if r.label not in {x.label for x in ran}]
        write_doc(table, survivors_text(ran, fence=True), kept)
        print(f"wrote {DOC.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
