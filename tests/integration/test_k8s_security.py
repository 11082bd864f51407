"""The secure default on Kubernetes (issue 16): the manifests, the Secrets
`twin k8s-secrets` writes, the cert-manager and insecure components, and the
plaintext health port the probes use.

The overlays are rendered offline with the real ``kubectl kustomize`` (as in
tests/integration/test_k8s_manifests.py); the Secrets come from running the
real command; the volumes a pod would see are written out from the rendered
ConfigMaps and Secrets, and a real nats-server and real services run on them,
with only paths and ports moved to the test's directory and loopback.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import queue
import re
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import grpc
import nats
import orjson
import pytest
import yaml
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from services.kernel.config import SERVICE_NAMES, ServiceConfig
from services.kernel.errors import ConfigError
from services.kernel.natsd import NatsServer
from services.kernel.pki import Pki
from services.kernel.security import Security, provision, security_of
from services.kernel.twin_pb import clock_pb2, clock_pb2_grpc, control_pb2, control_pb2_grpc
from services.local.inproc import LocalTwin
from tests.integration.test_k8s_manifests import (
    BIN,
    CRD_KINDS,
    K8S,
    KUBE_VALIDATE,
    KUBECTL,
    OVERLAYS,
    ROOT,
    Obj,
    Pod,
    config_map_env,
    connects,
    container_port,
    generated,
    materialise_mounted_file,
    named,
    nats_conf,
    objects,
    pod_spec,
    twin_deployments,
    twin_pod,
)
from tests.integration.twin_helpers import create_mission_streams, plan

#: The overlays' namespaces (their namespace.yaml).
NAMESPACE = {"dev": "twin-dev", "prod": "twin"}
#: CRDs of the components, without a schema in kubernetes-validate.
COMPONENT_CRDS = CRD_KINDS | {"Certificate", "Issuer"}
#: Wall seconds for a deadline (not a measure): something that should come at once.
WAIT_S = 10.0
ROLE_URI = "urn:change6-twin:role:"  # the SAN URI scheme README "gRPC API" documents

Data = Mapping[str, bytes]


# --- rendering ------------------------------------------------------------------


def kustomize(directory: Path) -> list[Obj]:
    out = subprocess.run([str(KUBECTL), "kustomize", str(directory)], capture_output=True,
                         text=True, timeout=120, check=False)
    assert out.returncode == 0, f"kubectl kustomize {directory} failed:\n{out.stderr}"
    return [doc for doc in yaml.safe_load_all(out.stdout) if doc]


def compose(where: Path, overlay: str, component: str) -> list[Obj]:
    """An overlay with a component added, as a user's kustomization adds it."""
    where.mkdir(parents=True, exist_ok=True)
    up = Path(os.path.relpath(K8S, where))  # kustomize takes no absolute paths
    (where / "kustomization.yaml").write_text(yaml.safe_dump({
        "apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization",
        "namespace": NAMESPACE[overlay],
        "resources": [str(up / "overlays" / overlay)],
        "components": [str(up / "components" / component)]}))
    return kustomize(where)


def only(objs: list[Obj], kind: str, prefix: str) -> Obj:
    """The one object of ``kind`` named ``prefix`` (plus kustomize's hash suffix)."""
    pattern = re.compile(rf"^{re.escape(prefix)}(-[a-z0-9]{{10}})?$")
    (found,) = [o for o in objs if o["kind"] == kind and pattern.match(o["metadata"]["name"])]
    return found


def secret_sources(spec: Obj) -> Iterator[tuple[str, Obj]]:
    """(volume name, secret source) of every Secret a pod mounts."""
    for volume in spec.get("volumes", []):
        if "secret" in volume:
            yield volume["name"], {"name": volume["secret"]["secretName"],
                                   "items": volume["secret"].get("items", [])}
        for source in volume.get("projected", {}).get("sources", []):
            if "secret" in source:
                yield volume["name"], source["secret"]


def pod_specs(objs: list[Obj]) -> dict[str, Obj]:
    return {o["metadata"]["name"]: o["spec"]["template"]["spec"] for o in objs
            if o["kind"] in ("Deployment", "StatefulSet")}


# --- the secrets command -----------------------------------------------------------


def secrets_command(out: Path, mission: str, namespace: str, *extra: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "services.cli.app", "k8s-secrets", "--mission", mission,
         "--namespace", namespace, "--out", str(out), *extra],
        capture_output=True, text=True, timeout=120, cwd=ROOT, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"kubectl apply -k {out}" in done.stdout


