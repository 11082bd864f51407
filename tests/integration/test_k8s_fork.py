"""Offline checks of a what-if fork on Kubernetes: deploy/k8s/components/fork,
used by deploy/k8s/overlays/fork beside the dev overlay's parent mission.

The fork overlay is rendered with the real ``kubectl kustomize`` and validated
with ``kubernetes-validate --strict``, alone and together with the dev overlay
in one kustomization (which kustomize refuses if any object of the fork has
the id of one of the parent's). From the rendered objects: the six services
build their config (``ServiceConfig.from_env``) from their pods' environment
as the kubelet gives it, the Job's command line (the kubelet's ``$(VAR)``
expansion, then FORK_CHANGE split as the Job splits it) is accepted by the
real `twin fork` parser, and the network policies of both overlays together
allow the fork's paths and no others. The Secrets come from running the real
``twin k8s-secrets`` for the parent and ``--fork-of`` for the fork; the
volumes the pods would see are written out from them, a real nats-server runs
on the dev overlay's rendered config, and the fork's ground connects with its
mounted identity and reads its record from the parent's log; the Job's
command runs for real against a port where no ground listens. No cluster:
the fork flying is tests/integration/test_fork.py's, with local processes.
"""

from __future__ import annotations

import os
import re
import shlex
import socket
import subprocess
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import nats
import orjson
import pytest
import typer.main
import yaml

from services.cli.app import app
from services.cli.fork_cli import EXIT_BAD_INPUT, fork_request
from services.cli.k8s_secrets import OPERATOR_TLS, fork_creds_secret
from services.ground import fork
from services.kernel.config import SERVICE_NAMES, ServiceConfig
from services.kernel.security import Security
from tests.integration.test_k8s_manifests import (
    K8S,
    KUBE_VALIDATE,
    KUBECTL,
    ROOT,
    Obj,
    Pod,
    config_map_env,
    container_port,
    matches,
    materialise_mounted_file,
    named,
    objects,
    of_kind,
    pod_spec,
    selects,
    twin_deployments,
)
from tests.integration.test_k8s_security import (
    PodNatsServer,
    create_streams,
    materialise,
    mounted_env,
    nats_config_dir,
    volume_data,
)

OVERLAY = "fork"
#: The overlay that flies the parent, in the namespace the fork joins.
PARENT_OVERLAY = "dev"
DNS = Pod("kube-system", {"k8s-app": "kube-dns"})
PROMETHEUS = Pod("monitoring", {"app.kubernetes.io/name": "prometheus"})
#: Wall seconds for a deadline (not a measure): something that should come at once.
WAIT_S = 10.0
#: Label values in the component that its replacements must have replaced.
PLACEHOLDERS = ("FORK-ID", "PARENT-ID")

_VAR = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)")


# --- the rendered fork ------------------------------------------------------------------


def the_job() -> Obj:
    (job,) = of_kind(OVERLAY, "Job")
    return job


def job_container() -> Obj:
    containers: list[Obj] = pod_spec(the_job())["containers"]
    (container,) = containers
    return container


def fork_config() -> dict[str, str]:
    """The ConfigMap twin-fork, as the Job reads it (its one envFrom source)."""
    (source,) = job_container()["envFrom"]
    data: dict[str, str] = named(OVERLAY, "ConfigMap", source["configMapRef"]["name"])["data"]
    return data


def fork_id() -> str:
    return fork_config()["TWIN_MISSION_ID"]


def parent_id() -> str:
    return fork_config()["TWIN_FORK_OF"]


def parent_mission() -> str:
    """The mission the dev overlay flies: what its services' TWIN_MISSION_ID says."""
    (container,) = pod_spec(twin_deployments(PARENT_OVERLAY)["ground"])["containers"]
    return config_map_env(PARENT_OVERLAY, container)["TWIN_MISSION_ID"]


