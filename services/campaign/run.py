"""Run a campaign's cases on Dask, keep each result as it comes, resume, rerun.

The campaign directory::

    DIR/manifest.json        the campaign's name, file path and SHA-256, version, seeds
    DIR/campaign.yaml        a copy of the file as run (.json if it was JSON)
    DIR/cases/000042.json    one per finished case, written atomically as it comes
    DIR/cases.parquet        every case's row, sorted by case (written at the end)
    DIR/nats/000042.json     a case flown again by the six services over NATS
    DIR/nats/000042/         that run's state dir and report

One Dask task flies one case in-process (services/campaign/case.py) on a
``distributed.LocalCluster`` (one single-threaded worker process per core
asked for) or on the scheduler given. A worker killed mid-case is replaced by
its nanny and Dask runs the case again elsewhere; a case that raises or runs
past its budget is a row with its status and reason, and the campaign goes on.
Cases already on disk are never run again unless they failed (resume) or are
asked for (rerun).
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.parquet as pq
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from services.campaign.case import OUTCOME_COLUMNS, CaseSpec, fly_case, report_digest
from services.campaign.registry import plan_path
from services.campaign.spec import Campaign, CampaignError, load_campaign

__all__ = ["CampaignDir", "nats_check_case", "resume_campaign", "run_campaign",
           "run_case_task"]

log = logging.getLogger(__name__)

#: Wall seconds a case flown by the six services over NATS may take (start-up,
#: ~15 s of stepping, the report) before it counts as hung.
NATS_CASE_TIMEOUT_S = 900.0


@dataclass(frozen=True)
class CampaignDir:
    root: Path

    @property
    def manifest(self) -> Path:
        return self.root / "manifest.json"

    @property
    def cases_dir(self) -> Path:
        return self.root / "cases"

    @property
    def parquet(self) -> Path:
        return self.root / "cases.parquet"

    @property
    def nats_dir(self) -> Path:
        return self.root / "nats"

    def case_path(self, case: int) -> Path:
        return self.cases_dir / f"{case:06d}.json"

    def read_manifest(self) -> dict[str, Any]:
        try:
            raw: dict[str, Any] = orjson.loads(self.manifest.read_bytes())
        except FileNotFoundError:
            raise CampaignError(f"{self.root} holds no campaign (no manifest.json): start one "
                                "with twin campaign run FILE --out DIR") from None
        return raw

    def rows(self) -> dict[int, dict[str, Any]]:
        """The cases on disk, by case number."""
        out: dict[int, dict[str, Any]] = {}
        for path in sorted(self.cases_dir.glob("*.json")):
            row = orjson.loads(path.read_bytes())
            out[int(row["case"])] = row
        return out

    def write_row(self, row: Mapping[str, Any]) -> None:
        _atomic_write(self.case_path(int(row["case"])), orjson.dumps(
            row, option=orjson.OPT_SORT_KEYS | orjson.OPT_SERIALIZE_NUMPY))


def _atomic_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def version() -> str:
    try:
        return metadata.version("change6-twin")
    except metadata.PackageNotFoundError:
        return "unknown"


def manifest_of(camp: Campaign, file: Path, cases: int) -> dict[str, Any]:
    return {"name": camp.name, "campaign_file": str(file.resolve()),
            "campaign_sha256": camp.sha256, "version": version(), "root_seed": camp.seed,
            "cases": cases, "plan": camp.plan, "twin_seed": camp.twin_seed,
            "case_budget_s": camp.case_budget_s, "nats_check": camp.nats_check,
            "dispersions": {d.path: dict(camp.raw["dispersions"][d.path])
                            for d in camp.dispersions},
            "parameters": {d.path: {"nominal": d.parameter.nominal, "unit": d.parameter.unit}
                           for d in camp.dispersions},
            "seeding": "numpy SeedSequence(root_seed, spawn_key=(case, sha256(path)[:8]))"}


def case_spec(camp: Campaign, case: int) -> CaseSpec:
    return CaseSpec(case, camp.plan, camp.twin_seed_of(case), camp.draws(case),
                    camp.case_budget_s)


# --- the Dask tasks ------------------------------------------------------------

def run_case_task(spec_json: Mapping[str, Any]) -> dict[str, Any]:
    """A Dask task: fly one case, with what it cost (wall and CPU seconds)."""
    wall0, cpu0 = time.monotonic(), time.process_time()  # cost accounting only
    row = fly_case(CaseSpec.from_json(spec_json))
    row["cost"] = {"wall_s": round(time.monotonic() - wall0, 3),
                   "cpu_s": round(time.process_time() - cpu0, 3), "pid": os.getpid()}
    return row


def nats_check_case(spec_json: Mapping[str, Any], state_dir: str) -> dict[str, Any]:
    """A Dask task: fly one case again as a full mission, the six services over
    NATS (``twin run``, secure by default), and return its report's digest."""
    spec = CaseSpec.from_json(spec_json)
    state = Path(state_dir)
    state.mkdir(parents=True, exist_ok=True)
    report = state / "report.json"
    params = state / "parameters.json"
    params.write_bytes(orjson.dumps(dict(spec.parameters)))
    plan = plan_path(spec.plan)
    cmd = [sys.executable, "-m", "services.cli.app", "run",
           "--report", str(report), "--seed", str(spec.twin_seed), "--plan", str(plan),
           "--parameters", str(params), "--state-dir", str(state / "state"),
           "--mission", f"case-{spec.case}", "--log-level", "WARNING"]
    wall0 = time.monotonic()  # cost accounting only
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=NATS_CASE_TIMEOUT_S,
                          check=False)
    out: dict[str, Any] = {"case": spec.case, "exit": done.returncode,
                           "wall_s": round(time.monotonic() - wall0, 1),
                           "report": str(report)}
    if done.returncode != 0 or not report.exists():
        out["error"] = (done.stderr or done.stdout)[-2_000:]
        return out
    out["digest"] = report_digest(orjson.loads(report.read_bytes()))
    return out


