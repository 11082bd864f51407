"""Service configuration: a frozen dataclass built once from the environment.

Nothing deeper in the code reads ``os.environ``. A bad value raises
:class:`ConfigError`, which names the variable and how to fix it.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from services.kernel.errors import ConfigError

SERVICE_NAMES: tuple[str, ...] = ("ground", "orbiter", "lander", "ascender", "reentry", "relay")
VEHICLES: tuple[str, ...] = ("orbiter", "lander", "ascender", "reentry", "relay")

#: Local defaults ``{service: (grpc_port, metrics_port)}``; pods use 50051/9090.
DEFAULT_PORTS: dict[str, tuple[int, int]] = {
    name: (50051 + i, 9101 + i) for i, name in enumerate(SERVICE_NAMES)
}

#: A mission id: it goes into subjects, stream names and labels. Matched whole
#: (``fullmatch``: ``match`` with ``$`` would let a trailing newline through).
MISSION_ID_RE = re.compile(r"[a-z0-9][a-z0-9-]{0,31}")
#: Secure by default: without TWIN_INSECURE a service needs its certificates.
PKI_DIR_MISSING = "not set (the bus and control are secure by default)"
PKI_DIR_FIX = ("point it at the directory of ca.crt and the service's certificates (twin run "
               "writes <state dir>/pki), or set TWIN_INSECURE=true for plaintext (debugging "
               "only)")
_LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


@dataclass(frozen=True)
class ServiceConfig:
    service: str
    mission_id: str = "ce6"
    nats_urls: tuple[str, ...] = ("nats://127.0.0.1:4222",)
    grpc_host: str = "127.0.0.1"
    grpc_port: int = 50051
    metrics_port: int = 9101
    #: A second, plaintext gRPC port serving only grpc.health.v1.Health, for
    #: probes that cannot present a client certificate (the kubelet's); -1 = off.
    health_port: int = -1
    log_level: str = "INFO"
    log_format: str = "json"
    seed: int = 6
    flight_plan: Path | None = None
    warp: float = 0.0  # 0 = as fast as possible
    start_paused: bool = False
    ack_timeout_s: float = 5.0
    expect: tuple[str, ...] = field(default=SERVICE_NAMES[1:])
    js_replicas: int = 1
    tm_interval_s: float = 0.0  # least mission time between truth-telemetry frames
    tm_batch: int = 32  # most truth-telemetry frames per tm message
    tm_delay_s: float = 0.05  # most wall seconds a frame waits for others to share its message
    # Coordinated snapshots (services/kernel/snapstore.py): a commit at least
    # every this many steps (0 = no snapshots, no recovery) or wall seconds.
    # The nominal mission makes ~5,200 steps in ~12 wall s; a commit costs one
    # snapshot per service (~10 ms for the largest, the lander and ground, near
    # the end), so every 1,000 steps or 2 s keeps the cost near 1 % and a
    # rollback re-runs at most ~2 s of mission.
    snapshot_every_steps: int = 1000
    snapshot_every_s: float = 2.0
    #: Commits (and each service's snapshots) kept in the stream: two serve a
    #: rollback, the rest are the history a what-if fork branches from
    #: (services/kernel/snapstore.py, DEFAULT_KEEP).
    snapshot_keep: int = 64
    #: Names this run of the mission: a restarted ground resumes from a commit
    #: of the same run only (the CLI gives each ``twin run`` its own; "" = any).
    run_id: str = ""
    #: Plaintext bus and control (TWIN_INSECURE): off unless asked for; else the
    #: certificates in ``pki_dir`` and the NATS user in ``nats_creds``
    #: (services/kernel/security.py: ``security_of(config)``).
    insecure: bool = False
    pki_dir: Path | None = None
    nats_creds: Path | None = None
    #: Dispersed vehicle parameters by dotted path (``lander.engine.thrust_scale``:
    #: services/kernel/parameters.py); each vehicle takes its own, the rest of
    #: its parameters stay nominal. Empty: the nominal vehicles.
    parameters: Mapping[str, float] = field(default_factory=dict)
    #: This mission is a what-if fork of that one (services/ground/fork.py):
    #: its ground starts from the branch commit the parent's fork record names.
    fork_of: str = ""

    def __post_init__(self) -> None:
        if self.service not in SERVICE_NAMES:
            raise ConfigError("TWIN_SERVICE", self.service, "unknown service",
                              f"use one of {', '.join(SERVICE_NAMES)}")
        if not MISSION_ID_RE.fullmatch(self.mission_id):
            raise ConfigError("TWIN_MISSION_ID", self.mission_id, "not a valid mission id",
                              "use 1-32 lower-case letters, digits or '-', starting alphanumeric")
        for url in self.nats_urls:
            if not re.match(r"^(nats|tls|ws|wss)://[^\s]+$", url):
                raise ConfigError("TWIN_NATS_URL", url, "not a NATS URL",
                                  "write it as nats://host:port (comma separated for several)")
        if not 0 <= self.grpc_port <= 65535:
            raise ConfigError("TWIN_GRPC_PORT", str(self.grpc_port), "out of range",
                              "use 1-65535, or 0 for a free port")
        if not -1 <= self.metrics_port <= 65535:
            raise ConfigError("TWIN_METRICS_PORT", str(self.metrics_port), "out of range",
                              "use 1-65535, 0 for a free port, or -1 to turn metrics off")
        if not -1 <= self.health_port <= 65535:
            raise ConfigError("TWIN_HEALTH_PORT", str(self.health_port), "out of range",
                              "use 1-65535, 0 for a free port, or -1 to turn it off")
        if self.health_port > 0 and self.health_port in (self.grpc_port, self.metrics_port):
            raise ConfigError("TWIN_HEALTH_PORT", str(self.health_port),
                              "the same port as gRPC or metrics",
                              "give the plaintext health port a port of its own")
        if self.log_level not in _LOG_LEVELS:
            raise ConfigError("TWIN_LOG_LEVEL", self.log_level, "unknown level",
                              f"use one of {', '.join(_LOG_LEVELS)}")
        if self.log_format not in ("json", "text"):
            raise ConfigError("TWIN_LOG_FORMAT", self.log_format, "unknown format",
                              "use json or text")
        if not (math.isfinite(self.warp) and self.warp >= 0):
            raise ConfigError("TWIN_WARP", str(self.warp), "not a warp factor",
                              "use 'max' or a real-time factor > 0")
        if not (math.isfinite(self.ack_timeout_s) and self.ack_timeout_s > 0):
            raise ConfigError("TWIN_ACK_TIMEOUT_S", str(self.ack_timeout_s), "must be > 0",
                              "give wall seconds, e.g. 5")
        if not (math.isfinite(self.tm_interval_s) and self.tm_interval_s >= 0):
            raise ConfigError("TWIN_TM_INTERVAL_S", str(self.tm_interval_s), "must be >= 0",
                              "give mission seconds between telemetry frames, 0 = every step")
        if self.tm_batch < 1:
            raise ConfigError("TWIN_TM_BATCH", str(self.tm_batch), "must be >= 1",
                              "give the most telemetry frames per message, 1 = one message "
                              "per frame")
        if not (math.isfinite(self.tm_delay_s) and self.tm_delay_s > 0):
            raise ConfigError("TWIN_TM_DELAY_S", str(self.tm_delay_s), "must be > 0",
                              "give wall seconds a telemetry frame may wait, e.g. 0.05")
        if self.snapshot_every_steps < 0:
            raise ConfigError("TWIN_SNAPSHOT_EVERY_STEPS", str(self.snapshot_every_steps),
                              "must be >= 0", "give steps between commits, 0 = no snapshots")
        if not (math.isfinite(self.snapshot_every_s) and self.snapshot_every_s > 0):
            raise ConfigError("TWIN_SNAPSHOT_EVERY_S", str(self.snapshot_every_s), "must be > 0",
                              "give wall seconds between commits, e.g. 2")
        if self.snapshot_keep < 3:
            raise ConfigError("TWIN_SNAPSHOT_KEEP", str(self.snapshot_keep), "must be >= 3",
                              "give the commits to keep, at least 3 (a rollback needs two); "
                              "more let a fork branch further back")
        if self.js_replicas not in (1, 3, 5):
            raise ConfigError("TWIN_JS_REPLICAS", str(self.js_replicas), "unsupported",
                              "use 1, or 3/5 on a NATS cluster of at least that many servers")
        for name in self.expect:
            if name not in VEHICLES:
                raise ConfigError("TWIN_EXPECT", ",".join(self.expect), f"unknown service {name!r}",
                                  f"list services from {', '.join(VEHICLES)}")
        if not self.insecure and self.pki_dir is None:
            raise ConfigError("TWIN_PKI_DIR", "", PKI_DIR_MISSING, PKI_DIR_FIX)
        if self.fork_of and (not MISSION_ID_RE.fullmatch(self.fork_of)
                             or self.fork_of == self.mission_id):
            raise ConfigError("TWIN_FORK_OF", self.fork_of, "not a parent mission id",
                              "give the id of the mission this one forks from (not its own), "
                              "or leave it unset")
        for path in self.parameters:
            vehicle = path.partition(".")[0]
            if vehicle not in VEHICLES or "." not in path:
                raise ConfigError("TWIN_PARAMETERS", path, "not a vehicle parameter path",
                                  f"write <vehicle>.<name> with a vehicle from "
                                  f"{', '.join(VEHICLES)} (twin parameters lists them)")

    @classmethod
    def from_env(cls, service: str, env: Mapping[str, str]) -> ServiceConfig:
        """Build the config of ``service`` from an environment mapping."""
        service = env.get("TWIN_SERVICE", service)
        grpc_default, metrics_default = DEFAULT_PORTS.get(service, (50051, 9101))
        plan = env.get("TWIN_FLIGHT_PLAN", "").strip()
        if plan and not Path(plan).is_file():
            raise ConfigError("TWIN_FLIGHT_PLAN", plan, "no such file",
                              "point it at a flight-plan JSON file, or unset it for the "
                              "nominal plan")
        expect_raw = env.get("TWIN_EXPECT", "").strip()
        return cls(
            service=service,
            mission_id=env.get("TWIN_MISSION_ID", "ce6"),
            nats_urls=tuple(u.strip() for u in
                            env.get("TWIN_NATS_URL", "nats://127.0.0.1:4222").split(",")),
            grpc_host=env.get("TWIN_GRPC_HOST", "127.0.0.1"),
            grpc_port=env_int(env, "TWIN_GRPC_PORT", grpc_default),
            metrics_port=env_int(env, "TWIN_METRICS_PORT", metrics_default),
            health_port=env_int(env, "TWIN_HEALTH_PORT", -1),
            log_level=env.get("TWIN_LOG_LEVEL", "INFO").upper(),
            log_format=env.get("TWIN_LOG_FORMAT", "json").lower(),
            seed=env_int(env, "TWIN_SEED", 6),
            flight_plan=Path(plan) if plan else None,
            warp=_warp(env.get("TWIN_WARP", "max")),
            start_paused=env_bool(env, "TWIN_START_PAUSED", False),
            ack_timeout_s=env_float(env, "TWIN_ACK_TIMEOUT_S", 5.0),
            expect=tuple(s.strip() for s in expect_raw.split(",") if s.strip())
            if expect_raw else VEHICLES,
            js_replicas=env_int(env, "TWIN_JS_REPLICAS", 1),
            tm_interval_s=env_float(env, "TWIN_TM_INTERVAL_S", 0.0),
            tm_batch=env_int(env, "TWIN_TM_BATCH", 32),
            tm_delay_s=env_float(env, "TWIN_TM_DELAY_S", 0.05),
            snapshot_every_steps=env_int(env, "TWIN_SNAPSHOT_EVERY_STEPS", 1000),
            snapshot_every_s=env_float(env, "TWIN_SNAPSHOT_EVERY_S", 2.0),
            snapshot_keep=env_int(env, "TWIN_SNAPSHOT_KEEP", 64),
            run_id=env.get("TWIN_RUN_ID", "").strip(),
            insecure=env_bool(env, "TWIN_INSECURE", False),
            pki_dir=env_path(env, "TWIN_PKI_DIR"), nats_creds=env_path(env, "TWIN_NATS_CREDS"),
            parameters=_parameters(env),
            fork_of=env.get("TWIN_FORK_OF", "").strip(),
        )


def host_port(text: str) -> tuple[str, int]:
    """``HOST:PORT`` (a UDP or gRPC address); ValueError saying what to write."""
    host, sep, port = text.strip().rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{text!r} is not HOST:PORT: write it as host:port, e.g. "
                         "127.0.0.1:10015")
    return host, int(port)


def env_path(env: Mapping[str, str], name: str) -> Path | None:
    raw = env.get(name, "").strip()
    return Path(raw) if raw else None


def env_int(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise ConfigError(name, raw, "not an integer", "give a whole number") from None


def env_float(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        return float(raw)
    except ValueError:
        raise ConfigError(name, raw, "not a number", "give a decimal number") from None


def env_bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    value = raw.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ConfigError(name, raw, "not a boolean", "use true or false")


def _parameters(env: Mapping[str, str]) -> dict[str, float]:
    """``TWIN_PARAMETERS``: a JSON object of parameter path -> number."""
    raw = env.get("TWIN_PARAMETERS", "").strip()
    if not raw:
        return {}
    fix = 'give a JSON object of numbers, e.g. {"lander.engine.thrust_scale": 0.98}'
    try:
        value = json.loads(raw)
    except ValueError:
        raise ConfigError("TWIN_PARAMETERS", raw, "not JSON", fix) from None
    if not isinstance(value, dict) or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) for v in value.values()):
        raise ConfigError("TWIN_PARAMETERS", raw, "not an object of numbers", fix)
    return {str(k): float(v) for k, v in value.items()}


def _warp(raw: str) -> float:
    if raw.strip().lower() in ("max", "afap", "0"):
        return 0.0
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError("TWIN_WARP", raw, "not a warp factor",
                          "use 'max' or a real-time factor > 0") from None
    if not (math.isfinite(value) and value > 0):
        raise ConfigError("TWIN_WARP", raw, "must be > 0", "use 'max' or a factor > 0")
    return value
