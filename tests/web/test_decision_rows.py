"""The recording in the database: consecutive steps packed into one row, nothing lost."""

import pytest
from webhelpers import ROOT

from engine.history import Runs
from engine.session import LiveSession
from ptviz.debugger import records
from ptviz.debugger.models import DebugSession, Decision
from ptviz.engine_worker import store

V46 = (ROOT / "scenarios" / "seed_race_v4.6.toml").read_text()

DECISIONS = [
    ["step", 0],
    ["step", 1],
    ["step", 1],
    ["inject", 1, "age 0x8000_0000"],
    ["step", 0],
    ["inject", 0, "read 0x8000_0000"],
    ["step", 1],
    ["step", 0],
]


@pytest.mark.django_db
def test_steps_are_packed_and_read_back_in_order():
    s = DebugSession.objects.create(name="x", scenario_text="", kernel="seed")
    store.append(str(s.pk), 0, DECISIONS[:5], [])
    store.append(str(s.pk), 5, DECISIONS[5:], [])
    rows = list(Decision.objects.filter(session=s).order_by("index"))
    assert [(r.index, r.kind, r.count) for r in rows] == [
        (0, "steps", 3),
        (3, "inject", 1),
        (4, "step", 1),
        (5, "inject", 1),
        (6, "steps", 2),
    ]
    assert Decision.recorded(s) == DECISIONS


@pytest.mark.django_db
def test_an_append_that_does_not_start_where_the_recording_ends_is_refused():
    s = DebugSession.objects.create(name="x", scenario_text="", kernel="seed")
    store.append(str(s.pk), 0, DECISIONS[:3], [])
    with pytest.raises(store.LostOwnership):
        store.append(str(s.pk), 1, DECISIONS[1:4], [])
    assert Decision.recorded(s) == DECISIONS[:3]


@pytest.mark.django_db
def test_a_long_run_of_one_actor_is_one_row_without_bytes_and_loads_as_one_run():
    """A run of RUN_ROW or more steps of one actor is stored as `count` alone; shorter
    runs between other decisions stay packed one byte per step."""
    s = DebugSession.objects.create(name="x", scenario_text="", kernel="seed")
    n = Decision.RUN_ROW
    decisions = (
        [["step", 1]] * 786_000 + [["step", 0]] * 2 + [["step", 1]] * (n - 1) + [["step", 0]] * n
    )
    store.append(str(s.pk), 0, Runs(decisions), [])
    rows = list(Decision.objects.filter(session=s).order_by("index"))
    assert [(r.index, r.kind, r.actor, r.count, bytes(r.steps)) for r in rows] == [
        (0, "steps", 1, 786_000, b""),
        (786_000, "steps", 0, n + 1, b"\x00\x00" + b"\x01" * (n - 1)),
        (786_000 + n + 1, "steps", 0, n, b""),
    ]
    runs = Decision.by_branch(s)[0]
    assert runs == decisions and len(runs.items) == 4
    assert Decision.recorded(s) == decisions


@pytest.mark.django_db
def test_rows_written_one_byte_per_step_read_back_as_runs():
    """Rows stored before runs had rows of their own (every step a byte) read the same."""
    s = DebugSession.objects.create(name="x", scenario_text="", kernel="seed")
    Decision.objects.create(
        session=s, index=0, kind="steps", actor=1, count=5, steps=b"\x01\x01\x01\x00\x00"
    )
    Decision.objects.create(session=s, index=5, kind="step", actor=0)
    runs = Decision.by_branch(s)[0]
    assert list(runs.runs()) == [(["step", 1], 3), (["step", 0], 3)]


@pytest.mark.django_db
def test_a_loaded_session_knows_where_its_injected_operations_are():
    """The runs read back keep each injected operation's index (the timeline maps event
    sequence numbers to moments with them)."""
    live = LiveSession(V46)
    live.step("vcpu0")
    live.inject("host0", "age 0x8000_0000")
    live.run(40)
    second = live.position
    live.inject("vcpu0", "read 0x8000_0000")
    live.run(40)
    session, _control, _view = records.create(live, "test")
    _row, loaded, _ = store.load(str(session.pk))
    assert loaded.decisions == live.decisions
    end = len(live.decisions)
    assert loaded.decisions.injects_before(end) == live.decisions.injects_before(end) == [1, second]
    assert loaded.state_hash() == live.state_hash()
