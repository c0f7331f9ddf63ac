"""Bug reports over HTTP (docs/protocol.md, "HTTP"; docs/bundle.md): a session's report and
bundle at a position, a bundle imported into a session at its moment (with streamed
progress), a KVM stage-2 dump uploaded into a session that renders and runs."""

from __future__ import annotations

import json
import re

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import AsyncClient
from webhelpers import ROOT, Viewer, arun

from engine import bundle as BD
from engine.session import LiveSession
from ptviz.debugger import records
from ptviz.debugger.models import Checkpoint, DebugSession, Decision
from ptviz.engine_worker import store
from tests.scenario_texts import WP_4M

pytestmark = pytest.mark.django_db(transaction=True)

V46 = (ROOT / "scenarios" / "seed_race_v4.6.toml").read_text()
LOST = ["vcpu0"] * 3 + ["host0"] * 4 + ["vcpu0"] + ["host0"] * 2
DUMP = ROOT / "scenarios" / "dumps" / "small.stage2_page_tables"


def lost_session():
    live = records.check_scenario(V46, "seed_race_v4.6.toml")
    for name in LOST:
        live.step(name)
    return records.create(live, "test")


def post_streaming(upload) -> list[dict]:
    """POST /bundles/import asking for NDJSON progress (an ASGI streaming answer)."""

    async def body():
        answer = await AsyncClient().post(
            "/bundles/import", {"bundle": upload}, headers={"Accept": "application/x-ndjson"}
        )
        chunks = [chunk async for chunk in answer.streaming_content]
        return [json.loads(line) for line in b"".join(chunks).decode().splitlines()]

    return arun(body())


def token_of(url: str) -> str:
    return re.search(r"/s/([^/]+)/", url)[1]


def test_the_report_of_a_position_is_the_cli_text(client):
    session, _control, view = lost_session()
    text = client.get(f"/sessions/{session.id}/report?position=10&token={view.token}")
    assert text["Content-Type"].startswith("text/plain")
    body = text.content.decode()
    assert body.startswith("VERDICT: VIOLATED no_lost_update at 0x80000000 (AF) by host0")
    early = client.get(f"/sessions/{session.id}/report?position=3&token={view.token}")
    assert early.content.decode().startswith("VERDICT: no check violated")
    md = client.get(f"/sessions/{session.id}/report?format=markdown&token={view.token}")
    assert md.content.decode().startswith("**VERDICT: VIOLATED")
    assert client.get(f"/sessions/{session.id}/report").status_code == 403  # no share token
    bad = client.get(f"/sessions/{session.id}/report?position=99&token={view.token}")
    assert bad.status_code == 400 and "position '99' is not in 0..10" in bad.json()["message"]


def test_export_a_bundle_at_a_position_and_import_it_at_that_moment(client):
    session, _control, view = lost_session()
    got = client.get(f"/sessions/{session.id}/bundle?position=8&token={view.token}")
    assert "attachment" in got["Content-Disposition"]
    b = BD.loads(got.content)
    assert b.position == 8 and b.moment == "8"
    upload = SimpleUploadedFile("race.bundle.json", got.content, "application/json")
    made = client.post("/bundles/import", {"bundle": upload})
    assert made.status_code == 302
    new = DebugSession.objects.get(origin="bundle:race.bundle.json")
    reference = LiveSession(V46)
    for name in LOST[:8]:
        reference.step(name)
    assert Decision.recorded(new) == [list(d) for d in reference.decisions]


def test_a_bundle_import_streams_its_progress_then_the_session(client):
    live = LiveSession(V46)
    live.run(100)
    upload = SimpleUploadedFile("b.json", BD.dumps(BD.from_session(live)), "application/json")
    lines = post_streaming(upload)
    assert lines[-2] == {"progress": live.position, "total": live.position}
    assert "/s/" in lines[-1]["url"]


