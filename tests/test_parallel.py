"""`explore --jobs N` is the serial explorer, faster (engine/parallel.py).

For random scenarios explored from a random moment, and for every scenario of the bug
catalogue (some cut livelock cycles), an exploration by two processes gives exactly the
serial results: states, interleavings, cycles, every final state (key, count, example
schedule, node id, in order), every counterexample (check, IPA, bits, actor, operation,
schedule, in order) and the interleavings ending in each violation; it leaves the machine
where it found it, and past max_states it fails as the serial one does. On the catalogue,
`explore --json`'s whole object is the same too (final states' leaves are read in the
processes that reach them: the parent must still be able to describe every one). The number of
units of work handed out per process is drawn too, so that the processes split the
search at the root as well as a few levels down.
"""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine import parallel
from engine.core import new_machine
from engine.explore import StateBoundExceeded, explore
from engine.report import Observer, explore_json
from engine.scenario import load_scenario, parse_scenario
from engine.spec import build_spec
from tests.strategies import scenario_texts, schedules

CATALOGUE = sorted(Path(__file__).parents[1].glob("scenarios/bugs/*.toml"))
MAX_STATES = 20_000
CATALOGUE_MAX_STATES = 1_000_000
# Three actors racing on shared leaves: some spin (cut cycles), some violate checks.
SCENARIOS = (
    scenario_texts(max_actors=3, max_ops=2, max_maps=3, small=True, racy=True)
    | scenario_texts(max_actors=3, max_ops=3, max_maps=3, racy=True)
    | scenario_texts(max_actors=3, max_ops=2, logging=True)
)


def _drive(machine, choices: list[int]) -> None:
    for choice in choices:
        enabled = machine.enabled()
        if machine.all_done() or not enabled:
            return
        machine.step(enabled[choice % len(enabled)])


def _outcome(spec, prefix: list[int], jobs: int, units: int, max_states: int = MAX_STATES):
    """Everything an exploration reports, or the error it raised; and the machine's state
    key before and after."""
    machine = new_machine(spec, "cython")
    _drive(machine, prefix)
    before = machine.state_key()
    saved, parallel.UNITS_PER_JOB = parallel.UNITS_PER_JOB, units
    try:
        ex = explore(machine, Observer(spec), max_states=max_states, progress=False, jobs=jobs)
    except StateBoundExceeded as exc:
        return ("bound", str(exc)), (before, machine.state_key())
    finally:
        parallel.UNITS_PER_JOB = saved
    finals = [(f.key, f.count, list(f.schedule), f.node) for f in ex.finals]
    violations = [
        (name, v.check, v.ipa, v.bits, v.actor, v.op_index, list(v.schedule))
        for name, v in ex.violations.items()
    ]
    return (
        ex.states,
        ex.interleavings,
        ex.cycles,
        finals,
        violations,
        ex.violation_counts,
    ), (before, machine.state_key())


def _assert_parallel_is_serial(spec, prefix, units, where, max_states=MAX_STATES):
    serial, (before, after) = _outcome(spec, prefix, 1, units, max_states)
    assert before == after, "the serial explorer moved the machine" + where
    two, (before, after) = _outcome(spec, prefix, 2, units, max_states)
    assert before == after, "the parallel explorer moved the machine" + where
    assert two == serial, "parallel and serial explorations differ" + where
    return serial


@settings(
    max_examples=120,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(text=SCENARIOS, prefix=schedules(10), units=st.sampled_from([1, 2, 8, 32]))
def test_two_processes_find_exactly_what_one_finds(text, prefix, units):
    spec = build_spec(parse_scenario(text, "generated.toml"))
    where = f"\n\nscenario:\n{textwrap.indent(text, '  ')}\nprefix choices: {prefix}"
    _assert_parallel_is_serial(spec, prefix, units, where)


@pytest.mark.parametrize("units", [1, 32])
@pytest.mark.parametrize("path", CATALOGUE, ids=lambda p: p.stem)
def test_the_catalogue_explores_identically_in_two_processes(path, units):
    spec = build_spec(load_scenario(path))
    _assert_parallel_is_serial(spec, [], units, f" ({path.name})", CATALOGUE_MAX_STATES)
    saved, parallel.UNITS_PER_JOB = parallel.UNITS_PER_JOB, units
    try:
        two = explore_json(spec, "cython", CATALOGUE_MAX_STATES, jobs=2)
    finally:
        parallel.UNITS_PER_JOB = saved
    assert two == explore_json(spec, "cython", CATALOGUE_MAX_STATES)


def test_catalogue_cycles_are_among_what_two_processes_reproduce():
    """(The catalogue test above is only as strong as its cases: some cut cycles.)"""
    cycles = {}
    for path in CATALOGUE:
        spec = build_spec(load_scenario(path))
        cycles[path.stem] = explore(
            new_machine(spec, "cython"), Observer(spec), progress=False
        ).cycles
    assert sum(1 for n in cycles.values() if n) >= 3, cycles


def test_past_max_states_two_processes_fail_as_one_does():
    path = next(p for p in CATALOGUE if p.stem.startswith("3a0b870e3448"))
    spec = build_spec(load_scenario(path))
    outcome = _assert_parallel_is_serial(spec, [], 1, f" ({path.name})", max_states=5_000)
    assert outcome[0] == "bound"


def test_a_worker_that_dies_leaves_the_exploration_to_the_serial_search(monkeypatch):
    path = next(p for p in CATALOGUE if p.stem.startswith("694d071f8d85"))
    spec = build_spec(load_scenario(path))
    parent, generate = os.getpid(), parallel.generate

    def dying(*args, **kwargs):
        if os.getpid() != parent:
            os._exit(9)  # (as if killed, say by the OOM killer, before it reported)
        return generate(*args, **kwargs)

    monkeypatch.setattr(parallel, "generate", dying)
    serial, _ = _outcome(spec, [], 1, 32, CATALOGUE_MAX_STATES)
    two, _ = _outcome(spec, [], 2, 32, CATALOGUE_MAX_STATES)
    assert two == serial
