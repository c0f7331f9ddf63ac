"""Moments (docs/protocol.md, "Moments"): every viewer travels in time on its own, history
is a tree that keeps every branch, a link opens exactly at a moment, and everyone sees
who is here and can follow a presenter. Run on both deployments."""

from __future__ import annotations

import json

import pytest
from test_live import LOST, make_session, reference
from webhelpers import Viewer, arun

from ptviz.debugger.models import Branch, DebugSession, Decision
from ptviz.engine_worker import store

pytestmark = pytest.mark.django_db(transaction=True)


def steps(names):
    return [["step", ["vcpu0", "host0"].index(n)] for n in names]


async def stepped(session, token, names=LOST):
    v = await Viewer.open(session.id, token)
    await v.start()
    for name in names:
        await v.ok("step", actor=name)
    return v


def test_a_viewer_seeking_back_moves_nobody_else(mode):
    session, control, view = make_session()

    async def body():
        a = await stepped(session, control.token)
        b = await Viewer.open(session.id, view.token)
        await b.start()
        await b.ok("back", n=7)
        past = await b.type("snapshot", position=3)
        assert past["cursor"] == {
            "moment": "3",
            "branch": 0,
            "position": 3,
            "end": len(LOST),
            "live": False,
        }
        assert past["hash"] == reference(steps(LOST[:3])).state_hash()
        assert past["actors"] == reference(steps(LOST[:3])).actors_view()
        # The controller goes on at the head; the viewer in the past only hears where
        # the head is now.
        a.drop_unseen()
        await a.ok("inject", actor="host0", op="age 0x8000_0000")
        await a.expect(
            lambda m: m["type"] == "delta" and m["head"]["moment"] == str(len(LOST) + 1),
            what="the inject's delta",
        )
        head = await b.expect(
            lambda m: m["type"] == "head" and m["moment"] == str(len(LOST) + 1), what="head"
        )
        assert head["position"] == len(LOST) + 1
        assert not [m for m in b.unseen if m["type"] in ("delta", "snapshot")]
        # Opening a table in the past shows it as it was then, to this viewer alone.
        await b.ok("subscribe", tables=[past["machine"]["root"]])
        tables = await b.type("tables")
        assert list(tables["tables"]) == [past["machine"]["root"]]
        # Back to live: the head's state.
        await b.ok("live")
        now = await b.type("snapshot")
        assert now["cursor"]["live"] and now["position"] == len(LOST) + 1
        await a.close()
        await b.close()

    arun(body())


def test_a_decision_from_the_past_needs_a_choice_and_then_keeps_both_branches(mode, client):
    session, control, view = make_session()

    async def body():
        a = await stepped(session, control.token)
        watcher = await Viewer.open(session.id, view.token)
        await watcher.start()
        await a.ok("seek", position=7)
        await a.type("snapshot", position=7)
        err = await a.answer(await a.command("step", actor="vcpu0"))
        assert err["type"] == "error" and err["code"] == "rewound"
        assert "new branch" in err["message"] and "fork" in err["message"]
        await a.ok("step", actor="vcpu0", branch=True)
        delta = await a.expect(
            lambda m: m["type"] == "delta" and m["head"]["branch"] == 1, what="delta"
        )
        assert delta["head"] == {"moment": "b1-8", "branch": 1, "position": 8, "running": False}
        # The viewer following the head live sees where it went.
        await watcher.type("snapshot", position=7)
        went = await watcher.expect(
            lambda m: m["type"] == "delta" and m["head"]["branch"] == 1, what="delta"
        )
        assert went["position"] == 8
        # Both branches stay reachable.
        await a.ok("seek", moment=str(len(LOST)))
        old = await a.type("snapshot", position=len(LOST))
        assert old["hash"] == reference(steps(LOST)).state_hash()
        await a.ok("seek", moment="b1-8")
        new = await a.type("snapshot", position=8)
        assert new["hash"] == reference(steps(LOST[:7] + ["vcpu0"])).state_hash()
        assert new["cursor"]["live"]
        await a.close()
        await watcher.close()

    arun(body())
    row = DebugSession.objects.get(pk=session.id)
    assert row.head_branch == 1
    assert list(Branch.objects.filter(session=row).values_list("number", "parent", "start")) == [
        (1, 0, 7)
    ]
    assert Decision.recorded(row) == steps(LOST)
    assert Decision.recorded(row, branch=1) == steps(["vcpu0"])
    _row, live, _stored = store.load(str(row.pk))
    assert (live.branch, live.position) == (1, 8)
    assert live.path_to(str(len(LOST))) == steps(LOST)

    # The recording keeps both branches: imported, it opens at the same head with the
    # same tree, and exports the same again.
    rec = client.get(f"/sessions/{row.pk}/recording.json?token={control.token}").json()
    assert rec["tree"]["head"] == 1 and rec["decisions"] == steps(LOST[:7] + ["vcpu0"])
    made = client.post("/recordings/import", json.dumps(rec), content_type="application/json")
    assert made.status_code == 201, made.content
    copy = DebugSession.objects.get(pk=made.json()["session"])
    assert copy.head_branch == 1
    assert Decision.recorded(copy) == steps(LOST)
    assert Decision.recorded(copy, branch=1) == steps(["vcpu0"])
    token = made.json()["links"]["control"].rstrip("/").rsplit("/", 1)[-1]
    again = client.get(f"/sessions/{copy.pk}/recording.json?token={token}").json()
    assert again["tree"] == rec["tree"] and again["final_hash"] == rec["final_hash"]


