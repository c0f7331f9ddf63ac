"""EngineLoop: the sessions one engine worker owns, driven from one thread.

Transport-agnostic: messages come in through `get(timeout)` and go out through `emit`;
the distributed worker (distributed.py) feeds it from the Redis channel layer, an
embedded worker process (embedded.py) from the bridge's pipe. Between messages it runs
the sessions' run slices, exploration progress and lease heartbeats.

Ownership: before it serves a session it does not hold, the loop claims the session's
EngineLease. A live lease held by another worker means the message is forwarded to that
worker; a stale one (its worker died) is taken over: the session is rebuilt from the
database and every viewer gets a fresh snapshot.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from django.db import close_old_connections

from ptviz import protocol as P
from ptviz.engine_worker import store
from ptviz.engine_worker.host import Emit, HostLost, SessionHost

log = logging.getLogger("ptviz.engine")

STOP = {"type": "engine.stop"}
MAX_HOPS = 3


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
    ):
        self.name = name
        self.channel = channel
        self.emit = emit
        self.force_claim = force_claim
        self.lease_timeout = lease_timeout
        self.heartbeat_every = heartbeat_every
        self.idle_timeout = idle_timeout
        self.explore_max_states = explore_max_states
        self.hosts: dict[str, SessionHost] = {}
        self.wakes: dict[str, float] = {}
        self.next_heartbeat = 0.0
        self.stopping = False

    # --- messages ----------------------------------------------------------------------
    def reply_error(self, message: dict, code: str, text: str) -> None:
        viewer = message.get("viewer")
        if viewer:
            cmd = message.get("msg") or {}
            self.emit("channel", viewer, {"type": P.OUT, "msg": P.error(code, text, cmd.get("id"))})

    def handle(self, message: dict) -> None:
        kind = message.get("type")
        sid = str(message.get("session") or "")
        if not sid:
            log.warning("engine message without a session: %r", message)
            return
        if kind == P.LEAVE:
            host = self.hosts.get(sid)
            if host is not None:
                host.leave(message.get("viewer", ""))
            return
        host = self.hosts.get(sid)
        fresh = False
        if host is None:
            host = self._acquire(sid, message)
            if host is None:
                return
            fresh = True
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
            if viewer and viewer not in host.viewers:
                host.join(viewer, message.get("tables") or (), reply=False, who=message.get("who"))
            host.command(message["msg"], viewer)
        elif kind == P.TAKEOVER:
            if not fresh:
                host.broadcast_snapshot()
        else:
            log.warning("unknown engine message type %r", kind)

    def _acquire(self, sid: str, message: dict) -> SessionHost | None:
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
        started = time.monotonic()
        try:
            host = SessionHost.load(sid, self.emit, explore_max_states=self.explore_max_states)
        except store.SessionGone:
            store.release(self.name, sid)
            self.reply_error(message, P.ENGINE, "this debug session does not exist (any more)")
            return None
        except Exception as exc:
            log.exception("%s: cannot load session %s", self.name, sid)
            store.release(self.name, sid)
            self.reply_error(message, P.ENGINE, f"the session cannot be loaded: {exc}")
            return None
        log.info(
            "%s: serving session %s (%d decisions, loaded in %.0f ms)",
            self.name,
            sid,
            len(host.live.decisions),
            1000 * (time.monotonic() - started),
        )
        self.hosts[sid] = host
        viewer = message.get("viewer")
        if viewer:
            host.join(viewer, message.get("tables") or (), reply=False, who=message.get("who"))
        # Viewers of a session taken over from a dead worker resync from this snapshot.
        host.broadcast_snapshot()
        if viewer and message.get("type") == P.JOIN:
            host.welcome(viewer)  # one opening at a moment of the past gets its own
        return host

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
        now = time.monotonic()
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
        self.next_heartbeat = now + self.heartbeat_every
        close_old_connections()
        try:
            owned = store.heartbeat(self.name, list(self.hosts))
        except Exception:
            log.exception("%s: heartbeat failed", self.name)
            return
        for sid in list(self.hosts):
            if sid not in owned:
                log.warning("%s: session %s is owned elsewhere now; dropping it", self.name, sid)
                self._drop(sid, release=False)
        for sid, host in list(self.hosts.items()):
            if not host.busy and now - host.idle_since > self.idle_timeout:
                log.info("%s: session %s idle; unloading it", self.name, sid)
                self._drop(sid)

    def timeout(self) -> float:
        """How long the transport may block waiting for a message."""
        now = time.monotonic()
        nxt = self.next_heartbeat
        for wake in self.wakes.values():
            nxt = min(nxt, wake)
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
        for sid in list(self.hosts):
            try:
                self._drop(sid)
            except Exception:
                log.exception("%s: closing %s", self.name, sid)
