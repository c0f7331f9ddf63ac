"""`make bench`: how fast the engine runs, next to its pure-Python twin and a plain C loop.

    python -m bench.engine [--json] [--quick]

Five measurements, printed as one table each (`--json`: one object):

1. throughput: micro-steps per second of the Cython core and of the Python twin on the
   same workload (seed kernel: a host write-protecting a run of 4K leaves while a vCPU reads
   and writes some of them), both run with `Machine.run_round_robin()`.
2. bulk: `wp` and `age` over 1,048,576 4K leaves (a 4 GiB guest) for every kernel
   generation on the Cython core, with event recording on as the engine normally runs.
   Only the run is timed (the image build is shown apart). "cold" is a fresh machine, whose
   event buffer grows during the run (the normal case: its pages are first touched then);
   "warm" is the same machine reset to its start with `set_state`, the buffer already grown.
3. the same bulk work done by a plain C loop (bench/_baseline.c, module bench._baseline)
   over a copy of the same table memory: the same walk, loads, exclusives and stores, one
   56-byte event record per micro-step, cold (a fresh buffer) and warm (pre-touched). The
   benchmark checks that the C loop wrote as many records as the core and left the same
   table memory behind.
4. explore: the explorer's states per second on three-actor scenarios, both cores.
5. latency: one `Machine.step()` call from Python, p50/p99, both cores.

Each timing is the best of a few repetitions (`reps`). Benchmarks are not part of the test
run (bench/test_engine_bench.py only checks that this code runs, on a tiny workload).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from array import array
from collections.abc import Callable
from dataclasses import asdict, dataclass

from bench import _baseline
from engine.core import machine_class
from engine.explore import explore
from engine.report import Observer
from engine.scenario import parse_scenario
from engine.spec import MachineSpec, build_spec

KERNELS = ("v4.6", "seed", "v6.6")
BULK_OPS = ("wp", "age")
BASELINE_KERNEL = {"v4.6": 0, "seed": 1, "v6.6": 2}
BASELINE_WORK = {"wp": 0, "age": 1}
BASE_IPA = 0x8000_0000
BASE_PA = 0x4000_0000
PAGE = 4096


@dataclass(frozen=True)
class Config:
    reps: int = 5  # repetitions of each timed run (best is reported)
    bulk_leaves: int = 1 << 20  # 4 GiB of 4K leaves
    throughput_leaves: int = 98_304  # sized so the twin runs for ~1-3 s
    throughput_vcpu_ops: int = 4096
    min_seconds: float = 0.3  # the Cython throughput run repeats until this much time
    explore_scenarios: tuple[tuple[str, int], ...] = (("v4.6", 1), ("seed", 1), ("seed", 2))
    latency_leaves: int = 4096
    latency_steps: int = 20_000


QUICK = Config(
    reps=1,
    bulk_leaves=2048,
    throughput_leaves=1024,
    throughput_vcpu_ops=64,
    min_seconds=0.0,
    explore_scenarios=(("seed", 1),),
    latency_leaves=256,
    latency_steps=500,
)


# --- scenarios -----------------------------------------------------------------------------


def _toml_list(items: list[str]) -> str:
    return "[" + ", ".join(f'"{item}"' for item in items) + "]"


def scenario_text(
    kernel: str, leaves: int, actors: list[tuple[str, str, list[str]]], af: bool = True
) -> str:
    """One [[map]] of `leaves` 4K leaves at BASE_IPA and the given (name, kind, ops) actors."""
    lines = [
        f'name = "bench: {kernel}, {leaves} leaves"',
        f'kernel = "{kernel}"',
        "[[map]]",
        f"ipa = {BASE_IPA:#x}",
        f"pa = {BASE_PA:#x}",
        f"count = {leaves}",
        f"af = {'true' if af else 'false'}",
    ]
    for name, kind, ops in actors:
        lines += ["[[actor]]", f'name = "{name}"', f'kind = "{kind}"', f"do = {_toml_list(ops)}"]
    return "\n".join(lines) + "\n"


def spec_of(text: str) -> MachineSpec:
    return build_spec(parse_scenario(text, "<bench>"))


def mixed_spec(leaves: int, vcpu_ops: int) -> MachineSpec:
    """Seed kernel: host0 write-protects every leaf while vcpu0 reads and writes some
    (spread over the range; the leaves start old, so reads make the walker set AF)."""
    stride = max(1, leaves // max(1, vcpu_ops))
    ops = [
        f"{'write' if k % 2 else 'read'} {BASE_IPA + (k * stride % leaves) * PAGE:#x}"
        for k in range(vcpu_ops)
    ]
    actors = [("vcpu0", "vcpu", ops), ("host0", "host", [f"wp {BASE_IPA:#x} {leaves * PAGE}"])]
    return spec_of(scenario_text("seed", leaves, actors, af=False))


def bulk_spec(kernel: str, op: str, leaves: int) -> MachineSpec:
    actors = [("host0", "host", [f"{op} {BASE_IPA:#x} {leaves * PAGE}"])]
    return spec_of(scenario_text(kernel, leaves, actors))


def explore_spec(kernel: str, ops_each: int) -> MachineSpec:
    """vcpu0 writes page 0, vcpu1 reads page 1, host0 write-protects both (ops_each = 2: the
    vCPUs then also touch the other page)."""
    a, b = f"{BASE_IPA:#x}", f"{BASE_IPA + PAGE:#x}"
    vcpu0 = [f"write {a}", f"read {b}"][:ops_each]
    vcpu1 = [f"read {b}", f"write {a}"][:ops_each]
    actors = [
        ("vcpu0", "vcpu", vcpu0),
        ("vcpu1", "vcpu", vcpu1),
        ("host0", "host", [f"wp {a} {2 * PAGE}"]),
    ]
    return spec_of(scenario_text(kernel, 2, actors, af=False))


# --- measurements -------------------------------------------------------------------------


def _run_timed(machine) -> tuple[int, float]:
    t0 = time.perf_counter()
    steps = machine.run_round_robin()
    return steps, time.perf_counter() - t0


@dataclass
class Throughput:
    workload: str
    steps: int
    cython_s: float
    cython_reps: int
    twin_s: float

    @property
    def cython_steps_per_s(self) -> float:
        return self.steps / self.cython_s

    @property
    def twin_steps_per_s(self) -> float:
        return self.steps / self.twin_s

    @property
    def ratio(self) -> float:
        return self.twin_s / self.cython_s


def measure_throughput(cfg: Config) -> Throughput:
    spec = mixed_spec(cfg.throughput_leaves, cfg.throughput_vcpu_ops)
    cython, twin = machine_class("cython"), machine_class("python")
    steps, twin_s = _run_timed(twin(spec))
    times: list[float] = []
    while len(times) < max(cfg.reps, 1) or sum(times) < cfg.min_seconds:
        n, seconds = _run_timed(cython(spec))
        if n != steps:
            raise AssertionError(f"throughput: the cores ran {n} and {steps} micro-steps")
        times.append(seconds)
    workload = (
        f"seed: host0 wp over {cfg.throughput_leaves:,} 4K leaves, "
        f"vcpu0 {cfg.throughput_vcpu_ops:,} reads/writes"
    )
    return Throughput(workload, steps, min(times), len(times), twin_s)


@dataclass
class Bulk:
    kernel: str
    op: str
    leaves: int
    build_s: float  # scenario -> spec (table image), not part of any run time
    events: int  # micro-steps = event records (Cython core)
    cython_cold_s: float
    cython_warm_s: float
    c_cold_s: float
    c_warm_s: float
    same_events: bool  # the C loop wrote as many records as the core
    same_tables: bool  # ... and left the same table memory

    @property
    def events_per_leaf(self) -> float:
        return self.events / self.leaves


def baseline_run(spec: MachineSpec, op: str, leaves: int, warm: bool = False):
    """The C loop over a fresh copy of `spec`'s table memory: (events, seconds, memory)."""
    mem = array("Q", spec.mem)
    g = spec.geometry
    events, ns, _young, _check = _baseline.bulk(
        mem,
        BASELINE_KERNEL[spec.scenario.kernel],
        BASELINE_WORK[op],
        BASE_IPA,
        BASE_IPA + leaves * PAGE,
        g.start_level,
        g.start_entries,
        warm=warm,
    )
    return events, ns * 1e-9, mem


