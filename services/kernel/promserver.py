"""A real Prometheus server for local observing runs and tests.

`twin up --observe` and the observability tests start one: it scrapes the
six services on loopback, evaluates the project's recording and alerting rules
(deploy/prometheus/rules/) and answers PromQL over its HTTP API. The binary is
the Debian package's (`task observe:install`); nothing here uses systemd.

The configuration is written as JSON, which Prometheus reads as YAML, so no
YAML library is needed at run time.

Errors::

    PromServerError
    ├── PromServerNotFound      the binary is missing
    ├── PromServerStartFailed   it exited or did not become ready in time
    └── PromQueryError          the HTTP API refused or failed a query
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from services.kernel.childproc import ChildServer, http_ok
from services.kernel.config import DEFAULT_PORTS, SERVICE_NAMES

__all__ = [
    "JOB_NAME",
    "PromQueryError",
    "PromServer",
    "PromServerError",
    "PromServerNotFound",
    "PromServerStartFailed",
    "ScrapeTarget",
    "default_rule_files",
    "default_targets",
    "find_prometheus",
    "render_config",
]

BINARY_NAME = "prometheus"
JOB_NAME = "twin"
#: Where the Debian package puts the binary when /usr/bin is not on PATH.
_FALLBACK_BINARIES = (Path("/usr/bin/prometheus"), Path("/usr/local/bin/prometheus"))
_REPO_ROOT = Path(__file__).resolve().parents[2]
RULES_DIR = _REPO_ROOT / "deploy" / "prometheus" / "rules"
_POLL_INTERVAL_S = 0.05
_HTTP_TIMEOUT_S = 10.0


class PromServerError(RuntimeError):
    """Base of the Prometheus wrapper's errors."""


class PromServerNotFound(PromServerError):
    def __init__(self, searched: Sequence[str]) -> None:
        self.searched = list(searched)
        super().__init__(
            f"{BINARY_NAME} not found (looked on PATH and in {', '.join(self.searched)}); "
            "install it with `task observe:install` (Debian package prometheus)"
        )


class PromServerStartFailed(PromServerError):
    def __init__(self, reason: str, log_tail: str) -> None:
        self.reason = reason
        self.log_tail = log_tail
        super().__init__(f"prometheus did not start: {reason}\n{log_tail}".rstrip())


class PromQueryError(PromServerError):
    def __init__(self, path: str, params: Mapping[str, str], reason: str) -> None:
        self.path = path
        self.params = dict(params)
        self.reason = reason
        super().__init__(f"prometheus {path} {self.params.get('query', '')!r} failed: {reason}")


@dataclass(frozen=True)
class ScrapeTarget:
    """One /metrics endpoint and the service it belongs to."""

    service: str
    address: str  # host:port

    def __post_init__(self) -> None:
        host, sep, port = self.address.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"scrape target {self.address!r}: write it as host:port")


def default_targets(host: str = "127.0.0.1") -> list[ScrapeTarget]:
    """The six services on their local default metrics ports (9101-9106)."""
    return [ScrapeTarget(name, f"{host}:{DEFAULT_PORTS[name][1]}") for name in SERVICE_NAMES]


def default_rule_files() -> list[Path]:
    """The project's rule files; empty when running outside a source checkout."""
    return sorted(RULES_DIR.glob("*.yml")) if RULES_DIR.is_dir() else []


def render_config(
    targets: Iterable[ScrapeTarget],
    *,
    mission: str,
    rule_files: Iterable[Path | str] = (),
    scrape_interval_s: float = 1.0,
    evaluation_interval_s: float | None = None,
) -> dict[str, Any]:
    """The Prometheus configuration for one local run, as a plain dict.

    `honor_labels` keeps the `service` and `mission` labels the services put
    on their own metrics (otherwise Prometheus would rename them
    `exported_service`); the same labels on the target give them to `up` and
    to the process_* metrics of prometheus-client, which carry none.
    """
    interval = _duration(scrape_interval_s)
    return {
        "global": {
            "scrape_interval": interval,
            "scrape_timeout": interval,
            "evaluation_interval": _duration(evaluation_interval_s or scrape_interval_s),
        },
        "rule_files": [str(path) for path in rule_files],
        "scrape_configs": [
            {
                "job_name": JOB_NAME,
                "honor_labels": True,
                "static_configs": [
                    {"targets": [t.address], "labels": {"service": t.service, "mission": mission}}
                    for t in targets
                ],
            }
        ],
    }


def _duration(seconds: float) -> str:
    """A Prometheus duration; whole milliseconds are its finest unit."""
    return f"{max(1, round(seconds * 1000))}ms"


def find_prometheus() -> Path:
    """The prometheus binary: on PATH first, then the Debian location."""
    on_path = shutil.which(BINARY_NAME)
    if on_path is not None:
        return Path(on_path)
    for candidate in _FALLBACK_BINARIES:
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    raise PromServerNotFound([str(p) for p in _FALLBACK_BINARIES])


def _free_loopback_port(host: str) -> int:
    # Prometheus cannot pick its own port and report it, so we ask the kernel
    # for one; the window before Prometheus binds it is short, and a lost race
    # shows up as a start failure naming the port.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


