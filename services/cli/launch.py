"""`twin up` and `twin run`: bring up NATS and the six services, follow, tear down.

Order: nats-server (unless a URL is given), the services, Prometheus (with
--observe); teardown runs in reverse through one AsyncExitStack, on every
path out: finished, Ctrl-C, SIGTERM/SIGHUP to the CLI, a service dying for
good (a failure inside it, a bad configuration, or too many restarts), a
start failure. A child restarted by the supervisor gets a line of its own
and a count in run.json; the run goes on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TypeVar

import orjson
from rich.console import Console

from services.cli.ccsds import CcsdsLink, free_udp_port, spawn_gateway, wait_gateway
from services.cli.grpc_client import TwinChannels
from services.cli.key_events import comparison_table
from services.cli.mission_log import MissionLog, MissionLogError, TelemetryRecorder, telemetry_path
from services.cli.output import say, show
from services.cli.progress import (
    EventFeed,
    Snapshot,
    clock_line,
    follow_mission,
    status_table,
    take_snapshot,
)
from services.cli.report import build_report, load_reference, write_report
from services.cli.supervisor import (
    RUN_RECORD,
    Restart,
    RestartPolicy,
    RunConfig,
    ServiceDied,
    Supervisor,
    SupervisorError,
    write_run_record,
)
from services.kernel.config import ServiceConfig
from services.kernel.natsd import NatsServer, NatsServerError
from services.kernel.promserver import PromServer, PromServerError, ScrapeTarget
from services.kernel.security import INSECURE_WARNING, OPERATOR, Security, provision
from services.kernel.yamcsd import YamcsServer, YamcsServerError

__all__ = ["EXIT_FAILED", "EXIT_INTERRUPTED", "EXIT_OK", "LaunchOptions", "launch"]

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_INTERRUPTED = 130  # what shells report for a Ctrl-C'd command
#: Wall seconds between looks at whether the forks on this run's NATS finished.
_FORK_POLL_S = 0.5

T = TypeVar("T")


@dataclass(frozen=True)
class LaunchOptions:
    state_dir: Path
    nats_url: str | None = None
    mission_id: str = "ce6"
    flight_plan: Path | None = None
    warp: str | None = None
    seed: int | None = None
    start_paused: bool = False
    free_ports: bool = False
    observe: bool = False
    health_timeout_s: float = 60.0
    log_level: str = "INFO"
    report_path: Path | None = None
    linger: bool = False  # stay up after the finish until a signal (up --observe)
    live: bool | None = None  # None: a live table only on a terminal
    # Follow the mission on the bus too (`twin up`, `twin run`): telemetry for the
    # plots, links and events in the view, the event log for the end table and report.
    mission_view: bool = False
    #: Restarts of one child within a minute before the run gives up (0: none).
    max_restarts: int = RestartPolicy.max_restarts
    #: Continue the run recorded in the state dir from its last commit.
    resume: bool = False
    #: Plaintext bus and control, no identities (--insecure / TWIN_INSECURE):
    #: for debugging only, loudly said.
    insecure: bool = False
    #: Dispersed vehicle parameters (--parameters FILE; a campaign case's).
    parameters: Mapping[str, float] = field(default_factory=dict)
    #: A what-if fork of this mission (`twin fork`): its services start from the
    #: branch commit in the parent's record (services/ground/fork.py), with the
    #: identities minted by the parent's key store (``security_dir``).
    fork_of: str | None = None
    security_dir: Path | None = None
    #: The fork's record, as the parent's ground answered (for the report).
    fork_spec: Mapping[str, Any] | None = None
    #: The CCSDS gateway (--ccsds-tm/--ccsds-tc): packets to a mission control system.
    ccsds: CcsdsLink | None = None
    #: Yamcs from the bundle as mission control, fed by the gateway (`twin up --yamcs`).
    yamcs: bool = False


class ResumeError(RuntimeError):
    """There is no run to resume, or it does not fit the options given."""


@dataclass(frozen=True)
class Previous:
    """What a run records so it can be resumed (run.json ``resume``)."""

    run_id: str
    log_start_seq: int
    seed: int | None
    flight_plan: Path | None
    parameters: Mapping[str, float] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"run_id": self.run_id, "log_start_seq": self.log_start_seq, "seed": self.seed,
                "flight_plan": str(self.flight_plan) if self.flight_plan else None,
                "parameters": dict(self.parameters)}


def previous_run(opts: LaunchOptions) -> Previous:
    """The run recorded in ``opts.state_dir``, checked against ``opts``."""
    path = opts.state_dir / RUN_RECORD
    try:
        record = orjson.loads(path.read_bytes())
        raw = record["resume"]
    except (FileNotFoundError, orjson.JSONDecodeError, KeyError, TypeError):
        raise ResumeError(f"nothing to resume in {opts.state_dir}: no run recorded in {path} "
                          "(start one with twin run or twin up, or give its --state-dir)") from None
    if record.get("mission_id") != opts.mission_id:
        raise ResumeError(f"{path} records mission {record.get('mission_id')!r}, not "
                          f"{opts.mission_id!r}: give --mission {record.get('mission_id')}")
    prev = Previous(str(raw["run_id"]), int(raw["log_start_seq"]), raw.get("seed"),
                    Path(raw["flight_plan"]) if raw.get("flight_plan") else None,
                    dict(raw.get("parameters") or {}))
    for name, given, recorded in (("--seed", opts.seed, prev.seed),
                                  ("--plan", opts.flight_plan, prev.flight_plan),
                                  ("--parameters", opts.parameters or None,
                                   prev.parameters or None)):
        if given is not None and given != recorded:
            raise ResumeError(f"{name} {given} differs from the run being resumed "
                              f"({recorded}): leave it out to resume that run")
    return prev


class Interrupted(Exception):
    def __init__(self, signum: int) -> None:
        self.signum = signum
        super().__init__(signal.Signals(signum).name)


class _Stopper:
    """Turns SIGINT/SIGTERM/SIGHUP into an event the run races against."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)

    def __init__(self) -> None:
        self.event = asyncio.Event()
        self.signum: int = signal.SIGINT
        self.on_repeat: list[Callable[[], None]] = []

    def _on_signal(self, signum: int) -> None:
        if self.event.is_set():  # a second Ctrl-C: stop waiting politely
            for hurry in self.on_repeat:
                hurry()
            return
        self.signum = signum
        self.event.set()

    @contextlib.contextmanager
    def installed(self) -> Iterator[_Stopper]:
        loop = asyncio.get_running_loop()
        for sig in self.SIGNALS:
            loop.add_signal_handler(sig, self._on_signal, sig)
        try:
            yield self
        finally:
            for sig in self.SIGNALS:
                loop.remove_signal_handler(sig)


