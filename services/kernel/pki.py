"""The twin's private PKI: one CA and the certificates of every party, kept in a
directory (the state dir's ``pki/`` by default), created on first use.

Everything is EC P-256 (small, fast handshakes, supported by gRPC, NATS and
browsers). Layout of the directory (keys 0600, the directory 0700)::

    ca.crt ca.key                       "change6-twin CA", path length 0
    server-<service>.crt/.key           gRPC server of one service (serverAuth)
    client-<identity>.crt/.key          gRPC caller with a role (clientAuth)
    nats-server.crt/.key                the NATS server (serverAuth + clientAuth
                                        for cluster routes)
    nats-client-<identity>.crt/.key     a NATS connection (clientAuth)

Every call is idempotent: a file that is still good for the request is reused;
a leaf that expires within ``renew_within_days``, was issued by another CA or
no longer names what is asked for is issued again. A CA key that does not
match the CA certificate is refused: that directory's certificates cannot be
trusted or renewed, and only the operator can tell which half is right.

A client's role rides in a SAN URI ``urn:change6-twin:role:<role>`` and its
identity in the subject CN, so a TLS peer's role is read from a certificate the
handshake has already verified against the CA.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import ipaddress
import os
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from services.kernel.errors import TwinError

CA_NAME = "change6-twin CA"
ORGANIZATION = "change6-twin"
#: Roles a gRPC client certificate may carry, least to most privileged.
ROLES: tuple[str, ...] = ("viewer", "operator")
ROLE_URI_PREFIX = "urn:change6-twin:role:"
#: The NATS client certificate's SAN URI (a client verifier needs some SAN).
NATS_USER_URI_PREFIX = "urn:change6-twin:nats-user:"
#: Kubernetes Service of the NATS server (deploy/k8s/base/nats.yaml) and its
#: headless twin whose per-pod names the cluster routes use.
NATS_SERVICE = "nats"
NATS_HEADLESS_SERVICE = "nats-headless"
DEFAULT_NAMESPACE = "twin"
_LOOPBACK_IPS = (ipaddress.ip_address("127.0.0.1"), ipaddress.ip_address("::1"))
#: Not-before is set this far back so a peer whose clock runs a little behind
#: does not reject a certificate issued a moment ago.
_BACKDATE = dt.timedelta(minutes=5)
# Identities and service names become file names and DNS labels.
_NAME = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
_KEY_MODE = 0o600
_DIR_MODE = 0o700


class PkiError(TwinError):
    """The PKI directory cannot be used as it is: where, what, and how to fix it."""

    def __init__(self, path: Path, problem: str, fix: str) -> None:
        self.path = path
        self.problem = problem
        self.fix = fix
        super().__init__(f"{path}: {problem}; {fix}")


class CaMismatchError(PkiError):
    """The CA key in the directory is not the key of its CA certificate."""


@dataclass(frozen=True)
class PkiPolicy:
    """Lifetimes, in days. A leaf is renewed when it expires within
    ``renew_within_days`` (so a leaf must live longer than that)."""

    ca_days: int = 3650
    leaf_days: int = 397
    renew_within_days: int = 30

    def __post_init__(self) -> None:
        if not 0 < self.renew_within_days < self.leaf_days <= self.ca_days:
            raise ValueError(
                "PkiPolicy needs 0 < renew_within_days < leaf_days <= ca_days, got "
                f"{self.renew_within_days}, {self.leaf_days}, {self.ca_days}: a leaf must "
                "outlive its renewal window and must not outlive its CA")


@dataclass(frozen=True)
class CertFiles:
    """One party's certificate, key and the CA that signs every peer."""

    cert_path: Path
    key_path: Path
    ca_path: Path

    def cert_pem(self) -> bytes:
        return self.cert_path.read_bytes()

    def key_pem(self) -> bytes:
        return self.key_path.read_bytes()

    def ca_pem(self) -> bytes:
        return self.ca_path.read_bytes()

    def certificate(self) -> x509.Certificate:
        return x509.load_pem_x509_certificate(self.cert_pem())