def mission_of(overlay: str) -> str:
    return str(generated(overlay, "ConfigMap", "twin-config")["data"]["TWIN_MISSION_ID"])


@pytest.fixture(scope="module")
def secrets_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """What `twin k8s-secrets` writes for each overlay's namespace and mission."""
    dirs = {}
    for overlay in OVERLAYS:
        dirs[overlay] = tmp_path_factory.mktemp(f"secrets-{overlay}") / "out"
        secrets_command(dirs[overlay], mission_of(overlay), NAMESPACE[overlay])
    return dirs


def volume_data(overlay_objs: list[Obj], secret_objs: list[Obj]) -> dict[tuple[str, str], Data]:
    """What a projected source can name: ("configMap" | "secret", name) -> key -> bytes."""
    out: dict[tuple[str, str], Data] = {}
    for obj in overlay_objs:
        if obj["kind"] == "ConfigMap":
            out["configMap", obj["metadata"]["name"]] = {
                k: v.encode() for k, v in obj.get("data", {}).items()}
    for obj in secret_objs:
        assert obj["kind"] == "Secret", obj["kind"]
        out["secret", obj["metadata"]["name"]] = {
            k: base64.b64decode(v) for k, v in obj.get("data", {}).items()}
    return out


def materialise(volume: Obj, data: Mapping[tuple[str, str], Data], dest: Path) -> None:
    """Write a projected volume's files as the kubelet would, modes included."""
    mode = volume["projected"].get("defaultMode", 0o644)
    for source in volume["projected"]["sources"]:
        ((kind, ref),) = source.items()
        assert (kind, ref["name"]) in data, f"no {kind} {ref['name']} to mount"
        values = data[kind, ref["name"]]
        for item in ref.get("items") or [{"key": k, "path": k} for k in values]:
            assert item["key"] in values, f"{kind} {ref['name']} has no key {item['key']}"
            path = dest / item["path"]
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(values[item["key"]])
            path.chmod(item.get("mode", mode))


def mounted_env(overlay: str, name: str, secret_objs: list[Obj], tmp: Path) -> dict[str, str]:
    """The service pod's environment with its projected volumes written under
    ``tmp`` and every variable naming a path inside them moved there."""
    spec = pod_spec(twin_deployments(overlay)[name])
    (container,) = spec["containers"]
    env = config_map_env(overlay, container)
    data = volume_data(list(objects(overlay)), secret_objs)
    volumes = {v["name"]: v for v in spec["volumes"]}
    for mount in container["volumeMounts"]:
        volume = volumes[mount["name"]]
        if "projected" not in volume:
            continue
        local = tmp / mount["name"]
        materialise(volume, data, local)
        for key, value in env.items():
            if value.startswith(mount["mountPath"] + "/"):
                env[key] = str(local / value.removeprefix(mount["mountPath"] + "/"))
    return env


def nats_config_dir(overlay_objs: list[Obj], secret_objs: list[Obj], tmp: Path) -> Path:
    """The NATS pod's config volume written under ``tmp``, its absolute paths
    (the volume's mount, the JetStream store) moved there; nats.conf's path."""
    (nats_set,) = [o for o in overlay_objs if o["kind"] == "StatefulSet"]
    spec = nats_set["spec"]["template"]["spec"]
    (container,) = spec["containers"]
    (mount,) = [m for m in container["volumeMounts"] if m["name"] == "config"]
    (volume,) = [v for v in spec["volumes"] if v["name"] == "config"]
    local = tmp / "etc-nats"
    materialise(volume, volume_data(overlay_objs, secret_objs), local)
    conf = local / "nats.conf"
    text = conf.read_text().replace(mount["mountPath"] + "/", f"{local}/")
    text = re.sub(r"store_dir:\s*\S+", f"store_dir: {tmp / 'js'}", text)
    conf.chmod(0o640)
    conf.write_text(text)
    return conf


# --- the base is secure ---------------------------------------------------------------


def test_the_base_asks_for_no_plaintext() -> None:
    env = (K8S / "base" / "twin.env").read_text()
    assert not re.search(r"^\s*TWIN_INSECURE\s*=\s*(true|1|yes|on)\s*$", env, flags=re.M | re.I)