class _BusErrorLines(logging.Handler):
    """nats-py's errors on the CLI's own connections, as one line each.

    Without an error callback nats-py logs every failed reconnect attempt with
    its traceback; while nats-server is being restarted that is expected, so
    each distinct error is said once, in a line, until another one comes.
    """

    def __init__(self, console: Console) -> None:
        super().__init__(logging.WARNING)
        self.console = console
        self._last = ""

    def emit(self, record: logging.LogRecord) -> None:
        cause = record.exc_info[1] if record.exc_info else None
        line = f"NATS (the CLI's connection): {type(cause).__name__ if cause else record.msg}"
        if line != self._last:
            self._last = line
            say(self.console, line, style="dim")


@contextlib.contextmanager
def _bus_errors_as_lines(console: Console) -> Iterator[None]:
    logger = logging.getLogger("nats.aio.client")
    handler = _BusErrorLines(console)
    logger.addHandler(handler)
    logger.propagate = False
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.propagate = True


async def _until_stopped(work: Awaitable[T], stopper: _Stopper, sup: Supervisor) -> T:
    """Await `work`, unless a signal comes or a service dies first."""
    main = asyncio.ensure_future(work)
    stop = asyncio.ensure_future(stopper.event.wait())
    death = asyncio.ensure_future(sup.next_death())
    try:
        await asyncio.wait({main, stop, death}, return_when=asyncio.FIRST_COMPLETED)
        if death.done():
            raise ServiceDied(death.result())
        if main.done():
            return main.result()
        raise Interrupted(stopper.signum)
    finally:
        for task in (main, stop, death):
            task.cancel()
        await asyncio.gather(main, stop, death, return_exceptions=True)


