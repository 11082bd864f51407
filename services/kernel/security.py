"""The secure default, wired: which certificates and NATS credentials a party
uses, and the plaintext mode (``TWIN_INSECURE``) that must be asked for.

A service never issues anything: it reads files by the layout of
services/kernel/pki.py from ``TWIN_PKI_DIR`` (``ca.crt``,
``server-<service>.crt/.key``, ``nats-client-<service>.crt/.key``) and its
NATS user from ``TWIN_NATS_CREDS``. Locally ``twin run``/``twin up`` create
them all in the state dir (:func:`provision`); on Kubernetes they come from
Secrets mounted at the same names.

State dir layout (:class:`StateLayout`)::

    pki/                     the private CA and every certificate (pki.py)
    nats-keys/               the NATS operator's and accounts' seeds (natsauth.KeyStore)
    nats-creds/<m>-<id>.creds one NATS user per mission and identity
    nats/server.conf         the embedded nats-server's operator-mode config
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from services.kernel.config import PKI_DIR_FIX, PKI_DIR_MISSING, ServiceConfig
from services.kernel.errors import ConfigError
from services.kernel.grpcauth import channel_credentials, server_credentials
from services.kernel.natsauth import (
    GATEWAY,
    IDENTITIES,
    SERVICES,
    KeyStore,
    NatsAuth,
    connect_options,
)
from services.kernel.pki import DEFAULT_NAMESPACE, CertFiles, Pki

log = logging.getLogger("twin.security")

#: The one warning every party logs in plaintext mode.
INSECURE_WARNING = ("INSECURE MODE (TWIN_INSECURE / --insecure): the NATS bus and the gRPC "
                    "control are plaintext and unauthenticated; anyone who reaches them can "
                    "drive the clock and command the vehicles. For debugging only.")
#: The CLI's identity: the operator on gRPC and on NATS.
OPERATOR = "operator"


@dataclass(frozen=True)
class StateLayout:
    """Where the secure default keeps its files in a state dir."""

    state_dir: Path

    @property
    def pki_dir(self) -> Path:
        return self.state_dir / "pki"

    @property
    def keys_dir(self) -> Path:
        return self.state_dir / "nats-keys"

    @property
    def creds_dir(self) -> Path:
        return self.state_dir / "nats-creds"

    @property
    def server_config(self) -> Path:
        return self.state_dir / "nats" / "server.conf"

    def creds(self, mission: str, identity: str) -> Path:
        return creds_path(self.creds_dir, mission, identity)


def creds_path(creds_dir: Path, mission: str, identity: str) -> Path:
    return creds_dir / f"{mission}-{identity}.creds"


def _files(pki_dir: Path, stem: str) -> CertFiles:
    return CertFiles(pki_dir / f"{stem}.crt", pki_dir / f"{stem}.key", pki_dir / "ca.crt")


@dataclass(frozen=True)
class Security:
    """One party's security settings: plaintext only with ``insecure``.

    ``pki_dir`` holds the certificates; ``nats_creds`` the party's NATS user
    (``None``: ``<pki_dir>/../nats-creds/<mission>-<identity>.creds``).
    """

    insecure: bool = False
    pki_dir: Path | None = None
    nats_creds: Path | None = None

    def __post_init__(self) -> None:
        if not self.insecure and self.pki_dir is None:
            raise ConfigError("TWIN_PKI_DIR", "", PKI_DIR_MISSING, PKI_DIR_FIX)

    @classmethod
    def plaintext(cls) -> Security:
        return cls(insecure=True)

    @classmethod
    def for_state_dir(cls, state_dir: Path, *, insecure: bool = False) -> Security:
        return cls.plaintext() if insecure else cls(pki_dir=StateLayout(state_dir).pki_dir)

    # --- files -----------------------------------------------------------------------
    def _pki(self) -> Path:
        assert self.pki_dir is not None, "plaintext mode has no PKI"
        return self.pki_dir

    def creds_for(self, mission: str, identity: str) -> Path:
        return self.nats_creds or creds_path(self._pki().parent / "nats-creds", mission,
                                             identity)

    def check(self, mission: str, identity: str, *, grpc_server: bool) -> None:
        """Every file ``identity`` needs is there, or a ConfigError naming it."""
        if self.insecure:
            return
        pki = self._pki()
        need = [(pki / "ca.crt", "TWIN_PKI_DIR"),
                *((p, "TWIN_PKI_DIR") for p in _paths(_files(pki, f"nats-client-{identity}"))),
                (self.creds_for(mission, identity), "TWIN_NATS_CREDS")]
        if grpc_server:
            need += [(p, "TWIN_PKI_DIR") for p in _paths(_files(pki, f"server-{identity}"))]
        for path, variable in need:
            if not path.is_file():
                raise ConfigError(variable, str(path), "no such file",
                                  "create the certificates and credentials with `twin run` "
                                  "(into <state dir>/pki and nats-creds) or mount them there, "
                                  "or set TWIN_INSECURE=true for plaintext (debugging only)")

    # --- NATS ------------------------------------------------------------------------
    def nats_options(self, mission: str, identity: str) -> dict[str, Any]:
        """``nats.connect`` keyword arguments: TLS with the client certificate,
        the user's creds and its inbox prefix ({} in plaintext mode)."""
        if self.insecure:
            return {}
        _quiet_tls_eof()
        files = _files(self._pki(), f"nats-client-{identity}")
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(files.ca_path))
        context.load_cert_chain(str(files.cert_path), str(files.key_path))
        return {"tls": context,
                **connect_options(self.creds_for(mission, identity), mission, identity)}

    # --- gRPC ------------------------------------------------------------------------
    def grpc_server_credentials(self, service: str) -> grpc.ServerCredentials | None:
        if self.insecure:
            return None
        return server_credentials(_files(self._pki(), f"server-{service}"))

    def grpc_channel_credentials(self, identity: str = OPERATOR
                                 ) -> grpc.ChannelCredentials | None:
        if self.insecure:
            return None
        return channel_credentials(_files(self._pki(), f"client-{identity}"))

    def env(self) -> dict[str, str]:
        """The TWIN_* variables that give a child process these settings."""
        if self.insecure:
            return {"TWIN_INSECURE": "true"}
        out = {"TWIN_PKI_DIR": str(self._pki().resolve())}
        if self.nats_creds is not None:
            out["TWIN_NATS_CREDS"] = str(self.nats_creds.resolve())
        return out

    def warn_if_insecure(self, logger: logging.Logger = log) -> None:
        if self.insecure:
            logger.warning(INSECURE_WARNING)