def measure_bulk(kernel: str, op: str, cfg: Config) -> Bulk:
    cython = machine_class("cython")
    t0 = time.perf_counter()
    spec = bulk_spec(kernel, op, cfg.bulk_leaves)
    build_s = time.perf_counter() - t0
    cold, warm = [], []
    for _ in range(max(cfg.reps, 1)):
        machine = cython(spec)
        start = machine.get_state()
        events, seconds = _run_timed(machine)
        cold.append(seconds)
        machine.set_state(start)  # back to the start; the event buffer keeps its size
        again, seconds = _run_timed(machine)
        warm.append(seconds)
        if again != events or machine.n_events_recorded != events:
            raise AssertionError(f"bulk {kernel} {op}: runs disagree ({events}, {again})")
        final = machine.mem_array()
        del machine
    c_cold, c_warm = [], []
    same_events = same_tables = True
    for _ in range(max(cfg.reps, 1)):
        for warm_flag, times in ((False, c_cold), (True, c_warm)):
            n, seconds, mem = baseline_run(spec, op, cfg.bulk_leaves, warm=warm_flag)
            times.append(seconds)
            same_events &= n == events
            same_tables &= mem == final
    return Bulk(
        kernel,
        op,
        cfg.bulk_leaves,
        build_s,
        events,
        min(cold),
        min(warm),
        min(c_cold),
        min(c_warm),
        same_events,
        same_tables,
    )


