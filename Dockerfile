# skillsvc container image (first version).
#
#   docker build -t skillsvc .
#   docker run -p 50051:50051 -v skillsvc-data:/data \
#     -e SKILLSVC_AUTH=jwt -e SKILLSVC_JWT_SECRET="$(openssl rand -hex 32)" skillsvc
#
# The image listens on 0.0.0.0, where SKILLSVC_AUTH=none (every caller an admin) is
# refused: give it a JWT secret or public key (README, "Security"). The HEALTHCHECK
# below probes in plaintext; replace it when SKILLSVC_TLS_* are set.
#
# Without SKILLSVC_DATABASE_URL the embedded PostgreSQL runs inside the container with
# its data under /data/postgres; mount /data to keep it. In production set
# SKILLSVC_DATABASE_URL to a managed PostgreSQL (14+).

FROM python:3.11-slim-bookworm AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY skillsvc ./skillsvc
RUN python -m venv /opt/skillsvc \
 && /opt/skillsvc/bin/pip install --no-cache-dir --upgrade pip \
 && /opt/skillsvc/bin/pip install --no-cache-dir .

FROM python:3.11-slim-bookworm
# The embedded PostgreSQL refuses to run as root; the service runs as its own user.
RUN groupadd --system skillsvc \
 && useradd --system --gid skillsvc --home-dir /data --shell /usr/sbin/nologin skillsvc \
 && mkdir -p /data \
 && chown skillsvc:skillsvc /data
COPY --from=build /opt/skillsvc /opt/skillsvc
ENV PATH=/opt/skillsvc/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    SKILLSVC_DATA_DIR=/data \
    SKILLSVC_LISTEN_ADDR=0.0.0.0:50051 \
    SKILLSVC_METRICS_ADDR=0.0.0.0:9464 \
    XDG_RUNTIME_DIR=/tmp
USER skillsvc
WORKDIR /data
VOLUME ["/data"]
EXPOSE 50051 9464
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s \
  CMD ["python", "-c", "import grpc, sys; from grpc_health.v1 import health_pb2 as h, health_pb2_grpc as g; r = g.HealthStub(grpc.insecure_channel('127.0.0.1:50051')).Check(h.HealthCheckRequest(), timeout=2); sys.exit(0 if r.status == h.HealthCheckResponse.SERVING else 1)"]
# SIGTERM (docker stop) starts the graceful shutdown; give it the grace period.
STOPSIGNAL SIGTERM
ENTRYPOINT ["skillsvc"]
CMD ["serve"]
