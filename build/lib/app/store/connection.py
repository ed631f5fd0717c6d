"""Opens the Redis client that ``REDIS_URL`` names: a server, a cluster, or the embedded one.

URL forms: ``redis://host:port/db``, ``rediss://...`` (TLS), ``unix:///path.sock``, and
``redis+cluster://host:port`` or ``rediss+cluster://host:port`` (any node of a Redis Cluster).
A password, or an ACL user and its password, go in the URL (``redis://user:pass@host``); the
CA of a TLS server and a client certificate in ``ORCHY_REDIS_CA_CERTS``,
``ORCHY_REDIS_CLIENT_CERT`` and ``ORCHY_REDIS_CLIENT_KEY`` (or redis-py's ``ssl_ca_certs``,
``ssl_certfile`` and ``ssl_keyfile`` query parameters). Logs show a URL through ``redacted``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlencode

import hiredis
from redis.asyncio import ConnectionPool, Redis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.connection import Connection as TCPConnection
from redis.asyncio.connection import SSLConnection, UnixDomainSocketConnection
from redis.exceptions import DataError, RedisError

from app.settings import Settings
from app.store.embedded import EmbeddedRedis, data_dir_path
from app.store.store import RedisClient

CLUSTER_SCHEMES = {"redis+cluster://": "redis://", "rediss+cluster://": "rediss://"}
TLS_SCHEMES = ("rediss://", "rediss+cluster://")
DEFAULT_TIMEOUT_SECONDS = 5.0
# Query parameters of a URL whose values are not written in logs.
SECRET_PARAMETERS = frozenset({"password", "ssl_password", "ssl_keyfile_password"})
HIDDEN = "***"


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


class RedisUnusable(Exception):
    """Redis cannot be used as configured; the message names the URL, redacted."""


def redacted(url: str) -> str:
    """``url`` without its password (``user:***@``) nor secret query values, for logs."""
    scheme, separator, rest = url.partition("://")
    if not separator:
        return url
    rest, question, query = rest.partition("?")
    credentials, at, location = rest.rpartition("@")
    if at and ":" in credentials:
        rest = f"{credentials.split(':', 1)[0]}:{HIDDEN}@{location}"
    if question:
        pairs = parse_qsl(query, keep_blank_values=True)
        shown = [(name, HIDDEN if name in SECRET_PARAMETERS else value) for name, value in pairs]
        rest += "?" + urlencode(shown, safe="*/")
    return f"{scheme}://{rest}"


def is_cluster_url(url: str) -> bool:
    return url.startswith(tuple(CLUSTER_SCHEMES))


def is_tls_url(url: str) -> bool:
    return url.startswith(TLS_SCHEMES)


def _node_url(url: str) -> str:
    """A cluster URL as the URL of the node it names (``redis://`` or ``rediss://``)."""
    for scheme, node_scheme in CLUSTER_SCHEMES.items():
        if url.startswith(scheme):
            return node_scheme + url[len(scheme) :]
    return url


@dataclass(frozen=True)
class RedisTLS:
    """The files of a TLS connection to Redis: the CA that signs the server's certificate,
    and the client's certificate and key for a server that asks for one."""

    ca_certs: str = ""
    certfile: str = ""
    keyfile: str = ""

    @classmethod
    def of(cls, settings: Settings) -> RedisTLS:
        return cls(settings.redis_ca_certs, settings.redis_client_cert, settings.redis_client_key)

    def options(self, url: str) -> dict[str, str]:
        """redis-py's ``ssl_*`` options for ``url``; files given for a URL without TLS are a
        mistake worth a clear error rather than a connection in clear text."""
        given = {
            "ssl_ca_certs": self.ca_certs,
            "ssl_certfile": self.certfile,
            "ssl_keyfile": self.keyfile,
        }
        options = {name: value for name, value in given.items() if value}
        if options and not is_tls_url(url):
            raise RedisUnusable(
                "ORCHY_REDIS_CA_CERTS, ORCHY_REDIS_CLIENT_CERT and ORCHY_REDIS_CLIENT_KEY need "
                f"a rediss:// URL, not {redacted(url)}"
            )
        return options


def client_for_url(
    url: str, timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS, tls: RedisTLS | None = None
) -> RedisClient:
    """A client whose calls give up after ``timeout_seconds``: a frozen Redis must turn into
    503 answers, never into requests that hang."""
    options: dict[str, Any] = {
        "decode_responses": True,
        "socket_timeout": timeout_seconds,
        "socket_connect_timeout": timeout_seconds,
        **(tls or RedisTLS()).options(url),
    }
    if is_cluster_url(url):
        if is_tls_url(url):  # redis-py's TLS connections, packing commands its own way
            return RedisCluster.from_url(_node_url(url), **options)
        return RedisCluster.from_url(_node_url(url), connection_class=PackedConnection, **options)
    pool = ConnectionPool.from_url(url, **options)
    pool.connection_class = _PACKED.get(pool.connection_class, pool.connection_class)
    return Redis(connection_pool=pool)


def pubsub_client_for_url(
    url: str, timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS, tls: RedisTLS | None = None
) -> Redis:
    """A plain client for SUBSCRIBE: cluster pub/sub reaches every node, so any one will do.
    It waits for messages without a read timeout; connecting still times out."""
    options: dict[str, Any] = {**(tls or RedisTLS()).options(url)}
    return Redis.from_url(
        _node_url(url),
        decode_responses=True,
        socket_connect_timeout=timeout_seconds,
        **options,
    )


async def check_usable(client: RedisClient, url: str) -> None:
    """Raises ``RedisUnusable`` (one line, the URL without its password) when Redis does not
    answer a PING: unreachable, a TLS handshake refused, a wrong password or user."""
    try:
        await client.ping()
    except RedisError as error:
        reason = str(error) or type(error).__name__
        raise RedisUnusable(f"cannot use Redis at {redacted(url)}: {reason}") from None


async def check_redis_url(settings: Settings) -> None:
    """``RedisUnusable`` unless the Redis of ``settings.redis_url`` answers with the settings'
    TLS files and credentials: ``orchy serve`` asks before it starts anything."""
    try:
        client = client_for_url(
            settings.redis_url, settings.redis_timeout_seconds, RedisTLS.of(settings)
        )
    except ValueError as error:
        raise RedisUnusable(
            f"cannot use REDIS_URL {redacted(settings.redis_url)}: {error}"
        ) from None
    try:
        await check_usable(client, settings.redis_url)
    finally:
        await client.aclose()


@dataclass
class Connection:
    url: str
    embedded: EmbeddedRedis | None
    tls: RedisTLS = field(default_factory=RedisTLS)

    def client(self, timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS) -> RedisClient:
        return client_for_url(self.url, timeout_seconds, self.tls)

    def pubsub_client(self, timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS) -> Redis:
        return pubsub_client_for_url(self.url, timeout_seconds, self.tls)

    def close(self) -> None:
        if self.embedded is not None:
            self.embedded.stop()


def open_connection(settings: Settings) -> Connection:
    """Resolves where Redis is, starting the embedded server when no URL is set."""
    if settings.redis_url:
        return Connection(url=settings.redis_url, embedded=None, tls=RedisTLS.of(settings))
    embedded = EmbeddedRedis(data_dir_path(settings.data_dir), settings.embedded_allocator)
    embedded.start(settings.embedded_start_timeout_seconds)
    return Connection(url=embedded.url, embedded=embedded)
