"""The machine-local services the tests and the web benchmark use: Redis on
127.0.0.1:6379, free ports, and Debian's Chromium (never a downloaded browser)."""

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
