"""The Secrets the Kubernetes manifests (deploy/k8s) mount, for ``twin k8s-secrets``.

One directory per namespace, kept out of git (``deploy/k8s/secrets/`` is
ignored): the state dir :func:`services.kernel.security.provision` fills, plus
a kustomization whose ``secretGenerator`` turns its files into Secrets::

    kustomization.yaml              the Secrets: ``kubectl apply -k <dir>``
    nats/auth.conf                  the cluster nats-server's operator mode (JWTs preloaded)
    pki/ nats-keys/ nats-creds/     provision's files; the CA key and the NATS seeds
                                    stay here and never go into the cluster

The Secrets, by the names and keys the manifests mount::

    <svc>-grpc-tls    kubernetes.io/tls  tls.crt tls.key ca.crt  the service's gRPC server
    <svc>-nats-tls    kubernetes.io/tls  tls.crt tls.key ca.crt  its NATS client certificate
    <svc>-nats-creds  Opaque             nats.creds              its NATS user in the mission
    nats-tls          kubernetes.io/tls  tls.crt tls.key ca.crt  nats-server: clients and routes
    nats-auth         Opaque             auth.conf               operator and account JWTs

The certificate Secrets have the shape cert-manager gives a Certificate's
Secret, so deploy/k8s/components/cert-manager can issue them instead; the NATS
creds and ``auth.conf`` still come from here (``certificates=False``).

A what-if fork (services/ground/fork.py) runs beside its parent, on the same
NATS, with its own mission id: ``twin k8s-secrets --fork-of PARENT`` writes
its Secrets into ``<dir>/forks/<fork>/``, a kustomization of their own, with
its creds signed by the key store of ``<dir>`` (the one the cluster's
``nats-auth`` trusts, left unchanged) and its ground's creds allowed to read
the parent's streams::

    <svc>-nats-creds-<fork>  Opaque             nats.creds              the fork's pods mount it
    client-operator-tls      kubernetes.io/tls  tls.crt tls.key ca.crt  the fork's Job presents it
                                                                        to the parent's ground

``client-operator-tls`` has cert-manager's name and shape: without
certificates (cert-manager issues it) it is not written.

The CCSDS gateway (deploy/k8s/components/gateway, overlays/ccsds) runs only
where an overlay adds it, so its Secrets are a kustomization of their own,
``<dir>/gateway/``, written every time beside the twin's (whose list stays the
six services' and NATS', which every overlay mounts). Its files are copies of
the ones ``provision`` made in ``<dir>`` (kustomize reads no file outside a
kustomization's directory)::

    gateway-grpc-tls    kubernetes.io/tls  tls.crt tls.key ca.crt  its health server
    gateway-nats-tls    kubernetes.io/tls  tls.crt tls.key ca.crt  its NATS client certificate
    gateway-nats-creds  Opaque             nats.creds              its NATS user `gateway`
    client-gateway-tls  kubernetes.io/tls  tls.crt tls.key ca.crt  its gRPC client certificate
                                                                   (role operator) for ground

Without certificates only ``gateway-nats-creds`` is written.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from services.kernel.errors import TwinError
from services.kernel.natsauth import (
    GATEWAY,
    IDENTITIES,
    SERVICES,
    JetStreamLimits,
    KeyStore,
    NatsAuth,
    check_mission,
)
from services.kernel.security import OPERATOR, StateLayout, provision

__all__ = ["AUTH_CONF", "CLUSTER_JETSTREAM", "FORKS_DIR", "GATEWAY_CLIENT_TLS", "GATEWAY_DIR",
           "OPAQUE", "OPERATOR_TLS", "TLS", "ForkSecretsError", "SecretFiles",
           "default_out_dir", "fork_creds_secret", "fork_out_dir", "fork_secret_files",
           "gateway_out_dir", "gateway_secret_files", "kustomization", "secret_files",
           "write_fork_secrets", "write_gateway_secrets", "write_secrets"]

TLS = "kubernetes.io/tls"
OPAQUE = "Opaque"
#: Where the cluster's operator-mode config goes, relative to the directory.
AUTH_CONF = Path("nats", "auth.conf")
#: No account limit of its own: on a cluster each overlay's nats.conf sizes
#: JetStream (max_memory_store, max_file_store) and the TWIN account is its only
#: user; a limit above the server's would keep a single server from enabling
#: JetStream for the account at all.
CLUSTER_JETSTREAM = JetStreamLimits(memory_bytes=-1, disk_bytes=-1)
#: Where a fork's Secrets go, relative to the namespace's directory.
FORKS_DIR = Path("forks")
#: The operator's gRPC client certificate, by cert-manager's name for it
#: (deploy/k8s/components/cert-manager/certificates.yaml).
OPERATOR_TLS = "client-operator-tls"
#: Where the CCSDS gateway's Secrets go, relative to the namespace's directory.
GATEWAY_DIR = Path("gateway")
#: The gateway's gRPC client certificate (role operator), named as the
#: operator's is: it calls ground's GroundStation.Uplink with it.
GATEWAY_CLIENT_TLS = f"client-{GATEWAY}-tls"


class ForkSecretsError(TwinError):
    """A fork's Secrets that cannot be written as asked; the message says what to do."""