@pytest.mark.parametrize("overlay", OVERLAYS)
@pytest.mark.parametrize("name", SERVICE_NAMES)
def test_every_service_mounts_its_identity_read_only(overlay: str, name: str,
                                                     tmp_path: Path,
                                                     secrets_dirs: dict[str, Path]) -> None:
    spec = pod_spec(twin_deployments(overlay)[name])
    (container,) = spec["containers"]
    env = config_map_env(overlay, container)
    assert env.get("TWIN_INSECURE", "false").lower() in ("false", "0", "no", "off")
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    for variable in ("TWIN_PKI_DIR", "TWIN_NATS_CREDS"):
        inside = [m for p, m in mounts.items() if env[variable].startswith(p + "/")]
        assert len(inside) == 1 and inside[0].get("readOnly") is True, variable
    volumes = {v["name"]: v for v in spec["volumes"]}
    for mount in mounts.values():
        projected = volumes[mount["name"]].get("projected")
        if projected is not None:
            # no bit for others; the pod's group (fsGroup) reads: a non-root uid
            assert projected["defaultMode"] & 0o007 == 0 and projected["defaultMode"] & 0o040
    security = spec["securityContext"]
    assert security["runAsUser"] > 0 and security["fsGroup"] == security["runAsGroup"]
    # The files the service looks for, where it looks, from the command's Secrets.
    local = mounted_env(overlay, name, kustomize(secrets_dirs[overlay]), tmp_path)
    config = ServiceConfig.from_env(name, {**local, "TWIN_FLIGHT_PLAN": ""})
    assert not config.insecure
    security_of(config).check(config.mission_id, name, grpc_server=True)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_secrets_command_writes_every_key_the_pods_mount(
        overlay: str, secrets_dirs: dict[str, Path]) -> None:
    secrets = {s["metadata"]["name"]: s for s in kustomize(secrets_dirs[overlay])}
    referenced = set()
    for pod, spec in pod_specs(list(objects(overlay))).items():
        for volume, source in secret_sources(spec):
            name = source["name"]
            referenced.add(name)
            assert name in secrets, f"{pod} volume {volume}: no Secret {name}"
            for item in source["items"]:
                assert item["key"] in secrets[name]["data"], f"{name} has no {item['key']}"
    assert referenced == set(secrets), "the command writes Secrets no pod mounts"
    for secret in secrets.values():
        assert secret["metadata"]["namespace"] == NAMESPACE[overlay]
        if {"tls.crt", "tls.key"} <= set(secret["data"]):
            assert secret["type"] == "kubernetes.io/tls"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_ca_key_and_nats_seeds_stay_out_of_the_cluster(
        overlay: str, secrets_dirs: dict[str, Path]) -> None:
    out = secrets_dirs[overlay]
    ca_key = (out / "pki" / "ca.key").read_bytes()
    seeds = [p.read_bytes().strip() for p in (out / "nats-keys").glob("*.nk")]
    assert len(seeds) == 5
    for secret in kustomize(out):
        for key, value in secret["data"].items():
            raw = base64.b64decode(value)
            assert ca_key not in raw, f"{secret['metadata']['name']}/{key} holds the CA key"
            assert not any(seed in raw for seed in seeds), (
                f"{secret['metadata']['name']}/{key} holds an operator or account seed")
    assert "/deploy/k8s/secrets/" in (ROOT / ".gitignore").read_text().splitlines()


# --- probes: the plaintext health port ------------------------------------------------------


@pytest.mark.parametrize("overlay", OVERLAYS)
@pytest.mark.parametrize("name", SERVICE_NAMES)
def test_probes_ask_the_health_port_which_no_pod_reaches(overlay: str, name: str) -> None:
    (container,) = pod_spec(twin_deployments(overlay)[name])["containers"]
    env = config_map_env(overlay, container)
    health = container_port(container, "health")
    assert int(env["TWIN_HEALTH_PORT"]) == health != container_port(container, "grpc")
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert container[probe]["grpc"]["port"] == health, probe
    service_ports = named(overlay, "Service", name)["spec"]["ports"]
    assert all(p["targetPort"] not in ("health", health) for p in service_ports)
    svc = twin_pod(overlay, name)
    ns = svc.namespace
    nats_labels = named(overlay, "StatefulSet", "nats")["spec"]["template"]["metadata"]["labels"]
    others = [Pod(ns, {"change6.twin/operator": "true"}),
              Pod("monitoring", {"app.kubernetes.io/name": "prometheus"}),
              Pod(ns, nats_labels), Pod(ns, {}), Pod("default", {}),
              *(twin_pod(overlay, o) for o in SERVICE_NAMES)]
    for peer in others:
        assert not connects(overlay, peer, svc, health), f"{peer.labels} reaches {health}"


