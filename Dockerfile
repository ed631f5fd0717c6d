# Orchy for Python: `docker run -p 8080:8080 -v orchy:/data orchy` keeps state in the embedded
# Redis under /data; set REDIS_URL to use a Redis server or cluster instead.
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
VOLUME /data
EXPOSE 8080
CMD ["orchy", "serve", "--host", "0.0.0.0"]
