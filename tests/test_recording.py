"""What the CLI asks of both cores when it runs a schedule: the round-robin schedule
handed back run-length encoded, and events kept only up to a limit (past it nobody lists
them), with everything else (table memory, violations, registers) as if recorded."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.core import ENGINES, new_machine
from engine.scenario import parse_scenario
from engine.spec import build_spec
from engine.twin import add_run
from tests.strategies import scenario_texts, schedules

SETTINGS = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
SCENARIOS = scenario_texts(max_actors=3, max_ops=3, max_maps=3, small=True)


def _prefix(m, choices) -> list[list[int]]:
    runs: list[list[int]] = []
    for choice in choices:
        enabled = m.enabled()
        if m.all_done() or not enabled:
            break
        actor = enabled[choice % len(enabled)]
        m.step(actor)
        add_run(runs, actor)
    return runs


# Generated scenarios can livelock under round-robin (reverted fixes such as 86658b819cd0:
# two vCPUs re-breaking each other's block for ever): every run here is bounded.
BOUND = 3_000


def _round_robin_one_by_one(m, bound: int = BOUND) -> list[int]:
    """The schedule run_round_robin(bound) takes, spelled out with step()."""
    out = []
    while not m.all_done() and len(out) < bound:
        for i in range(len(m.actors)):
            if not m.done(i) and not m.blocked(i):
                m.step(i)
                out.append(i)
                if len(out) == bound:
                    break
    return out


@SETTINGS
@given(text=SCENARIOS, choices=schedules(12))
def test_round_robin_hands_back_its_schedule_run_length_encoded(text, choices):
    spec = build_spec(parse_scenario(text, "generated.toml"))
    for engine in ENGINES:
        m, ref = new_machine(spec, engine), new_machine(spec, engine)
        runs = _prefix(m, choices)
        expected = [a for a, n in runs for _ in range(n)]
        prefix = len(expected)
        _prefix(ref, choices)
        expected += _round_robin_one_by_one(ref, BOUND - prefix)
        steps = m.run_round_robin(BOUND - prefix, runs)
        assert [a for a, n in runs for _ in range(n)] == expected, engine
        assert all(runs[k][0] != runs[k + 1][0] for k in range(len(runs) - 1))
        assert steps == len(expected) - prefix
        assert m.mem_array() == ref.mem_array()


@SETTINGS
@given(text=SCENARIOS, limit=st.integers(0, 40))
def test_past_the_record_limit_events_are_dropped_and_nothing_else_changes(text, limit):
    spec = build_spec(parse_scenario(text, "generated.toml"))
    for engine in ENGINES:
        full, limited = new_machine(spec, engine), new_machine(spec, engine)
        limited.record_limit = limit
        assert full.run_round_robin(BOUND) == limited.run_round_robin(BOUND)
        events = full.event_tuples()
        kept = limited.event_tuples()
        if len(events) <= limit:
            assert kept == events, engine
        else:
            assert len(kept) == limit and kept == events[:limit], engine
            assert not limited.recording
        assert limited.mem_array() == full.mem_array()
        assert limited.violations == full.violations
        assert limited.seq == full.seq
