"""Offline checks of the CCSDS gateway on Kubernetes: deploy/k8s/components/gateway,
used by deploy/k8s/overlays/ccsds (the dev overlay's twin plus the gateway).

The overlay is rendered with the real ``kubectl kustomize`` and validated with
``kubernetes-validate --strict``. From the rendered objects: the gateway's
configuration (``GatewayConfig.from_env``) from its pod's environment as the
kubelet gives it, the Service's UDP port, the Secrets it mounts against what
the real ``twin k8s-secrets`` writes, and the network policies (the gateway's
paths open, the others closed, the twin's own paths kept). Then real
processes on the rendered files: a nats-server on the overlay's NATS config
and the command's Secrets, the gateway's NATS user subscribing and refused a
publish; and the real gateway (``python -m services.gateway``) with its pod's
environment and mounted volumes, answering its exec probe, sending an HK
packet for a frame ground hears, and stopping on SIGTERM. No cluster: paths
and ports are moved to the test's directory and loopback, nothing else.
"""

from __future__ import annotations

import asyncio
import base64
import os
import re
import signal
import socket
import subprocess
import sys
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nats
import psutil
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from services.cli.k8s_secrets import GATEWAY_CLIENT_TLS, gateway_out_dir
from services.gateway import dictionary, packets
from services.gateway.service import GatewayConfig
from services.kernel.config import SERVICE_NAMES
from services.kernel.envelope import encode_fields
from services.kernel.natsauth import GATEWAY, permissions
from services.kernel.natsd import NatsServer
from services.kernel.security import Security
from services.kernel.subjects import Subjects
from tests.integration import test_k8s_manifests as manifests
from tests.integration.test_k8s_fork import connects, pod_of
from tests.integration.test_k8s_manifests import (
    K8S,
    KUBE_VALIDATE,
    ROOT,
    Obj,
    Pod,
    config_map_env,
    container_port,
    dockerfile_stages,
    generated,
    matches,
    named,
    objects,
    of_kind,
    pod_spec,
    quantity,
    twin_deployments,
)
from tests.integration.test_k8s_security import (
    LogReader,
    PodNatsServer,
    kustomize,
    materialise,
    mounted_env,
    nats_config_dir,
    secret_sources,
    volume_data,
)

OVERLAY = "ccsds"
#: The overlay it adds the gateway to.
TWIN_OVERLAY = "dev"
NAMESPACE = "twin-ccsds"
COMPONENT = K8S / "components" / "gateway"
#: The label docs/deploy.md asks mission control pods to carry.
MISSION_CONTROL = {"change6.twin/mission-control": "true"}
DNS = Pod("kube-system", {"k8s-app": "kube-dns"})
#: Wall seconds for a deadline (not a measure): something that should come at once.
WAIT_S = 10.0
#: The gateway's start: importing grpc, nats and the dictionary on a busy 2-core machine.
START_S = 60.0


# --- the rendered gateway -------------------------------------------------------------


def gateway() -> Obj:
    return named(OVERLAY, "Deployment", "gateway")


def gateway_container() -> Obj:
    (container,) = pod_spec(gateway())["containers"]
    return dict(container)


def gateway_env() -> dict[str, str]:
    """The gateway's environment as the kubelet builds it: its ConfigMaps in
    order, then the container's own variables."""
    return config_map_env(OVERLAY, gateway_container())


def base_name(obj: Obj) -> str:
    """An object's name without kustomize's hash suffix (generated ConfigMaps)."""
    name = str(obj["metadata"]["name"])
    return re.sub(r"-[a-z0-9]{10}$", "", name) if obj["kind"] == "ConfigMap" else name


def gateway_objects() -> list[Obj]:
    """What the component adds to the dev overlay's twin (the namespace aside)."""
    twin = {(o["kind"], base_name(o)) for o in objects(TWIN_OVERLAY)}
    return [o for o in objects(OVERLAY)
            if o["kind"] != "Namespace" and (o["kind"], base_name(o)) not in twin]