@dataclass(frozen=True)
class SecretFiles:
    """One Secret: its name, type and ``(key, file)`` pairs, files relative to
    the directory."""

    name: str
    type: str
    files: tuple[tuple[str, Path], ...]


def default_out_dir(namespace: str) -> Path:
    return Path("deploy", "k8s", "secrets", namespace)


def _tls(name: str, stem: str) -> SecretFiles:
    pki = StateLayout(Path()).pki_dir
    return SecretFiles(name, TLS, (("tls.crt", pki / f"{stem}.crt"),
                                   ("tls.key", pki / f"{stem}.key"), ("ca.crt", pki / "ca.crt")))


def secret_files(mission: str, *, certificates: bool = True) -> list[SecretFiles]:
    """Every Secret the manifests mount; without ``certificates``, only those
    cert-manager cannot make (the NATS creds and operator config)."""
    layout = StateLayout(Path())
    out = [SecretFiles("nats-auth", OPAQUE, (("auth.conf", AUTH_CONF),))]
    if certificates:
        out.append(_tls("nats-tls", "nats-server"))
    for service in SERVICES:
        if certificates:
            out += [_tls(f"{service}-grpc-tls", f"server-{service}"),
                    _tls(f"{service}-nats-tls", f"nats-client-{service}")]
        out.append(SecretFiles(f"{service}-nats-creds", OPAQUE,
                               (("nats.creds", layout.creds(mission, service)),)))
    return out


def kustomization(secrets: list[SecretFiles], mission: str, namespace: str,
                  command: str) -> str:
    """The kustomization of ``secrets`` (values JSON-quoted: valid YAML)."""
    q = json.dumps
    lines = [f"# Written by `{command}` (services/cli/k8s_secrets.py).",
             "# Secret material: never commit this directory. Apply: kubectl apply -k <dir>",
             "apiVersion: kustomize.config.k8s.io/v1beta1",
             "kind: Kustomization",
             f"namespace: {q(namespace)}",
             "generatorOptions:",
             "  # The pods mount these names as they are, as they would cert-manager's.",
             "  disableNameSuffixHash: true",
             "  labels:",
             f"    app.kubernetes.io/part-of: {q('change6-twin')}",
             f"    change6.twin/mission: {q(mission)}",
             "secretGenerator:"]
    for secret in secrets:
        lines += [f"  - name: {q(secret.name)}", f"    type: {q(secret.type)}", "    files:"]
        lines += [f"      - {q(f'{key}={path.as_posix()}')}" for key, path in secret.files]
    return "\n".join([*lines, ""])


def write_secrets(out: Path, mission: str, namespace: str, *, certificates: bool = True,
                  command: str = "twin k8s-secrets") -> list[SecretFiles]:
    """Create (or reuse) the PKI and NATS keys in ``out``, mint each identity's
    creds for ``mission``, and write the cluster's NATS operator config and the
    kustomization; return the Secrets it lists. The CCSDS gateway's Secrets go
    into a kustomization of their own (:func:`write_gateway_secrets`)."""
    out.mkdir(mode=0o700, parents=True, exist_ok=True)
    layout = StateLayout(out)
    auth = NatsAuth(KeyStore(layout.keys_dir), CLUSTER_JETSTREAM)
    if certificates:  # the CA, every certificate, and the creds
        provision(out, mission, namespace=namespace)
    else:  # cert-manager issues the certificates: no CA here to confuse with its
        for identity in IDENTITIES:
            auth.write_creds(layout.creds(mission, identity), mission, identity)
    _write_private(out / AUTH_CONF, auth.server_config())
    secrets = secret_files(mission, certificates=certificates)
    _write_private(out / "kustomization.yaml", kustomization(secrets, mission, namespace, command))
    write_gateway_secrets(out, mission, namespace, certificates=certificates, command=command)
    return secrets


# --- the CCSDS gateway --------------------------------------------------------------------
def gateway_out_dir(out: Path) -> Path:
    return out / GATEWAY_DIR


def gateway_secret_files(mission: str, *, certificates: bool = True) -> list[SecretFiles]:
    """The Secrets deploy/k8s/components/gateway's pod mounts; without
    ``certificates``, only its NATS creds."""
    layout = StateLayout(Path())
    out: list[SecretFiles] = []
    if certificates:
        out += [_tls(f"{GATEWAY}-grpc-tls", f"server-{GATEWAY}"),
                _tls(f"{GATEWAY}-nats-tls", f"nats-client-{GATEWAY}"),
                _tls(GATEWAY_CLIENT_TLS, f"client-{GATEWAY}")]
    out.append(SecretFiles(f"{GATEWAY}-nats-creds", OPAQUE,
                           (("nats.creds", layout.creds(mission, GATEWAY)),)))
    return out