class _TlsEofFilter(logging.Filter):
    """asyncio warns "returning true from eof_received() has no effect when
    using ssl" each time a TLS connection of nats-py's (whose stream protocol
    returns True) is closed by the server: expected, on every stop."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("returning true from eof_received()")


_TLS_EOF_FILTER = _TlsEofFilter()


def _quiet_tls_eof() -> None:
    logging.getLogger("asyncio").addFilter(_TLS_EOF_FILTER)  # once: a filter is a set member


def security_of(config: ServiceConfig) -> Security:
    """A service's security settings, from its config."""
    return Security(config.insecure, config.pki_dir, config.nats_creds)


def _paths(files: CertFiles) -> tuple[Path, Path]:
    return files.cert_path, files.key_path


def nats_server_tls(files: CertFiles) -> list[str]:
    """The nats-server ``tls`` block: its certificate, and a client certificate
    from the twin's CA required of every connection."""
    return ["tls {",
            f'  cert_file: "{files.cert_path}"',
            f'  key_file: "{files.key_path}"',
            f'  ca_file: "{files.ca_path}"',
            "  verify: true",
            "  timeout: 5",
            "}"]


@dataclass(frozen=True)
class Provisioned:
    """What :func:`provision` made: the NATS server's config and the parties'."""

    layout: StateLayout
    server_config: Path

    def security(self) -> Security:
        return Security(pki_dir=self.layout.pki_dir)


def provision(state_dir: Path, mission: str, *, services: Sequence[str] = SERVICES,
              extra_names: Sequence[str] = (),
              namespace: str = DEFAULT_NAMESPACE, parent: str | None = None) -> Provisioned:
    """Create (or reuse) the CA, every certificate, the NATS keys, each
    identity's creds for ``mission`` and the embedded server's config.
    ``namespace``: the Kubernetes namespace the server names carry; ``parent``:
    the mission ``mission`` is a what-if fork of (its ground may read the
    parent's streams, services/kernel/natsauth.py PARENT_GRANTS)."""
    layout = StateLayout(state_dir)
    pki = Pki(layout.pki_dir, namespace=namespace, extra_names=extra_names)
    for service in services:
        pki.server(service)
        pki.nats_client(service)
    pki.client(OPERATOR, "operator")
    pki.client("viewer", "viewer")
    for identity in (OPERATOR, "observer"):
        pki.nats_client(identity)
    # The CCSDS gateway: its health server, its NATS user, and the operator
    # role on ground's gRPC, which it uplinks through (services/gateway/).
    pki.server(GATEWAY)
    pki.nats_client(GATEWAY)
    pki.client(GATEWAY, "operator")
    auth = NatsAuth(KeyStore(layout.keys_dir))
    for identity in IDENTITIES:
        auth.write_creds(layout.creds(mission, identity), mission, identity, parent=parent)
    config = auth.write_server_config(layout.server_config,
                                      extra=nats_server_tls(pki.nats_server()))
    return Provisioned(layout, config)
