"""`make bench-callgrind`: instructions per micro-step of the Cython core, counted by
callgrind (counts do not move with the machine's load, unlike times).

    python -m bench.callgrind [--leaves N] [--kernels seed,v4.6,v6.6]

For each kernel: one host write-protects then ages N 4K leaves (default 16,384; the
engine benchmark's bulk work, smaller so valgrind finishes in seconds), run by
`Machine.run_round_robin()` inside `valgrind --tool=callgrind`, collecting only while
run_round_robin runs; and the plain C loop (bench/_baseline.c) doing the same
micro-steps, collecting only inside its loop. Prints Ir (instructions) per micro-step
of both, recording on (as the engine runs by default) and off (as `run` without a listed
trace runs). Target (issue 10): at most 150 per micro-step.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

from bench.engine import KERNELS, format_table

ROOT = Path(__file__).resolve().parents[1]
TARGET = 150


def child(kernel: str, leaves: int, what: str) -> int:
    """Runs inside valgrind: the work, printing its micro-steps."""
    from array import array

    from bench import _baseline
    from bench.cli import bulk_text
    from bench.engine import BASE_IPA, BASELINE_KERNEL, BASELINE_WORK, PAGE, spec_of
    from engine.core import machine_class

    spec = spec_of(bulk_text(kernel, leaves))
    if what == "c":
        mem = array("Q", spec.mem)
        g = spec.geometry
        steps = 0
        for op in ("wp", "age"):
            n, _ns, _y, _c = _baseline.bulk(
                mem,
                BASELINE_KERNEL[kernel],
                BASELINE_WORK[op],
                BASE_IPA,
                BASE_IPA + leaves * PAGE,
                g.start_level,
                g.start_entries,
            )
            steps += n
        return steps
    machine = machine_class("cython")(spec)
    machine.recording = what == "core"
    return machine.run_round_robin()


def count(kernel: str, leaves: int, what: str) -> tuple[int, int]:
    """(Ir inside the collected function, micro-steps)."""
    collect = "*bulk*" if what == "c" else "*run_round_robin*"
    with tempfile.TemporaryDirectory(prefix="ptviz-callgrind-") as d:
        out = Path(d) / "callgrind.out"
        proc = subprocess.run(
            [
                "valgrind",
                "--tool=callgrind",
                f"--callgrind-out-file={out}",
                f"--toggle-collect={collect}",
                sys.executable,
                "-m",
                "bench.callgrind",
                "--child",
                kernel,
                str(leaves),
                what,
            ],
            cwd=ROOT,
            check=True,
            capture_output=True,
            text=True,
        )
        steps = int(proc.stdout.strip().splitlines()[-1])
        m = re.search(r"^(?:summary|totals): (\d+)", out.read_text(), re.M)
        return int(m[1]), steps


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m bench.callgrind", description=__doc__.split("\n")[0]
    )
    p.add_argument("--leaves", type=int, default=16_384)
    p.add_argument("--kernels", default=",".join(KERNELS))
    p.add_argument("--json", action="store_true")
    p.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        kernel, leaves, what = args.child
        print(child(kernel, int(leaves), what))
        return 0
    rows = []
    for kernel in args.kernels.split(","):
        got = {what: count(kernel, args.leaves, what) for what in ("core", "core-norec", "c")}
        rows.append(
            {"kernel": kernel, "leaves": args.leaves}
            | {
                what: {"ir": ir, "steps": steps, "ir_per_step": ir / steps}
                for what, (ir, steps) in got.items()
            }
        )
    if args.json:
        print(json.dumps(rows, indent=1))
        return 0
    print(f"callgrind: instructions per micro-step, wp + age over {args.leaves:,} leaves")
    print(
        format_table(
            ["kernel", "micro-steps", "core Ir/step", "core, no recording", "C loop", "core/C"],
            [
                [
                    r["kernel"],
                    f"{r['core']['steps']:,}",
                    f"{r['core']['ir_per_step']:.0f}",
                    f"{r['core-norec']['ir_per_step']:.0f}",
                    f"{r['c']['ir_per_step']:.0f}",
                    f"{r['core']['ir_per_step'] / r['c']['ir_per_step']:.1f}x",
                ]
                for r in rows
            ],
        )
    )
    print(f"  target: at most {TARGET} per micro-step")
    return 0


if __name__ == "__main__":
    sys.exit(main())
