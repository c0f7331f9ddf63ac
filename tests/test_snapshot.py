"""Snapshots: bytes out, state back in; continuing after a restore is not stopping at all."""

from pathlib import Path

import pytest

from engine.core import new_machine
from engine.scenario import load_scenario
from engine.snapshot import SnapshotError, pack, restore, snapshot, state_hash, unpack
from engine.spec import build_spec

SCENARIO = Path(__file__).resolve().parents[1] / "scenarios" / "seed_race_v4.6.toml"
SCHEDULE = [0, 0, 0, 1, 1, 1, 1, 0, 1, 1]  # the lost-update interleaving


@pytest.fixture(scope="module")
def spec():
    return build_spec(load_scenario(SCENARIO))


@pytest.mark.parametrize("engine", ["cython", "python"])
@pytest.mark.parametrize("cut", range(len(SCHEDULE) + 1))
def test_restoring_then_continuing_gives_the_trace_of_never_stopping(spec, engine, cut):
    straight = new_machine(spec, engine)
    for actor in SCHEDULE:
        straight.step(actor)

    first = new_machine(spec, engine)
    for actor in SCHEDULE[:cut]:
        first.step(actor)
    data = snapshot(first)
    second = new_machine(spec, engine)
    restore(second, data)
    for actor in SCHEDULE[cut:]:
        second.step(actor)

    assert second.event_tuples() == straight.event_tuples()[cut:]
    assert second.mem_array() == straight.mem_array()
    assert second.violations == straight.violations
    assert state_hash(snapshot(second)) == state_hash(snapshot(straight))


@pytest.mark.parametrize("cut", [0, 4, 7])
def test_a_snapshot_from_one_core_restores_into_the_other(spec, cut):
    fast, slow = new_machine(spec, "cython"), new_machine(spec, "python")
    for actor in SCHEDULE[:cut]:
        fast.step(actor)
    restore(slow, snapshot(fast))
    for actor in SCHEDULE[cut:]:
        fast.step(actor)
        slow.step(actor)
    assert (
        fast.event_tuples()[-len(SCHEDULE[cut:]) or len(fast.event_tuples()) :]
        == slow.event_tuples()
    )
    assert snapshot(fast) == snapshot(slow)


def test_state_hash_tells_states_apart(spec):
    m = new_machine(spec, "cython")
    before = state_hash(snapshot(m))
    m.step(0)
    assert state_hash(snapshot(m)) != before


def test_a_corrupt_snapshot_is_refused(spec):
    m = new_machine(spec, "cython")
    with pytest.raises(SnapshotError):
        unpack(b"not a snapshot")
    data = pack(m.get_state())
    with pytest.raises(Exception, match="does not match"):
        state = unpack(data)
        state["mem"] = state["mem"][:-8]
        m.set_state(state)
