"""`make bench-explore`: the explorer's states per CPU-second and bytes per state.

    python -m bench.explore [--json] [--large] [--max-states N]

Each exploration runs in a process of its own (`python -m bench.explore --child ...`), so
its peak RSS is its own; bytes per state is that peak less the peak of the same process
stopped just before exploring (scenario parsed, machine built), over the states found.

Cases: the engine benchmark's three-actor scenarios (two vCPUs and a host write-protecting
two leaves; bench/engine.py, explore_spec), and with `--large` the review's "family 1"
scenarios with five and six actors (two old leaves A and B; vcpu0 writes A, host0
write-protects both, vcpu1 reads B, host1 ages both, vcpu2 writes B, host2 makes B
read-only, and for seven vcpu3 reads A): 0.15 to 14.9 million states. Baseline in the same run: the Python twin on the
small cases (the same search over the pure-Python core).
"""

from __future__ import annotations

import argparse
import json
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


def measure(case: str, engine: str, max_states: int, reps: int) -> Row:
    best = None
    for _ in range(reps):
        out = subprocess.run(
            [sys.executable, "-m", "bench.explore", "--child", case, engine, str(max_states)],
            cwd=ROOT,
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        row = Row(**json.loads(out))
        if best is None or row.cpu_s < best.cpu_s:
            best = row
    return best


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.explore", description=__doc__.split("\n")[0])
    p.add_argument("--json", action="store_true")
    p.add_argument("--large", action="store_true", help="also five to seven actors (minutes)")
    p.add_argument("--max-states", type=int, default=30_000_000)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        case, engine, max_states = args.child
        print(json.dumps(child(case, engine, int(max_states))))
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
        rows.append(measure(case, "cython", args.max_states, args.reps if not twin else args.reps))
        if twin:
            rows.append(measure(case, "python", args.max_states, 1))
    if args.json:
        print(json.dumps({"host": host_info(), "rows": [asdict(r) for r in rows]}, indent=1))
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
    return 0


if __name__ == "__main__":
    sys.exit(main())
