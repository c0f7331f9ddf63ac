"""`make bench-explore`: the explorer's states per CPU-second and bytes per state.

    python -m bench.explore [--json] [--large] [--max-states N] [--jobs N] [--against DIR]

Each exploration runs in a process of its own (`python -m bench.explore --child ...`), so
its peak RSS is its own; bytes per state is that peak less the peak of the same process
stopped just before exploring (scenario parsed, machine built), over the states found.

Cases: the engine benchmark's three-actor scenarios (two vCPUs and a host write-protecting
two leaves; bench/engine.py, explore_spec), and with `--large` the review's "family 1"
scenarios with five and six actors (two old leaves A and B; vcpu0 writes A, host0
write-protects both, vcpu1 reads B, host1 ages both, vcpu2 writes B, host2 makes B
read-only, and for seven vcpu3 reads A): 0.15 to 14.9 million states. Baseline in the same run: the Python twin on the
small cases (the same search over the pure-Python core), and with `--against DIR` the
explorer of another built checkout (e.g. main's), run from there on the same cases.

Parallel (`explore --jobs N`, default 2): wall-clock seconds of the serial explorer and of
N processes on the PARALLEL_CASES, best of --reps each, and their CPU seconds (the
processes' included); each exploration's results are digested (states, interleavings,
cycles, final states with counts, example schedules and node ids, counterexamples and
their counts) and the two digests must be equal. On a shared machine the wall-clock
speed-up is bounded by the CPUs the other load leaves; the CPU path (the parent's own CPU
seconds plus its busiest worker's) is what the wall time would be with a CPU each, and
serial CPU over it the speed-up then.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from bench.engine import (
    BASE_IPA,
    PAGE,
    explore_spec,
    format_rate,
    format_table,
    host_info,
    scenario_text,
    spec_of,
)

ROOT = Path(__file__).resolve().parents[1]

FAMILY1 = [
    ("vcpu0", "vcpu", ["write {a}"]),
    ("host0", "host", ["wp {a} 8K"]),
    ("vcpu1", "vcpu", ["read {b}"]),
    ("host1", "host", ["age {a} 8K"]),
    ("vcpu2", "vcpu", ["write {b}"]),
    ("host2", "host", ["set_readonly {b}"]),
    ("vcpu3", "vcpu", ["read {a}"]),  # (seven actors: the 10M-state case)
]


def family1_spec(kernel: str, actors: int):
    a, b = f"{BASE_IPA:#x}", f"{BASE_IPA + PAGE:#x}"
    chosen = [(n, k, [op.format(a=a, b=b) for op in ops]) for n, k, ops in FAMILY1[:actors]]
    return spec_of(scenario_text(kernel, 2, chosen, af=False))


def case_spec(case: str):
    family, kernel, n = case.split(":")
    if family == "bench":
        return explore_spec(kernel, int(n))
    return family1_spec(kernel, int(n))


@dataclass
class Row:
    case: str
    engine: str
    states: int
    interleavings: int
    cpu_s: float
    rss_before: int
    rss_after: int

    @property
    def per_cpu_s(self) -> float:
        return self.states / self.cpu_s

    @property
    def bytes_per_state(self) -> float:
        return (self.rss_after - self.rss_before) / self.states


# Mid-size cases for the parallel speed-up: large enough to amortise the fork.
PARALLEL_CASES = ["family1:v6.6:5", "family1:v4.6:5"]


def child(case: str, engine: str, max_states: int) -> dict:
    from engine.core import new_machine
    from engine.explore import explore
    from engine.report import Observer

    spec = case_spec(case)
    machine = new_machine(spec, engine)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    t0 = time.process_time()
    ex = explore(machine, Observer(spec), max_states=max_states, progress=False)
    cpu = time.process_time() - t0
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return asdict(Row(case, engine, ex.states, ex.interleavings, cpu, before, after))


def digest(ex) -> str:
    """Everything an exploration reports, hashed (serial and parallel must agree)."""
    parts = [
        ex.states,
        ex.interleavings,
        ex.cycles,
        [(f.key.hex(), f.count, list(f.schedule), f.node) for f in ex.finals],
        [
            (n, v.ipa, v.bits, v.actor, v.op_index, list(v.schedule))
            for n, v in ex.violations.items()
        ],
        sorted(ex.violation_counts.items()),
    ]
    return hashlib.sha256(repr(parts).encode()).hexdigest()[:16]


def parallel_child(case: str, jobs: int, max_states: int) -> dict:
    from engine.core import new_machine
    from engine.explore import explore
    from engine.report import Observer

    spec = case_spec(case)
    machine = new_machine(spec, "cython")
    t0, c0 = time.perf_counter(), os.times()
    ex = explore(machine, Observer(spec), max_states=max_states, progress=False, jobs=jobs)
    wall, c1 = time.perf_counter() - t0, os.times()
    cpu = sum(c1[:4]) - sum(c0[:4])  # (the worker processes' CPU included)
    # The longest chain of CPU work: this process's own, plus its busiest worker's.
    path = sum(c1[:2]) - sum(c0[:2]) + max(ex.worker_cpu_s, default=0.0)
    return {"states": ex.states, "wall_s": wall, "cpu_s": cpu, "path_s": path, "digest": digest(ex)}


def _child_run(args: list[str], cwd: Path = ROOT) -> dict:
    # (another checkout is only read: no __pycache__ written into it)
    env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1") if cwd != ROOT else None
    out = subprocess.run(
        [sys.executable, "-m", "bench.explore", *args],
        cwd=cwd,
        env=env,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return json.loads(out)


def measure(case: str, engine: str, max_states: int, reps: int, tree: Path = ROOT) -> Row:
    best = None
    for _ in range(reps):
        row = Row(**_child_run(["--child", case, engine, str(max_states)], tree))
        if best is None or row.cpu_s < best.cpu_s:
            best = row
    if tree != ROOT:
        best.engine = f"{engine} ({tree.name})"
    return best


def measure_parallel(case: str, jobs: int, max_states: int, reps: int) -> dict:
    """Best wall time of each, serial then parallel alternating (the load drifts)."""
    best: dict[int, dict] = {}
    for _ in range(reps):
        for n in (1, jobs):
            run = _child_run(["--parallel-child", case, str(n), str(max_states)])
            if n not in best or run["wall_s"] < best[n]["wall_s"]:
                best[n] = run
    serial, par = best[1], best[jobs]
    if serial["digest"] != par["digest"]:
        raise SystemExit(f"{case}: --jobs {jobs} results differ from the serial ones")
    return {"case": case, "jobs": jobs, "serial": serial, "parallel": par}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.explore", description=__doc__.split("\n")[0])
    p.add_argument("--json", action="store_true")
    p.add_argument("--large", action="store_true", help="also five to seven actors (minutes)")
    p.add_argument("--max-states", type=int, default=30_000_000)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--jobs", type=int, default=2, help="processes of the parallel rows")
    p.add_argument("--against", type=Path, help="also the explorer of this built checkout")
    p.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    p.add_argument("--parallel-child", nargs=3, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        case, engine, max_states = args.child
        print(json.dumps(child(case, engine, int(max_states))))
        return 0
    if args.parallel_child:
        case, jobs, max_states = args.parallel_child
        print(json.dumps(parallel_child(case, int(jobs), int(max_states))))
        return 0
    cases = [("bench:v4.6:1", 1), ("bench:seed:1", 1), ("bench:seed:2", 1)]
    if args.large:
        cases += [
            ("family1:v6.6:5", 0),
            ("family1:v4.6:5", 0),
            ("family1:v4.6:6", 0),
            ("family1:v6.6:7", 0),  # 14.9M states: the "a 10M-state exploration"
        ]
    rows = []
    for case, twin in cases:
        rows.append(measure(case, "cython", args.max_states, args.reps))
        if args.against:
            rows.append(measure(case, "cython", args.max_states, args.reps, args.against.resolve()))
        if twin:
            rows.append(measure(case, "python", args.max_states, 1))
    parallel = [measure_parallel(c, args.jobs, args.max_states, args.reps) for c in PARALLEL_CASES]
    if args.json:
        out = {"host": host_info(), "rows": [asdict(r) for r in rows], "parallel": parallel}
        print(json.dumps(out, indent=1))
        return 0
    h = host_info()
    print(f"explorer ({h['cpu']}, {h['cpus']} CPUs, Python {h['python']}); best of {args.reps}")
    table = [
        [
            r.case,
            r.engine,
            f"{r.states:,}",
            f"{r.interleavings:.2e}",
            f"{r.cpu_s:,.2f}",
            format_rate(r.per_cpu_s),
            f"{r.bytes_per_state:,.0f}",
            f"{r.rss_after / 2**20:,.0f}",
        ]
        for r in rows
    ]
    heads = ["case", "engine", "states", "interleavings", "CPU s", "states/CPU-s", "B/state"]
    print(format_table(heads + ["peak RSS MiB"], table))
    print(
        f"\nexplore --jobs {args.jobs} (wall-clock s, best of {args.reps}; load average "
        f"{os.getloadavg()[0]:.1f} on {h['cpus']} CPUs; results digested and equal)"
    )
    table = [
        [
            p["case"],
            f"{p['serial']['states']:,}",
            f"{p['serial']['wall_s']:.2f}",
            f"{p['parallel']['wall_s']:.2f}",
            f"{p['serial']['wall_s'] / p['parallel']['wall_s']:.2f}x",
            f"{p['serial']['cpu_s']:.2f}",
            f"{p['parallel']['cpu_s']:.2f}",
            f"{p['parallel']['path_s']:.2f}",
            f"{p['serial']['cpu_s'] / p['parallel']['path_s']:.2f}x",
            p["parallel"]["digest"],
        ]
        for p in parallel
    ]
    heads = ["case", "states", "serial s", f"--jobs {args.jobs} s", "speed-up", "serial CPU s"]
    heads += [f"--jobs {args.jobs} CPU s", "CPU path s", "CPU-path speed-up", "results digest"]
    print(format_table(heads, table))
    return 0


if __name__ == "__main__":
    sys.exit(main())
