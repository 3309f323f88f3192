"""``skillsvc healthcheck``: ask the running service's gRPC health service, exit 0 if SERVING.

For container ``HEALTHCHECK``s and supervisors that run a command. It reads the same
settings as ``serve``: it dials ``SKILLSVC_LISTEN_ADDR`` (a wildcard host becomes
loopback) and, when ``SKILLSVC_TLS_CERT_FILE`` is set, speaks TLS, trusting the
server's own certificate (so it works with a self-signed certificate and with one
from a private CA alike) and checking the name the certificate carries. With mutual
TLS, give it a client certificate the client CA signed (``--cert``/``--key``): a
server certificate is normally not valid for client authentication.

Exit status: 0 SERVING, 1 anything else (NOT_SERVING, unreachable, refused).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from skillsvc.config import Settings

_WILDCARDS = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}  # noqa: S104


def add_healthcheck_parser(commands: Any) -> None:
    """Register ``healthcheck`` on the ``skillsvc`` subcommand parsers."""
    parser = commands.add_parser(
        "healthcheck",
        help="exit 0 when the running service reports SERVING (container health checks)",
        description="Call grpc.health.v1.Health/Check on the service these settings "
        "describe (TLS included) and exit 0 if it is SERVING, 1 otherwise.",
    )
    parser.add_argument(
        "--addr", help="host:port to dial (default: SKILLSVC_LISTEN_ADDR, wildcard → loopback)"
    )
    parser.add_argument("--service", default="", help="service name to ask about ('' = overall)")
    parser.add_argument("--timeout", type=float, default=3.0, help="seconds (3)")
    parser.add_argument(
        "--cacert", type=Path, help="PEM roots to trust (default: SKILLSVC_TLS_CERT_FILE)"
    )
    parser.add_argument("--cert", type=Path, help="client certificate, for mutual TLS")
    parser.add_argument("--key", type=Path, help="client private key, for mutual TLS")


def probe_address(settings: Settings, addr: str | None = None) -> str:
    """The address to dial: ``addr``, or the listen address with a wildcard made loopback."""
    if addr:
        return addr
    host, _, port = settings.listen_addr.rpartition(":")
    bare = host.strip("[]")
    bare = _WILDCARDS.get(bare, bare)
    return f"[{bare}]:{port}" if ":" in bare else f"{bare}:{port}"


def _certificate_name(chain: bytes) -> str | None:
    """A name the server's certificate is valid for (DNS first, then IP, then CN)."""
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    leaf = x509.load_pem_x509_certificates(chain)[0]
    try:
        names = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        names = None
    if names is not None:
        dns = names.get_values_for_type(x509.DNSName)
        if dns:
            return str(dns[0]).replace("*.", "probe.", 1)
        ips = names.get_values_for_type(x509.IPAddress)
        if ips:
            return str(ips[0])
    common = leaf.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(common[0].value) if common else None


def check(settings: Settings, args: argparse.Namespace) -> tuple[bool, str]:
    """Ask once; (serving, what to print)."""
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    target = probe_address(settings, args.addr)
    options: list[tuple[str, Any]] = []
    if settings.tls_cert_file is None:
        channel = grpc.insecure_channel(target)
    else:
        chain = settings.tls_cert_file.read_bytes()
        roots = args.cacert.read_bytes() if args.cacert else chain
        name = _certificate_name(chain)
        if name:
            options.append(("grpc.ssl_target_name_override", name))
        key = args.key.read_bytes() if args.key else None
        cert = args.cert.read_bytes() if args.cert else None
        credentials = grpc.ssl_channel_credentials(roots, key, cert)
        channel = grpc.secure_channel(target, credentials, options=options)
    with channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=args.service), timeout=args.timeout
            )
        except grpc.RpcError as exc:
            return False, f"{target}: {exc.code().name}: {exc.details()}"
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
    return reply.status == health_pb2.HealthCheckResponse.SERVING, f"{target}: {status}"


def healthcheck_command(settings: Settings, args: argparse.Namespace) -> int:
    """Exit status 0 when SERVING, 1 otherwise; one line on stdout saying which."""
    try:
        serving, line = check(settings, args)
    except (OSError, ValueError) as exc:  # unreadable or malformed certificate files
        serving, line = False, f"cannot probe: {exc}"
    print(line, file=sys.stdout if serving else sys.stderr)
    return 0 if serving else 1