async def test_the_health_port_answers_health_in_plaintext_and_nothing_else(
        tmp_path: Path, mission_id: str) -> None:
    made = provision(tmp_path, mission_id)
    with NatsServer(tmp_path / "nats", config=made.server_config) as server:
        async with LocalTwin(server.url, mission_id, plan(hours=1.0), start_paused=True,
                             vehicles=("relay",), security=made.security(),
                             health_port=0) as twin:
            for rt in twin.all.values():
                assert rt.health_port > 0 and rt.health_port != rt.grpc_port
                async with grpc.aio.insecure_channel(f"127.0.0.1:{rt.health_port}") as ch:
                    health = health_pb2_grpc.HealthStub(ch)
                    for service in ("", "twin.v1.VehicleControl"):
                        reply = await health.Check(health_pb2.HealthCheckRequest(
                            service=service), timeout=WAIT_S)
                        assert reply.status == health_pb2.HealthCheckResponse.SERVING
                    calls = [control_pb2_grpc.VehicleControlStub(ch).GetStatus(
                                 control_pb2.GetStatusRequest(), timeout=WAIT_S),
                             clock_pb2_grpc.MissionClockStub(ch).Pause(
                                 clock_pb2.PauseRequest(), timeout=WAIT_S)]
                    for call in calls:
                        with pytest.raises(grpc.aio.AioRpcError) as refused:
                            await call
                        assert refused.value.code() == grpc.StatusCode.UNIMPLEMENTED
                    reflect = reflection_pb2_grpc.ServerReflectionStub(ch).ServerReflectionInfo(
                        iter([reflection_pb2.ServerReflectionRequest(list_services="")]),
                        timeout=WAIT_S)
                    with pytest.raises(grpc.aio.AioRpcError) as hidden:
                        async for _ in reflect:
                            pass
                    assert hidden.value.code() == grpc.StatusCode.UNIMPLEMENTED
                # the control port itself still wants TLS
                async with grpc.aio.insecure_channel(f"127.0.0.1:{rt.grpc_port}") as ch:
                    with pytest.raises(grpc.aio.AioRpcError) as plain:
                        await health_pb2_grpc.HealthStub(ch).Check(
                            health_pb2.HealthCheckRequest(), timeout=WAIT_S)
                    assert plain.value.code() == grpc.StatusCode.UNAVAILABLE
            ports = [rt.health_port for rt in twin.all.values()]
        for port in ports:  # stopped with the service
            with pytest.raises(OSError):
                socket.create_connection(("127.0.0.1", port), timeout=WAIT_S).close()


def test_the_health_port_is_off_unless_asked_for_and_has_a_port_of_its_own() -> None:
    base = {"TWIN_INSECURE": "true"}
    assert ServiceConfig.from_env("orbiter", base).health_port == -1
    assert ServiceConfig.from_env("orbiter", {**base, "TWIN_HEALTH_PORT": "0"}).health_port == 0
    for bad in ("-2", "65536", "50051", "9090"):
        with pytest.raises(ConfigError) as refused:
            ServiceConfig.from_env("orbiter", {**base, "TWIN_HEALTH_PORT": bad,
                                               "TWIN_GRPC_PORT": "50051",
                                               "TWIN_METRICS_PORT": "9090"})
        assert refused.value.variable == "TWIN_HEALTH_PORT", bad


# --- NATS: operator mode, mTLS, TLS routes --------------------------------------------------


def tls_block(conf: str, inside: str | None = None) -> str:
    """The body of the ``tls`` block at the top level, or inside block ``inside``."""
    if inside is not None:
        match = re.search(rf"^{inside}\s*{{(.*?)^}}", conf, flags=re.M | re.S)
        assert match, f"no {inside} block"
        conf = match.group(1)
    match = re.search(r"^\s*tls\s*{(.*?)}", conf, flags=re.M | re.S)
    assert match, f"no tls block{' in ' + inside if inside else ''}"
    return match.group(1)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_nats_is_in_operator_mode_with_verified_client_certificates(
        overlay: str, secrets_dirs: dict[str, Path]) -> None:
    conf = nats_conf(overlay)
    assert re.search(r"^include\s+auth\.conf\s*$", conf, flags=re.M)
    tls = tls_block(conf)
    assert re.search(r"^\s*verify\s*:\s*true\s*$", tls, flags=re.M)
    auth = (secrets_dirs[overlay] / "nats" / "auth.conf").read_text()
    for key in ("operator", "system_account", "resolver", "resolver_preload"):
        assert re.search(rf"^{key}\s*:", auth, flags=re.M), key
    assert "tls" not in auth and "jetstream" not in auth  # the overlay's nats.conf says those


