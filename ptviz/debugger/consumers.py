"""The session websocket (docs/protocol.md): thin by design.

It parses and validates the browser's messages, authorizes them by the share link's role,
forwards them to the engine worker that owns the session, and relays what the engine
sends (to the session's group or to this viewer) to the browser. No engine work happens
in the server's event loop.

Each viewer has a bounded outgoing queue: when more than PTVIZ_VIEWER_BACKLOG delta
batches are waiting, they are dropped and the engine is asked for one fresh snapshot
instead (daphne applies no websocket backpressure: DESIGN.md, "Pitfalls").
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
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

log = logging.getLogger("ptviz.web")

CLOSE_FORBIDDEN = 4003
CLOSE_NOT_FOUND = 4004
CLOSE_REVOKED = 4010  # the link was revoked or expired while open
LINK_CHECK = 2.0  # seconds between checks of the link (a backstop: revoking tells at once)
GROUP_REFRESH = 600.0  # seconds between group_add renewals (group expiry)


class SessionConsumer(AsyncWebsocketConsumer):
    async def connect(self):
        self.session_id = str(self.scope["url_route"]["kwargs"]["session_id"])
        self.group = P.group_name(self.session_id)
        self.joined = False
        self.tasks: list[asyncio.Task] = []
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
        self.viewer_name = (query.get("name") or [""])[0][:60]
        self.following_head = self.at is None
        self.outq: deque[dict] = deque()
        self.wake = asyncio.Event()
        self.queued_deltas = 0
        self.awaiting_snapshot = True
        self.snapshot_asked = time.monotonic()
        self.last_batch: int | None = None
        self.pending: dict = {}  # command id -> deadline
        self.subs: set[int] = set()
        self.owner: str | None = None
        self.timeout = settings.PTVIZ_ENGINE_TIMEOUT
        self.backlog = settings.PTVIZ_VIEWER_BACKLOG
        await self.channel_layer.group_add(self.group, self.channel_name)
        self.joined = True
        self.group_added = time.monotonic()
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
        for task in self.tasks:
            task.cancel()
        if self.joined:
            await self.channel_layer.group_discard(self.group, self.channel_name)
            with contextlib.suppress(Exception):
                await self._to_engine({"type": P.LEAVE}, quiet=True)

    # --- browser -> engine -------------------------------------------------------------
    async def receive(self, text_data=None, bytes_data=None):
        if not self.joined:
            return
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
        elif cmd["cmd"] in ("resync", "seek", "back", "live", "follow"):
            self._ask_snapshot()
        elif cmd["cmd"] == "hello":
            self.viewer_name = cmd["name"]
        if id_ is not None:
            self.pending[id_] = time.monotonic() + self.timeout
        await self._to_engine({"type": P.COMMAND, "msg": cmd})

    async def _route(self) -> str:
        """The channel of the worker that owns the session, or the shared one."""
        lease = await EngineLease.objects.filter(session_id=self.session_id).afirst()
        fresh = timezone.now() - timedelta(seconds=settings.PTVIZ_LEASE_TIMEOUT)
        if lease is not None and lease.heartbeat >= fresh:
            self.owner = lease.worker
            return lease.channel
        return P.ENGINE_CHANNEL

    async def _to_engine(self, message: dict, quiet: bool = False) -> None:
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
            },
        }
        try:
            await self.channel_layer.send(await self._route(), message)
        except ChannelFull:
            if not quiet:
                cmd = message.get("msg") or {}
                self.pending.pop(cmd.get("id"), None)
                self._enqueue(
                    P.error(
                        P.UNAVAILABLE, "the engine workers are overloaded; retry", cmd.get("id")
                    )
                )

    def _ask_snapshot(self) -> None:
        self.awaiting_snapshot = True
        self.snapshot_asked = time.monotonic()
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
            msg = self._own_tables(msg)
            self.queued_deltas += 1
        elif kind == "snapshot":
            cursor = msg.get("cursor") or {}
            if "you" in msg:
                self.following_head = bool(cursor.get("live", True))
                self.at = None if self.following_head else cursor.get("moment")
                self.want_hash = None
            self.awaiting_snapshot = False
            self.last_batch = msg.get("batch")
            self._drop_deltas()
            msg = self._own_tables(msg)
        self._enqueue(msg)

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

    def _drop_deltas(self) -> None:
        if self.queued_deltas:
            self.outq = deque(m for m in self.outq if m.get("type") != "delta")
            self.queued_deltas = 0

    def _enqueue(self, msg: dict) -> None:
        self.outq.append(msg)
        self.wake.set()

    async def _sender(self) -> None:
        while True:
            while not self.outq:
                self.wake.clear()
                await self.wake.wait()
            msg = self.outq.popleft()
            if msg.get("type") == "delta":
                self.queued_deltas -= 1
            await self.send(text_data=json.dumps(msg, separators=(",", ":")))

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
        revoked = (
            await ShareLink.objects.filter(token=self.token)
            .values_list("revoked", flat=True)
            .afirst()
        )
        if revoked is not None:
            await self._end_link("revoked")

    # --- the engine's health -----------------------------------------------------------
    async def _watch(self) -> None:
        """Time commands out, and notice when the session's worker died or moved: then
        claim it through the shared channel (another worker takes over) and resync."""
        next_lease_check = time.monotonic() + settings.PTVIZ_LEASE_CHECK
        next_link_check = time.monotonic() + LINK_CHECK
        while True:
            await asyncio.sleep(0.25)
            now = time.monotonic()
            if now >= next_link_check or (
                self.expires is not None and timezone.now() >= self.expires
            ):
                next_link_check = now + LINK_CHECK
                await self._check_link()
                if self.closing:
                    return
            for id_, deadline in list(self.pending.items()):
                if now > deadline:
                    del self.pending[id_]
                    self._enqueue(
                        P.error(
                            P.UNAVAILABLE,
                            f"no engine worker answered within {self.timeout:g} s",
                            id_,
                        )
                    )
            if self.awaiting_snapshot and now - self.snapshot_asked > self.timeout:
                self._enqueue(
                    P.error(P.UNAVAILABLE, "no engine worker sent the session's state; retrying")
                )
                await self._join()
            if now >= next_lease_check:
                next_lease_check = now + settings.PTVIZ_LEASE_CHECK
                before = self.owner
                self.owner = None
                await self._route()
                if not self.awaiting_snapshot and (
                    self.owner is None or (before is not None and self.owner != before)
                ):
                    await self._join()  # dead or moved: claim it / register our tables
            if now - self.group_added > GROUP_REFRESH:
                self.group_added = now
                await self.channel_layer.group_add(self.group, self.channel_name)
