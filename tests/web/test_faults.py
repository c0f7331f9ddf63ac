"""Faults (issue 9, "Fault tests"): an engine worker SIGKILLed in the middle of a run, a Redis
restarted under live sessions, an ASGI server killed behind a load balancer, the embedded
server SIGKILLed mid-run. Nothing acknowledged or shown is lost, runs go on where they
stopped, viewers carry on without a reload, and nothing is left behind."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from webhelpers import (
    LEASE_TIMEOUT,
    PREFIX,
    REDIS_URL,
    ROOT,
    VIEWER_EXPIRY,
    WIDE,
    Viewer,
    Workers,
    arun,
    database_url,
    engine_stats,
    group_members,
)

from engine.session import LiveSession
from ptviz.debugger import records
from ptviz.debugger.models import Decision, EngineLease
from ptviz.engine_worker.host import SessionHost
from ptviz.localservices import free_port, haproxy_config

pytestmark = pytest.mark.django_db(transaction=True)


def uninterrupted(mode: str, seed: int) -> LiveSession:
    """The same run on one SessionHost that nothing interrupts (no database, no layer)."""
    host = SessionHost("reference", LiveSession(WIDE), set(), lambda *a: None, persist=False)
    host.command({"cmd": "run", "id": None, "mode": mode, "seed": seed, "speed": 0}, None)
    while host.run is not None:
        host.tick()
    return host.live


@pytest.mark.parametrize("run_mode", ["round_robin", "random"])
def test_a_killed_workers_run_resumes_exactly_on_another(redis_deployment, run_mode):
    workers = redis_deployment
    session, control, view = records.create(records.check_scenario(WIDE, "wide"), "test")
    reference = uninterrupted(run_mode, 7)
    total = len(reference.decisions)
    dead = {}

    async def body():
        a = await Viewer.open(session.id, control.token)
        b = await Viewer.open(session.id, view.token)
        await a.start()
        await b.start()
        await a.ok("run", mode=run_mode, seed=7, speed=15)
        shown = await b.expect(lambda m: m["type"] == "delta" and m["decisions"] >= 15, 20)
        lease = await EngineLease.objects.aget(session_id=session.id)
        dead["name"] = lease.worker
        workers.kill(lease.worker)  # SIGKILL mid-run
        a.drop_unseen()
        b.drop_unseen()
        # a decision sent into the dead window is answered at once (not at the timeout)
        step = await a.command("step", actor="host1")
        settle = await a.command("resync")
        answer = await a.answer(step, timeout=12)
        assert answer["type"] == "error" and answer["code"] == "unavailable"
        assert "stopped before answering 'step'" in answer["message"]
        assert (await a.answer(settle, timeout=12))["type"] == "ack"  # sent again
        # both viewers resync from the new owner, and the run goes on to its end
        snap = await b.type("snapshot", timeout=20)
        assert snap["decisions"] >= shown["decisions"]  # nothing shown was lost
        assert snap["running"]
        end = await b.expect(
            lambda m: m["type"] == "delta" and not m["running"], 30, "the end of the run"
        )
        assert end["decisions"] == total
        lease = await EngineLease.objects.aget(session_id=session.id)
        assert lease.worker != dead["name"] and lease.run is None
        await a.close()
        await b.close()

    try:
        arun(body(), 90)
    finally:
        if dead.get("name"):
            workers.start(dead["name"] + "-again")
            workers.wait_started()
    stored = Decision.recorded(session)
    assert stored == reference.decisions
    replayed = LiveSession(WIDE)
    for d in stored:
        replayed.apply(d)
    assert replayed.state_hash() == reference.state_hash()


# --- processes of these tests (each stopped by its pid) ---------------------------------
class Proc:
    """A subprocess with its output in a file."""

    def __init__(self, argv: list[str], log: Path, env: dict | None = None):
        self.argv, self.log, self.env = argv, log, env
        self.proc: subprocess.Popen | None = None

    def start(self) -> Proc:
        with open(self.log, "a") as out:
            self.proc = subprocess.Popen(
                self.argv, cwd=ROOT, env=self.env, stdout=out, stderr=subprocess.STDOUT
            )
        return self

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()

    def output(self) -> str:
        return self.log.read_text(errors="replace")


def wait_port(port: int, timeout: float = 60, proc: Proc | None = None) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            pass
        if proc is not None and proc.proc.poll() is not None:
            raise AssertionError(f"{proc.argv[:3]} exited:\n{proc.output()[-3000:]}")
        assert time.monotonic() < deadline, f"nothing listens on {port}"
        time.sleep(0.1)


def serve(tmp_path: Path, name: str, port: int, **env: str) -> Proc:
    """`manage.py serve` on the test database (REDIS_URL given: the distributed mode)."""
    full = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}
    full.update(
        DJANGO_SETTINGS_MODULE="ptviz.settings",
        DATABASE_URL=database_url(),
        PTVIZ_LEASE_TIMEOUT=str(LEASE_TIMEOUT),
        PTVIZ_LEASE_CHECK="0.3",
        PTVIZ_HEARTBEAT="0.3",
        PTVIZ_VIEWER_HEARTBEAT="0.5",
        PTVIZ_VIEWER_EXPIRY=str(VIEWER_EXPIRY),
        PYTHONUNBUFFERED="1",
    )
    full.update(env)
    argv = [sys.executable, "manage.py", "serve", "--port", str(port), "--no-migrate"]
    if "REDIS_URL" not in env:
        argv += ["--workers", "1"]
    p = Proc(argv, tmp_path / f"{name}.log", full).start()
    wait_port(port, proc=p)
    return p


async def ws_open(port: int, session_id, token: str):
    """A websocket client of a real server (the browser's side of conn.js)."""
    import websockets

    return await websockets.connect(
        f"ws://127.0.0.1:{port}/ws/sessions/{session_id}/?token={token}",
        origin=f"http://127.0.0.1:{port}",
        max_size=None,
        open_timeout=5,
    )


async def ws_until(ws, pred, timeout: float = 20.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        assert left > 0, "no matching message"
        msg = json.loads(await asyncio.wait_for(ws.recv(), left))
        if pred(msg):
            return msg


async def ws_reconnect(port: int, session_id, token: str, timeout: float = 30.0):
    """Retry as conn.js does until a hello and a snapshot arrive."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            ws = await ws_open(port, session_id, token)
            snap = await ws_until(ws, lambda m: m["type"] == "snapshot", 10)
            return ws, snap
        except (OSError, AssertionError, TimeoutError, Exception):
            assert time.monotonic() < deadline, f"could not reconnect within {timeout} s"
            await asyncio.sleep(0.3)


def test_sigkill_of_the_embedded_server_mid_run_keeps_every_acknowledged_decision(
    tmp_path, django_db_setup
):
    session, control, _view = records.create(records.check_scenario(WIDE, "wide"), "test")
    port = free_port()
    server = serve(tmp_path, "embedded", port)
    shown = acked = 0
    try:

        async def before():
            nonlocal shown, acked
            ws = await ws_open(port, session.id, control.token)
            await ws_until(ws, lambda m: m["type"] == "snapshot")
            await ws.send(
                json.dumps({"v": 1, "type": "command", "id": 1, "cmd": "run", "speed": 20})
            )
            while shown < 20:
                msg = json.loads(await asyncio.wait_for(ws.recv(), 20))
                if msg["type"] == "ack":
                    acked = max(acked, 1)
                if msg["type"] in ("delta", "snapshot"):
                    shown = max(shown, msg["decisions"])
            children = [int(p) for p in _children(server.proc.pid)]
            server.kill()  # SIGKILL: no cleanup of any kind
            return children

        children = asyncio.run(before())
        # its engine processes notice and end by themselves
        deadline = time.monotonic() + 10
        while any(_alive(p) for p in children):
            assert time.monotonic() < deadline, "orphaned engine processes"
            time.sleep(0.2)
        stored = Decision.recorded(session)
        assert len(stored) >= shown
        reference = uninterrupted("round_robin", 0).decisions
        assert stored == reference[: len(stored)]
        server = serve(tmp_path, "embedded-again", port)

        async def after():
            ws, snap = await ws_reconnect(port, session.id, control.token)
            assert snap["decisions"] == len(stored) >= shown
            await ws.close()

        asyncio.run(after())
    finally:
        server.stop()


def _children(pid: int) -> list[str]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True)
    return out.stdout.split()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # (a zombie is dead too)
    with open(f"/proc/{pid}/stat") as f:
        return f.read().split(")")[-1].split()[0] != "Z"


def test_viewers_of_a_killed_asgi_server_continue_on_the_other(redis_deployment, tmp_path):
    """Two `manage.py serve` (distributed) behind haproxy (README, "Deployment"): SIGKILL
    one; its viewers reconnect through the balancer to the other and carry on."""
    haproxy = shutil.which("haproxy") or "/usr/sbin/haproxy"
    if not os.path.exists(haproxy):
        if os.environ.get("CI"):
            pytest.fail("haproxy is not installed (.ci/run installs it)")
        pytest.skip("haproxy is not installed")
    session, control, view = records.create(records.check_scenario(WIDE, "wide"), "test")
    s1_port, s2_port, lb = free_port(), free_port(), free_port()
    env = {"REDIS_URL": REDIS_URL, "PTVIZ_CHANNEL_PREFIX": PREFIX}
    s1 = serve(tmp_path, "s1", s1_port, **env)
    s2 = serve(tmp_path, "s2", s2_port, **env)
    cfg = tmp_path / "haproxy.cfg"
    cfg.write_text(haproxy_config(lb, [s1_port, s2_port]))
    balancer = Proc([haproxy, "-db", "-f", str(cfg)], tmp_path / "haproxy.log").start()
    try:
        wait_port(lb, proc=balancer)

        async def body():
            viewers = []
            for n in range(4):  # round robin: two on each server
                ws, _snap = await ws_reconnect(lb, session.id, (control if n == 0 else view).token)
                viewers.append(ws)
            await asyncio.sleep(0.5)
            s1.kill()
            alive = []
            for n, ws in enumerate(viewers):
                try:
                    # (answered by its id: a snapshot sent before the kill may still
                    # wait unread in a dead connection)
                    ask = {"v": 1, "type": "command", "id": 100 + n, "cmd": "resync"}
                    await ws.send(json.dumps(ask))
                    await ws_until(ws, lambda m, i=ask["id"]: m.get("id") == i, 3)
                    alive.append(ws)
                except Exception:  # this one was on the killed server: reconnect
                    token = (control if n == 0 else view).token
                    ws, _snap = await ws_reconnect(lb, session.id, token, 20)
                    alive.append(ws)
            assert len(alive) == 4
            await alive[0].send(
                json.dumps({"v": 1, "type": "command", "id": 9, "cmd": "step", "actor": "vcpu0"})
            )
            for ws in alive:
                delta = await ws_until(ws, lambda m: m["type"] == "delta" and m["decisions"] == 1)
                assert delta["events"]
            for ws in alive:
                await ws.close()

        asyncio.run(body())
    finally:
        balancer.stop()
        s1.stop()
        s2.stop()
    assert len(Decision.recorded(session)) == 1


REDIS_PORTS = range(6410, 6420)  # this helper's range: never the shared 6379


class OwnRedis:
    """A redis-server of this test, on a port of its own, restarted and stopped by pid."""

    def __init__(self, tmp_path: Path):
        self.port = next(p for p in REDIS_PORTS if _port_free(p))
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc = Proc(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ],
            tmp_path / f"redis-{self.port}.log",
        )

    def start(self) -> OwnRedis:
        self.proc.start()
        wait_port(self.port, proc=self.proc)
        return self

    def restart(self, down: float = 1.0) -> None:
        self.proc.kill()
        time.sleep(down)
        self.start()


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def test_a_redis_restart_under_a_live_session_leaves_nothing_behind(
    settings, django_db_setup, tmp_path
):
    """Redis dies and comes back (empty: no persistence). The worker keeps its session,
    the viewers reconnect (as the page does, no reload) and go on; afterwards the group
    holds exactly the live viewers, the worker knows exactly them, and no consumer task of
    the dead connections is left."""
    from ptviz import layers

    redis = OwnRedis(tmp_path).start()
    settings.CHANNEL_LAYERS = layers.redis_layers(redis.url, PREFIX)
    settings.REDIS_URL = redis.url
    settings.PTVIZ_LEASE_TIMEOUT = LEASE_TIMEOUT
    settings.PTVIZ_LEASE_CHECK = 0.3
    settings.PTVIZ_VIEWER_HEARTBEAT = 0.5
    workers = Workers(tmp_path, REDIS_URL=redis.url)
    workers.start("w-redis")
    session, control, view = records.create(records.check_scenario(WIDE, "wide"), "test")
    try:
        workers.wait_started()

        async def reconnect(token):
            deadline = time.monotonic() + 30
            while True:
                v = None
                try:
                    v = await Viewer.open(session.id, token)
                    await v.start()
                    return v
                except BaseException:  # noqa: BLE001 (the layer is still coming back)
                    if v is not None:  # the page closes a failed attempt's socket
                        with contextlib.suppress(BaseException):
                            await v.close()
                    assert time.monotonic() < deadline, "no reconnect within 30 s"
                    await asyncio.sleep(0.5)

        async def body():
            a = await Viewer.open(session.id, control.token)
            b = await Viewer.open(session.id, view.token)
            await a.start()
            await b.start()
            await a.ok("step", actor="vcpu0")
            await b.type("delta", decisions=1)
            redis.restart()
            for v in (a, b):  # their consumers end with the layer's error
                with contextlib.suppress(BaseException):
                    await v.expect(lambda m: False, 15)
            a, b = await reconnect(control.token), await reconnect(view.token)
            await a.ok("step", actor="vcpu0")
            assert (await b.type("delta", decisions=2))["events"]
            await asyncio.sleep(VIEWER_EXPIRY + 1.5)
            assert await group_members(session.id) == 2
            viewers = (await engine_stats(session.id))["sessions"][str(session.id)]["viewers"]
            assert len(viewers) == 2
            consumer_tasks = [
                t for t in asyncio.all_tasks() if t.get_coro().__name__ in ("_sender", "_watch")
            ]
            assert len(consumer_tasks) == 4  # two live consumers, two tasks each
            await a.close()
            await b.close()

        arun(body(), 120)
    finally:
        workers.stop_all()
        redis.proc.stop()
    assert len(Decision.recorded(session)) == 2
