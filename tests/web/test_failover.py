"""An engine worker dies: another one takes its sessions over from the database, the
viewers get a fresh snapshot, and no recorded decision is lost."""

from __future__ import annotations

import os
import signal

import pytest
from webhelpers import ROOT, Viewer, arun

from engine.session import LiveSession
from ptviz.debugger import records
from ptviz.debugger.models import Decision, EngineLease

pytestmark = pytest.mark.django_db(transaction=True)

V46 = ROOT / "scenarios" / "seed_race_v4.6.toml"
STEPS = ["vcpu0"] * 3 + ["host0"] * 4


def reference(n: int) -> LiveSession:
    live = LiveSession(V46.read_text())
    for name in STEPS[:n]:
        live.step(name)
    return live


def make_session():
    return records.create(records.check_scenario(V46.read_text(), V46.name), "test")


def test_a_distributed_worker_dies_and_another_takes_over(redis_deployment):
    redis_workers = redis_deployment
    session, control, view = make_session()
    owner = {}

    async def body():
        a = await Viewer.open(session.id, control.token)
        b = await Viewer.open(session.id, view.token)
        await a.start()
        await b.start()
        for name in STEPS[:5]:
            await a.ok("step", actor=name)
        await b.type("delta", decisions=5)
        lease = await EngineLease.objects.aget(session_id=session.id)
        owner["dead"] = lease.worker
        redis_workers.kill(lease.worker)  # SIGKILL: no goodbye, the lease just goes stale
        a.drop_unseen()
        b.drop_unseen()
        # both viewers notice (stale lease), the other worker rebuilds the session from
        # the database and sends a snapshot
        snap_a = await a.type("snapshot", timeout=20)
        snap_b = await b.type("snapshot", timeout=20)
        for snap in (snap_a, snap_b):
            assert snap["position"] == snap["decisions"] == 5
            assert snap["actors"] == reference(5).actors_view()
            assert len(snap["events"]) > 0
        await a.ok("step", actor=STEPS[5])
        delta = await b.type("delta", decisions=6)
        assert delta["batch"] > snap_b["batch"]
        lease = await EngineLease.objects.aget(session_id=session.id)
        owner["new"] = lease.worker
        await a.close()
        await b.close()
        return delta

    try:
        delta = arun(body())
    finally:
        if owner.get("dead"):
            redis_workers.start(owner["dead"] + "-again")
    assert owner["new"] != owner["dead"]
    assert delta["actors"] == reference(6).actors_view()
    stored = Decision.recorded(session)
    assert stored == reference(6).decisions


def test_an_embedded_worker_process_dies_and_is_restarted(embedded_deployment):
    embedded_engine = embedded_deployment
    session, control, _view = make_session()

    async def body():
        a = await Viewer.open(session.id, control.token)
        await a.start()
        for name in STEPS[:4]:
            await a.ok("step", actor=name)
        slot = embedded_engine.assigned[str(session.id)]
        os.kill(embedded_engine.procs[slot].pid, signal.SIGKILL)
        a.drop_unseen()
        snap = await a.type("snapshot", timeout=30)
        assert snap["position"] == snap["decisions"] == 4
        await a.ok("step", actor=STEPS[4])
        delta = await a.type("delta", decisions=5)
        await a.close()
        return delta

    delta = arun(body())
    assert delta["actors"] == reference(5).actors_view()
    assert Decision.recorded(session) == reference(5).decisions