def _run_config(opts: LaunchOptions, nats_url: str, prev: Previous | None,
                security: Security) -> RunConfig:
    config = RunConfig(
        security=security,
        state_dir=opts.state_dir,
        nats_url=nats_url,
        mission_id=opts.mission_id,
        free_ports=opts.free_ports,
        seed=opts.seed,
        flight_plan=opts.flight_plan,
        warp=opts.warp,
        start_paused=opts.start_paused,
        log_level=opts.log_level,
        restart=RestartPolicy(max_restarts=opts.max_restarts),
        parameters=opts.parameters,
        extra_env={"TWIN_FORK_OF": opts.fork_of} if opts.fork_of else {},
    )
    return replace(config, run_id=prev.run_id) if prev is not None else config


def _security(opts: LaunchOptions, console: Console) -> tuple[Security, Path | None]:
    """The run's security, and the embedded server's config (None: plaintext).
    Secure: the CA, certificates, NATS keys and creds in the state dir, made
    on first use and reused after."""
    if opts.insecure:
        say(console, f"WARNING: {INSECURE_WARNING}", style="bold red")
        return Security.plaintext(), None
    made = provision(opts.security_dir or opts.state_dir, opts.mission_id, parent=opts.fork_of)
    return made.security(), made.server_config


async def _start_nats(stack: contextlib.AsyncExitStack, opts: LaunchOptions,
                      console: Console, config: Path | None) -> NatsServer | None:
    if opts.nats_url:
        return None
    server = await stack.enter_async_context(NatsServer(opts.state_dir / "nats", config=config))
    how = "plaintext, no auth" if config is None else "mTLS, operator-mode identities"
    console.print(f"nats-server with JetStream at {server.url} ({how}; pid {server.pid})")
    return server


def _start_prometheus(stack: contextlib.AsyncExitStack, opts: LaunchOptions, sup: Supervisor,
                      console: Console) -> dict[str, Any]:
    targets = [
        ScrapeTarget(name, f"127.0.0.1:{child.metrics_port}")
        for name, child in sup.children.items()
    ]
    prom = PromServer(opts.state_dir / "prometheus", targets, mission=opts.mission_id)
    stack.enter_context(prom)  # blocking start, on the loop's thread: see die_with_parent
    console.print(f"Prometheus at {prom.url} (pid {prom.pid})")
    return {"url": prom.url, "pid": prom.pid}


def _mark_stopped(state_dir: Path, codes: dict[str, Any]) -> None:
    path = state_dir / RUN_RECORD
    with contextlib.suppress(FileNotFoundError, orjson.JSONDecodeError):
        record = orjson.loads(path.read_bytes())
        record["stopped"] = True
        record["exit_codes"] = codes
        path.write_bytes(orjson.dumps(record, option=orjson.OPT_INDENT_2))


async def launch(opts: LaunchOptions, console: Console) -> int:
    """Run the twin until the clock finishes or the run is stopped; the exit code."""
    opts.state_dir.mkdir(parents=True, exist_ok=True)
    # The report's wall_s counts from here (before nats-server and the services
    # start) to the final snapshot after the finish: start-up included, teardown
    # not. bench/bench_mission.py's "whole process" figure is the same interval.
    started = time.monotonic()
    with _Stopper().installed() as stopper, _bus_errors_as_lines(console):
        try:
            prev = previous_run(opts) if opts.resume else None
            if prev is not None:
                opts = replace(opts, seed=prev.seed, flight_plan=prev.flight_plan,
                               parameters=prev.parameters)
                console.print(f"resuming run {prev.run_id} of mission {opts.mission_id} "
                              "from its last committed snapshot")
            return await _launch(opts, console, stopper, started, prev)
        except Interrupted as exc:
            console.print(f"[yellow]{exc} received: stopping[/yellow]")
            return EXIT_INTERRUPTED
        except (SupervisorError, NatsServerError, PromServerError, MissionLogError,
                ResumeError, YamcsServerError) as exc:
            console.print(f"[bold red]error:[/bold red] {exc}", highlight=False, soft_wrap=True)
            return EXIT_FAILED
        finally:
            console.print(f"stopped everything after {time.monotonic() - started:.2f} s wall")


