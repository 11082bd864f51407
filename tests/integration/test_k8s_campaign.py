"""Offline checks of the Monte Carlo campaign on Kubernetes (issue 17):
deploy/k8s/components/campaign, used by deploy/k8s/overlays/campaign.

The overlay is rendered with the real ``kubectl kustomize`` and validated with
``kubernetes-validate --strict``, as tests/integration/test_k8s_manifests.py
does for dev and prod (whose rendering and network-policy helpers these tests
share); the component is also composed into the dev overlay. The commands the
pods run are resolved as the kubelet resolves ``$(VAR)`` and parsed by the
real command-line parsers (Dask's click commands and the twin's typer app),
without running them; the campaign file the Job reads is checked by the
runner's own parser (services/campaign/spec.py). Dask itself cannot run on a
cluster here: no scheduler, worker or Job is started, so what the pods do at
run time (connect, fly cases, write results) is not tested by this file
(tests/integration/test_campaign.py runs campaigns on a local Dask cluster).
"""

from __future__ import annotations

import os
import re
import subprocess
import tomllib
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

import pytest
import typer.main
import yaml
from distributed.cli.dask_scheduler import main as dask_scheduler
from distributed.cli.dask_worker import main as dask_worker

from services.campaign.spec import Campaign, parse_campaign
from services.cli.app import app
from services.kernel.config import SERVICE_NAMES
from services.kernel.parameters import split_path
from tests.integration.test_k8s_manifests import (
    K8S,
    KUBE_VALIDATE,
    KUBECTL,
    ROOT,
    Obj,
    Pod,
    connects,
    container_port,
    dockerfile_stages,
    matches,
    named,
    objects,
    of_kind,
    pod_spec,
    policy_allows,
    quantity,
    selects,
)

OVERLAY = "campaign"
#: The overlay whose namespace and policies the component is composed into.
TWIN_OVERLAY = "dev"
DNS = Pod("kube-system", {"k8s-app": "kube-dns"})
DNS_PORT = 53
#: Seconds `twin campaign run` waits for a scheduler (services/campaign/run.py,
#: dask_client: Client(scheduler, timeout="30s")), after it has written the
#: campaign's manifest, so that a second try refuses the directory.
RUN_CONNECT_TIMEOUT_S = 30

_VAR = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)")


# --- the rendered campaign ----------------------------------------------------------


def by_command(word: str) -> Obj:
    """The one Deployment whose container runs ``dask <word>``."""
    found = [d for d in of_kind(OVERLAY, "Deployment")
             if pod_spec(d)["containers"][0].get("command") == ["dask"]
             and pod_spec(d)["containers"][0]["args"][0] == word]
    assert len(found) == 1, f"expected one Deployment running `dask {word}`, found {len(found)}"
    return found[0]


def the_job() -> Obj:
    (job,) = of_kind(OVERLAY, "Job")
    return job


def job_container(name: str) -> Obj:
    spec = pod_spec(the_job())
    found: list[Obj] = [c for c in spec.get("initContainers", []) + spec["containers"]
                        if c["name"] == name]
    assert len(found) == 1, f"expected one container {name} in the Job, found {len(found)}"
    return found[0]


def pod_of(workload: Obj) -> Pod:
    template = workload["spec"]["template"]
    ports = {p["name"]: p["containerPort"]
             for c in template["spec"]["containers"] for p in c.get("ports", [])}
    return Pod(workload["metadata"]["namespace"], template["metadata"]["labels"], ports)


def env_of(container: Obj, objs: Iterable[Obj] = ()) -> dict[str, str]:
    """The container's environment as the kubelet builds it: envFrom first,
    then env; a field reference stays a placeholder naming its field. The
    ConfigMaps are the overlay's, or those of ``objs`` if given."""
    config_maps = {o["metadata"]["name"]: o for o in (objs or objects(OVERLAY))
                   if o["kind"] == "ConfigMap"}
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        env.update(config_maps[source["configMapRef"]["name"]]["data"])
    for var in container.get("env", []):
        if "value" in var:
            env[var["name"]] = var["value"]
        else:
            env[var["name"]] = "<{}>".format(var["valueFrom"]["fieldRef"]["fieldPath"])
    return env