def mission_id() -> str:
    return str(generated(OVERLAY, "ConfigMap", "twin-config")["data"]["TWIN_MISSION_ID"])


def test_the_overlay_renders_into_its_namespace_and_passes_strict_validation(
        tmp_path: Path) -> None:
    objs = list(objects(OVERLAY))
    (namespace,) = [o["metadata"]["name"] for o in objs if o["kind"] == "Namespace"]
    assert namespace == NAMESPACE
    for obj in objs:
        if obj["kind"] != "Namespace":
            assert obj["metadata"].get("namespace") == NAMESPACE, obj["metadata"]["name"]
    manifest = tmp_path / "ccsds.yaml"
    manifest.write_text(yaml.safe_dump_all(objs))
    out = subprocess.run([str(KUBE_VALIDATE), "--strict", "--quiet", str(manifest)],
                         capture_output=True, text=True, timeout=300, check=False)
    report = out.stdout + out.stderr
    assert out.returncode == 0, report
    assert not [line for line in report.splitlines() if line.startswith("WARN")], report
    # `task k8s:render` / `k8s:validate` take it with the others.
    taskfile = yaml.safe_load((ROOT / "Taskfile.k8s.yml").read_text())
    assert OVERLAY in taskfile["vars"]["OVERLAYS"].split()


def test_the_overlay_is_the_dev_twin_plus_the_gateway() -> None:
    added = {(o["kind"], base_name(o)) for o in gateway_objects()}
    assert added == {("ServiceAccount", "gateway"), ("Service", "gateway"),
                     ("Deployment", "gateway"), ("ConfigMap", "twin-gateway-config"),
                     ("ConfigMap", "twin-gateway-probe"),
                     *(("NetworkPolicy", n) for n in (
                         "gateway", "gateway-nats", "gateway-ground",
                         "gateway-mission-control", "gateway-prometheus"))}
    assert len(objects(OVERLAY)) == len(objects(TWIN_OVERLAY)) + len(added)
    # The six services as in dev (the mission label test's convention holds).
    assert set(twin_deployments(OVERLAY)) == set(SERVICE_NAMES)
    for name, deployment in twin_deployments(OVERLAY).items():
        assert (pod_spec(deployment)["containers"]
                == pod_spec(twin_deployments(TWIN_OVERLAY)[name])["containers"]), name


def test_every_object_of_the_gateway_carries_the_mission_label() -> None:
    mission = mission_id()
    for obj in gateway_objects():
        labels = obj["metadata"]["labels"]
        assert labels["change6.twin/mission"] == mission, obj["metadata"]
        assert labels["app.kubernetes.io/part-of"] == "change6-twin"
        # What docs/deploy.md deletes the gateway by.
        assert labels["app.kubernetes.io/component"] == "ccsds-gateway", obj["metadata"]
    component = [o for o in objects(OVERLAY) if o["metadata"].get("labels", {}).get(
        "app.kubernetes.io/component") == "ccsds-gateway"]
    assert len(component) == len(gateway_objects())
    template = gateway()["spec"]["template"]["metadata"]["labels"]
    assert template["change6.twin/mission"] == mission
    assert "MISSION-ID" not in yaml.safe_dump_all(list(objects(OVERLAY)))


# --- the gateway's pod ----------------------------------------------------------------


