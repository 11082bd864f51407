"""`twin diff A B`: where two missions differ (docs/report.md, "Comparing two missions").

    twin diff r1.json r2.json              two reports of `twin run --report`
    twin diff ce6 ce6-whatif --nats-url U  two missions' logs on a NATS server
    twin diff r1.json ce6 --state-dir .state   a report against a running twin

Each side is a report file, or a mission id whose events are read back from
its JetStream log (the whole log: a mission id flown twice on one server
holds both runs, so compare their reports instead). Exit 0 when the missions
are identical, 1 when they differ, 2 when something given cannot be compared
(the message says what to fix). The comparison itself is services/cli/diff.py.
"""

from __future__ import annotations

import asyncio
import math
import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import orjson
import typer
from rich.console import Console

from services.cli.output import say, show
from services.cli.supervisor import RUN_RECORD
from services.kernel.config import MISSION_ID_RE

if TYPE_CHECKING:
    from services.cli.diff import Mission, MissionDiff

__all__ = ["EXIT_BAD_INPUT", "EXIT_DIFFER", "EXIT_IDENTICAL", "diff_command"]

EXIT_IDENTICAL = 0
EXIT_DIFFER = 1
EXIT_BAD_INPUT = 2  # what typer exits with for a bad argument
DEFAULT_STATE_DIR = Path(".state")
DIFF_JSON = "diff.json"
DIFF_PNG = "diff.png"

console = Console()
err_console = Console(stderr=True)


class _BadInput(Exception):
    """Something given cannot be compared; the message says what to fix."""


def _check_tolerance(value: float) -> float:
    if not (math.isfinite(value) and value >= 0.0):
        raise typer.BadParameter(f"{value!r}: give a number of seconds >= 0 (0: times must "
                                 "agree exactly)")
    return value


def diff_command(
    a: Annotated[str, typer.Argument(
        show_default=False, help="The reference (e.g. the parent): a report JSON written by "
        "`twin run --report`, or a mission id read from NATS.")],
    b: Annotated[str, typer.Argument(
        show_default=False, help="The mission compared with A (e.g. the fork): a report "
        "or a mission id.")],
    out: Annotated[Path | None, typer.Option(
        "--out", file_okay=False,
        help=f"Also write {DIFF_JSON} and {DIFF_PNG} (time shifts, landing points) here.")
    ] = None,
    tolerance_s: Annotated[float, typer.Option(
        "--tolerance-s", callback=_check_tolerance,
        help="Event times this many seconds apart count as the same (values must still "
        "agree exactly).")] = 0.0,
    nats_url: Annotated[str | None, typer.Option(
        "--nats-url", help="The NATS server holding the missions' logs (default: the one "
        "of the run in --state-dir).")] = None,
    state_dir: Annotated[Path | None, typer.Option(
        "--state-dir", file_okay=False, help="The state dir of the twin whose logs are read: "
        "its NATS url and the operator's certificate and creds (default .state/).")] = None,
) -> None:
    """Compare two missions: the first event where they part, key events moved,
    missing or added, landing points, propellant, the entry. Exit 0 identical,
    1 different, 2 on bad input."""
    from services.cli.diff import DiffInputError, compare, diff_grids  # pyplot-free, but heavy

    try:
        mission_a, mission_b = _read_both(a, b, nats_url, state_dir)
        result = compare(mission_a, mission_b, tolerance_s)
    except (_BadInput, DiffInputError) as exc:
        _fail(str(exc))
    for grid in diff_grids(result):
        show(console, grid)
    if out is not None:
        _write(result, out)
    raise typer.Exit(EXIT_IDENTICAL if result.identical else EXIT_DIFFER)