def expand(word: str, env: Mapping[str, str]) -> str:
    """``$(VAR)`` as the kubelet expands it in command and args. An undefined
    variable would be left as it is, which the pod would then run: refused."""

    def one(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        assert match.group(1) in env, f"{word!r} refers to an undefined {match.group(1)}"
        return env[match.group(1)]

    return _VAR.sub(one, word)


def command_line(container: Obj, objs: Iterable[Obj] = ()) -> list[str]:
    env = env_of(container, objs)
    return [expand(w, env) for w in container.get("command", []) + container.get("args", [])]


class CommandLine(Protocol):
    """A click command: Dask's, or the twin's (typer's own copy of click)."""

    name: str | None

    def make_context(self, info_name: str | None, args: list[str]) -> Any: ...


def parsed(command: CommandLine, args: list[str]) -> dict[str, Any]:
    """What the real command-line parser makes of ``args`` (nothing runs)."""
    try:
        context = command.make_context(command.name or "", list(args))
    except Exception as exc:  # click's (or typer's copy of click's) usage errors
        message = exc.format_message() if hasattr(exc, "format_message") else str(exc)
        pytest.fail(f"{command.name} refuses {args}: {message}")
    with context as ctx:
        params: dict[str, Any] = dict(ctx.params)
        return params


def twin_command(*names: str) -> CommandLine:
    """The twin CLI's command at ``names`` (``"campaign", "run"``)."""
    command: Any = typer.main.get_command(app)
    for name in names:
        command = command.commands[name]
    assert hasattr(command, "make_context"), names
    found: CommandLine = command
    return found


def scheduler_params() -> dict[str, Any]:
    (container,) = pod_spec(by_command("scheduler"))["containers"]
    return parsed(dask_scheduler, command_line(container)[2:])


def worker_params() -> dict[str, Any]:
    (container,) = pod_spec(by_command("worker"))["containers"]
    return parsed(dask_worker, command_line(container)[2:])


def scheduler_address() -> tuple[str, int]:
    """The scheduler's (Service name, port) the Job's `--scheduler` names."""
    args = command_line(job_container("run"))
    url = urlsplit(args[args.index("--scheduler") + 1])
    assert url.scheme == "tcp" and url.hostname and url.port, url.geturl()
    return url.hostname, url.port


def option(args: list[str], name: str) -> str:
    assert args.count(name) == 1, f"{name} given {args.count(name)} times in {args}"
    return args[args.index(name) + 1]


def mount_of(container: Obj, path: str) -> Obj:
    """The one volume mount ``path`` is (a subPath mount) or lies under."""
    inside: list[Obj] = [m for m in container.get("volumeMounts", [])
                         if path == m["mountPath"]
                         or path.startswith(m["mountPath"].rstrip("/") + "/")]
    assert len(inside) == 1, f"{path} is not inside exactly one mount of {container['name']}"
    return inside[0]


def volume(workload: Obj, name: str) -> Obj:
    found: list[Obj] = [v for v in pod_spec(workload)["volumes"] if v["name"] == name]
    assert len(found) == 1, f"expected one volume {name}, found {len(found)}"
    return found[0]


def campaign_text() -> tuple[str, str]:
    """(path, text) of the campaign file as the Job's pod sees it: the file its
    `run` command names, read from the ConfigMap key its volume mounts there."""
    run = job_container("run")
    path = command_line(run)[3]
    mount = mount_of(run, path)
    source = volume(the_job(), mount["name"])["configMap"]
    file = mount.get("subPath") or path.removeprefix(mount["mountPath"].rstrip("/") + "/")
    key = {i["path"]: i["key"] for i in source.get("items", [])}.get(file, file)
    return path, str(named(OVERLAY, "ConfigMap", source["name"])["data"][key])


def campaign() -> Campaign:
    """The Job's campaign file, parsed and checked by the runner's own parser."""
    loaded = yaml.safe_load(campaign_text()[1])
    assert isinstance(loaded, dict), "campaign.yaml is not a YAML mapping"
    return parse_campaign(loaded)


# --- rendering and schemas -------------------------------------------------------------


def validate(manifest: Path) -> str:
    out = subprocess.run([str(KUBE_VALIDATE), "--strict", "--quiet", str(manifest)],
                         capture_output=True, text=True, timeout=300, check=False)
    report = out.stdout + out.stderr
    assert out.returncode == 0, report
    return report


def test_overlay_renders_into_its_namespace_and_passes_strict_validation(
        tmp_path: Path) -> None:
    objs = objects(OVERLAY)
    (namespace,) = [o for o in objs if o["kind"] == "Namespace"]
    ns = namespace["metadata"]["name"]
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    for obj in objs:
        if obj["kind"] != "Namespace":
            assert obj["metadata"].get("namespace") == ns, obj["metadata"]["name"]
    manifest = tmp_path / "campaign.yaml"
    manifest.write_text(yaml.safe_dump_all(list(objs)))
    # Only built-in kinds: not even a warning for a kind without a schema.
    assert not [line for line in validate(manifest).splitlines() if line.startswith("WARN")]


def test_the_overlay_sets_the_worker_count_knob() -> None:
    spec = yaml.safe_load((K8S / "overlays" / OVERLAY / "kustomization.yaml").read_text())
    (knob,) = spec["replicas"]
    workers = by_command("worker")
    assert knob["name"] == workers["metadata"]["name"]
    assert workers["spec"]["replicas"] == knob["count"] > 1
    assert by_command("scheduler")["spec"]["replicas"] == 1, "one scheduler per campaign"


def compose(where: Path, overlay: str, component: str, **extra: Any) -> list[Obj]:
    """An overlay with a component added, as a user's kustomization adds it."""
    where.mkdir(parents=True, exist_ok=True)
    up = Path(os.path.relpath(K8S, where))  # kustomize takes no absolute paths
    (where / "kustomization.yaml").write_text(yaml.safe_dump({
        "apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization",
        "resources": [str(up / "overlays" / overlay)],
        "components": [str(up / "components" / component)], **extra}))
    out = subprocess.run([str(KUBECTL), "kustomize", str(where)], capture_output=True,
                         text=True, timeout=120, check=False)
    assert out.returncode == 0, out.stderr
    return [doc for doc in yaml.safe_load_all(out.stdout) if doc]


def compose_with_twin(where: Path) -> list[Obj]:
    """The component added to the dev overlay, as docs/deploy.md shows it."""
    (ns,) = [o["metadata"]["name"] for o in objects(TWIN_OVERLAY) if o["kind"] == "Namespace"]
    return compose(where, TWIN_OVERLAY, "campaign", namespace=ns,
                   images=[{"name": "change6-twin", "newTag": "dev"}])


def campaign_pod_labels(objs: list[Obj]) -> list[Mapping[str, str]]:
    component = pod_of(by_command("worker")).labels["app.kubernetes.io/component"]
    return [o["spec"]["template"]["metadata"]["labels"] for o in objs
            if o["kind"] in ("Deployment", "Job")
            and o["spec"]["template"]["metadata"]["labels"].get(
                "app.kubernetes.io/component") == component]


def opens_dns_only(rule: Obj) -> bool:
    peers = rule.get("to", [])
    return (bool(peers) and all(selects(p.get("podSelector", {}), DNS.labels) for p in peers)
            and {q.get("port") for q in rule.get("ports", [])} == {DNS_PORT})


def only_denies_or_opens_dns(policy: Obj) -> bool:
    """A policy that adds no path but DNS to the pods it selects."""
    spec = policy["spec"]
    return not spec.get("ingress") and all(opens_dns_only(r) for r in spec.get("egress", []))


def test_the_component_composes_into_the_twin_and_keeps_its_own_paths(
        tmp_path: Path) -> None:
    objs = compose_with_twin(tmp_path / "k")
    validate_at = tmp_path / "all.yaml"
    validate_at.write_text(yaml.safe_dump_all(objs))
    validate(validate_at)
    ours = {p["metadata"]["name"] for p in of_kind(OVERLAY, "NetworkPolicy")}
    pods = campaign_pod_labels(objs)
    assert len(pods) == 3, "scheduler, workers and the Job"
    for labels in pods:
        assert labels.get("app.kubernetes.io/component") != "twin-service", labels
        for policy in (o for o in objs if o["kind"] == "NetworkPolicy"):
            if policy["metadata"]["name"] in ours or not selects(
                    policy["spec"]["podSelector"], labels):
                continue
            # The twin's default deny and DNS: they add nothing to a pod that
            # the campaign's own policies already isolate both ways.
            assert only_denies_or_opens_dns(policy), (policy["metadata"]["name"], labels)


# --- the commands and the scheduler's address ---------------------------------------------


def test_the_job_runs_the_campaign_cli_against_the_scheduler_service() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["scripts"]["twin"] == "services.cli.app:main", "`twin` is the CLI"
    run = command_line(job_container("run"))
    assert run[:3] == ["twin", "campaign", "run"]
    host, port = scheduler_address()
    service = named(OVERLAY, "Service", host)  # a name in the Job's namespace
    scheduler = by_command("scheduler")
    assert matches(service["spec"]["selector"], pod_of(scheduler).labels)
    for other in (by_command("worker"), the_job()):
        assert not matches(service["spec"]["selector"], pod_of(other).labels)
    (svc_port,) = [p for p in service["spec"]["ports"] if p["port"] == port]
    (container,) = pod_spec(scheduler)["containers"]
    assert container_port(container, svc_port["targetPort"]) == int(scheduler_params()["port"])
    # The results go to the volume, in a directory named after the campaign.
    out = option(run, "--out")
    mount = mount_of(job_container("run"), out)
    assert "persistentVolumeClaim" in volume(the_job(), mount["name"])
    assert Path(out).name == campaign().name


def test_the_report_follows_the_run_on_the_same_directory() -> None:
    spec = pod_spec(the_job())
    assert [c["name"] for c in spec["initContainers"]][-1] == "run", "run, then report"
    (report,) = spec["containers"]
    out = option(command_line(job_container("run")), "--out")
    assert command_line(report) == ["twin", "campaign", "report", out]
    assert mount_of(report, out)["name"] == mount_of(job_container("run"), out)["name"]
    assert spec["restartPolicy"] == "Never"
    claims = [v for d in (*of_kind(OVERLAY, "Deployment"), the_job())
              for v in pod_spec(d)["volumes"] if "persistentVolumeClaim" in v]
    (claim,) = claims  # ReadWriteOnce: only the Job's pod mounts it
    pvc = named(OVERLAY, "PersistentVolumeClaim", claim["persistentVolumeClaim"]["claimName"])
    assert pvc["spec"]["accessModes"] == ["ReadWriteOnce"]


def test_workers_point_at_the_same_scheduler_and_fly_one_case_at_a_time() -> None:
    params = worker_params()
    url = urlsplit(params["scheduler"])
    assert url.scheme == "tcp" and (url.hostname, url.port) == scheduler_address()
    assert params["nthreads"] == 1 and int(params["n_workers"]) == 1
    assert params["nanny"] is True
    (container,) = pod_spec(by_command("worker"))["containers"]
    # The ports the network policies name are the ones Dask listens on.
    assert int(params["worker_port"]) == container_port(container, "worker")
    assert int(params["nanny_port"]) == container_port(container, "nanny")
    http = int(params["dashboard_address"].rpartition(":")[2])
    assert http == container_port(container, "http")
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert container_port(container, container[probe]["httpGet"]["port"]) == http, probe
    # A whole CPU for the one thread, and Guaranteed QoS.
    resources = container["resources"]
    assert resources["requests"] == resources["limits"]
    assert quantity(resources["limits"]["cpu"]) == params["nthreads"]


def test_the_scheduler_listens_where_its_service_and_probes_say() -> None:
    params = scheduler_params()
    (container,) = pod_spec(by_command("scheduler"))["containers"]
    assert int(params["port"]) == container_port(container, "comm")
    http = int(params["dashboard_address"].rpartition(":")[2])
    assert http == container_port(container, "dashboard")
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert container_port(container, container[probe]["httpGet"]["port"]) == http, probe
        assert container[probe]["httpGet"]["path"] == "/health"  # Dask's own route
    assert by_command("scheduler")["spec"]["strategy"]["type"] == "Recreate"


def test_the_job_waits_for_the_same_scheduler_before_it_runs() -> None:
    spec = pod_spec(the_job())
    names = [c["name"] for c in spec["initContainers"]]
    (wait,) = [c for c in spec["initContainers"][:names.index("run")]
               if "distributed" in " ".join(c["command"])]
    host, port = scheduler_address()
    assert command_line(wait)[-1] == f"tcp://{host}:{port}"
    # Longer than the run's own wait, which it cannot retry once it has begun.
    timeout = re.search(r'timeout="(\d+)s"', " ".join(wait["command"]))
    assert timeout and int(timeout.group(1)) > RUN_CONNECT_TIMEOUT_S


def test_the_twin_cli_accepts_the_jobs_arguments(tmp_path: Path) -> None:
    """The Job's words, parsed by the twin's typer app; the campaign file is
    written where the parser (which checks that it exists) can see it."""
    path, text = campaign_text()
    local = tmp_path / Path(path).name
    local.write_text(text)
    for container in ("run", "report"):
        words = [local.as_posix() if w == path else w
                 for w in command_line(job_container(container))]
        params = parsed(twin_command(*words[1:3]), words[3:])
        if container == "run":
            host, port = scheduler_address()
            assert params["scheduler"] == f"tcp://{host}:{port}"
            assert params["file"] == local


def test_the_resume_component_resumes_the_same_campaign(tmp_path: Path) -> None:
    objs = compose(tmp_path / "k", OVERLAY, "campaign/resume")
    (job,) = [o for o in objs if o["kind"] == "Job"]
    spec = pod_spec(job)
    (step,) = [c for c in spec["initContainers"] if c["name"] == "run"]
    words = command_line(step, objs)
    assert words[:3] == ["twin", "campaign", "resume"]
    params = parsed(twin_command(*words[1:3]), words[3:])
    run = command_line(job_container("run"))
    assert params["directory"] == Path(option(run, "--out"))
    assert params["scheduler"] == option(run, "--scheduler")
    # Everything else is the Job it replaces: the same file (whose hash the
    # resume checks), volumes, the wait and the report.
    assert spec["volumes"] == pod_spec(the_job())["volumes"]
    assert [c for c in spec["initContainers"] if c["name"] != "run"] == [
        c for c in pod_spec(the_job())["initContainers"] if c["name"] != "run"]
    assert spec["containers"] == pod_spec(the_job())["containers"]


# --- the campaign file --------------------------------------------------------------------


def test_the_config_map_holds_a_campaign_that_names_dispersions() -> None:
    camp = campaign()  # raises CampaignError, naming the field, if the runner refuses it
    assert camp.cases > 0 and camp.dispersions
    for dispersion in camp.dispersions:
        vehicle, _name = split_path(dispersion.path)
        assert vehicle in SERVICE_NAMES, f"{dispersion.path}: no vehicle {vehicle}"
    # The NATS cross-check flies on a worker and writes into the campaign
    # directory (services/campaign/run.py): only with the results on the workers.
    workers_mount = [v for v in pod_spec(by_command("worker"))["volumes"]
                     if "persistentVolumeClaim" in v]
    assert camp.nats_check == 0 or workers_mount, "nats_check needs the results on the workers"


# --- hardening -------------------------------------------------------------------------------


def pod_workloads() -> list[Obj]:
    return [*of_kind(OVERLAY, "Deployment"), the_job()]


def containers() -> Iterator[tuple[str, Obj, Obj]]:
    for workload in pod_workloads():
        spec = pod_spec(workload)
        for container in spec.get("initContainers", []) + spec["containers"]:
            yield f"{workload['kind']}/{workload['metadata']['name']}", spec, container


def test_every_container_runs_non_root_read_only_without_capabilities() -> None:
    (user,) = [i.split()[1] for i in dockerfile_stages()[-1] if i.startswith("USER ")]
    image_uid = int(user.split(":")[0])
    seen = 0
    for where, spec, container in containers():
        seen += 1
        pod_sc, sc = spec.get("securityContext", {}), container.get("securityContext", {})
        assert sc.get("runAsNonRoot", pod_sc.get("runAsNonRoot")) is True, where
        assert sc.get("runAsUser", pod_sc.get("runAsUser", 0)) == image_uid, where
        assert sc.get("readOnlyRootFilesystem") is True, where
        assert sc.get("allowPrivilegeEscalation") is False, where
        assert sc.get("capabilities", {}).get("drop") == ["ALL"], where
        assert sc.get("seccompProfile", pod_sc.get("seccompProfile", {})).get(
            "type") == "RuntimeDefault", where
        assert spec.get("automountServiceAccountToken") is False, where
        tmp = mount_of(container, "/tmp/x")
        assert tmp["mountPath"] == "/tmp", f"{where}: a read-only root needs a writable /tmp"
        assert "emptyDir" in next(v for v in spec["volumes"] if v["name"] == tmp["name"])
        for what in ("cpu", "memory"):
            request = container["resources"]["requests"][what]
            assert quantity(request) <= quantity(container["resources"]["limits"][what]), where
    assert seen == 5, "scheduler, worker, the Job's wait, run and report"


# --- network policies ---------------------------------------------------------------------


def campaign_pods() -> dict[str, Pod]:
    return {"scheduler": pod_of(by_command("scheduler")),
            "worker": pod_of(by_command("worker")), "job": pod_of(the_job())}


def test_only_the_workers_and_the_job_reach_the_scheduler_and_only_its_comm_port() -> None:
    pods = campaign_pods()
    scheduler = pods["scheduler"]
    ns = scheduler.namespace
    others = {"stranger": Pod(ns, {"app.kubernetes.io/name": "something-else"}),
              "operator": Pod(ns, {"change6.twin/operator": "true"}),
              "twin service": Pod(ns, {"app.kubernetes.io/component": "twin-service"}),
              "prometheus": Pod("monitoring", {"app.kubernetes.io/name": "prometheus"}),
              "outsider": Pod("default", {})}
    comm = scheduler.ports["comm"]
    for who, peer in {**pods, **others}.items():
        for port in scheduler.ports.values():
            allowed = who in ("worker", "job") and port == comm
            assert connects(OVERLAY, peer, scheduler, port) == allowed, (who, port)
            # The scheduler's own policy alone, whatever the peer's egress allows.
            assert policy_allows(OVERLAY, "Ingress", scheduler, peer, port, "TCP",
                                 scheduler) == allowed, (who, port)


def test_the_scheduler_and_workers_reach_each_other_and_nothing_else_does() -> None:
    pods = campaign_pods()
    scheduler, worker, job = pods["scheduler"], pods["worker"], pods["job"]
    stranger = Pod(worker.namespace, {"app.kubernetes.io/name": "something-else"})
    for port_name in ("worker", "nanny"):
        assert connects(OVERLAY, scheduler, worker, worker.ports[port_name]), port_name
    assert connects(OVERLAY, worker, worker, worker.ports["worker"]), "worker to worker"
    assert not connects(OVERLAY, worker, worker, worker.ports["nanny"])
    for port in worker.ports.values():
        for peer in (job, stranger, Pod("default", {})):
            assert not connects(OVERLAY, peer, worker, port), (peer.labels, port)
    assert not connects(OVERLAY, scheduler, worker, worker.ports["http"])
    for name, pod in pods.items():
        assert connects(OVERLAY, pod, DNS, DNS_PORT, "UDP"), f"{name} cannot resolve names"
        # Nothing reaches the Job, and the campaign reaches nothing outside.
        assert not connects(OVERLAY, pod, job, 8786), name
        assert not connects(OVERLAY, pod, Pod("default", {}), 443), name
