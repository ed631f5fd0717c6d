"""Opens the Redis client that ``REDIS_URL`` names: a server, a cluster, or the embedded one.

URL forms: ``redis://host:port/db``, ``rediss://...``, ``unix:///path.sock``, and
``redis+cluster://host:port`` (any node of a Redis Cluster).
"""

from __future__ import annotations

from dataclasses import dataclass

from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster

from app.settings import Settings
from app.store.embedded import EmbeddedRedis, data_dir_path
from app.store.store import RedisClient

CLUSTER_SCHEME = "redis+cluster://"


def is_cluster_url(url: str) -> bool:
    return url.startswith(CLUSTER_SCHEME)


def client_for_url(url: str) -> RedisClient:
    if is_cluster_url(url):
        return RedisCluster.from_url("redis://" + url[len(CLUSTER_SCHEME) :], decode_responses=True)
    return Redis.from_url(url, decode_responses=True)


def pubsub_client_for_url(url: str) -> Redis:
    """A plain client for SUBSCRIBE: cluster pub/sub reaches every node, so any one will do."""
    if is_cluster_url(url):
        return Redis.from_url("redis://" + url[len(CLUSTER_SCHEME) :], decode_responses=True)
    return Redis.from_url(url, decode_responses=True)


@dataclass
class Connection:
    url: str
    embedded: EmbeddedRedis | None

    def client(self) -> RedisClient:
        return client_for_url(self.url)

    def pubsub_client(self) -> Redis:
        return pubsub_client_for_url(self.url)

    def close(self) -> None:
        if self.embedded is not None:
            self.embedded.stop()


def open_connection(settings: Settings) -> Connection:
    """Resolves where Redis is, starting the embedded server when no URL is set."""
    if settings.redis_url:
        return Connection(url=settings.redis_url, embedded=None)
    embedded = EmbeddedRedis(data_dir_path(settings.data_dir))
    embedded.start(settings.embedded_start_timeout_seconds)
    return Connection(url=embedded.url, embedded=embedded)
