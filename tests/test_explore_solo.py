"""Exploring a scenario from its start with the explorer's own machine (explore_json
without a machine: `python -m engine explore`) gives what exploring a machine the caller
keeps gives; the first needs no way back for a single unfinished actor (engine/explore.py,
_solo), the second comes back to where it started."""

from hypothesis import HealthCheck, given, settings

from engine.core import new_machine
from engine.report import explore_json
from engine.scenario import parse_scenario
from engine.spec import build_spec
from tests.strategies import scenario_texts


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=scenario_texts(max_actors=2, max_ops=3, max_maps=3, small=True))
def test_the_explorers_own_machine_explores_as_a_machine_the_caller_keeps(text):
    spec = build_spec(parse_scenario(text, "generated.toml"))
    kept = new_machine(spec)
    before = kept.get_state()
    assert explore_json(spec, "cython", 200_000) == explore_json(spec, "cython", 200_000, kept)
    assert kept.get_state() == before  # (the caller's machine is where it was)