def test_prod_routes_are_mutual_tls_and_advertise_a_verifiable_name() -> None:
    conf = nats_conf("prod")
    tls = tls_block(conf, inside="cluster")
    assert re.search(r"^\s*verify\s*:\s*true\s*$", tls, flags=re.M)
    assert re.search(r"^\s*cert_file\s*:", tls, flags=re.M)
    nats_set = named("prod", "StatefulSet", "nats")
    (container,) = pod_spec(nats_set)["containers"]
    env = [v["name"] for v in container["env"]]
    # Every $VARIABLE of nats.conf is in the pod's environment, and one that
    # refers to another ($(POD_NAME)) comes after it, as Kubernetes expands.
    for variable in set(re.findall(r"\$([A-Z_]+)", conf)):
        assert variable in env, variable
    advertise = next(v for v in container["env"] if v["name"] == "CLUSTER_ADVERTISE")
    assert env.index("POD_NAME") < env.index("CLUSTER_ADVERTISE")
    headless = nats_set["spec"]["serviceName"]
    assert advertise["value"] == f"$(POD_NAME).{headless}:6222"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_nats_accepts_its_rendered_config(overlay: str, tmp_path: Path,
                                          secrets_dirs: dict[str, Path]) -> None:
    conf = nats_config_dir(list(objects(overlay)), kustomize(secrets_dirs[overlay]), tmp_path)
    out = subprocess.run([str(BIN / "nats-server"), "--config", str(conf), "-js", "-t"],
                         capture_output=True, text=True, timeout=60, check=False,
                         env={"POD_NAME": "nats-0",
                              "CLUSTER_ADVERTISE": "nats-0.nats-headless:6222"})
    assert out.returncode == 0, out.stdout + out.stderr


async def create_streams(url: str, mission: str, options: dict[str, Any]) -> None:
    """What ground does first: the streams a vehicle waits for."""
    await create_mission_streams(url, mission, allow_reconnect=False, **options)


class PodNatsServer(NatsServer):
    """nats-server on a rendered config, with the variables its pod's
    environment gives it; the config turns JetStream on, with its own store."""

    def __init__(self, state_dir: Path, config: Path, pod_env: Mapping[str, str]) -> None:
        super().__init__(state_dir, config=config, jetstream=False)
        self.pod_env = dict(pod_env)

    def _environment(self) -> dict[str, str] | None:
        return {**(super()._environment() or os.environ), **self.pod_env}


@pytest.fixture
def dev_nats(tmp_path: Path, secrets_dirs: dict[str, Path]) -> Iterator[NatsServer]:
    """nats-server on the dev overlay's rendered config and Secrets."""
    conf = nats_config_dir(list(objects("dev")), kustomize(secrets_dirs["dev"]), tmp_path)
    with PodNatsServer(tmp_path / "nats", conf, {"POD_NAME": "nats-0"}) as server:
        yield server