def test_a_link_to_a_moment_opens_there_hash_checked(mode):
    session, control, view = make_session()
    want = reference(steps(LOST[:5])).state_hash()

    async def body():
        a = await stepped(session, control.token)
        await a.ok("seek", position=5)
        await a.type("snapshot", position=5)
        await a.ok("moment")
        reply = await a.type("moment")
        assert reply["type"] == "moment" and reply["moment"] == "5" and reply["hash"] == want
        b = await Viewer.open(session.id, view.token, query=f"&at=5&h={want[:12]}")
        _hello, snap = await b.start()
        assert snap["cursor"]["moment"] == "5" and snap["hash"] == want and "notice" not in snap
        c = await Viewer.open(session.id, view.token, query="&at=b4-2")
        _hello, snap = await c.start()
        assert snap["cursor"]["live"] and "no branch 4" in snap["notice"]
        d = await Viewer.open(session.id, view.token, query="&at=5&h=00ff00ff00ff")
        _hello, snap = await d.start()
        assert "does not match" in snap["notice"]
        for v in (a, b, c, d):
            await v.close()

    arun(body())


def test_presence_names_roles_and_moments_and_follow_mode(mode):
    session, control, view = make_session()

    async def body():
        a = await stepped(session, control.token, LOST[:4])
        await a.ok("hello", name="alice")
        b = await Viewer.open(session.id, view.token, query="&name=bob")
        await b.start()
        seen = await a.expect(
            lambda m: m["type"] == "presence" and len(m["viewers"]) == 2, what="presence of 2"
        )
        people = {p["name"]: p for p in seen["viewers"]}
        assert people["alice"]["role"] == "control" and people["bob"]["role"] == "view"
        assert people["bob"]["moment"] == "4" and people["bob"]["live"]
        # bob follows alice: her cursor and focus move his view.
        await b.ok("follow", viewer=people["alice"]["id"])
        await b.type("snapshot")
        await a.ok("seek", position=2)
        await a.type("snapshot", position=2)
        follow = await b.type("snapshot", position=2)
        assert not follow["cursor"]["live"]
        await a.ok("focus", addr="0x1000003000")
        focus = await b.type("focus")
        assert focus["addr"] == "0x1000003000" and focus["by"] == people["alice"]["id"]
        after = await a.expect(
            lambda m: (
                m["type"] == "presence"
                and any(p["follows"] for p in m["viewers"])
                and any(p["focus"] for p in m["viewers"])
            ),
            what="presence with follow and focus",
        )
        who = {p["name"]: p for p in after["viewers"]}
        assert who["bob"]["follows"] == who["alice"]["id"] and who["bob"]["moment"] == "2"
        a.drop_unseen()
        await b.close()
        gone = await a.expect(
            lambda m: m["type"] == "presence" and len(m["viewers"]) == 1, what="bob left"
        )
        assert gone["viewers"][0]["name"] == "alice"
        await a.close()

    arun(body())


def test_run_until_a_check_is_violated_stops_right_after_it(mode):
    session, control, _view = make_session()

    async def body():
        a = await Viewer.open(session.id, control.token)
        await a.start()
        for name in LOST[:8]:
            await a.ok("step", actor=name)
        await a.ok("run", until="violation")
        end = await a.expect(
            lambda m: m["type"] == "delta" and m["running"] is False and m["violations"],
            what="the run's end",
        )
        await a.close()
        return end

    end = arun(body())
    assert end["violations"][0]["check"] == "no_lost_update"
    assert end["position"] == 9  # the store that lost the AF, not the end


