"""A local Redis Cluster: six Valkey nodes (three primaries, one replica each) from the
same server binary omni embeds (omni.redis_server), on loopback TCP ports.

For the test suite's cluster run (`make test-cluster`) and `make cluster`. It forms the
cluster itself, with the commands any cluster is formed with (no redis-cli needed):
`CLUSTER ADDSLOTSRANGE` gives each primary a third of the 16384 slots, `CLUSTER MEET`
introduces the nodes, `CLUSTER REPLICATE` makes each replica follow its primary. A data
dir that already holds a formed cluster (each node's nodes.conf) is started as it is.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from redis import Redis

from omni.errors import ConfigError
from omni.redis_server import EmbeddedRedis

SLOTS = 16384
BUS_OFFSET = 10000  # a node's cluster bus listens on its port + 10000


def free_ports(count: int) -> list[int]:
    """`count` loopback ports that are free, with their cluster bus ports free too."""
    ports: list[int] = []
    candidates = list(range(20000, 50000))
    random.shuffle(candidates)
    for port in candidates:
        if port_free(port) and port_free(port + BUS_OFFSET):
            ports.append(port)
            if len(ports) == count:
                return ports
    raise ConfigError("redis cluster: no free loopback ports")


def port_free(port: int) -> bool:
    """Nothing listens on it. SO_REUSEADDR, as Valkey binds: the connections a stopped
    cluster leaves in TIME_WAIT do not keep it from listening there again (without it, a
    `make cluster` right after Ctrl-C said "ports in use" for a minute)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


class LocalCluster:
    """`primaries` primaries with `replicas` replicas each, under `data_dir/<port>/`."""

    def __init__(
        self,
        data_dir: Path,
        ports: list[int],
        *,
        primaries: int = 3,
        replicas: int = 1,
        persist: bool = False,
        # Valkey's default: a node that does not answer for this long is failed over.
        # Shorter, a machine under load (a CI runner) fails nodes over that are only slow.
        node_timeout_ms: int = 15000,
    ) -> None:
        if len(ports) != primaries * (1 + replicas):
            raise ConfigError(f"redis cluster: {primaries * (1 + replicas)} ports needed")
        self.data_dir = data_dir.resolve()
        self.ports = ports
        self.primaries = primaries
        self.nodes = [
            EmbeddedRedis(
                self.data_dir / str(port),
                persist=persist,
                port=port,
                extra_args=_node_args(self.data_dir / str(port), node_timeout_ms),
            )
            for port in ports
        ]

    @property
    def url(self) -> str:
        """Any one node: the cluster client discovers the others from it."""
        return f"redis://127.0.0.1:{self.ports[0]}"

    @property
    def pids(self) -> list[int]:
        return [node.pid for node in self.nodes if node.pid is not None]

    def start(self, timeout: float = 30.0) -> None:
        try:
            for node in self.nodes:
                node.start()
            clients = [Redis(unix_socket_path=str(n.socket_path)) for n in self.nodes]
            try:
                if not _formed(clients[0], len(self.nodes)):
                    self._form(clients, timeout)
                self._wait_ok(clients, timeout)
            finally:
                for client in clients:
                    client.close()
        except BaseException:
            self.stop()
            raise

    def _form(self, clients: list[Redis], timeout: float) -> None:
        ids = [_text(_command(client, "CLUSTER", "MYID")) for client in clients]
        share = SLOTS // self.primaries
        for index, client in enumerate(clients[: self.primaries]):
            first = index * share
            last = SLOTS - 1 if index == self.primaries - 1 else first + share - 1
            _command(client, "CLUSTER", "ADDSLOTSRANGE", first, last)
        for port in self.ports[1:]:
            _command(clients[0], "CLUSTER", "MEET", "127.0.0.1", port)

        # A replica can follow its primary only once it has heard of it.
        def met() -> bool:
            known = str(len(clients))
            return all(
                _info(c, "CLUSTER", "INFO").get("cluster_known_nodes") == known for c in clients
            )

        _until(timeout, "every node knows every other", met)
        for index, client in enumerate(clients[self.primaries :]):
            _command(client, "CLUSTER", "REPLICATE", ids[index % self.primaries])

    def _wait_ok(self, clients: list[Redis], timeout: float) -> None:
        def ok() -> bool:
            return all(_info(c, "CLUSTER", "INFO").get("cluster_state") == "ok" for c in clients)

        def synced(client: Redis) -> bool:
            info = _info(client, "INFO", "replication")
            return (
                info.get("master_link_status") == "up"
                and info.get("master_sync_in_progress") == "0"
            )

        _until(timeout, "cluster_state:ok on every node", ok)
        _until(
            timeout, "every replica in sync", lambda: all(map(synced, clients[self.primaries :]))
        )

    def stop(self) -> None:
        """Each node by its own pid (SIGTERM, then SIGKILL after a while)."""
        for node in self.nodes:
            with contextlib.suppress(Exception):
                node.stop()