async def test_a_service_connects_to_the_rendered_nats_with_its_mounted_identity(
        dev_nats: NatsServer, tmp_path: Path, secrets_dirs: dict[str, Path]) -> None:
    secret_objs = kustomize(secrets_dirs["dev"])
    mission = mission_of("dev")
    options = {}
    for name in ("ground", "orbiter"):
        env = mounted_env("dev", name, secret_objs, tmp_path / name)
        security = Security(pki_dir=Path(env["TWIN_PKI_DIR"]),
                            nats_creds=Path(env["TWIN_NATS_CREDS"]))
        options[name] = security.nats_options(mission, name)
    await create_streams(dev_nats.url, mission, options["ground"])  # JetStream is on
    errors: asyncio.Queue[str] = asyncio.Queue()

    async def on_error(exc: Exception) -> None:
        errors.put_nowait(str(exc))

    orbiter = await nats.connect(dev_nats.url, allow_reconnect=False, error_cb=on_error,
                                 **options["orbiter"])
    tick = f"twin.{mission}.clock.tick"
    await orbiter.publish(tick, b"[]")  # ground's alone
    text = await asyncio.wait_for(errors.get(), WAIT_S)
    assert f'permissions violation for publish to "{tick}"' in text.lower(), text
    await orbiter.close()
    no_creds = {k: v for k, v in options["orbiter"].items() if k != "user_credentials"}
    for refused in ({}, no_creds):
        with pytest.raises(Exception):  # noqa: B017 (nats-py raises several unrelated types)
            await nats.connect(dev_nats.url, allow_reconnect=False, connect_timeout=2,
                               **refused)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_prod_servers_route_to_each_other_over_mutual_tls(
        tmp_path: Path, secrets_dirs: dict[str, Path]) -> None:
    """Three servers from prod's rendered config, started together as the
    StatefulSet starts them, each with its pod's variables; the headless names
    become localhost (a name the certificate carries), the ports free ones.
    Each is healthy only once JetStream's meta group, over the routes, is."""
    conf_path = nats_config_dir(list(objects("prod")), kustomize(secrets_dirs["prod"]), tmp_path)
    template = conf_path.read_text()
    headless = named("prod", "StatefulSet", "nats")["spec"]["serviceName"]
    cluster_ports = [free_port() for _ in range(3)]
    servers: list[NatsServer] = []
    for i, port in enumerate(cluster_ports):
        text = re.sub(r"(cluster\s*{[^}]*?port:\s*)6222", rf"\g<1>{port}", template)
        text = re.sub(r"store_dir:\s*\S+", f"store_dir: {tmp_path / f'js-{i}'}", text)
        for j, other in enumerate(cluster_ports):
            text = text.replace(f"nats-{j}.{headless}:6222", f"localhost:{other}")
        conf = conf_path.with_name(f"nats-{i}.conf")
        conf.write_text(text)
        servers.append(PodNatsServer(tmp_path / f"nats-{i}", conf, {
            "POD_NAME": f"nats-{i}", "CLUSTER_ADVERTISE": f"localhost:{port}"}))
    try:
        await asyncio.gather(*(server.start_async() for server in servers))
        for server in servers:
            routes = await asyncio.to_thread(wait_for_routes, server.monitor_url, 2)
            varz = await asyncio.to_thread(monitor, server.monitor_url, "varz")
            assert varz["cluster"]["tls_required"] and varz["cluster"]["tls_verify"]
            assert varz["tls_required"] and varz["tls_verify"]
            assert {r["remote_name"] for r in routes} == (
                {f"nats-{i}" for i in range(3)} - {varz["server_name"]})
    finally:
        for server in servers:
            await server.stop_async()


def monitor(monitor_url: str, endpoint: str) -> dict[str, Any]:
    with urllib.request.urlopen(f"{monitor_url}/{endpoint}", timeout=WAIT_S) as reply:
        answer: dict[str, Any] = orjson.loads(reply.read())
        return answer


def wait_for_routes(monitor_url: str, count: int) -> list[dict[str, Any]]:
    deadline = time.monotonic() + 3 * WAIT_S  # wall time, for the deadline only
    while True:
        routez = monitor(monitor_url, "routez")
        routes: list[dict[str, Any]] = routez.get("routes") or []
        if len({r["remote_name"] for r in routes}) >= count or time.monotonic() > deadline:
            assert len({r["remote_name"] for r in routes}) == count, routez
            return routes
        time.sleep(0.1)


# --- cert-manager ---------------------------------------------------------------------


def _pki_leaf(pki: Pki, secret_name: str) -> x509.Certificate:
    """pki.py's certificate for the Secret of that name (the manifests' naming)."""
    if secret_name == "nats-tls":
        return pki.nats_server().certificate()
    if client := re.fullmatch(r"client-(\w+)-tls", secret_name):
        return pki.client(client.group(1), client.group(1)).certificate()
    leaf = re.fullmatch(r"(\w+)-(grpc|nats)-tls", secret_name)
    assert leaf, f"no pki.py certificate is named like {secret_name}"
    files = pki.server(leaf.group(1)) if leaf.group(2) == "grpc" else pki.nats_client(leaf.group(1))
    return files.certificate()


def _names(cert: x509.Certificate) -> dict[str, Any]:
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    return {"cn": cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value,
            "dns": set(san.get_values_for_type(x509.DNSName)),
            "ips": {str(ip) for ip in san.get_values_for_type(x509.IPAddress)},
            "uris": set(san.get_values_for_type(x509.UniformResourceIdentifier)),
            "eku": set(eku)}


