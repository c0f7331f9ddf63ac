"""A slow load or an exploration does not stall the other sessions of its engine worker
(issue 9, item 5). The embedded deployment has one engine worker process, so both
sessions are served by the same loop. Ordering, not timing: the other session's commands
are answered while the slow one is still loading (or exploring)."""

from __future__ import annotations

import time

import pytest
from webhelpers import ROOT, Viewer, arun

from ptviz.debugger import records
from tests.scenario_texts import MEDIUM

pytestmark = pytest.mark.django_db(transaction=True)

V46 = (ROOT / "scenarios" / "seed_race_v4.6.toml").read_text()


def many_maps(n: int) -> str:
    """A scenario of n separate 4K maps (just under the 4 MiB paste limit at 80,000): its
    load parses and builds every one of them."""
    maps = "".join(
        f"[[map]]\nipa=0x{0x8000_0000 + 0x2000 * i:x}\npa=0x{0x4000_0000 + 0x2000 * i:x}\n"
        for i in range(n)
    )
    return (
        f'name = "{n} maps"\nkernel = "seed"\n{maps}'
        '[[actor]]\nname = "vcpu0"\nkind = "vcpu"\ndo = ["read 0x8000_0000"]\n'
        '[[actor]]\nname = "host0"\nkind = "host"\ndo = ["wp 0x8000_0000 4K"]\n'
    )


async def arrived(v: Viewer) -> list[dict]:
    """The messages v has waiting, without waiting."""
    out = []
    while not await v.comm.receive_nothing(0.001):
        out.append(await v.comm.receive_json_from())
    v.unseen.extend(out)
    return out


async def answered_meanwhile(other: Viewer, done, limit: int = 400) -> list[float]:
    """Send `moment` commands on `other` one after another (each waits for its answer from
    the engine) until done(messages of the slow session) holds; their round trips (s)."""
    trips = []
    while len(trips) < limit:
        if await done():
            return trips
        started = time.monotonic()
        await other.ok("moment")
        trips.append(time.monotonic() - started)
    raise AssertionError(f"the slow session did not finish within {limit} commands")


def report(what: str, trips: list[float]) -> None:
    ms = sorted(1000 * t for t in trips)
    if ms:
        print(
            f"\n{what}: {len(ms)} answers meanwhile, max {ms[-1]:.0f} ms, p50 {ms[len(ms) // 2]:.0f} ms"
        )


def test_a_slow_load_does_not_stall_another_session(embedded_deployment):
    big, big_control, _ = records.create(records.check_scenario(many_maps(80_000), "big"), "t")
    small, small_control, _ = records.create(records.check_scenario(V46, "v46.toml"), "t")

    async def body():
        other = await Viewer.open(small.id, small_control.token)
        await other.start()
        slow = await Viewer.open(big.id, big_control.token)  # (its worker starts loading it)

        async def loaded():
            return any(m["type"] == "snapshot" for m in await arrived(slow))

        trips = await answered_meanwhile(other, loaded)
        report("during an 80,000-map load", trips)
        assert len(trips) >= 3, "the other session was not served while the slow one loaded"
        await slow.ok("step", actor="vcpu0")  # and the loaded session works
        await other.ok("step", actor="vcpu0")
        await slow.close()
        await other.close()

    arun(body(), 180)


def test_an_exploration_does_not_stall_another_session(embedded_deployment):
    exploring, control, _ = records.create(records.check_scenario(MEDIUM, "medium"), "t")
    small, small_control, _ = records.create(records.check_scenario(V46, "v46.toml"), "t")

    async def body():
        other = await Viewer.open(small.id, small_control.token)
        await other.start()
        slow = await Viewer.open(exploring.id, control.token)
        await slow.start()
        await slow.ok("explore")

        async def finished():
            return any(m["type"] in ("explore_result", "error") for m in await arrived(slow))

        trips = await answered_meanwhile(other, finished)
        report("during an exploration of 79,522 states", trips)
        assert len(trips) >= 3, "the other session was not served while one explored"
        await slow.close()
        await other.close()

    arun(body(), 180)


# --- the loop, driven by hand ---------------------------------------------------------------
def loop_and_outbox():
    from ptviz.engine_worker.loop import EngineLoop

    out: list[tuple] = []
    return EngineLoop("w-load", "ch", lambda *a: out.append(a), force_claim=True), out


def sent(out: list[tuple]) -> list[tuple[str, dict]]:
    """(to, msg) of every message the loop emitted to a viewer or the group."""
    return [(a[1], a[2]["msg"]) for a in out if isinstance(a[2], dict) and "msg" in a[2]]


def test_messages_for_a_session_being_loaded_wait_and_keep_their_order():
    from ptviz import protocol as P

    session, _, _ = records.create(records.check_scenario(V46, "v46.toml"), "t")
    loop, out = loop_and_outbox()
    sid = str(session.id)
    step = {"cmd": "step", "id": 1, "actor": "vcpu0", "branch": False}
    loop.handle({"type": P.JOIN, "session": sid, "viewer": "v0"})
    loop.handle({"type": P.COMMAND, "session": sid, "viewer": "v0", "msg": step})
    loop.handle({"type": P.SEEN, "session": sid, "viewer": "v0"})
    assert sid not in loop.hosts and sent(out) == []  # (served only once it is loaded)
    loop.settle()
    kinds = [m["type"] for _, m in sent(out)]
    assert "snapshot" in kinds and "ack" in kinds and "delta" in kinds
    assert kinds.index("snapshot") < kinds.index("ack") < kinds.index("delta")
    assert loop.hosts[sid].live.position == 1
    loop.shutdown()


def test_a_failed_load_answers_every_message_that_waited_for_it():
    from ptviz import protocol as P
    from ptviz.debugger.models import DebugSession

    session, _, _ = records.create(records.check_scenario(V46, "v46.toml"), "t")
    DebugSession.objects.filter(pk=session.pk).update(scenario_text="name = ")
    loop, out = loop_and_outbox()
    sid = str(session.id)
    loop.handle({"type": P.JOIN, "session": sid, "viewer": "v0"})
    for n in (1, 2):
        msg = {"cmd": "step", "id": n, "actor": "vcpu0", "branch": False}
        loop.handle({"type": P.COMMAND, "session": sid, "viewer": f"v{n}", "msg": msg})
    loop.settle()
    errors = {to: m for to, m in sent(out) if m["type"] == "error"}
    assert set(errors) == {"v0", "v1", "v2"}
    assert errors["v2"]["id"] == 2 and "cannot be loaded" in errors["v2"]["message"]
    assert sid not in loop.hosts and not loop.loading
    loop.shutdown()