def _node_args(data_dir: Path, node_timeout_ms: int) -> tuple[str, ...]:
    return (
        "--cluster-enabled", "yes",
        "--cluster-config-file", str(data_dir / "nodes.conf"),
        "--cluster-node-timeout", str(node_timeout_ms),
    )  # fmt: skip


def _formed(client: Redis, nodes: int) -> bool:
    info = _info(client, "CLUSTER", "INFO")
    return info.get("cluster_known_nodes") == str(nodes) and info.get(
        "cluster_slots_assigned"
    ) == str(SLOTS)


def _info(client: Redis, *command: str) -> dict[str, str]:
    reply = _command(client, *command)
    if isinstance(reply, dict):  # INFO: redis-py parsed it already
        return {str(k): str(v) for k, v in reply.items()}
    fields: dict[str, str] = {}
    for line in _text(reply).splitlines():
        name, _, value = line.partition(":")
        fields[name.strip()] = value.strip()
    return fields


def _until(timeout: float, what: str, done: Callable[[], bool]) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if done():
            return
        time.sleep(0.05)
    raise ConfigError(f"redis cluster: no {what} within {timeout}s")


def _command(client: Redis, *args: object) -> Any:
    return client.execute_command(*args)  # type: ignore[no-untyped-call]  # unannotated


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def main(argv: list[str] | None = None) -> int:
    """`make cluster`: a local 3x2 cluster under --dir, and `omni serve` on it in cluster
    mode, until Ctrl-C stops both. The cluster's data is kept (append-only files and
    nodes.conf): the next run starts the same cluster again."""
    parser = argparse.ArgumentParser(
        prog="python -m omni.redis_cluster",
        description="start a local Redis Cluster (3 primaries, 1 replica each) and serve "
        "omni on it in cluster mode; Ctrl-C stops both",
    )
    parser.add_argument("--dir", default="var/cluster", help="data dir (default var/cluster)")
    parser.add_argument(
        "--first-port", type=int, default=7000, help="the nodes' ports: six from this one"
    )
    # Any other option goes to `omni serve` (--port 8081, say).
    args, serve = parser.parse_known_args(argv)
    ports = list(range(args.first_port, args.first_port + 6))
    cluster = LocalCluster(Path(args.dir), ports, persist=True)
    taken = [p for p in ports if not port_free(p) or not port_free(p + BUS_OFFSET)]
    if taken:
        print(
            f"cluster: ports in use: {taken}; stop what holds them or pass --first-port",
            file=sys.stderr,
        )
        return 1
    try:
        cluster.start()
    except ConfigError as exc:
        print(f"cluster: {exc}", file=sys.stderr)
        return 1
    print(
        f"cluster: 3 primaries + 3 replicas on 127.0.0.1:{ports[0]}-{ports[-1]}, data in {args.dir}"
    )
    env = {**os.environ, "OMNI_REDIS_URL": cluster.url, "OMNI_REDIS_CLUSTER": "true"}
    server = subprocess.Popen([sys.executable, "-m", "omni.cli", "serve", *serve], env=env)  # noqa: S603
    try:
        return server.wait()
    except KeyboardInterrupt:
        # The terminal sent SIGINT to omni as well; give it its shutdown time.
        try:
            return server.wait(30)
        except subprocess.TimeoutExpired:
            server.kill()
            return server.wait()
    finally:
        cluster.stop()
        print("cluster: stopped")


if __name__ == "__main__":
    sys.exit(main())