class _RunRecord:
    """run.json, written at start and again whenever a pid or a count changes."""

    def __init__(self, state_dir: Path, sup: Supervisor, nats_url: str,
                 nats: NatsServer | None) -> None:
        self.state_dir, self.sup, self.nats_url, self.nats = state_dir, sup, nats_url, nats
        self.extra: dict[str, Any] = {}

    def write(self) -> None:
        nats_pid = self.nats.pid if self.nats is not None else None
        write_run_record(self.state_dir, self.sup, nats_url=self.nats_url, nats_pid=nats_pid,
                         extra=self.extra)


def _announce_restarts(sup: Supervisor, record: _RunRecord, console: Console) -> None:
    def announce(restart: Restart) -> None:
        record.write()  # first: whoever reads the line finds the new pid recorded
        say(console, restart.describe(), style="yellow")

    sup.on_restart.append(announce)


async def _launch(opts: LaunchOptions, console: Console, stopper: _Stopper,
                  started: float, prev: Previous | None) -> int:
    async with contextlib.AsyncExitStack() as stack:
        security, nats_config = _security(opts, console)
        nats = await _start_nats(stack, opts, console, nats_config)
        if nats is not None:  # after the services stop, before NATS does
            stack.push_async_callback(_wait_for_forks, opts.state_dir, stopper, console)
        nats_url = nats.url if nats is not None else str(opts.nats_url)
        watch = await _attach_bus(stack, opts, nats_url,
                                  prev.log_start_seq if prev is not None else None, security)
        # With the gateway, the clock is held until it listens (services/cli/ccsds.py).
        hold = opts.ccsds is not None or opts.yamcs
        sup = Supervisor(_run_config(replace(opts, start_paused=opts.start_paused or hold),
                                     nats_url, prev, security))
        record = _RunRecord(opts.state_dir, sup, nats_url, nats)
        record.extra["insecure"] = security.insecure  # twin status and clock read it
        if opts.security_dir is not None:  # a fork: its certificates are its parent's
            record.extra["security_dir"] = str(opts.security_dir.resolve())
        record.extra["resume"] = Previous(
            sup.config.run_id, watch[0].start_seq if watch is not None else 0, opts.seed,
            opts.flight_plan, opts.parameters).to_json()
        _announce_restarts(sup, record, console)
        stopper.on_repeat.append(sup.hurry)
        if opts.yamcs:
            opts = replace(opts, ccsds=await _start_yamcs(stack, opts, console, record))
        gateway = None
        if opts.ccsds is not None:
            gateway = await spawn_gateway(stack, sup, opts.ccsds, opts.state_dir / "logs")
            record.extra["gateway"] = {"pid": gateway.pid, "grpc_port": gateway.grpc_port,
                                       "metrics_port": gateway.metrics_port}
        stack.push_async_callback(_stop_services, sup, opts.state_dir)
        if nats is not None:
            sup.watch_child("nats-server", nats)
        await sup.start()
        record.write()
        healthy_s = await _until_stopped(sup.wait_healthy(opts.health_timeout_s), stopper, sup)
        console.print(f"all {len(sup.children)} services healthy in {healthy_s:.2f} s")
        if gateway is not None and opts.ccsds is not None:
            await _until_stopped(wait_gateway(sup, gateway, opts.health_timeout_s), stopper,
                                 sup)
            say(console, opts.ccsds.describe())
        if opts.observe:
            record.extra["prometheus"] = _start_prometheus(stack, opts, sup, console)
            record.write()
        channels = await stack.enter_async_context(TwinChannels(
            sup.endpoints, credentials=sup.channel_credentials()))
        if hold and not opts.start_paused:  # the gateway listens: let the clock go
            await _until_stopped(channels.clock().resume(), stopper, sup)
        facts = watch[1] if watch is not None else None
        feed = _event_feed(facts, opts, console)
        final = await _until_stopped(
            follow_mission(channels, console, live=opts.live, facts=facts, feed=feed,
                           restarts=sup.restarts, notes=_family_notes(opts)),
            stopper, sup)
        if watch is not None:
            final = await _until_stopped(take_snapshot(channels), stopper, sup)
        _summarise(final, console, time.monotonic() - started, healthy_s)
        if watch is not None:
            await _until_stopped(
                _mission_summary(watch, final, opts, console, time.monotonic() - started, feed),
                stopper, sup)
        if opts.linger:
            await _linger(stopper, sup, console)
        return EXIT_OK