class PromServer(ChildServer):
    """One prometheus child process; config, TSDB and log under `state_dir`.

    Usable as ``with PromServer(dir, targets, mission="ce6") as prom:``;
    `stop()` is safe to call twice. `url` is valid once started.
    """

    what = "PromServer"

    def __init__(
        self,
        state_dir: Path,
        targets: Sequence[ScrapeTarget],
        *,
        mission: str = "ce6",
        rule_files: Sequence[Path] | None = None,
        scrape_interval_s: float = 1.0,
        host: str = "127.0.0.1",
        port: int = 0,
        binary: Path | None = None,
        start_timeout_s: float = 30.0,
        stop_grace_s: float = 10.0,
    ) -> None:
        super().__init__(state_dir, "prometheus.log", start_timeout_s=start_timeout_s,
                         stop_grace_s=stop_grace_s)
        self.targets = list(targets)
        self.mission = mission
        self.rule_files = default_rule_files() if rule_files is None else list(rule_files)
        self.scrape_interval_s = scrape_interval_s
        self.host = host
        self._want_port = port
        self._binary = binary
        self.config_file = self.state_dir / "prometheus.yml"
        self.data_dir = self.state_dir / "tsdb"
        self.url = ""

    def write_config(self) -> Path:
        """Write the configuration file and return its path."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        config = render_config(
            self.targets,
            mission=self.mission,
            rule_files=[p.resolve() for p in self.rule_files],
            scrape_interval_s=self.scrape_interval_s,
        )
        self.config_file.write_text(json.dumps(config, indent=2) + "\n")
        return self.config_file

    def _already_started(self) -> Exception:
        return PromServerError("this PromServer was already started")

    def _start_failed(self, reason: str, log_tail: str) -> Exception:
        return PromServerStartFailed(f"{reason} at {self.url}", log_tail)

    def _prepare(self) -> None:
        binary = self._binary or find_prometheus()
        if not (binary.is_file() and os.access(binary, os.X_OK)):
            raise PromServerNotFound([str(binary)])
        self._binary = binary
        self.write_config()
        port = self._want_port or _free_loopback_port(self.host)
        self.url = f"http://{self.host}:{port}"

    def _command(self) -> list[str]:
        assert self._binary is not None
        return [
            str(self._binary),
            f"--config.file={self.config_file}",
            f"--storage.tsdb.path={self.data_dir}",
            f"--web.listen-address={self.url.removeprefix('http://')}",
            "--web.enable-lifecycle",  # lets reload() pick up a new target list
            "--storage.tsdb.retention.time=7d",
        ]

    def _ready_once(self) -> bool:
        self.exited_check()
        return http_ok(f"{self.url}/-/ready")

    def reload(self, targets: Sequence[ScrapeTarget] | None = None) -> None:
        """Rewrite the config (optionally with new targets) and reload it."""
        if targets is not None:
            self.targets = list(targets)
        self.write_config()
        self._post("/-/reload")

    def query(self, expr: str, at_s: float | None = None) -> list[dict[str, Any]]:
        """An instant query; `at_s` is a Unix time (default: now)."""
        params = {"query": expr}
        if at_s is not None:
            params["time"] = f"{at_s:.3f}"
        return _as_list(self.api("/api/v1/query", params)["result"])

    def query_range(
        self, expr: str, start_s: float, end_s: float, step_s: float = 1.0
    ) -> list[dict[str, Any]]:
        """A range query over Unix times [start_s, end_s]."""
        params = {
            "query": expr,
            "start": f"{start_s:.3f}",
            "end": f"{end_s:.3f}",
            "step": f"{step_s:g}",
        }
        return _as_list(self.api("/api/v1/query_range", params)["result"])

    def rule_groups(self) -> list[dict[str, Any]]:
        """The loaded rule groups with each rule's health and last error."""
        return _as_list(self.api("/api/v1/rules", {})["groups"])

    def active_targets(self) -> list[dict[str, Any]]:
        return _as_list(self.api("/api/v1/targets", {"state": "active"})["activeTargets"])

    def label_values(self, label: str) -> list[str]:
        """Every value of `label` in the TSDB (`__name__`: every metric name)."""
        return [str(v) for v in self.api(f"/api/v1/label/{label}/values", {})]

    def api(self, path: str, params: Mapping[str, str]) -> Any:
        """GET an /api/v1 endpoint and return its `data`, or raise PromQueryError."""
        if not self.url:
            raise PromServerError("PromServer is not started")
        url = f"{self.url}{path}"
        if params:
            url += "?" + urllib.parse.urlencode(params)
        try:
            with urllib.request.urlopen(url, timeout=_HTTP_TIMEOUT_S) as reply:
                body = json.loads(reply.read())
        except urllib.error.HTTPError as exc:
            # Bad PromQL comes back as 400 with a JSON body naming the problem.
            body = _json_or_none(exc.read())
            reason = body.get("error", str(exc)) if isinstance(body, dict) else str(exc)
            raise PromQueryError(path, params, str(reason)) from exc
        except (urllib.error.URLError, ConnectionError, TimeoutError) as exc:
            raise PromQueryError(path, params, str(exc)) from exc
        if body.get("status") != "success":
            raise PromQueryError(path, params, str(body.get("error", body)))
        return body["data"]

    def _post(self, path: str) -> None:
        request = urllib.request.Request(f"{self.url}{path}", method="POST")
        try:
            with urllib.request.urlopen(request, timeout=_HTTP_TIMEOUT_S):
                pass
        except (urllib.error.URLError, ConnectionError, TimeoutError) as exc:
            raise PromQueryError(path, {}, str(exc)) from exc


def _as_list(value: Any) -> list[dict[str, Any]]:
    assert isinstance(value, list)
    return value


def _json_or_none(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except ValueError:
        return None