@dataclass
class Explore:
    kernel: str
    scenario: str
    states: int
    interleavings: int
    cython_s: float
    twin_s: float

    @property
    def cython_states_per_s(self) -> float:
        return self.states / self.cython_s

    @property
    def twin_states_per_s(self) -> float:
        return self.states / self.twin_s


def measure_explore(kernel: str, ops_each: int, cfg: Config) -> Explore:
    spec = explore_spec(kernel, ops_each)
    results = {}
    for engine in ("cython", "python"):
        cls = machine_class(engine)
        times: list[float] = []
        reps = max(cfg.reps, 1) if engine == "cython" else 1
        while len(times) < reps or (engine == "cython" and sum(times) < cfg.min_seconds):
            machine = cls(spec)
            t0 = time.perf_counter()
            ex = explore(machine, Observer(spec), progress=False)
            times.append(time.perf_counter() - t0)
        results[engine] = (ex.states, ex.interleavings, min(times))
    (states, inter, cython_s), (states2, inter2, twin_s) = results["cython"], results["python"]
    if (states, inter) != (states2, inter2):
        raise AssertionError(f"explore {kernel}: the cores disagree ({results})")
    what = "vcpu0 write, vcpu1 read" if ops_each == 1 else "vcpu0 write+read, vcpu1 read+write"
    return Explore(kernel, f"{what}; host0 wp 2 leaves", states, inter, cython_s, twin_s)


@dataclass
class Latency:
    engine: str
    calls: int
    p50_us: float
    p99_us: float
    mean_us: float
    timer_us: float  # the cost of the clock reads around each call


def _percentile(sorted_values: list[int], q: float) -> int:
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))]


