"""Offline checks of the Kubernetes manifests under deploy/k8s.

Every overlay is rendered with the real ``kubectl kustomize`` and validated
with ``kubernetes-validate --strict``; the rendered objects are then checked
against the code: the service list and the configuration the services build
from their environment (``services.kernel.config``), the NATS Service the URL
names, the hardening every workload needs, and the network paths the twin
uses. No cluster is needed. The security (the Secrets, NATS in operator mode
with TLS, the health port, real servers on the rendered files) is checked by
tests/integration/test_k8s_security.py.
"""

from __future__ import annotations

import functools
import json
import re
import subprocess
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from services.kernel.config import DEFAULT_PORTS, SERVICE_NAMES, ServiceConfig

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
KUBECTL = BIN / "kubectl"
KUBE_VALIDATE = BIN / "kubernetes-validate"
K8S = ROOT / "deploy" / "k8s"
OVERLAYS = ("dev", "prod")
TWIN_COMPONENT = "twin-service"
# Kinds without a schema in kubernetes-validate, checked structurally below.
CRD_KINDS = frozenset({"ServiceMonitor"})

Obj = dict[str, Any]


# --- rendering ---------------------------------------------------------------


@functools.cache
def rendered_text(overlay: str) -> str:
    out = subprocess.run(
        [str(KUBECTL), "kustomize", str(K8S / "overlays" / overlay)],
        capture_output=True, text=True, timeout=120, check=False,
    )
    assert out.returncode == 0, f"kubectl kustomize {overlay} failed:\n{out.stderr}"
    return out.stdout


@functools.cache
def objects(overlay: str) -> tuple[Obj, ...]:
    return tuple(doc for doc in yaml.safe_load_all(rendered_text(overlay)) if doc)


def of_kind(overlay: str, kind: str) -> list[Obj]:
    return [o for o in objects(overlay) if o["kind"] == kind]


def named(overlay: str, kind: str, name: str) -> Obj:
    found = [o for o in of_kind(overlay, kind) if o["metadata"]["name"] == name]
    assert len(found) == 1, f"{overlay}: expected one {kind}/{name}, found {len(found)}"
    return found[0]


def generated(overlay: str, kind: str, base_name: str) -> Obj:
    """A generated ConfigMap by its name before kustomize's hash suffix."""
    pattern = re.compile(rf"^{re.escape(base_name)}(-[a-z0-9]{{10}})?$")
    found = [o for o in of_kind(overlay, kind) if pattern.match(o["metadata"]["name"])]
    assert len(found) == 1, f"{overlay}: expected one {kind} {base_name}, found {len(found)}"
    return found[0]


def workloads(overlay: str) -> list[Obj]:
    return of_kind(overlay, "Deployment") + of_kind(overlay, "StatefulSet")


def twin_deployments(overlay: str) -> dict[str, Obj]:
    return {
        d["metadata"]["name"]: d
        for d in of_kind(overlay, "Deployment")
        if d["metadata"].get("labels", {}).get("app.kubernetes.io/component") == TWIN_COMPONENT
    }


def pod_spec(workload: Obj) -> Obj:
    spec: Obj = workload["spec"]["template"]["spec"]
    return spec


def container_port(container: Obj, name: str) -> int:
    ports = {p["name"]: p["containerPort"] for p in container.get("ports", [])}
    assert name in ports, f"container {container['name']} has no port named {name}"
    return int(ports[name])


def config_map_env(overlay: str, container: Obj) -> dict[str, str]:
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        ref = source["configMapRef"]["name"]
        env.update(named(overlay, "ConfigMap", ref)["data"])
    for var in container.get("env", []):
        if "value" in var:
            env[var["name"]] = var["value"]
    return env


