"""Redis over TLS (``rediss://``), with an ACL user or a password, and with a client
certificate, and a Redis Cluster over TLS: real ``redis-server`` processes (the system's,
built with TLS) with certificates of private CAs (trustme), and real ``orchy serve``
processes completing runs on them."""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import pytest_asyncio
from redis.exceptions import ConnectionError as RedisConnectionError

from app.store.connection import RedisTLS, client_for_url, pubsub_client_for_url, redacted
from orchy import AsyncClient
from tests.helpers.cluster import NodeTLS, private_cluster
from tests.helpers.definitions import system, workflow
from tests.helpers.http import free_port
from tests.helpers.processes import (
    PROCESS_EXIT_SECONDS,
    ChildProcess,
    Processes,
    ServerProcess,
    listening,
    marked_env,
)
from tests.helpers.tls import Certificates, make_certificates, tls_redis_server
from tests.helpers.waiting import unique

USER = "orchy"
PASSWORD = "s3cret-Pa55word"
WRONG_PASSWORD = "not-the-Pa55word"
RUN_SECONDS = 30.0


def system_redis_server() -> str:
    """The system's ``redis-server`` (the embedded one is built without TLS)."""
    binary = tls_redis_server()
    if binary is None:
        pytest.fail("these tests need a redis-server with TLS on PATH (Debian's redis-server)")
    return binary


