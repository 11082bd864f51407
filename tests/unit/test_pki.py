"""The private PKI: chains that verify, the names and usages each party needs,
lifetimes, idempotence, renewal, a mismatched CA refused, private keys 0600."""

from __future__ import annotations

import datetime as dt
import ipaddress
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509 import DNSName, IPAddress
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from cryptography.x509.verification import PolicyBuilder, Store

from services.kernel.pki import (
    CA_NAME,
    ROLE_URI_PREFIX,
    CaMismatchError,
    CertFiles,
    Pki,
    PkiError,
    PkiPolicy,
    role_of,
)

DAY = dt.timedelta(days=1)
#: Slack between issuing a certificate and reading its lifetime back (the
#: 5-minute backdate plus the test's own run time), in a test about days.
SLACK = dt.timedelta(hours=1)


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return Pki(tmp_path / "pki", namespace="twin-dev", extra_names=["twin.example.org", "10.1.2.3"])


def _sans(cert: x509.Certificate) -> x509.SubjectAlternativeName:
    return cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value


def _eku(cert: x509.Certificate) -> set[x509.ObjectIdentifier]:
    return set(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)


def _verifier_store(pki: Pki) -> PolicyBuilder:
    return PolicyBuilder().store(Store([pki.ca_certificate()]))


def test_ca_is_a_p256_ca_of_path_length_zero_for_ten_years(pki: Pki) -> None:
    ca = pki.ca_certificate()
    assert ca.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == CA_NAME
    assert ca.subject == ca.issuer
    ca.verify_directly_issued_by(ca)
    bc = ca.extensions.get_extension_for_class(x509.BasicConstraints)
    assert bc.critical and bc.value.ca and bc.value.path_length == 0
    ku = ca.extensions.get_extension_for_class(x509.KeyUsage).value
    assert ku.key_cert_sign and ku.crl_sign
    key = ca.public_key()
    assert isinstance(key, ec.EllipticCurvePublicKey) and key.curve.name == "secp256r1"
    life = ca.not_valid_after_utc - ca.not_valid_before_utc
    assert abs(life - 3650 * DAY) < SLACK


def test_server_certificate_chains_to_the_ca_for_every_name(pki: Pki) -> None:
    files = pki.server("lander", extra_names=["lander.local"])
    cert = files.certificate()
    dns = _sans(cert).get_values_for_type(x509.DNSName)
    assert set(dns) == {"localhost", "lander", "lander.twin-dev.svc",
                        "lander.twin-dev.svc.cluster.local", "twin.example.org", "lander.local"}
    ips = _sans(cert).get_values_for_type(x509.IPAddress)
    assert set(ips) == {ipaddress.ip_address(a) for a in ("127.0.0.1", "::1", "10.1.2.3")}
    assert _eku(cert) == {ExtendedKeyUsageOID.SERVER_AUTH}
    assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    for name in ("localhost", "lander.twin-dev.svc.cluster.local"):
        chain = _verifier_store(pki).build_server_verifier(DNSName(name)).verify(cert, [])
        assert chain[-1] == pki.ca_certificate()
    for ip in ("127.0.0.1", "::1"):
        _verifier_store(pki).build_server_verifier(
            IPAddress(ipaddress.ip_address(ip))).verify(cert, [])
    with pytest.raises(x509.verification.VerificationError):
        _verifier_store(pki).build_server_verifier(DNSName("orbiter")).verify(cert, [])


def test_client_certificate_carries_identity_and_role(pki: Pki) -> None:
    cert = pki.client("alice", "viewer").certificate()
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "alice"
    assert _sans(cert).get_values_for_type(x509.UniformResourceIdentifier) == [
        ROLE_URI_PREFIX + "viewer"]
    assert role_of(cert) == "viewer"
    assert _eku(cert) == {ExtendedKeyUsageOID.CLIENT_AUTH}
    verified = _verifier_store(pki).build_client_verifier().verify(cert, [])
    assert verified.chain[-1] == pki.ca_certificate()
    # A client certificate is no server certificate.
    with pytest.raises(x509.verification.VerificationError):
        _verifier_store(pki).build_server_verifier(DNSName("localhost")).verify(cert, [])
    with pytest.raises(ValueError, match="role 'admin'"):
        pki.client("bob", "admin")


def test_nats_certificates(pki: Pki) -> None:
    server = pki.nats_server().certificate()
    assert _eku(server) == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}
    dns = _sans(server).get_values_for_type(x509.DNSName)
    assert {"localhost", "nats", "nats.twin-dev.svc.cluster.local",
            "*.nats-headless.twin-dev.svc.cluster.local"} <= set(dns)
    _verifier_store(pki).build_server_verifier(DNSName("nats.twin-dev.svc")).verify(server, [])
    _verifier_store(pki).build_server_verifier(
        DNSName("nats-1.nats-headless.twin-dev.svc.cluster.local")).verify(server, [])
    client = pki.nats_client("orbiter").certificate()
    assert client.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "orbiter"
    assert _eku(client) == {ExtendedKeyUsageOID.CLIENT_AUTH}
    _verifier_store(pki).build_client_verifier().verify(client, [])


def test_leaf_lifetime_and_key(pki: Pki) -> None:
    cert = pki.server("ground").certificate()
    life = cert.not_valid_after_utc - cert.not_valid_before_utc
    assert abs(life - PkiPolicy().leaf_days * DAY) < SLACK
    assert cert.not_valid_before_utc < dt.datetime.now(dt.UTC)
    key = cert.public_key()
    assert isinstance(key, ec.EllipticCurvePublicKey) and key.curve.name == "secp256r1"


