"""Nothing leaks, nothing is held without bound (issue 9, items 2, 3 and 8): a consumer that
crashes still leaves its group and the engine; the engine forgets viewers it stopped
hearing from; explorations are bounded, cancelled on request and when nobody watches."""

from __future__ import annotations

import asyncio
import time

import pytest
from webhelpers import ROOT, VIEWER_EXPIRY, WIDE, Viewer, arun, engine_stats, group_members

from ptviz import protocol as P
from ptviz.debugger import records
from ptviz.engine_worker.loop import EngineLoop
from ptviz.engine_worker.quotas import Quotas

pytestmark = pytest.mark.django_db(transaction=True)

V46 = (ROOT / "scenarios" / "seed_race_v4.6.toml").read_text()


def make_session(text=V46):
    return records.create(records.check_scenario(text, "s.toml"), "test")


async def until(pred, timeout=15.0, what=""):
    deadline = time.monotonic() + timeout
    while True:
        value = await pred()
        if value:
            return value
        assert time.monotonic() < deadline, f"not reached within {timeout} s: {what}"
        await asyncio.sleep(0.2)


async def viewers_of(session_id) -> list:
    stats = await engine_stats(session_id)
    return stats["sessions"].get(str(session_id), {}).get("viewers", [])


def test_a_crashing_consumer_still_cleans_up(mode, monkeypatch):
    session, control, view = make_session()

    async def body():
        a = await Viewer.open(session.id, control.token)
        b = await Viewer.open(session.id, view.token)
        await a.start()
        await b.start()
        assert await group_members(session.id) == 2
        assert len(await viewers_of(session.id)) == 2
        tasks_before = len(asyncio.all_tasks())

        def crash(text):
            raise RuntimeError("a bug in the consumer")

        monkeypatch.setattr(P, "parse_client_message", crash)
        await b.comm.send_to(text_data="{}")
        with pytest.raises(RuntimeError, match="a bug"):  # (daphne closes it with 1011)
            while True:
                await b.comm.receive_output(10)
        monkeypatch.undo()
        # its group membership, its tasks and its viewer at the engine are gone
        assert await group_members(session.id) == 1
        await until(lambda: _len_is(viewers_of(session.id), 1), what="the engine forgot it")
        assert len(asyncio.all_tasks()) <= tasks_before - 2
        await a.ok("step", actor="vcpu0")
        await a.close()
        await until(lambda: _len_is(viewers_of(session.id), 0), what="the last viewer left")
        assert await group_members(session.id) == 0

    arun(body())


async def _len_is(coro, n) -> bool:
    return len(await coro) == n


def test_the_engine_expires_viewers_it_no_longer_hears_from(mode):
    """A viewer whose server died (no LEAVE ever comes) is forgotten after
    PTVIZ_VIEWER_EXPIRY, and its channel leaves the group; a live one stays."""
    from channels.layers import get_channel_layer

    session, control, _view = make_session()

    async def body():
        live = await Viewer.open(session.id, control.token)
        await live.start()
        layer = get_channel_layer()
        ghost = await layer.new_channel()
        await layer.group_add(P.group_name(session.id), ghost)
        await layer.send(
            P.ENGINE_CHANNEL if mode == "embedded" else (await _lease_channel(session.id)),
            {"type": P.JOIN, "session": str(session.id), "viewer": ghost, "tables": []},
        )
        await until(lambda: _len_is(viewers_of(session.id), 2), what="the ghost joined")
        assert await group_members(session.id) == 2
        await asyncio.sleep(VIEWER_EXPIRY + 1.5)
        assert ghost not in await viewers_of(session.id)
        assert len(await viewers_of(session.id)) == 1
        await until(lambda: _members_is(session.id, 1), what="the ghost left the group")
        await live.ok("step", actor="vcpu0")  # the live one still gets its deltas
        assert (await live.type("delta"))["decisions"] == 1
        await live.close()

    arun(body())


async def _members_is(session_id, n) -> bool:
    return await group_members(session_id) == n


async def _lease_channel(session_id) -> str:
    from ptviz.debugger.models import EngineLease

    return (await EngineLease.objects.aget(session_id=session_id)).channel


def test_an_exploration_is_cancelled_on_request_and_when_nobody_watches(mode):
    session, control, _view = make_session(WIDE)

    async def body():
        v = await Viewer.open(session.id, control.token)
        await v.start()
        await v.ok("explore", max_states=2_000_000)
        await v.ok("explore_cancel")
        await v.type("explore_cancelled", timeout=10)
        stats = await engine_stats(session.id)
        assert not stats["sessions"][str(session.id)]["exploring"]
        err = await v.answer(await v.command("explore_cancel"))
        assert err["code"] == "engine" and "no exploration" in err["message"]
        # again, then every viewer leaves: the exploration stops with them
        await v.ok("explore", max_states=2_000_000)
        await v.type("explore_progress", timeout=20)
        await v.close()
        await until(
            lambda: _not_exploring(session.id), what="the exploration ended with its viewers"
        )

    arun(body(), 90)


async def _not_exploring(session_id) -> bool:
    s = (await engine_stats(session_id))["sessions"].get(str(session_id))
    return s is not None and not s["exploring"]


def test_explorations_per_worker_are_limited(embedded_deployment):
    """(The embedded deployment: one worker process holds both sessions.)"""
    first, c1, _ = make_session(WIDE)
    second, c2, _ = make_session(WIDE)
    engine = embedded_deployment
    limit = engine.options["quotas"]["explorations"]

    async def body():
        viewers = []
        for s, c in [(first, c1), (second, c2)][: limit + 1]:
            v = await Viewer.open(s.id, c.token)
            await v.start()
            viewers.append(v)
        for v in viewers[:limit]:
            await v.ok("explore", max_states=2_000_000)
        err = await viewers[-1].answer(await viewers[-1].command("explore"))
        assert err["code"] == "limit" and "PTVIZ_EXPLORATIONS" in err["message"]
        for v in viewers:
            await v.close()

    assert limit == 1  # (conftest)
    arun(body(), 60)


def test_a_worker_refuses_a_session_past_its_memory_quota():
    """Loaded sessions' bytes are bounded: idle ones are unloaded to make room; a busy one
    is kept and the new one refused with `limit`."""
    out = []
    sessions = [make_session() for _ in range(3)]
    loop = EngineLoop("w-quota", "ch", lambda *a: out.append(a), force_claim=True)
    loop.handle({"type": P.JOIN, "session": str(sessions[0][0].id), "viewer": "v0"})
    loop.settle()
    one = loop.hosts[str(sessions[0][0].id)].footprint()
    assert one > 0
    loop.quotas = Quotas(loaded_bytes=int(one * 1.5))
    for host in loop.hosts.values():
        host.quotas = loop.quotas
    loop.handle({"type": P.JOIN, "session": str(sessions[1][0].id), "viewer": "v1"})
    loop.settle()
    errors = [a[2]["msg"] for a in out if a[2].get("msg", {}).get("type") == "error"]
    assert (
        errors
        and errors[-1]["code"] == "limit"
        and "PTVIZ_WORKER_MEMORY_MB" in errors[-1]["message"]
    )
    assert list(loop.hosts) == [str(sessions[0][0].id)]
    # once the first is idle (its viewer left), it makes room
    loop.handle({"type": P.LEAVE, "session": str(sessions[0][0].id), "viewer": "v0"})
    loop.handle({"type": P.JOIN, "session": str(sessions[2][0].id), "viewer": "v2"})
    loop.settle()
    assert list(loop.hosts) == [str(sessions[2][0].id)]
    loop.shutdown()
