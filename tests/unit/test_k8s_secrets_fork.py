"""`twin k8s-secrets --fork-of`: a what-if fork's Secrets, minted with the key
store of its parent's namespace directory (services/cli/k8s_secrets.py).

The parent's directory is written by the real code first, as on a cluster;
the fork's creds are then read back and their JWTs verified. That the
cluster's nats-server accepts them, and that deploy/k8s/components/fork
mounts these names, is tests/integration/test_k8s_fork.py's.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from services.cli.app import app
from services.cli.k8s_secrets import (
    OPERATOR_TLS,
    ForkSecretsError,
    fork_creds_secret,
    fork_out_dir,
    secret_files,
    write_fork_secrets,
    write_secrets,
)
from services.kernel.natsauth import (
    IDENTITIES,
    SERVICES,
    BadMission,
    KeyStore,
    decode_jwt,
    permissions,
)
from services.kernel.security import StateLayout
from services.kernel.subjects import Subjects

PARENT, FORK, NAMESPACE = "ce6", "ce6-whatif", "twin-dev"
_JWT = re.compile(r"-----BEGIN NATS USER JWT-----\n(\S+)\n")


def user_claims(creds: Path) -> dict[str, object]:
    """The verified claims of the user JWT in a ``.creds`` file."""
    match = _JWT.search(creds.read_text())
    assert match, f"{creds} holds no user JWT"
    return decode_jwt(match.group(1))


def tree(directory: Path) -> dict[str, bytes]:
    return {str(p.relative_to(directory)): p.read_bytes()
            for p in sorted(directory.rglob("*")) if p.is_file()}


@pytest.fixture
def parent_dir(tmp_path: Path) -> Path:
    """The parent's namespace directory, as `twin k8s-secrets` writes it."""
    out = tmp_path / NAMESPACE
    write_secrets(out, PARENT, NAMESPACE)
    return out


def test_the_forks_creds_are_signed_by_the_parents_keys_for_the_fork_with_the_parent_grant(
        parent_dir: Path) -> None:
    before = tree(parent_dir)
    where, _ = write_fork_secrets(parent_dir, FORK, PARENT, NAMESPACE)
    assert where == fork_out_dir(parent_dir, FORK) == parent_dir / "forks" / FORK
    # The parent's directory (its keys, creds, auth.conf) is as it was.
    assert {k: v for k, v in tree(parent_dir).items() if not k.startswith("forks/")} == before
    signer = KeyStore(StateLayout(parent_dir).keys_dir).account_signing.public_key
    parent_stream = Subjects(PARENT).stream_name
    for identity in IDENTITIES:
        claims = user_claims(StateLayout(where).creds(FORK, identity))
        assert claims["iss"] == signer, "not signed by the key the cluster's NATS trusts"
        assert claims["name"] == f"{FORK}-{identity}"
        expected = permissions(FORK, identity, parent=PARENT)
        nats_claims = claims["nats"]
        assert isinstance(nats_claims, dict)
        # what the table says, and an identity that may publish nothing denied all
        # (nats-server reads an empty allow list as no limit)
        assert nats_claims["pub"] == ({"allow": list(expected.publish)} if expected.publish
                                      else {"deny": [">"]})
        assert nats_claims["sub"] == {"allow": list(expected.subscribe)}
        reads_parent = any(parent_stream in s.split(".") for s in expected.publish)
        # Only the fork's ground may read the parent's streams.
        assert reads_parent == (identity == "ground"), identity


