"""The bug-report commands (README, "Bug-report bundles"; docs/bundle.md): a scenario run
is bundled, the bundle replays verified, reports as a mail-ready table and freezes into a
scenario that starts at its moment; long schedules never print as more than one line."""

import json
from pathlib import Path

import pytest

from engine import bundle as BD
from engine.cli import main
from engine.core import new_machine
from engine.freeze import leaves_now
from engine.scenario import load_scenario
from engine.session import LiveSession
from engine.spec import build_spec

ROOT = Path(__file__).resolve().parents[1]
SCENARIOS = sorted((ROOT / "scenarios").glob("*.toml"))
V46 = ROOT / "scenarios" / "seed_race_v4.6.toml"
LOST = "vcpu0,vcpu0,vcpu0,host0,host0,host0,host0,vcpu0,host0,host0"


def cli(capsys, *argv) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("path", SCENARIOS, ids=lambda p: p.name)
def test_every_example_bundles_replays_verified_and_reports(path, tmp_path, capsys):
    out = tmp_path / "b.json"
    code, said, _ = cli(capsys, "bundle", path, "-o", out)
    assert code == 0 and "decisions" in said
    code, replayed, err = cli(capsys, "replay", out, "--json")
    doc = json.loads(replayed)
    assert doc["verified"] and doc["position"] == doc["of"]
    code_run, ran, _ = cli(capsys, "run", path, "--json")
    assert code == code_run  # the same expectations hold or fail
    assert (
        doc["final_states"][0]["leaf_summary"] == json.loads(ran)["final_states"][0]["leaf_summary"]
    )
    code, report, _ = cli(capsys, "report", out)
    assert code == 0 and report.startswith("VERDICT: ")
    assert max(len(line) for line in report.splitlines()) <= 100


def test_an_explore_counterexample_bundles_and_its_report_names_the_reverted_update(
    tmp_path, capsys
):
    out = tmp_path / "cex.json"
    assert cli(capsys, "bundle", V46, "--counterexample", "1", "-o", out)[0] == 0
    code, said, _ = cli(capsys, "replay", out)
    assert code == 1  # the scenario expects the violation: replay reports it as run does
    assert "VIOLATION no_lost_update" in said
    code, report, _ = cli(capsys, "report", out)
    first = report.splitlines()[0]
    assert first.startswith("VERDICT: VIOLATED no_lost_update at 0x80000000 (AF) by host0")
    assert "LOST UPDATE: reverts step" in report and "hw-update: AF" in report


def test_a_bundle_of_a_schedule_reports_each_micro_step_in_kernel_terms(tmp_path, capsys):
    code, report, _ = cli(capsys, "report", V46, "--schedule", LOST)
    lines = report.splitlines()
    assert lines[0].startswith("VERDICT: VIOLATED no_lost_update")
    header = next(line for line in lines if line.lstrip().startswith("step |"))
    assert "vcpu0" in header and "host0" in header
    assert "set_readonly: store L3 0x1000003000" in report
    assert "[ipa 0x80000000] 0x400007ff -> 0x4000037f" in report
    assert "(AF=0, S2AP rw->ro)" in report
    assert "at pte_val(*pte) = ... (plain store)" in report
    code, md, _ = cli(capsys, "report", V46, "--schedule", LOST, "--format", "markdown")
    assert md.startswith("**VERDICT: VIOLATED") and "| step | vcpu0 | host0 |" in md


def test_replay_stops_at_a_step_and_names_the_first_differing_hash(tmp_path, capsys):
    out = tmp_path / "b.json"
    cli(capsys, "bundle", V46, "--schedule", LOST, "-o", out)
    code, said, _ = cli(capsys, "replay", out, "--to", 4, "--json")
    assert json.loads(said)["position"] == 4
    doc = json.loads(out.read_text())
    doc["path"] = ["0*3 1*3 0 1*3"]
    doc["digests"] = {k: BD._digest(doc[k]) for k in BD.DIGESTED}
    out.write_text(json.dumps(doc))
    code, _, err = cli(capsys, "replay", out)
    assert code == 1 and err.count("\n") == 1
    assert "step 7: the state hash differs" in err


def test_bad_bundles_exit_2_with_one_line(tmp_path, capsys):
    out = tmp_path / "b.json"
    cli(capsys, "bundle", V46, "-o", out)
    out.write_bytes(out.read_bytes()[:-40])
    code, _, err = cli(capsys, "replay", out)
    assert code == 2 and err.count("\n") == 1 and "truncated" in err
    code, _, err = cli(capsys, "replay", tmp_path / "missing.json")
    assert code == 2 and "missing.json" in err
    code, _, err = cli(capsys, "bundle", V46, "--schedule", "vcpu9", "-o", out)
    assert code == 2 and "--schedule entry 1 ('vcpu9'): no such actor" in err