_USAGE = {"server auth": ExtendedKeyUsageOID.SERVER_AUTH,
          "client auth": ExtendedKeyUsageOID.CLIENT_AUTH}


def test_cert_manager_issues_what_pki_py_issues(tmp_path: Path) -> None:
    objs = compose(tmp_path / "k", "prod", "cert-manager")
    pki = Pki(tmp_path / "pki", namespace=NAMESPACE["prod"])
    certificates = [o for o in objs if o["kind"] == "Certificate"]
    leaves = [c for c in certificates if not c["spec"].get("isCA")]
    for cert in leaves:
        spec = cert["spec"]
        want = _names(_pki_leaf(pki, spec["secretName"]))
        got = {"cn": spec["commonName"], "dns": set(spec.get("dnsNames", [])),
               "ips": set(spec.get("ipAddresses", [])), "uris": set(spec.get("uris", [])),
               "eku": {_USAGE[u] for u in spec["usages"] if u in _USAGE}}
        assert got == want, spec["secretName"]
        assert "digital signature" in spec["usages"]
        assert spec["privateKey"]["algorithm"] == "ECDSA" and spec["privateKey"]["size"] == 256
        assert spec["subject"]["organizations"] == ["change6-twin"]
        assert spec["issuerRef"]["name"] == "twin-ca"
    roles = {u.removeprefix(ROLE_URI) for c in leaves for u in c["spec"].get("uris", [])
             if u.startswith(ROLE_URI)}
    assert roles == {"viewer", "operator"}
    (ca,) = [c for c in certificates if c["spec"].get("isCA")]
    assert ca["spec"]["commonName"] == pki.ca_certificate().subject.get_attributes_for_oid(
        NameOID.COMMON_NAME)[0].value
    (ca_issuer,) = [i for i in objs if i["kind"] == "Issuer" and "ca" in i["spec"]]
    assert ca_issuer["metadata"]["name"] == "twin-ca"
    assert ca_issuer["spec"]["ca"]["secretName"] == ca["spec"]["secretName"]
    assert all(o["metadata"].get("namespace") == NAMESPACE["prod"] for o in objs
               if o["kind"] != "Namespace")


def test_cert_manager_and_creds_only_cover_every_mount(tmp_path: Path) -> None:
    objs = compose(tmp_path / "k", "prod", "cert-manager")
    out = tmp_path / "creds"
    secrets_command(out, mission_of("prod"), NAMESPACE["prod"], "--creds-only")
    assert not (out / "pki").exists(), "--creds-only makes no CA of its own"
    made = {s["metadata"]["name"]: set(s["data"]) for s in kustomize(out)}
    issued = {c["spec"]["secretName"] for c in objs if c["kind"] == "Certificate"}
    assert not issued & set(made), "a Secret both issued and written"
    for pod, spec in pod_specs(objs).items():
        for _volume, source in secret_sources(spec):
            keys = {item["key"] for item in source["items"]}
            if source["name"] in issued:  # cert-manager's Secret keys
                assert keys <= {"tls.crt", "tls.key", "ca.crt"}, pod
            else:
                assert keys <= made.get(source["name"], set()), f"{pod}: {source['name']}"


# --- the insecure component ----------------------------------------------------------


def test_the_insecure_component_is_plaintext_needs_no_secret_and_says_so(
        tmp_path: Path) -> None:
    objs = compose(tmp_path / "k", "dev", "insecure")
    assert only(objs, "ConfigMap", "twin-config")["data"]["TWIN_INSECURE"] == "true"
    conf = only(objs, "ConfigMap", "nats-config")["data"]["nats.conf"]
    assert "PLAINTEXT" in conf and "tls" not in conf and "include" not in conf
    assert "PLAINTEXT" in (K8S / "components" / "insecure" / "kustomization.yaml").read_text()
    for pod, spec in pod_specs(objs).items():
        assert not list(secret_sources(spec)), f"{pod} still mounts a Secret"
    (tmp_path / "nats.conf").write_text(conf)
    out = subprocess.run([str(BIN / "nats-server"), "--config", str(tmp_path / "nats.conf"),
                          "-js", "-t"], capture_output=True, text=True, timeout=60,
                         check=False, env={"POD_NAME": "nats-0"})
    assert out.returncode == 0, out.stdout + out.stderr


