"""The deployment files (Dockerfile, deploy/) parse, agree with the settings and work.

Grace periods are compared with ``Settings().shutdown_grace_seconds`` (the default of
SKILLSVC_SHUTDOWN_GRACE_SECONDS), ports with what each file's own SKILLSVC_* values
make of them, probes with the health service names the server registers; and the
image's HEALTHCHECK command is run against live servers, plaintext and TLS.
"""

from __future__ import annotations

import asyncio
import configparser
import json
import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml
from grpc_health.v1 import health_pb2, health_pb2_grpc

from skillsvc.config import Settings
from skillsvc.server import LIVENESS_SERVICE_NAME, SERVICE_NAME, App
from tests.auth.certs import CertificateAuthority
from tests.processes import child_env

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
GRACE = Settings().shutdown_grace_seconds
MARGIN = 10
"""Seconds a stop timeout must leave beyond the grace: closing the pool, stopping an
embedded PostgreSQL, exiting."""


def _port(addr: str) -> int:
    return int(addr.rpartition(":")[2])


def _settings(env: dict[str, str]) -> Settings:
    """What a process with these SKILLSVC_* values would run with (values checked)."""
    literal = {k: v for k, v in env.items() if k.startswith("SKILLSVC_") and "$" not in v}
    literal.setdefault("SKILLSVC_AUTH", "jwt")
    literal.setdefault("SKILLSVC_JWT_SECRET", "x" * 32)
    return Settings.from_env(literal)


def _duration(text: str) -> float:
    total, pos = 0.0, 0
    for match in re.finditer(r"(\d+(?:\.\d+)?)(h|ms|m|s)", text):
        assert match.start() == pos, text
        pos = match.end()
        total += float(match[1]) * {"h": 3600, "m": 60, "s": 1, "ms": 0.001}[match[2]]
    assert pos == len(text), text
    return total


# -- Dockerfile --------------------------------------------------------------------


def _dockerfile() -> tuple[list[tuple[str, str]], str]:
    """(instruction, arguments) of the final stage, and the whole text."""
    text = (ROOT / "Dockerfile").read_text()
    joined = re.sub(r"\\\n", " ", text)
    instructions = []
    for raw in joined.splitlines():
        line = raw.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            if word.upper() == "FROM":
                instructions = []
            instructions.append((word.upper(), rest.strip()))
    return instructions, text


def _docker_env(instructions: list[tuple[str, str]]) -> dict[str, str]:
    env: dict[str, str] = {}
    for word, rest in instructions:
        if word == "ENV":
            for item in shlex.split(rest):
                key, _, value = item.partition("=")
                env[key] = value
    return env


def _one(instructions: list[tuple[str, str]], word: str) -> str:
    found = [rest for w, rest in instructions if w == word]
    assert len(found) == 1, (word, found)
    return found[0]


def test_dockerfile_runs_under_tini_with_sigterm_and_a_stop_timeout() -> None:
    instructions, text = _dockerfile()
    entrypoint = json.loads(_one(instructions, "ENTRYPOINT"))
    assert entrypoint[:2] == ["/usr/bin/tini", "--"]
    assert entrypoint[2] == "skillsvc"
    assert json.loads(_one(instructions, "CMD")) == ["serve"]
    installs = [rest for w, rest in instructions if w == "RUN" and "apt-get install" in rest]
    assert any(re.search(r"\btini\b", rest) for rest in installs), "tini comes from Debian"
    assert _one(instructions, "STOPSIGNAL") == "SIGTERM"
    # The stop timeout users must give, written where they read: at least grace+margin,
    # the same in every place the Dockerfile mentions it.
    timeouts = {int(t) for t in re.findall(r"(?:--stop-timeout|docker stop -t) (\d+)", text)}
    assert timeouts, "the Dockerfile must tell users the stop timeout"
    assert timeouts == {_stop_timeout()}
    assert min(timeouts) >= GRACE + MARGIN


def test_dockerfile_exposes_the_ports_its_settings_use() -> None:
    instructions, _ = _dockerfile()
    settings = _settings(_docker_env(instructions))
    exposed = {int(p) for p in _one(instructions, "EXPOSE").split()}
    assert exposed == {_port(settings.listen_addr), _port(settings.metrics_addr)}
    user = _one(instructions, "USER").split(":")[0]
    assert user.isdigit() and int(user) != 0, "numeric, so runAsNonRoot can check it"
    pod = _k8s("Deployment")["spec"]["template"]["spec"]["securityContext"]
    assert pod["runAsUser"] == int(user)


