"""Schedules held as runs (engine/schedules.py, RunLength) are the list of names they
stand for, to every reader: length, order, indexing, concatenation, the folded line and
the JSON (a list up to SCHEDULE_LISTED_MAX steps, runs past it)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from engine.schedules import SCHEDULE_LISTED_MAX, RunLength, compact_json, fold, rle

RUNS = st.lists(st.tuples(st.sampled_from(["host0", "vcpu0", "vcpu1"]), st.integers(0, 30)))


@given(runs=RUNS, index=st.integers(-200, 200))
def test_a_run_length_schedule_reads_as_its_list(runs, index):
    plain = [name for name, n in runs for _ in range(n)]
    held = RunLength([list(r) for r in runs])
    assert len(held) == len(plain) and list(held) == plain and held == plain
    assert rle(held) == rle(plain)  # adjacent runs of one actor are merged
    assert fold(held) == fold(plain)
    assert held + ["x"] == plain + ["x"] and ["x"] + held == ["x"] + plain
    if -len(plain) <= index < len(plain):
        assert held[index] == plain[index]


def test_json_lists_a_short_schedule_and_runs_a_long_one():
    short = RunLength([["host0", 3], ["vcpu0", 1]])
    long = RunLength([["host0", SCHEDULE_LISTED_MAX], ["vcpu0", 1]])
    out = compact_json({"schedule": short, "final_states": [{"example_schedule": long}]})
    assert out["schedule"] == ["host0"] * 3 + ["vcpu0"]
    assert out["final_states"][0] == {
        "example_schedule_rle": [["host0", SCHEDULE_LISTED_MAX], ["vcpu0", 1]]
    }