def test_a_descriptors_history_lists_every_write_and_names_the_update_a_store_reverted(mode):
    session, control, _view = make_session()

    async def body():
        a = await stepped(session, control.token)
        store_event = next(
            e
            for m in a.seen
            if m["type"] == "delta"
            for e in m["events"]
            if "lost-update" in e.get("flags", [])
        )
        await a.ok("history", addr=store_event["addr"])
        history = await a.type("history")
        await a.ok("seek", position=8)
        await a.type("snapshot", position=8)
        await a.ok("history", addr=store_event["addr"])
        before = await a.type("history")
        await a.close()
        return store_event, history, before

    store_event, history, before = arun(body())
    # The lost update names the hardware AF update it reverted, both as moments.
    reverted = {"seq": 7, "actor": "vcpu0", "kind": "hw-update", "moment": "8", "bits": ["AF"]}
    assert store_event["reverted"] == reverted
    assert [(w["kind"], w["seq"], w["actor"], w["moment"]) for w in history["writes"]] == [
        ("hw-update", 7, "vcpu0", "8"),
        ("store", 8, "host0", "9"),
    ]
    assert history["writes"][1]["reverted"] == reverted
    assert (
        history["writes"][0]["old"] == "0x400003ff" and history["writes"][0]["new"] == "0x400007ff"
    )
    # Up to an earlier moment: only the writes before it.
    assert before["moment"] == "8" and [w["seq"] for w in before["writes"]] == [7]


def test_a_burst_of_joins_is_one_presence_message_to_everyone_per_interval():
    from pathlib import Path

    from engine.session import LiveSession
    from ptviz.engine_worker.host import SessionHost

    text = (Path(__file__).resolve().parents[2] / "scenarios" / "seed_race_v4.6.toml").read_text()
    sent = []
    host = SessionHost("burst", LiveSession(text), set(), lambda *a: sent.append(a), persist=False)

    def news():  # (the group's presence messages, encoded once by the engine)
        return [
            json.loads(p["text"])
            for kind, _to, p in sent
            if kind == "group" and p["msg"]["type"] == "presence"
        ]

    for k in range(50):
        host.join(f"viewer-{k}", who={"role": "view"})
    assert news() == []  # the joins only queue the news...
    now = 1000.0
    host.tick(now)
    [first] = news()  # ...which goes out once, naming all fifty
    assert len(first["viewers"]) == 50
    host.join("late", who={"role": "view", "name": "late one"})
    wake = host.tick(now + host.PRESENCE_INTERVAL / 5)
    assert len(news()) == 1 and wake == now + host.PRESENCE_INTERVAL
    host.tick(wake)
    assert len(news()) == 2 and news()[-1]["viewers"][-1]["name"] == "late one"
    assert host.tick(wake + 1) is None  # nothing more to say: idle


def test_a_viewer_whose_link_names_a_descriptor_gets_the_tables_down_to_it():
    """`d` on the websocket URL (who["focus"]): the viewer is subscribed to the tables from
    the start level down to the one holding the descriptor and gets them in its own
    snapshot; its deltas then carry them. A descriptor no table holds opens nothing."""
    from engine.session import LiveSession
    from ptviz.engine_worker.host import SessionHost

    text = (
        'name = "wp"\nkernel = "seed"\n[[map]]\nipa = 0x8000_0000\npa = 0x4000_0000\n'
        'count = 1024\naf = true\n[[actor]]\nname = "host0"\nkind = "host"\n'
        'do = ["wp 0x8000_0000 4M"]\n'
    )
    sent = []
    host = SessionHost("focus", LiveSession(text), set(), lambda *a: sent.append(a), persist=False)

    def own(viewer):
        return [p["msg"] for _k, to, p in sent if to == viewer and p["msg"]["type"] == "snapshot"]

    root = host.table_views([0x10_0000_0000])["0x1000000000"]
    l1 = next(r for r in root["rows"] if r["decoded"]["type"] == "table")
    l2 = host.live.table_view(int(l1["decoded"]["next_table"], 16), 2)
    l2_row = next(r for r in l2["rows"] if r["decoded"]["type"] == "table")
    l3_pa = l2_row["decoded"]["next_table"]
    leaf = hex(int(l3_pa, 16) + 8 * 5)
    host.join("a", [], who={"role": "view", "focus": leaf})
    [snap] = own("a")
    assert list(snap["tables"]) == ["0x1000000000", l1["decoded"]["next_table"], l3_pa]
    assert host.viewers["a"].focus == leaf
    assert any(r["addr"] == leaf for r in snap["tables"][l3_pa]["rows"])

    host.command({"cmd": "step", "id": 1, "actor": "host0"}, "a")
    for _ in range(40):  # the wp reaches the first leaves: their table in the deltas
        host.command({"cmd": "step", "id": 2, "actor": "host0"}, "a")
    tables = [p.get("tables") or {} for k, _to, p in sent if p["msg"]["type"] == "delta"]
    assert any(l3_pa in t for t in tables)  # (each table encoded once, for the consumers)

    host.join("b", [], who={"role": "view", "focus": "0x7000"})  # (no table there)
    [snap] = own("b")
    assert snap["tables"] == {} and host.viewers["b"].focus is None
