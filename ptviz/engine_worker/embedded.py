"""The embedded engine: N worker processes started with the server (no Redis needed).

The in-memory channel layer cannot cross processes, so the server process starts N
engine worker processes (multiprocessing, spawn context) that run the same EngineLoop as
the distributed worker, each fed by a queue of its own. A bridge in the server's event
loop receives the consumers' engine messages on the in-memory layer's "ptviz-engine"
channel, routes each session to one process (sticky), and relays what the processes
send back (a queue per process, read by a thread) into group_send/send on the layer.
Each process gets fresh queues: a process killed while writing would leave a shared
queue's lock held forever.

A worker process that dies is restarted; its sessions are rebuilt from the database in
the new process and their viewers get a fresh snapshot (EngineLease is still claimed,
forcibly: here the bridge decides who owns what).
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import logging
import multiprocessing as mp
import os
import queue
import threading
import time

from django.conf import settings

from ptviz import protocol as P
from ptviz.engine_worker.quotas import Quotas

log = logging.getLogger("ptviz.engine")


def _worker_main(slot: int, inbox, outbox, db: dict | None, options: dict) -> None:
    """An engine worker process (spawned): set Django up, serve the inbox until STOP."""
    import signal

    # Ctrl-C reaches the whole process group: the server stops us in order instead.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", options["settings"])
    import django
    from django.conf import settings as dj_settings

    if db is not None:
        dj_settings.DATABASES = {"default": db}
    django.setup()
    from django.db import connections

    from ptviz.engine_worker.loop import EngineLoop
    from ptviz.engine_worker.quotas import Quotas

    parent = mp.parent_process()
    name = f"embedded-{slot}-{os.getpid()}"

    def emit(kind: str, target: str, payload: dict) -> None:
        outbox.put((kind, target, payload))

    def get(timeout: float):
        try:
            return inbox.get(timeout=timeout) if timeout > 0 else inbox.get_nowait()
        except queue.Empty:
            if parent is not None and not parent.is_alive():
                return {"type": "engine.stop"}  # orphaned: the server is gone
            return None

    engine = EngineLoop(
        name,
        P.ENGINE_CHANNEL,
        emit,
        force_claim=True,
        lease_timeout=options["lease_timeout"],
        heartbeat_every=options["heartbeat"],
        explore_max_states=options["explore_max_states"],
        viewer_expiry=options["viewer_expiry"],
        quotas=Quotas(**options["quotas"]),
    )
    outbox.put(("ready", name, {}))
    try:
        engine.serve(get)
    finally:
        connections.close_all()


class EmbeddedEngine:
    def __init__(self, workers: int, db: dict | None = None):
        self.workers = max(1, workers)
        self.db = db
        self.ctx = mp.get_context("spawn")
        self.inboxes: list = [None] * self.workers
        self.outboxes: list = [None] * self.workers
        self.procs: list = [None] * self.workers
        self.assigned: dict[str, int] = {}
        self.ready: set[str] = set()
        self.stopping = False
        self.loop: asyncio.AbstractEventLoop | None = None
        self.deliver: asyncio.Queue | None = None
        self.tasks: list[asyncio.Task] = []
        self.relays: list[threading.Thread] = []
        self.options = {
            "settings": os.environ.get("DJANGO_SETTINGS_MODULE", "ptviz.settings"),
            "lease_timeout": settings.PTVIZ_LEASE_TIMEOUT,
            "heartbeat": settings.PTVIZ_HEARTBEAT,
            "explore_max_states": settings.PTVIZ_EXPLORE_MAX_STATES,
            "viewer_expiry": settings.PTVIZ_VIEWER_EXPIRY,
            "quotas": Quotas.from_settings().as_options(),
        }

    # --- processes ---------------------------------------------------------------------
    def start(self) -> EmbeddedEngine:
        for slot in range(self.workers):
            self._spawn(slot)
        atexit.register(self.stop)
        return self

    def _spawn(self, slot: int) -> None:
        inbox, outbox = self.ctx.Queue(), self.ctx.Queue()
        proc = self.ctx.Process(
            target=_worker_main,
            args=(slot, inbox, outbox, self.db, self.options),
            name=f"ptviz-engine-{slot}",
            daemon=True,
        )
        proc.start()
        self.inboxes[slot] = inbox
        self.outboxes[slot] = outbox
        self.procs[slot] = proc
        relay = threading.Thread(
            target=self._relay, args=(proc, outbox), name=f"ptviz-bridge-relay-{slot}", daemon=True
        )
        relay.start()
        self.relays.append(relay)

    def wait_ready(self, timeout: float = 30.0) -> bool:
        deadline = time.monotonic() + timeout
        while len(self.ready) < self.workers and time.monotonic() < deadline:
            time.sleep(0.02)
        return len(self.ready) >= self.workers

    def stop(self, timeout: float = 5.0) -> None:
        if self.stopping:
            return
        self.stopping = True
        for inbox in self.inboxes:
            if inbox is not None:
                with contextlib.suppress(ValueError, OSError):
                    inbox.put({"type": "engine.stop"})
        deadline = time.monotonic() + timeout
        for proc in self.procs:
            if proc is not None:
                proc.join(max(0.1, deadline - time.monotonic()))
                if proc.is_alive():
                    proc.terminate()
                    proc.join(1)
        for task in self.tasks:
            if self.loop is not None and not self.loop.is_closed():
                self.loop.call_soon_threadsafe(task.cancel)
        for relay in self.relays:
            relay.join(1)

    # --- routing -----------------------------------------------------------------------
    def route(self, message: dict) -> None:
        sid = str(message.get("session") or "")
        if not sid:
            return
        slot = self.assigned.get(sid)
        if slot is None:
            if message.get("type") == P.LEAVE:
                return
            load = [0] * self.workers
            for s in self.assigned.values():
                load[s] += 1
            slot = min(range(self.workers), key=load.__getitem__)
            self.assigned[sid] = slot
        self.inboxes[slot].put(message)

    def _check_processes(self) -> None:
        for slot, proc in enumerate(self.procs):
            if self.stopping or proc is None or proc.is_alive():
                continue
            log.warning("engine worker process %d exited (%s); restarting it", slot, proc.exitcode)
            self._spawn(slot)
            for sid, s in self.assigned.items():
                if s == slot:
                    self.inboxes[slot].put({"type": P.TAKEOVER, "session": sid})

    # --- the bridge (in the server's event loop) -----------------------------------------
    def _relay(self, proc, outbox) -> None:
        """Thread: one process's output queue -> the bridge's asyncio queue."""
        while True:
            try:
                item = outbox.get(timeout=0.2)
            except queue.Empty:
                if not proc.is_alive():
                    break  # (a restarted process has a relay of its own)
                continue
            except (EOFError, OSError, ValueError):
                break
            if item[0] == "ready":
                self.ready.add(item[1])
                continue
            loop, deliver = self.loop, self.deliver
            if loop is None or deliver is None or loop.is_closed():
                continue
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                loop.call_soon_threadsafe(deliver.put_nowait, item)

    async def ensure_bridge(self) -> None:
        """Start the bridge in the running event loop (once per loop)."""
        loop = asyncio.get_running_loop()
        if self.loop is loop and self.tasks and not any(t.done() for t in self.tasks):
            return
        for task in self.tasks:
            with contextlib.suppress(RuntimeError):  # its loop is closed (a loop per test)
                task.cancel()
        self.loop = loop
        self.deliver = asyncio.Queue()
        self.tasks = [
            loop.create_task(self._commands(), name="ptviz-bridge-commands"),
            loop.create_task(self._deliveries(), name="ptviz-bridge-deliveries"),
            loop.create_task(self._monitor(), name="ptviz-bridge-monitor"),
        ]

    async def _commands(self) -> None:
        from channels.layers import get_channel_layer

        layer = get_channel_layer()
        while True:
            message = await layer.receive(P.ENGINE_CHANNEL)
            try:
                self.route(message)
            except Exception:
                log.exception("bridge: routing %r failed", message.get("type"))

    async def _deliveries(self) -> None:
        from channels.layers import get_channel_layer

        from ptviz.layers import deliver as deliver_one

        layer = get_channel_layer()
        assert self.deliver is not None
        deliver = self.deliver
        while True:
            await deliver_one(layer, *(await deliver.get()), who="bridge")

    async def _monitor(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            try:
                self._check_processes()
            except Exception:
                log.exception("bridge: checking the engine worker processes failed")


_engine: EmbeddedEngine | None = None
_engine_lock = threading.Lock()


def set_engine(engine: EmbeddedEngine | None) -> None:
    global _engine
    _engine = engine


def get_engine() -> EmbeddedEngine | None:
    return _engine


def embedded_mode() -> bool:
    return not settings.REDIS_URL


def ensure_engine() -> EmbeddedEngine:
    """The process's embedded engine, started on first use when the server did not."""
    global _engine
    with _engine_lock:
        if _engine is None:
            _engine = EmbeddedEngine(settings.PTVIZ_WORKERS).start()
        return _engine