def measure_latency(engine: str, cfg: Config) -> Latency:
    """Time each Machine.step() call of a Python round-robin over the mixed workload."""
    spec = mixed_spec(cfg.latency_leaves, max(1, cfg.latency_leaves // 8))
    cls = machine_class(engine)
    clock = time.perf_counter_ns
    samples: list[int] = []
    machine = cls(spec)
    n = len(spec.actors)
    while len(samples) < cfg.latency_steps:
        if machine.all_done():
            machine = cls(spec)
        for i in range(n):
            if machine.done(i) or machine.blocked(i):
                continue
            t0 = clock()
            machine.step(i)
            samples.append(clock() - t0)
    overhead = []
    for _ in range(2000):
        t0 = clock()
        overhead.append(clock() - t0)
    samples.sort()
    overhead.sort()
    return Latency(
        engine,
        len(samples),
        _percentile(samples, 0.50) / 1000,
        _percentile(samples, 0.99) / 1000,
        sum(samples) / len(samples) / 1000,
        _percentile(overhead, 0.50) / 1000,
    )


# --- the report -----------------------------------------------------------------------------


@dataclass
class Results:
    config: Config
    host: dict
    throughput: Throughput
    bulk: list[Bulk]
    explore: list[Explore]
    latency: list[Latency]

    def to_json(self) -> dict:
        t = self.throughput
        return {
            "config": asdict(self.config),
            "host": self.host,
            "throughput": {
                **asdict(t),
                "cython_steps_per_s": t.cython_steps_per_s,
                "twin_steps_per_s": t.twin_steps_per_s,
                "ratio": t.ratio,
            },
            "bulk": [
                {
                    **asdict(b),
                    "events_per_leaf": b.events_per_leaf,
                    "cython_cold_ns_per_leaf": b.cython_cold_s * 1e9 / b.leaves,
                    "cython_cold_ns_per_step": b.cython_cold_s * 1e9 / b.events,
                    "cython_warm_ns_per_step": b.cython_warm_s * 1e9 / b.events,
                    "c_cold_ns_per_leaf": b.c_cold_s * 1e9 / b.leaves,
                    "c_cold_ns_per_step": b.c_cold_s * 1e9 / b.events,
                    "c_warm_ns_per_step": b.c_warm_s * 1e9 / b.events,
                    "ratio_cold": b.cython_cold_s / b.c_cold_s,
                    "ratio_warm": b.cython_warm_s / b.c_warm_s,
                }
                for b in self.bulk
            ],
            "explore": [
                {
                    **asdict(e),
                    "cython_states_per_s": e.cython_states_per_s,
                    "twin_states_per_s": e.twin_states_per_s,
                }
                for e in self.explore
            ],
            "latency": [asdict(x) for x in self.latency],
        }


def format_table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(h), *(len(r[k]) for r in rows)) for k, h in enumerate(headers)]
    fmt = "  ".join(f"{{:>{w}}}" for w in widths)
    lines = [fmt.format(*headers), fmt.format(*("-" * w for w in widths))]
    lines += [fmt.format(*r) for r in rows]
    return "\n".join("  " + line for line in lines)


def format_rate(value: float) -> str:
    if value >= 1e6:
        return f"{value / 1e6:,.2f} M"
    if value >= 1e3:
        return f"{value / 1e3:,.1f} k"
    return f"{value:,.0f}"


