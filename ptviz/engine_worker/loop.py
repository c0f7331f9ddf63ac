"""EngineLoop: the sessions one engine worker owns, driven from one thread.

Transport-agnostic: messages come in through `get(timeout)` and go out through `emit`;
the distributed worker (distributed.py) feeds it from the Redis channel layer, an
embedded worker process (embedded.py) from the bridge's pipe. Between messages it runs
the sessions' run slices, exploration progress and lease heartbeats.

Ownership: before it serves a session it does not hold, the loop claims the session's
EngineLease. A live lease held by another worker means the message is forwarded to that
worker; a stale one (its worker died) is taken over: the session is rebuilt from the
database and every viewer gets a fresh snapshot.

Leases are renewed by a thread of their own (LeaseKeeper), so a long load or a busy run
never lets a live worker's sessions go stale; only a loop stuck for STALL_LIMIT seconds
stops the renewals (then another worker may take over, as after a crash).

A session is loaded (read from the database, its scenario parsed and built, its recording
replayed: seconds for a big one) in a thread of its own (Load), so the loop goes on
serving its other sessions meanwhile; the messages for the session that come before it is
ready wait, in order, and are handled once it is.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from django.db import close_old_connections, connections

from ptviz import protocol as P
from ptviz.engine_worker import store
from ptviz.engine_worker.host import Emit, HostLost, SessionHost
from ptviz.engine_worker.quotas import Quotas

log = logging.getLogger("ptviz.engine")

STOP = {"type": "engine.stop"}
STATS = "engine.stats"  # reply: the worker's sessions and viewers (tests, benchmarks)
MAX_HOPS = 3
STALL_LIMIT = 120.0
LOAD_POLL = 0.005  # how often the loop looks whether a session's load has finished


class LeaseKeeper(threading.Thread):
    """Renews the loop's leases every heartbeat_every seconds, whatever the loop does,
    and tells it which sessions it no longer owns."""

    def __init__(self, loop: EngineLoop):
        super().__init__(name=f"ptviz-leases-{loop.name}", daemon=True)
        self.loop = loop
        self.stop = threading.Event()
        self.lost: set[str] = set()
        self.lock = threading.Lock()
        self.stalled = False

    def run(self) -> None:
        loop = self.loop
        try:
            while not self.stop.wait(loop.heartbeat_every):
                stuck = time.monotonic() - loop.alive
                if stuck > STALL_LIMIT:
                    if not self.stalled:
                        log.error("%s: the loop is stuck (%.0f s); leases lapse", loop.name, stuck)
                    self.stalled = True
                    continue
                self.stalled = False
                ids = list(loop.hosts) + list(loop.loading)
                try:
                    close_old_connections()
                    owned = store.heartbeat(loop.name, ids)
                except Exception as exc:
                    log.warning("%s: heartbeat failed: %r", loop.name, exc)
                    continue
                with self.lock:
                    self.lost |= set(ids) - owned - loop.loading
        finally:
            connections.close_all()

    def take_lost(self) -> set[str]:
        with self.lock:
            lost, self.lost = self.lost, set()
        return lost


class Load(threading.Thread):
    """One session being loaded off the loop's thread: `host` (or `error`) once `done`;
    `waiting` holds the messages for it that came meanwhile, in order."""

    def __init__(self, sid: str, first: dict, make: Callable[[], SessionHost]):
        super().__init__(name=f"ptviz-load-{sid[:8]}", daemon=True)
        self.sid, self.first, self.make = sid, first, make
        self.waiting: list[dict] = []
        self.host: SessionHost | None = None
        self.error: BaseException | None = None
        self.started_at = time.monotonic()
        self.done = threading.Event()

    def run(self) -> None:
        try:
            self.host = self.make()
        except BaseException as exc:  # handed to the loop, which answers the viewers
            self.error = exc
        finally:
            connections.close_all()  # (this thread's own database connection)
            self.done.set()


class EngineLoop:
    def __init__(
        self,
        name: str,
        channel: str,
        emit: Emit,
        *,
        force_claim: bool = False,
        lease_timeout: float = 6.0,
        heartbeat_every: float = 1.0,
        idle_timeout: float = 600.0,
        explore_max_states: int = 2_000_000,
        viewer_expiry: float = 30.0,
        quotas: Quotas | None = None,
    ):
        self.name = name
        self.channel = channel
        self.emit = emit
        self.force_claim = force_claim
        self.lease_timeout = lease_timeout
        self.heartbeat_every = heartbeat_every
        self.idle_timeout = idle_timeout
        self.explore_max_states = explore_max_states
        self.viewer_expiry = viewer_expiry
        self.quotas = quotas if quotas is not None else Quotas()
        self.hosts: dict[str, SessionHost] = {}
        self.loading: set[str] = set()  # claimed, being loaded (the keeper renews them too)
        self.loads: dict[str, Load] = {}
        self.wakes: dict[str, float] = {}
        self.next_heartbeat = 0.0
        self.stopping = False
        self.alive = time.monotonic()  # the loop's last sign of progress
        self.keeper = LeaseKeeper(self)

    # --- messages ----------------------------------------------------------------------
    def reply_error(self, message: dict, code: str, text: str) -> None:
        viewer = message.get("viewer")
        if viewer:
            cmd = message.get("msg") or {}
            self.emit("channel", viewer, {"type": P.OUT, "msg": P.error(code, text, cmd.get("id"))})

    def handle(self, message: dict) -> None:
        kind = message.get("type")
        if kind == STATS:
            self.emit("channel", message["reply"], {"type": "ptviz.stats", **self.stats()})
            return
        sid = str(message.get("session") or "")
        if not sid:
            log.warning("engine message without a session: %r", message)
            return
        load = self.loads.get(sid)
        if load is not None:  # (handled in order once it is loaded)
            load.waiting.append(message)
            return
        if kind in (P.LEAVE, P.SEEN):
            host = self.hosts.get(sid)
            if host is not None:
                if kind == P.LEAVE:
                    host.leave(message.get("viewer", ""))
                    self.wakes[sid] = time.monotonic()  # (a cancelled exploration ends)
                else:
                    host.heard(message.get("viewer", ""), message.get("tables") or ())
            return
        host = self.hosts.get(sid)
        if host is None:
            self._acquire(sid, message)
            return
        self._dispatch_safely(host, message, fresh=False)

    def _dispatch_safely(self, host: SessionHost, message: dict, fresh: bool) -> None:
        sid, kind = host.session_id, message.get("type")
        try:
            self._dispatch(host, kind, message, fresh)
        except HostLost as exc:
            log.warning("%s: lost session %s: %s", self.name, sid, exc)
            self._drop(sid, release=False)
            self.reply_error(message, P.UNAVAILABLE, "the engine worker lost this session; retry")
        if sid in self.hosts:
            self.wakes[sid] = time.monotonic()

    def _dispatch(self, host: SessionHost, kind: str, message: dict, fresh: bool) -> None:
        viewer = message.get("viewer")
        if kind == P.JOIN:
            if fresh:
                return  # _acquire registered the viewer and broadcast a snapshot
            host.join(viewer, message.get("tables") or (), who=message.get("who"))
        elif kind == P.COMMAND:
            if viewer:
                host.heard(viewer, message.get("tables") or (), who=message.get("who"))
            host.command(message["msg"], viewer)
        elif kind == P.TAKEOVER:
            if not fresh:
                host.broadcast_snapshot()
        elif kind == P.PRELOAD:
            pass  # (_acquire loaded it, or it was here already)
        else:
            log.warning("unknown engine message type %r", kind)

    def _acquire(self, sid: str, message: dict) -> None:
        """Claim the session and start loading it (or forward the message to its owner)."""
        try:
            owner = store.claim(sid, self.name, self.channel, self.lease_timeout, self.force_claim)
        except store.SessionGone:
            self.reply_error(message, P.ENGINE, "this debug session does not exist (any more)")
            return None
        if owner is not None:
            hops = message.get("hops", 0)
            if owner == self.channel or hops >= MAX_HOPS:
                self.reply_error(message, P.UNAVAILABLE, "no engine worker could take this session")
                return None
            self.emit("channel", owner, {**message, "hops": hops + 1})
            return None
        self.loading.add(sid)
        self.loads[sid] = Load(
            sid,
            message,
            lambda: SessionHost.load(
                sid,
                self.emit,
                explore_max_states=self.explore_max_states,
                worker=None if self.force_claim else self.name,
                quotas=self.quotas,
            ),
        )
        self.loads[sid].start()

    def settle(self, timeout: float = 60.0) -> None:
        """Wait for the loads under way and serve their sessions (a caller driving the
        loop by hand, as tests do; serve() never waits)."""
        for load in list(self.loads.values()):
            load.done.wait(timeout)
        self._finish_loads()

    def _finish_loads(self) -> None:
        """Serve the sessions whose load finished, then the messages that waited for them
        (in the order they came); if it failed, each of those gets the error."""
        for sid, load in list(self.loads.items()):
            if not load.done.is_set():
                continue
            del self.loads[sid]
            self.loading.discard(sid)
            try:
                failed = self._loaded(load)
            except Exception as exc:  # (as safe_handle: the loop goes on)
                log.exception("%s: serving the loaded session %s failed", self.name, sid)
                self._drop(sid)
                failed = P.ENGINE, f"internal error in the engine worker: {exc!r}"
            if failed is not None:
                for message in [load.first, *load.waiting]:
                    self.reply_error(message, *failed)
                continue
            try:
                self._dispatch_safely(self.hosts[sid], load.first, fresh=True)
            except Exception as exc:
                log.exception("%s: message %r failed", self.name, load.first.get("type"))
                self.reply_error(
                    load.first, P.ENGINE, f"internal error in the engine worker: {exc!r}"
                )
            for message in load.waiting:
                self.safe_handle(message)

    def _loaded(self, load: Load) -> tuple[str, str] | None:
        """A finished load: the session is served from now on (the viewer whose message
        started the load joined, everyone watching got a snapshot); or the (code, text) of
        why not."""
        sid, message, host = load.sid, load.first, load.host
        if isinstance(load.error, store.SessionGone):
            store.release(self.name, sid)
            return P.ENGINE, "this debug session does not exist (any more)"
        if load.error is not None or host is None:
            log.error("%s: cannot load session %s", self.name, sid, exc_info=load.error)
            store.release(self.name, sid)
            return P.ENGINE, f"the session cannot be loaded: {load.error}"
        if not self._make_room(host):
            host.close()
            store.release(self.name, sid)
            return (
                P.LIMIT,
                f"this engine worker holds {self._held() >> 20} MiB of sessions and this one "
                f"needs {host.footprint() >> 20} MiB more: above its limit of "
                f"{self.quotas.loaded_bytes >> 20} MiB (PTVIZ_WORKER_MEMORY_MB); retry later",
            )
        log.info(
            "%s: serving session %s (%d decisions, loaded in %.0f ms)",
            self.name,
            sid,
            len(host.live.decisions),
            1000 * (time.monotonic() - load.started_at),
        )
        self.hosts[sid] = host
        viewer = message.get("viewer")
        if viewer:
            host.join(viewer, message.get("tables") or (), reply=False, who=message.get("who"))
        run = store.saved_run(sid)
        if run is not None:  # its previous owner died while running: go on with it
            host.resume(run)
            self.wakes[sid] = time.monotonic()
        # Viewers of a session taken over from a dead worker resync from this snapshot. (Not
        # on a preload: its page's viewer joins and gets its own; such viewers resync at
        # the first delta, whose batch number is this host's.)
        if message.get("type") != P.PRELOAD:
            host.broadcast_snapshot()
        if viewer and message.get("type") == P.JOIN:
            host.welcome(viewer)  # one opening at a moment of the past gets its own
        return None

    def _held(self) -> int:
        return sum(h.footprint() for h in self.hosts.values())

    def _make_room(self, new: SessionHost) -> bool:
        """Unload idle sessions (least recently idle first) until `new` fits the quota."""
        need = new.footprint()
        idle = sorted((h.idle_since, sid) for sid, h in self.hosts.items() if not h.busy)
        while self._held() + need > self.quotas.loaded_bytes and idle:
            _, sid = idle.pop(0)
            log.info("%s: unloading idle session %s to make room", self.name, sid)
            self._drop(sid)
        return self._held() + need <= self.quotas.loaded_bytes

    def stats(self) -> dict:
        return {
            "worker": self.name,
            "sessions": {
                sid: {
                    "viewers": sorted(h.viewers),
                    "running": h.run is not None,
                    "exploring": h.job is not None,
                    "position": h.live.position,
                    "decisions": len(h.live.decisions),
                    "bytes": h.footprint(),
                }
                for sid, h in self.hosts.items()
            },
        }

    def _drop(self, sid: str, release: bool = True) -> None:
        host = self.hosts.pop(sid, None)
        self.wakes.pop(sid, None)
        if host is not None:
            host.close()
        if release:
            try:
                store.release(self.name, sid)
            except Exception:
                log.exception("%s: releasing %s", self.name, sid)

    # --- time --------------------------------------------------------------------------
    def tick(self) -> None:
        if self.loads:
            self._finish_loads()
        now = time.monotonic()
        self.alive = now
        for sid, host in list(self.hosts.items()):
            wake = self.wakes.get(sid)
            if wake is None or wake > now:
                continue
            try:
                nxt = host.tick(now)
            except HostLost as exc:
                log.warning("%s: lost session %s: %s", self.name, sid, exc)
                self._drop(sid, release=False)
                continue
            except Exception:
                log.exception("%s: session %s failed; dropping it", self.name, sid)
                self._drop(sid)
                continue
            if nxt is None:
                self.wakes.pop(sid, None)
            else:
                self.wakes[sid] = nxt
        if now >= self.next_heartbeat:
            self.heartbeat(now)

    def heartbeat(self, now: float) -> None:
        """The loop's side of the lease keeper's work (leases are renewed by the keeper):
        drop what is owned elsewhere, forget silent viewers, unload idle sessions."""
        self.next_heartbeat = now + self.heartbeat_every
        close_old_connections()
        for sid in self.keeper.take_lost():
            if sid in self.hosts:
                log.warning("%s: session %s is owned elsewhere now; dropping it", self.name, sid)
                self._drop(sid, release=False)
        for sid, host in list(self.hosts.items()):
            if host.expire(now, self.viewer_expiry):
                self.wakes[sid] = now
            if not host.busy and now - host.idle_since > self.idle_timeout:
                log.info("%s: session %s idle; unloading it", self.name, sid)
                self._drop(sid)

    def timeout(self) -> float:
        """How long the transport may block waiting for a message."""
        now = time.monotonic()
        nxt = self.next_heartbeat
        for wake in self.wakes.values():
            nxt = min(nxt, wake)
        if self.loads:  # (a load ends in its own thread: look again soon)
            nxt = min(nxt, now + LOAD_POLL)
        return max(0.0, min(nxt - now, self.heartbeat_every))

    def safe_handle(self, message: dict) -> None:
        try:
            self.handle(message)
        except Exception as exc:
            log.exception("%s: message %r failed", self.name, message.get("type"))
            self.reply_error(message, P.ENGINE, f"internal error in the engine worker: {exc!r}")

    def serve(self, get: Callable[[float], dict | None], batch: int = 64) -> None:
        """Run until `get` returns STOP (or self.stopping). `get(timeout)` returns the
        next message or None when none came within `timeout` seconds."""
        self.keeper.start()
        try:
            while not self.stopping:
                message = get(self.timeout())
                handled = 0
                while message is not None:
                    if message.get("type") == STOP["type"]:
                        self.stopping = True
                        break
                    self.safe_handle(message)
                    handled += 1
                    if handled >= batch:
                        break
                    message = get(0)
                if self.stopping:
                    break
                self.tick()
        finally:
            self.shutdown()

    def shutdown(self) -> None:
        self.keeper.stop.set()
        for sid in list(self.loads):  # (their threads end on their own; nobody is served)
            self.loads.pop(sid)
            self.loading.discard(sid)
            try:
                store.release(self.name, sid)
            except Exception:
                log.exception("%s: releasing %s", self.name, sid)
        for sid in list(self.hosts):
            try:
                self._drop(sid)
            except Exception:
                log.exception("%s: closing %s", self.name, sid)
