# skillsvc container image.
#
#   docker build -t skillsvc .
#   docker run --stop-timeout 45 -p 50051:50051 -p 9464:9464 -v skillsvc-data:/data \
#     -e SKILLSVC_AUTH=jwt -e SKILLSVC_JWT_SECRET="$(openssl rand -hex 32)" skillsvc
#
# STOP TIMEOUT: on SIGTERM skillsvc gives running calls and installs
# SKILLSVC_SHUTDOWN_GRACE_SECONDS (30 s by default), then stops the embedded
# PostgreSQL. Docker's default stop timeout is 10 s, after which it sends SIGKILL and
# interrupts installs: run with `--stop-timeout 45` (or `docker stop -t 45`), Compose
# `stop_grace_period: 45s`, Kubernetes `terminationGracePeriodSeconds: 45` (the files
# in deploy/ do). Keep it about 15 s above the grace if you change the grace.
#
# The image listens on 0.0.0.0, where SKILLSVC_AUTH=none (every caller an admin) is
# refused: give it a JWT secret, secrets file, public key or JWKS (README, "Security").
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
# tini (Debian's) is PID 1: it forwards SIGTERM to skillsvc and reaps the embedded
# PostgreSQL's exited children, which Python as PID 1 would leave as zombies. Not
# `tini -g`: PostgreSQL must keep serving while skillsvc drains during the grace, and
# skillsvc stops it itself afterwards.
RUN apt-get update \
 && apt-get install -y --no-install-recommends tini \
 && rm -rf /var/lib/apt/lists/*
# The embedded PostgreSQL refuses to run as root; the service runs as its own user,
# with a fixed numeric id so Kubernetes' runAsNonRoot can check it (and fsGroup match).
RUN groupadd --system --gid 10001 skillsvc \
 && useradd --system --uid 10001 --gid skillsvc --home-dir /data --shell /usr/sbin/nologin skillsvc \
 && mkdir -p /data \
 && chown skillsvc:skillsvc /data
COPY --from=build /opt/skillsvc /opt/skillsvc
ENV PATH=/opt/skillsvc/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    SKILLSVC_DATA_DIR=/data \
    SKILLSVC_LISTEN_ADDR=0.0.0.0:50051 \
    SKILLSVC_METRICS_ADDR=0.0.0.0:9464 \
    XDG_RUNTIME_DIR=/tmp
USER 10001:10001
WORKDIR /data
VOLUME ["/data"]
# 50051: gRPC (health, reflection, the API); 9464: Prometheus /metrics.
EXPOSE 50051 9464
# `skillsvc healthcheck` reads the same SKILLSVC_* settings as the server: it dials the
# listen address and speaks TLS when SKILLSVC_TLS_CERT_FILE is set. With mutual TLS
# add `--cert/--key` of a client certificate (README, "Deployment").
HEALTHCHECK --interval=10s --timeout=5s --start-period=60s --retries=3 \
  CMD ["skillsvc", "healthcheck"]
# SIGTERM (docker stop) starts the graceful shutdown; see STOP TIMEOUT above.
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/bin/tini", "--", "skillsvc"]
CMD ["serve"]
