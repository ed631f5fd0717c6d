"""A private Redis Cluster of three masters on free ports, made by hand (CLUSTER ADDSLOTS and
CLUSTER MEET, as ``redis-cli --cluster create`` would), with the embedded Redis's binary; or,
given ``NodeTLS``, on TLS ports only (clients and the cluster bus), with the system's
``redis-server`` (the embedded one is built without TLS)."""

from __future__ import annotations

import contextlib
import socket
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import redis

from app.store.embedded import redis_server_binary
from tests.helpers.http import free_port
from tests.helpers.tls import tls_redis_server
from tests.helpers.waiting import wait_until_sync

LOCALHOST = "127.0.0.1"
MASTERS = 3
SLOTS = 16384
BUS_PORT_OFFSET = 10000
ADDSLOTS_CHUNK = 2048
PORT_PICKS = 200
NODE_READY_SECONDS = 10.0
CLUSTER_READY_SECONDS = 30.0
NODE_STOP_SECONDS = 10.0


def bindable(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind((LOCALHOST, port))
        except OSError:
            return False
        return True


def node_port(taken: set[int]) -> int:
    """A free port whose cluster bus port is free too."""
    for _ in range(PORT_PICKS):
        port = free_port()
        bus = port + BUS_PORT_OFFSET
        if port not in taken and bus not in taken and bus <= 65535 and bindable(bus):
            taken.update({port, bus})
            return port
    raise RuntimeError("no free pair of ports for a cluster node")


@dataclass(frozen=True)
class NodeTLS:
    """A node's certificate and key, and the CA that signs them (which clients trust)."""

    cert: Path
    key: Path
    ca: Path

    def server_options(self, port: int) -> dict[str, str]:
        return {
            "port": "0",
            "tls-port": str(port),
            "tls-cluster": "yes",
            "tls-cert-file": str(self.cert),
            "tls-key-file": str(self.key),
            "tls-ca-cert-file": str(self.ca),
            "tls-auth-clients": "no",
        }


def node_client(port: int, tls: NodeTLS | None = None) -> redis.Redis:
    secure = {"ssl": True, "ssl_ca_certs": str(tls.ca)} if tls is not None else {}
    return redis.Redis(host=LOCALHOST, port=port, decode_responses=True, socket_timeout=5, **secure)


def _binary(tls: NodeTLS | None) -> str:
    if tls is None:
        return redis_server_binary()
    binary = tls_redis_server()
    if binary is None:
        raise RuntimeError("a TLS cluster needs a redis-server with TLS on PATH")
    return binary


def start_node(port: int, directory: Path, tls: NodeTLS | None = None) -> subprocess.Popen[bytes]:
    directory.mkdir(parents=True, exist_ok=True)
    options = {
        "port": str(port),
        "bind": LOCALHOST,
        "dir": str(directory),
        "logfile": str(directory / "redis.log"),
        "appendonly": "no",
        "save": "",
        "cluster-enabled": "yes",
        "cluster-config-file": str(directory / "nodes.conf"),
        "cluster-node-timeout": "5000",
        **(tls.server_options(port) if tls is not None else {}),
    }
    arguments = [item for name, value in options.items() for item in (f"--{name}", value)]
    process = subprocess.Popen(
        [_binary(tls), *arguments],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )

    def answers() -> bool:
        assert process.poll() is None, f"redis-server exited:\n{directory / 'redis.log'}"
        with contextlib.suppress(redis.RedisError), node_client(port, tls) as client:
            return bool(client.ping())
        return False

    wait_until_sync(answers, NODE_READY_SECONDS, step=0.05, what=f"cluster node {port}")
    return process


def cluster_ok(ports: list[int], tls: NodeTLS | None = None) -> bool:
    for port in ports:
        try:
            with node_client(port, tls) as client:
                info = client.execute_command("CLUSTER", "INFO")
        except redis.RedisError:
            return False
        fields = dict(line.split(":", 1) for line in str(info).splitlines() if ":" in line)
        if (
            fields.get("cluster_state", "").strip() != "ok"
            or int(fields.get("cluster_known_nodes", "0")) != len(ports)
            or int(fields.get("cluster_slots_ok", "0")) != SLOTS
        ):
            return False
    return True


@contextlib.contextmanager
def private_cluster(
    directory: Path, masters: int = MASTERS, tls: NodeTLS | None = None
) -> Iterator[str]:
    """Yields the cluster's ``redis+cluster://`` URL (``rediss+cluster://`` with ``tls``);
    kills every node afterwards."""
    taken: set[int] = set()
    ports: list[int] = []
    processes: list[subprocess.Popen[bytes]] = []
    try:
        for index in range(masters):
            ports.append(node_port(taken))
            processes.append(start_node(ports[-1], directory / f"node-{index}", tls))
        share = SLOTS // masters
        for index, port in enumerate(ports):
            last = SLOTS if index == masters - 1 else (index + 1) * share
            with node_client(port, tls) as client:
                for first in range(index * share, last, ADDSLOTS_CHUNK):
                    slots = range(first, min(first + ADDSLOTS_CHUNK, last))
                    client.execute_command("CLUSTER", "ADDSLOTS", *slots)
        with node_client(ports[0], tls) as client:
            for port in ports[1:]:
                client.execute_command("CLUSTER", "MEET", LOCALHOST, port)
        wait_until_sync(
            lambda: cluster_ok(ports, tls), CLUSTER_READY_SECONDS, step=0.1, what="cluster_state:ok"
        )
        scheme = "rediss+cluster" if tls is not None else "redis+cluster"
        yield f"{scheme}://{LOCALHOST}:{ports[0]}"
    finally:
        for process in processes:
            process.kill()
            process.wait(NODE_STOP_SECONDS)
