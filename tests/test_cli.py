"""`python -m engine`: the contract of SCENARIOS.md (commands, JSON, exit codes 0/1/2)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
V46 = ROOT / "scenarios" / "seed_race_v4.6.toml"
SEED = ROOT / "scenarios" / "seed_race_seed.toml"


def engine(*args, cwd=ROOT):
    proc = subprocess.run(
        [sys.executable, "-m", "engine", *map(str, args)],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=300,
    )
    return proc.returncode, proc.stdout, proc.stderr


def test_explore_json_has_the_contract_fields():
    rc, out, err = engine("explore", V46, "--json")
    assert rc == 0, err
    d = json.loads(out)
    assert d["scenario"].startswith("v4.6") and d["kernel"] == "v4.6"
    assert {
        "hafdbs": 1,
        "ha": True,
        "hd": False,
        "ipa_bits": 40,
        "granule": "4K",
        "tlb": True,
    }.items() <= d["machine"].items()
    assert d["interleavings"] == sum(f["count"] for f in d["final_states"])
    assert d["states"] > 0
    for f in d["final_states"]:
        leaf = f["leaves"]["0x80000000"]
        assert set(leaf) == {"valid", "af", "s2ap", "dbm", "pa", "raw", "size"}
        assert leaf["size"] == "4K"
        assert f["leaf_summary"] and f["example_schedule"]
    (v,) = d["violations"]
    assert (v["check"], v["ipa"], v["bits"], v["actor"], v["op"]) == (
        "no_lost_update",
        "0x80000000",
        ["AF"],
        "host0",
        "set_readonly",
    )
    assert d["expect"]["passed"] is True


def test_a_counterexample_schedule_reproduces_the_violation_with_run():
    _, out, _ = engine("explore", V46, "--json")
    (v,) = json.loads(out)["violations"]
    rc, out, err = engine("run", V46, "--schedule", ",".join(v["schedule"]), "--json")
    d = json.loads(out)
    assert d["schedule"] == v["schedule"]
    assert [x["check"] for x in d["violations"]] == ["no_lost_update"]
    assert d["trace"] == v["trace"]
    assert d["final_states"][0]["leaves"]["0x80000000"]["af"] == 0
    # the run's one final state does not satisfy "sometimes af=1": exit 1
    assert rc == 1


def test_run_round_robin_by_default_and_the_trace_has_one_event_per_micro_step():
    rc, out, err = engine("run", SEED, "--json")
    assert rc == 0, err
    d = json.loads(out)
    assert [e["seq"] for e in d["trace"]] == list(range(len(d["trace"])))
    assert len(d["trace"]) == len(d["schedule"])
    assert d["schedule"][:2] == ["vcpu0", "host0"]


def test_exit_1_when_an_expectation_fails(tmp_path):
    text = SEED.read_text().replace(
        'always = ["0x8000_0000: af=1 s2ap=ro"]', 'always = ["0x8000_0000: af=0"]'
    )
    f = tmp_path / "wrong.toml"
    f.write_text(text)
    rc, out, _ = engine("explore", f)
    assert rc == 1 and "FAILED" in out


@pytest.mark.parametrize(
    ("schedule", "message"),
    [
        ("vcpu0,nobody", "entry 2 ('nobody'): no such actor"),
        ("host0,host0,host0,host0,host0,host0,host0", "entry 7 ('host0'): that actor has finished"),
    ],
)
def test_bad_schedules_exit_2_naming_the_entry(schedule, message):
    rc, out, err = engine("run", SEED, "--schedule", schedule)
    assert rc == 2 and out == ""
    assert err.count("\n") == 1 and message in err and "seed_race_seed.toml" in err


def test_a_schedule_naming_a_blocked_actor_exits_2(tmp_path):
    f = tmp_path / "two_hosts.toml"
    f.write_text(
        SEED.read_text().replace(
            '[[actor]]\nname = "host0"',
            '[[actor]]\nname = "host1"\nkind = "host"\ndo = ["wp 0x8000_0000"]\n\n[[actor]]\nname = "host0"',
        )
    )
    rc, _, err = engine("run", f, "--schedule", "host1,host0")
    assert rc == 2 and "entry 2 ('host0'): that actor is blocked on kvm->mmu_lock" in err


@pytest.mark.parametrize(
    ("text", "where"),
    [
        (
            "name = 'x'\nkernel = 'v5'\n[[actor]]\nname='a'\nkind='host'\ndo=['flush_tlb']\n",
            "kernel",
        ),
        ("name = 'x'\nkernel = 'seed'\nbogus = 1\n", "bogus"),
        ("name = 'x'\nkernel = 'seed'\n[machine]\nhd = true\n", "machine.hd"),
        ("name = 'x\nkernel = 'seed'\n", "line 1"),
    ],
)
def test_bad_scenarios_exit_2_with_one_line_naming_the_fault(tmp_path, text, where):
    f = tmp_path / "bad.toml"
    f.write_text(text)
    for command in ("explore", "run"):
        rc, out, err = engine(command, f)
        assert rc == 2 and out == ""
        assert err.count("\n") == 1 and "bad.toml" in err and where in err
        assert "Traceback" not in err


def test_v4_6_rejects_an_ipa_size_it_did_not_have(tmp_path):
    f = tmp_path / "ipa44.toml"
    f.write_text(SEED.read_text().replace("hafdbs = 1", "hafdbs = 1\nipa_bits = 44"))
    rc, _, err = engine("explore", f)
    assert rc == 2 and "machine.ipa_bits" in err and "KVM_PHYS_SHIFT" in err


def test_decode_json():
    rc, out, _ = engine("decode", "0x400007ff", "--json")
    d = json.loads(out)
    assert rc == 0 and (d["type"], d["pa"], d["s2ap"], d["af"], d["sh"], d["memattr"]) == (
        "page",
        "0x40000000",
        "rw",
        1,
        3,
        15,
    )
    rc, out, _ = engine("decode", "0x1000002003", "--level", "1", "--json")
    assert json.loads(out)["next_table"] == "0x1000002000"


def test_decode_bad_input_exits_2():
    rc, out, err = engine("decode", "0xZZ")
    assert rc == 2 and out == "" and "0xZZ" in err


def test_the_python_twin_gives_the_same_exploration():
    outs = [
        json.loads(engine("explore", V46, "--json", "--engine", e)[1]) for e in ("cython", "python")
    ]
    assert outs[0] == outs[1]


def test_explore_in_two_processes_prints_what_one_prints():
    cycles = ROOT / "scenarios" / "bugs" / "3a0b870e3448_merge_tables_tlbi.toml"
    for path in (V46, cycles):
        one, two = (engine("explore", path, "--json", "--jobs", n) for n in (1, 2))
        assert two == one and one[0] == 0
    assert json.loads(one[1])["cycles"] > 0  # (the second file cuts livelock cycles)
    rc, out, err = engine("explore", V46, "--jobs", "0")
    assert rc == 2 and out == "" and "--jobs" in err


def test_a_state_bound_stops_exploration_with_a_clear_message():
    rc, out, err = engine("explore", V46, "--max-states", "5")
    assert rc == 2 and out == ""
    assert "passed 5 states" in err and "--max-states" in err


def test_a_seeded_random_run_is_reproducible_and_its_schedule_replays_it():
    runs = [json.loads(engine("run", V46, "--random", "11", "--json")[1]) for _ in range(2)]
    assert runs[0]["schedule"] == runs[1]["schedule"]
    seeds = {
        tuple(json.loads(engine("run", V46, "--random", str(s), "--json")[1])["schedule"])
        for s in range(8)
    }
    assert len(seeds) > 1  # the seed matters
    replay = json.loads(
        engine("run", V46, "--schedule", ",".join(runs[0]["schedule"]), "--json")[1]
    )
    assert replay["trace"] == runs[0]["trace"]


def test_a_round_robin_run_that_never_finishes_is_stopped_with_one_line(monkeypatch, capsys):
    """(Round-robin can livelock: two vCPUs re-breaking each other's block for ever with
    86658b819cd0 reverted. `run` stops at RUN_MAX_STEPS; here a small bound stands in.)"""
    from engine import cli as engine_cli

    monkeypatch.setattr(engine_cli, "RUN_MAX_STEPS", 5)
    code = engine_cli.main(["run", str(V46)])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    assert "did not finish within 5 micro-steps" in err and "explore" in err
    monkeypatch.setattr(engine_cli, "RUN_MAX_STEPS", 10_000)
    assert engine_cli.main(["run", str(V46)]) in (0, 1)  # it finishes well within that