def test_the_gateway_runs_services_gateway_with_its_configuration() -> None:
    container = gateway_container()
    # The image's entrypoint is `python -m`: the argument is the module.
    runtime = dockerfile_stages()[-1]
    assert 'ENTRYPOINT ["python", "-m"]' in runtime
    assert container["args"] == ["services.gateway"] and "command" not in container
    assert (ROOT / "services" / "gateway" / "__main__.py").is_file()
    assert container["image"].startswith("change6-twin:")
    assert container["image"] == pod_spec(twin_deployments(OVERLAY)["ground"])[
        "containers"][0]["image"]
    env = gateway_env()
    config = GatewayConfig.from_env(env)
    assert config.mission_id == mission_id()
    assert config.tm == ("yamcs", 10015)
    assert config.tc == ("0.0.0.0", 10025)
    assert config.ground == ("ground", 50051)
    assert not config.security.insecure
    assert config.grpc_port == container_port(container, "grpc")
    assert config.metrics_port == container_port(container, "metrics")
    (tc,) = [p for p in container["ports"] if p["name"] == "tc"]
    assert (tc["containerPort"], tc["protocol"]) == (config.tc[1], "UDP")
    # TWIN_GROUND_GRPC names ground's Service, on the port its pod serves gRPC.
    ground = pod_of(twin_deployments(OVERLAY)["ground"])
    service = named(OVERLAY, "Service", config.ground[0])
    assert matches(service["spec"]["selector"], ground.labels)
    (svc_port,) = [p for p in service["spec"]["ports"] if p["port"] == config.ground[1]]
    assert ground.ports[svc_port["targetPort"]] == 50051
    # The NATS URL names the overlay's NATS Service.
    for url in config.nats_urls:
        host = url.split("//")[1].split(":")[0]
        nats_service = named(OVERLAY, "Service", host)
        assert matches(nats_service["spec"]["selector"],
                       pod_of(named(OVERLAY, "StatefulSet", "nats")).labels)
    # One gateway: a second would send every packet twice.
    assert gateway()["spec"]["replicas"] == 1
    assert gateway()["spec"]["strategy"]["type"] == "Recreate"