# --- running ---------------------------------------------------------------------

@contextlib.contextmanager
def dask_client(workers: int, scheduler: str | None) -> Iterator[Any]:
    """A client of the scheduler at ``scheduler``, or of a LocalCluster of
    ``workers`` single-threaded worker processes (its dashboard off)."""
    from distributed import Client, LocalCluster

    if scheduler:
        with Client(scheduler, timeout="30s") as client:  # type: ignore[no-untyped-call]
            yield client
        return
    cluster = LocalCluster(  # type: ignore[no-untyped-call]
        n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None,
        silence_logs=logging.ERROR)
    with cluster, Client(cluster) as client:  # type: ignore[no-untyped-call]
        yield client


def _progress(console: Console, total: int) -> Progress:
    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TextColumn("{task.fields[failed]} failed"), TimeElapsedColumn(),
                    TextColumn("ETA"), TimeRemainingColumn(), console=console,
                    disable=not console.is_terminal, transient=False)


def fly_cases(specs: Sequence[CaseSpec], cdir: CampaignDir, *, workers: int,
              scheduler: str | None, console: Console, campaign: str) -> list[dict[str, Any]]:
    """Fly ``specs`` on Dask, writing each row as it comes; the rows."""
    from distributed import as_completed

    rows: list[dict[str, Any]] = []
    if not specs:
        return rows
    with dask_client(workers, scheduler) as client, _progress(console, len(specs)) as bar:
        task = bar.add_task("cases", total=len(specs), failed=0)
        futures = client.map(run_case_task, [s.to_json() for s in specs],
                             key=[f"case-{campaign}-{s.case}" for s in specs], pure=False)
        by_key = {f.key: s for f, s in zip(futures, specs, strict=True)}
        failed = 0
        for future in as_completed(futures):  # type: ignore[no-untyped-call]
            spec = by_key[future.key]
            try:
                row = future.result()
            except Exception as exc:  # the task itself was lost (KilledWorker, ...)
                row = {"case": spec.case, "twin_seed": spec.twin_seed, "status": "failed",
                       "reason": f"{type(exc).__name__}: {exc}", "success": False,
                       "parameters": dict(spec.parameters)}
            cdir.write_row(row)
            rows.append(row)
            failed += row["status"] != "ok"
            bar.update(task, advance=1, failed=failed)
            if not console.is_terminal and (len(rows) % 10 == 0 or len(rows) == len(specs)):
                console.print(f"cases {len(rows)}/{len(specs)}, {failed} failed")
    return rows


