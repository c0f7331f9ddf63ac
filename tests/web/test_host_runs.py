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


def follow(model: dict, tables: dict) -> None:
    """A page's copy of its open tables, updated as the browser does from a message's
    `tables` (docs/protocol.md: `only` lists the entries a view carries)."""
    for pa, view in tables.items():
        if view is None:
            model.pop(pa, None)
            continue
        rows = (
            model.setdefault(pa, {}) if "only" in view else model.__setitem__(pa, {}) or model[pa]
        )
        for slot in view.get("only", ()):
            rows.pop(slot, None)
        rows.update({r["index"]: r for r in view["rows"]})


def test_viewers_following_a_fast_run_by_its_deltas_end_with_every_open_table_as_it_is():
    """Viewer a opens the start level; b registers mid-run with the tables down to the
    level-3 table being written (as after a worker takeover: no snapshot of its own, its
    copy as of the last delta). The deltas carry only changed entries of the tables a
    drain watched, and whole the tables written before they were watched."""
    session, _, _ = records.create(records.check_scenario(WP, "test"), "test")
    models = {"a": {}, "b": {}}
    opened = {"a": {"0x1000000000"}, "b": set()}
    views = {}  # the tables as of the last delta

    def emit(kind, target, payload):
        msg = payload["msg"]
        if kind == "channel" and msg["type"] in ("snapshot", "tables"):
            follow(models[target], msg["tables"])
        elif kind == "group" and msg["type"] == "delta":
            tables = {k: json.loads(v) for k, v in payload["tables"].items()}
            for viewer, mine in opened.items():
                follow(models[viewer], {k: v for k, v in tables.items() if k in mine})
            views.update(host.table_views(host.index.tables))  # (ten tables)

    host = SessionHost.load(str(session.pk), emit)
    host.join("a", sorted(opened["a"]), who={"role": "view"})
    host.command({"cmd": "run", "id": 1, "speed": 0}, "a")
    host.FLUSH_INTERVAL = 3600.0  # (slices go on; no delta until b is there)
    for _ in range(2):
        host.tick()
    done = host.live.machine.subtree_counts(0x10_0000_0000, 1, 512)[2]  # (readonly)
    ipa = 0x8000_0000 + done * 4096  # the leaf being write-protected
    table = next(
        pa
        for pa, t in host.index.tables.items()
        if t.level == 3 and t.ipa <= ipa < t.ipa + 512 * 4096
    )
    path = [hex(pa) for pa in host.index.path(table)]
    opened["b"] = set(path)
    host.heard("b", path)  # registered without a snapshot: its copy is as of before
    for pa in path:  # (the last delta said nothing of these: its copy is from before it)
        follow(models["b"], {pa: views[pa]})
    host.FLUSH_INTERVAL = 0.05
    while host.run is not None:
        host.tick()
    for viewer, mine in opened.items():
        for pa in mine:
            now = host.table_views([int(pa, 16)])[pa]
            assert models[viewer][pa] == {r["index"]: r for r in now["rows"]}, (viewer, pa)
