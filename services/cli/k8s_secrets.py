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
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from services.kernel.natsauth import IDENTITIES, SERVICES, JetStreamLimits, KeyStore, NatsAuth
from services.kernel.security import StateLayout, provision

__all__ = ["AUTH_CONF", "CLUSTER_JETSTREAM", "OPAQUE", "TLS", "SecretFiles",
           "default_out_dir", "kustomization", "secret_files", "write_secrets"]

TLS = "kubernetes.io/tls"
OPAQUE = "Opaque"
#: Where the cluster's operator-mode config goes, relative to the directory.
AUTH_CONF = Path("nats", "auth.conf")
#: No account limit of its own: on a cluster each overlay's nats.conf sizes
#: JetStream (max_memory_store, max_file_store) and the TWIN account is its only
#: user; a limit above the server's would keep a single server from enabling
#: JetStream for the account at all.
CLUSTER_JETSTREAM = JetStreamLimits(memory_bytes=-1, disk_bytes=-1)


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
    kustomization; return the Secrets it lists."""
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
    return secrets


def _write_private(path: Path, text: str) -> None:
    """Write ``text`` readable by the owner only, replacing what was there."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    tmp.replace(path)
