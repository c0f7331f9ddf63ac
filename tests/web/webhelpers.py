"""Helpers of the web tests (fixtures are in conftest.py)."""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path

from channels.testing import WebsocketCommunicator

from ptviz import layers
from ptviz.localservices import REDIS_HOST, REDIS_PORT, REDIS_URL, redis_up  # noqa: F401

ROOT = Path(__file__).resolve().parents[2]
PREFIX = f"ptviz-test-{uuid.uuid4().hex[:10]}:"
ORIGIN = [(b"origin", b"http://localhost")]
LEASE_TIMEOUT = 2.5  # short, so that the takeover test is quick


def arun(coro, timeout: float = 60):
    return asyncio.run(asyncio.wait_for(coro, timeout))


def inmemory_layers() -> dict:
    return layers.inmemory_layers()


def redis_layers() -> dict:
    return layers.redis_layers(REDIS_URL, PREFIX)


class Viewer:
    """One websocket viewer (a browser, as far as the server can tell)."""

    def __init__(self, comm: WebsocketCommunicator):
        self.comm = comm
        self.unseen: list[dict] = []
        self.seen: list[dict] = []
        self.next_id = 0

    @classmethod
    async def open(cls, session_id, token: str, origin=ORIGIN, query: str = "") -> Viewer:
        from ptviz.asgi import application

        comm = WebsocketCommunicator(
            application, f"/ws/sessions/{session_id}/?token={token}{query}", headers=origin
        )
        connected, _ = await comm.connect(timeout=10)
        assert connected
        return cls(comm)

    async def _receive(self, timeout: float) -> dict:
        msg = await self.comm.receive_json_from(timeout=timeout)
        self.seen.append(msg)
        return msg

    async def expect(self, pred, timeout: float = 15, what: str = "") -> dict:
        """The first message (not consumed yet) for which pred(msg) holds."""
        for n, msg in enumerate(self.unseen):
            if pred(msg):
                del self.unseen[n]
                return msg
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no {what or 'matching'} message; got {self.unseen[-8:]}")
            try:
                msg = await self._receive(left)
            except TimeoutError:
                raise AssertionError(
                    f"no {what or 'matching'} message within {timeout} s; got {self.unseen[-8:]}"
                ) from None
            if pred(msg):
                return msg
            self.unseen.append(msg)

    async def type(self, kind: str, timeout: float = 15, **fields) -> dict:
        return await self.expect(
            lambda m: m.get("type") == kind and all(m.get(k) == v for k, v in fields.items()),
            timeout,
            kind,
        )

    async def command(self, cmd: str, **fields) -> int:
        self.next_id += 1
        await self.comm.send_json_to(
            {"v": 1, "type": "command", "id": self.next_id, "cmd": cmd, **fields}
        )
        return self.next_id

    async def answer(self, id_: int, timeout: float = 15) -> dict:
        """The ack or error for command id_."""
        return await self.expect(
            lambda m: m.get("type") in ("ack", "error") and m.get("id") == id_,
            timeout,
            f"ack/error for {id_}",
        )

    async def ok(self, cmd: str, **fields) -> dict:
        reply = await self.answer(await self.command(cmd, **fields))
        assert reply["type"] == "ack", reply
        return reply

    async def start(self) -> tuple[dict, dict]:
        hello = await self.type("hello")
        snap = await self.type("snapshot", timeout=30)
        return hello, snap

    def drop_unseen(self) -> None:
        self.unseen.clear()

    async def close(self) -> None:
        await self.comm.disconnect()
