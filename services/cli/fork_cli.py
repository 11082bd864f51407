"""`twin fork`: branch a running mission into a what-if fork and fly it beside it.

    twin fork ce6 --as ce6-late --at event:undocking --delay tei=2h
    twin fork ce6 --as ce6-weak --at now --fault "lander thrust_loss magnitude=0.1"
    twin fork ce6 --as ce6-alt --at 2024-06-10T00:00:00Z --plan my-plan.json

The parent's ground (gRPC ``MissionClock.Fork``) resolves the branch point,
picks the committed snapshot at or before it, checks the change and records
the fork in the parent's log; then this command starts the fork's six services
on the parent's NATS under the new mission id, follows the fork like `twin
run` and writes its report. The parent flies on. ``--request-only`` stops
after the record (for a fork whose services run elsewhere, e.g. the Kubernetes
component deploy/k8s/components/fork). docs/fork.md has the whole story.
"""

from __future__ import annotations

import asyncio
import re
import time
from pathlib import Path
from typing import Annotated, Any, NoReturn

import orjson
import typer
from rich.console import Console

from services.cli.grpc_client import Endpoint, TwinChannels, TwinRpcError
from services.cli.launch import EXIT_FAILED, LaunchOptions, describe_change, launch
from services.cli.output import say
from services.cli.supervisor import RUN_RECORD
from services.dynamics.timescale import iso_utc
from services.kernel.config import MISSION_ID_RE, host_port
from services.kernel.security import Security
from services.kernel.twin_pb import clock_pb2

__all__ = ["fork_command", "parse_at", "parse_delay", "parse_item"]

DEFAULT_STATE_DIR = Path(".state")
EXIT_BAD_INPUT = 2
_BAD_CODES = ("INVALID_ARGUMENT", "ALREADY_EXISTS")

console = Console()
err_console = Console(stderr=True)

