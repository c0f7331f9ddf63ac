"""Bundle sizes and import times (`make bench-bundle`, `python -m bench.bundle_bench`).

Each figure next to its baseline measured in the same run: the ptviz-recording/1 JSON
export of the same session (its size, and LiveSession.from_recording's import time).
Targets (issue 7): at most 100 KB per 10,000 decisions of a racy scenario; the 1 GiB
write-protect run (262,144 4K leaves, host `wp 0x8000_0000 1G` racing a vCPU) under
1 MB, imported in under 1 s.
"""

from __future__ import annotations

import argparse
import json
import platform
import time

from engine import bundle as BD
from engine.session import LiveSession

WP_1G = """
name = "wp 1 GiB racing a vCPU"
kernel = "seed"
[[map]]
ipa = 0x8000_0000
pa = 0x4000_0000
size = "4K"
count = 262144
af = false
[[actor]]
name = "vcpu0"
kind = "vcpu"
do = ["write 0x8000_0000", "read 0x9000_0000"]
[[actor]]
name = "host0"
kind = "host"
do = ["wp 0x8000_0000 1G"]
"""


def racy_scenario(pages: int = 2048) -> str:
    """Three CPUs on the same pages: a vCPU touching them, a host write-protecting and
    another aging them, scheduled at random: the worst case for run-length encoding."""
    touches = ", ".join(f'"write {0x8000_0000 + 4096 * k:#x}"' for k in range(0, pages, 2))
    return f"""
name = "racy: vCPU writes vs wp vs age"
kernel = "v4.6"
[machine]
ha = true
[[map]]
ipa = 0x8000_0000
pa = 0x4000_0000
size = "4K"
count = {pages}
af = false
[[actor]]
name = "vcpu0"
kind = "vcpu"
do = [{touches}]
[[actor]]
name = "host0"
kind = "host"
do = ["wp 0x8000_0000 {pages * 4}K"]
[[actor]]
name = "host1"
kind = "host"
do = ["age 0x8000_0000 {pages * 4}K"]
"""


def timed(fn, repeat: int = 3):
    best, out = None, None
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        dt = time.perf_counter() - t
        best = dt if best is None else min(best, dt)
    return best, out


def measure(title: str, text: str, mode: str, steps: int, repeat: int) -> dict:
    live = LiveSession(text)
    live.run(steps, mode=mode, seed=7)
    n = live.position
    build_s, bundle = timed(lambda: BD.from_session(live), repeat)
    data = BD.dumps(bundle)
    import_s, session = timed(lambda: BD.replay(BD.loads(data)), repeat)
    assert session.state_hash() == live.state_hash()
    rec = json.dumps(live.export()).encode()
    rec_import_s, _ = timed(lambda: LiveSession.from_recording(json.loads(rec)), 1)
    return {
        "session": title,
        "decisions": n,
        "bundle_bytes": len(data),
        "bundle_bytes_per_10k": len(data) * 10_000 / max(n, 1),
        "bundle_build_s": build_s,
        "bundle_import_s": import_s,
        "recording_bytes": len(rec),
        "recording_import_s": rec_import_s,
        "hash_points": len(bundle.hashes),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.bundle_bench", description=__doc__)
    p.add_argument("--json", action="store_true")
    p.add_argument("--quick", action="store_true", help="skip the 1 GiB run")
    args = p.parse_args(argv)
    rows = [measure("racy, 3 CPUs, random schedule", racy_scenario(), "random", 10_000, 3)]
    if not args.quick:
        rows.append(measure("wp 1 GiB racing a vCPU", WP_1G, "round_robin", 10**7, 2))
    if args.json:
        print(json.dumps(rows, indent=1))
        return 0
    print(f"{platform.processor() or platform.machine()}, Python {platform.python_version()}")
    print(
        f"{'session':<32} {'decisions':>9} {'bundle':>10} {'/10k dec':>9} {'import':>8} "
        f"{'build':>7} | {'recording':>11} {'import':>8}"
    )
    for r in rows:
        print(
            f"{r['session']:<32} {r['decisions']:>9,} {r['bundle_bytes']:>9,}B "
            f"{r['bundle_bytes_per_10k'] / 1000:>7.1f}KB {r['bundle_import_s']:>7.3f}s "
            f"{r['bundle_build_s']:>6.2f}s | {r['recording_bytes']:>10,}B "
            f"{r['recording_import_s']:>7.2f}s"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