def run_campaign(file: Path, out: Path, *, cases: int | None = None, workers: int = 2,
                 scheduler: str | None = None, console: Console | None = None) -> int:
    """``twin campaign run``: a new campaign in ``out``; the exit code."""
    console = console or Console()
    camp = load_campaign(file)
    n = cases or camp.cases
    cdir = CampaignDir(out)
    if cdir.manifest.exists():
        raise CampaignError(f"{out} already holds a campaign: resume it with twin campaign "
                            f"resume {out}, or give another --out")
    out.mkdir(parents=True, exist_ok=True)
    (out / f"campaign{'.json' if file.suffix == '.json' else '.yaml'}").write_bytes(
        file.read_bytes())
    _atomic_write(cdir.manifest, orjson.dumps(manifest_of(camp, file, n),
                                              option=orjson.OPT_INDENT_2))
    return _run(camp, cdir, list(range(n)), n, workers, scheduler, console)


def resume_campaign(out: Path, *, workers: int = 2, scheduler: str | None = None,
                    console: Console | None = None) -> int:
    """``twin campaign resume``: fly only the cases missing or not ok; refuses
    when the campaign file changed since the campaign started."""
    console = console or Console()
    cdir = CampaignDir(out)
    manifest = cdir.read_manifest()
    file = Path(manifest["campaign_file"])
    if not file.exists():  # moved, or another machine (a pod): the copy kept here
        copies = sorted(cdir.root.glob("campaign.*"))
        if not copies:
            raise CampaignError(f"the campaign file {file} is gone and {cdir.root} has no copy "
                                f"of it: put it back (SHA-256 {manifest['campaign_sha256']})")
        console.print(f"{file} is not here: resuming from the copy {copies[0]}")
        file = copies[0]
    camp = load_campaign(file)
    if camp.sha256 != manifest["campaign_sha256"]:
        raise CampaignError(f"{file} changed since the campaign started (SHA-256 "
                            f"{camp.sha256[:12]}..., was {manifest['campaign_sha256'][:12]}...): "
                            "restore it, or start a new campaign with --out elsewhere")
    n = int(manifest["cases"])
    done = cdir.rows()
    todo = [k for k in range(n) if done.get(k, {}).get("status") != "ok"]
    console.print(f"{camp.name}: {n - len(todo)} of {n} cases done, {len(todo)} to fly")
    return _run(camp, cdir, todo, n, workers, scheduler, console)


def _run(camp: Campaign, cdir: CampaignDir, todo: list[int], n: int, workers: int,
         scheduler: str | None, console: Console) -> int:
    wall0 = time.monotonic()  # the campaign's own wall time, for the line below
    rows = fly_cases([case_spec(camp, k) for k in todo], cdir, workers=workers,
                     scheduler=scheduler, console=console, campaign=camp.name)
    all_rows = cdir.rows()
    write_parquet(cdir, camp, all_rows.values())
    mismatches = nats_checks(camp, cdir, n, all_rows, workers=workers, scheduler=scheduler,
                             console=console)
    cpu = sum(r.get("cost", {}).get("cpu_s", 0.0) for r in rows)
    ok = sum(r["status"] == "ok" for r in all_rows.values())
    wall = time.monotonic() - wall0
    console.print(f"{camp.name}: {ok} of {n} cases ok, {len(rows)} flown now in {wall:.1f} s "
                  f"wall ({cpu:.1f} CPU s; {60.0 * len(rows) / max(cpu, 1e-9):.1f} missions "
                  f"per core-minute); results in {cdir.parquet}")
    return 1 if mismatches else 0


def rerun_case(out: Path, case: int, *, console: Console | None = None) -> int:
    """``twin campaign rerun``: case ``case`` again, exactly, as a full mission
    (the six services over NATS) with a report; 0 if its digest matches."""
    console = console or Console()
    cdir = CampaignDir(out)
    manifest = cdir.read_manifest()
    row = cdir.rows().get(case)
    if not 0 <= case < int(manifest["cases"]):
        raise CampaignError(f"case {case}: the campaign has cases 0-{int(manifest['cases']) - 1}")
    camp = load_campaign(Path(manifest["campaign_file"]))
    if camp.sha256 != manifest["campaign_sha256"]:
        raise CampaignError(f"{manifest['campaign_file']} changed since the campaign started: "
                            "restore it to reproduce its cases")
    spec = case_spec(camp, case)
    state = cdir.root / "rerun" / f"{case:06d}"
    console.print(f"case {case}: twin seed {spec.twin_seed}, "
                  + ", ".join(f"{k}={v:.6g}" for k, v in spec.parameters.items()))
    got = nats_check_case(spec.to_json(), str(state))
    if "digest" not in got:
        console.print(f"[bold red]the mission did not finish[/bold red] (exit {got['exit']}):\n"
                      f"{got.get('error', '')}")
        return 1
    console.print(f"report: {got['report']}")
    if row is None or "digest" not in row:
        console.print("the campaign has no result for this case to compare with")
        return 0
    same = got["digest"] == row["digest"]
    console.print(f"digest {got['digest'][:16]}... "
                  + ("matches the campaign's" if same else
                     f"[bold red]differs from the campaign's {row['digest'][:16]}...[/bold red]"))
    return 0 if same else 1