_DURATION = re.compile(r"\s*([+-]?\d+(?:\.\d+)?)\s*([smhd]?)\s*")
_UNIT_S = {"": 1.0, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_ISO = re.compile(r"\d{4}-\d{2}-\d{2}T")


class BadForkArgument(ValueError):
    """A command-line value that does not say a fork; the message says what to fix."""


# --- parsing the change (pure) ----------------------------------------------------------
def parse_at(text: str) -> tuple[str, str]:
    """``--at``: now, a step number, a UTC instant or an event name (each may be
    written ``kind:value`` too) -> (kind, value)."""
    text = text.strip()
    kind, sep, value = text.partition(":")
    if sep and kind in ("step", "utc", "event"):
        pass
    elif text == "now":
        kind, value = "now", ""
    elif text.isdigit():
        kind, value = "step", text
    elif _ISO.match(text):
        kind, value = "utc", text
    elif re.fullmatch(r"[a-z][a-z0-9_]*", text):
        kind, value = "event", text
    else:
        raise BadForkArgument(f"--at {text!r}: give now, a step number, a UTC instant "
                              "(2024-06-10T00:00:00Z) or a mission event (undocking)")
    if not value and kind != "now":
        raise BadForkArgument(f"--at {text!r}: {kind} needs a value after the colon")
    return kind, value


def _value(text: str) -> Any:
    """A command argument: JSON where it reads as JSON (numbers, true), else text."""
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return text


def parse_item(text: str, what: str) -> dict[str, Any]:
    """``--command "TARGET OP k=v ..."`` or ``--fault "TARGET KIND k=v ..."`` as a
    flight-plan item without id or time."""
    words = text.split()
    if len(words) < 2 or any("=" not in w for w in words[2:]):
        example = ("\"orbiter orbit_adjust dv_m_s=1.5\"" if what == "command"
                   else "\"lander thrust_loss magnitude=0.1 duration_s=600\"")
        head = "OP" if what == "command" else "KIND"
        raise BadForkArgument(f"--{what} {text!r}: write TARGET {head} then key=value "
                              f"pairs, e.g. {example}")
    args = {k: _value(v) for k, _, v in (w.partition("=") for w in words[2:])}
    if what == "command":
        return {"target": words[0], "command": {"op": words[1], **args}}
    return {"target": words[0], "fault": {"kind": words[1], **args}}


def parse_delay(text: str) -> tuple[str, float]:
    """``--delay ITEM=DURATION`` (seconds, or with s, m, h, d) -> (item, seconds)."""
    item, sep, duration = text.partition("=")
    m = _DURATION.fullmatch(duration)
    if not sep or not item.strip() or m is None:
        raise BadForkArgument(f"--delay {text!r}: write ITEM=DURATION, e.g. tei=2h or "
                              "tcm3=-30m (s, m, h, d; plain numbers are seconds)")
    return item.strip(), float(m.group(1)) * _UNIT_S[m.group(2)]


def fork_request(child: str, at: str, commands: list[str], faults: list[str],
                 delays: list[str], plan: Path | None, reseed: bool) -> clock_pb2.ForkRequest:
    kind, value = parse_at(at)
    items = [parse_item(c, "command") for c in commands] + [parse_item(f, "fault")
                                                             for f in faults]
    request = clock_pb2.ForkRequest(
        mission=child, items_json=[orjson.dumps(i).decode() for i in items],
        delays_s=dict(parse_delay(d) for d in delays), reseed=reseed)
    if plan is not None:
        try:
            request.plan_json = plan.read_text()
        except OSError as exc:
            raise BadForkArgument(f"--plan {plan}: {exc.strerror or exc}") from None
    if kind == "now":
        request.now = True
    elif kind == "step":
        request.step = int(value)
    elif kind == "utc":
        request.utc = value
    else:
        request.event = value
    return request


# --- the command -----------------------------------------------------------------------
def _fail(message: str, code: int = EXIT_BAD_INPUT) -> NoReturn:
    err_console.print(f"[bold red]error:[/bold red] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def _parent_run(state_dir: Path, parent: str) -> dict[str, Any]:
    try:
        record: dict[str, Any] = orjson.loads((state_dir / RUN_RECORD).read_bytes())
    except (OSError, orjson.JSONDecodeError):
        _fail(f"no run recorded in {state_dir / RUN_RECORD}: give the --state-dir of the "
              f"`twin up` (or `twin run`) flying mission {parent}")
    if record.get("mission_id") != parent:
        _fail(f"the run in {state_dir} flies mission {record.get('mission_id')!r}, not "
              f"{parent!r}: give the --state-dir of {parent}'s run")
    if record.get("stopped"):
        _fail(f"the run of {parent} in {state_dir} has stopped: a fork branches from a "
              "mission whose ground is up (start it again with --resume)")
    return record


def _endpoint(text: str) -> Endpoint:
    try:
        host, port = host_port(text)
    except ValueError:
        _fail(f"--ground {text!r}: write HOST:PORT, e.g. ground:50051")
    return Endpoint("ground", host, port)


async def _ask(endpoint: Endpoint, security: Security,
               request: clock_pb2.ForkRequest, timeout_s: float) -> clock_pb2.ForkReply:
    async with TwinChannels({"ground": endpoint}, timeout_s=timeout_s,
                            credentials=security.grpc_channel_credentials()) as channels:
        return await channels.clock().fork(request)


def _describe(reply: clock_pb2.ForkReply, asked_s: float) -> None:
    said = describe_change(orjson.loads(reply.spec_json)["change"])
    say(console, f"fork {reply.mission} of {reply.parent} recorded in {asked_s:.2f} s: "
                 f"branch at {reply.branch_utc} (after parent step {reply.branch_step}), from "
                 f"the commit of step {reply.commit_step} at "
                 f"{iso_utc(reply.commit_mission_time_s)}; seed {reply.seed}")
    say(console, f"change: {said}")


def fork_command(
    parent: Annotated[str, typer.Argument(show_default=False,
                                          help="The running mission to fork (its id).")],
    child: Annotated[str, typer.Option(
        "--as", show_default=False, help="The fork's mission id (new, 1-32 of a-z 0-9 -).")],
    at: Annotated[str, typer.Option(
        "--at", help="The branch point: now, a step number, a UTC instant, or a mission "
        "event already seen (also step:N, utc:T, event:NAME).")] = "now",
    command: Annotated[list[str] | None, typer.Option(
        "--command", help='A command the fork sends at the branch point: "TARGET OP '
        'key=value ..." (repeatable).')] = None,
    fault: Annotated[list[str] | None, typer.Option(
        "--fault", help='A fault the fork injects at the branch point: "TARGET KIND '
        'magnitude=M duration_s=S" (repeatable).')] = None,
    delay: Annotated[list[str] | None, typer.Option(
        "--delay", help="A plan item later (or earlier) in the fork: ITEM=DURATION, e.g. "
        "tei=2h (repeatable).")] = None,
    plan: Annotated[Path | None, typer.Option(
        "--plan", exists=True, dir_okay=False, readable=True, resolve_path=True,
        help="A whole flight plan for the fork, from the branch point on.")] = None,
    reseed: Annotated[bool, typer.Option(
        "--reseed", help="Draw new random numbers after the branch (a seed derived from "
        "the parent's and the fork's id); default: the parent's, continued.")] = False,
    state_dir: Annotated[Path, typer.Option(
        "--state-dir", file_okay=False, help="The parent's state dir (its run.json, NATS, "
        "keys); the fork's files go in <state-dir>/forks/<id>.")] = DEFAULT_STATE_DIR,
    report: Annotated[Path | None, typer.Option(
        "--report", dir_okay=False, help="Write the fork's report JSON here.")] = None,
    request_only: Annotated[bool, typer.Option(
        "--request-only", help="Only record the fork; its services are started elsewhere "
        "(TWIN_FORK_OF=<parent>, e.g. deploy/k8s/components/fork).")] = False,
    paused: Annotated[bool, typer.Option(
        "--paused", help="Hold the fork's clock at the branch commit (twin clock resume "
        "--state-dir <state-dir>/forks/<id> starts it).")] = False,
    live: Annotated[bool | None, typer.Option(
        "--live/--no-live", help="The live table (default: on a terminal).")] = None,
    ground: Annotated[str | None, typer.Option(
        "--ground", help="The parent's ground as HOST:PORT, instead of its run.json (with "
        "--request-only: e.g. a Job on Kubernetes).")] = None,
    pki_dir: Annotated[Path | None, typer.Option(
        "--pki-dir", file_okay=False, envvar="TWIN_PKI_DIR",
        help="With --ground: the directory of ca.crt and the operator's client-operator.crt "
        "and .key (or TWIN_INSECURE=true for a plaintext twin).")] = None,
    insecure: Annotated[bool, typer.Option(
        "--insecure", envvar="TWIN_INSECURE",
        help="With --ground: plaintext gRPC (debugging only).")] = False,
    timeout: Annotated[float, typer.Option("--timeout", min=0.1,
                                           help="Wall seconds for the Fork call.")] = 30.0,
) -> None:
    """Branch a running mission at a committed snapshot and fly the what-if beside it."""
    if not MISSION_ID_RE.fullmatch(child):
        _fail(f"--as {child!r}: use 1-32 lower-case letters, digits or '-', starting "
              "alphanumeric")
    try:
        request = fork_request(child, at, command or [], fault or [], delay or [], plan, reseed)
    except BadForkArgument as exc:
        _fail(str(exc))
    if ground is not None:
        if not request_only:
            _fail("--ground asks a ground this command did not start: give --request-only "
                  "too (the fork's services then start elsewhere, with TWIN_FORK_OF)")
        endpoint = _endpoint(ground)
        if not insecure and pki_dir is None:
            _fail("--ground needs --pki-dir (the operator's certificate) or --insecure")
        security = Security.plaintext() if insecure else Security(pki_dir=pki_dir)
        record: dict[str, Any] = {}
    else:
        record = _parent_run(state_dir, parent)
        insecure = record.get("insecure") is True
        security = Security.plaintext() if insecure else Security.for_state_dir(state_dir)
        port = int(record["services"]["ground"]["grpc_port"])
        endpoint = Endpoint("ground", "127.0.0.1", port)
    started = time.monotonic()  # wall time, for the operator's figure only
    try:
        reply = asyncio.run(_ask(endpoint, security, request, timeout))
    except TwinRpcError as exc:
        bad = getattr(exc, "code", "") in _BAD_CODES
        _fail(str(exc), EXIT_BAD_INPUT if bad else EXIT_FAILED)
    _describe(reply, time.monotonic() - started)
    if request_only:
        raise typer.Exit(0)
    spec = orjson.loads(reply.spec_json)
    opts = LaunchOptions(
        state_dir=state_dir / "forks" / child, nats_url=str(record["nats"]["url"]),
        mission_id=child, seed=int(reply.seed), free_ports=True, mission_view=True,
        start_paused=paused,
        report_path=report, live=live, insecure=insecure, fork_of=parent,
        security_dir=state_dir, fork_spec=spec)
    raise typer.Exit(asyncio.run(launch(opts, console)))