# --- rendering and schemas -------------------------------------------------------


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_renders_into_one_namespace(overlay: str) -> None:
    objs = objects(overlay)
    namespaces = {o["metadata"]["name"] for o in objs if o["kind"] == "Namespace"}
    assert len(namespaces) == 1, f"{overlay} should create exactly one namespace"
    (namespace,) = namespaces
    for obj in objs:
        if obj["kind"] != "Namespace":
            assert obj["metadata"].get("namespace") == namespace, obj["metadata"]["name"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_passes_strict_schema_validation(overlay: str, tmp_path: Path) -> None:
    manifest = tmp_path / f"{overlay}.yaml"
    manifest.write_text(rendered_text(overlay))
    out = subprocess.run(
        [str(KUBE_VALIDATE), "--strict", "--quiet", str(manifest)],
        capture_output=True, text=True, timeout=300, check=False,
    )
    report = out.stdout + out.stderr
    assert out.returncode == 0, report
    # An object without a schema only warns; allow that for known CRDs only.
    for line in report.splitlines():
        if line.startswith("WARN"):
            assert any(f"kind {kind} " in line for kind in CRD_KINDS), line


# --- hardening ---------------------------------------------------------------------

_QUANTITY = re.compile(r"^(\d+(?:\.\d+)?)(m|Ki|Mi|Gi|k|M|G)?$")
_FACTOR = {None: 1.0, "m": 1e-3, "k": 1e3, "M": 1e6, "G": 1e9,
           "Ki": 2.0**10, "Mi": 2.0**20, "Gi": 2.0**30}


def quantity(value: str | int) -> float:
    match = _QUANTITY.match(str(value))
    assert match, f"unparsed quantity {value!r}"
    return float(match.group(1)) * _FACTOR[match.group(2)]


def containers_of(overlay: str) -> Iterator[tuple[str, Obj, Obj]]:
    for workload in workloads(overlay):
        spec = pod_spec(workload)
        for container in spec.get("initContainers", []) + spec["containers"]:
            yield f"{workload['kind']}/{workload['metadata']['name']}", spec, container


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_container_has_probes_and_bounded_resources(overlay: str) -> None:
    for where, _spec, container in containers_of(overlay):
        for probe in ("livenessProbe", "readinessProbe"):
            assert probe in container, f"{where}: no {probe}"
        resources = container.get("resources", {})
        for what in ("cpu", "memory"):
            request = resources.get("requests", {}).get(what)
            limit = resources.get("limits", {}).get(what)
            assert request and limit, f"{where}: {what} needs a request and a limit"
            assert quantity(request) <= quantity(limit), f"{where}: {what} request > limit"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_container_runs_non_root_read_only_without_capabilities(overlay: str) -> None:
    for where, spec, container in containers_of(overlay):
        pod_sc, sc = spec.get("securityContext", {}), container.get("securityContext", {})
        assert sc.get("runAsNonRoot", pod_sc.get("runAsNonRoot")) is True, where
        assert sc.get("runAsUser", pod_sc.get("runAsUser", 0)) > 0, f"{where}: uid 0"
        assert sc.get("readOnlyRootFilesystem") is True, where
        assert sc.get("allowPrivilegeEscalation") is False, where
        assert sc.get("capabilities", {}).get("drop") == ["ALL"], where
        seccomp = sc.get("seccompProfile", pod_sc.get("seccompProfile", {}))
        assert seccomp.get("type") == "RuntimeDefault", where
        mounts = {m["mountPath"]: m["name"] for m in container.get("volumeMounts", [])}
        volumes = {v["name"]: v for v in spec.get("volumes", [])}
        assert "/tmp" in mounts, f"{where}: a read-only root needs a writable /tmp"
        assert "emptyDir" in volumes[mounts["/tmp"]], f"{where}: /tmp is not an emptyDir"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_twin_services_stop_within_their_grace_period(overlay: str) -> None:
    graceful_stop_s = 10  # health NOT_SERVING, gRPC grace, drains (docs/contract.md)
    for name, deployment in twin_deployments(overlay).items():
        grace_s = pod_spec(deployment).get("terminationGracePeriodSeconds", 30)
        assert grace_s > graceful_stop_s, name
        # One pod per service: the clock waits for exactly one ack from each.
        assert deployment["spec"]["replicas"] == 1, name
        assert deployment["spec"]["strategy"]["type"] == "Recreate", name


# --- the manifests and the code ---------------------------------------------------


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_service_in_code_has_a_manifest_and_back(overlay: str) -> None:
    deployments = twin_deployments(overlay)
    assert set(deployments) == set(SERVICE_NAMES)
    assert set(DEFAULT_PORTS) == set(SERVICE_NAMES)
    for name, deployment in deployments.items():
        (container,) = pod_spec(deployment)["containers"]
        assert container["args"] == [f"services.{name}"]
        assert container["image"].split(":")[0].endswith("change6-twin")
        named(overlay, "Service", name)
        named(overlay, "ServiceAccount", name)
        assert pod_spec(deployment)["serviceAccountName"] == name


def test_base_has_one_file_per_service() -> None:
    files = {p.stem for p in (K8S / "base").glob("*.yaml")} - {"kustomization"}
    assert files - {"nats", "networkpolicies"} == set(SERVICE_NAMES)
    listed = yaml.safe_load((K8S / "base" / "kustomization.yaml").read_text())["resources"]
    assert {Path(r).stem for r in listed} == files


def service_config(overlay: str, name: str, tmp_path: Path) -> ServiceConfig:
    """The config the service builds in its pod, from the pod's environment.

    The flight plan is written out from its ConfigMap where the pod mounts it,
    rebased under ``tmp_path``, since the config checks that the file exists.
    """
    spec = pod_spec(twin_deployments(overlay)[name])
    (container,) = spec["containers"]
    env = config_map_env(overlay, container)
    plan = env.get("TWIN_FLIGHT_PLAN")
    if plan:
        env["TWIN_FLIGHT_PLAN"] = str(materialise_mounted_file(overlay, spec, plan, tmp_path))
    return ServiceConfig.from_env(name, env)


def materialise_mounted_file(overlay: str, spec: Obj, path: str, tmp_path: Path) -> Path:
    (container,) = spec["containers"]
    mounts = [m for m in container["volumeMounts"] if path.startswith(m["mountPath"] + "/")]
    assert len(mounts) == 1, f"{path} is not inside exactly one volume mount"
    volume = next(v for v in spec["volumes"] if v["name"] == mounts[0]["name"])
    data = named(overlay, "ConfigMap", volume["configMap"]["name"])["data"]
    key = path.removeprefix(mounts[0]["mountPath"] + "/")
    assert key in data, f"ConfigMap {volume['configMap']['name']} has no key {key}"
    local = tmp_path / key
    local.write_text(data[key])
    return local


@pytest.mark.parametrize("overlay", OVERLAYS)
@pytest.mark.parametrize("name", SERVICE_NAMES)
def test_ports_match_the_service_configuration(overlay: str, name: str, tmp_path: Path) -> None:
    cfg = service_config(overlay, name, tmp_path)
    deployment = twin_deployments(overlay)[name]
    (container,) = pod_spec(deployment)["containers"]
    assert cfg.grpc_host == "0.0.0.0", "in a pod the gRPC server must listen on all addresses"
    assert container_port(container, "grpc") == cfg.grpc_port
    assert container_port(container, "metrics") == cfg.metrics_port
    # The kubelet cannot present a client certificate to the gRPC port: the
    # probes ask the plaintext health port (test_k8s_security.py).
    assert container_port(container, "health") == cfg.health_port
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert container[probe]["grpc"]["port"] == cfg.health_port, probe
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert int(annotations["prometheus.io/port"]) == cfg.metrics_port
    service_ports = {p["name"]: p for p in named(overlay, "Service", name)["spec"]["ports"]}
    for port_name, port in (("grpc", cfg.grpc_port), ("metrics", cfg.metrics_port)):
        target = service_ports[port_name]["targetPort"]
        resolved = container_port(container, target) if isinstance(target, str) else target
        assert resolved == port, f"Service {name} port {port_name} misses the pod port"
        # The Service port equals the pod port, so docs/deploy.md's
        # `port-forward svc/<name> <local>:50051` works for every service.
        assert service_ports[port_name]["port"] == port


def test_ground_reads_the_flight_plan_from_its_config_map(tmp_path: Path) -> None:
    cfg = service_config("dev", "ground", tmp_path)
    assert cfg.flight_plan is not None
    json.loads(cfg.flight_plan.read_text())  # the plan the pod sees is JSON


def test_flight_plan_copy_matches_the_packaged_plan() -> None:
    packaged = ROOT / "services" / "ground" / "plans" / "nominal.json"
    copy = K8S / "base" / "flight-plan" / "nominal.json"
    assert json.loads(copy.read_text()) == json.loads(packaged.read_text()), (
        "deploy/k8s/base/flight-plan/nominal.json is stale: run `task k8s:sync-plan`"
    )


# --- NATS --------------------------------------------------------------------------


def nats_conf(overlay: str) -> str:
    data: str = generated(overlay, "ConfigMap", "nats-config")["data"]["nats.conf"]
    return data


def conf_int(conf: str, key: str, block: str | None = None) -> int:
    if block is not None:
        match = re.search(rf"^{block}\s*{{(.*?)^}}", conf, flags=re.M | re.S)
        assert match, f"no {block} block in nats.conf"
        conf = match.group(1)
    match = re.search(rf"^\s*{key}\s*:\s*(\d+)\s*$", conf, flags=re.M)
    assert match, f"no {key} in nats.conf"
    return int(match.group(1))


def matches(plain: Mapping[str, str], labels: Mapping[str, str]) -> bool:
    """A Service's selector: a plain map of labels."""
    return all(labels.get(k) == v for k, v in plain.items())


def selects(selector: Mapping[str, Any], labels: Mapping[str, str]) -> bool:
    """A LabelSelector (matchLabels and matchExpressions); {} selects everything."""
    if not matches(selector.get("matchLabels", {}), labels):
        return False
    for expr in selector.get("matchExpressions", []):
        key, op, values = expr["key"], expr["operator"], expr.get("values", [])
        ok = {"In": labels.get(key) in values, "NotIn": labels.get(key) not in values,
              "Exists": key in labels, "DoesNotExist": key not in labels}[op]
        if not ok:
            return False
    return True


@pytest.mark.parametrize("overlay", OVERLAYS)
@pytest.mark.parametrize("name", SERVICE_NAMES)
def test_nats_url_names_the_nats_service(overlay: str, name: str, tmp_path: Path) -> None:
    nats = named(overlay, "StatefulSet", "nats")
    pod_labels = nats["spec"]["template"]["metadata"]["labels"]
    (container,) = pod_spec(nats)["containers"]
    client_port = conf_int(nats_conf(overlay), "port")
    assert container_port(container, "client") == client_port
    for url in service_config(overlay, name, tmp_path).nats_urls:
        parts = urlsplit(url)
        assert parts.hostname is not None and parts.port is not None, url
        service = named(overlay, "Service", parts.hostname.split(".")[0])
        assert service["spec"].get("clusterIP") != "None", "clients use the load-balanced Service"
        assert matches(service["spec"]["selector"], pod_labels), f"{url} misses the NATS pods"
        (port,) = [p for p in service["spec"]["ports"] if p["port"] == parts.port]
        assert container_port(container, port["targetPort"]) == client_port


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_nats_runs_jetstream_on_its_persistent_volume(overlay: str) -> None:
    nats = named(overlay, "StatefulSet", "nats")
    (container,) = pod_spec(nats)["containers"]
    assert container["image"] == "nats:2.10-alpine"
    assert "-js" in container["args"]
    store = re.search(r"store_dir\s*:\s*(\S+)", nats_conf(overlay))
    assert store, "nats.conf sets no JetStream store_dir"
    claims = {c["metadata"]["name"] for c in nats["spec"]["volumeClaimTemplates"]}
    on_claim = [m for m in container["volumeMounts"]
                if m["name"] in claims
                and (store.group(1) + "/").startswith(m["mountPath"].rstrip("/") + "/")]
    assert on_claim, f"store_dir {store.group(1)} is not on a persistent volume"
    assert container_port(container, "monitor") == conf_int(nats_conf(overlay), "http_port")


def test_prod_nats_is_a_three_server_cluster_with_routes_and_a_budget() -> None:
    nats = named("prod", "StatefulSet", "nats")
    replicas = nats["spec"]["replicas"]
    assert replicas == 3
    conf = nats_conf("prod")
    cluster_port = conf_int(conf, "port", block="cluster")
    headless = nats["spec"]["serviceName"]
    assert named("prod", "Service", headless)["spec"]["clusterIP"] == "None"
    routes = set(re.findall(r"nats://([\w.-]+):(\d+)", conf))
    assert routes == {(f"nats-{i}.{headless}", str(cluster_port)) for i in range(replicas)}
    (container,) = pod_spec(nats)["containers"]
    assert container_port(container, "cluster") == cluster_port
    anti = pod_spec(nats)["affinity"]["podAntiAffinity"]
    (term,) = anti["requiredDuringSchedulingIgnoredDuringExecution"]
    assert term["topologyKey"] == "kubernetes.io/hostname"
    (pdb,) = of_kind("prod", "PodDisruptionBudget")
    assert selects(pdb["spec"]["selector"], nats["spec"]["template"]["metadata"]["labels"])
    quorum = replicas // 2 + 1
    assert pdb["spec"]["minAvailable"] == quorum


# --- scraping ------------------------------------------------------------------------


def test_prod_service_monitor_scrapes_exactly_the_twin_services() -> None:
    (monitor,) = of_kind("prod", "ServiceMonitor")
    scraped = {s["metadata"]["name"] for s in of_kind("prod", "Service")
               if selects(monitor["spec"]["selector"], s["metadata"].get("labels", {}))}
    assert scraped == set(SERVICE_NAMES)
    (endpoint,) = monitor["spec"]["endpoints"]
    for name in SERVICE_NAMES:
        ports = {p["name"] for p in named("prod", "Service", name)["spec"]["ports"]}
        assert endpoint["port"] in ports
    # The metrics' own `service` label must win over the operator's target label,
    # and the rules in deploy/prometheus expect job="twin".
    assert endpoint["honorLabels"] is True
    assert {"targetLabel": "job", "replacement": "twin", "action": "replace"} in (
        endpoint["relabelings"])


def test_dev_prometheus_scrapes_annotated_pods_as_job_twin() -> None:
    prometheus_yml = generated("dev", "ConfigMap", "prometheus-config")["data"]["prometheus.yml"]
    config = yaml.safe_load(prometheus_yml)
    (job,) = [j for j in config["scrape_configs"] if j["job_name"] == "twin"]
    assert job["honor_labels"] is True
    sources = {tuple(r.get("source_labels", [])) for r in job["relabel_configs"]}
    assert ("__meta_kubernetes_pod_annotation_prometheus_io_scrape",) in sources
    assert config["rule_files"] == ["/etc/prometheus/rules/*.yml"]
    rules = generated("dev", "ConfigMap", "prometheus-rules")["data"]
    assert rules, "the dev Prometheus has no rules"


@pytest.mark.parametrize(
    ("kustomization", "pattern", "kind_key"),
    [("deploy/grafana", "dashboards/*.json", "grafana-dashboards"),
     ("deploy/prometheus", "rules/*.yml", "prometheus-rules")],
)
def test_generated_config_maps_list_every_file(kustomization: str, pattern: str,
                                               kind_key: str) -> None:
    directory = ROOT / kustomization
    spec = yaml.safe_load((directory / "kustomization.yaml").read_text())
    (generator,) = [g for g in spec["configMapGenerator"] if g["name"] == kind_key]
    listed = {f.split("=")[-1] for f in generator.get("files", [])}
    present = {str(p.relative_to(directory)) for p in directory.glob(pattern)}
    assert listed == present, f"update {kustomization}/kustomization.yaml to list {present}"


def datasource_uids(node: object) -> Iterator[str]:
    if isinstance(node, dict):
        source = node.get("datasource")
        if isinstance(source, dict) and isinstance(source.get("uid"), str):
            yield source["uid"]
        for value in node.values():
            yield from datasource_uids(value)
    elif isinstance(node, list):
        for item in node:
            yield from datasource_uids(item)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_dashboards_are_labelled_for_the_grafana_sidecar(overlay: str) -> None:
    dashboards = generated(overlay, "ConfigMap", "grafana-dashboards")
    assert dashboards["metadata"]["labels"]["grafana_dashboard"] == "1"
    for key, text in dashboards.get("data", {}).items():
        assert key.endswith(".json")
        json.loads(text)


def test_dev_grafana_provisions_the_datasource_the_dashboards_use() -> None:
    provisioned = yaml.safe_load(
        generated("dev", "ConfigMap", "grafana-datasources")["data"]["datasources.yaml"])
    (source,) = provisioned["datasources"]
    assert source["url"] == "http://{}:{}".format(
        "prometheus", named("dev", "Service", "prometheus")["spec"]["ports"][0]["port"])
    dashboards = generated("dev", "ConfigMap", "grafana-dashboards").get("data", {})
    used = {uid for text in dashboards.values() for uid in datasource_uids(json.loads(text))}
    assert used - {"-- Grafana --"} <= {source["uid"]}


# --- network policies ------------------------------------------------------------------


@dataclass(frozen=True)
class Pod:
    namespace: str
    labels: Mapping[str, str]
    ports: Mapping[str, int] = field(default_factory=dict)


def namespace_labels(overlay: str, namespace: str) -> dict[str, str]:
    labels = {"kubernetes.io/metadata.name": namespace}
    for ns in of_kind(overlay, "Namespace"):
        if ns["metadata"]["name"] == namespace:
            labels.update(ns["metadata"].get("labels", {}))
    return labels


def peer_matches(overlay: str, peer: Obj, policy_ns: str, pod: Pod) -> bool:
    if "ipBlock" in peer:
        return False  # the twin's paths are all between pods
    ns_selector = peer.get("namespaceSelector")
    in_ns = (pod.namespace == policy_ns if ns_selector is None
             else selects(ns_selector, namespace_labels(overlay, pod.namespace)))
    return in_ns and selects(peer.get("podSelector", {}), pod.labels)


def port_matches(rule: Obj, port: int, protocol: str, target: Pod) -> bool:
    if not rule.get("ports"):
        return True
    for allowed in rule["ports"]:
        number = allowed.get("port")
        if isinstance(number, str):
            number = target.ports.get(number)
        if allowed.get("protocol", "TCP") == protocol and number in (None, port):
            return True
    return False


def policy_allows(overlay: str, direction: str, subject: Pod, peer: Pod, port: int,
                  protocol: str, target: Pod) -> bool:
    """Whether the policies selecting ``subject`` let this connection through."""
    key, peers_key = ("ingress", "from") if direction == "Ingress" else ("egress", "to")
    applicable = [
        p for p in of_kind(overlay, "NetworkPolicy")
        if p["metadata"]["namespace"] == subject.namespace
        and selects(p["spec"]["podSelector"], subject.labels)
        and direction in p["spec"].get("policyTypes", ["Ingress"])
    ]
    if not applicable:
        return True  # a pod no policy selects is not isolated
    return any(
        (not rule.get(peers_key) or any(
            peer_matches(overlay, q, subject.namespace, peer) for q in rule[peers_key]))
        and port_matches(rule, port, protocol, target)
        for policy in applicable for rule in policy["spec"].get(key, [])
    )


def connects(overlay: str, src: Pod, dst: Pod, port: int, protocol: str = "TCP") -> bool:
    return (policy_allows(overlay, "Egress", src, dst, port, protocol, dst)
            and policy_allows(overlay, "Ingress", dst, src, port, protocol, dst))


def twin_pod(overlay: str, name: str) -> Pod:
    deployment = twin_deployments(overlay)[name]
    (container,) = pod_spec(deployment)["containers"]
    return Pod(deployment["metadata"]["namespace"],
               deployment["spec"]["template"]["metadata"]["labels"],
               {p["name"]: p["containerPort"] for p in container["ports"]})


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_network_policies_open_only_the_twins_paths(overlay: str) -> None:
    ns = next(iter(twin_deployments(overlay).values()))["metadata"]["namespace"]
    nats_set = named(overlay, "StatefulSet", "nats")
    nats = Pod(ns, nats_set["spec"]["template"]["metadata"]["labels"])
    dns = Pod("kube-system", {"k8s-app": "kube-dns"})
    prometheus = Pod("monitoring", {"app.kubernetes.io/name": "prometheus"})
    operator = Pod(ns, {"change6.twin/operator": "true"})
    stranger = Pod(ns, {"app.kubernetes.io/name": "something-else"})
    outsider = Pod("default", {})
    assert any(selects(p["spec"]["podSelector"], {}) and
               set(p["spec"]["policyTypes"]) == {"Ingress", "Egress"} and
               not p["spec"].get("ingress") and not p["spec"].get("egress")
               for p in of_kind(overlay, "NetworkPolicy")), "no default deny"
    for name in SERVICE_NAMES:
        svc = twin_pod(overlay, name)
        assert connects(overlay, svc, nats, 4222), f"{name} cannot reach NATS"
        assert connects(overlay, svc, dns, 53, "UDP"), f"{name} cannot resolve names"
        assert connects(overlay, prometheus, svc, 9090), f"Prometheus cannot scrape {name}"
        assert connects(overlay, operator, svc, 50051), f"operators cannot reach {name}"
        assert not connects(overlay, stranger, svc, 50051)
        assert not connects(overlay, outsider, svc, 50051)
        assert not connects(overlay, outsider, nats, 4222)
        for other in SERVICE_NAMES:
            # The services talk only over NATS, never to each other directly.
            assert not connects(overlay, svc, twin_pod(overlay, other), 50051)
    assert connects(overlay, nats, nats, 6222), "NATS servers cannot route to each other"


def test_dev_grafana_reaches_prometheus_and_prometheus_reaches_the_services() -> None:
    ns = "twin-dev"
    grafana = Pod(ns, named("dev", "Deployment", "grafana")["spec"]["template"]["metadata"][
        "labels"])
    prometheus = Pod(ns, named("dev", "Deployment", "prometheus")["spec"]["template"][
        "metadata"]["labels"])
    assert connects("dev", grafana, prometheus, 9090)
    for name in SERVICE_NAMES:
        assert connects("dev", prometheus, twin_pod("dev", name), 9090)
        assert not connects("dev", grafana, twin_pod("dev", name), 9090)


# --- the image -----------------------------------------------------------------------


def dockerfile_stages() -> list[list[str]]:
    """Instructions of each stage, continuation lines joined."""
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    stages: list[list[str]] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.upper().startswith("FROM "):
            stages.append([])
        if stages:
            stages[-1].append(line)
    return stages


def test_image_is_multi_stage_slim_non_root_and_runs_a_service_by_argument() -> None:
    stages = dockerfile_stages()
    assert len(stages) >= 2, "build wheels in a builder stage"
    final = stages[-1]
    arg = re.search(r"ARG PYTHON_IMAGE=(\S+)", (ROOT / "Dockerfile").read_text())
    assert arg and arg.group(1).startswith("python:3.11-slim")
    assert final[0].split()[1] in ("${PYTHON_IMAGE}", arg.group(1))
    assert not any(re.search(r"apt-get|build-essential|gcc", i) for i in final)
    (user,) = [i.split()[1] for i in final if i.startswith("USER ")]
    uid = user.split(":")[0]
    assert uid.isdigit() and int(uid) > 0, "USER must be a numeric non-root uid"
    (entrypoint,) = [i for i in final if i.startswith("ENTRYPOINT ")]
    assert json.loads(entrypoint.removeprefix("ENTRYPOINT ")) == ["python", "-m"]
    for overlay in OVERLAYS:
        for name, deployment in twin_deployments(overlay).items():
            # The pods' uid is the image's, so files it owns stay readable.
            assert pod_spec(deployment)["securityContext"]["runAsUser"] == int(uid), name
