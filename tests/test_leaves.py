"""Final states read at C speed (engine/_leaves.pyx) are what the Python reference reads:
every map leaf walked as engine.spec.walk_image walks one IPA, and counted as
report.leaf_fields sees it, after any prefix of any schedule, on both cores."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings

from engine import _leaves, report
from engine import bits as B
from engine.core import ENGINES, new_machine
from engine.report import Observer, chunked_runs, leaf_fields
from engine.scenario import parse_scenario
from engine.spec import build_spec, walk_image
from tests.strategies import scenario_texts, schedules

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _spec_and_runs(text: str):
    """The scenario's spec, its geometry and its maps as (ipa, count, size) runs."""
    spec = build_spec(parse_scenario(text, "generated.toml"))
    return spec, spec.geometry, [(m.ipa, m.count, m.size) for m in spec.scenario.maps]


def _step(m, choices) -> None:
    for choice in choices:
        enabled = m.enabled()
        if m.all_done() or not enabled:
            return
        m.step(enabled[choice % len(enabled)])


@SETTINGS
@given(text=scenario_texts(max_actors=3, max_ops=3, max_maps=4), choices=schedules(40))
def test_every_leaf_is_walked_and_counted_as_the_python_reference_does(text, choices):
    spec, g, runs = _spec_and_runs(text)
    ipas = [ipa for m in spec.scenario.maps for ipa, _pa in m.leaves()]
    for engine in ENGINES:
        m = new_machine(spec, engine)
        _step(m, choices)
        mem = m.mem_array()
        values, levels = _leaves.walk_maps(mem, g.start_level, g.start_entries, runs)
        walked = [walk_image(mem, g, ipa) for ipa in ipas]
        assert list(values) == [desc for desc, _level, _pa in walked], engine
        assert list(levels) == [level for _desc, level, _pa in walked], engine
        expected: dict[tuple, int] = {}
        for desc, level, _pa in walked:
            f = leaf_fields(desc, level)
            row = (f["valid"], f["af"], f["s2ap"], f["dbm"])
            expected[row] = expected.get(row, 0) + 1
        got = {
            (v, af, B.s2ap_name(s2ap << B.S2AP_SHIFT), dbm): n
            for (v, af, s2ap, dbm), n in _leaves.summary_counts(values, levels).items()
        }
        assert got == expected, engine


@SETTINGS
@given(text=scenario_texts(max_actors=3, max_ops=3, max_maps=4), choices=schedules(40))
def test_a_machine_walks_its_own_leaves_in_place_as_a_copy_of_its_memory_reads(text, choices):
    spec, g, runs = _spec_and_runs(text)
    for engine in ENGINES:
        m = new_machine(spec, engine)
        _step(m, choices)
        copied = _leaves.walk_maps(m.mem_array(), g.start_level, g.start_entries, runs)
        assert m.walk_leaves(runs) == copied, engine


@SETTINGS
@given(text=scenario_texts(max_actors=3, max_ops=3, max_maps=4), choices=schedules(40))
def test_a_machine_that_takes_the_spec_image_runs_as_one_that_copies_it(text, choices):
    """`run`'s machine uses the spec's image as its table memory (no copy), and memory of
    its own once a new table needs more."""
    copier = new_machine(build_spec(parse_scenario(text, "generated.toml")), "cython")
    spec = build_spec(parse_scenario(text, "generated.toml"))
    taker = new_machine(spec, "cython", take_image=True)
    _step(copier, choices)
    _step(taker, choices)
    assert taker.mem_array() == copier.mem_array()
    assert taker.event_tuples() == copier.event_tuples()
    assert taker.violations == copier.violations


@SETTINGS
@given(text=scenario_texts(max_actors=3, max_ops=3, max_maps=4), choices=schedules(40))
def test_final_states_read_a_chunk_of_leaves_at_a_time_are_those_read_at_once(text, choices):
    spec = build_spec(parse_scenario(text, "generated.toml"))
    m = new_machine(spec, "cython")
    _step(m, choices)
    whole = Observer(spec)
    key = whole(m)
    chunked = Observer(spec)
    chunked.chunks = chunked_runs([(mp.ipa, mp.count, mp.size) for mp in spec.scenario.maps], 3)
    chunked.leaves_count = report.LEAVES_LISTED_MAX + 1  # (a listing reads them at once)
    assert chunked(m) == key
    assert chunked.info[key]["summary"] == whole.info[key]["summary"]
    assert chunked.info[key]["preds"] == whole.info[key]["preds"]


def test_runs_of_leaves_are_split_into_chunks_in_order():
    assert chunked_runs([(0, 5, 4096), (0x10000, 2, 0x200000)], 3) == [
        [(0, 3, 4096)],
        [(3 * 4096, 2, 4096), (0x10000, 1, 0x200000)],
        [(0x210000, 1, 0x200000)],
    ]
    assert chunked_runs([], 3) == [[]]


def test_a_walk_that_leaves_table_memory_is_an_error_not_a_wild_read():
    mem = new_machine(build_spec(parse_scenario(_ONE_PAGE, "one.toml")), "cython").mem_array()
    mem[0] = B.DESC_VALID | B.DESC_TYPE | (B.TABLE_BASE + (1 << 30))  # a table far away
    with pytest.raises(IndexError, match="left table memory"):
        _leaves.walk_maps(mem, 1, 2, [(0, 1, B.PAGE_SIZE)])


_ONE_PAGE = """
name = "one page"
kernel = "seed"
[[map]]
ipa = 0x0
pa = 0x4000_0000
[[actor]]
name = "vcpu0"
kind = "vcpu"
do = ["read 0x0"]
"""
