"""Exploring from the session's current moment (docs/protocol.md, "explore"): injected
operations and the steps taken so far are part of it; it can be cancelled; its progress
counts distinct states; counts a browser cannot hold exactly are sent as strings."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from webhelpers import ROOT, Viewer, arun

from ptviz.debugger import records
from ptviz.engine_worker.explorer import SAFE_INTEGER, exact_counts

pytestmark = pytest.mark.django_db(transaction=True)

V46 = ROOT / "scenarios" / "seed_race_v4.6.toml"
LOST = ["vcpu0"] * 3 + ["host0"] * 4 + ["vcpu0"] + ["host0"] * 2
WIDE = (ROOT / "tests" / "web" / "test_live.py").read_text().split('WIDE = """')[1].split('"""')[0]
# Three actors: 79,522 states (about 1.5 s), 9,535,360,195,439,978,008,223,968,594,754
# interleavings: far above 2^53.
MEDIUM = """
name = "three actors, four pages"
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
do = ["write 0x8000_2000"]
[[actor]]
name = "host0"
kind = "host"
do = ["wp 0x8000_0000 16K", "age 0x8000_0000 16K"]
"""


def make_session(text: str, name: str = "test.toml"):
    return records.create(records.check_scenario(text, name), "test")


async def explore(v: Viewer, **fields) -> dict:
    await v.ok("explore", **fields)
    return (await v.type("explore_result", timeout=60))["result"]


def cli_explore(text: str, tmp_path) -> dict:
    path = tmp_path / "scenario.toml"
    path.write_text(text)
    out = subprocess.run(
        [sys.executable, "-m", "engine", "explore", str(path), "--json"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    return json.loads(out.stdout)


def test_injected_operations_are_explored(mode, tmp_path):
    """Injecting at position 0 is the scenario with the operation written in: the web
    result is the CLI's on that scenario, and the events name the injected operation."""
    session, control, _view = make_session(V46.read_text())
    written_in = V46.read_text().replace(
        'do = ["set_readonly 0x8000_0000"]', 'do = ["set_readonly 0x8000_0000", "age 0x8000_0000"]'
    )

    async def body():
        v = await Viewer.open(session.id, control.token)
        await v.start()
        await v.ok("inject", actor="host0", op="age 0x8000_0000")
        result = await explore(v)
        await v.close()
        return result

    result = arun(body())
    assert result.pop("from_position") == 1  # the injection is decision 1
    assert result == cli_explore(written_in, tmp_path)
    assert result["states"] > cli_explore(V46.read_text(), tmp_path)["states"]


def test_the_exploration_starts_at_the_current_position(mode):
    """After vcpu0 set AF under host0's plain load (v4.6), every interleaving from there
    loses AF: the final states all have af=0 and the counterexample starts there."""
    session, control, _view = make_session(V46.read_text())

    async def body():
        v = await Viewer.open(session.id, control.token)
        await v.start()
        for name in LOST[:8]:
            await v.ok("step", actor=name)
        result = await explore(v)
        for name in LOST[8:]:
            await v.ok("step", actor=name)
        after = await explore(v)
        await v.close()
        return result, after

    result, after = arun(body())
    assert result["from_position"] == 8
    assert {s["af"] for f in result["final_states"] for s in f["leaf_summary"]} == {0}
    (lost,) = result["violations"]
    assert lost["check"] == "no_lost_update" and lost["schedule"] == ["host0", "host0"]
    assert lost["trace"][0]["seq"] > 0 and lost["trace"][-1]["op"] == "set_readonly"
    # at the end, the violation had already happened: listed as such, expectations judged
    (before,) = after["violations"]
    assert before["before"] is True and before["schedule"] == [] and before["op"] == "set_readonly"
    assert after["interleavings"] == 1
    held = {r["kind"]: r["held"] for r in after["expect"]["results"]}
    assert held["violations"] is True


def test_an_exploration_can_be_cancelled(mode):
    session, control, _view = make_session(WIDE, "wide")

    async def body():
        v = await Viewer.open(session.id, control.token)
        await v.start()
        await v.ok("explore")
        progress = await v.type("explore_progress", timeout=20)
        await v.ok("explore_cancel")
        cancelled = await v.type("explore_cancelled", timeout=20)
        assert cancelled["states"] >= progress["states"] > 0
        none = await v.answer(await v.command("explore_cancel"))
        assert none["type"] == "error" and none["code"] == "engine"
        # the search stopped: a new one can start at once
        await v.ok("explore", max_states=10)
        await v.close()

    arun(body())


def test_progress_counts_distinct_states_up_to_the_limit_and_too_big_names_the_setting(mode):
    session, control, _view = make_session(WIDE, "wide")
    limit = 60_000

    async def body():
        v = await Viewer.open(session.id, control.token)
        await v.start()
        explore_id = await v.command("explore", max_states=limit)
        err = await v.expect(lambda m: m["type"] == "error" and m["id"] == explore_id, 90)
        progress = [m for m in v.seen if m.get("type") == "explore_progress"]
        await v.close()
        return err, progress

    err, progress = arun(body())
    assert progress, "no explore_progress before the limit"
    states = [p["states"] for p in progress]
    assert states == sorted(states) and states[-1] <= limit
    assert all(p["max_states"] == limit for p in progress)
    assert err["code"] == "too_big"
    assert "60,000" in err["message"] and "max states field" in err["message"]
    assert "PTVIZ_EXPLORE_MAX_STATES" in err["message"] and "--max-states" not in err["message"]


def test_progress_never_passes_the_final_count_and_big_counts_are_exact(mode, tmp_path):
    session, control, _view = make_session(MEDIUM, "medium")

    async def body():
        v = await Viewer.open(session.id, control.token)
        await v.start()
        result = await explore(v)
        progress = [m["states"] for m in v.seen if m.get("type") == "explore_progress"]
        await v.close()
        return result, progress

    result, progress = arun(body())
    assert progress and all(n <= result["states"] for n in progress), (progress, result["states"])
    cli = cli_explore(MEDIUM, tmp_path)
    assert cli["interleavings"] > SAFE_INTEGER
    assert result["interleavings"] == str(cli["interleavings"])
    assert [f["count"] for f in result["final_states"]] == [
        str(f["count"]) if f["count"] > SAFE_INTEGER else f["count"] for f in cli["final_states"]
    ]


def test_counts_above_2_to_the_53_are_sent_as_exact_strings():
    result = {
        "interleavings": 1_282_706_334_378_421_150_992_678,
        "states": 491_253,
        "final_states": [{"count": SAFE_INTEGER + 2}, {"count": 35}],
    }
    out = exact_counts(result)
    assert out["interleavings"] == "1282706334378421150992678"
    assert [f["count"] for f in out["final_states"]] == [str(SAFE_INTEGER + 2), 35]
    assert out["states"] == 491_253
    assert exact_counts({"interleavings": SAFE_INTEGER, "final_states": []}) == {
        "interleavings": SAFE_INTEGER,
        "final_states": [],
    }