def test_the_kustomization_lists_each_services_creds_and_the_operator_certificate(
        parent_dir: Path) -> None:
    where, secrets = write_fork_secrets(parent_dir, FORK, PARENT, NAMESPACE)
    spec = yaml.safe_load((where / "kustomization.yaml").read_text())
    assert spec["namespace"] == NAMESPACE
    assert spec["generatorOptions"]["disableNameSuffixHash"] is True
    assert spec["generatorOptions"]["labels"]["change6.twin/mission"] == FORK
    listed = {s["name"]: s for s in spec["secretGenerator"]}
    assert set(listed) == {s.name for s in secrets} == (
        {fork_creds_secret(s, FORK) for s in SERVICES} | {OPERATOR_TLS})
    # The names never those of the parent's Secrets, which stay in place.
    assert not set(listed) & {s.name for s in secret_files(PARENT)}
    for secret in listed.values():
        for entry in secret["files"]:
            key, _, path = entry.partition("=")
            assert (where / path).is_file(), f"{secret['name']}/{key}: no {path}"
            assert (where / path).stat().st_mode & 0o077 == 0, f"{path} is readable by others"
    assert listed[OPERATOR_TLS]["type"] == "kubernetes.io/tls"
    pki = StateLayout(parent_dir).pki_dir
    for name in ("ca.crt", "client-operator.crt", "client-operator.key"):
        assert (where / "pki" / name).read_bytes() == (pki / name).read_bytes()


def test_with_cert_manager_the_operator_certificate_is_left_to_it(tmp_path: Path) -> None:
    out = tmp_path / NAMESPACE
    write_secrets(out, PARENT, NAMESPACE, certificates=False)
    with pytest.raises(ForkSecretsError, match="--creds-only"):
        write_fork_secrets(out, FORK, PARENT, NAMESPACE)
    where, secrets = write_fork_secrets(out, FORK, PARENT, NAMESPACE, certificates=False)
    assert {s.name for s in secrets} == {fork_creds_secret(s, FORK) for s in SERVICES}
    assert not (where / "pki").exists()


def test_no_key_store_is_made_up_for_a_fork(tmp_path: Path) -> None:
    empty = tmp_path / NAMESPACE
    with pytest.raises(ForkSecretsError, match=r"no NATS key store.*--mission ce6 --namespace"):
        write_fork_secrets(empty, FORK, PARENT, NAMESPACE)
    # A fresh key store would sign creds the cluster's nats-server rejects.
    assert not empty.exists()


def test_the_parent_must_be_the_directorys_mission(parent_dir: Path) -> None:
    with pytest.raises(ForkSecretsError, match=r"not written for mission ce7 .*creds for ce6"):
        write_fork_secrets(parent_dir, FORK, "ce7", NAMESPACE)
    with pytest.raises(ForkSecretsError, match="same"):
        write_fork_secrets(parent_dir, PARENT, PARENT, NAMESPACE)
    with pytest.raises(BadMission):
        write_fork_secrets(parent_dir, "CE6-What", PARENT, NAMESPACE)
    assert not (parent_dir / "forks").exists()


def test_the_command_writes_a_fork_and_without_the_option_what_it_wrote_before(
        tmp_path: Path) -> None:
    runner = CliRunner()
    out = tmp_path / NAMESPACE
    base = ["k8s-secrets", "--namespace", NAMESPACE, "--out", str(out)]
    done = runner.invoke(app, [*base, "--mission", PARENT])
    assert done.exit_code == 0, done.output
    assert f"Secrets for mission {PARENT} in namespace {NAMESPACE}" in done.output
    spec = yaml.safe_load((out / "kustomization.yaml").read_text())
    assert {s["name"] for s in spec["secretGenerator"]} == {s.name for s in secret_files(PARENT)}
    assert not (out / "forks").exists()

    done = runner.invoke(app, [*base, "--mission", FORK, "--fork-of", PARENT])
    assert done.exit_code == 0, done.output
    assert f"kubectl apply -k {out / 'forks' / FORK}" in done.output
    assert f"--fork-of {PARENT}" in (out / "forks" / FORK / "kustomization.yaml").read_text()

    done = runner.invoke(app, [*base, "--mission", FORK, "--fork-of", "ce7"])
    assert done.exit_code == 1
    assert "error:" in done.output and "--fork-of names the running mission" in done.output
