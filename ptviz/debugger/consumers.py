"""The session websocket (docs/protocol.md): thin by design.

It parses and validates the browser's messages, authorizes them by the share link's role,
forwards them to the engine worker that owns the session, and relays what the engine
sends (to the session's group or to this viewer) to the browser. No engine work happens
in the server's event loop.

Each viewer has a bounded outgoing queue: when more than PTVIZ_VIEWER_BACKLOG delta
batches are waiting, they are dropped and the engine is asked for one fresh snapshot
instead. Under `manage.py serve` the queue drains only as fast as the socket's write
buffer empties (daphne's `send` returns at once: DESIGN.md, "Pitfalls"), so a viewer that
stops reading collapses to snapshots instead of growing the server.

Whatever ends the consumer (a close, a crash, a channel layer outage), `_cleanup` runs:
its tasks are cancelled, its channel leaves the group and the engine hears LEAVE. If the
server dies instead, the engine expires the viewer once its heartbeats stop.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import time
from collections import deque
from datetime import timedelta
from urllib.parse import parse_qs

from channels.exceptions import ChannelFull
from channels.generic.websocket import AsyncWebsocketConsumer
from django.conf import settings
from django.utils import timezone

from ptviz import protocol as P
from ptviz.debugger.models import EngineLease, ShareLink
from ptviz.debugger.shared_lookup import SharedLookup

log = logging.getLogger("ptviz.web")

CLOSE_FORBIDDEN = 4003
CLOSE_NOT_FOUND = 4004
CLOSE_REVOKED = 4010  # the link was revoked or expired while open
LINK_CHECK = 2.0  # seconds between checks of the link (a backstop: revoking tells at once)
CLOSE_FLOOD = 4008  # policy violation: kept sending far over the rate limit
CLOSE_LAYER = 1011  # the channel layer failed; the page reconnects
# Commands that can be sent again to the session's new worker after its old one died
# without answering (doing them twice is the same as once). The others get `unavailable`
# at once: a decision may or may not have been stored, the viewer's snapshot tells.
RETRY_SAFE = frozenset(("pause", "seek", "subscribe", "unsubscribe", "resync"))
WRITE_BUFFER_LIMIT = 256 * 1024  # bytes waiting in the socket before the sender waits
RESYNC_INTERVAL = 0.5  # at most one resync snapshot per viewer per this many seconds
# Who serves a session, (worker, channel), and whether a link was revoked, as this server
# last looked them up: the viewers of a session (of a link) share one query per LEASE_CACHE
# (LINK_CACHE) seconds. A session without a live owner is looked up again at once: a
# worker is taking it over.
LEASE_CACHE = 0.25
LINK_CACHE = 1.0
_leases = SharedLookup(LEASE_CACHE, keep=lambda route: route[0] is not None)
_links = SharedLookup(LINK_CACHE)


def write_buffer_of(scope) -> callable | None:
    """The bytes waiting in this connection's socket, when the server tells (our daphne
    Server subclass puts a probe in the scope: manage.py serve)."""
    return scope.get("ptviz.write_buffer")


class TokenBucket:
    """`rate` messages per second on average, bursts of `burst`."""

    def __init__(self, rate: float, burst: int):
        self.rate, self.burst = rate, burst
        self.tokens = float(burst)
        self.stamp = time.monotonic()

    def take(self) -> bool:
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= 1:
            self.tokens -= 1
            return True
        return False


class SessionConsumer(AsyncWebsocketConsumer):
    # What the engine sends its viewers (ptviz_out) never touches the database, so it
    # skips the close_old_connections that AsyncConsumer.dispatch runs before every
    # handler: a hop to Django's one sync thread per message, which with 200 viewers of
    # a session was 200 serialised hops per delta (most of the fan-out's latency).
    async def dispatch(self, message):
        if message.get("type") == "ptviz.out":
            await self.ptviz_out(message)
        else:
            await super().dispatch(message)

    async def __call__(self, scope, receive, send):
        self.joined = False
        self.cleaned = False
        self.tasks: list[asyncio.Task] = []
        try:
            await super().__call__(scope, receive, send)
        finally:
            await self._cleanup()

    async def connect(self):
        self.session_id = str(self.scope["url_route"]["kwargs"]["session_id"])
        self.group = P.group_name(self.session_id)
        query = parse_qs(self.scope.get("query_string", b"").decode("latin-1"))
        token = (query.get("token") or [""])[0]
        link = None
        if token:
            link = (
                await ShareLink.objects.select_related("session")
                .filter(token=token, session_id=self.session_id)
                .afirst()
            )
        await self.accept()
        if link is None or link.dead_reason():
            text = (
                f"this share link was {link.dead_reason()} by the session's owner"
                if link is not None
                else "this share link does not open this debug session"
            )
            code = P.REVOKED if link is not None else P.FORBIDDEN
            await self.send(text_data=json.dumps(P.error(code, text)))
            await self.close(code=CLOSE_REVOKED if link is not None else CLOSE_FORBIDDEN)
            return
        self.role = link.role
        self.token = token
        self.closing = False
        self.label = link.label
        self.expires = link.expires
        session = link.session
        # The viewer's cursor as the engine last told it (None: following the head live),
        # re-sent with every message so a worker that takes the session over puts it
        # back; a link to a moment starts it there (`at`, checked against `h`).
        self.at: str | None = (query.get("at") or [None])[0]
        self.want_hash: str | None = (query.get("h") or [None])[0]
        # A link's descriptor (`d`): the engine subscribes this viewer to the tables down
        # to it and sends them in its own snapshot (until then, every message says so).
        self.focus: str | None = (query.get("d") or [None])[0]
        self.viewer_name = (query.get("name") or [""])[0][:60]
        self.following_head = self.at is None
        self.outq: deque = deque()  # dicts, or ("delta" | "text", text) already encoded
        self.wake = asyncio.Event()
        self.poke = asyncio.Event()  # _watch has something new to time
        self.queued_deltas = 0
        self.sending = False
        self.awaiting_snapshot = True
        self.snapshot_asked = time.monotonic()
        self.last_batch: int | None = None
        self.pending: dict = {}  # command id -> (deadline, command)
        self.subs: set[int] = set()
        self.owner: str | None = None  # the worker serving the session at the last check
        self.timeout = settings.PTVIZ_ENGINE_TIMEOUT
        self.backlog = settings.PTVIZ_VIEWER_BACKLOG
        self.bucket = TokenBucket(settings.PTVIZ_RATE, settings.PTVIZ_RATE_BURST)
        self.refused = 0
        self.last_resync = 0.0
        self.resync_due = False
        self.write_buffer = write_buffer_of(self.scope)
        try:
            await self.channel_layer.group_add(self.group, self.channel_name)
        except Exception:
            log.warning("viewer of %s: the channel layer failed at connect", self.session_id)
            await self.close(code=CLOSE_LAYER)
            return
        self.joined = True
        await self.send(
            text_data=json.dumps(
                P.message(
                    "hello",
                    protocol=P.VERSION,
                    session=self.session_id,
                    role=self.role,
                    name=session.name,
                    kernel=session.kernel,
                )
            )
        )
        self.tasks = [
            asyncio.create_task(self._sender()),
            asyncio.create_task(self._watch()),
        ]
        await self._join()

    async def disconnect(self, code):
        await self._cleanup()

    async def _cleanup(self) -> None:
        """Idempotent; runs on every way out (disconnect, exception, cancellation)."""
        if self.cleaned:
            return
        self.cleaned = True
        for task in self.tasks:
            task.cancel()
        # (awaited: a heartbeat's group_add in flight must not land after the discard)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(asyncio.gather(*self.tasks, return_exceptions=True), 5)
        if self.joined:
            self.joined = False
            with contextlib.suppress(Exception):
                await asyncio.wait_for(
                    self.channel_layer.group_discard(self.group, self.channel_name), 5
                )
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._to_engine({"type": P.LEAVE}, quiet=True), 5)

    # --- browser -> engine -------------------------------------------------------------
    async def receive(self, text_data=None, bytes_data=None):
        if not self.joined:
            return
        if not self.bucket.take():
            self.refused += 1
            if self.refused > 5 * settings.PTVIZ_RATE_BURST:
                log.info("viewer %s floods; closing it", self.channel_name)
                await self.close(code=CLOSE_FLOOD)
                return
            id_ = None
            with contextlib.suppress(P.ProtocolError):
                id_ = P.parse_client_message(text_data)["id"]
            self._enqueue(
                P.error(
                    P.RATE_LIMITED,
                    f"more than {settings.PTVIZ_RATE:g} messages per second "
                    f"(bursts of {settings.PTVIZ_RATE_BURST}); this one was not taken",
                    id_,
                )
            )
            return
        self.refused = 0
        try:
            cmd = P.parse_client_message(text_data)
        except P.ProtocolError as exc:
            self._enqueue(exc.as_message())
            return
        id_ = cmd["id"]
        if cmd["cmd"] in P.CONTROL_COMMANDS and self.role != "control":
            self._enqueue(
                P.error(
                    P.FORBIDDEN,
                    f"'{cmd['cmd']}' needs a control link; this link can only view",
                    id_,
                )
            )
            return
        if cmd["cmd"] == "subscribe":
            self.subs.update(cmd["tables"])
        elif cmd["cmd"] == "unsubscribe":
            self.subs.difference_update(cmd["tables"])
        elif cmd["cmd"] == "resync":
            now = time.monotonic()
            if self.awaiting_snapshot or now - self.last_resync < RESYNC_INTERVAL:
                # Coalesced: the snapshot on its way (or the one _watch asks for at the end
                # of the interval) answers this one too.
                self.resync_due = not self.awaiting_snapshot
                self.poke.set()
                if id_ is not None:
                    self._enqueue(P.ack(id_))
                return
            self.last_resync = now
            self._ask_snapshot()
        elif cmd["cmd"] in ("seek", "back", "live", "follow"):
            self._ask_snapshot()
        elif cmd["cmd"] == "hello":
            self.viewer_name = cmd["name"]
        await self._command(cmd)

    async def _route(self) -> tuple[str | None, str]:
        """(the worker that owns the session, its channel), or (None, the shared one).
        One lookup per LEASE_CACHE seconds serves every viewer of the session here."""
        return await _leases.get(self.session_id, self._look_up_lease)

    async def _look_up_lease(self) -> tuple[str | None, str]:
        lease = await EngineLease.objects.filter(session_id=self.session_id).afirst()
        fresh = timezone.now() - timedelta(seconds=settings.PTVIZ_LEASE_TIMEOUT)
        if lease is not None and lease.heartbeat >= fresh:
            return lease.worker, lease.channel
        return None, P.ENGINE_CHANNEL

    async def _to_engine(self, message: dict, quiet: bool = False) -> str | None:
        """Send to the session's worker; the channel it went to (None: it failed)."""
        message = {
            **message,
            "session": self.session_id,
            "viewer": self.channel_name,
            "tables": [hex(t) for t in sorted(self.subs)],
            "who": {
                "role": self.role,
                "name": self.viewer_name,
                "label": self.label,
                "at": self.at,
                "hash": self.want_hash,
                "focus": self.focus,
            },
        }
        cmd = message.get("msg") or {}
        try:
            _owner, channel = await self._route()
            await self.channel_layer.send(channel, message)
            return channel
        except ChannelFull:
            text = "the engine workers are overloaded; retry"
        except Exception as exc:  # a Redis outage: the page retries, nothing is lost
            log.warning("viewer %s: sending to the engine failed: %r", self.channel_name, exc)
            text = "the engine workers cannot be reached right now; retry"
        if not quiet:
            self.pending.pop(cmd.get("id"), None)
            self._enqueue(P.error(P.UNAVAILABLE, text, cmd.get("id")))
        return None

    async def _command(self, cmd: dict) -> None:
        """Send a command to the engine; remember where it went until it is answered."""
        id_ = cmd["id"]
        if id_ is not None:
            self.pending[id_] = (time.monotonic() + self.timeout, cmd, None)
            self.poke.set()
        channel = await self._to_engine({"type": P.COMMAND, "msg": cmd})
        if id_ in self.pending and channel is not None:
            self.pending[id_] = (time.monotonic() + self.timeout, cmd, channel)

    def _ask_snapshot(self) -> None:
        self.awaiting_snapshot = True
        self.snapshot_asked = time.monotonic()
        self.poke.set()
        self._drop_deltas()

    async def _join(self) -> None:
        self._ask_snapshot()
        await self._to_engine({"type": P.JOIN})

    # --- engine -> browser -------------------------------------------------------------
    async def ptviz_out(self, event):
        msg = event["msg"]
        kind = msg.get("type")
        if kind in ("ack", "error"):
            self.pending.pop(msg.get("id"), None)
        elif kind == "presence" and "text" in event:  # encoded once by the engine
            self._enqueue(("text", event["text"]))
            return
        elif kind in ("delta", "snapshot") and "you" not in msg and not self.following_head:
            # The head moved on; this viewer looks at another moment: only say where the
            # head is now (nothing it looks at moves).
            if not self.awaiting_snapshot and msg.get("head"):
                self._enqueue(P.message("head", **msg["head"]))
            return
        elif kind == "delta":
            batch = msg.get("batch", 0)
            if self.awaiting_snapshot or (self.last_batch is not None and batch <= self.last_batch):
                return  # a snapshot that is on its way (or was sent) covers it
            if self.queued_deltas >= self.backlog:
                log.info("viewer %s fell behind; collapsing to a snapshot", self.channel_name)
                await self._join()
                return
            self.last_batch = batch
            if "text" in event:  # encoded once by the engine for every viewer
                await self._deliver(("delta", self._own_tables_text(event)))
                return
            msg = self._own_tables(msg)
        elif kind == "tables":
            if self.awaiting_snapshot:
                return  # the snapshot carries them
            if self.following_head:  # (tables at another moment come to this viewer alone)
                msg = self._own_tables(msg)
        elif kind == "snapshot":
            cursor = msg.get("cursor") or {}
            if "you" in msg:
                self.following_head = bool(cursor.get("live", True))
                self.at = None if self.following_head else cursor.get("moment")
                self.want_hash = None
                # its own snapshot has the tables the engine holds it subscribed to
                # (with those a link's descriptor opened)
                for key in msg.get("tables") or {}:
                    with contextlib.suppress(ValueError):
                        self.subs.add(P.parse_table_address(key))
                self.focus = None
            self.awaiting_snapshot = False
            self.last_batch = msg.get("batch")
            self._drop_deltas()
            msg = self._own_tables(msg)
        await self._deliver(msg)

    def _own_tables_text(self, event) -> str:
        """The delta's JSON with only the tables this viewer subscribed (each table's JSON
        was encoded once, by the engine)."""
        parts = []
        for key, text in event.get("tables", {}).items():
            try:
                if P.parse_table_address(key) in self.subs:
                    parts.append(f"{json.dumps(key)}:{text}")
            except ValueError:
                continue
        return event["text"][:-1] + ',"tables":{' + ",".join(parts) + "}}"

    def _own_tables(self, msg: dict) -> dict:
        """Deltas and group snapshots carry the tables any viewer subscribed; keep ours."""
        tables = msg.get("tables")
        if not tables:
            return msg
        mine = {}
        for key, view in tables.items():
            try:
                if P.parse_table_address(key) in self.subs:
                    mine[key] = view
            except ValueError:
                continue
        return {**msg, "tables": mine}

    @staticmethod
    def _is_delta(item) -> bool:
        """outq holds dicts, or (kind, text) already encoded ("delta" or "text")."""
        return item[0] == "delta" if isinstance(item, tuple) else item.get("type") == "delta"

    def _drop_deltas(self) -> None:
        if self.queued_deltas:
            self.outq = deque(m for m in self.outq if not self._is_delta(m))
            self.queued_deltas = 0

    def _enqueue(self, msg) -> None:
        if self._is_delta(msg):
            self.queued_deltas += 1
        self.outq.append(msg)
        self.wake.set()

    def _socket_full(self) -> bool:
        return self.write_buffer is not None and self.write_buffer() > WRITE_BUFFER_LIMIT

    async def _deliver(self, msg) -> None:
        """Send at once when nothing waits before it and the socket takes it, else queue
        it for _sender: a delta to 200 viewers was 200 more task switches through it."""
        if self.outq or self.sending or self._socket_full():
            self._enqueue(msg)
        else:
            await self._send_one(msg)

    async def _send_one(self, item) -> None:
        text = item[1] if isinstance(item, tuple) else json.dumps(item, separators=(",", ":"))
        await self.send(text_data=text)

    async def _sender(self) -> None:
        while True:
            while not self.outq:
                self.wake.clear()
                await self.wake.wait()
            # Backpressure: while the socket still holds more than WRITE_BUFFER_LIMIT
            # bytes, deltas wait in outq (and collapse into a snapshot past the backlog).
            while self._socket_full():
                await asyncio.sleep(0.02)
            item = self.outq.popleft()
            if self._is_delta(item):
                self.queued_deltas -= 1
            self.sending = True  # (_deliver must not overtake the item in hand)
            try:
                await self._send_one(item)
            finally:
                self.sending = False

    # --- the link's life -----------------------------------------------------------------
    async def ptviz_revoked(self, event):
        """The owner revoked a link of this session (views.link_revoke): ours?"""
        if event.get("token") == self.token:
            await self._end_link("revoked")

    async def _end_link(self, why: str) -> None:
        if self.closing:
            return
        self.closing = True
        await self.send(
            text_data=json.dumps(
                P.error(P.REVOKED, f"this share link was {why} by the session's owner")
            )
        )
        await self.close(code=CLOSE_REVOKED)

    async def _check_link(self) -> None:
        if self.expires is not None and timezone.now() >= self.expires:
            await self._end_link("expired")
            return
        if await _links.get(self.token, self._look_up_revoked):
            await self._end_link("revoked")

    async def _look_up_revoked(self) -> bool:
        revoked = (
            await ShareLink.objects.filter(token=self.token)
            .values_list("revoked", flat=True)
            .afirst()
        )
        return revoked is not None

    # --- the engine's health -----------------------------------------------------------
    async def _watch(self) -> None:
        """Time commands out; tell the engine this viewer is alive (and renew the group
        membership a Redis restart may have lost); notice when the session's worker died
        or moved: then claim it through the shared channel (another worker takes over),
        resync, and settle the commands the dead worker never answered."""
        # (spread over the first interval: viewers that opened together do not all
        # query the database in the same instant every interval after)
        start = time.monotonic()
        next_lease_check = start + settings.PTVIZ_LEASE_CHECK * random.uniform(0.5, 1)
        next_seen = start + settings.PTVIZ_VIEWER_HEARTBEAT * random.uniform(0.5, 1)
        next_link_check = start + LINK_CHECK * random.uniform(0.5, 1)
        while True:
            # Asleep until the next thing falls due (or poke: a command, a resync or a
            # snapshot asked for): a fixed tick was 4 wake-ups a second per viewer.
            due = min(next_link_check, next_seen, next_lease_check, self._next_due())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.poke.wait(), max(0.0, due - time.monotonic()))
            self.poke.clear()
            now = time.monotonic()
            if now >= next_link_check or (
                self.expires is not None and timezone.now() >= self.expires
            ):
                next_link_check = now + LINK_CHECK
                await self._check_link()
                if self.closing:
                    return
            for id_, (deadline, _cmd, _sent) in list(self.pending.items()):
                if now >= deadline:
                    del self.pending[id_]
                    self._enqueue(
                        P.error(
                            P.UNAVAILABLE,
                            f"no engine worker answered within {self.timeout:g} s",
                            id_,
                        )
                    )
            if self.resync_due and now - self.last_resync >= RESYNC_INTERVAL:
                self.resync_due = False
                self.last_resync = now
                self._ask_snapshot()
                await self._command({"cmd": "resync", "id": None})
            if self.awaiting_snapshot and now - self.snapshot_asked >= self.timeout:
                self._enqueue(
                    P.error(P.UNAVAILABLE, "no engine worker sent the session's state; retrying")
                )
                await self._join()
            try:
                if now >= next_seen:
                    next_seen = now + settings.PTVIZ_VIEWER_HEARTBEAT
                    await self.channel_layer.group_add(self.group, self.channel_name)
                    await self._to_engine({"type": P.SEEN}, quiet=True)
                if now >= next_lease_check:
                    next_lease_check = now + settings.PTVIZ_LEASE_CHECK
                    await self._check_owner()
            except Exception as exc:  # the layer or the database is away: try again later
                log.warning("viewer %s: health check failed: %r", self.channel_name, exc)

    def _next_due(self) -> float:
        """When _watch must next look at this viewer's commands, resync and snapshot."""
        due = [deadline for deadline, _cmd, _sent in self.pending.values()]
        if self.resync_due:
            due.append(self.last_resync + RESYNC_INTERVAL)
        if self.awaiting_snapshot:
            due.append(self.snapshot_asked + self.timeout)
        if self.expires is not None:
            due.append(time.monotonic() + (self.expires - timezone.now()).total_seconds())
        return min(due, default=float("inf"))

    async def _check_owner(self) -> None:
        before = self.owner
        self.owner, channel = await self._route()
        dead = self.owner is None
        moved = before is not None and self.owner != before
        await self._settle_pending(channel)
        if not self.awaiting_snapshot and (dead or moved):
            await self._join()  # dead or moved: claim it / register our tables

    async def _settle_pending(self, current: str) -> None:
        """Commands sent to a worker that no longer serves the session will never be
        answered: send the harmless ones again (to the new owner, or through the shared
        channel to whoever takes the session over) and answer the others now rather than
        at the timeout (issue 6, defect 10)."""
        for id_, (_deadline, cmd, sent) in list(self.pending.items()):
            if sent in (None, P.ENGINE_CHANNEL, current):
                continue
            if cmd["cmd"] in RETRY_SAFE:
                await self._command(cmd)
            else:
                del self.pending[id_]
                self._enqueue(
                    P.error(
                        P.UNAVAILABLE,
                        f"the engine worker serving this session stopped before answering "
                        f"'{cmd['cmd']}'; the next snapshot shows whether it was taken",
                        id_,
                    )
                )
