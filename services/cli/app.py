"""`twin`: run the Chang'e-6 twin locally, look at it, drive its clock.

    twin up      start NATS and the six services, show the mission live
    twin run     the same as fast as possible, then exit (optionally --report)
    twin report  plots (PNG) of a report written by `twin run --report`
    twin k8s-secrets  the Secrets the Kubernetes manifests mount
    twin status  every service's phase, time, mass, altitude and faults
    twin clock   time | pause | resume | warp X | step N | until <utc|plan item|event>
    twin campaign  run | resume | rerun | report: Monte Carlo campaigns on Dask
    twin fork    branch a running mission into a what-if fork, flown beside it
    twin parameters  the dispersible vehicle parameters
    twin diff A B  where two missions (reports or mission ids) differ

Bad arguments exit with code 2 and a message saying what to fix; a service
that cannot be reached exits 1 and is named.
"""

from __future__ import annotations

import asyncio
import math
import os
import re
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, NoReturn, TypeVar

import grpc
import orjson
import typer
from rich.console import Console
from rich.text import Text

from services.cli.campaign_cli import campaign_app, parameters_command, read_parameters_file
from services.cli.ccsds import CcsdsLink, parse_address
from services.cli.clock_wait import (
    Target,
    WaitProgress,
    timed_out_message,
    until_suffix,
    wait_for,
)
from services.cli.diff_cli import diff_command
from services.cli.fork_cli import fork_command
from services.cli.grpc_client import (
    ClockClient,
    Endpoint,
    ServiceRejected,
    TwinChannels,
    TwinRpcError,
    WaitTimedOut,
    local_endpoints,
)
from services.cli.launch import EXIT_FAILED, EXIT_OK, LaunchOptions, launch, pid_alive
from services.cli.output import Column, Grid, say, show
from services.cli.progress import (
    StatusOrError,
    clock_line,
    restarts_line,
    short_utc,
    status_table,
)
from services.cli.restarts import RestartPolicy
from services.cli.supervisor import RUN_RECORD
from services.kernel.config import MISSION_ID_RE, SERVICE_NAMES
from services.kernel.security import Security
from services.kernel.twin_pb import clock_pb2

