"""A final state is read a table run at a time (report.map_values): it is exactly the
descriptor walk_image finds for each leaf, whatever the operations did to the tables
(invalidated entries, blocks, unmapped ranges); its summary rows count the same bits as
leaf_fields reads, descriptor by descriptor."""

from __future__ import annotations

from array import array
from collections import Counter

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.core import new_machine
from engine.report import ROW_BITS, map_values, row_bits_counts
from engine.scenario import parse_scenario
from engine.spec import build_spec, walk_image
from tests.strategies import scenario_texts, schedules


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    text=scenario_texts(max_actors=2, max_ops=3, max_maps=4, small=True),
    choices=schedules(300),
)
def test_map_values_is_walk_image_of_every_leaf(text, choices):
    spec = build_spec(parse_scenario(text, "generated.toml"))
    m = new_machine(spec, "cython")
    for choice in choices:
        enabled = m.enabled()
        if m.all_done() or not enabled:
            break
        m.step(enabled[choice % len(enabled)])
    mem, g = m.mem_array(), spec.geometry
    for mp in spec.scenario.maps:
        walked = [walk_image(mem, g, ipa)[0] for ipa, _pa in mp.leaves()]
        assert list(map_values(mem, g, mp)) == walked


@given(st.lists(st.integers(0, 2**64 - 1), max_size=300))
def test_summary_rows_count_the_row_bits_of_every_descriptor(descs):
    values = array("Q", descs)
    assert row_bits_counts(values) == Counter(d & ROW_BITS for d in descs)