@dataclass(frozen=True)
class _Want:
    """What a leaf must say: its CN, SANs and extended key usages."""

    common_name: str
    dns: tuple[str, ...] = ()
    ips: tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, ...] = ()
    uris: tuple[str, ...] = ()
    usages: tuple[x509.ObjectIdentifier, ...] = field(default=())

    def sans(self) -> list[x509.GeneralName]:
        return [*(x509.DNSName(d) for d in self.dns), *(x509.IPAddress(i) for i in self.ips),
                *(x509.UniformResourceIdentifier(u) for u in self.uris)]

    def matches(self, cert: x509.Certificate) -> bool:
        cns = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        try:
            san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
            eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        except x509.ExtensionNotFound:
            return False
        return ([c.value for c in cns] == [self.common_name]
                and set(san) == set(self.sans()) and set(eku) == set(self.usages))


class Pki:
    """A private CA and its certificates in ``directory``; see the module doc.

    ``namespace`` is the Kubernetes namespace put in server names
    (``<svc>.<namespace>.svc``); ``extra_names`` are added to every server
    certificate (DNS names, or IP addresses written as such).
    """

    def __init__(self, directory: Path, *, namespace: str = DEFAULT_NAMESPACE,
                 extra_names: Sequence[str] = (), policy: PkiPolicy | None = None) -> None:
        _check_name("namespace", namespace)
        self.directory = Path(directory)
        self.namespace = namespace
        self.extra_names = tuple(extra_names)
        self.policy = policy or PkiPolicy()
        self._ca: tuple[x509.Certificate, ec.EllipticCurvePrivateKey] | None = None

    # --- the CA -----------------------------------------------------------------
    @property
    def ca_path(self) -> Path:
        return self.directory / "ca.crt"

    @property
    def ca_key_path(self) -> Path:
        return self.directory / "ca.key"

    def ca_pem(self) -> bytes:
        self._ensure_ca()
        return self.ca_path.read_bytes()

    def ca_certificate(self) -> x509.Certificate:
        return self._ensure_ca()[0]

    def _ensure_ca(self) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
        if self._ca is None:
            with self._locked():
                self._ca = self._load_ca() or self._create_ca()
        return self._ca

    def _load_ca(self) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey] | None:
        have_cert, have_key = self.ca_path.exists(), self.ca_key_path.exists()
        if not have_cert and not have_key:
            return None
        if have_cert != have_key:
            missing = self.ca_key_path if have_cert else self.ca_path
            raise CaMismatchError(
                self.directory, f"the CA is incomplete: {missing.name} is missing",
                "restore it from a backup, or move the directory aside to create a new CA "
                "(and give every client the new ca.crt)")
        cert = _read_cert(self.ca_path)
        key = _read_key(self.ca_key_path)
        if not _same_key(cert, key):
            raise CaMismatchError(
                self.directory, "ca.key is not the key of ca.crt",
                "put back the ca.key that belongs to this ca.crt, or move the directory "
                "aside to create a new CA (and give every client the new ca.crt)")
        if cert.not_valid_after_utc - _now() < dt.timedelta(days=self.policy.renew_within_days):
            raise PkiError(
                self.ca_path, f"the CA expires on {cert.not_valid_after_utc:%Y-%m-%d}",
                "move the directory aside to create a new CA, then give every client the "
                "new ca.crt")
        return cert, key

    def _create_ca(self) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, ORGANIZATION),
                          x509.NameAttribute(NameOID.COMMON_NAME, CA_NAME)])
        now = _now()
        public = key.public_key()
        cert = (
            x509.CertificateBuilder()
            .subject_name(name).issuer_name(name).public_key(public)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - _BACKDATE)
            .not_valid_after(now + dt.timedelta(days=self.policy.ca_days))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(_key_usage(cert_sign=True), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
            .sign(key, hashes.SHA256()))
        _write_key(self.ca_key_path, key)
        _write_public(self.ca_path, cert)
        return cert, key

    # --- leaves -----------------------------------------------------------------
    def server(self, service: str, extra_names: Sequence[str] = ()) -> CertFiles:
        """The gRPC server certificate of ``service``."""
        _check_name("service", service)
        return self._leaf(f"server-{service}", self._server_want(
            service, (ExtendedKeyUsageOID.SERVER_AUTH,), extra_names))

    def client(self, identity: str, role: str) -> CertFiles:
        """A gRPC client certificate: CN ``identity``, SAN URI of ``role``."""
        _check_name("identity", identity)
        if role not in ROLES:
            raise ValueError(f"role {role!r} is not one of {', '.join(ROLES)}")
        return self._leaf(f"client-{identity}", _Want(
            identity, uris=(ROLE_URI_PREFIX + role,),
            usages=(ExtendedKeyUsageOID.CLIENT_AUTH,)))

    def nats_server(self, extra_names: Sequence[str] = ()) -> CertFiles:
        """The NATS server's certificate. It also carries clientAuth, and the
        headless service's per-pod names, so cluster routes (which dial each
        other as clients) can use it too."""
        ns = self.namespace
        headless = (f"*.{NATS_HEADLESS_SERVICE}", f"*.{NATS_HEADLESS_SERVICE}.{ns}.svc",
                    f"*.{NATS_HEADLESS_SERVICE}.{ns}.svc.cluster.local")
        return self._leaf("nats-server", self._server_want(
            NATS_SERVICE, (ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH),
            (*headless, *extra_names)))

    def nats_client(self, identity: str) -> CertFiles:
        """A NATS client certificate for ``identity`` (a service or operator)."""
        _check_name("identity", identity)
        return self._leaf(f"nats-client-{identity}", _Want(
            identity, uris=(NATS_USER_URI_PREFIX + identity,),
            usages=(ExtendedKeyUsageOID.CLIENT_AUTH,)))

    def _server_want(self, service: str, usages: tuple[x509.ObjectIdentifier, ...],
                     extra_names: Sequence[str]) -> _Want:
        ns = self.namespace
        dns: list[str] = ["localhost", service, f"{service}.{ns}.svc",
                          f"{service}.{ns}.svc.cluster.local"]
        ips: list[ipaddress.IPv4Address | ipaddress.IPv6Address] = list(_LOOPBACK_IPS)
        for name in (*self.extra_names, *extra_names):
            try:
                ip = ipaddress.ip_address(name)
            except ValueError:
                if name not in dns:
                    dns.append(name)
            else:
                if ip not in ips:
                    ips.append(ip)
        return _Want(service, dns=tuple(dns), ips=tuple(ips), usages=usages)

    def _leaf(self, stem: str, want: _Want) -> CertFiles:
        ca_cert, ca_key = self._ensure_ca()
        files = CertFiles(self.directory / f"{stem}.crt", self.directory / f"{stem}.key",
                          self.ca_path)
        with self._locked():
            if not self._reusable(files, want, ca_cert):
                self._issue(files, want, ca_cert, ca_key)
        return files

    def _reusable(self, files: CertFiles, want: _Want, ca_cert: x509.Certificate) -> bool:
        """Is the leaf on disk good for ``want``: present, its own key, signed
        by this CA, naming what is asked, and not due for renewal?"""
        if not (files.cert_path.exists() and files.key_path.exists()):
            return False
        try:
            cert = _read_cert(files.cert_path)
            key = _read_key(files.key_path)
        except PkiError:
            return False  # a torn or foreign leaf is simply issued again
        left = cert.not_valid_after_utc - _now()
        return (_same_key(cert, key) and _signed_by(cert, ca_cert) and want.matches(cert)
                and left > dt.timedelta(days=self.policy.renew_within_days))

    def _issue(self, files: CertFiles, want: _Want, ca_cert: x509.Certificate,
               ca_key: ec.EllipticCurvePrivateKey) -> None:
        key = ec.generate_private_key(ec.SECP256R1())
        now = _now()
        not_after = min(now + dt.timedelta(days=self.policy.leaf_days), ca_cert.not_valid_after_utc)
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, ORGANIZATION),
                x509.NameAttribute(NameOID.COMMON_NAME, want.common_name)]))
            .issuer_name(ca_cert.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - _BACKDATE).not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(_key_usage(cert_sign=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage(list(want.usages)), critical=False)
            .add_extension(x509.SubjectAlternativeName(want.sans()), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                           critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                ca_key.public_key()), critical=False))
        _write_key(files.key_path, key)
        _write_public(files.cert_path, builder.sign(ca_key, hashes.SHA256()))

    # --- the directory ----------------------------------------------------------
    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """Serialise writers: six services may start at once on one state dir."""
        self.directory.mkdir(mode=_DIR_MODE, parents=True, exist_ok=True)
        with open(self.directory / ".lock", "a+b") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)