def write_gateway_secrets(out: Path, mission: str, namespace: str, *,
                          certificates: bool = True,
                          command: str = "twin k8s-secrets") -> tuple[Path, list[SecretFiles]]:
    """Copy the gateway's files from ``out`` (written by :func:`write_secrets`:
    its certificates and its creds for ``mission``) into ``out/gateway`` and
    write their kustomization; return the directory and the Secrets it lists."""
    secrets = gateway_secret_files(mission, certificates=certificates)
    where = gateway_out_dir(out)
    for secret in secrets:
        for _key, path in secret.files:
            _write_private(where / path, (out / path).read_text())
    _write_private(where / "kustomization.yaml",
                   kustomization(secrets, mission, namespace, command))
    return where, secrets


# --- a what-if fork ---------------------------------------------------------------------
def fork_creds_secret(service: str, mission: str) -> str:
    """A fork's NATS creds Secret: the parent's name and the fork's id, the name
    deploy/k8s/components/fork's replacements give the pods' volumes."""
    return f"{service}-nats-creds-{mission}"


def fork_out_dir(out: Path, mission: str) -> Path:
    return out / FORKS_DIR / mission


def fork_secret_files(mission: str, *, certificates: bool = True) -> list[SecretFiles]:
    """The Secrets a fork's pods mount beyond its parent's (which it shares: the
    certificates are per service, not per mission)."""
    layout = StateLayout(Path())
    out = [SecretFiles(fork_creds_secret(service, mission), OPAQUE,
                       (("nats.creds", layout.creds(mission, service)),))
           for service in SERVICES]
    if certificates:
        out.append(_tls(OPERATOR_TLS, f"client-{OPERATOR}"))
    return out


def _check_parent(parent_dir: Path, mission: str, parent: str, namespace: str,
                  certificates: bool) -> None:
    """``parent_dir`` holds the keys the cluster trusts and was written for ``parent``."""
    check_mission(mission)
    check_mission(parent)
    if mission == parent:
        raise ForkSecretsError(f"--mission {mission} and --fork-of {parent} are the same: "
                               "give the fork a mission id of its own")
    layout = StateLayout(parent_dir)
    missing = [stem for stem in KeyStore.KEYS if not (layout.keys_dir / f"{stem}.nk").is_file()]
    if missing:
        # A fresh key store would sign creds the cluster's nats-server rejects.
        raise ForkSecretsError(
            f"no NATS key store in {layout.keys_dir} (missing {', '.join(missing)}): run "
            f"`twin k8s-secrets --mission {parent} --namespace {namespace}` for the parent "
            "first, or give --out the directory it wrote")
    if not layout.creds(parent, "ground").is_file():
        found = sorted(p.name.removesuffix("-ground.creds")
                       for p in layout.creds_dir.glob("*-ground.creds"))
        raise ForkSecretsError(
            f"{parent_dir} was not written for mission {parent} (it has creds for "
            f"{', '.join(found) or 'no mission'}): --fork-of names the running mission whose "
            "Secrets are in --out")
    operator_cert = layout.pki_dir / f"client-{OPERATOR}.crt"
    if certificates and not operator_cert.is_file():
        raise ForkSecretsError(
            f"no {operator_cert}: the parent's Secrets were written with --creds-only "
            f"(cert-manager issues {OPERATOR_TLS}); give --creds-only here too")


def write_fork_secrets(out: Path, mission: str, parent: str, namespace: str, *,
                       certificates: bool = True,
                       command: str = "twin k8s-secrets") -> tuple[Path, list[SecretFiles]]:
    """Mint the creds of fork ``mission`` of ``parent`` with the key store in
    ``out`` (the parent's namespace directory, which it leaves unchanged) into
    ``out/forks/<mission>``, copy the operator's client certificate there, and
    write their kustomization; return the directory and the Secrets it lists."""
    _check_parent(out, mission, parent, namespace, certificates)
    parent_layout = StateLayout(out)
    where = fork_out_dir(out, mission)
    where.mkdir(mode=0o700, parents=True, exist_ok=True)
    layout = StateLayout(where)
    auth = NatsAuth(KeyStore(parent_layout.keys_dir), CLUSTER_JETSTREAM)
    for identity in IDENTITIES:  # the operator's and observer's too, to watch the fork
        auth.write_creds(layout.creds(mission, identity), mission, identity, parent=parent)
    if certificates:  # kustomize reads no file outside the kustomization's directory
        for name in ("ca.crt", f"client-{OPERATOR}.crt", f"client-{OPERATOR}.key"):
            _write_private(layout.pki_dir / name, (parent_layout.pki_dir / name).read_text())
    secrets = fork_secret_files(mission, certificates=certificates)
    _write_private(where / "kustomization.yaml",
                   kustomization(secrets, mission, namespace, command))
    return where, secrets


def _write_private(path: Path, text: str) -> None:
    """Write ``text`` readable by the owner only, replacing what was there."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    tmp.replace(path)
