"""Security settings are checked at start-up, naming the variable at fault."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from skillsvc.config import ConfigError, Settings
from tests.auth.certs import CertificateAuthority
from tests.auth.conftest import SECRET
from tests.processes import child_env, free_port


@pytest.mark.parametrize("addr", ["0.0.0.0:50051", "[::]:50051", "10.1.2.3:1", "skills.example:1"])
def test_auth_none_is_refused_off_loopback(addr: str) -> None:
    with pytest.raises(ConfigError) as info:
        Settings.from_env({"SKILLSVC_LISTEN_ADDR": addr})
    message = str(info.value)
    assert message.startswith("SKILLSVC_AUTH:")
    assert "loopback" in message


@pytest.mark.parametrize("addr", ["127.0.0.1:1", "[::1]:1", "localhost:1", "127.0.0.2:1"])
def test_auth_none_is_allowed_on_loopback(addr: str) -> None:
    assert Settings.from_env({"SKILLSVC_LISTEN_ADDR": addr}).auth == "none"


def test_tls_does_not_lift_the_loopback_rule(tmp_path: Path) -> None:
    cert, key = CertificateAuthority().issue("server", server=True).write(tmp_path, "server")
    with pytest.raises(ConfigError, match=r"^SKILLSVC_AUTH:"):
        Settings.from_env(
            {
                "SKILLSVC_LISTEN_ADDR": "0.0.0.0:50051",
                "SKILLSVC_TLS_CERT_FILE": str(cert),
                "SKILLSVC_TLS_KEY_FILE": str(key),
            }
        )


def test_jwt_is_allowed_anywhere() -> None:
    settings = Settings.from_env(
        {
            "SKILLSVC_LISTEN_ADDR": "0.0.0.0:50051",
            "SKILLSVC_AUTH": "jwt",
            "SKILLSVC_JWT_SECRET": SECRET,
            "SKILLSVC_JWT_LEEWAY_SECONDS": "5",
            "SKILLSVC_JWT_ISSUER": "https://idp.example",
            "SKILLSVC_JWT_AUDIENCE": "skillsvc",
        }
    )
    assert settings.auth == "jwt"
    assert settings.jwt_leeway_seconds == 5.0
    assert settings.jwt_issuer == "https://idp.example"
    assert SECRET not in repr(settings)


def test_serve_refuses_to_start_on_all_interfaces_without_auth() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "skillsvc.cli", "serve"],
        env=child_env(SKILLSVC_LISTEN_ADDR=f"0.0.0.0:{free_port()}"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "SKILLSVC_AUTH" in result.stderr
    assert "loopback" in result.stderr


def _pem_public(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _security_cases(tmp: Path) -> list[tuple[dict[str, str], str, str]]:
    """(environment, variable named, words in the message)."""
    ca = CertificateAuthority()
    cert, key = ca.issue("server", server=True).write(tmp, "server")
    _other_cert, other_key = ca.issue("other", server=True).write(tmp, "other")
    (tmp / "ca.pem").write_bytes(ca.pem)
    (tmp / "garbage.pem").write_text("not a pem\n")
    (tmp / "small.pub").write_bytes(
        _pem_public(rsa.generate_private_key(public_exponent=65537, key_size=1024))
    )
    (tmp / "p384.pub").write_bytes(_pem_public(ec.generate_private_key(ec.SECP384R1())))
    (tmp / "rsa.pub").write_bytes(
        _pem_public(rsa.generate_private_key(public_exponent=65537, key_size=2048))
    )
    jwt = {"SKILLSVC_AUTH": "jwt"}
    return [
        ({"SKILLSVC_AUTH": "oauth"}, "SKILLSVC_AUTH", "none or jwt"),
        (jwt, "SKILLSVC_AUTH", "SKILLSVC_JWT_SECRET"),
        ({**jwt, "SKILLSVC_JWT_SECRET": "short"}, "SKILLSVC_JWT_SECRET", "32 bytes"),
        (
            {
                **jwt,
                "SKILLSVC_JWT_SECRET": SECRET,
                "SKILLSVC_JWT_PUBLIC_KEY_FILE": str(tmp / "rsa.pub"),
            },
            "SKILLSVC_JWT_SECRET",
            "not both",
        ),
        (
            {**jwt, "SKILLSVC_JWT_PUBLIC_KEY_FILE": str(tmp / "missing.pub")},
            "SKILLSVC_JWT_PUBLIC_KEY_FILE",
            "cannot read",
        ),
        (
            {**jwt, "SKILLSVC_JWT_PUBLIC_KEY_FILE": str(tmp / "garbage.pem")},
            "SKILLSVC_JWT_PUBLIC_KEY_FILE",
            "PEM",
        ),
        (
            {**jwt, "SKILLSVC_JWT_PUBLIC_KEY_FILE": str(tmp / "small.pub")},
            "SKILLSVC_JWT_PUBLIC_KEY_FILE",
            "2048",
        ),
        (
            {**jwt, "SKILLSVC_JWT_PUBLIC_KEY_FILE": str(tmp / "p384.pub")},
            "SKILLSVC_JWT_PUBLIC_KEY_FILE",
            "P-256",
        ),
        ({"SKILLSVC_JWT_LEEWAY_SECONDS": "-1"}, "SKILLSVC_JWT_LEEWAY_SECONDS", "negative"),
        ({"SKILLSVC_TLS_CERT_FILE": str(cert)}, "SKILLSVC_TLS_KEY_FILE", "required"),
        ({"SKILLSVC_TLS_KEY_FILE": str(key)}, "SKILLSVC_TLS_CERT_FILE", "required"),
        (
            {"SKILLSVC_TLS_CLIENT_CA_FILE": str(tmp / "ca.pem")},
            "SKILLSVC_TLS_CLIENT_CA_FILE",
            "SKILLSVC_TLS_CERT_FILE",
        ),
        (
            {"SKILLSVC_TLS_CERT_FILE": str(tmp / "nope.crt"), "SKILLSVC_TLS_KEY_FILE": str(key)},
            "SKILLSVC_TLS_CERT_FILE",
            "cannot read",
        ),
        (
            {
                "SKILLSVC_TLS_CERT_FILE": str(tmp / "garbage.pem"),
                "SKILLSVC_TLS_KEY_FILE": str(key),
            },
            "SKILLSVC_TLS_CERT_FILE",
            "PEM",
        ),
        (
            {
                "SKILLSVC_TLS_CERT_FILE": str(cert),
                "SKILLSVC_TLS_KEY_FILE": str(tmp / "garbage.pem"),
            },
            "SKILLSVC_TLS_KEY_FILE",
            "PEM",
        ),
        (
            {"SKILLSVC_TLS_CERT_FILE": str(cert), "SKILLSVC_TLS_KEY_FILE": str(other_key)},
            "SKILLSVC_TLS_KEY_FILE",
            "does not belong",
        ),
        (
            {
                "SKILLSVC_TLS_CERT_FILE": str(cert),
                "SKILLSVC_TLS_KEY_FILE": str(key),
                "SKILLSVC_TLS_CLIENT_CA_FILE": str(tmp / "garbage.pem"),
            },
            "SKILLSVC_TLS_CLIENT_CA_FILE",
            "PEM",
        ),
        ({"SKILLSVC_MAX_SKILLS_PER_TENANT": "0"}, "SKILLSVC_MAX_SKILLS_PER_TENANT", "greater"),
        ({"SKILLSVC_MAX_VERSIONS_PER_SKILL": "x"}, "SKILLSVC_MAX_VERSIONS_PER_SKILL", "integer"),
    ]


def test_bad_security_settings_name_the_variable(tmp_path: Path) -> None:
    for env, variable, words in _security_cases(tmp_path):
        with pytest.raises(ConfigError) as info:
            Settings.from_env(env)
        message = str(info.value)
        assert message.startswith(f"{variable}:"), (env, message)
        assert words in message, (env, message)


def test_good_tls_and_key_files_are_accepted(tmp_path: Path) -> None:
    ca = CertificateAuthority()
    cert, key = ca.issue("server", server=True).write(tmp_path, "server")
    (tmp_path / "ca.pem").write_bytes(ca.pem)
    (tmp_path / "es.pub").write_bytes(_pem_public(ec.generate_private_key(ec.SECP256R1())))
    settings = Settings.from_env(
        {
            "SKILLSVC_AUTH": "jwt",
            "SKILLSVC_JWT_PUBLIC_KEY_FILE": str(tmp_path / "es.pub"),
            "SKILLSVC_TLS_CERT_FILE": str(cert),
            "SKILLSVC_TLS_KEY_FILE": str(key),
            "SKILLSVC_TLS_CLIENT_CA_FILE": str(tmp_path / "ca.pem"),
        }
    )
    assert settings.tls_client_ca_file == tmp_path / "ca.pem"
