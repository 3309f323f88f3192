"""Security settings are checked at start-up, naming the variable at fault."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from pathlib import Path

import jwt as pyjwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from skillsvc.auth import JwtAuthentication
from skillsvc.config import ConfigError, Settings
from skillsvc.server import build_security
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


def _oct(kid: str, secret: bytes) -> dict[str, str]:
    return {"kty": "oct", "kid": kid, "k": base64.urlsafe_b64encode(secret).decode().rstrip("=")}


_BAD_JWKS: list[tuple[str, object, str]] = [
    ("list", [], "not a JWKS document"),
    ("empty", {"keys": []}, "holds no key"),
    ("no-kid", {"keys": [{"kty": "oct", "k": "AAAA"}]}, "key 0: needs a kid"),
    ("short-oct", {"keys": [_oct("k1", b"x" * 8)]}, "key 'k1': must be at least 32 bytes"),
    ("dup-kid", {"keys": [_oct("k1", b"x" * 32), _oct("k1", b"y" * 32)]}, "kid k1 appears"),
    ("enc", {"keys": [{**_oct("k1", b"x" * 32), "use": "enc"}]}, "use must be sig"),
    ("bad-alg", {"keys": [{**_oct("k1", b"x" * 32), "alg": "RS256"}]}, "key 'k1'"),
    ("okp", {"keys": [{"kty": "OKP", "kid": "k1", "crv": "Ed25519", "x": "AA"}]}, "kty"),
    (
        "private",
        {
            "keys": [
                {
                    **json.loads(
                        pyjwt.algorithms.ECAlgorithm.to_jwk(ec.generate_private_key(ec.SECP256R1()))
                    ),
                    "kid": "k1",
                }
            ]
        },
        "key 'k1': holds a private key",
    ),
    (
        "rsa-1024",
        {
            "keys": [
                {
                    **json.loads(
                        pyjwt.algorithms.RSAAlgorithm.to_jwk(
                            rsa.generate_private_key(
                                public_exponent=65537, key_size=1024
                            ).public_key()
                        )
                    ),
                    "kid": "small",
                }
            ]
        },
        "key 'small': RSA keys need at least 2048 bits",
    ),
]


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
    (tmp / "short-secrets").write_text(f"# rotation\n{SECRET}\nshort\n")
    (tmp / "no-secrets").write_text("# nothing yet\n\n")
    for name, doc, _words in _BAD_JWKS:
        (tmp / f"{name}.jwks").write_text(json.dumps(doc))
    jwt = {"SKILLSVC_AUTH": "jwt"}
    return [
        ({"SKILLSVC_AUTH": "oauth"}, "SKILLSVC_AUTH", "none or jwt"),
        (jwt, "SKILLSVC_AUTH", "SKILLSVC_JWT_SECRET"),
        ({**jwt, "SKILLSVC_JWT_SECRET": "short"}, "SKILLSVC_JWT_SECRET", "32 bytes"),
        (
            {**jwt, "SKILLSVC_JWT_SECRETS_FILE": str(tmp / "missing")},
            "SKILLSVC_JWT_SECRETS_FILE",
            "cannot read",
        ),
        (
            {**jwt, "SKILLSVC_JWT_SECRETS_FILE": str(tmp / "short-secrets")},
            "SKILLSVC_JWT_SECRETS_FILE",
            "line 3: must be at least 32 bytes",
        ),
        (
            {**jwt, "SKILLSVC_JWT_SECRETS_FILE": str(tmp / "no-secrets")},
            "SKILLSVC_JWT_SECRETS_FILE",
            "no secret",
        ),
        (
            {**jwt, "SKILLSVC_JWT_JWKS_FILE": str(tmp / "garbage.pem")},
            "SKILLSVC_JWT_JWKS_FILE",
            "not JSON",
        ),
        *[
            (
                {**jwt, "SKILLSVC_JWT_JWKS_FILE": str(tmp / f"{name}.jwks")},
                "SKILLSVC_JWT_JWKS_FILE",
                words,
            )
            for name, _doc, words in _BAD_JWKS
        ],
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
    # Settings check the values; the composition root reads the files. Either stops
    # the process before anything starts, naming the variable.
    for env, variable, words in _security_cases(tmp_path):
        with pytest.raises(ConfigError) as info:
            build_security(Settings.from_env(env))
        message = str(info.value)
        assert message.startswith(f"{variable}:"), (env, message)
        assert words in message, (env, message)


def test_settings_alone_import_no_server_dependency() -> None:
    # Settings check values only: building them loads neither the database driver,
    # nor gRPC, nor the JWT library (the composition root builds auth and TLS).
    code = (
        "import sys; from skillsvc.config import Settings; Settings.from_env({}); "
        "Settings.from_env({'SKILLSVC_AUTH': 'jwt', 'SKILLSVC_JWT_SECRET': 'x' * 32}); "
        "loaded = [m for m in ('asyncpg', 'grpc', 'jwt', 'cryptography') if m in sys.modules]; "
        "assert not loaded, loaded"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], env=child_env(), capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr


def test_every_key_source_may_be_combined(tmp_path: Path) -> None:
    # Rotating from a secret to a key pair (or to a JWKS) needs both at once.
    (tmp_path / "rsa.pub").write_bytes(
        _pem_public(rsa.generate_private_key(public_exponent=65537, key_size=2048))
    )
    (tmp_path / "secrets").write_text(f"{SECRET}\n{SECRET[::-1]}\n{SECRET}\n")
    (tmp_path / "jwks").write_text(json.dumps({"keys": [_oct("k1", b"z" * 32)]}))
    settings = Settings.from_env(
        {
            "SKILLSVC_AUTH": "jwt",
            "SKILLSVC_JWT_SECRET": SECRET,
            "SKILLSVC_JWT_SECRETS_FILE": str(tmp_path / "secrets"),
            "SKILLSVC_JWT_PUBLIC_KEY_FILE": str(tmp_path / "rsa.pub"),
            "SKILLSVC_JWT_JWKS_FILE": str(tmp_path / "jwks"),
        }
    )
    authenticator = build_security(settings).authenticator
    assert isinstance(authenticator, JwtAuthentication)
    # Duplicated secrets are kept once; the public key comes after the secrets.
    assert [k.algorithm for k in authenticator.keys.unnamed] == ["HS256", "HS256", "RS256"]
    assert [(k.kid, k.algorithm) for k in authenticator.keys.named] == [("k1", "HS256")]
    assert SECRET not in repr(authenticator.keys)


def test_serve_with_an_unreadable_key_file_exits_2(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "skillsvc.cli", "serve"],
        env=child_env(
            SKILLSVC_LISTEN_ADDR=f"127.0.0.1:{free_port()}",
            SKILLSVC_AUTH="jwt",
            SKILLSVC_JWT_JWKS_FILE=str(tmp_path / "missing.json"),
            SKILLSVC_DATA_DIR=str(tmp_path / "data"),
        ),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2, result.stderr
    assert "configuration error: SKILLSVC_JWT_JWKS_FILE: cannot read" in result.stderr


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
    security = build_security(settings)
    assert security.tls is not None
    assert security.tls.client_ca == (tmp_path / "ca.pem").read_bytes()
