"""The distributed engine worker (`manage.py engineworker`): EngineLoop on the Redis layer.

Any number of these run on any host next to `manage.py serve` with REDIS_URL set. Each
listens on the shared channel "ptviz-engine" (the core RedisChannelLayer hands each
message to exactly one listener) and on a channel of its own (the one its leases name,
so commands for a session it owns come straight to it). The asyncio loop only moves
messages; the EngineLoop runs in a thread of its own, so the sync ORM and the engine never
block the layer's receive, and engine slices never wait on Redis.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import queue
import signal
import socket
import threading
import uuid

from channels.layers import get_channel_layer
from django.conf import settings
from django.db import connections

from ptviz import protocol as P
from ptviz.engine_worker.loop import STOP, EngineLoop
from ptviz.engine_worker.quotas import Quotas
from ptviz.layers import deliver

log = logging.getLogger("ptviz.engine")


def worker_name() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


async def serve(name: str | None = None, stop: asyncio.Event | None = None) -> None:
    """Serve until `stop` is set (or SIGINT/SIGTERM when it is not given)."""
    layer = get_channel_layer()
    loop = asyncio.get_running_loop()
    name = name or worker_name()
    channel = await layer.new_channel("ptviz-worker")
    inbox: queue.Queue = queue.Queue()
    outq: asyncio.Queue = asyncio.Queue()

    def emit(kind: str, target: str, payload: dict) -> None:
        loop.call_soon_threadsafe(outq.put_nowait, (kind, target, payload))

    def get(timeout: float):
        try:
            return inbox.get(timeout=timeout) if timeout > 0 else inbox.get_nowait()
        except queue.Empty:
            return None

    engine = EngineLoop(
        name,
        channel,
        emit,
        lease_timeout=settings.PTVIZ_LEASE_TIMEOUT,
        heartbeat_every=settings.PTVIZ_HEARTBEAT,
        explore_max_states=settings.PTVIZ_EXPLORE_MAX_STATES,
        viewer_expiry=settings.PTVIZ_VIEWER_EXPIRY,
        quotas=Quotas.from_settings(),
    )

    def run_engine() -> None:
        try:
            engine.serve(get)
        finally:
            connections.close_all()

    thread = threading.Thread(target=run_engine, name=f"ptviz-engine-{name}", daemon=True)

    async def receive(ch: str) -> None:
        while True:
            try:
                message = await layer.receive(ch)
            except asyncio.CancelledError:
                raise
            except Exception:
                # Redis went away or timed out: keep listening once it is back.
                log.exception("%s: receiving on %s failed; retrying in 1 s", name, ch)
                await asyncio.sleep(1.0)
                continue
            inbox.put(message)

    async def send() -> None:
        while True:
            item = await outq.get()
            if item is None:
                return
            await deliver(layer, *item, who=name)

    own_stop = stop is None
    if stop is None:
        stop = asyncio.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, stop.set)
    thread.start()
    tasks = [
        asyncio.create_task(receive(P.ENGINE_CHANNEL)),
        asyncio.create_task(receive(channel)),
        asyncio.create_task(send()),
    ]
    log.info("engine worker %s listening on %r and %r", name, P.ENGINE_CHANNEL, channel)
    try:
        await stop.wait()
    finally:
        for task in tasks[:2]:
            task.cancel()
        inbox.put(STOP)
        await loop.run_in_executor(None, thread.join, 10)
        # Deliver what the engine said last (final deltas), then stop sending.
        outq.put_nowait(None)
        with contextlib.suppress(TimeoutError, asyncio.CancelledError):
            await asyncio.wait_for(tasks[2], 5)
        await asyncio.gather(*tasks, return_exceptions=True)
        if own_stop:
            for sig in (signal.SIGINT, signal.SIGTERM):
                with contextlib.suppress(NotImplementedError, RuntimeError):
                    loop.remove_signal_handler(sig)
        close = getattr(layer, "close_pools", None)
        if close is not None:
            await close()
        log.info("engine worker %s stopped", name)
