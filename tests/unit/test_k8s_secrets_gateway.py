"""`twin k8s-secrets`: the CCSDS gateway's Secrets, a kustomization of their
own in ``<dir>/gateway/`` (services/cli/k8s_secrets.py).

The real code writes a namespace's directory, as on a cluster; the files are
read back: certificates parsed, the NATS user JWT verified. That the gateway's
pod mounts these names, and that a nats-server on the rendered config takes
the creds, is tests/integration/test_k8s_gateway.py's.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from services.cli.k8s_secrets import (
    GATEWAY_CLIENT_TLS,
    GATEWAY_DIR,
    OPAQUE,
    TLS,
    gateway_out_dir,
    secret_files,
    write_secrets,
)
from services.kernel.natsauth import GATEWAY, KeyStore, decode_jwt, permissions
from services.kernel.pki import role_from_uris
from services.kernel.security import StateLayout

MISSION, NAMESPACE = "ce6", "twin-ccsds"
_JWT = re.compile(r"-----BEGIN NATS USER JWT-----\n(\S+)\n")
#: The four Secrets deploy/k8s/components/gateway/gateway.yaml mounts.
GATEWAY_SECRETS = {"gateway-grpc-tls": TLS, "gateway-nats-tls": TLS,
                   "gateway-nats-creds": OPAQUE, GATEWAY_CLIENT_TLS: TLS}


def generator(directory: Path) -> dict[str, dict[str, object]]:
    """The kustomization's secretGenerator by Secret name: type, and key -> file."""
    spec = yaml.safe_load((directory / "kustomization.yaml").read_text())
    out: dict[str, dict[str, object]] = {}
    for entry in spec["secretGenerator"]:
        files = dict(f.split("=", 1) for f in entry["files"])
        out[entry["name"]] = {"type": entry["type"], "files": files}
    return out


def certificate(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


@pytest.fixture
def out(tmp_path: Path) -> Path:
    where = tmp_path / NAMESPACE
    write_secrets(where, MISSION, NAMESPACE)
    return where


def test_the_gateways_secrets_are_a_kustomization_of_their_own(out: Path) -> None:
    where = gateway_out_dir(out)
    assert where == out / GATEWAY_DIR == out / "gateway"
    spec = yaml.safe_load((where / "kustomization.yaml").read_text())
    assert spec["namespace"] == NAMESPACE
    assert spec["generatorOptions"]["disableNameSuffixHash"] is True
    assert spec["generatorOptions"]["labels"]["change6.twin/mission"] == MISSION
    secrets = generator(where)
    assert {name: s["type"] for name, s in secrets.items()} == GATEWAY_SECRETS
    for name, secret in secrets.items():
        files = secret["files"]
        assert isinstance(files, dict)
        for key, path in files.items():
            # Inside the directory (kustomize reads nothing outside it), and
            # the very file provision made for the twin's kustomization.
            assert not Path(path).is_absolute() and ".." not in Path(path).parts, (name, key)
            assert (where / path).read_bytes() == (out / path).read_bytes(), (name, key)
            assert (where / path).stat().st_mode & 0o077 == 0, f"{path} readable by others"
        if secret["type"] == TLS:
            assert set(files) == {"tls.crt", "tls.key", "ca.crt"}


def test_the_twins_own_kustomization_is_unchanged(out: Path) -> None:
    """Every overlay mounts what the twin's kustomization lists, and nothing
    more: the gateway's names are not in it."""
    names = set(generator(out))
    assert names == {s.name for s in secret_files(MISSION)}
    assert not names & set(GATEWAY_SECRETS)


def test_the_certificates_are_the_gateways_with_the_roles_it_needs(out: Path) -> None:
    where = gateway_out_dir(out)
    files = {name: s["files"] for name, s in generator(where).items()}

    def cert(secret: str) -> x509.Certificate:
        paths = files[secret]
        assert isinstance(paths, dict)
        return certificate(where / paths["tls.crt"])

    def cn(c: x509.Certificate) -> object:
        return c.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value

    def usages(c: x509.Certificate) -> set[x509.ObjectIdentifier]:
        return set(c.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)

    def sans(c: x509.Certificate) -> x509.SubjectAlternativeName:
        return c.extensions.get_extension_for_class(x509.SubjectAlternativeName).value

    server = cert("gateway-grpc-tls")
    assert cn(server) == GATEWAY and ExtendedKeyUsageOID.SERVER_AUTH in usages(server)
    # Its probe asks it on loopback; in the cluster it is the Service's name.
    dns = set(sans(server).get_values_for_type(x509.DNSName))
    assert {"localhost", GATEWAY, f"{GATEWAY}.{NAMESPACE}.svc"} <= dns
    client = cert(GATEWAY_CLIENT_TLS)
    assert cn(client) == GATEWAY and ExtendedKeyUsageOID.CLIENT_AUTH in usages(client)
    uris = sans(client).get_values_for_type(x509.UniformResourceIdentifier)
    # Ground's Uplink wants the operator role.
    assert role_from_uris(uris) == "operator", uris
    nats_client = cert("gateway-nats-tls")
    assert ExtendedKeyUsageOID.CLIENT_AUTH in usages(nats_client)
    ca = certificate(out / "pki" / "ca.crt")
    for c in (server, client, nats_client):
        c.verify_directly_issued_by(ca)  # raises if the twin's CA did not sign it


def test_the_creds_are_the_gateways_nats_user_signed_by_the_clusters_keys(out: Path) -> None:
    where = gateway_out_dir(out)
    paths = generator(where)["gateway-nats-creds"]["files"]
    assert isinstance(paths, dict)
    match = _JWT.search((where / paths["nats.creds"]).read_text())
    assert match, "no user JWT in the gateway's creds"
    claims = decode_jwt(match.group(1))
    assert claims["iss"] == KeyStore(StateLayout(out).keys_dir).account_signing.public_key
    assert claims["name"] == f"{MISSION}-{GATEWAY}"
    expected = permissions(MISSION, GATEWAY)
    nats_claims = claims["nats"]
    assert isinstance(nats_claims, dict)
    # What natsauth says the gateway may do (subscribe to the tick, dl.*,
    # evt.*; publish nothing), as it writes it into every user JWT.
    assert {k: nats_claims[k] for k in ("pub", "sub")} == expected.to_claims()
    assert nats_claims["sub"] == {"allow": list(expected.subscribe)}
    assert not expected.publish


def test_creds_only_writes_the_gateways_creds_and_no_certificate(tmp_path: Path) -> None:
    """With cert-manager issuing the certificates (--creds-only)."""
    out = tmp_path / NAMESPACE
    write_secrets(out, MISSION, NAMESPACE, certificates=False)
    where = gateway_out_dir(out)
    assert set(generator(where)) == {"gateway-nats-creds"}
    assert not (where / "pki").exists() and not (out / "pki").exists()


def test_a_second_run_keeps_the_ca_and_rewrites_the_gateways_copies(out: Path) -> None:
    where = gateway_out_dir(out)
    ca = (out / "pki" / "ca.crt").read_bytes()
    creds = where / StateLayout(Path()).creds(MISSION, GATEWAY)
    first = creds.read_text()
    write_secrets(out, MISSION, NAMESPACE)
    assert (where / "pki" / "ca.crt").read_bytes() == ca
    # Fresh creds, as for every identity, copied again.
    assert creds.read_text() != first
    assert creds.read_bytes() == (out / StateLayout(Path()).creds(MISSION, GATEWAY)).read_bytes()
