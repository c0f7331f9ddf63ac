"""A fast run in the SessionHost (in-process, with the database): what it stores and
shows while its steps go to the core in runs and its checkpoints are packed beside it."""

from __future__ import annotations

import json

import pytest

from engine.snapshot import state_hash
from ptviz.debugger import records
from ptviz.engine_worker import store
from ptviz.engine_worker.host import SessionHost

pytestmark = pytest.mark.django_db(transaction=True)

WP = (
    'name = "wp"\nkernel = "seed"\n'
    "[[map]]\nipa = 0x8000_0000\npa = 0x4000_0000\ncount = 4096\naf = true\n"
    '[[actor]]\nname = "host0"\nkind = "host"\ndo = ["wp 0x8000_0000 16M"]\n'
)


def stored_end(session_id: str) -> int:
    branches, _ = store.history_of(store.DebugSession.objects.get(pk=session_id))
    return len(branches[0][2])


def test_a_fast_run_shows_only_stored_decisions_and_stores_every_checkpoint_by_its_end():
    session, _, _ = records.create(records.check_scenario(WP, "test"), "test")
    sid = str(session.pk)
    deltas = []

    def emit(kind, _target, payload):
        if kind == "group" and payload["msg"]["type"] == "delta":
            delta = json.loads(payload["text"])
            # nothing a viewer sees is lost if the worker dies now
            assert stored_end(sid) >= delta["position"]
            deltas.append(delta)

    host = SessionHost.load(sid, emit)
    host.join("v", [], reply=False)
    host.command({"cmd": "run", "id": 1, "speed": 0}, "v")
    while host.run is not None:
        host.tick()
    live = host.live
    assert deltas[-1]["running"] is False  # (without waiting for the checkpoints)
    while host.packing:  # the run's last ones: stored by the ticks after it
        host.tick()
    assert live.position > 3 * 4096 and stored_end(sid) == live.position
    batches = [d["batch"] for d in deltas]
    assert batches == list(range(batches[0], batches[0] + len(batches)))
    assert deltas[-1]["running"] is False and deltas[-1]["position"] == live.position
    # every checkpoint the run made is stored, packed as the database keeps them
    _, checkpoints = store.history_of(store.DebugSession.objects.get(pk=sid))
    made = {p: c for p, c in live.checkpoints.items() if p > 0}
    assert len(made) > 10 and sorted(p for _b, p, _s, _h in checkpoints) == sorted(made)
    for _b, p, blob, digest in checkpoints:
        assert store.decompress(blob) == made[p].snapshot and digest == state_hash(made[p].snapshot)
