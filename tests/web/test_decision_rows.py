"""The recording in the database: consecutive steps packed into one row, nothing lost."""

import pytest

from ptviz.debugger.models import DebugSession, Decision
from ptviz.engine_worker import store

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