async def _linger(stopper: _Stopper, sup: Supervisor, console: Console) -> None:
    """Keep everything up after the finish (to look at it) until a signal."""
    console.print("mission finished; everything stays up to be looked at: Ctrl-C to stop")
    with contextlib.suppress(Interrupted):
        await _until_stopped(asyncio.Event().wait(), stopper, sup)


def _family_notes(opts: LaunchOptions) -> Callable[[], list[str]]:
    """Lines for the live view: a fork's parent and branch, or the forks of this
    run that fly on its NATS."""
    spec = opts.fork_spec
    if spec is not None:
        branch = spec["branch"]
        line = (f"fork of {spec['parent']} at {branch['utc']} ({branch['at']}, parent step "
                f"{branch['step']}); change: {describe_change(spec['change'])}")
        return lambda: [line]

    def forks() -> list[str]:
        flying = running_forks(opts.state_dir)
        return [f"forks flying on this NATS: {', '.join(flying)}"] if flying else []

    return forks


def describe_change(change: Mapping[str, Any]) -> str:
    """A fork's change (its record's ``change``) in a few words."""
    return "; ".join(filter(None, [
        f"{len(change['items'])} item(s) at the branch point" if change["items"] else "",
        ", ".join(f"{k} {v:+g} s" for k, v in change["delays_s"].items()),
        f"plan {change['plan']}" if change["plan"] else "",
        "new random numbers" if change["reseed"] else ""])) or "none (it flies as its parent)"


def running_forks(state_dir: Path) -> list[str]:
    """Forks of this run flying on its NATS (`twin fork` writes their run.json
    under <state dir>/forks/<id>/ and marks it stopped at the end)."""
    out = []
    for record_path in sorted(state_dir.glob(f"forks/*/{RUN_RECORD}")):
        with contextlib.suppress(OSError, orjson.JSONDecodeError, KeyError, ValueError):
            record = orjson.loads(record_path.read_bytes())
            if not record.get("stopped") and pid_alive(int(record["cli_pid"])):
                out.append(str(record["mission_id"]))
    return out


def pid_alive(pid: int) -> bool:
    """Is a process of this pid alive (ours or not)?"""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


async def _wait_for_forks(state_dir: Path, stopper: _Stopper, console: Console) -> None:
    """The forks fly on this run's NATS: it stays up until they finish, or a
    signal says stop now (the forks then lose their bus, and say so)."""
    forks = running_forks(state_dir)
    if not forks:
        return
    say(console, f"NATS stays up for the forks still flying ({', '.join(forks)}); "
                 "Ctrl-C stops it now", style="yellow")
    stopper.event.clear()
    while running_forks(state_dir) and not stopper.event.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stopper.event.wait(), _FORK_POLL_S)