def test_the_service_takes_telecommands_on_udp_and_exposes_the_metrics() -> None:
    service = named(OVERLAY, "Service", "gateway")
    container = gateway_container()
    ports = {p["name"]: p for p in service["spec"]["ports"]}
    assert set(ports) == {"tc", "metrics"}  # not gRPC: its health is for its probe
    assert (ports["tc"]["port"], ports["tc"]["protocol"]) == (10025, "UDP")
    assert container_port(container, ports["tc"]["targetPort"]) == GatewayConfig.from_env(
        gateway_env()).tc[1]  # type: ignore[index]
    assert ports["metrics"]["protocol"] == "TCP"
    assert container_port(container, ports["metrics"]["targetPort"]) == 9090
    chosen = [w["metadata"]["name"] for w in of_kind(OVERLAY, "Deployment")
              + of_kind(OVERLAY, "StatefulSet")
              if matches(service["spec"]["selector"], w["spec"]["template"]["metadata"]["labels"])]
    assert chosen == ["gateway"]
    annotations = gateway()["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert int(annotations["prometheus.io/port"]) == container_port(container, "metrics")


def test_the_pod_is_hardened_and_bounded_as_the_services() -> None:
    spec = pod_spec(gateway())
    container = gateway_container()
    security = spec["securityContext"]
    assert security["runAsNonRoot"] and security["runAsUser"] > 0
    assert security["fsGroup"] == security["runAsGroup"]
    assert spec["automountServiceAccountToken"] is False
    own = container["securityContext"]
    assert own["readOnlyRootFilesystem"] and not own["allowPrivilegeEscalation"]
    assert own["capabilities"]["drop"] == ["ALL"]
    limits, requests = container["resources"]["limits"], container["resources"]["requests"]
    for key in ("cpu", "memory"):
        assert 0 < quantity(requests[key]) <= quantity(limits[key]), key
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert container[probe]["exec"]["command"] == [
            "python", "/etc/twin/probe/health_probe.py"], probe
        assert container[probe]["timeoutSeconds"] >= 5, probe
    startup = container["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= START_S
    # The probe's script is the component's file, mounted read-only.
    (mount,) = [m for m in container["volumeMounts"] if m["mountPath"] == "/etc/twin/probe"]
    assert mount["readOnly"] is True
    (volume,) = [v for v in spec["volumes"] if v["name"] == mount["name"]]
    probe_map = named(OVERLAY, "ConfigMap", volume["configMap"]["name"])
    assert probe_map["data"]["health_probe.py"] == (COMPONENT / "health_probe.py").read_text()


# --- the Secrets ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def secrets_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """What the real `twin k8s-secrets` writes for the overlay's namespace."""
    out = tmp_path_factory.mktemp("secrets") / NAMESPACE
    done = subprocess.run(
        [sys.executable, "-m", "services.cli.app", "k8s-secrets", "--mission", mission_id(),
         "--namespace", NAMESPACE, "--out", str(out)],
        capture_output=True, text=True, timeout=120, cwd=ROOT, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    return out


@pytest.fixture(scope="module")
def secret_objs(secrets_dir: Path) -> dict[str, list[Obj]]:
    return {"twin": kustomize(secrets_dir), "gateway": kustomize(gateway_out_dir(secrets_dir))}


def test_every_secret_the_gateway_mounts_is_written_by_twin_k8s_secrets(
        secret_objs: dict[str, list[Obj]], secrets_dir: Path) -> None:
    written = {kind: {s["metadata"]["name"]: s for s in objs}
               for kind, objs in secret_objs.items()}
    mounted = set()
    for volume, source in secret_sources(pod_spec(gateway())):
        name = source["name"]
        mounted.add(name)
        assert name in written["gateway"], f"volume {volume}: no Secret {name} in <dir>/gateway"
        for item in source["items"]:
            assert item["key"] in written["gateway"][name]["data"], (name, item["key"])
    # Exactly those: nothing in <dir>/gateway that the pod does not mount.
    assert mounted == set(written["gateway"]) == {
        "gateway-grpc-tls", "gateway-nats-tls", "gateway-nats-creds", GATEWAY_CLIENT_TLS}
    for secret in written["gateway"].values():
        assert secret["metadata"]["namespace"] == NAMESPACE
        assert secret["metadata"]["labels"]["change6.twin/mission"] == mission_id()
    # Every other pod of the overlay finds its Secrets in the twin's directory.
    for workload in of_kind(OVERLAY, "Deployment") + of_kind(OVERLAY, "StatefulSet"):
        if workload["metadata"]["name"] == "gateway":
            continue
        for _volume, source in secret_sources(pod_spec(workload)):
            assert source["name"] in written["twin"], (workload["metadata"]["name"],
                                                       source["name"])
    # The CA key and the NATS seeds stay in the directory.
    ca_key = (secrets_dir / "pki" / "ca.key").read_bytes()
    seeds = [p.read_bytes().strip() for p in (secrets_dir / "nats-keys").glob("*.nk")]
    for secret in written["gateway"].values():
        for key, value in secret["data"].items():
            raw = base64.b64decode(value)
            assert ca_key not in raw and not any(s in raw for s in seeds), (
                secret["metadata"]["name"], key)


@dataclass
class PodFiles:
    """The gateway pod's environment with its volumes written out (as the
    kubelet would, modes included) and every variable naming a path inside
    one moved there; ``mounts``: mount path -> where it was written."""

    env: dict[str, str]
    mounts: dict[str, Path]

    def local(self, path: str) -> str:
        """``path`` of the pod, where it was written out."""
        for mount, local in self.mounts.items():
            if path.startswith(mount + "/"):
                return str(local / path.removeprefix(mount + "/"))
        return path


def gateway_volumes(secret_objs: dict[str, list[Obj]], tmp: Path) -> PodFiles:
    spec = pod_spec(gateway())
    data = volume_data(list(objects(OVERLAY)), secret_objs["twin"] + secret_objs["gateway"])
    volumes = {v["name"]: v for v in spec["volumes"]}
    pod = PodFiles(gateway_env(), {})
    for mount in gateway_container()["volumeMounts"]:
        volume = volumes[mount["name"]]
        local = tmp / mount["name"]
        if "projected" in volume:
            materialise(volume, data, local)
        elif "configMap" in volume:
            local.mkdir(parents=True, exist_ok=True)
            for key, value in data["configMap", volume["configMap"]["name"]].items():
                (local / key).write_bytes(value)
                (local / key).chmod(volume["configMap"].get("defaultMode", 0o644))
        else:
            continue
        pod.mounts[mount["mountPath"]] = local
    pod.env = {k: pod.local(v) for k, v in pod.env.items()}
    return pod


def gateway_security(env: Mapping[str, str]) -> Security:
    return Security(pki_dir=Path(env["TWIN_PKI_DIR"]), nats_creds=Path(env["TWIN_NATS_CREDS"]))


def test_the_mounted_files_are_what_the_gateway_checks_for(
        secret_objs: dict[str, list[Obj]], tmp_path: Path) -> None:
    env = gateway_volumes(secret_objs, tmp_path).env
    config = GatewayConfig.from_env(env)
    # What `python -m services.gateway` checks before it starts: every file.
    config.security.check(config.mission_id, GATEWAY, grpc_server=True)
    assert config.security.grpc_channel_credentials(GATEWAY) is not None  # client-gateway
    pki = Path(env["TWIN_PKI_DIR"])
    for name in ("ca.crt", "server-gateway.key", "client-gateway.key", "nats-client-gateway.key"):
        mode = (pki / name).stat().st_mode & 0o777
        assert mode & 0o007 == 0 and mode & 0o040, (name, oct(mode))


# --- a real nats-server on the rendered config --------------------------------------


@pytest.fixture
def ccsds_nats(tmp_path: Path, secret_objs: dict[str, list[Obj]]) -> Iterator[NatsServer]:
    """nats-server on the overlay's rendered config (the dev overlay's) and Secrets."""
    conf = nats_config_dir(list(objects(OVERLAY)), secret_objs["twin"], tmp_path)
    with PodNatsServer(tmp_path / "nats", conf, {"POD_NAME": "nats-0"}) as server:
        yield server


def service_options(secret_objs: dict[str, list[Obj]], name: str, tmp: Path) -> dict[str, Any]:
    env = mounted_env(OVERLAY, name, secret_objs["twin"], tmp / name)
    return Security(pki_dir=Path(env["TWIN_PKI_DIR"]), nats_creds=Path(
        env["TWIN_NATS_CREDS"])).nats_options(env["TWIN_MISSION_ID"], name)


async def test_the_gateways_nats_user_hears_what_ground_hears_and_publishes_nothing(
        ccsds_nats: NatsServer, secret_objs: dict[str, list[Obj]], tmp_path: Path) -> None:
    mission = mission_id()
    s = Subjects(mission)
    options = gateway_security(gateway_volumes(secret_objs, tmp_path / "gw").env).nats_options(
        mission, GATEWAY)
    errors: asyncio.Queue[str] = asyncio.Queue()

    async def on_error(exc: Exception) -> None:
        errors.put_nowait(str(exc))

    gw = await nats.connect(ccsds_nats.url, allow_reconnect=False, error_cb=on_error, **options)
    ground = await nats.connect(ccsds_nats.url, allow_reconnect=False,
                                **service_options(secret_objs, "ground", tmp_path))
    orbiter = await nats.connect(ccsds_nats.url, allow_reconnect=False,
                                 **service_options(secret_objs, "orbiter", tmp_path))
    try:
        heard: asyncio.Queue[str] = asyncio.Queue()

        async def on_msg(msg: Any) -> None:
            heard.put_nowait(msg.subject)

        for subject in (s.all_of("dl"), s.all_of("evt")):
            await gw.subscribe(subject, cb=on_msg)
        await gw.flush()
        await orbiter.publish(s.downlink("orbiter"), b"[]")
        await orbiter.publish(s.event("orbiter"), b"[]")
        for other in (ground, orbiter):
            await other.flush()
        got = {await asyncio.wait_for(heard.get(), WAIT_S) for _ in range(2)}
        assert got == {s.downlink("orbiter"), s.event("orbiter")}
        assert errors.empty(), errors.get_nowait()
        # A vehicle's commands are ground's and relay's to send: refused, and
        # the vehicle hears nothing.
        command = s.command("orbiter")
        commands: asyncio.Queue[bytes] = asyncio.Queue()

        async def on_command(msg: Any) -> None:
            commands.put_nowait(msg.data)

        await orbiter.subscribe(command, cb=on_command)
        await orbiter.flush()
        await gw.publish(command, b"[]")
        await gw.flush()
        try:
            text = await asyncio.wait_for(errors.get(), WAIT_S)
        except TimeoutError:
            delivered = [commands.get_nowait() for _ in range(commands.qsize())]
            pytest.fail(f"the gateway's NATS user published on {command} unrefused (the "
                        f"orbiter received {delivered}): its user JWT's permissions are "
                        f"{permissions(mission, GATEWAY).to_claims()['pub']}, and nats-server "
                        "reads an empty allow list as no restriction")
        assert f'permissions violation for publish to "{command}"' in text.lower(), text
        assert commands.empty()
        # And not its to read either.
        await gw.subscribe(command, cb=on_msg)
        text = await asyncio.wait_for(errors.get(), WAIT_S)
        assert "permissions violation for subscription" in text.lower(), text
        assert command in text, text
    finally:
        for nc in (gw, ground, orbiter):
            if not nc.is_closed:
                await nc.close()


# --- the real gateway in its pod's environment --------------------------------------


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def probe(pod: PodFiles) -> subprocess.CompletedProcess[str]:
    """The container's probe command, run for real: the kubelet runs it in the
    container, with the container's environment."""
    exec_probe = gateway_container()["livenessProbe"]
    command = [pod.local(a) for a in exec_probe["exec"]["command"]]
    assert command[0] == "python"
    return subprocess.run([sys.executable, *command[1:]], capture_output=True, text=True,
                          timeout=exec_probe["timeoutSeconds"] * 4, check=False, env=pod.env)


def orbiter_frame(frame_seq: int, t_s: float) -> dict[str, Any]:
    """An orbiter frame as the recorder and radio stamp it."""
    return {"phase": "earth_moon_transfer", "frame": "ECI", "body": "earth",
            "r_m": [7.0e6, 0.0, 0.0], "v_m_s": [0.0, 10.9e3, 0.0], "alt_m": 6.2e5,
            "speed_m_s": 10.9e3, "mass_kg": 8200.0, "propellant_kg": 5400.0,
            "sample_mass_g": 0.0, "values": {k: 1.0 for k in dictionary.hk_values("orbiter")},
            "origin": "orbiter", "frame_seq": frame_seq, "t_s": t_s, "path": "direct",
            "station": "kashgar", "sent_at_s": t_s, "deliver_at_s": t_s + 0.02,
            "playback": False}


async def publish_a_frame_and_its_arrival(url: str, secret_objs: dict[str, list[Obj]],
                                          tmp: Path, frame: dict[str, Any], t_s: float) -> None:
    """As the twin would: the orbiter sends ``frame`` on dl.orbiter, then, at
    ``t_s`` past its arrival, an event: ground's clock has passed the frame's
    arrival, so ground has heard it (services/gateway/ground_view.py)."""
    mission = mission_id()
    s = Subjects(mission)
    ground = await nats.connect(url, allow_reconnect=False,
                                **service_options(secret_objs, "ground", tmp))
    orbiter = await nats.connect(url, allow_reconnect=False,
                                 **service_options(secret_objs, "orbiter", tmp))
    try:
        await orbiter.publish(s.downlink("orbiter"), encode_fields(
            mission, "orbiter", 1, float(frame["t_s"]), 10, "downlink", frame))
        await orbiter.flush()
        await orbiter.publish(s.event("orbiter"), encode_fields(
            mission, "orbiter", 2, t_s, 11, "event", {"name": "burn_start"}))
        await orbiter.flush()
    finally:
        await orbiter.close()
        await ground.close()


@pytest.mark.slow
def test_the_gateway_runs_in_its_pod_environment(
        ccsds_nats: NatsServer, secret_objs: dict[str, list[Obj]], tmp_path: Path) -> None:
    """The real gateway with the pod's environment and mounted volumes on the
    rendered NATS: its exec probe says SERVING, a frame ground hears comes out
    as an HK packet on the TM address, /metrics answers on the annotated path,
    its memory is within the limit, and SIGTERM stops it within its grace
    period, after which the probe says it is down."""
    pod = gateway_volumes(secret_objs, tmp_path / "pod")
    tm = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    tm.bind(("127.0.0.1", 0))
    tm.settimeout(WAIT_S)
    grpc_port, metrics_port = free_port(), free_port()
    # As the image sets them, on loopback and free ports; TM to the test's socket.
    pod.env |= {"HOME": str(tmp_path), "PYTHONPATH": str(ROOT),
                "TWIN_GRPC_HOST": "127.0.0.1", "TWIN_GRPC_PORT": str(grpc_port),
                "TWIN_METRICS_PORT": str(metrics_port), "TWIN_NATS_URL": ccsds_nats.url,
                "TWIN_CCSDS_TM": f"127.0.0.1:{tm.getsockname()[1]}",
                "TWIN_CCSDS_TC": f"127.0.0.1:{free_port(socket.SOCK_DGRAM)}",
                "TWIN_GROUND_GRPC": f"127.0.0.1:{free_port()}"}
    before = probe(pod)
    assert before.returncode == 1 and "UNAVAILABLE" in before.stderr, before.stderr
    proc = subprocess.Popen([sys.executable, "-m", *gateway_container()["args"]],
                            env=pod.env, cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        startup = gateway_container()["startupProbe"]
        ready = LogReader(proc).wait_for("gateway ready",
                                         startup["periodSeconds"] * startup["failureThreshold"])
        assert ready["grpc_port"] == grpc_port
        answer = probe(pod)
        assert answer.returncode == 0, answer.stderr
        frame = orbiter_frame(42, 3600.0)
        asyncio.run(publish_a_frame_and_its_arrival(ccsds_nats.url, secret_objs, tmp_path,
                                                    frame, 3660.0))
        got: list[bytes] = []
        while not any(p[12] == 1 for p in got):
            got.append(tm.recv(65536))
        (hk,) = [p for p in got if p[12] == 1]
        assert hk == packets.hk_packet(frame, seq=0)  # the first of APID 101
        path = gateway()["spec"]["template"]["metadata"]["annotations"]["prometheus.io/path"]
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}{path}",
                                    timeout=WAIT_S) as reply:
            text = reply.read().decode()
        sent = {tuple(sorted(sample.labels.items())): sample.value
                for family in text_string_to_metric_families(text)
                for sample in family.samples if sample.name == "twin_gateway_packets_total"}
        assert sent[(("kind", "hk"), ("mission", mission_id()), ("service", GATEWAY))] == 1.0
        limit = quantity(gateway_container()["resources"]["limits"]["memory"])
        assert psutil.Process(proc.pid).memory_info().rss < 0.75 * limit
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(pod_spec(gateway())["terminationGracePeriodSeconds"]) == 0
        after = probe(pod)
        assert after.returncode == 1, after.stderr
    finally:
        proc.kill()
        proc.wait()
        tm.close()


# --- network policies -----------------------------------------------------------------


def test_network_policies_open_the_gateways_paths_and_no_others() -> None:
    objs = list(objects(OVERLAY))
    ns = NAMESPACE
    gw = pod_of(gateway())
    services = {n: pod_of(d) for n, d in twin_deployments(OVERLAY).items()}
    nats_pod = pod_of(named(OVERLAY, "StatefulSet", "nats"))
    prometheus = pod_of(named(OVERLAY, "Deployment", "prometheus"))
    elsewhere_prometheus = Pod("monitoring", {"app.kubernetes.io/name": "prometheus"})
    control = Pod(ns, {"app.kubernetes.io/name": "yamcs", **MISSION_CONTROL})
    control_elsewhere = Pod("default", MISSION_CONTROL)
    operator = Pod(ns, {"change6.twin/operator": "true"})
    stranger = Pod(ns, {"app.kubernetes.io/name": "something-else"})
    # A fork's ground in the same namespace: another mission.
    fork_ground = Pod(ns, {**services["ground"].labels, "app.kubernetes.io/name": "ground",
                           "change6.twin/mission": "ce6-whatif"})
    tm_port = GatewayConfig.from_env(gateway_env()).tm[1]
    tc_port = container_port(gateway_container(), "tc")
    # Open: each of the gateway's paths.
    assert connects(objs, gw, nats_pod, 4222), "the gateway cannot reach NATS"
    assert connects(objs, gw, services["ground"], 50051), "the gateway cannot reach ground"
    assert connects(objs, gw, control, tm_port, "UDP"), "telemetry cannot reach mission control"
    assert connects(objs, control, gw, tc_port, "UDP"), "mission control cannot send TCs"
    assert connects(objs, gw, DNS, 53, "UDP"), "the gateway cannot resolve names"
    assert connects(objs, prometheus, gw, 9090), "the dev Prometheus cannot scrape it"
    assert connects(objs, elsewhere_prometheus, gw, 9090)
    # Closed: telecommands from anyone but mission control, the health port to all.
    for someone in (stranger, operator, control_elsewhere, nats_pod, prometheus,
                    *services.values()):
        assert not connects(objs, someone, gw, tc_port, "UDP"), someone.labels
    for someone in (stranger, operator, control, prometheus, nats_pod, *services.values()):
        assert not connects(objs, someone, gw, 50051), someone.labels
    assert not connects(objs, control, gw, tc_port, "TCP")
    # The gateway reaches its mission's ground only, and nothing else's gRPC.
    assert not connects(objs, gw, fork_ground, 50051)
    for name, pod in services.items():
        if name != "ground":
            assert not connects(objs, gw, pod, 50051), name
    assert not connects(objs, gw, services["ground"], 50060)  # ground's plaintext health
    assert not connects(objs, gw, stranger, tm_port, "UDP")
    assert not connects(objs, gw, control, tm_port, "TCP")
    assert not connects(objs, gw, control_elsewhere, tm_port, "UDP")
    # Mission control gets no further than the gateway.
    assert not connects(objs, control, services["ground"], 50051)
    assert not connects(objs, control, nats_pod, 4222)
    # What the gateway opened into ground and NATS is the gateway's alone.
    assert not connects(objs, stranger, services["ground"], 50051)
    assert not connects(objs, control, services["ground"], 50051)
    assert not connects(objs, stranger, nats_pod, 4222)


def test_the_twins_own_paths_are_those_of_the_dev_overlay() -> None:
    manifests.test_network_policies_open_only_the_twins_paths(OVERLAY)


def test_the_tm_port_in_the_policies_follows_the_overlays_address(tmp_path: Path) -> None:
    """The overlay sets TWIN_CCSDS_TM in one place; the UDP paths follow it."""
    where = tmp_path / "other"
    where.mkdir()
    source = K8S / "overlays" / OVERLAY
    spec = yaml.safe_load((source / "kustomization.yaml").read_text())
    up = Path(os.path.relpath(K8S, where))
    spec["resources"] = [str(up / "overlays" / "dev")]
    spec["components"] = [str(up / "components" / "gateway")]
    (where / "gateway.env").write_text("TWIN_CCSDS_TM=mcs.example:12345\n")
    (where / "kustomization.yaml").write_text(yaml.safe_dump(spec))
    objs = kustomize(where)
    gw = next(o for o in objs if o["kind"] == "Deployment" and o["metadata"]["name"] == "gateway")
    gw_pod = pod_of(gw)
    control = Pod(NAMESPACE, MISSION_CONTROL)
    assert connects(objs, gw_pod, control, 12345, "UDP")
    assert not connects(objs, gw_pod, control, 10015, "UDP")
    policy = next(o for o in objs if o["kind"] == "NetworkPolicy"
                  and o["metadata"]["name"] == "gateway")
    assert policy["spec"]["egress"][2]["ports"][0]["port"] == 12345  # an integer, not a name


def test_the_docs_name_the_mission_control_label_and_the_gateway_directory() -> None:
    docs = (ROOT / "docs" / "deploy.md").read_text()
    section = docs[docs.index("## The CCSDS gateway on a cluster"):]
    for needle in ("change6.twin/mission-control", "secrets/twin-ccsds/gateway",
                   "overlays/ccsds", "TWIN_CCSDS_TM"):
        assert needle in section, needle
