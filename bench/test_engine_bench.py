"""The benchmark code runs, and its C baseline does the same work as the Cython core.

Not a benchmark (nothing here is timed): `make bench` is. The C loop (bench._baseline) is
only a fair yardstick if it performs the same micro-steps as the core, so this checks, on
small tables that cross level-2 and level-1 boundaries and mix leaves each operation
changes with leaves it skips, that it writes the same event records (all but the pc,
which a loop without a program does not have) and leaves the same table memory.
"""

from __future__ import annotations

import json
from array import array

import pytest

from bench import _baseline
from bench import engine as bench
from engine.core import machine_class

KERNELS = ("v4.6", "seed", "v6.6")
OPS = ("wp", "age")
START = 0xBFF0_0000  # 256 leaves below the 3 GiB level-1 boundary
PAGE = 4096


def _scenario(kernel: str, op: str, ipa: int, size: int) -> str:
    """768 leaves from START: 300 young and writable, then 468 old and read-only."""
    second = START + 300 * PAGE
    return f"""
name = "baseline check"
kernel = "{kernel}"
[[map]]
ipa = {START:#x}
pa = 0x4000_0000
count = 300
[[map]]
ipa = {second:#x}
pa = {0x4000_0000 + 300 * PAGE:#x}
count = 468
s2ap = "ro"
af = false
[[actor]]
name = "host0"
kind = "host"
do = ["{op} {ipa:#x} {size}"]
"""


def _without_pc(events):
    return [e[:3] + e[4:] for e in events]


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize(
    ("ipa", "leaves"),
    [(START, 768), (START + 5 * PAGE, 700)],
    ids=["whole", "inner"],
)
def test_baseline_does_what_the_core_does(kernel, op, ipa, leaves):
    spec = bench.spec_of(_scenario(kernel, op, ipa, leaves * PAGE))
    machine = machine_class("cython")(spec)
    steps = machine.run_round_robin()
    core_events = machine.event_tuples()
    assert steps == len(core_events) > leaves

    mem = array("Q", spec.mem)
    g = spec.geometry
    n, ns, _young, _check = _baseline.bulk(
        mem,
        bench.BASELINE_KERNEL[kernel],
        bench.BASELINE_WORK[op],
        ipa,
        ipa + leaves * PAGE,
        g.start_level,
        g.start_entries,
    )
    assert n == len(core_events)
    assert ns >= 0
    assert mem == machine.mem_array()
    assert mem != spec.mem  # the op changed something
    assert _without_pc(_baseline.events()) == _without_pc(core_events)


def test_baseline_refuses_what_it_does_not_model():
    """A range with a hole in it is not a fully mapped run of 4K pages."""
    spec = bench.spec_of(_scenario("seed", "wp", START, 768 * PAGE))
    mem = array("Q", spec.mem)
    g = spec.geometry
    with pytest.raises(ValueError, match="fully mapped"):
        _baseline.bulk(mem, 1, 0, START, START + 1024 * PAGE, g.start_level, g.start_entries)
    assert _baseline.EVENT_SIZE == 56


def test_bench_runs_on_a_tiny_workload():
    results = bench.run(bench.QUICK)
    assert results.throughput.steps > 0
    assert results.throughput.cython_s > 0 and results.throughput.twin_s > 0
    assert [(b.kernel, b.op) for b in results.bulk] == [(k, o) for k in KERNELS for o in OPS]
    for b in results.bulk:
        assert b.same_events and b.same_tables, (b.kernel, b.op)
        assert b.events > 2 * b.leaves
    assert all(e.states > 0 and e.interleavings > 0 for e in results.explore)
    assert [x.engine for x in results.latency] == ["cython", "python"]
    text = bench.render(results)
    for heading in ("Micro-steps per second", "Bulk wp / age", "plain C loop", "Explorer"):
        assert heading in text
    data = json.loads(json.dumps(results.to_json()))
    assert data["bulk"][0]["events_per_leaf"] == pytest.approx(
        results.bulk[0].events / results.bulk[0].leaves
    )


def test_main_prints_json(capsys):
    assert bench.main(["--json", "--quick"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert set(data) == {"config", "host", "throughput", "bulk", "explore", "latency"}
