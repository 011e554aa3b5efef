"""`make cluster` and the cluster fixtures pick and check their ports with
omni.redis_cluster.port_free: a port something listens on is taken; one a stopped
cluster left connections on (TIME_WAIT) is free, as it is for Valkey, which binds with
SO_REUSEADDR (so `make cluster` starts again right after a Ctrl-C)."""

from __future__ import annotations

import socket

from omni.redis_cluster import port_free


def test_a_port_with_a_listener_is_taken_and_free_once_it_closes() -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    try:
        assert not port_free(port)
    finally:
        listener.close()
    assert port_free(port)


def test_a_port_left_with_connections_in_time_wait_is_free() -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    client = socket.create_connection(("127.0.0.1", port))
    accepted, _ = listener.accept()
    accepted.close()  # the listening side closes first: its end waits in TIME_WAIT
    client.recv(1)
    client.close()
    listener.close()
    states = [line.split() for line in _tcp_table() if f":{port:04X} " in line]
    assert any(fields[3] == "06" for fields in states)  # 06: TIME_WAIT, on the port
    assert port_free(port)


def _tcp_table() -> list[str]:
    with open("/proc/net/tcp") as table:
        return table.read().splitlines()[1:]