async def _start_yamcs(stack: contextlib.AsyncExitStack, opts: LaunchOptions,
                       console: Console, record: _RunRecord) -> CcsdsLink:
    """Yamcs from the bundle (services/kernel/yamcsd.py), fed by the gateway: its TM
    link listens where the gateway sends, its TC link sends where the gateway
    listens. Free ports with --free-ports, else Yamcs' own defaults."""
    if opts.free_ports:
        yamcs = YamcsServer(opts.state_dir / "yamcs", http_port=0, tm_port=0,
                            tc_port=free_udp_port())
    else:
        yamcs = YamcsServer(opts.state_dir / "yamcs")
    tc_port = yamcs.tc_port
    await stack.enter_async_context(yamcs)
    console.print(f"Yamcs (mission control) at {yamcs.web_url} (pid {yamcs.pid}): telemetry "
                  f"on udp/{yamcs.tm_port}, telecommands to udp/{tc_port}")
    record.extra["yamcs"] = {"url": yamcs.web_url, "pid": yamcs.pid, "tm_port": yamcs.tm_port,
                             "tc_port": tc_port}
    return CcsdsLink(("127.0.0.1", yamcs.tm_port), ("127.0.0.1", tc_port))


async def _stop_services(sup: Supervisor, state_dir: Path) -> None:
    codes = await sup.stop()
    _mark_stopped(state_dir, codes)


def _event_feed(facts: TelemetryRecorder | None, opts: LaunchOptions,
                console: Console) -> EventFeed | None:
    """Off a terminal each event gets its own line; on one the live view shows them."""
    live = console.is_terminal if opts.live is None else opts.live
    return EventFeed(facts) if facts is not None and not live else None


def _summarise(final: Snapshot, console: Console, wall_s: float, healthy_s: float) -> None:
    show(console, status_table(final.statuses, title="final status"))
    say(console, f"finished: {clock_line(final.clock)}")
    say(console, f"wall time {wall_s:.2f} s (services healthy after {healthy_s:.2f} s)")


async def _attach_bus(stack: contextlib.AsyncExitStack, opts: LaunchOptions, nats_url: str,
                      log_start_seq: int | None, security: Security
                      ) -> tuple[MissionLog, TelemetryRecorder] | None:
    """Listen before the services start: the clock starts once they are all there.
    The CLI is the operator identity on NATS (it reads the mission log)."""
    if not (opts.mission_view or opts.report_path is not None):
        return None
    options = security.nats_options(opts.mission_id, OPERATOR)
    log = await stack.enter_async_context(MissionLog(nats_url, opts.mission_id, log_start_seq,
                                                     options=options))
    recorder = await stack.enter_async_context(TelemetryRecorder(nats_url, opts.mission_id,
                                                                 options=options))
    return log, recorder


async def _mission_summary(watch: tuple[MissionLog, TelemetryRecorder], final: Snapshot,
                           opts: LaunchOptions, console: Console, wall_s: float,
                           feed: EventFeed | None = None) -> None:
    """The end table of key events and, with --report, the report and telemetry."""
    log, recorder = watch
    events = await log.read()
    await recorder.flush()
    if feed is not None:  # events of the last steps, heard after the clock finished
        feed.write_new(console)
    plan = opts.flight_plan.stem if opts.flight_plan is not None else "nominal"
    if opts.fork_spec is not None:
        plan = str(opts.fork_spec["plan"].get("name", plan))
    report = build_report(
        mission_id=opts.mission_id,
        seed=opts.seed if opts.seed is not None else ServiceConfig.seed,
        plan=plan, events=events, statuses=final.statuses, clock=final.clock, wall_s=wall_s,
        reference=load_reference(),
    )
    if opts.fork_spec is not None:
        spec = opts.fork_spec
        report["fork"] = {"parent": spec["parent"], "parent_run": spec["parent_run"],
                          "branch": spec["branch"], "commit_step": spec["commit"]["step"],
                          "change": spec["change"], "seed": spec["seed"]}
    show(console, comparison_table(report["comparison"]))
    say(console, f"{len(events)} mission events, {len(recorder.records)} telemetry frames kept "
                 f"of {recorder.frames_seen}")
    if opts.report_path is not None:
        path = write_report(opts.report_path, report)
        tm_path = recorder.write(telemetry_path(opts.report_path))
        say(console, f"report written to {path} (telemetry: {tm_path.name}); "
                     f"plots: twin report {path}")
