"""Helpers of the web tests (fixtures are in conftest.py)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from channels.testing import WebsocketCommunicator

from ptviz import layers
from ptviz.localservices import REDIS_HOST, REDIS_PORT, REDIS_URL, redis_up  # noqa: F401
from tests.scenario_texts import WIDE  # noqa: F401 (re-exported to the web tests)

ROOT = Path(__file__).resolve().parents[2]
PREFIX = f"ptviz-test-{uuid.uuid4().hex[:10]}:"
ORIGIN = [(b"origin", b"http://localhost")]
LEASE_TIMEOUT = 2.5  # short, so that the takeover test is quick
# A scenario with many interleavings and an 84-step round-robin run (test_live.py).
VIEWER_EXPIRY = 2.0  # the engine forgets a viewer silent this long (consumers beat at 0.5 s)


def arun(coro, timeout: float = 60):
    """Run `coro` to the end in an event loop of its own: in a thread of its own when this
    one has a loop running (Playwright's sync API leaves its loop set as running in the
    main thread once a browser test has started it, for the rest of the session)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(asyncio.wait_for(coro, timeout))
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, asyncio.wait_for(coro, timeout)).result()


async def engine_stats(session_id) -> dict:
    """What the engine worker serving `session_id` holds (EngineLoop.stats)."""
    from channels.layers import get_channel_layer
    from redis.exceptions import ConnectionError as RedisConnectionError

    from ptviz.debugger.models import EngineLease
    from ptviz.engine_worker.loop import STATS

    layer = get_channel_layer()
    reply = await layer.new_channel()  # (the consumers' prefix: one receive loop for all)
    lease = await EngineLease.objects.filter(session_id=session_id).afirst()
    target = lease.channel if lease is not None else "ptviz-engine"
    for attempt in range(3):
        try:
            await layer.send(target, {"type": STATS, "reply": reply, "session": str(session_id)})
            break
        except RedisConnectionError:  # (a pooled connection from before a restart)
            if attempt == 2:
                raise
            await asyncio.sleep(0.2)
    return await asyncio.wait_for(layer.receive(reply), 10)


async def group_members(session_id) -> int:
    """How many channels the session's group holds on the current channel layer."""
    from channels.layers import get_channel_layer

    from ptviz import protocol as P

    layer = get_channel_layer()
    group = P.group_name(session_id)
    if hasattr(layer, "groups"):  # InMemoryChannelLayer
        return len(layer.groups.get(group, {}))
    conn = layer.connection(layer.consistent_hash(group))
    return await conn.zcard(layer._group_key(group))


def database_url() -> str:
    """The test database as a DATABASE_URL, for the processes the tests start."""
    from django.db import connections

    db = connections["default"].settings_dict
    if db["ENGINE"].endswith("sqlite3"):
        return "sqlite:///" + str(db["NAME"])
    auth = db["USER"] + (f":{db['PASSWORD']}" if db.get("PASSWORD") else "")
    return f"postgres://{auth}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"


class Workers:
    """`manage.py engineworker` subprocesses on the test database and Redis prefix. Their
    output goes to files (a pipe nobody reads would fill up and stall them)."""

    def __init__(self, logdir: Path, **extra_env: str):
        self.extra_env = extra_env
        self.logdir = logdir
        self.procs: dict[str, subprocess.Popen] = {}
        self.logs: dict[str, Path] = {}

    def start(self, name: str) -> subprocess.Popen:
        env = dict(os.environ)
        env.update(
            DJANGO_SETTINGS_MODULE="ptviz.settings",
            DATABASE_URL=database_url(),
            REDIS_URL=REDIS_URL,
            PTVIZ_CHANNEL_PREFIX=PREFIX,
            PTVIZ_LEASE_TIMEOUT=str(LEASE_TIMEOUT),
            PTVIZ_HEARTBEAT="0.3",
            PTVIZ_VIEWER_EXPIRY=str(VIEWER_EXPIRY),
            PTVIZ_LOG="INFO",
        )
        env.update(self.extra_env)
        log = self.logdir / f"{name}.log"
        with open(log, "w") as out:
            proc = subprocess.Popen(
                [sys.executable, "manage.py", "engineworker", "--name", name],
                cwd=ROOT,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                text=True,
            )
        self.procs[name] = proc
        self.logs[name] = log
        return proc

    def wait_started(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        for name, proc in self.procs.items():
            while "listening on" not in self.logs[name].read_text():
                assert proc.poll() is None, f"{name} exited: {self.logs[name].read_text()}"
                assert time.monotonic() < deadline, f"{name} did not start"
                time.sleep(0.05)

    def kill(self, name: str) -> None:
        proc = self.procs.pop(name)
        proc.kill()
        proc.wait(10)

    def stop_all(self) -> None:
        for proc in self.procs.values():
            proc.terminate()
        for proc in self.procs.values():
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
        self.procs.clear()


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