@pytest.mark.parametrize(("overlay", "component"), [("dev", "insecure"),
                                                    ("prod", "cert-manager")])
def test_overlays_with_components_pass_strict_schema_validation(
        overlay: str, component: str, tmp_path: Path) -> None:
    manifest = tmp_path / "all.yaml"
    manifest.write_text(yaml.safe_dump_all(compose(tmp_path / "k", overlay, component)))
    out = subprocess.run([str(KUBE_VALIDATE), "--strict", "--quiet", str(manifest)],
                         capture_output=True, text=True, timeout=300, check=False)
    report = out.stdout + out.stderr
    assert out.returncode == 0, report
    for line in report.splitlines():
        if line.startswith("WARN"):
            assert any(f"kind {kind} " in line for kind in COMPONENT_CRDS), line


# --- a real service in its pod's environment --------------------------------------------


class LogReader:
    """Reads a child's output on a thread, so the child never blocks on a full
    pipe (the dev overlay logs at DEBUG), and hands over JSON records."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.proc = proc
        self.lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line)
        self.lines.put(None)

    def wait_for(self, message: str, timeout_s: float) -> dict[str, Any]:
        """The first JSON record whose msg is ``message`` (the pods log JSON)."""
        while (line := self.lines.get(timeout=timeout_s)) is not None:
            with contextlib.suppress(json.JSONDecodeError):
                record: dict[str, Any] = json.loads(line)
                if record.get("msg") == message:
                    return record
        raise AssertionError(f"exited (code {self.proc.wait()}) before logging {message!r}")


def health_status(port: int, service: str) -> str:
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        reply = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=service), timeout=5)
        return str(health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status))


@pytest.mark.slow
@pytest.mark.parametrize("name", SERVICE_NAMES)
def test_service_runs_secure_with_its_pod_environment(
        name: str, tmp_path: Path, dev_nats: NatsServer,
        secrets_dirs: dict[str, Path]) -> None:
    """The real service with the dev pod's environment and mounted Secrets, on
    the rendered NATS: the probes' health names answer SERVING on the plaintext
    health port, /metrics answers on the annotated path, and SIGTERM stops it
    cleanly within the pod's grace period."""
    deployment = twin_deployments("dev")[name]
    spec = pod_spec(deployment)
    (container,) = spec["containers"]
    env = mounted_env("dev", name, kustomize(secrets_dirs["dev"]), tmp_path / "pod")
    if "TWIN_FLIGHT_PLAN" in env:
        env["TWIN_FLIGHT_PLAN"] = str(materialise_mounted_file(
            "dev", spec, env["TWIN_FLIGHT_PLAN"], tmp_path))
    if name != "ground":  # a vehicle waits for the streams ground creates
        ground = mounted_env("dev", "ground", kustomize(secrets_dirs["dev"]), tmp_path / "g")
        asyncio.run(create_streams(dev_nats.url, env["TWIN_MISSION_ID"], Security(
            pki_dir=Path(ground["TWIN_PKI_DIR"]), nats_creds=Path(ground["TWIN_NATS_CREDS"])
        ).nats_options(env["TWIN_MISSION_ID"], "ground")))
    # As the image sets them, on loopback and free ports instead of 0.0.0.0.
    env |= {"HOME": str(tmp_path), "MPLCONFIGDIR": str(tmp_path / "mpl"), "PATH": str(BIN),
            "PYTHONPATH": str(ROOT), "TWIN_GRPC_HOST": "127.0.0.1", "TWIN_GRPC_PORT": "0",
            "TWIN_METRICS_PORT": "0", "TWIN_HEALTH_PORT": "0", "TWIN_NATS_URL": dev_nats.url}
    proc = subprocess.Popen([sys.executable, "-m", *container["args"]], env=env, cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        startup = container["startupProbe"]
        started = LogReader(proc).wait_for("service started",
                                  startup["periodSeconds"] * startup["failureThreshold"])
        for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
            service = container[probe]["grpc"].get("service", "")
            assert health_status(started["health_port"], service) == "SERVING", probe
        path = deployment["spec"]["template"]["metadata"]["annotations"]["prometheus.io/path"]
        with urllib.request.urlopen(f"http://127.0.0.1:{started['metrics_port']}{path}",
                                    timeout=5) as reply:
            assert b"twin_" in reply.read()
        proc.terminate()
        assert proc.wait(timeout=spec["terminationGracePeriodSeconds"]) == 0
    finally:
        proc.kill()
        proc.wait()
