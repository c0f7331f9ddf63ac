"""The session websocket against both deployments (docs/protocol.md): consumer, engine
worker (SessionHost) and channel layer together, over real connections."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import pytest
from webhelpers import ROOT, Viewer, arun

from engine.session import LiveSession
from ptviz.debugger import records
from ptviz.debugger.models import Decision
from tests.scenario_texts import WIDE

pytestmark = pytest.mark.django_db(transaction=True)

V46 = ROOT / "scenarios" / "seed_race_v4.6.toml"
# The lost-update schedule of tests/test_session.py.
LOST = ["vcpu0"] * 3 + ["host0"] * 4 + ["vcpu0"] + ["host0"] * 2


def make_session(path: Path = V46):
    live = records.check_scenario(path.read_text(), path.name)
    return records.create(live, "test")


def reference(decisions) -> LiveSession:
    live = LiveSession(V46.read_text())
    for d in decisions:
        live.apply(d)
    return live


def test_hello_and_snapshot_on_connect(mode):
    session, control, _view = make_session()

    async def body():
        v = await Viewer.open(session.id, control.token)
        hello, snap = await v.start()
        assert hello == {
            "v": 1,
            "type": "hello",
            "protocol": 1,
            "session": str(session.id),
            "role": "control",
            "name": session.name,
            "kernel": "v4.6",
        }
        assert snap["position"] == 0 and snap["decisions"] == 0 and snap["running"] is False
        assert snap["seq"] == 0 and snap["events"] == [] and snap["tables"] == {}
        assert [a["name"] for a in snap["actors"]] == ["vcpu0", "host0"]
        assert snap["machine"]["kernel"] == "v4.6" and snap["machine"]["root"]
        assert snap["lock"] == {"kind": "spinlock", "writer": None, "readers": 0}
        await v.close()

    arun(body())


def test_step_produces_a_delta_with_the_engines_events(mode):
    session, control, _view = make_session()

    async def body():
        v = await Viewer.open(session.id, control.token)
        _, snap = await v.start()
        batch = snap["batch"]
        for name in LOST[:4]:
            await v.ok("step", actor=name)
            delta = await v.type("delta")
            assert delta["batch"] == batch + 1
            batch = delta["batch"]
        ref = reference([["step", n] for n in LOST[:4]])
        assert delta["position"] == delta["decisions"] == 4
        assert delta["actors"] == ref.actors_view()
        assert delta["lock"] == ref.lock_view()
        await v.close()
        return ref

    ref = arun(body())
    stored = Decision.recorded(session)
    assert stored == [["step", 0]] * 3 + [["step", 1]]
    # events: exactly what the engine produces for the same decisions, step by step
    replay = LiveSession(V46.read_text())
    events = []
    for name in LOST[:4]:
        replay.step(name)
        events += replay.events()
    assert events[-1]["seq"] == ref.machine.seq - 1


def test_step_events_match_the_engine(mode):
    session, control, _view = make_session()

    async def body():
        v = await Viewer.open(session.id, control.token)
        await v.start()
        got = []
        for name in LOST:
            await v.ok("step", actor=name)
            got.append((await v.type("delta"))["events"])
        await v.close()
        return got

    got = arun(body())
    replay = LiveSession(V46.read_text())
    for name, events in zip(LOST, got, strict=True):
        replay.step(name)
        # Each event names the moment right after its step (a click goes there).
        assert [e.pop("moment") for e in events] == [str(replay.position)]
        # The lost update names the write it reverted (tests/web/test_moments.py).
        assert [bool(e.pop("reverted", None)) for e in events] == [
            "lost-update" in e.get("flags", []) for e in events
        ]
        assert events == replay.events()
    assert [e for batch in got for e in batch if "lost-update" in e.get("flags", [])]


def test_subscribed_tables_are_sent_and_resent_when_touched(mode):
    session, control, _view = make_session()

    async def body():
        v = await Viewer.open(session.id, control.token)
        _, snap = await v.start()
        root = snap["machine"]["root"]
        await v.ok("subscribe", tables=[root])
        sent = await v.type("tables")  # to this viewer only: no batch of its own
        assert sent["batch"] == snap["batch"] and list(sent["tables"]) == [root]
        rows = sent["tables"][root]["rows"]
        # walk down to the level-3 table holding the leaf
        table = root
        while True:
            row = rows[0]
            if row["decoded"]["type"] != "table":
                break
            table = row["decoded"]["next_table"]
            await v.ok("subscribe", tables=[table])
            rows = (await v.type("tables"))["tables"][table]["rows"]
        leaf_table = table
        # the vCPU's hardware AF update writes the leaf: its table and the ones above it
        # (their counters) are re-sent
        sent = set()
        for name in ["vcpu0"] * 4:  # three walk reads, then the hardware AF update
            await v.ok("step", actor=name)
            d = await v.type("delta")
            sent |= set(d["tables"])
            if d.get("machine"):
                assert d["machine"]["counts"]["young"] == 1
        assert leaf_table in sent and root in sent
        await v.ok("unsubscribe", tables=[leaf_table])
        await v.close()

    arun(body())


def test_a_view_only_link_cannot_take_decisions(mode):
    session, _control, view = make_session()

    async def body():
        v = await Viewer.open(session.id, view.token)
        hello, snap = await v.start()
        assert hello["role"] == "view"
        for cmd, fields in [
            ("step", {"actor": "vcpu0"}),
            ("run", {}),
            ("pause", {}),
            ("inject", {"actor": "host0", "op": "age 0x8000_0000"}),
            ("explore", {}),
        ]:
            reply = await v.answer(await v.command(cmd, **fields))
            assert reply["type"] == "error" and reply["code"] == "forbidden", (cmd, reply)
        # viewing is allowed, and so is travelling in time (it moves only this viewer)
        await v.ok("subscribe", tables=[snap["machine"]["root"]])
        await v.ok("seek", position=0)
        await v.type("snapshot")
        await v.ok("resync")
        await v.type("snapshot")
        await v.close()

    arun(body())
    assert not Decision.objects.filter(session=session).exists()


def test_bad_messages_get_errors_with_codes(mode):
    session, control, _view = make_session()

    async def body():
        v = await Viewer.open(session.id, control.token)
        await v.start()
        await v.comm.send_to(text_data="{not json")
        err = await v.type("error")
        assert err["code"] == "bad_message" and err["id"] is None
        for raw, code in [
            ({"v": 1, "type": "shout"}, "bad_message"),
            ({"v": 2, "type": "command", "id": 5, "cmd": "step", "actor": "vcpu0"}, "bad_message"),
            ({"v": 1, "type": "command", "id": 6, "cmd": "fly"}, "bad_message"),
            ({"v": 1, "type": "command", "id": 7, "cmd": "step"}, "bad_message"),
            ({"v": 1, "type": "command", "id": 8, "cmd": "seek", "position": "x"}, "bad_message"),
            ({"v": 1, "type": "command", "cmd": "pause"}, "bad_message"),
            ({"v": 1, "type": "command", "id": 9, "cmd": "step", "actor": "nobody"}, "engine"),
            (
                {
                    "v": 1,
                    "type": "command",
                    "id": 10,
                    "cmd": "inject",
                    "actor": "vcpu0",
                    "op": "wp 0x0",
                },
                "engine",
            ),
            ({"v": 1, "type": "command", "id": 11, "cmd": "seek", "position": 99}, "engine"),
            (
                {"v": 1, "type": "command", "id": 12, "cmd": "subscribe", "tables": ["0x5"]},
                "engine",
            ),
        ]:
            await v.comm.send_json_to(raw)
            err = await v.type("error")
            assert err["code"] == code, (raw, err)
            assert err["message"]
            if isinstance(raw.get("id"), int) and raw.get("v") == 1:
                assert err["id"] == raw["id"]
        assert "nobody" in (await v.answer(await v.command("step", actor="nobody")))["message"]
        await v.close()

    arun(body())


def test_a_decision_while_rewound_is_refused_and_seek_back_replay(mode):
    session, control, _view = make_session()
    hashes = [reference([["step", n] for n in LOST[:k]]).state_hash() for k in range(len(LOST) + 1)]

    async def body():
        v = await Viewer.open(session.id, control.token)
        await v.start()
        for name in LOST:
            await v.ok("step", actor=name)
        await v.ok("back", n=3)
        snap = await v.type("snapshot")
        assert snap["position"] == len(LOST) - 3 and snap["decisions"] == len(LOST)
        assert snap["events"], "a snapshot after back shows the recent events"
        for cmd, fields in [
            ("step", {"actor": "host0"}),
            ("run", {}),
            ("inject", {"actor": "host0", "op": "age 0x8000_0000"}),
        ]:
            err = await v.answer(await v.command(cmd, **fields))
            assert err["type"] == "error" and err["code"] == "rewound", err
        await v.ok("seek", position=2)
        snap2 = await v.type("snapshot", position=2)
        assert not snap2["cursor"]["live"] and snap2["head"]["position"] == len(LOST)
        await v.ok("seek", position=len(LOST))
        snap3 = await v.type("snapshot", position=len(LOST))
        assert snap3["cursor"]["live"], "the head itself: following it live again"
        await v.ok("resync")
        again = await v.type("snapshot")
        assert again["actors"] == snap3["actors"] and again["batch"] == snap3["batch"]
        await v.close()
        return snap2, snap3

    snap2, snap3 = arun(body())
    assert snap2["actors"] == reference([["step", n] for n in LOST[:2]]).actors_view()
    assert snap3["violations"] and snap3["violations"][0]["check"] == "no_lost_update"
    assert len(Decision.recorded(session)) == len(LOST)
    assert hashes[-1] == reference([["step", n] for n in LOST]).state_hash()


def test_a_gap_is_repaired_by_resync(mode):
    """The browser notices a missing batch and sends {"type": "resync"}: a snapshot."""
    session, control, _view = make_session()

    async def body():
        v = await Viewer.open(session.id, control.token)
        await v.start()
        await v.ok("step", actor="vcpu0")
        first = await v.type("delta")
        await v.ok("step", actor="vcpu0")
        await v.type("delta")  # pretend this one was lost
        await v.ok("step", actor="vcpu0")
        third = await v.type("delta")
        assert third["batch"] == first["batch"] + 2  # a gap from the browser's point of view
        await v.comm.send_json_to({"v": 1, "type": "resync"})
        snap = await v.type("snapshot")
        assert snap["batch"] == third["batch"] and snap["position"] == 3
        await v.ok("step", actor="host0")
        assert (await v.type("delta"))["batch"] == snap["batch"] + 1
        await v.close()

    arun(body())


def test_run_and_pause_while_running(mode):
    session, control, _view = make_session(ROOT / "scenarios" / "wp_range_seed.toml")

    async def body():
        v = await Viewer.open(session.id, control.token)
        await v.start()
        # paced: 50 steps per second, so the run is still going when pause arrives
        await v.ok("run", mode="random", seed=3, speed=20)
        running = await v.type("delta", running=True)
        await v.expect(lambda m: m.get("type") == "delta" and m["events"], what="events")
        await v.ok("pause")
        stopped = await v.type("delta", running=False)
        assert 0 < stopped["decisions"] < 19, stopped["decisions"]  # 19 to the end
        await asyncio.sleep(0.3)
        await v.ok("resync")
        snap = await v.type("snapshot")
        assert snap["running"] is False and snap["decisions"] == stopped["decisions"]
        # as fast as possible, to the end
        await v.ok("run", mode="round_robin")
        end = await v.type("delta", running=False, timeout=60)
        assert all(a["done"] for a in end["actors"])
        await v.close()
        return running, end

    _running, end = arun(body())
    assert len(Decision.recorded(session)) == end["decisions"]


def test_inject_queues_an_operation(mode):
    session, control, _view = make_session()

    async def body():
        v = await Viewer.open(session.id, control.token)
        await v.start()
        await v.ok("run")
        end = await v.type("delta", running=False)
        assert all(a["done"] for a in end["actors"])
        v.drop_unseen()
        await v.ok("inject", actor="host0", op="age 0x8000_0000")
        d = await v.type("delta")
        host = next(a for a in d["actors"] if a["name"] == "host0")
        assert not host["done"] and host["op"] == "age 0x8000_0000"
        await v.ok("step", actor="host0")
        await v.type("delta")
        await v.close()
        return end["decisions"]

    n = arun(body())
    assert Decision.recorded(session)[n:] == [["inject", 1, "age 0x8000_0000"], ["step", 1]]


def test_explore_returns_what_the_cli_prints(mode):
    path = ROOT / "scenarios" / "seed_race_v4.6.toml"
    session, control, _view = make_session(path)

    async def body():
        v = await Viewer.open(session.id, control.token)
        await v.start()
        await v.ok("explore")
        result = (await v.type("explore_result", timeout=60))["result"]
        err = await v.answer(await v.command("explore", max_states=1))
        if err["type"] == "ack":
            err = await v.type("error")
        assert err["code"] == "too_big"
        await v.close()
        return result

    result = arun(body())
    cli = subprocess.run(
        [sys.executable, "-m", "engine", "explore", str(path), "--json"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert result.pop("from_position") == 0  # explored from the start: the CLI's object
    assert json.loads(cli.stdout) == result


def test_commands_are_served_while_exploring(mode):
    session, control, _view = records.create(records.check_scenario(WIDE, "wide"), "test")

    async def body():
        v = await Viewer.open(session.id, control.token)
        await v.start()
        explore = await v.command("explore", max_states=2_000_000)
        assert (await v.answer(explore))["type"] == "ack"
        progress = await v.type("explore_progress", timeout=20)
        assert progress["states"] > 0 and progress["depth"] >= 0
        await v.ok("step", actor="host0")  # served while the exploration runs...
        busy = await v.answer(await v.command("explore"))
        assert busy["type"] == "error" and busy["code"] == "engine"
        ended = ("explore_result", "explore_cancelled")
        assert not [
            m
            for m in v.seen
            if m["type"] in ended or (m["type"] == "error" and m.get("id") == explore)
        ]
        await v.ok("explore_cancel")  # ...which was still running: it ends on request
        gone = await v.type("explore_cancelled", timeout=30)
        assert 0 < gone["states"] < 2_000_000
        await v.close()

    arun(body())


def test_two_viewers_see_the_same_deltas(mode):
    session, control, view = make_session()

    async def body():
        a = await Viewer.open(session.id, control.token)
        b = await Viewer.open(session.id, view.token)
        await a.start()
        await b.start()
        deltas_a, deltas_b = [], []
        for name in LOST[:5]:
            await a.ok("step", actor=name)
            deltas_a.append(await a.type("delta"))
            deltas_b.append(await b.type("delta"))
        assert deltas_a == deltas_b
        await a.close()
        await b.close()

    arun(body())


BIG = """
name = "write-protect 512 pages"
kernel = "seed"
[[map]]
ipa = 0x8000_0000
pa = 0x4000_0000
count = 512
[[actor]]
name = "vcpu0"
kind = "vcpu"
do = ["read 0x8000_0000", "write 0x8010_0000"]
[[actor]]
name = "host0"
kind = "host"
do = ["wp 0x8000_0000 2M"]
"""


def test_a_slow_viewer_gets_a_snapshot_instead_of_a_backlog(mode, settings, monkeypatch):
    from ptviz.debugger.consumers import SessionConsumer

    settings.PTVIZ_VIEWER_BACKLOG = 3
    session, control, _view = records.create(records.check_scenario(BIG, "big"), "test")
    slow = {"on": False}
    send = SessionConsumer.send

    async def slow_send(self, text_data=None, bytes_data=None, close=False):
        if slow["on"]:
            await asyncio.sleep(0.2)  # a browser on a bad link
        return await send(self, text_data, bytes_data, close)

    monkeypatch.setattr(SessionConsumer, "send", slow_send)

    async def body():
        v = await Viewer.open(session.id, control.token)
        _, first = await v.start()
        slow["on"] = True
        await v.command("run", speed=1000)
        await v.type("snapshot", timeout=30)  # the backlog collapsed into this
        slow["on"] = False
        end = await v.type("delta", running=False, timeout=60)
        # what the browser checks: every delta continues the numbering of the last
        # snapshot or delta it got (no gap, so no resync was needed)
        batch = None
        deltas = 0
        for m in v.seen:
            if m["type"] == "snapshot":
                batch = m["batch"]
            elif m["type"] == "delta":
                assert m["batch"] == batch + 1, (m["batch"], batch)
                batch = m["batch"]
                deltas += 1
        assert deltas < end["batch"] - first["batch"]  # the backlog was dropped
        await v.close()
        return end

    end = arun(body())
    assert len(Decision.recorded(session)) == end["decisions"] > 1000


def test_recording_roundtrip_through_the_database(mode, client):
    session, control, _view = make_session()

    async def body():
        v = await Viewer.open(session.id, control.token)
        await v.start()
        await v.ok("run", mode="random", seed=5, max_steps=4)
        assert (await v.type("delta", running=False))["decisions"] == 4
        v.drop_unseen()
        await v.ok("inject", actor="host0", op="age 0x8000_0000")
        await v.type("delta", decisions=5)
        await v.ok("run", mode="random", seed=6)
        await v.expect(lambda m: m["type"] == "delta" and all(a["done"] for a in m["actors"]), 30)
        await v.close()

    arun(body())
    rec = client.get(f"/sessions/{session.id}/recording.json?token={control.token}").json()
    live = LiveSession.from_recording(rec)
    assert live.decisions == Decision.recorded(session)
    response = client.post(
        "/recordings/import", data=json.dumps(rec), content_type="application/json"
    )
    assert response.status_code == 201, response.content
    again = response.json()
    rec2 = client.get(
        f"/sessions/{again['session']}/recording.json?token={again['links']['control'].rstrip('/').rsplit('/', 1)[-1]}"
    ).json()
    assert rec2["decisions"] == rec["decisions"] and rec2["final_hash"] == rec["final_hash"]
