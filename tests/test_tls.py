"""``orchy serve`` over HTTPS, and with client certificates required (mTLS), as a user runs
it: real ``python -m app.cli serve`` processes with certificates of private CAs (trustme),
the run client, the worker library, ``orchy worker`` and the CLI's client commands."""

from __future__ import annotations

import asyncio
import json
import socket
import ssl
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from app.settings import Settings
from orchy import AsyncClient, TLSError, Unavailable, Worker
from tests.helpers.cli import orchy
from tests.helpers.definitions import user, workflow
from tests.helpers.processes import (
    Processes,
    ServerProcess,
    marked_env,
    orchy_worker_process,
)
from tests.helpers.tls import Certificates, make_certificates
from tests.helpers.waiting import unique
from tests.helpers.worker_wire import fast_worker, running

RUN_SECONDS = 30.0
SERVER_PROCESSES = 2


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    return make_certificates(tmp_path_factory.mktemp("certificates"))


@pytest.fixture(scope="module")
def module_processes() -> Iterator[Processes]:
    started = Processes()
    try:
        yield started
    finally:
        started.close()


@pytest_asyncio.fixture(scope="module")
async def https_server(
    certificates: Certificates,
    module_processes: Processes,
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[ServerProcess]:
    """One process on the embedded Redis, its certificate given as command-line options."""
    folder = tmp_path_factory.mktemp("https-server")
    server = ServerProcess(
        marked_env(ORCHY_DATA_DIR=str(folder / "data")),
        folder / "server.log",
        tls=certificates.client_context(),
        arguments=[
            *("--ssl-certfile", str(certificates.server_cert)),
            *("--ssl-keyfile", str(certificates.server_key)),
        ],
    )
    module_processes.servers.append(server)
    await server.start()
    yield server


@pytest_asyncio.fixture(scope="module")
async def mtls_server(
    certificates: Certificates,
    module_processes: Processes,
    redis_url: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[ServerProcess]:
    """Two server processes on the tests' Redis, requiring client certificates signed by the
    client CA; the TLS files given as ``ORCHY_SSL_*`` settings."""
    folder = tmp_path_factory.mktemp("mtls-server")
    env = marked_env(
        REDIS_URL=redis_url,
        ORCHY_SSL_CERTFILE=str(certificates.server_cert),
        ORCHY_SSL_KEYFILE=str(certificates.server_key),
        ORCHY_SSL_CA_CERTS=str(certificates.client_ca),
    )
    server = ServerProcess(
        env,
        folder / "server.log",
        tls=certificates.client_context(with_certificate=True),
        arguments=["--workers", str(SERVER_PROCESSES)],
    )
    module_processes.servers.append(server)
    await server.start()
    yield server


def doubling(name: str) -> dict[str, Any]:
    return workflow(name, user(1, name, n="{$.input.n}"))


def doubler(name: str, url: str, settings: Settings, **credentials: str) -> Worker:
    worker = Worker(
        url,
        concurrency=2,
        worker_id=unique("tls-worker"),
        settings=fast_worker(settings),
        **credentials,
    )

    @worker.action(name)
    def double(input: dict[str, Any]) -> dict[str, Any]:
        return {"doubled": input["n"] * 2}

    return worker


# -- HTTPS ----------------------------------------------------------------------------------


async def test_serve_says_it_listens_on_https(https_server: ServerProcess) -> None:
    assert f"listening on https://127.0.0.1:{https_server.port}" in https_server.log_tail(None)


async def test_client_and_worker_complete_a_run_over_https(
    https_server: ServerProcess, certificates: Certificates, settings: Settings
) -> None:
    name = unique("tls-double")
    ca_bundle = str(certificates.ca)
    worker = doubler(name, https_server.url, settings, ca_bundle=ca_bundle)
    async with AsyncClient(https_server.url, ca_bundle=ca_bundle) as client:
        await client.register_workflow(doubling(name))
        async with running(worker):
            run = await client.execute(name, {"n": 21}, timeout=RUN_SECONDS)
    assert run.status == "COMPLETED", run
    assert run.actions["1"].output == {"doubled": 42}


async def test_a_client_without_the_ca_bundle_fails_with_a_certificate_error(
    https_server: ServerProcess,
) -> None:
    async with AsyncClient(https_server.url, retries=0) as client:
        with pytest.raises(TLSError) as refused:
            await client.list_runs()
    assert "CERTIFICATE_VERIFY_FAILED" in str(refused.value)
    assert "ORCHY_CA_BUNDLE" in str(refused.value)


async def test_a_certificate_error_is_not_tried_again(https_server: ServerProcess) -> None:
    """The client's retries are for a server that may come back; a certificate will not."""
    async with AsyncClient(https_server.url, retries=1000) as client:
        with pytest.raises(TLSError):
            await asyncio.wait_for(client.list_runs(), timeout=RUN_SECONDS)


async def test_serve_refuses_a_certificate_it_cannot_read(tmp_path: Path) -> None:
    missing = tmp_path / "missing.pem"
    result = await orchy("serve", "--port", "0", "--ssl-certfile", str(missing))
    assert result.code == 1
    assert f"cannot use --ssl-certfile {missing}" in result.message

    result = await orchy("serve", "--port", "0", "--ssl-ca-certs", str(missing))
    assert result.code == 1
    assert "need --ssl-certfile" in result.message


# -- mTLS -----------------------------------------------------------------------------------


async def test_mtls_serve_says_client_certificates_are_required(
    mtls_server: ServerProcess,
) -> None:
    log = mtls_server.log_tail(None)
    assert (
        f"listening on https://127.0.0.1:{mtls_server.port} with {SERVER_PROCESSES} server "
        "processes, client certificates required"
    ) in log


async def test_mtls_a_worker_with_a_client_certificate_completes_a_run(
    mtls_server: ServerProcess, certificates: Certificates, settings: Settings
) -> None:
    name = unique("mtls-double")
    credentials = {
        "ca_bundle": str(certificates.ca),
        "client_cert": str(certificates.client_cert),
        "client_key": str(certificates.client_key),
    }
    worker = doubler(name, mtls_server.url, settings, **credentials)
    async with AsyncClient(mtls_server.url, **credentials) as client:
        await client.register_workflow(doubling(name))
        async with running(worker):
            runs = await asyncio.gather(
                *(client.execute(name, {"n": n}, timeout=RUN_SECONDS) for n in range(4))
            )
    assert [run.actions["1"].output for run in runs] == [{"doubled": 2 * n} for n in range(4)]


def handshake(certificates: Certificates, port: int, **chain: str) -> None:
    """A TLS 1.2 handshake (its last flight is the server's: a refused client certificate
    fails the handshake itself), showing the certificate ``chain`` names if any."""
    context = certificates.client_context()
    context.maximum_version = ssl.TLSVersion.TLSv1_2
    if chain:
        context.load_cert_chain(chain["cert"], chain["key"])
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
        context.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
    ):
        tls.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        assert tls.recv(12).startswith(b"HTTP/1.1 200")


async def test_mtls_refuses_a_client_without_a_certificate_at_the_handshake(
    mtls_server: ServerProcess, certificates: Certificates
) -> None:
    with pytest.raises(ssl.SSLError):
        await asyncio.to_thread(handshake, certificates, mtls_server.port)
    stranger = {"cert": str(certificates.stranger_cert), "key": str(certificates.stranger_key)}
    with pytest.raises(ssl.SSLError):
        await asyncio.to_thread(handshake, certificates, mtls_server.port, **stranger)
    accepted = {"cert": str(certificates.client_cert), "key": str(certificates.client_key)}
    await asyncio.to_thread(handshake, certificates, mtls_server.port, **accepted)

    # TLS 1.3 ends the handshake on the client's side first: the refusal (the server
    # closing the connection) comes where the answer was expected, and the error says why.
    async with AsyncClient(mtls_server.url, ca_bundle=str(certificates.ca), retries=0) as client:
        with pytest.raises(Unavailable) as refused:
            await client.list_runs()
    assert "requires a client certificate" in str(refused.value)
    assert "ORCHY_CLIENT_CERT" in str(refused.value)


WORKER_FILE = """
from orchy import Worker

worker = Worker()


@worker.action({name!r})
def double(input):
    return {{"doubled": input["n"] * 2}}
"""


async def test_mtls_the_cli_and_orchy_worker_with_ca_bundle_and_client_certificate(
    mtls_server: ServerProcess, certificates: Certificates, tmp_path: Path
) -> None:
    name = unique("mtls-cli")
    definition = tmp_path / "definition.json"
    definition.write_text(json.dumps(doubling(name)))
    worker_file = tmp_path / "doubler.py"
    worker_file.write_text(WORKER_FILE.format(name=name))
    tls = [
        *("--ca-bundle", str(certificates.ca)),
        *("--client-cert", str(certificates.client_cert)),
        *("--client-key", str(certificates.client_key)),
    ]

    registered = await orchy("workflow", "register", str(definition), *tls, server=mtls_server.url)
    assert registered.code == 0, registered.stderr
    with orchy_worker_process(worker_file, "--server", mtls_server.url, *tls):
        finished = await orchy(
            "run", name, "--input", '{"n": 5}', "--wait", *tls, server=mtls_server.url
        )
    assert finished.code == 0, finished.stderr
    assert finished.json()["actions"]["1"]["output"] == {"doubled": 10}

    refused = await orchy(
        "workflow", "list", "--ca-bundle", str(certificates.ca), server=mtls_server.url
    )
    assert refused.code == 1
    assert refused.stderr.startswith(f"cannot reach {mtls_server.url}/metadata/workflow")