def _healthcheck_argv() -> list[str]:
    instructions, _ = _dockerfile()
    healthcheck = _one(instructions, "HEALTHCHECK")
    command = json.loads(healthcheck.partition("CMD ")[2])
    assert command[0] == "skillsvc"
    # The installed `skillsvc` script is `python -m skillsvc.cli` of this checkout.
    return [sys.executable, "-m", "skillsvc.cli", *command[1:]]


async def _run_healthcheck(env: dict[str, str], *args: str) -> tuple[int, str, str]:
    """(exit status, stdout, stderr); asynchronously, as the servers share this loop."""
    proc = await asyncio.create_subprocess_exec(
        *_healthcheck_argv(),
        *args,
        env=child_env(**env),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(60):
        out, err = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_the_image_healthcheck_command_probes_a_live_server(
    app: App, make_app: Any, tmp_path: Path
) -> None:
    plain = {"SKILLSVC_LISTEN_ADDR": app.address}
    code, out, err = await _run_healthcheck(plain)
    assert code == 0, err
    assert out.strip() == f"{app.address}: SERVING"

    ca = CertificateAuthority()
    cert, key = ca.issue("skillsvc", server=True).write(tmp_path, "server")
    tls_app: App = await make_app(tls_cert_file=cert, tls_key_file=key)
    tls = {
        "SKILLSVC_LISTEN_ADDR": tls_app.address.replace("127.0.0.1", "0.0.0.0"),
        "SKILLSVC_AUTH": "jwt",
        "SKILLSVC_JWT_SECRET": "x" * 32,
        "SKILLSVC_TLS_CERT_FILE": str(cert),
        "SKILLSVC_TLS_KEY_FILE": str(key),
    }
    code, out, err = await _run_healthcheck(tls)
    assert code == 0, err
    assert out.strip() == f"{tls_app.address}: SERVING"  # the wildcard became loopback
    # A plaintext probe fails against the TLS port, and the TLS one once it stops serving.
    code, _, err = await _run_healthcheck({"SKILLSVC_LISTEN_ADDR": tls_app.address})
    assert code == 1, err
    await tls_app.health.enter_graceful_shutdown()
    code, _, err = await _run_healthcheck(tls)
    assert code == 1
    assert "NOT_SERVING" in err


async def test_the_healthcheck_command_presents_a_client_certificate_for_mutual_tls(
    make_app: Any, tmp_path: Path
) -> None:
    ca = CertificateAuthority()
    cert, key = ca.issue("skillsvc", server=True).write(tmp_path, "server")
    probe_cert, probe_key = ca.issue("probe", server=False).write(tmp_path, "probe")
    (tmp_path / "ca.pem").write_bytes(ca.pem)
    app: App = await make_app(
        tls_cert_file=cert, tls_key_file=key, tls_client_ca_file=tmp_path / "ca.pem"
    )
    env = {
        "SKILLSVC_LISTEN_ADDR": app.address,
        "SKILLSVC_TLS_CERT_FILE": str(cert),
        "SKILLSVC_TLS_KEY_FILE": str(key),
        "SKILLSVC_TLS_CLIENT_CA_FILE": str(tmp_path / "ca.pem"),
    }
    code, _, err = await _run_healthcheck(env)
    assert code == 1, "no client certificate: the handshake fails"
    code, out, err = await _run_healthcheck(env, "--cert", str(probe_cert), "--key", str(probe_key))
    assert code == 0, err
    assert out.strip() == f"{app.address}: SERVING"


# -- docker compose ------------------------------------------------------------------


def _compose() -> dict[str, Any]:
    return dict(yaml.safe_load((DEPLOY / "docker-compose.yml").read_text()))


def _stop_timeout() -> int:
    return int(_duration(_compose()["services"]["skillsvc"]["stop_grace_period"]))


def test_compose_wires_postgres_skillsvc_and_prometheus() -> None:
    services = _compose()["services"]
    assert set(services) >= {"postgres", "skillsvc", "prometheus"}
    skillsvc = services["skillsvc"]
    assert _duration(skillsvc["stop_grace_period"]) >= GRACE + MARGIN
    settings = _settings(skillsvc["environment"])
    published = {int(p.rsplit(":", 1)[1]) for p in skillsvc["ports"]}
    assert published == {_port(settings.listen_addr), _port(settings.metrics_addr)}
    assert skillsvc["environment"]["SKILLSVC_DATABASE_URL"].split("@")[1].startswith("postgres:")
    assert skillsvc["depends_on"]["postgres"]["condition"] == "service_healthy"
    # Prometheus loads the alert rules and scrapes skillsvc's metrics port.
    mounts = dict(v.rsplit(":", 1)[0].split(":") for v in services["prometheus"]["volumes"])
    assert mounts["./prometheus/alerts.yml"] == "/etc/prometheus/alerts.yml"
    alerts = DEPLOY / "prometheus" / "alerts.yml"
    # (The rules themselves are the observability work's; promtool checks them.)
    if alerts.exists():
        assert yaml.safe_load(alerts.read_text())["groups"], "alert rule groups"
    config_file = DEPLOY / mounts["./prometheus/prometheus.yml"].replace(
        "/etc/prometheus/", "prometheus/"
    )
    config = yaml.safe_load(config_file.read_text())
    assert "/etc/prometheus/alerts.yml" in config["rule_files"]
    targets = [
        t for job in config["scrape_configs"] for s in job["static_configs"] for t in s["targets"]
    ]
    assert f"skillsvc:{_port(settings.metrics_addr)}" in targets


def test_compose_runs_two_replicas_on_one_database_and_one_bucket() -> None:
    """deploy/compose.yaml: two hosts' worth of skillsvc (README, "Running several
    replicas"): the same database and bucket, a store and published ports each."""
    services = dict(yaml.safe_load((DEPLOY / "compose.yaml").read_text()))["services"]
    replicas = {name: s for name, s in services.items() if name.startswith("skillsvc")}
    assert len(replicas) == 2, replicas
    envs = [r["environment"] for r in replicas.values()]
    assert envs[0] == envs[1], "replicas differ only in ports and volumes"
    env = envs[0]
    # What the image sets (SKILLSVC_DATA_DIR=/data), overridden by the Compose file.
    settings = _settings({**_docker_env(_dockerfile()[0]), **env})
    assert env["SKILLSVC_DATABASE_URL"].split("@")[1].startswith("postgres:")
    # The bucket the one-shot service creates is the one the replicas use, on the S3
    # port SeaweedFS serves, with the credentials of its identities file.
    bucket = env["SKILLSVC_BLOB_STORE"].removeprefix("s3://").split("/")[0]
    assert env["SKILLSVC_BLOB_STORE"].startswith("s3://")
    assert f"s3.bucket.create -name {bucket}" in " ".join(services["s3-bucket"]["command"])
    flags = dict(a.lstrip("-").split("=", 1) for a in services["seaweedfs"]["command"] if "=" in a)
    assert env["AWS_ENDPOINT_URL"] == f"http://seaweedfs:{flags['s3.port']}"
    assert f"seaweedfs:{flags['master.port']}" in services["s3-bucket"]["command"][0]
    mounts = dict(v.split(":")[:2] for v in services["seaweedfs"]["volumes"])
    identities = json.loads(
        (
            DEPLOY / mounts["./seaweedfs/s3.json"].replace("/etc/seaweedfs/", "seaweedfs/")
        ).read_text()
    )["identities"]
    keys = {(c["accessKey"], c["secretKey"]) for i in identities for c in i["credentials"]}
    assert (env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"]) in keys
    published: set[int] = set()
    volumes = set()
    for replica in replicas.values():
        assert _duration(replica["stop_grace_period"]) >= GRACE + MARGIN
        assert replica["depends_on"]["postgres"]["condition"] == "service_healthy"
        inside = {int(p.rsplit(":", 1)[1]) for p in replica["ports"]}
        assert inside == {_port(settings.listen_addr), _port(settings.metrics_addr)}
        outside = {int(p.split(":")[1]) for p in replica["ports"]}
        assert not outside & published, "each replica publishes its own host ports"
        published |= outside
        (volume,) = replica["volumes"]
        name, _, path = volume.partition(":")
        assert Path(path) == settings.data_dir
        volumes.add(name)
    assert len(volumes) == 2, "a store of its own per replica (as on separate hosts)"


# -- Kubernetes ----------------------------------------------------------------------


def _k8s_documents() -> list[dict[str, Any]]:
    documents = []
    for path in sorted((DEPLOY / "kubernetes").glob("*.yaml")):
        documents += [d for d in yaml.safe_load_all(path.read_text()) if d]
    return documents


def _k8s(kind: str) -> dict[str, Any]:
    found = [d for d in _k8s_documents() if d.get("kind") == kind]
    assert len(found) == 1, kind
    return found[0]


def test_kubernetes_manifests_parse_and_reference_each_other() -> None:
    documents = _k8s_documents()
    assert {d["kind"] for d in documents} >= {"Deployment", "Service", "PersistentVolumeClaim"}
    objects = [d for d in documents if d["kind"] != "Kustomization"]
    assert all({"apiVersion", "kind", "metadata"} <= set(d) for d in objects), objects
    kustomization = _k8s("Kustomization")
    for resource in kustomization["resources"]:
        assert (DEPLOY / "kubernetes" / resource).is_file(), resource
    deployment, service, claim = (
        _k8s("Deployment"),
        _k8s("Service"),
        _k8s("PersistentVolumeClaim"),
    )
    pod = deployment["spec"]["template"]
    assert (
        deployment["spec"]["selector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()
    )
    assert service["spec"]["selector"].items() <= pod["metadata"]["labels"].items()
    container = pod["spec"]["containers"][0]
    port_names = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert {p["targetPort"] for p in service["spec"]["ports"]} <= set(port_names)
    claims = [
        v["persistentVolumeClaim"]["claimName"]
        for v in pod["spec"]["volumes"]
        if "persistentVolumeClaim" in v
    ]
    assert claims == [claim["metadata"]["name"]]
    settings = _settings({e["name"]: e["value"] for e in container["env"] if "value" in e})
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert Path(mounts["store"]) == settings.data_dir


def test_kubernetes_probes_use_grpc_health_on_the_listen_port() -> None:
    pod = _k8s("Deployment")["spec"]["template"]["spec"]
    container = pod["containers"][0]
    settings = _settings({e["name"]: e["value"] for e in container["env"] if "value" in e})
    port_names = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert port_names["grpc"] == _port(settings.listen_addr)
    assert port_names["metrics"] == _port(settings.metrics_addr)
    probes = {k: container[k] for k in ("readinessProbe", "livenessProbe", "startupProbe")}
    for probe in probes.values():
        assert probe["grpc"]["port"] == _port(settings.listen_addr)
    # Readiness follows the database and the store; liveness does not, so a database
    # outage takes pods out of the Service without restarting them.
    assert probes["readinessProbe"]["grpc"]["service"] in {"", SERVICE_NAME}
    assert probes["livenessProbe"]["grpc"]["service"] == LIVENESS_SERVICE_NAME
    pre_stop = container["lifecycle"]["preStop"]["exec"]["command"]
    assert pre_stop[0] == "sleep"
    assert pod["terminationGracePeriodSeconds"] >= float(pre_stop[1]) + GRACE + MARGIN - 5


async def test_the_liveness_service_is_serving_while_the_process_runs(app: App) -> None:
    async with grpc.aio.insecure_channel(app.address) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for service in ("", SERVICE_NAME, LIVENESS_SERVICE_NAME):
            reply = await health.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING, service
        await app.health.enter_graceful_shutdown()
        reply = await health.Check(
            health_pb2.HealthCheckRequest(service=LIVENESS_SERVICE_NAME), timeout=5
        )
        assert reply.status == health_pb2.HealthCheckResponse.NOT_SERVING


# -- systemd -------------------------------------------------------------------------


def _unit() -> configparser.ConfigParser:
    # systemd units are INI-like; repeated keys (Environment=) are legal, so not strict.
    parser = configparser.ConfigParser(strict=False, interpolation=None, delimiters=("=",))
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string((DEPLOY / "systemd" / "skillsvc.service").read_text())
    return parser


def test_systemd_unit_gives_the_grace_and_logs_to_journald() -> None:
    unit = _unit()
    assert set(unit.sections()) == {"Unit", "Service", "Install"}
    service = unit["Service"]
    assert service["ExecStart"].split()[-1] == "serve"
    assert service["KillSignal"] == "SIGTERM"
    assert service["KillMode"] == "mixed"
    assert _duration(service["TimeoutStopSec"] + "s") >= GRACE + MARGIN
    assert float(service["TimeoutStopSec"]) == _stop_timeout()
    assert service["ExecReload"].endswith("-HUP $MAINPID"), "systemctl reload rotates keys"
    assert service["StandardOutput"] == service["StandardError"] == "journal"
    assert unit["Install"]["WantedBy"] == "multi-user.target"


@pytest.mark.skipif(
    subprocess.run(["which", "systemd-analyze"], capture_output=True).returncode != 0,
    reason="systemd-analyze is not installed",
)
def test_systemd_unit_passes_systemd_analyze(tmp_path: Path) -> None:
    # The unit names /opt/skillsvc/bin/skillsvc; verify a copy pointing at this checkout's.
    text = (DEPLOY / "systemd" / "skillsvc.service").read_text()
    text = text.replace("/opt/skillsvc/bin/skillsvc", str(Path(sys.executable).parent / "skillsvc"))
    unit = tmp_path / "skillsvc.service"
    unit.write_text(text)
    result = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", str(unit)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    # A bad directive is only a warning naming the file ("Failed to parse ..., ignoring").
    problems = [line for line in result.stderr.splitlines() if str(unit) in line]
    assert not problems, result.stderr
