"""Every example scenario, and the shared ones as they are, holds its [expect] on both engines."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "scenarios"
EXAMPLES = sorted((ROOT / "scenarios").glob("*.toml")) + sorted(SHARED.glob("*.toml"))


def explore(path: Path, engine: str) -> tuple[int, dict]:
    proc = subprocess.run(
        [sys.executable, "-m", "engine", "explore", str(path), "--json", "--engine", engine],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=600,
    )
    assert proc.returncode in (0, 1), proc.stderr
    return proc.returncode, json.loads(proc.stdout)


@pytest.mark.parametrize("engine", ["cython", "python"])
@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_example_expectations_hold(path, engine):
    rc, out = explore(path, engine)
    failed = [r for r in out["expect"]["results"] if not r["held"]]
    assert rc == 0 and out["expect"]["passed"], failed


def test_the_shared_scenarios_are_found():
    assert len(list(SHARED.glob("*.toml"))) >= 2
