"""The web explorer against the CLI on the same scenario (issue 6, defect 5: 19.4 s in the
web vs 7.3 s in the CLI before the explorer dropped its per-call probe).

    python bench/ux_explore.py [--repeat N]

Measures, in one run and on one scenario (three vCPU/host actors, 364,952 states):
the CLI (`python -m engine explore FILE --json`, a subprocess: its wall time), and the web
explorer's job (ptviz.engine_worker.explorer.ExploreJob on a live session at position 0,
in this process: from start to result), and as a baseline the explorer as it was before
(a Python probe object around the machine), each the best of N runs.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SCENARIO = """
name = "three actors, four pages (explorer benchmark)"
kernel = "seed"
[[map]]
ipa = 0x8000_0000
pa = 0x4000_0000
count = 4
af = false
[[actor]]
name = "vcpu0"
kind = "vcpu"
do = ["read 0x8000_0000", "write 0x8000_1000", "read 0x8000_2000"]
[[actor]]
name = "vcpu1"
kind = "vcpu"
do = ["write 0x8000_2000", "read 0x8000_3000", "write 0x8000_0000"]
[[actor]]
name = "host0"
kind = "host"
do = ["wp 0x8000_0000 16K", "age 0x8000_0000 16K"]
"""


def cli_seconds(path: Path) -> float:
    start = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "engine", "explore", str(path), "--json"],
        cwd=ROOT,
        check=False,
        capture_output=True,
    )
    return time.perf_counter() - start


def web_seconds() -> tuple[float, int]:
    from engine.session import LiveSession
    from ptviz.engine_worker.explorer import ExploreJob

    live = LiveSession(SCENARIO)
    start = time.perf_counter()
    job = ExploreJob(live, 2_000_000, None, None).start()
    job.join()
    took = time.perf_counter() - start
    assert job.result is not None, job.error
    return took, job.result["states"]


class _OldProbe:
    """The web explorer before issue 6 (for the baseline): a Python object around the
    machine counting every state_key/save/release call, through __getattr__."""

    def __init__(self, machine):
        object.__setattr__(self, "_m", machine)
        object.__setattr__(self, "visited", 0)
        object.__setattr__(self, "depth", 0)

    def __getattr__(self, name):
        return getattr(self._m, name)

    def __setattr__(self, name, value):
        setattr(self._m, name, value)

    def state_key(self):
        object.__setattr__(self, "visited", self.visited + 1)
        return self._m.state_key()

    def save(self):
        object.__setattr__(self, "depth", self.depth + 1)
        return self._m.save()

    def release(self, mark):
        object.__setattr__(self, "depth", self.depth - 1)
        return self._m.release(mark)


def old_probe_seconds() -> float:
    from engine.core import new_machine
    from engine.report import explore_json
    from engine.scenario import parse_scenario
    from engine.spec import build_spec

    spec = build_spec(parse_scenario(SCENARIO))
    start = time.perf_counter()
    explore_json(spec, "cython", 2_000_000, _OldProbe(new_machine(spec, "cython")))
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bench.toml"
        path.write_text(SCENARIO)
        cli = min(cli_seconds(path) for _ in range(args.repeat))
        runs = [web_seconds() for _ in range(args.repeat)]
        old = min(old_probe_seconds() for _ in range(args.repeat))
    web = min(t for t, _ in runs)
    states = runs[0][1]
    print(f"explore, {states:,} states, best of {args.repeat}")
    print(f"  CLI (python -m engine explore --json, subprocess) {cli:6.2f} s")
    print(
        f"  web explorer job (ExploreJob, in-process)         {web:6.2f} s  ({web / cli:.2f}x the CLI)"
    )
    print(
        f"  the web explorer before (a probe around the machine) {old:6.2f} s  ({old / cli:.2f}x the CLI)"
    )


if __name__ == "__main__":
    main()