app = typer.Typer(
    name="twin",
    help="The Chang'e-6 digital twin: run it, watch it, drive its clock.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
clock_app = typer.Typer(help="Drive the mission clock (served by ground).", no_args_is_help=True)
app.add_typer(clock_app, name="clock")
app.add_typer(campaign_app, name="campaign")
app.command("parameters")(parameters_command)
app.command("diff")(diff_command)
app.command("fork")(fork_command)

console = Console()
err_console = Console(stderr=True)

_NATS_URL_RE = re.compile(r"^(nats|tls|ws|wss)://\S+$")
DEFAULT_STATE_DIR = Path(".state")


# --- validation: each says what to fix -------------------------------------


def _check_warp(value: str | None) -> str | None:
    if value is None or value.strip().lower() == "max":
        return None if value is None else "max"
    try:
        factor = float(value)
    except ValueError:
        raise typer.BadParameter(f"{value!r} is not a warp: use 'max' or a factor > 0, "
                                 "e.g. 3600 for an hour per second") from None
    if not (math.isfinite(factor) and factor > 0):
        raise typer.BadParameter(f"{value!r}: the warp factor must be > 0 (or 'max')")
    return repr(factor)


def _check_mission(value: str | None) -> str | None:
    if value is not None and not MISSION_ID_RE.fullmatch(value):
        raise typer.BadParameter(f"{value!r}: use 1-32 lower-case letters, digits or '-', "
                                 "starting with a letter or digit (e.g. ce6)")
    return value


def _check_nats_url(value: str | None) -> str | None:
    if value is not None:
        for url in value.split(","):
            if not _NATS_URL_RE.match(url.strip()):
                raise typer.BadParameter(f"{url!r}: write it as nats://host:port "
                                         "(comma separated for several)")
    return value


def _check_log_level(value: str) -> str:
    level = value.upper()
    if level not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        raise typer.BadParameter(f"{value!r}: use DEBUG, INFO, WARNING or ERROR")
    return level


def _parse_ports(value: str | None) -> dict[str, int] | None:
    """`ground=50051,orbiter=50052` or six ports in service order."""
    if value is None:
        return None
    items = [item.strip() for item in value.split(",") if item.strip()]
    try:
        if all("=" in item for item in items):
            pairs = [item.split("=", 1) for item in items]
            ports = {name.strip(): int(port) for name, port in pairs}
        elif len(items) == len(SERVICE_NAMES):
            ports = {name: int(port) for name, port in zip(SERVICE_NAMES, items, strict=True)}
        else:
            raise ValueError
    except ValueError:
        raise typer.BadParameter(
            param_hint="--ports",
            message=f"{value!r}: give name=port pairs (e.g. ground=50051,orbiter=50052) or "
            f"{len(SERVICE_NAMES)} ports in the order {','.join(SERVICE_NAMES)}"
        ) from None
    unknown = sorted(set(ports) - set(SERVICE_NAMES))
    if unknown:
        raise typer.BadParameter(f"unknown services {unknown}: use {', '.join(SERVICE_NAMES)}",
                                 param_hint="--ports")
    bad = {n: p for n, p in ports.items() if not 0 < p < 65536}
    if bad:
        raise typer.BadParameter(f"ports out of range {bad}: use 1-65535", param_hint="--ports")
    return ports


# --- shared options ------------------------------------------------------------

NatsUrlOpt = Annotated[str | None, typer.Option(
    "--nats-url", callback=_check_nats_url,
    help="Use this NATS server instead of starting a private one.")]
PlanOpt = Annotated[Path | None, typer.Option(
    "--plan", exists=True, dir_okay=False, readable=True, resolve_path=True,
    help="Flight plan JSON (default: the packaged nominal plan).")]
StateDirOpt = Annotated[Path, typer.Option(
    "--state-dir", file_okay=False, help="Where logs, NATS data and run.json go.")]
MissionOpt = Annotated[str, typer.Option("--mission", callback=_check_mission,
                                         help="Mission id, part of every subject.")]
SeedOpt = Annotated[int | None, typer.Option("--seed", min=0, help="Seed of every random draw.")]
ObserveOpt = Annotated[bool, typer.Option(
    "--observe", help="Also start a Prometheus (with up: kept up after the finish until Ctrl-C).")]
PausedOpt = Annotated[bool, typer.Option("--paused", help="Start with the clock paused.")]
FreePortsOpt = Annotated[bool, typer.Option(
    "--free-ports/--default-ports",
    help="Give the services free ports instead of the contract's 50051-50056/9101-9106.")]
HealthTimeoutOpt = Annotated[float, typer.Option(
    "--health-timeout", min=1.0, help="Wall seconds to wait for every service to be healthy.")]
LogLevelOpt = Annotated[str, typer.Option(
    "--log-level", callback=_check_log_level,
    help="Services' log level: DEBUG, INFO, WARNING, ERROR.")]
HostOpt = Annotated[str, typer.Option("--host", help="Where the services listen.")]
PortsOpt = Annotated[str | None, typer.Option(
    "--ports", help="gRPC ports: name=port pairs, or six ports in service order.")]
StateDirLookupOpt = Annotated[Path | None, typer.Option(
    "--state-dir", help="Read the ports of a running `twin up` from its run.json "
    "(default: .state/ when a run there is alive, else the contract's ports).")]
TimeoutOpt = Annotated[float, typer.Option("--timeout", min=0.1, help="Wall seconds per call.")]
ResumeOpt = Annotated[bool, typer.Option(
    "--resume", help="Continue the mission last run in --state-dir (stopped by a signal or "
    "a crash of everything) from its last committed snapshot, to the report it would have "
    "had; its seed and plan are reused.")]
def _check_address(value: str | None) -> str | None:
    if value is None:
        return None
    try:
        parse_address(value, "")
    except ValueError:
        raise typer.BadParameter(f"{value!r}: write HOST:PORT, e.g. 127.0.0.1:10015") from None
    return value


CcsdsTmOpt = Annotated[str | None, typer.Option(
    "--ccsds-tm", envvar="TWIN_CCSDS_TM", callback=_check_address,
    help="Send what ground receives as CCSDS Space Packets to this UDP HOST:PORT (a mission "
    "control system: Yamcs, COSMOS; docs/ccsds.md).")]
CcsdsTcOpt = Annotated[str | None, typer.Option(
    "--ccsds-tc", envvar="TWIN_CCSDS_TC", callback=_check_address,
    help="Take CCSDS telecommands on this UDP HOST:PORT and uplink them through ground "
    "(needs --ccsds-tm).")]


def _yamcs_or_ccsds(yamcs: bool, tm: str | None, tc: str | None) -> CcsdsLink | None:
    if yamcs and (tm or tc):
        raise typer.BadParameter("--yamcs gives the gateway Yamcs' own addresses: leave out "
                                 "--ccsds-tm/--ccsds-tc", param_hint="--yamcs")
    return _ccsds(tm, tc)


def _ccsds(tm: str | None, tc: str | None) -> CcsdsLink | None:
    if tm is None:
        if tc is not None:
            raise typer.BadParameter("--ccsds-tc needs --ccsds-tm too: the acknowledgements "
                                     "of the telecommands go out as telemetry",
                                     param_hint="--ccsds-tc")
        return None
    return CcsdsLink(parse_address(tm, "--ccsds-tm"),
                     parse_address(tc, "--ccsds-tc") if tc is not None else None)


InsecureOpt = Annotated[bool, typer.Option(
    "--insecure", envvar="TWIN_INSECURE",
    help="Plaintext NATS and gRPC with no identities or permissions, for debugging only "
    "(logged loudly). Default: a private CA, mTLS and per-service NATS identities, "
    "created in --state-dir on first use.")]
def _read_parameters(path: Path | None) -> dict[str, float]:
    return read_parameters_file(path) if path is not None else {}


ParametersOpt = Annotated[Path | None, typer.Option(
    "--parameters", exists=True, dir_okay=False, readable=True, resolve_path=True,
    help="Dispersed vehicle parameters: a JSON object of path -> value "
    '({"lander.engine.thrust_scale": 0.98}; twin parameters lists them).')]
MaxRestartsOpt = Annotated[int, typer.Option(
    "--max-restarts", min=0,
    help="Restarts of one child (a service or nats-server) killed or exiting unexpectedly, "
    "within a minute, before the run gives up; 0 stops the run on any death. A service "
    "that failed inside (exit 70) or is misconfigured (exit 2) is never restarted.")]


def _launch(opts: LaunchOptions) -> None:
    code = asyncio.run(launch(opts, console))
    raise typer.Exit(code)


@app.command()
def up(
    nats_url: NatsUrlOpt = None,
    plan: PlanOpt = None,
    warp: Annotated[str | None, typer.Option(
        "--warp", callback=_check_warp,
        help="'max' (as fast as possible) or a real-time factor > 0.")] = None,
    state_dir: StateDirOpt = DEFAULT_STATE_DIR,
    mission: MissionOpt = "ce6",
    seed: SeedOpt = None,
    observe: ObserveOpt = False,
    paused: PausedOpt = False,
    free_ports: FreePortsOpt = False,
    health_timeout: HealthTimeoutOpt = 60.0,
    log_level: LogLevelOpt = "INFO",
    max_restarts: MaxRestartsOpt = RestartPolicy.max_restarts,
    resume: ResumeOpt = False,
    insecure: InsecureOpt = False,
    parameters: ParametersOpt = None,
    report: Annotated[Path | None, typer.Option(
        "--report", dir_okay=False, help="Write the mission report (JSON) here at the "
        "finish.")] = None,
    ccsds_tm: CcsdsTmOpt = None,
    ccsds_tc: CcsdsTcOpt = None,
    yamcs: Annotated[bool, typer.Option(
        "--yamcs", help="Also start Yamcs (from the bundle, Java 17) as mission control, fed "
        "by the CCSDS gateway; stays up after the finish until Ctrl-C (docs/ccsds.md).")
    ] = False,
) -> None:
    """Start NATS and the six services and show the mission live until it finishes."""
    _launch(LaunchOptions(
        state_dir=state_dir, nats_url=nats_url, mission_id=mission, flight_plan=plan,
        warp=warp, seed=seed, start_paused=paused, free_ports=free_ports, observe=observe,
        health_timeout_s=health_timeout, log_level=log_level, linger=observe or yamcs,
        mission_view=True, max_restarts=max_restarts, resume=resume, insecure=insecure,
        parameters=_read_parameters(parameters), report_path=report,
        ccsds=_yamcs_or_ccsds(yamcs, ccsds_tm, ccsds_tc), yamcs=yamcs,
    ))


@app.command()
def run(
    report: Annotated[Path | None, typer.Option(
        "--report", dir_okay=False, help="Write the mission report (JSON) here.")] = None,
    nats_url: NatsUrlOpt = None,
    plan: PlanOpt = None,
    state_dir: StateDirOpt = DEFAULT_STATE_DIR,
    mission: MissionOpt = "ce6",
    seed: SeedOpt = None,
    observe: ObserveOpt = False,
    free_ports: Annotated[bool, typer.Option(
        "--free-ports/--default-ports",
        help="Free ports (the default here) or the contract's fixed ones.")] = True,
    health_timeout: HealthTimeoutOpt = 60.0,
    log_level: LogLevelOpt = "WARNING",
    max_restarts: MaxRestartsOpt = RestartPolicy.max_restarts,
    resume: ResumeOpt = False,
    insecure: InsecureOpt = False,
    parameters: ParametersOpt = None,
    ccsds_tm: CcsdsTmOpt = None,
    ccsds_tc: CcsdsTcOpt = None,
) -> None:
    """Run the whole mission as fast as possible, then exit (0 when it finished)."""
    _launch(LaunchOptions(
        state_dir=state_dir, nats_url=nats_url, mission_id=mission, flight_plan=plan,
        warp="max", seed=seed, free_ports=free_ports, observe=observe,
        health_timeout_s=health_timeout, log_level=log_level,
        report_path=report, mission_view=True, max_restarts=max_restarts, resume=resume,
        insecure=insecure, parameters=_read_parameters(parameters),
        ccsds=_ccsds(ccsds_tm, ccsds_tc),
    ))


@app.command()
def report(
    path: Annotated[Path, typer.Argument(
        exists=True, dir_okay=False, readable=True,
        help="A report written by `twin run --report PATH`.")],
    out_dir: Annotated[Path | None, typer.Option(
        "--out-dir", file_okay=False, help="Where the PNGs go (default: next to the report).")
    ] = None,
) -> None:
    """Render the report's plots (PNG) and print its key-event table."""
    from services.cli.key_events import comparison_table
    from services.cli.plots import render_all  # matplotlib loads only for this command
    from services.cli.report import read_report

    try:
        body = read_report(path)
        written = render_all(path, out_dir)
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        err_console.print(f"[bold red]error:[/bold red] {path} is not a twin report: {exc!r}",
                          highlight=False, soft_wrap=True)
        raise typer.Exit(EXIT_FAILED) from None
    show(console, comparison_table(body.get("comparison", [])))
    for png in written:
        say(console, f"wrote {png}")


_NAMESPACE_RE = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")


def _check_namespace(value: str) -> str:
    if not _NAMESPACE_RE.fullmatch(value):
        raise typer.BadParameter(f"{value!r}: a namespace is a DNS label: lower-case letters, "
                                 "digits and '-', at most 63, starting and ending alphanumeric")
    return value


@app.command("k8s-secrets")
def k8s_secrets(
    mission: MissionOpt = "ce6",
    namespace: Annotated[str, typer.Option(
        "--namespace", callback=_check_namespace,
        help="Namespace of the Secrets and of the servers' DNS names (dev: twin-dev).")] = "twin",
    out: Annotated[Path | None, typer.Option(
        "--out", file_okay=False,
        help="Directory to write (default: deploy/k8s/secrets/<namespace>, gitignored); "
        "with --fork-of, the parent's, whose keys sign the fork's creds.")
    ] = None,
    certificates: Annotated[bool, typer.Option(
        "--certificates/--creds-only",
        help="--creds-only: only the NATS creds and operator config, when the "
        "cert-manager component issues the certificates.")] = True,
    fork_of: Annotated[str | None, typer.Option(
        "--fork-of", show_default=False,
        help="--mission is a what-if fork of this running mission (deploy/k8s/components/"
        "fork): write only the fork's Secrets, into <out>/forks/<mission>.")] = None,
) -> None:
    """Write the Secrets the Kubernetes manifests mount (docs/deploy.md, section 10):
    the CA and certificates, each service's NATS creds and the NATS operator
    config, as a kustomization to apply with `kubectl apply -k`. Run again to
    mint fresh creds; the CA and keys in the directory are reused. With
    --fork-of, the Secrets of a what-if fork flown beside that mission on its
    NATS (docs/deploy.md, "What-if forks on a cluster")."""
    from services.cli.k8s_secrets import default_out_dir, write_fork_secrets, write_secrets
    from services.kernel.errors import TwinError

    where = parent_dir = out or default_out_dir(namespace)
    command = (f"twin k8s-secrets --mission {mission} --namespace {namespace}"
               + ("" if fork_of is None else f" --fork-of {fork_of}")
               + ("" if certificates else " --creds-only"))
    try:
        if fork_of is None:
            secrets = write_secrets(where, mission, namespace, certificates=certificates,
                                    command=command)
        else:
            where, secrets = write_fork_secrets(parent_dir, mission, fork_of, namespace,
                                                certificates=certificates, command=command)
    except (TwinError, OSError) as exc:
        err_console.print(f"[bold red]error:[/bold red] {exc}", highlight=False, soft_wrap=True)
        raise typer.Exit(EXIT_FAILED) from None
    if fork_of is None:
        what = f"mission {mission}"
        held = "the CA key and the NATS seeds" if certificates else "the NATS seeds"
    else:
        what = f"fork {mission} of {fork_of}"
        held = "the fork's NATS seeds" + (" and the operator's key" if certificates else "")
    say(console, f"wrote {len(secrets)} Secrets for {what} in namespace "
                 f"{namespace} to {where / 'kustomization.yaml'}")
    if fork_of is not None:
        say(console, f"the fork's creds are signed by the NATS keys in {parent_dir} (left "
                     "unchanged), which the cluster's NATS trusts")
    say(console, f"apply them:  kubectl apply -k {where}")
    say(console, f"keep {where} private and out of git: it holds {held}")


# --- talking to a running twin --------------------------------------------------


def _endpoints(host: str, ports: dict[str, int] | None, state_dir: Path | None,
               services: tuple[str, ...] = SERVICE_NAMES) -> dict[str, Endpoint]:
    """Ports from --ports, else a run.json (--state-dir, or a live run in .state/),
    else the contract's defaults."""
    if ports is None and state_dir is not None:
        ports = _ports_from_run_record(state_dir)
    elif ports is None:
        ports = _ports_of_live_run(DEFAULT_STATE_DIR)
    return local_endpoints(host, ports, services)


def _read_run_record(state_dir: Path) -> dict[str, Any] | None:
    try:
        record: dict[str, Any] = orjson.loads((state_dir / RUN_RECORD).read_bytes())
    except (FileNotFoundError, orjson.JSONDecodeError):
        return None
    return record


def _ports_from_run_record(state_dir: Path) -> dict[str, int]:
    record = _read_run_record(state_dir)
    if record is None:
        raise typer.BadParameter(f"no readable {state_dir / RUN_RECORD}: is `twin up` running "
                                 "with this --state-dir?", param_hint="--state-dir")
    if record.get("stopped"):
        raise typer.BadParameter(f"the run recorded in {state_dir / RUN_RECORD} has stopped",
                                 param_hint="--state-dir")
    return {name: int(s["grpc_port"]) for name, s in record["services"].items()}


def _ports_of_live_run(state_dir: Path) -> dict[str, int] | None:
    """The ports of a `twin up` still running from `state_dir`, if there is one."""
    record = _read_run_record(state_dir)
    if record is None or record.get("stopped") or not pid_alive(int(record["cli_pid"])):
        return None
    return {name: int(s["grpc_port"]) for name, s in record["services"].items()}


def _recorded_restarts(state_dir: Path | None) -> dict[str, int]:
    """Restarts per child from the run record (--state-dir, or a live run in .state/)."""
    record = _read_run_record(state_dir or DEFAULT_STATE_DIR)
    if record is None or (state_dir is None and _ports_of_live_run(DEFAULT_STATE_DIR) is None):
        return {}
    counts = {name: int(s.get("restarts", 0)) for name, s in record["services"].items()}
    counts["nats-server"] = int(record.get("nats", {}).get("restarts", 0))
    return counts


def _credentials(state_dir: Path | None) -> grpc.ChannelCredentials | None:
    """The operator's client certificate from the run's state dir (--state-dir,
    else .state/); none when that run is plaintext, or TWIN_INSECURE says so."""
    where = state_dir or DEFAULT_STATE_DIR
    record = _read_run_record(where)
    asked = os.environ.get("TWIN_INSECURE", "").strip().lower() in ("1", "true", "yes", "on")
    if asked or (record is not None and record.get("insecure") is True):
        return None
    if record is not None and record.get("security_dir"):  # a fork's: its parent's PKI
        where = Path(record["security_dir"])
    security = Security.for_state_dir(where)
    try:
        return security.grpc_channel_credentials()
    except FileNotFoundError:
        raise typer.BadParameter(
            f"no operator certificate in {security.pki_dir} (client-operator.crt): give the "
            "--state-dir of the run, or set TWIN_INSECURE=true for a plaintext twin",
            param_hint="--state-dir") from None


async def _status(endpoints: dict[str, Endpoint], mission: str | None, timeout_s: float,
                  restarts: dict[str, int] | None = None,
                  creds: grpc.ChannelCredentials | None = None) -> int:
    async with TwinChannels(endpoints, timeout_s=timeout_s, credentials=creds) as channels:
        statuses = await channels.all_statuses()
        clock: clock_pb2.ClockState | TwinRpcError
        try:
            clock = await channels.clock().get_time()
        except TwinRpcError as exc:
            clock = exc
    show(console, status_table(statuses, title="twin status"))
    ground_down = isinstance(statuses.get("ground"), TwinRpcError)
    # With ground down the clock's error is ground's, already listed below.
    say(console, "clock unavailable: ground is down" if ground_down and isinstance(
        clock, TwinRpcError) else clock_line(clock))
    if restarted := restarts_line(restarts or {}):
        say(console, restarted)
    problems = _status_problems(statuses, endpoints, mission)
    for what, line in problems:
        err_console.print(Text.assemble((f"{what}: ", "bold red"), line), soft_wrap=True)
    return EXIT_FAILED if problems else EXIT_OK


def _status_problems(statuses: dict[str, StatusOrError], endpoints: dict[str, Endpoint],
                     mission: str | None) -> list[tuple[str, str]]:
    """One (kind, line) per service that is down or runs another mission."""
    problems = [("down", f"{name} ({endpoints[name].target}): {s.detail}")
                for name, s in statuses.items() if isinstance(s, TwinRpcError)]
    if mission is not None:
        problems += [("wrong mission", f"{name} runs {s.mission_id!r}, expected {mission!r}")
                     for name, s in statuses.items()
                     if not isinstance(s, TwinRpcError) and s.mission_id != mission]
    return problems


@app.command()
def status(
    mission: Annotated[str | None, typer.Option(
        "--mission", callback=_check_mission,
        help="Fail if a service runs another mission.")] = None,
    host: HostOpt = "127.0.0.1",
    ports: PortsOpt = None,
    state_dir: StateDirLookupOpt = None,
    timeout: TimeoutOpt = 3.0,
) -> None:
    """Ask every service for its status; exit 1 naming any that is unreachable."""
    endpoints = _endpoints(host, _parse_ports(ports), state_dir)
    restarts = _recorded_restarts(state_dir) if ports is None else {}
    raise typer.Exit(asyncio.run(_status(endpoints, mission, timeout, restarts,
                                                 _credentials(state_dir))))


# --- clock ------------------------------------------------------------------


ClockHostOpt = Annotated[str, typer.Option("--host", help="Where ground listens.")]
ClockPortOpt = Annotated[int | None, typer.Option(
    "--port", min=1, max=65535, help="Ground's gRPC port (default 50051).")]
CLOCK_CALL_TIMEOUT_S = 5.0
EXIT_BAD_ARGUMENT = 2  # what typer exits with for a bad argument; ground refusing one too
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as a shell reports Ctrl-C
_BAD_ARGUMENT_CODES = frozenset({"INVALID_ARGUMENT", "NOT_FOUND"})
_T = TypeVar("_T")


def _clock_endpoints(host: str, port: int | None, state_dir: Path | None) -> dict[str, Endpoint]:
    ports = {"ground": port} if port is not None else None
    return _endpoints(host, ports, state_dir, services=("ground",))


def _exit_on_rpc_error(exc: TwinRpcError) -> NoReturn:
    """Ground refusing an argument exits 2 (the message says what to fix); an
    unreachable ground or a refused action (e.g. the mission finished) exits 1."""
    bad = isinstance(exc, ServiceRejected) and exc.code in _BAD_ARGUMENT_CODES
    err_console.print(f"[bold red]error:[/bold red] {exc}", highlight=False)
    raise typer.Exit(EXIT_BAD_ARGUMENT if bad else EXIT_FAILED)


def _run_clock(endpoints: dict[str, Endpoint], timeout_s: float,
               call: Callable[[ClockClient], Awaitable[_T]],
               creds: grpc.ChannelCredentials | None) -> _T:
    async def _go() -> _T:
        async with TwinChannels(endpoints, timeout_s=timeout_s, credentials=creds) as channels:
            return await call(channels.clock())

    try:
        return asyncio.run(_go())
    except TwinRpcError as exc:
        _exit_on_rpc_error(exc)


def _print_clock(state: clock_pb2.ClockState) -> None:
    """The clock after the action, with the target it now runs toward, if any."""
    console.print(clock_line(state) + until_suffix(state), highlight=False)


def _clock_call(host: str, port: int | None, state_dir: Path | None, timeout_s: float,
                call: Callable[[ClockClient], Awaitable[clock_pb2.ClockState]]) -> None:
    _print_clock(_run_clock(_clock_endpoints(host, port, state_dir), timeout_s, call,
                            _credentials(state_dir)))


@clock_app.command("time")
def clock_time(host: ClockHostOpt = "127.0.0.1", port: ClockPortOpt = None,
               state_dir: StateDirLookupOpt = None, timeout: TimeoutOpt = 5.0) -> None:
    """Show the clock: UTC, mission time, phase, mode, step rate."""
    _clock_call(host, port, state_dir, timeout, lambda c: c.get_time())


@clock_app.command("pause")
def clock_pause(host: ClockHostOpt = "127.0.0.1", port: ClockPortOpt = None,
                state_dir: StateDirLookupOpt = None, timeout: TimeoutOpt = 5.0) -> None:
    """Pause the clock: no further step starts (one in flight completes). Shows 'paused'."""
    _clock_call(host, port, state_dir, timeout, lambda c: c.pause())


@clock_app.command("resume")
def clock_resume(host: ClockHostOpt = "127.0.0.1", port: ClockPortOpt = None,
                 state_dir: StateDirLookupOpt = None, timeout: TimeoutOpt = 5.0) -> None:
    """Resume a paused clock. Shows 'running'."""
    _clock_call(host, port, state_dir, timeout, lambda c: c.resume())


@clock_app.command("warp")
def clock_warp(
    factor: Annotated[str, typer.Argument(
        callback=_check_warp, help="'max' or a real-time factor > 0.")],
    host: ClockHostOpt = "127.0.0.1", port: ClockPortOpt = None,
    state_dir: StateDirLookupOpt = None, timeout: TimeoutOpt = 5.0,
) -> None:
    """Set the warp: 'max' steps as fast as every service acknowledges."""
    warp = None if factor == "max" else float(factor)
    _clock_call(host, port, state_dir, timeout, lambda c: c.set_warp(warp))


@clock_app.command("step")
def clock_step(
    steps: Annotated[int, typer.Argument(min=1, help="How many lock-step steps.")],
    host: ClockHostOpt = "127.0.0.1", port: ClockPortOpt = None,
    state_dir: StateDirLookupOpt = None, timeout: TimeoutOpt = 5.0,
) -> None:
    """Advance exactly N steps, then pause (shows the paused clock after them)."""
    _clock_call(host, port, state_dir, timeout, lambda c: c.step(steps))


def _utc_or_none(target: str) -> str | None:
    """The target as ISO UTC if it reads as a date-time, else None (an event)."""
    if not re.match(r"^\d{4}-\d{2}-\d{2}", target):
        return None
    try:
        instant = datetime.fromisoformat(target.replace("Z", "+00:00"))
    except ValueError:
        raise typer.BadParameter(f"{target!r} looks like a date but is not ISO 8601: write "
                                 "e.g. 2024-06-02T22:23:00Z", param_hint="TARGET") from None
    if instant.tzinfo is None:
        instant = instant.replace(tzinfo=UTC)
    return instant.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _targets_tables(reply: clock_pb2.ListTargetsResponse) -> tuple[Grid, Grid]:
    """Plan items (id, due, issued) and events (name, seen), as ground answers them."""
    item_rows: list[list[str]] = []
    event_rows: list[list[str]] = []
    for t in reply.targets:
        seen = short_utc(t.seen_utc) if t.seen_utc else "-"
        if t.kind == "plan_item":
            due = short_utc(t.due) if t.due[:1].isdigit() else t.due
            item_rows.append([t.name, due, seen])
        else:
            event_rows.append([t.name, seen])
    items = Grid([Column("id"), Column("due (UTC)"), Column("issued (UTC)")], item_rows,
                 title="flight-plan items (plan order)")
    events = Grid([Column("event"), Column("seen (UTC)")], event_rows,
                  title="mission events (key events in mission order, then others)")
    return items, events


def _wait_until(endpoints: dict[str, Endpoint], goal: Target, timeout_s: float | None,
                creds: grpc.ChannelCredentials | None) -> None:
    class _GaveUp(Exception):
        pass

    async def _go() -> clock_pb2.ClockState:
        async with TwinChannels(endpoints, timeout_s=CLOCK_CALL_TIMEOUT_S,
                                credentials=creds) as channels:
            clock = channels.clock()
            with WaitProgress(console, goal, timeout_s) as progress:
                try:
                    return await wait_for(clock, goal, timeout_s, progress)
                except WaitTimedOut:
                    assert timeout_s is not None  # no deadline, no time-out
                    raise _GaveUp(timed_out_message(goal, timeout_s,
                                                    await clock.get_time())) from None

    try:
        state = asyncio.run(_go())
    except KeyboardInterrupt:
        err_console.print(f"stopped waiting for {goal.label}; ground still runs the clock "
                          "toward it (`twin clock pause` stops it)", highlight=False)
        raise typer.Exit(EXIT_INTERRUPTED) from None
    except _GaveUp as exc:
        err_console.print(f"[bold red]error:[/bold red] {exc}", highlight=False)
        raise typer.Exit(EXIT_FAILED) from None
    except TwinRpcError as exc:
        _exit_on_rpc_error(exc)
    console.print(f"reached {goal.label}: {clock_line(state)}", highlight=False)


@clock_app.command("until")
def clock_until(
    target: Annotated[str | None, typer.Argument(
        show_default=False,
        help="A UTC instant (2024-06-02T22:23:00Z), a flight-plan item id (loi, la_sep, ...) "
        "or a mission event (lunar_touchdown, docking, ...); --list names them all.")] = None,
    wait: Annotated[bool, typer.Option(
        "--wait", help="Return only when it is reached, showing progress meanwhile.")] = False,
    list_targets: Annotated[bool, typer.Option(
        "--list", help="List the plan item ids and event names it accepts, with when each "
        "happened; changes nothing.")] = False,
    host: ClockHostOpt = "127.0.0.1", port: ClockPortOpt = None,
    state_dir: StateDirLookupOpt = None,
    timeout: Annotated[float | None, typer.Option(
        "--timeout", min=0.1, show_default=False,
        help="Wall seconds for the call (default 5); with --wait, for the WHOLE wait "
        "(default: no limit): past it, exit 1 and the clock keeps running toward TARGET.")
    ] = None,
) -> None:
    """Run until a UTC instant, a flight-plan item or a mission event, then pause.

    A plan item id (e.g. loi) is reached when ground issues that item, an event
    name (e.g. lunar_touchdown) when a vehicle publishes it. Shows the clock
    running toward TARGET; with --wait, waits (a live line on a terminal, a line
    every few seconds elsewhere) and shows the paused clock there.
    """
    if list_targets and (target is not None or wait):
        raise typer.BadParameter("--list runs nothing: give it without TARGET or --wait",
                                 param_hint="--list")
    if target is None and not list_targets:
        raise typer.BadParameter("give a UTC instant, a flight-plan item id or an event name "
                                 "(`twin clock until --list` names them)", param_hint="TARGET")
    endpoints = _clock_endpoints(host, port, state_dir)
    if target is None:
        creds = _credentials(state_dir)
        reply = _run_clock(endpoints, timeout or CLOCK_CALL_TIMEOUT_S, lambda c: c.list_targets(),
                           creds)
        for grid in _targets_tables(reply):
            show(console, grid)
        return
    utc = _utc_or_none(target)
    goal = Target(utc=utc) if utc is not None else Target(event=target)
    creds = _credentials(state_dir)  # after the arguments: a bad one is named first
    if wait:
        _wait_until(endpoints, goal, timeout, creds)
        return
    _print_clock(_run_clock(endpoints, timeout or CLOCK_CALL_TIMEOUT_S,
                            lambda c: c.run_until(utc=goal.utc, event=goal.event), creds))


def main() -> None:
    app()


if __name__ == "__main__":
    main()
