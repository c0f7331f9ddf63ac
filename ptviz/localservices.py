"""The machine-local services the tests and the web benchmark use: Redis on
127.0.0.1:6379, free ports, Debian's Chromium (never a downloaded browser) and haproxy in
front of several web servers (README, "Deployment")."""

from __future__ import annotations

import os
import socket

REDIS_HOST, REDIS_PORT = "127.0.0.1", 6379
REDIS_URL = f"redis://{REDIS_HOST}:{REDIS_PORT}/0"
CHROMIUM = os.environ.get("PTVIZ_CHROMIUM", "/usr/bin/chromium")
# Headless, with nothing phoning home (this machine's network is closed).
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


HAPROXY = """
global
    maxconn 4000
defaults
    mode http
    timeout connect 1s
    timeout client 60s
    timeout server 60s
    timeout tunnel 1h
    option redispatch
    retries 2
frontend ptviz
    bind 127.0.0.1:{port}
    default_backend servers
backend servers
    balance roundrobin
{servers}
"""


def haproxy_config(port: int, servers: list[int]) -> str:
    """haproxy on 127.0.0.1:`port`, round robin over the web servers on those ports, each
    checked every 300 ms (a killed one is out of the rotation within one check)."""
    lines = (
        f"    server s{k} 127.0.0.1:{p} check inter 300 fall 1 rise 1"
        for k, p in enumerate(servers, 1)
    )
    return HAPROXY.format(port=port, servers="\n".join(lines))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def redis_up() -> bool:
    try:
        with socket.create_connection((REDIS_HOST, REDIS_PORT), timeout=0.5) as s:
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def flush_redis_prefix(prefix: str) -> None:
    """Remove every Redis key under `prefix` (a test run's or a benchmark's channel layer)."""
    import redis

    client = redis.Redis(host=REDIS_HOST, port=REDIS_PORT)
    try:
        keys = list(client.scan_iter(match=prefix + "*", count=1000))
        if keys:
            client.delete(*keys)
    finally:
        client.close()