def test_a_tampered_bundle_creates_nothing_and_says_why(client):
    session, _control, view = lost_session()
    data = client.get(f"/sessions/{session.id}/bundle?token={view.token}").content
    before = DebugSession.objects.count()
    upload = SimpleUploadedFile("b.json", data[: len(data) // 2], "application/json")
    page = client.post("/bundles/import", {"bundle": upload})
    assert page.status_code == 400 and "b.json: truncated" in page.content.decode()
    upload = SimpleUploadedFile("b.json", data.replace(b"0*3 1*4", b"0*3 1*3"), "application/json")
    last = post_streaming(upload)[-1]
    assert last["error"] == "b.json: path: altered after the bundle was written (digest differs)"
    assert DebugSession.objects.count() == before


def test_a_dump_upload_makes_a_session_that_renders_and_runs(client, embedded_deployment):
    upload = SimpleUploadedFile("stage2_page_tables", DUMP.read_bytes())
    made = client.post("/dumps/import", {"dump": upload, "ipa_bits": "40"})
    assert made.status_code == 302
    page = client.get(made["Location"])
    assert page.status_code == 200
    session = DebugSession.objects.get(origin="ptdump:stage2_page_tables")

    async def body():
        v = await Viewer.open(session.id, token_of(made["Location"]))
        _hello, snap = await v.start()
        assert snap["machine"]["counts"]["leaves"] == 5  # 3 + 1 pages and one 2M block
        await v.ok("run", mode="round_robin")
        end = await v.type("delta", running=False, timeout=60)
        assert all(a["done"] for a in end["actors"]) and end["decisions"] > 0
        await v.close()

    arun(body())


def test_a_malformed_dump_upload_names_the_line(client):
    bad = DUMP.read_text().replace("12K 3", "16K 3")
    upload = SimpleUploadedFile("dump.txt", bad.encode())
    page = client.post("/dumps/import", {"dump": upload})
    assert page.status_code == 400
    assert "dump.txt:3: size 16K does not match the range (12K)" in page.content.decode()
    assert not DebugSession.objects.filter(origin__startswith="ptdump:").exists()


# --- moments: export the path to the viewer's moment, import opens at it ------------------------
def branched_session():
    """LOST on the first branch, then a second branch from step 7 (vcpu0 stepping
    there: moment b1-8), the head on it, as a viewer's decision in the past stores it."""
    session, control, view = lost_session()
    store.append(str(session.pk), 7, [["step", 0]], [], branch=1, new_branch=(0, 7), head=1)
    return session, control, view


def test_export_and_report_follow_the_viewers_moment_on_any_branch(client):
    session, _control, view = branched_session()
    q = f"token={view.token}"
    off_head = BD.loads(client.get(f"/sessions/{session.id}/bundle?moment=10&{q}").content)
    assert off_head.moment == "10" and list(off_head.decisions()) == [
        ["step", ["vcpu0", "host0"].index(n)] for n in LOST
    ]
    head = client.get(f"/sessions/{session.id}/bundle?{q}")  # default: the head's tip
    assert "-at-b1-8.bundle.json" in head["Content-Disposition"]
    b = BD.loads(head.content)
    assert b.moment == "b1-8" and list(b.decisions())[-1] == ["step", 0] and b.position == 8
    assert BD.loads(client.get(f"/sessions/{session.id}/bundle?moment=5&{q}").content).moment == "5"
    text = client.get(f"/sessions/{session.id}/report?moment=10&{q}").content.decode()
    assert text.startswith("VERDICT: VIOLATED no_lost_update")
    text = client.get(f"/sessions/{session.id}/report?moment=b1-8&{q}").content.decode()
    assert text.startswith("VERDICT: no check violated")
    bad = client.get(f"/sessions/{session.id}/bundle?moment=b1-3&{q}")
    assert bad.status_code == 400 and bad.json()["where"] == "moment"
    assert "moment b1-3 is not in this session" in bad.json()["message"]


def test_an_imported_bundle_opens_at_its_moment_hash_checked(client, embedded_deployment):
    session, _control, view = branched_session()
    data = client.get(f"/sessions/{session.id}/bundle?moment=b1-8&token={view.token}").content
    want = BD.loads(data).hashes[8][0]
    upload = SimpleUploadedFile("b.bundle.json", data, "application/json")
    made = client.post("/bundles/import", {"bundle": upload}, HTTP_ACCEPT="application/json")
    assert made.status_code == 201
    url = made.json()["url"]
    assert url.endswith(f"?at=8&h={want[:12]}")
    streamed = post_streaming(SimpleUploadedFile("b.bundle.json", data, "application/json"))
    assert streamed[-1]["url"].endswith(f"?at=8&h={want[:12]}") and streamed[-1]["moment"] == "8"
    page = client.get(url)
    boot = json.loads(re.search(r'id="bootstrap"[^>]*>(.*?)</script>', page.content.decode())[1])
    assert boot["at"] == "8" and boot["ws"].endswith(f"&at=8&h={want[:12]}")
    new = made.json()["session"]

    async def body():
        v = await Viewer.open(new, token_of(url), query=f"&at=8&h={want[:12]}")
        _hello, snap = await v.start()
        assert snap["cursor"]["moment"] == "8" and snap["hash"] == want
        assert "notice" not in snap
        await v.close()

    arun(body())


def test_an_imported_long_run_is_stored_as_runs_with_few_checkpoints(client):
    live = LiveSession(WP_4M)
    live.run(10**6)
    data = BD.dumps(BD.from_session(live))
    upload = SimpleUploadedFile("wp.bundle.json", data, "application/json")
    made = client.post("/bundles/import", {"bundle": upload}, HTTP_ACCEPT="application/json")
    new = DebugSession.objects.get(pk=made.json()["session"])
    rows = Decision.objects.filter(session=new)
    assert rows.count() < 20 and sum(r.count for r in rows) == live.position
    # checkpoints: the moment's, and none along runs cheaper to re-execute than to load
    stored = list(Checkpoint.objects.filter(session=new).values_list("position", flat=True))
    assert stored == [max(p for p in live.checkpoints if p <= live.position)]
    _row, loaded, _ = store.load(str(new.pk))
    assert loaded.tree.branches[0].decisions == live.tree.branches[0].decisions
    assert loaded.state_hash() == live.state_hash()
