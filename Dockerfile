# Orchy for Python. State lives in the embedded Redis under /data (set REDIS_URL to use a Redis
# server or cluster instead). The server listens on every interface, so it requires tokens: it
# reads its API keys from /run/secrets/orchy_api_keys (README: Security, Authentication) and
# refuses to start without them:
#   docker run -p 8080:8080 -v orchy:/data \
#     -v "$PWD/orchy_api_keys.json:/run/secrets/orchy_api_keys:ro" orchy
# (or a Compose/Swarm secret named orchy_api_keys; or ORCHY_OIDC_ISSUER=... for OIDC tokens).
# To serve without authentication on a network you trust, say so:
#   docker run -p 8080:8080 -v orchy:/data -e ORCHY_API_KEYS_FILE= -e ORCHY_INSECURE=true orchy
FROM python:3.11-slim AS build
RUN apt-get update && apt-get install -y --no-install-recommends build-essential \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml README.md ./
COPY app ./app
COPY orchy ./orchy
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.11-slim
# The embedded Redis runs on jemalloc when the system has it (README: Redis, durability).
RUN apt-get update && apt-get install -y --no-install-recommends libjemalloc2 \
    && rm -rf /var/lib/apt/lists/*
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels
WORKDIR /srv/orchy
COPY workflows ./workflows
ENV ORCHY_DATA_DIR=/data
ENV ORCHY_API_KEYS_FILE=/run/secrets/orchy_api_keys
VOLUME /data
EXPOSE 8080
CMD ["orchy", "serve", "--host", "0.0.0.0"]