def nats_checks(camp: Campaign, cdir: CampaignDir, n: int, rows: Mapping[int, Mapping[str, Any]],
                *, workers: int, scheduler: str | None, console: Console) -> list[int]:
    """Fly the campaign's NATS sample over the six services (those not checked
    yet) and compare digests; the cases whose digests differ."""
    picked = [k for k in camp.nats_cases(n) if rows.get(k, {}).get("status") == "ok"]
    todo = [k for k in picked if not (cdir.nats_dir / f"{k:06d}.json").exists()]
    if todo:
        console.print(f"flying {len(todo)} case(s) again over NATS: {todo}")
        with dask_client(min(workers, len(todo)), scheduler) as client:
            futures = [client.submit(nats_check_case, case_spec(camp, k).to_json(),
                                     str(cdir.nats_dir / f"{k:06d}"), pure=False,
                                     key=f"nats-{camp.name}-{k}") for k in todo]
            for k, future in zip(todo, futures, strict=True):
                got = future.result()
                got["inprocess_digest"] = rows[k]["digest"]
                got["same"] = got.get("digest") == rows[k]["digest"]
                _atomic_write(cdir.nats_dir / f"{k:06d}.json",
                              orjson.dumps(got, option=orjson.OPT_INDENT_2))
    bad = []
    for k in picked:
        got = orjson.loads((cdir.nats_dir / f"{k:06d}.json").read_bytes())
        if not got.get("same"):
            bad.append(k)
            console.print(f"[bold red]case {k}: over NATS {got.get('digest', 'no digest')} "
                          f"!= in-process {got['inprocess_digest']}[/bold red] "
                          f"{got.get('error', '')}")
    if picked and not bad:
        console.print(f"NATS cross-check: {len(picked)} case(s) flown by the six services "
                      "gave the in-process digests")
    return bad


# --- the results table -------------------------------------------------------------

_HEAD: tuple[tuple[str, pa.DataType], ...] = (
    ("case", pa.int64()), ("status", pa.string()), ("reason", pa.string()),
    ("success", pa.bool_()), ("digest", pa.string()), ("twin_seed", pa.int64()),
    ("end_t_s", pa.float64()), ("steps", pa.int64()))


def table_schema(paths: Iterable[str]) -> pa.Schema:
    paths = sorted(paths)
    return pa.schema([*_HEAD,
                      *((f"p.{p}", pa.float64()) for p in paths),
                      *((f"drawn.{p}", pa.float64()) for p in paths),
                      *((c, pa.float64()) for c in OUTCOME_COLUMNS),
                      ("landing_in_zone", pa.bool_())])


def table_row(row: Mapping[str, Any], paths: Iterable[str]) -> dict[str, Any]:
    """A case's JSON row as the table's columns (its cost left out: the table
    is the same for the same campaign on any machine)."""
    applied = row.get("applied") or {}
    drawn = row.get("parameters") or {}
    out: dict[str, Any] = {name: row.get(name) for name, _ in _HEAD}
    out["reason"] = out["reason"] or ""
    for p in paths:
        out[f"p.{p}"] = applied.get(p, math.nan)
        out[f"drawn.{p}"] = drawn.get(p, math.nan)
    for c in OUTCOME_COLUMNS:
        value = row.get(c)
        out[c] = math.nan if value is None else float(value)
    out["landing_in_zone"] = row.get("landing_in_zone")
    return out


def write_parquet(cdir: CampaignDir, camp: Campaign,
                  rows: Iterable[Mapping[str, Any]]) -> Path:
    paths = [d.path for d in camp.dispersions]
    ordered = sorted(rows, key=lambda r: int(r["case"]))
    table = pa.Table.from_pylist([table_row(r, paths) for r in ordered],
                                 schema=table_schema(paths))
    tmp = cdir.parquet.with_suffix(".parquet.tmp")
    pq.write_table(table, tmp)
    os.replace(tmp, cdir.parquet)
    return cdir.parquet