@dataclass
class TLSRedis(ChildProcess):
    """``redis-server`` on a TLS port only, with the rules of ``access`` (ACL users or a
    ``requirepass``), asking clients for a certificate when ``client_ca`` is given."""

    folder: Path
    certificates: Certificates
    access: list[str]
    client_ca: Path | None = None
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    def launch(self) -> subprocess.Popen[bytes]:
        self.folder.mkdir(parents=True, exist_ok=True)
        tls = self.certificates
        self.process = subprocess.Popen(
            [
                system_redis_server(),
                *("--port", "0", "--tls-port", str(self.port), "--bind", "127.0.0.1"),
                *("--tls-cert-file", str(tls.server_cert), "--tls-key-file", str(tls.server_key)),
                *("--tls-ca-cert-file", str(self.client_ca or tls.ca)),
                *("--tls-auth-clients", "yes" if self.client_ca else "no"),
                *("--save", "", "--appendonly", "no", "--dir", str(self.folder)),
                *("--logfile", str(self.folder / "redis.log")),
                *self.access,
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        return self.process

    async def start(self) -> None:
        await listening(self.launch(), self.port, (self.folder / "redis.log").read_text)

    def url(self, credentials: str) -> str:
        return f"rediss://{credentials}@127.0.0.1:{self.port}/0"


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    return make_certificates(tmp_path_factory.mktemp("certificates"))


@pytest_asyncio.fixture(scope="module")
async def acl_redis(
    certificates: Certificates, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[TLSRedis]:
    """TLS, no client certificate; the default user off and one ACL user with a password."""
    redis = TLSRedis(
        tmp_path_factory.mktemp("acl-redis"),
        certificates,
        access=[
            *("--user", "default", "off"),
            *("--user", USER, "on", f">{PASSWORD}", "~*", "&*", "+@all"),
        ],
    )
    await redis.start()
    try:
        yield redis
    finally:
        redis.close()


@pytest_asyncio.fixture(scope="module")
async def mtls_redis(
    certificates: Certificates, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[TLSRedis]:
    """TLS with client certificates required, and a password (``requirepass``)."""
    redis = TLSRedis(
        tmp_path_factory.mktemp("mtls-redis"),
        certificates,
        access=["--requirepass", PASSWORD],
        client_ca=certificates.client_ca,
    )
    await redis.start()
    try:
        yield redis
    finally:
        redis.close()


def orchy_on(redis_url: str, folder: Path, **settings: str) -> ServerProcess:
    env = marked_env(REDIS_URL=redis_url, **settings)
    return ServerProcess(env, folder / "server.log")


async def complete_a_run(server: ServerProcess) -> None:
    """A run of a switch and a delay (a timer) completes on the server."""
    name = unique("tls-redis")
    async with AsyncClient(server.url) as client:
        await client.register_workflow(
            workflow(
                name,
                system(1, "switch", {"on": [2]}, expression="{$.input.way}"),
                system(2, "delay", delaySeconds=0.05),
            )
        )
        run = await client.execute(name, {"way": "on"}, timeout=RUN_SECONDS)
    assert run.status == "COMPLETED", run.reason
    assert run.actions["2"].status == "COMPLETED"


async def test_a_server_on_rediss_with_an_acl_user_completes_a_run(
    acl_redis: TLSRedis, certificates: Certificates, processes: Processes, tmp_path: Path
) -> None:
    url = acl_redis.url(f"{USER}:{PASSWORD}")
    server = orchy_on(url, tmp_path, ORCHY_REDIS_CA_CERTS=str(certificates.ca))
    processes.servers.append(server)
    await server.start()
    await complete_a_run(server)
    await server.terminate()
    log = server.log_tail(None)
    assert f"Redis: rediss://{USER}:***@127.0.0.1:{acl_redis.port}/0" in log
    assert PASSWORD not in log


async def test_a_wrong_password_is_a_clear_start_up_error_without_the_password(
    acl_redis: TLSRedis, certificates: Certificates, processes: Processes, tmp_path: Path
) -> None:
    url = acl_redis.url(f"{USER}:{WRONG_PASSWORD}")
    server = orchy_on(url, tmp_path, ORCHY_REDIS_CA_CERTS=str(certificates.ca))
    processes.servers.append(server)
    code = await asyncio.to_thread(server.launch().wait, PROCESS_EXIT_SECONDS)
    log = server.log_tail(None)
    assert code == 1, log
    assert log.startswith(
        f"orchy serve: cannot use Redis at rediss://{USER}:***@127.0.0.1:{acl_redis.port}/0: "
        "invalid username-password pair"
    ), log
    assert len(log.splitlines()) == 1, log
    assert WRONG_PASSWORD not in log


async def test_without_the_ca_redis_refuses_to_start_with_a_certificate_error(
    acl_redis: TLSRedis, processes: Processes, tmp_path: Path
) -> None:
    server = orchy_on(acl_redis.url(f"{USER}:{PASSWORD}"), tmp_path)
    processes.servers.append(server)
    code = await asyncio.to_thread(server.launch().wait, PROCESS_EXIT_SECONDS)
    log = server.log_tail(None)
    assert code == 1, log
    assert log.startswith("orchy serve: cannot use Redis at rediss://"), log
    assert "CERTIFICATE_VERIFY_FAILED" in log
    assert PASSWORD not in log


async def test_redis_tls_files_with_a_plain_url_are_refused(
    certificates: Certificates, processes: Processes, tmp_path: Path
) -> None:
    server = orchy_on("redis://127.0.0.1:1/0", tmp_path, ORCHY_REDIS_CA_CERTS=str(certificates.ca))
    processes.servers.append(server)
    code = await asyncio.to_thread(server.launch().wait, PROCESS_EXIT_SECONDS)
    assert code == 1
    assert server.log_tail(None) == (
        "orchy serve: ORCHY_REDIS_CA_CERTS, ORCHY_REDIS_CLIENT_CERT and ORCHY_REDIS_CLIENT_KEY "
        "need a rediss:// URL, not redis://127.0.0.1:1/0\n"
    )


async def test_a_server_on_rediss_with_a_client_certificate_completes_a_run(
    mtls_redis: TLSRedis, certificates: Certificates, processes: Processes, tmp_path: Path
) -> None:
    server = orchy_on(
        mtls_redis.url(f":{PASSWORD}"),
        tmp_path,
        ORCHY_REDIS_CA_CERTS=str(certificates.ca),
        ORCHY_REDIS_CLIENT_CERT=str(certificates.client_cert),
        ORCHY_REDIS_CLIENT_KEY=str(certificates.client_key),
    )
    processes.servers.append(server)
    await server.start()
    await complete_a_run(server)
    assert PASSWORD not in server.log_tail(None)


REFUSED_WITHOUT_CERTIFICATE = ("CERTIFICATE_REQUIRED", "Connection reset by peer")


async def test_the_query_parameters_of_redis_py_work_too(
    mtls_redis: TLSRedis, certificates: Certificates
) -> None:
    """``?ssl_ca_certs=...&ssl_certfile=...&ssl_keyfile=...``: the client and the pub/sub
    client both connect; a client without a certificate is refused."""
    query = (
        f"?ssl_ca_certs={certificates.ca}&ssl_certfile={certificates.client_cert}"
        f"&ssl_keyfile={certificates.client_key}"
    )
    url = mtls_redis.url(f":{PASSWORD}") + query
    client = client_for_url(url)
    pubsub = pubsub_client_for_url(url)
    try:
        assert await client.ping()
        assert await pubsub.ping()
    finally:
        await client.aclose()
        await pubsub.aclose()
    without = client_for_url(mtls_redis.url(f":{PASSWORD}"), tls=RedisTLS(str(certificates.ca)))
    try:
        with pytest.raises(RedisConnectionError) as refused:
            await without.ping()
    finally:
        await without.aclose()
    # Under TLS 1.3 the client's handshake ends before the server checks the certificate:
    # the client then reads either the server's alert or the reset of the connection.
    assert any(sign in str(refused.value) for sign in REFUSED_WITHOUT_CERTIFICATE), refused.value


def test_redacted_hides_passwords_in_credentials_and_query() -> None:
    url = f"rediss://{USER}:{PASSWORD}@h:6380/0?ssl_ca_certs=/ca.pem&password={PASSWORD}"
    shown = redacted(url)
    assert PASSWORD not in shown
    assert shown == f"rediss://{USER}:***@h:6380/0?ssl_ca_certs=/ca.pem&password=***"
    assert redacted(f"rediss+cluster://:{PASSWORD}@h:7000") == "rediss+cluster://:***@h:7000"


async def test_a_server_on_a_redis_cluster_over_tls_completes_a_run(
    certificates: Certificates, processes: Processes, tmp_path: Path
) -> None:
    """``rediss+cluster://``: the cluster's client and the notifications' pub/sub client
    both connect with TLS, verified with ``ORCHY_REDIS_CA_CERTS``."""
    tls = NodeTLS(certificates.server_cert, certificates.server_key, certificates.ca)
    with private_cluster(tmp_path / "cluster", tls=tls) as url:
        assert url.startswith("rediss+cluster://")
        server = orchy_on(url, tmp_path, ORCHY_REDIS_CA_CERTS=str(certificates.ca))
        processes.servers.append(server)
        await server.start()
        await complete_a_run(server)
        await server.terminate()
