"""Opens the Redis client that ``REDIS_URL`` names: a server, a cluster, or the embedded one.

URL forms: ``redis://host:port/db``, ``rediss://...``, ``unix:///path.sock``, and
``redis+cluster://host:port`` (any node of a Redis Cluster).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import hiredis
from redis.asyncio import ConnectionPool, Redis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.connection import Connection as TCPConnection
from redis.asyncio.connection import SSLConnection, UnixDomainSocketConnection
from redis.exceptions import DataError

from app.settings import Settings
from app.store.embedded import EmbeddedRedis, data_dir_path
from app.store.store import RedisClient

CLUSTER_SCHEME = "redis+cluster://"
DEFAULT_TIMEOUT_SECONDS = 5.0


def _pack(args: tuple[Any, ...]) -> bytes:
    """One command in RESP, packed by hiredis in C. redis-py's asyncio connections pack in
    Python, which costs more than the rest of a pipelined transition on the server side."""
    first = args[0]
    if isinstance(first, str | bytes) and len(first.split()) > 1:  # "CONFIG GET" and the like
        args = (*first.split(), *args[1:])
    try:
        return bytes(hiredis.pack_command(args))
    except TypeError:
        views: tuple[Any, ...] = tuple(
            bytes(a) if isinstance(a, bytearray | memoryview) else a for a in args
        )
        try:
            return bytes(hiredis.pack_command(views))
        except TypeError as error:
            raise DataError(str(error)) from error


class _HiredisPacking:
    def pack_command(self, *args: Any) -> list[bytes]:
        return [_pack(args)]

    def pack_commands(self, commands: Iterable[Iterable[Any]]) -> list[bytes]:
        return [b"".join(_pack(tuple(command)) for command in commands)]


class PackedConnection(_HiredisPacking, TCPConnection):
    pass


class PackedUnixConnection(_HiredisPacking, UnixDomainSocketConnection):
    pass


class PackedSSLConnection(_HiredisPacking, SSLConnection):
    pass


_PACKED = {
    TCPConnection: PackedConnection,
    UnixDomainSocketConnection: PackedUnixConnection,
    SSLConnection: PackedSSLConnection,
}


def redacted(url: str) -> str:
    """``url`` without its password, for logs."""
    scheme, separator, rest = url.partition("://")
    credentials, at, location = rest.rpartition("@")
    if not separator or not at or ":" not in credentials:
        return url
    return f"{scheme}://{credentials.split(':', 1)[0]}:***@{location}"


def is_cluster_url(url: str) -> bool:
    return url.startswith(CLUSTER_SCHEME)


def client_for_url(url: str, timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS) -> RedisClient:
    """A client whose calls give up after ``timeout_seconds``: a frozen Redis must turn into
    503 answers, never into requests that hang."""
    options: dict[str, Any] = {
        "decode_responses": True,
        "socket_timeout": timeout_seconds,
        "socket_connect_timeout": timeout_seconds,
    }
    if is_cluster_url(url):
        return RedisCluster.from_url(
            "redis://" + url[len(CLUSTER_SCHEME) :], connection_class=PackedConnection, **options
        )
    pool = ConnectionPool.from_url(url, **options)
    pool.connection_class = _PACKED.get(pool.connection_class, pool.connection_class)
    return Redis(connection_pool=pool)


def pubsub_client_for_url(url: str, timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS) -> Redis:
    """A plain client for SUBSCRIBE: cluster pub/sub reaches every node, so any one will do.
    It waits for messages without a read timeout; connecting still times out."""
    if is_cluster_url(url):
        url = "redis://" + url[len(CLUSTER_SCHEME) :]
    return Redis.from_url(url, decode_responses=True, socket_connect_timeout=timeout_seconds)


@dataclass
class Connection:
    url: str
    embedded: EmbeddedRedis | None

    def client(self, timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS) -> RedisClient:
        return client_for_url(self.url, timeout_seconds)

    def pubsub_client(self, timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS) -> Redis:
        return pubsub_client_for_url(self.url, timeout_seconds)

    def close(self) -> None:
        if self.embedded is not None:
            self.embedded.stop()


def open_connection(settings: Settings) -> Connection:
    """Resolves where Redis is, starting the embedded server when no URL is set."""
    if settings.redis_url:
        return Connection(url=settings.redis_url, embedded=None)
    embedded = EmbeddedRedis(data_dir_path(settings.data_dir), settings.embedded_allocator)
    embedded.start(settings.embedded_start_timeout_seconds)
    return Connection(url=embedded.url, embedded=embedded)