BULK = """
name = "wp 64 MiB racing a vCPU"
kernel = "seed"
[[map]]
ipa = 0x8000_0000
pa = 0x4000_0000
size = "4K"
count = 16384
af = false
[[actor]]
name = "vcpu0"
kind = "vcpu"
do = ["write 0x8000_0000"]
[[actor]]
name = "host0"
kind = "host"
do = ["wp 0x8000_0000 64M"]
"""


def test_long_schedules_fold_to_one_line_and_run_length_encode_in_json(tmp_path, capsys):
    path = tmp_path / "bulk.toml"
    path.write_text(BULK)
    code, text, _ = cli(capsys, "run", path)
    assert max(len(line) for line in text.splitlines()) < 200
    assert "host0 x " in text
    code, out, _ = cli(capsys, "run", path, "--json")
    doc = json.loads(out)
    assert "schedule" not in doc and doc["schedule_rle"][0][0] == "vcpu0"
    assert sum(n for _, n in doc["schedule_rle"]) > 10_000
    final = doc["final_states"][0]
    assert "example_schedule" not in final and final["example_schedule_rle"] == doc["schedule_rle"]
    # the folded runs are a schedule again
    rle = ",".join(f"{name}*{n}" for name, n in doc["schedule_rle"])
    code, report, _ = cli(capsys, "report", path, "--schedule", rle)
    assert "folded:" in report and len(report.splitlines()) < 200


def test_short_schedules_keep_the_contract_fields(capsys):
    code, out, _ = cli(capsys, "run", V46, "--schedule", LOST, "--json")
    doc = json.loads(out)
    assert doc["schedule"] == LOST.split(",") and "schedule_rle" not in doc


def test_freeze_writes_a_scenario_whose_start_is_the_moment(tmp_path, capsys):
    live = LiveSession(V46.read_text())
    for name in LOST.split(",")[:5]:  # host0 holds the lock, mid set_readonly
        live.step(name)
    bundle = tmp_path / "b.json"
    bundle.write_bytes(BD.dumps(BD.from_session(live)))
    frozen = tmp_path / "frozen.toml"
    code, said, _ = cli(capsys, "freeze", bundle, "-o", frozen)
    assert code == 0
    assert "not carried over: host0 was half-way through 'set_readonly 0x8000_0000'" in said
    assert "kvm->mmu_lock held by host0" in said
    spec = build_spec(load_scenario(frozen))
    start = new_machine(spec)
    now, _ = leaves_now(live.machine, live.spec.geometry)
    then, _ = leaves_now(start, spec.geometry)
    assert [(ipa, lvl, d) for ipa, lvl, d in then] == [(ipa, lvl, d) for ipa, lvl, d in now]
    code, _, _ = cli(capsys, "explore", frozen)
    assert code == 0


def test_freeze_preloads_tlb_entries_that_still_match(tmp_path, capsys):
    live = LiveSession((ROOT / "scenarios" / "stale_tlb_seed.toml").read_text())
    live.run(3)
    bundle = tmp_path / "b.json"
    bundle.write_bytes(BD.dumps(BD.from_session(live)))
    frozen = tmp_path / "f.toml"
    assert cli(capsys, "freeze", bundle, "-o", frozen)[0] == 0
    text = frozen.read_text()
    for actor in load_scenario(frozen).actors:
        assert actor.kind == "vcpu" or not actor.tlb
    assert "[[actor]]" in text


@pytest.mark.parametrize("path", SCENARIOS, ids=lambda p: p.name)
def test_every_example_freezes_mid_run_into_a_scenario_that_starts_there(path, tmp_path, capsys):
    live = LiveSession(path.read_text())
    live.run(7)
    bundle = tmp_path / "b.json"
    bundle.write_bytes(BD.dumps(BD.from_session(live)))
    frozen = tmp_path / "f.toml"
    code, _, err = cli(capsys, "freeze", bundle, "-o", frozen)
    if live.machine.all_done():
        assert code == 2 and "every actor had finished by step" in err
        return
    assert code == 0
    scenario = load_scenario(frozen)
    assert scenario.machine == live.scenario.machine  # what-ifs included
    spec = build_spec(scenario)
    start, _ = leaves_now(new_machine(spec), spec.geometry)
    assert start == leaves_now(live.machine, live.spec.geometry)[0]