def role_of(cert: x509.Certificate) -> str | None:
    """The role a client certificate carries in its SAN URI, if one it knows."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return None
    return role_from_uris(san.get_values_for_type(x509.UniformResourceIdentifier))


def role_from_uris(uris: Sequence[str]) -> str | None:
    """The one known role among SAN URIs; None for none or for two differing."""
    roles = {u.removeprefix(ROLE_URI_PREFIX) for u in uris if u.startswith(ROLE_URI_PREFIX)}
    if len(roles) != 1:
        return None
    role = roles.pop()
    return role if role in ROLES else None


def _check_name(what: str, name: str) -> None:
    if not _NAME.fullmatch(name):
        raise ValueError(f"{what} {name!r} must be a DNS label: lower-case letters, digits "
                         "and '-', at most 63 characters, starting and ending alphanumeric")


def _now() -> dt.datetime:
    """Wall time, rightly: certificates are checked by TLS against the real
    time of day, never against mission time."""
    return dt.datetime.now(dt.UTC)


def _key_usage(*, cert_sign: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True, content_commitment=False, key_encipherment=False,
        data_encipherment=False, key_agreement=False, key_cert_sign=cert_sign,
        crl_sign=cert_sign, encipher_only=False, decipher_only=False)


def _same_key(cert: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> bool:
    return bool(cert.public_key() == key.public_key())


def _signed_by(cert: x509.Certificate, ca: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def _read_cert(path: Path) -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(path.read_bytes())
    except ValueError as exc:
        raise PkiError(path, f"not a PEM certificate ({exc})",
                       "delete it to have it issued again") from exc


def _read_key(path: Path) -> ec.EllipticCurvePrivateKey:
    if path.stat().st_mode & 0o077:
        path.chmod(_KEY_MODE)  # a key readable by others is tightened, never trusted wider
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (ValueError, TypeError) as exc:
        raise PkiError(path, f"not an unencrypted PEM private key ({exc})",
                       "delete it (and its .crt) to have both issued again") from exc
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise PkiError(path, f"a {type(key).__name__}, not an EC key",
                       "delete it (and its .crt) to have both issued again")
    return key


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    _write_atomic(path, key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()), _KEY_MODE)


def _write_public(path: Path, cert: x509.Certificate) -> None:
    _write_atomic(path, cert.public_bytes(serialization.Encoding.PEM), 0o644)


def _write_atomic(path: Path, data: bytes, mode: int) -> None:
    """Write via a temporary file created with ``mode`` (a key is never, even
    briefly, readable by others), then rename over ``path``."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(tmp, mode)  # the umask may have taken bits off a 0644 certificate
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
