# raybot: Slack chat-ops for Ray clusters on EMR Serverless Spark.
#   docker build -t raybot .
#   docker run --rm -e SLACK_BOT_TOKEN -e SLACK_APP_TOKEN -v "$PWD/raybot.yaml:/etc/raybot/raybot.yaml:ro" raybot
# One image for both stores: left as is, RAYBOT_DATABASE is a SQLite file under /data (one process;
# mount a volume there to keep it); several replicas set it to a postgresql:// URL instead
# (deploy/kubernetes/deployment.yaml). No VOLUME: the image does not decide where state lives.
# Linted by .ci/lint-deploy (hadolint). Production builds may pin the base image by digest (@sha256:...) on top of the tag.

# --- build: turn the project and its dependencies into wheels -----------------------------------
FROM python:3.11-slim-bookworm AS builder

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1
WORKDIR /src
# Only what the package is built from (.dockerignore keeps the rest of the tree out of the context).
COPY pyproject.toml README.md ./
COPY bot ./bot
COPY commands ./commands
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

# --- run: the wheels on a clean slim image, no compilers, not root -------------------------------
FROM python:3.11-slim-bookworm

LABEL org.opencontainers.image.title="raybot" \
      org.opencontainers.image.description="Slack chat-ops for Ray clusters on Alibaba Cloud EMR Serverless Spark"

ENV PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    RAYBOT_LOG_FORMAT=json \
    RAYBOT_CONFIG=/etc/raybot/raybot.yaml \
    RAYBOT_DATABASE=/data/raybot.db \
    RAYBOT_HTTP_PORT=3000

# A fixed numeric uid/gid so Kubernetes' runAsNonRoot can verify it; /data is writable by it, for
# the default SQLite file only (with PostgreSQL nothing is written there).
RUN groupadd --system --gid 10001 raybot \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
       --shell /usr/sbin/nologin raybot \
    && mkdir -p /data /etc/raybot \
    && chown 10001:10001 /data

COPY --from=builder /wheels /tmp/wheels
# --no-index: only the wheels built above, nothing fetched at this stage.
RUN pip install --no-cache-dir --no-index --find-links=/tmp/wheels /tmp/wheels/*.whl \
    && rm -rf /tmp/wheels

WORKDIR /app
USER 10001:10001

EXPOSE 3000
# slim has no curl: ask /healthz with the standard library, bypassing any proxy variables.
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request as u; u.build_opener(u.ProxyHandler({})).open('http://127.0.0.1:%s/healthz' % os.environ.get('RAYBOT_HTTP_PORT', '3000'), timeout=4)"]

STOPSIGNAL SIGTERM
ENTRYPOINT ["raybot"]
CMD ["serve"]