def test_private_keys_are_0600_and_the_directory_0700(pki: Pki) -> None:
    pki.server("ground")
    pki.client("ops", "operator")
    pki.nats_server()
    pki.nats_client("relay")
    keys = sorted(pki.directory.glob("*.key"))
    assert [k.name for k in keys] == ["ca.key", "client-ops.key", "nats-client-relay.key",
                                      "nats-server.key", "server-ground.key"]
    for key in keys:
        assert stat.S_IMODE(key.stat().st_mode) == 0o600, key
    assert stat.S_IMODE(pki.directory.stat().st_mode) == 0o700
    assert not list(pki.directory.glob("*.tmp")) and not list(pki.directory.glob(".*.tmp"))
    # A key left readable by others is tightened when it is next read.
    (pki.directory / "server-ground.key").chmod(0o644)
    Pki(pki.directory, namespace="twin-dev", extra_names=pki.extra_names).server("ground")
    assert stat.S_IMODE((pki.directory / "server-ground.key").stat().st_mode) == 0o600


def _snapshot(files: CertFiles) -> tuple[bytes, bytes, bytes]:
    return files.cert_pem(), files.key_pem(), files.ca_pem()


def test_second_call_reuses_valid_files(pki: Pki) -> None:
    first = [_snapshot(pki.server("orbiter")), _snapshot(pki.client("ops", "operator")),
             _snapshot(pki.nats_server()), _snapshot(pki.nats_client("orbiter"))]
    again = Pki(pki.directory, namespace="twin-dev", extra_names=pki.extra_names)
    second = [_snapshot(again.server("orbiter")), _snapshot(again.client("ops", "operator")),
              _snapshot(again.nats_server()), _snapshot(again.nats_client("orbiter"))]
    assert first == second


def test_changed_request_reissues_the_leaf_under_the_same_ca(pki: Pki) -> None:
    viewer = pki.client("carol", "viewer")
    before = viewer.cert_pem()
    operator = pki.client("carol", "operator")
    assert operator.cert_pem() != before and role_of(operator.certificate()) == "operator"
    server = pki.server("relay").cert_pem()
    renamed = Pki(pki.directory, namespace="twin-prod").server("relay")
    assert renamed.cert_pem() != server
    assert "relay.twin-prod.svc" in _sans(renamed.certificate()).get_values_for_type(x509.DNSName)
    assert renamed.ca_pem() == viewer.ca_pem()


def test_leaf_expiring_within_the_window_is_renewed(tmp_path: Path) -> None:
    short = Pki(tmp_path, policy=PkiPolicy(leaf_days=40, renew_within_days=30))
    old = short.server("ground")
    old_pem, old_key = old.cert_pem(), old.key_pem()
    assert _snapshot(short.server("ground"))[:2] == (old_pem, old_key)  # 40 days left: kept
    renewing = Pki(tmp_path, policy=PkiPolicy(leaf_days=90, renew_within_days=45))
    new = renewing.server("ground")
    assert new.cert_pem() != old_pem and new.key_pem() != old_key
    life = new.certificate().not_valid_after_utc - new.certificate().not_valid_before_utc
    assert abs(life - 90 * DAY) < SLACK
    assert new.ca_pem() == old.ca_pem()


def test_leaf_of_another_ca_or_torn_is_reissued(tmp_path: Path) -> None:
    pki = Pki(tmp_path / "a")
    other = Pki(tmp_path / "b")
    foreign = other.server("ground")
    mine = pki.server("ground")
    mine.cert_path.write_bytes(foreign.cert_pem())
    mine.key_path.write_bytes(foreign.key_pem())
    reissued = Pki(tmp_path / "a").server("ground")
    reissued.certificate().verify_directly_issued_by(pki.ca_certificate())
    reissued.cert_path.write_bytes(b"-----BEGIN CERTIFICATE-----\ntorn")
    Pki(tmp_path / "a").server("ground").certificate().verify_directly_issued_by(
        pki.ca_certificate())


def test_mismatched_ca_key_is_refused(tmp_path: Path) -> None:
    pki = Pki(tmp_path / "a")
    pki.server("ground")
    Pki(tmp_path / "b").ca_pem()
    (tmp_path / "a" / "ca.key").write_bytes((tmp_path / "b" / "ca.key").read_bytes())
    with pytest.raises(CaMismatchError) as caught:
        Pki(tmp_path / "a").server("ground")
    assert caught.value.path == tmp_path / "a"
    assert "ca.key is not the key of ca.crt" in str(caught.value)
    assert "move the directory aside" in caught.value.fix


def test_incomplete_ca_is_refused(tmp_path: Path) -> None:
    Pki(tmp_path).ca_pem()
    (tmp_path / "ca.key").unlink()
    with pytest.raises(CaMismatchError, match=r"ca\.key is missing"):
        Pki(tmp_path).client("ops", "operator")


def test_garbage_ca_is_a_typed_error(tmp_path: Path) -> None:
    Pki(tmp_path).ca_pem()
    (tmp_path / "ca.crt").write_text("not a certificate")
    with pytest.raises(PkiError, match="not a PEM certificate"):
        Pki(tmp_path).ca_pem()


def test_names_and_policy_are_validated(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="DNS label"):
        Pki(tmp_path).server("../etc")
    with pytest.raises(ValueError, match="DNS label"):
        Pki(tmp_path, namespace="Twin")
    with pytest.raises(ValueError, match="renew_within_days"):
        PkiPolicy(leaf_days=20, renew_within_days=30)