def _fail(message: str) -> NoReturn:
    err_console.print(f"[bold red]error:[/bold red] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(EXIT_BAD_INPUT)


def _write(result: MissionDiff, out: Path) -> None:
    from services.cli.diff import diff_json, plot_diff

    try:
        out.mkdir(parents=True, exist_ok=True)
        json_path = out / DIFF_JSON
        json_path.write_bytes(orjson.dumps(diff_json(result), option=orjson.OPT_INDENT_2))
        png = plot_diff(result, out / DIFF_PNG)
    except OSError as exc:
        _fail(f"cannot write to {out}: {exc.strerror or exc} (give a writable --out)")
    say(console, f"wrote {json_path}")
    say(console, f"wrote {png}")


# --- the two sides ---------------------------------------------------------------------


def _read_both(a: str, b: str, nats_url: str | None,
               state_dir: Path | None) -> tuple[Mission, Mission]:
    """Reports read from files; mission ids from NATS, both over one event loop."""
    kinds = [_kind(arg) for arg in (a, b)]
    missions: dict[str, Mission] = {arg: _read_report(Path(arg))
                                    for arg, kind in zip((a, b), kinds, strict=True)
                                    if kind == "report"}
    ids = [arg for arg, kind in zip((a, b), kinds, strict=True) if kind == "mission"]
    if ids:
        url, where = _nats_url(nats_url, state_dir)
        missions |= asyncio.run(_read_logs(dict.fromkeys(ids), url, where))
    return missions[a], missions[b]


def _kind(arg: str) -> str:
    """'report' for an existing file, 'mission' for a mission id; else what to fix."""
    path = Path(arg)
    if path.is_file():
        return "report"
    if path.is_dir():
        raise _BadInput(f"{arg} is a directory: give a report file written by "
                        "`twin run --report PATH`")
    if MISSION_ID_RE.fullmatch(arg):
        return "mission"
    raise _BadInput(f"no report file {arg}: give the path of a report written by "
                    "`twin run --report PATH`, or a mission id (e.g. ce6) to read from NATS")


def _read_report(path: Path) -> Mission:
    from services.cli.diff import Mission, rows_of_report

    try:
        body = orjson.loads(path.read_bytes())
    except OSError as exc:
        raise _BadInput(f"cannot read {path}: {exc.strerror or exc}") from None
    except orjson.JSONDecodeError as exc:
        raise _BadInput(f"{path} is not JSON ({exc}): give a report written by "
                        "`twin run --report PATH`") from None
    rows = rows_of_report(body, str(path))
    label = f"{path} (mission {body.get('mission_id', '?')}, seed {body.get('seed', '?')}, " \
            f"plan {body.get('plan', '?')})"
    return Mission(label, rows, finished=True)  # a report is written only at the finish


def _read_record(state_dir: Path) -> dict[str, Any] | None:
    try:
        record: dict[str, Any] = orjson.loads((state_dir / RUN_RECORD).read_bytes())
    except (OSError, orjson.JSONDecodeError):
        return None
    return record


def _nats_url(given: str | None, state_dir: Path | None) -> tuple[str, Path]:
    """--nats-url, else the NATS of the run recorded in the state dir."""
    where = state_dir or DEFAULT_STATE_DIR
    if given is not None:
        return given, where
    record = _read_record(where) or {}
    url = (record.get("nats") or {}).get("url")
    if not url:
        raise _BadInput(f"no NATS to read missions from: give --nats-url, or the --state-dir "
                        f"of a twin run (no readable {where / RUN_RECORD})")
    return str(url), where


def _nats_options(mission: str, state_dir: Path) -> dict[str, Any]:
    """The operator's TLS and creds for ``mission`` from the state dir, as
    `twin status` finds its certificate; plaintext when the run was, or
    TWIN_INSECURE says so."""
    from services.kernel.errors import ConfigError
    from services.kernel.security import OPERATOR, Security

    record = _read_record(state_dir)
    asked = os.environ.get("TWIN_INSECURE", "").strip().lower() in ("1", "true", "yes", "on")
    if asked or (record is not None and record.get("insecure") is True):
        return {}
    security = Security.for_state_dir(state_dir)
    try:
        security.check(mission, OPERATOR, grpc_server=False)
    except ConfigError as exc:
        raise _BadInput(f"no NATS credentials for mission {mission!r} in {state_dir} ({exc}): "
                        "give the --state-dir of the run, or set TWIN_INSECURE=true for a "
                        "plaintext server") from None
    return security.nats_options(mission, OPERATOR)


async def _read_logs(ids: dict[str, None], url: str, state_dir: Path) -> dict[str, Mission]:
    from services.cli.diff import MISSION_END, Mission
    from services.cli.mission_log import MissionLog, MissionLogError
    from services.kernel.eventrows import event_rows

    out = {}
    for mission in ids:
        try:
            # From the stream's start (sequence 0): the mission's whole log.
            async with MissionLog(url, mission, 0,
                                  options=_nats_options(mission, state_dir)) as log:
                rows = event_rows(await log.read())
        except MissionLogError as exc:
            raise _BadInput(f"{exc}: check --nats-url (or --state-dir)") from None
        if not rows:
            raise _BadInput(f"no events of mission {mission!r} on NATS at {url}: check the "
                            "mission id (`twin status` shows a running twin's)")
        finished = any(r["name"] == MISSION_END for r in rows)
        state = "finished" if finished else "running"
        out[mission] = Mission(f"mission {mission} on NATS ({state}, {len(rows)} events)",
                               rows, finished)
    return out