def render(r: Results) -> str:
    out = [f"ptviz benchmarks ({r.host['cpu']}, {r.host['cpus']} CPUs, Python {r.host['python']})"]
    t = r.throughput
    out += [
        "",
        "1. Micro-steps per second, Machine.run_round_robin(), same workload on both cores",
        f"   {t.workload}: {t.steps:,} micro-steps",
        format_table(
            ["core", "seconds", "steps/s", "ns/step"],
            [
                [
                    "cython",
                    f"{t.cython_s:.4f}",
                    format_rate(t.cython_steps_per_s),
                    f"{t.cython_s * 1e9 / t.steps:.1f}",
                ],
                [
                    "python twin",
                    f"{t.twin_s:.3f}",
                    format_rate(t.twin_steps_per_s),
                    f"{t.twin_s * 1e9 / t.steps:.1f}",
                ],
            ],
        ),
        f"   cython / twin: {t.ratio:,.0f}x (target >= 100x)",
    ]
    if r.bulk:
        out += [
            "",
            f"2. Bulk wp / age over {r.bulk[0].leaves:,} 4K leaves, Cython core, one 56-byte event",
            "   record per micro-step (cold: a fresh machine, its event buffer grows during the",
            "   run, as the engine normally runs; warm: reset with set_state, buffer grown)",
            format_table(
                [
                    "kernel",
                    "op",
                    "build ms",
                    "steps/leaf",
                    "ms",
                    "ns/leaf",
                    "ns/step",
                    "warm ns/step",
                ],
                [
                    [
                        b.kernel,
                        b.op,
                        f"{b.build_s * 1e3:.0f}",
                        f"{b.events_per_leaf:.3f}",
                        f"{b.cython_cold_s * 1e3:.1f}",
                        f"{b.cython_cold_s * 1e9 / b.leaves:.1f}",
                        f"{b.cython_cold_s * 1e9 / b.events:.1f}",
                        f"{b.cython_warm_s * 1e9 / b.events:.1f}",
                    ]
                    for b in r.bulk
                ],
            ),
            "   (build: scenario -> table image, not timed in the run)",
            "",
            "3. The same work as a plain C loop (bench/_baseline.c, -O3): same walk, loads,",
            "   exclusives, stores and event records (cold: fresh buffer; warm: pre-touched)",
            format_table(
                [
                    "kernel",
                    "op",
                    "ms",
                    "ns/leaf",
                    "ns/step",
                    "warm ns/step",
                    "cython/C",
                    "warm cython/C",
                    "same",
                ],
                [
                    [
                        b.kernel,
                        b.op,
                        f"{b.c_cold_s * 1e3:.1f}",
                        f"{b.c_cold_s * 1e9 / b.leaves:.1f}",
                        f"{b.c_cold_s * 1e9 / b.events:.1f}",
                        f"{b.c_warm_s * 1e9 / b.events:.1f}",
                        f"{b.cython_cold_s / b.c_cold_s:.2f}x",
                        f"{b.cython_warm_s / b.c_warm_s:.2f}x",
                        "yes" if b.same_events and b.same_tables else "NO",
                    ]
                    for b in r.bulk
                ],
            ),
            "   cython/C: Cython core time over C loop time (target: within 3x); same: the C loop",
            "   wrote as many event records as the core and left identical table memory",
        ]
    out += [
        "",
        "4. Explorer (engine.explore.explore, final_key = engine.report.Observer)",
        format_table(
            [
                "kernel",
                "scenario",
                "states",
                "interleavings",
                "cython s",
                "states/s",
                "twin s",
                "states/s",
                "cython/twin",
            ],
            [
                [
                    e.kernel,
                    e.scenario,
                    f"{e.states:,}",
                    f"{e.interleavings:,}",
                    f"{e.cython_s:.4f}",
                    format_rate(e.cython_states_per_s),
                    f"{e.twin_s:.3f}",
                    format_rate(e.twin_states_per_s),
                    f"{e.twin_s / e.cython_s:.0f}x",
                ]
                for e in r.explore
            ],
        ),
        "",
        "5. Latency of one Machine.step() call from Python (mixed seed workload)",
        format_table(
            ["core", "calls", "p50 us", "p99 us", "mean us", "clock us"],
            [
                [
                    x.engine,
                    f"{x.calls:,}",
                    f"{x.p50_us:.2f}",
                    f"{x.p99_us:.2f}",
                    f"{x.mean_us:.2f}",
                    f"{x.timer_us:.3f}",
                ]
                for x in r.latency
            ],
        ),
        "   (clock = the cost of the two clock reads around each call, included above)",
    ]
    return "\n".join(out)


def host_info() -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {"cpu": cpu, "cpus": os.cpu_count(), "python": platform.python_version()}


def run(cfg: Config, log: Callable[[str], None] = lambda _msg: None) -> Results:
    log("throughput ...")
    throughput = measure_throughput(cfg)
    bulk = []
    for kernel in KERNELS:
        for op in BULK_OPS:
            log(f"bulk {kernel} {op} ...")
            bulk.append(measure_bulk(kernel, op, cfg))
    explored = []
    for kernel, ops_each in cfg.explore_scenarios:
        log(f"explore {kernel} ...")
        explored.append(measure_explore(kernel, ops_each, cfg))
    log("latency ...")
    latency = [measure_latency(engine, cfg) for engine in ("cython", "python")]
    return Results(cfg, host_info(), throughput, bulk, explored, latency)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.engine", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--quick", action="store_true", help="tiny workloads (a smoke run)")
    args = parser.parse_args(argv)
    cfg = QUICK if args.quick else Config()
    progress = sys.stderr.isatty() and not args.json

    def log(msg: str) -> None:
        if progress:
            print(f"\r{msg:<40}", end="", file=sys.stderr, flush=True)

    results = run(cfg, log)
    if progress:
        print("\r" + " " * 40 + "\r", end="", file=sys.stderr, flush=True)
    if args.json:
        print(json.dumps(results.to_json(), indent=2))
    else:
        print(render(results))
    ok = all(b.same_events and b.same_tables for b in results.bulk)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