def fork_services() -> dict[str, Obj]:
    """The fork's six Deployments by the service each runs."""
    out = {}
    for deployment in twin_deployments(OVERLAY).values():
        (container,) = pod_spec(deployment)["containers"]
        out[container["args"][0].removeprefix("services.")] = deployment
    return out


def pod_of(workload: Obj) -> Pod:
    template = workload["spec"]["template"]
    ports = {p["name"]: p["containerPort"]
             for c in template["spec"]["containers"] for p in c.get("ports", [])}
    return Pod(workload["metadata"]["namespace"], template["metadata"]["labels"], ports)


def expand(word: str, env: Mapping[str, str]) -> str:
    """``$(VAR)`` as the kubelet expands it in command and args; an undefined
    variable would be left as it is, which the pod would then run: refused."""

    def one(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        assert match.group(1) in env, f"{word!r} refers to an undefined {match.group(1)}"
        return env[match.group(1)]

    return _VAR.sub(one, word)


def job_env() -> dict[str, str]:
    return config_map_env(OVERLAY, job_container())


def job_argv() -> list[str]:
    """The `twin fork` arguments the Job's command hands the CLI: its args as
    the kubelet expands them, then FORK_CHANGE split as a shell would."""
    env = job_env()
    return [expand(a, env) for a in job_container()["args"]] + shlex.split(env["FORK_CHANGE"])


def fork_params(argv: list[str]) -> dict[str, Any]:
    """What the real `twin fork` parser makes of ``argv`` (nothing runs)."""
    command: Any = typer.main.get_command(app)
    fork_cmd = command.commands["fork"]
    try:
        context = fork_cmd.make_context("fork", list(argv))
    except Exception as exc:  # typer's copy of click's usage errors
        message = exc.format_message() if hasattr(exc, "format_message") else str(exc)
        pytest.fail(f"`twin fork` refuses {argv}: {message}")
    with context as ctx:
        return dict(ctx.params)


def option(argv: list[str], name: str) -> str:
    assert argv.count(name) == 1, f"{name} given {argv.count(name)} times in {argv}"
    return argv[argv.index(name) + 1]


def kustomize(directory: Path) -> list[Obj]:
    out = subprocess.run([str(KUBECTL), "kustomize", str(directory)], capture_output=True,
                         text=True, timeout=120, check=False)
    assert out.returncode == 0, f"kubectl kustomize {directory} failed:\n{out.stderr}"
    return [doc for doc in yaml.safe_load_all(out.stdout) if doc]


def relocated_overlay(where: Path, **changes: Any) -> Path:
    """A copy of the fork overlay at ``where``, its paths into deploy/k8s made
    to work from there, with ``changes`` to its kustomization."""
    where.mkdir(parents=True, exist_ok=True)
    source = K8S / "overlays" / OVERLAY
    spec = yaml.safe_load((source / "kustomization.yaml").read_text())
    up = Path(os.path.relpath(K8S, where))  # kustomize takes no absolute paths
    spec["resources"] = [str(up / Path(r).relative_to("../..")) for r in spec["resources"]]
    spec["components"] = [str(up / Path(c).relative_to("../..")) for c in spec["components"]]
    (where / "fork.env").write_text((source / "fork.env").read_text())
    (where / "kustomization.yaml").write_text(yaml.safe_dump({**spec, **changes}))
    return where


def together(where: Path, *overlays: Path) -> list[Obj]:
    """Overlays in one kustomization, as they would share a namespace."""
    where.mkdir(parents=True, exist_ok=True)
    (where / "kustomization.yaml").write_text(yaml.safe_dump({
        "apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization",
        "resources": [os.path.relpath(o, where) for o in overlays]}))
    return kustomize(where)


@pytest.fixture(scope="module")
def with_parent(tmp_path_factory: pytest.TempPathFactory) -> list[Obj]:
    return together(tmp_path_factory.mktemp("together"), K8S / "overlays" / PARENT_OVERLAY,
                    K8S / "overlays" / OVERLAY)


# --- rendering and schemas -------------------------------------------------------------


def test_the_fork_renders_into_its_parents_namespace_and_passes_strict_validation(
        with_parent: list[Obj], tmp_path: Path) -> None:
    (namespace,) = [o["metadata"]["name"] for o in objects(PARENT_OVERLAY)
                    if o["kind"] == "Namespace"]
    objs = objects(OVERLAY)
    # The namespace is the parent's: deleting the fork must not delete it.
    assert not [o for o in objs if o["kind"] == "Namespace"]
    for obj in objs:
        assert obj["metadata"].get("namespace") == namespace, obj["metadata"]["name"]
    for name, objs_to_check in (("fork", list(objs)), ("together", with_parent)):
        manifest = tmp_path / f"{name}.yaml"
        manifest.write_text(yaml.safe_dump_all(objs_to_check))
        out = subprocess.run([str(KUBE_VALIDATE), "--strict", "--quiet", str(manifest)],
                             capture_output=True, text=True, timeout=300, check=False)
        report = out.stdout + out.stderr
        assert out.returncode == 0, report
        assert not [line for line in report.splitlines() if line.startswith("WARN")], report


def test_no_placeholder_is_left_and_the_name_suffix_is_the_forks_id() -> None:
    text = yaml.safe_dump_all(list(objects(OVERLAY)))
    for placeholder in PLACEHOLDERS:
        assert placeholder not in text, f"a replacement in components/fork missed {placeholder}"
    spec = yaml.safe_load((K8S / "overlays" / OVERLAY / "kustomization.yaml").read_text())
    assert spec["nameSuffix"] == f"-{fork_id()}", "keep nameSuffix equal to '-' + the fork's id"
    # The dev overlay flies the parent the fork names.
    assert parent_id() == parent_mission() != fork_id()


# --- the six services ------------------------------------------------------------------


def fork_service_config(service: str, tmp_path: Path) -> ServiceConfig:
    """The config the fork's service builds in its pod, from the pod's environment."""
    spec = pod_spec(fork_services()[service])
    (container,) = spec["containers"]
    env = config_map_env(OVERLAY, container)
    plan = env.get("TWIN_FLIGHT_PLAN")
    if plan:  # the config checks that the file exists: written out where the pod has it
        tmp_path.mkdir(parents=True, exist_ok=True)
        env["TWIN_FLIGHT_PLAN"] = str(materialise_mounted_file(OVERLAY, spec, plan, tmp_path))
    return ServiceConfig.from_env(service, env)


@pytest.mark.parametrize("service", SERVICE_NAMES)
def test_each_service_flies_the_forks_mission_id_as_a_fork_of_the_parent(
        service: str, tmp_path: Path) -> None:
    assert set(fork_services()) == set(SERVICE_NAMES)
    deployment = fork_services()[service]
    cfg = fork_service_config(service, tmp_path)
    assert cfg.mission_id == fork_id()
    assert cfg.fork_of == parent_id()
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    # What dashboards filter by: the dev Prometheus copies it onto up and
    # process_*, and the twin's own metrics carry the same mission id.
    assert labels["change6.twin/mission"] == cfg.mission_id
    assert labels["change6.twin/fork-of"] == cfg.fork_of
    assert deployment["metadata"]["labels"]["change6.twin/mission"] == cfg.mission_id
    # One pod per service, as the parent's: the clock waits for one ack each.
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"]["type"] == "Recreate"


def test_the_fork_runs_no_nats_and_uses_its_parents(tmp_path: Path) -> None:
    assert not of_kind(OVERLAY, "StatefulSet")
    fork_names = {o["metadata"]["name"] for o in objects(OVERLAY)}
    assert "nats" not in fork_names and not any(n.startswith("nats-") for n in fork_names)
    parent_nats = pod_of(named(PARENT_OVERLAY, "StatefulSet", "nats"))
    for service in SERVICE_NAMES:
        for url in fork_service_config(service, tmp_path / service).nats_urls:
            host = url.split("//")[1].split(":")[0].split(".")[0]
            nats_service = named(PARENT_OVERLAY, "Service", host)
            assert matches(nats_service["spec"]["selector"], parent_nats.labels), url


def test_the_forks_names_and_pods_are_its_own(with_parent: list[Obj]) -> None:
    parent_ids = {(o["kind"], o["metadata"]["name"]) for o in objects(PARENT_OVERLAY)}
    fork_ids = {(o["kind"], o["metadata"]["name"]) for o in objects(OVERLAY)}
    assert not parent_ids & fork_ids  # kustomize also refused them in with_parent
    assert len(with_parent) == len(parent_ids) + len(fork_ids)
    for obj in objects(OVERLAY):
        assert obj["metadata"]["name"].endswith(f"-{fork_id()}") or obj["kind"] == "ConfigMap"
        assert obj["metadata"]["labels"]["change6.twin/mission"] == fork_id(), obj["metadata"]
    parent_pods = [pod_of(d) for d in of_kind(PARENT_OVERLAY, "Deployment")]
    fork_pods = [pod_of(d) for d in of_kind(OVERLAY, "Deployment")] + [pod_of(the_job())]
    # A Service of either selects no pod of the other: the parent's gRPC stays
    # on the parent's pods, and the fork's on the fork's.
    for services, others in ((of_kind(PARENT_OVERLAY, "Service"), fork_pods),
                             (of_kind(OVERLAY, "Service"), parent_pods)):
        for service in services:
            for pod in others:
                assert not matches(service["spec"].get("selector", {"-": "-"}), pod.labels), (
                    service["metadata"]["name"], pod.labels)
    for service in of_kind(OVERLAY, "Service"):
        (selected,) = [d for d in of_kind(OVERLAY, "Deployment")
                       if matches(service["spec"]["selector"], pod_of(d).labels)]
        assert selected["metadata"]["name"] == service["metadata"]["name"]


def test_a_second_fork_beside_the_first_collides_with_nothing(tmp_path: Path) -> None:
    other = "ce6-other"
    second = relocated_overlay(tmp_path / "second", nameSuffix=f"-{other}")
    env = (second / "fork.env").read_text()
    (second / "fork.env").write_text(re.sub(r"^TWIN_MISSION_ID=.*$", f"TWIN_MISSION_ID={other}",
                                            env, flags=re.M))
    objs = together(tmp_path / "all", K8S / "overlays" / PARENT_OVERLAY,
                    K8S / "overlays" / OVERLAY, second)
    missions = {o["spec"]["template"]["metadata"]["labels"].get("change6.twin/mission")
                for o in objs if o["kind"] in ("Deployment", "Job")}
    assert missions >= {parent_mission(), fork_id(), other}
    pods = [o for o in objs if o["kind"] in ("Deployment", "StatefulSet", "Job")]
    for service in (o for o in objs if o["kind"] == "Service" and "selector" in o["spec"]):
        chosen = [p for p in pods if matches(service["spec"]["selector"],
                                             p["spec"]["template"]["metadata"]["labels"])]
        assert len(chosen) == 1, service["metadata"]["name"]


def test_the_forks_ground_may_wait_for_its_record_before_the_kubelet_gives_up() -> None:
    def budget_s(deployment: Obj) -> int:
        (container,) = pod_spec(deployment)["containers"]
        probe = container["startupProbe"]
        return int(probe["periodSeconds"]) * int(probe["failureThreshold"])

    # Health is SERVING only after the record and the branch commit; the
    # parent's start-up allowance (imports, first NATS connection) comes on top.
    parent_budget_s = budget_s(twin_deployments(PARENT_OVERLAY)["ground"])
    assert budget_s(fork_services()["ground"]) >= fork.RECORD_WAIT_S + parent_budget_s


def test_every_fork_container_runs_non_root_read_only_with_bounded_resources() -> None:
    for workload in [*of_kind(OVERLAY, "Deployment"), the_job()]:
        spec = pod_spec(workload)
        for container in spec["containers"]:
            where = f"{workload['kind']}/{workload['metadata']['name']}"
            pod_sc, sc = spec["securityContext"], container["securityContext"]
            assert pod_sc["runAsNonRoot"] is True and pod_sc["runAsUser"] > 0, where
            assert pod_sc["seccompProfile"]["type"] == "RuntimeDefault", where
            assert sc["readOnlyRootFilesystem"] is True, where
            assert sc["allowPrivilegeEscalation"] is False, where
            assert sc["capabilities"]["drop"] == ["ALL"], where
            assert spec["automountServiceAccountToken"] is False, where
            for what in ("cpu", "memory"):
                assert container["resources"]["requests"][what], where
                assert container["resources"]["limits"][what], where
            mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
            volumes = {v["name"]: v for v in spec["volumes"]}
            assert "emptyDir" in volumes[mounts["/tmp"]], where


# --- the Job --------------------------------------------------------------------------


def test_the_job_asks_the_parents_ground_for_the_fork_of_the_config_map() -> None:
    argv = job_argv()
    params = fork_params(argv)
    assert params["parent"] == parent_id() and params["child"] == fork_id()
    assert params["request_only"] is True
    assert params["at"] == fork_config()["FORK_AT"]
    # The change is what `twin fork` itself would send (its own parsers).
    request = fork_request(params["child"], params["at"], params["command"] or [],
                           params["fault"] or [], params["delay"] or [], params["plan"],
                           params["reseed"])
    assert request.mission == fork_id()
    plan_ids = {i["id"] for i in orjson.loads(
        (K8S / "base" / "flight-plan" / "nominal.json").read_bytes())["items"]}
    assert set(request.delays_s) <= plan_ids, "FORK_CHANGE delays an item the plan lacks"
    # --ground names the parent's ground Service, on the port its pod serves gRPC.
    host, _, port = option(argv, "--ground").rpartition(":")
    service = named(PARENT_OVERLAY, "Service", host)
    ground = pod_of(twin_deployments(PARENT_OVERLAY)["ground"])
    assert matches(service["spec"]["selector"], ground.labels)
    assert ground.labels["change6.twin/mission"] == parent_id()
    (svc_port,) = [p for p in service["spec"]["ports"] if p["port"] == int(port)]
    (parent_container,) = pod_spec(twin_deployments(PARENT_OVERLAY)["ground"])["containers"]
    assert container_port(parent_container, svc_port["targetPort"]) == int(port)
    # --pki-dir is the operator's certificate volume, in the layout it reads.
    pki = option(argv, "--pki-dir")
    (mount,) = [m for m in job_container()["volumeMounts"] if m["mountPath"] == pki]
    (volume,) = [v for v in pod_spec(the_job())["volumes"] if v["name"] == mount["name"]]
    (source,) = volume["projected"]["sources"]
    assert source["secret"]["name"] == OPERATOR_TLS
    assert {i["path"] for i in source["secret"]["items"]} == {
        "ca.crt", "client-operator.crt", "client-operator.key"}


def test_the_job_retries_failures_but_not_refusals() -> None:
    spec = the_job()["spec"]
    assert spec["template"]["spec"]["restartPolicy"] == "Never"
    assert spec["backoffLimit"] >= 1
    (rule,) = spec["podFailurePolicy"]["rules"]
    assert rule["action"] == "FailJob"
    assert rule["onExitCodes"]["containerName"] == job_container()["name"]
    assert rule["onExitCodes"]["operator"] == "In"
    assert rule["onExitCodes"]["values"] == [EXIT_BAD_INPUT]
    assert "ttlSecondsAfterFinished" not in spec  # else the next apply asks again


def test_a_plan_config_map_in_the_overlay_reaches_the_job(tmp_path: Path) -> None:
    where = relocated_overlay(tmp_path / "with-plan")
    (where / "plan.json").write_text((K8S / "base" / "flight-plan" / "nominal.json").read_text())
    spec = yaml.safe_load((where / "kustomization.yaml").read_text())
    spec["configMapGenerator"].append({"name": "twin-fork-plan", "files": ["plan.json"]})
    (where / "kustomization.yaml").write_text(yaml.safe_dump(spec))
    objs = kustomize(where)
    (job,) = [o for o in objs if o["kind"] == "Job"]
    (volume,) = [v for v in pod_spec(job)["volumes"] if v["name"] == "fork-plan"]
    plan_maps = {o["metadata"]["name"]: o for o in objs if o["kind"] == "ConfigMap"}
    assert "plan.json" in plan_maps[volume["configMap"]["name"]]["data"]


# --- the Secrets ------------------------------------------------------------------------


def secrets_command(out: Path, *extra: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "services.cli.app", "k8s-secrets", "--namespace",
         objects(OVERLAY)[0]["metadata"]["namespace"], "--out", str(out), *extra],
        capture_output=True, text=True, timeout=120, cwd=ROOT, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


@pytest.fixture(scope="module")
def secrets(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[Obj]]:
    """The Secrets of the parent and of the fork, as `twin k8s-secrets` writes them."""
    out = tmp_path_factory.mktemp("secrets") / "twin-dev"
    secrets_command(out, "--mission", parent_id())
    said = secrets_command(out, "--mission", fork_id(), "--fork-of", parent_id())
    fork_dir = out / "forks" / fork_id()
    assert f"kubectl apply -k {fork_dir}" in said
    return {"parent": kustomize(out), "fork": kustomize(fork_dir)}


def secret_sources(workload: Obj) -> Iterable[Obj]:
    for volume in pod_spec(workload)["volumes"]:
        for source in volume.get("projected", {}).get("sources", []):
            if "secret" in source:
                yield source["secret"]


def test_the_pods_mount_the_parents_certificates_and_the_forks_creds(
        secrets: dict[str, list[Obj]]) -> None:
    written = {kind: {o["metadata"]["name"]: o for o in objs} for kind, objs in secrets.items()}
    creds = {fork_creds_secret(s, fork_id()) for s in SERVICE_NAMES}
    assert set(written["fork"]) == creds | {OPERATOR_TLS}
    for service, deployment in fork_services().items():
        names = set()
        for source in secret_sources(deployment):
            name = source["name"]
            names.add(name)
            secret = written["fork"].get(name) or written["parent"].get(name)
            assert secret is not None, f"{service} mounts {name}, which no command writes"
            for item in source.get("items", []):
                assert item["key"] in secret["data"], (name, item["key"])
        # Its own NATS user, never the parent's: the certificates it shares.
        assert fork_creds_secret(service, fork_id()) in names
        assert f"{service}-nats-creds" not in names
        assert {f"{service}-grpc-tls", f"{service}-nats-tls"} <= names
    (job_secret,) = secret_sources(the_job())
    assert job_secret["name"] in written["fork"]


async def test_the_forks_ground_reads_its_record_on_the_parents_nats_with_its_identity(
        tmp_path: Path, secrets: dict[str, list[Obj]]) -> None:
    """nats-server on the dev overlay's rendered config and the parent's
    Secrets; the parent's ground makes its streams and writes a fork record
    (what the Fork call does), the fork's ground, with the volumes its pod
    mounts, reads it back: the cluster's NATS trusts the fork's creds."""
    conf = nats_config_dir(list(objects(PARENT_OVERLAY)), secrets["parent"], tmp_path)
    all_secrets = secrets["parent"] + secrets["fork"]
    parent_env = mounted_env(PARENT_OVERLAY, "ground", secrets["parent"], tmp_path / "parent")
    fork_env = mounted_env(OVERLAY, fork_services()["ground"]["metadata"]["name"], all_secrets,
                           tmp_path / "fork")
    parent, child = parent_env["TWIN_MISSION_ID"], fork_env["TWIN_MISSION_ID"]
    assert (child, fork_env["TWIN_FORK_OF"]) == (fork_id(), parent)

    def options(env: Mapping[str, str], mission: str) -> dict[str, Any]:
        security = Security(pki_dir=Path(env["TWIN_PKI_DIR"]),
                            nats_creds=Path(env["TWIN_NATS_CREDS"]))
        return security.nats_options(mission, "ground")

    with PodNatsServer(tmp_path / "nats", conf, {"POD_NAME": "nats-0"}) as server:
        await create_streams(server.url, parent, options(parent_env, parent))
        await create_streams(server.url, child, options(fork_env, child))  # its own, too
        errors: list[str] = []

        async def on_error(exc: Exception) -> None:
            errors.append(str(exc))

        parent_nc = await nats.connect(server.url, allow_reconnect=False, error_cb=on_error,
                                       **options(parent_env, parent))
        fork_nc = await nats.connect(server.url, allow_reconnect=False, error_cb=on_error,
                                     **options(fork_env, child))
        try:
            spec = {"parent": parent, "child": child, "marker": "k8s"}
            await fork.write_record(parent_nc.jetstream(), parent, spec)
            got = await fork.wait_for_record(fork_nc.jetstream(), parent, child,
                                             timeout_s=WAIT_S)
        finally:
            await fork_nc.close()
            await parent_nc.close()
    assert got == spec
    assert not errors, errors


def free_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run_the_jobs_command(secrets: dict[str, list[Obj]], tmp: Path,
                         **env_changes: str) -> subprocess.CompletedProcess[str]:
    """The Job's container command, run for real: its environment from the
    ConfigMap, its operator volume written out from the Secrets and its path
    moved there, the parent's ground a loopback port where nothing listens."""
    spec = pod_spec(the_job())
    container = job_container()
    (mount,) = [m for m in container["volumeMounts"] if m["name"] == "operator"]
    (volume,) = [v for v in spec["volumes"] if v["name"] == "operator"]
    local = tmp / "operator"
    materialise(volume, volume_data(list(objects(OVERLAY)), secrets["fork"]), local)
    env = {**job_env(), "FORK_PARENT_GROUND": f"127.0.0.1:{free_port()}", **env_changes}
    args = [str(local) if a == mount["mountPath"] else expand(a, env) for a in container["args"]]
    assert container["command"][:2] == ["python", "-c"]
    return subprocess.run([sys.executable, "-c", container["command"][2], *args],
                          env={**os.environ, **env}, cwd=ROOT, capture_output=True, text=True,
                          timeout=120, check=False)


def test_the_jobs_command_runs_twin_fork_and_exits_as_the_job_expects(
        tmp_path: Path, secrets: dict[str, list[Obj]]) -> None:
    # No ground there: a failure, which the Job tries again (exit 1).
    done = run_the_jobs_command(secrets, tmp_path / "a")
    assert done.returncode == 1, done.stderr
    assert "UNAVAILABLE" in done.stderr and "127.0.0.1" in done.stderr
    # A change that does not parse: a refusal, which the Job does not retry.
    for bad in ({"FORK_CHANGE": '--command "orbiter orbit_adjust'},
                {"FORK_CHANGE": "--delay tcm3"}, {"FORK_AT": "soon!"}):
        done = run_the_jobs_command(secrets, tmp_path / "b", **bad)
        assert done.returncode == EXIT_BAD_INPUT, (bad, done.stderr)
        assert "error:" in done.stderr


# --- network policies --------------------------------------------------------------------


def namespace_labels(objs: Iterable[Obj], namespace: str) -> dict[str, str]:
    labels = {"kubernetes.io/metadata.name": namespace}
    for ns in objs:
        if ns["kind"] == "Namespace" and ns["metadata"]["name"] == namespace:
            labels.update(ns["metadata"].get("labels", {}))
    return labels


def allows(objs: list[Obj], direction: str, subject: Pod, peer: Pod, port: int,
           protocol: str, target: Pod) -> bool:
    """Whether the policies of ``objs`` selecting ``subject`` let this through
    (as test_k8s_manifests.policy_allows, over any set of objects)."""
    key, peers_key = ("ingress", "from") if direction == "Ingress" else ("egress", "to")
    applicable = [p for p in objs if p["kind"] == "NetworkPolicy"
                  and p["metadata"]["namespace"] == subject.namespace
                  and selects(p["spec"]["podSelector"], subject.labels)
                  and direction in p["spec"].get("policyTypes", ["Ingress"])]
    if not applicable:
        return True

    def peer_ok(q: Obj) -> bool:
        ns_selector = q.get("namespaceSelector")
        in_ns = (peer.namespace == subject.namespace if ns_selector is None
                 else selects(ns_selector, namespace_labels(objs, peer.namespace)))
        return "ipBlock" not in q and in_ns and selects(q.get("podSelector", {}), peer.labels)

    def port_ok(rule: Obj) -> bool:
        return not rule.get("ports") or any(
            p.get("protocol", "TCP") == protocol
            and (target.ports.get(p["port"]) if isinstance(p.get("port"), str)
                 else p.get("port")) in (None, port)
            for p in rule["ports"])

    return any((not rule.get(peers_key) or any(peer_ok(q) for q in rule[peers_key]))
               and port_ok(rule)
               for policy in applicable for rule in policy["spec"].get(key, []))


def connects(objs: list[Obj], src: Pod, dst: Pod, port: int, protocol: str = "TCP") -> bool:
    return (allows(objs, "Egress", src, dst, port, protocol, dst)
            and allows(objs, "Ingress", dst, src, port, protocol, dst))


def test_network_policies_open_the_forks_paths_and_no_others(with_parent: list[Obj]) -> None:
    ns = the_job()["metadata"]["namespace"]
    nats_pod = pod_of(named(PARENT_OVERLAY, "StatefulSet", "nats"))
    parent = {n: pod_of(d) for n, d in twin_deployments(PARENT_OVERLAY).items()}
    forked = {n: pod_of(d) for n, d in fork_services().items()}
    job = pod_of(the_job())
    operator = Pod(ns, {"change6.twin/operator": "true"})
    stranger = Pod(ns, {"app.kubernetes.io/name": "something-else"})
    objs = with_parent
    for name, pod in forked.items():
        assert connects(objs, pod, nats_pod, 4222), f"the fork's {name} cannot reach NATS"
        assert connects(objs, pod, DNS, 53, "UDP"), f"the fork's {name} cannot resolve names"
        assert connects(objs, PROMETHEUS, pod, 9090), f"Prometheus cannot scrape {name}"
        assert connects(objs, operator, pod, 50051), f"operators cannot reach {name}"
        assert not connects(objs, stranger, pod, 50051)
        # Over NATS only: not to the parent's services, nor its own.
        for other in (*parent.values(), *forked.values()):
            assert not connects(objs, pod, other, 50051)
    assert connects(objs, job, parent["ground"], 50051), "the Job cannot reach ground's gRPC"
    assert connects(objs, job, DNS, 53, "UDP")
    assert not connects(objs, job, forked["ground"], 50051)
    assert not connects(objs, job, parent["orbiter"], 50051)
    assert not connects(objs, job, nats_pod, 4222)
    for someone in (stranger, operator, parent["ground"], nats_pod):
        assert not connects(objs, someone, job, 50051)
    # The path into the parent's ground is the Job's, not anyone's.
    assert not connects(objs, stranger, parent["ground"], 50051)
    assert not connects(objs, parent["orbiter"], parent["ground"], 50051)
    # The parent keeps its own paths with the fork beside it.
    for name, pod in parent.items():
        assert connects(objs, pod, nats_pod, 4222), f"the parent's {name} lost NATS"


def test_the_forks_own_policies_select_only_its_pods() -> None:
    parent_pods = [pod_of(d) for d in of_kind(PARENT_OVERLAY, "Deployment")
                   if d["metadata"]["name"] != "ground"]
    for policy in of_kind(OVERLAY, "NetworkPolicy"):
        for pod in parent_pods:
            assert not selects(policy["spec"]["podSelector"], pod.labels), (
                policy["metadata"]["name"], pod.labels)
