"""TLS and mutual TLS for the gRPC port, from ``SKILLSVC_TLS_*`` files.

:func:`load_server_tls` reads and checks the PEM files once (a ConfigError names the
variable of a missing, unreadable or malformed file, or a key that does not belong
to the certificate), and :func:`server_credentials` turns them into gRPC server
credentials. With a client CA, clients must present a certificate it signed.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from skillsvc.config import ConfigError, Settings

if TYPE_CHECKING:
    import grpc


@dataclass(frozen=True)
class ServerTls:
    """The PEM material of the server's TLS port."""

    certificate_chain: bytes
    """The server certificate, then any intermediates."""
    private_key: bytes
    """The server's private key (unencrypted PEM)."""
    client_ca: bytes | None
    """CA certificates that sign client certificates; None: no client certificates."""


def _read(variable: str, path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{variable}: cannot read {str(path)!r}: {exc.strerror}") from None


def _certificates(variable: str, pem: bytes) -> list[x509.Certificate]:
    try:
        certificates = x509.load_pem_x509_certificates(pem)
    except ValueError:
        raise ConfigError(f"{variable}: not a PEM certificate file") from None
    return certificates


def load_server_tls(settings: Settings) -> ServerTls | None:
    """The TLS material ``settings`` name, None for plaintext; ConfigError if unusable."""
    cert_file, key_file, ca_file = (
        settings.tls_cert_file,
        settings.tls_key_file,
        settings.tls_client_ca_file,
    )
    if cert_file is None and key_file is None:
        if ca_file is not None:
            raise ConfigError(
                "SKILLSVC_TLS_CLIENT_CA_FILE: mutual TLS also needs SKILLSVC_TLS_CERT_FILE "
                "and SKILLSVC_TLS_KEY_FILE"
            )
        return None
    if cert_file is None:
        raise ConfigError("SKILLSVC_TLS_CERT_FILE: required with SKILLSVC_TLS_KEY_FILE")
    if key_file is None:
        raise ConfigError("SKILLSVC_TLS_KEY_FILE: required with SKILLSVC_TLS_CERT_FILE")
    chain = _read("SKILLSVC_TLS_CERT_FILE", cert_file)
    certificates = _certificates("SKILLSVC_TLS_CERT_FILE", chain)
    key_pem = _read("SKILLSVC_TLS_KEY_FILE", key_file)
    try:
        key = serialization.load_pem_private_key(key_pem, password=None)
    except (ValueError, TypeError):
        raise ConfigError("SKILLSVC_TLS_KEY_FILE: not an unencrypted PEM private key") from None
    if key.public_key() != certificates[0].public_key():
        raise ConfigError(
            "SKILLSVC_TLS_KEY_FILE: the key does not belong to the certificate in "
            "SKILLSVC_TLS_CERT_FILE"
        )
    client_ca = None
    if ca_file is not None:
        client_ca = _read("SKILLSVC_TLS_CLIENT_CA_FILE", ca_file)
        _certificates("SKILLSVC_TLS_CLIENT_CA_FILE", client_ca)
    return ServerTls(certificate_chain=chain, private_key=key_pem, client_ca=client_ca)


def server_credentials(tls: ServerTls) -> grpc.ServerCredentials:
    """gRPC credentials for ``tls``; a client CA makes client certificates mandatory."""
    # Imported here: serve's supervisor checks the files with load_server_tls and
    # must not load gRPC (only its workers serve).
    import grpc

    return grpc.ssl_server_credentials(
        [(tls.private_key, tls.certificate_chain)],
        root_certificates=tls.client_ca,
        require_client_auth=tls.client_ca is not None,
    )
