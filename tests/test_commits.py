"""Commit-aware generations: the `commits` and `fix` keys, actor predicates, and the bug
catalogue (scenarios/bugs/): every bug's [expect] holds with its fix and fails without it,
on both cores."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from engine import isa as I
from engine.cli import main
from engine.commits import COMMITS, GENERATIONS, MMU_C, PGTABLE
from engine.programs import assemble, program_for
from engine.report import explore_json
from engine.scenario import ScenarioError, load_scenario, parse_scenario
from engine.spec import build_spec

ROOT_BUGS = Path(__file__).parent.parent / "scenarios" / "bugs"
BUGS = sorted(ROOT_BUGS.glob("*.toml"))
HEAD = 'name = "t"\nkernel = "{kernel}"\n'
BODY = """
[[map]]
ipa = 0x8000_0000
pa = 0x4000_0000

[[actor]]
name = "vcpu0"
kind = "vcpu"
do = ["write 0x8000_0000"]

[[actor]]
name = "host0"
kind = "host"
do = ["test_age 0x8000_0000"]
"""


def scenario(kernel: str, extra: str = "", body: str = BODY, **kw):
    return parse_scenario(HEAD.format(kernel=kernel) + extra + body, "t.toml", **kw)


def error(kernel: str, extra: str, body: str = BODY, **kw) -> str:
    with pytest.raises(ScenarioError) as e:
        scenario(kernel, extra, body, **kw)
    return str(e.value)


# --- generations and commits -------------------------------------------------------------


def test_every_generation_names_its_commits_and_every_commit_a_code_base():
    for gen in GENERATIONS.values():
        assert gen.base in (MMU_C, PGTABLE)
        assert all(COMMITS[c].base == gen.base for c in gen.commits)
    for short, commit in COMMITS.items():
        assert len(commit.sha) == 40 and commit.sha.startswith(short)
        assert commit.subject and commit.release.startswith("v") and commit.effect


def test_the_seed_is_v46_plus_the_seed_commit():
    assert program_for("v4.6", frozenset({"064850532444"})).code == assemble("seed").code
    assert scenario("seed", 'commits = ["-06485053"]\n').commits == frozenset()
    assert assemble("v4.6").code != assemble("seed").code


def test_reverting_the_seed_also_reverts_its_ha_default():
    assert scenario("seed", "[machine]\nhafdbs = 1\n", BODY).machine.ha is True
    reverted = scenario("seed", 'commits = ["-064850532444"]\n[machine]\nhafdbs = 1\n')
    assert reverted.machine.ha is False


def test_a_commit_changes_only_the_paths_it_names():
    before = assemble("v6.6")
    after = program_for("v6.6", GENERATIONS["v6.6"].commits | {"be097997a273"})
    changed = {before.lines[pc] for pc in range(len(before.code))} ^ {
        after.lines[pc] for pc in range(len(after.code))
    }
    # relax_perms's invalidation, and where its -EAGAIN now goes (nothing marked dirty)
    assert changed and all("relax_perms" in line or "-EAGAIN" in line for line in changed)


def test_reverting_local_tlbi_relaxes_with_a_broadcast_invalidation():
    prog = program_for("v6.6", frozenset())
    ops = [op for op, *_ in prog.code]
    assert I.OP_TLB_IPA_LOCAL not in ops
    assert I.OP_TLB_IPA_LOCAL in [op for op, *_ in assemble("v6.6").code]


@pytest.mark.parametrize(
    "extra, where, words",
    [
        ('commits = ["be097997a273"]\n', "commits[0]", "expected '+ID'"),
        ('commits = ["+deadbeef"]\n', "commits[0]", "not a modelled commit"),
        ("commits = [1]\n", "commits[0]", "expected '+ID'"),
        ('commits = "+be097997a273"\n', "commits", "must be an array"),
        ('commits = ["+be097997", "-be097997a273"]\n', "commits[1]", "listed twice"),
        ('commits = ["+064850532444"]\n', "commits[0]", "kvm_pgtable"),
        ('commits = ["+a12ab1378a88"]\n', "commits[0]", "already in 'v6.6'"),
        ('commits = ["-be097997a273"]\n', "commits[0]", "not in 'v6.6'"),
        ('fix = "be097997a273"\n', "fix", "add '+be097997a273'"),
        ('fix = "nope"\n', "fix", "not a modelled commit"),
    ],
)
def test_a_bad_commits_or_fix_key_is_one_error_naming_it(extra, where, words):
    message = error("v6.6", extra)
    assert f"t.toml: {where}: " in message and words in message


def test_command_line_commits_apply_on_top_of_the_file_and_are_named_when_wrong():
    sc = scenario("v6.6", 'commits = ["+be097997a273"]\n', commits=("-be097997a273",))
    assert sc.commits == GENERATIONS["v6.6"].commits
    assert "--commits[0]" in error("v6.6", "", commits=("+064850532444",))


def test_the_json_machine_lists_applied_and_reverted_commits(capsys, tmp_path):
    path = tmp_path / "s.toml"
    path.write_text(HEAD.format(kernel="v6.6") + 'commits = ["+be097997a273"]\n' + BODY)
    assert main(["explore", str(path), "--json", "--commits=-a12ab1378a88"]) == 0
    machine = json.loads(capsys.readouterr().out)["machine"]
    assert [(c["id"], c["origin"]) for c in machine["commits"]] == [
        ("3a0b870e3448", "generation"),
        ("7d894834a305", "generation"),
        ("694d071f8d85", "generation"),
        ("fc61f554e694", "generation"),
        ("be097997a273", "scenario"),
    ]
    assert machine["reverted"] == ["a12ab1378a88"]


# --- actor predicates --------------------------------------------------------------------


@pytest.mark.parametrize(
    "pred, words",
    [
        ("host0: faults=1", "unknown field 'faults' of a host actor"),
        ("vcpu0: ret=1", "unknown field 'ret' of a vcpu actor"),
        ("vcpu0: faults=9", "faults must be an integer 0..3"),
        ("host0: ret=2", "ret must be an integer 0..1"),
        ("nobody: ret=1", "bad IPA"),
    ],
)
def test_a_bad_actor_predicate_is_one_error_naming_it(pred, words):
    message = error("v6.6", "", BODY + f'\n[expect]\nalways = ["{pred}"]\n')
    assert "expect.always[0]" in message and words in message


def test_faults_are_counted_only_when_a_predicate_reads_them():
    plain = build_spec(scenario("v6.6"))
    counted = build_spec(scenario("v6.6", "", BODY + '\n[expect]\nnever = ["vcpu0: faults=3"]\n'))
    assert not plain.count_faults and counted.count_faults


# --- the bug catalogue -------------------------------------------------------------------


def test_the_catalogue_holds_at_least_the_bugs_it_promises():
    assert len(BUGS) >= 9
    for path in BUGS:
        sc = load_scenario(path)
        assert sc.fix is not None and path.name.startswith(sc.fix), path.name
        assert COMMITS[sc.fix].sha in sc.description or sc.fix in sc.description


@pytest.mark.parametrize("engine", ["cython", "python"])
@pytest.mark.parametrize("path", BUGS, ids=[p.stem for p in BUGS])
def test_a_bug_shows_before_its_fix_and_not_after(path, engine):
    fixed = load_scenario(path)
    after = explore_json(build_spec(fixed), engine, 2_000_000)
    assert after["expect"]["passed"], after["expect"]
    before = explore_json(build_spec(load_scenario(path, (f"-{fixed.fix}",))), engine, 2_000_000)
    assert not before["expect"]["passed"], f"{path.name}: [expect] holds without {fixed.fix}"


@pytest.mark.parametrize("engine", ["cython", "python"])
@pytest.mark.parametrize("fix", ["86658b819cd0", "976d34e2dab1"])
def test_before_the_v419_skips_two_vcpus_can_break_each_others_entry_for_ever(fix, engine):
    """Punit Agrawal's fixes: "can hinder forward progress due to refaults". Without them
    each vCPU's fault handler re-breaks the entry the other just installed, a cycle the
    explorer cuts; with them every vCPU faults at most once and the search is acyclic."""
    path = next(p for p in BUGS if p.name.startswith(fix))
    fixed = explore_json(build_spec(load_scenario(path)), engine, 2_000_000)
    before = explore_json(build_spec(load_scenario(path, (f"-{fix}",))), engine, 2_000_000)
    faults = {
        (s["actors"]["vcpu0"]["faults"], s["actors"]["vcpu1"]["faults"])
        for s in before["final_states"]
    }
    assert before["cycles"] > 0 and (2, 3) in faults and (3, 2) in faults
    assert fixed["cycles"] == 0
    assert {
        n for s in fixed["final_states"] for n in s["actors"].values() for n in [n["faults"]]
    } <= {0, 1}


def test_the_v419_skips_compare_the_whole_entry_only_at_their_own_level():
    def skip(commits):
        prog = program_for("seed", GENERATIONS["seed"].commits | commits)
        at = [pc for pc, line in enumerate(prog.lines) if "return 0  //" in line]
        guard = [prog.code[pc - 1] for pc in at if prog.code[pc - 1][0] == I.OP_BNEK]
        level = [prog.consts[g[2]] for g in guard if g[1] == I.TLEVEL]
        return [(prog.code[pc], prog.lines[pc]) for pc in at], level

    assert skip(frozenset()) == ([], [])
    (code, line), *more = skip(frozenset({"86658b819cd0", "976d34e2dab1"}))[0]
    assert not more and code[:3] == (I.OP_BEQ, I.R0, I.R1)
    assert "86658b819cd0" in line and "976d34e2dab1" in line
    [(_, line)], level = skip(frozenset({"976d34e2dab1"}))
    assert "stage2_set_pte" in line and level == [3]
    [(_, line)], level = skip(frozenset({"86658b819cd0"}))
    assert "stage2_set_pmd_huge" in line and level == [2]


@pytest.mark.parametrize("engine", ["cython", "python"])
def test_before_7d894834_a_write_after_log_stop_relaxes_the_2m_aligned_page_for_ever(engine):
    """v5.10-rc: `FSC_PERM && !(logging_active && writable)` relaxes at fault_ipa aligned
    down to vma_pagesize: the leaf at 0x8000_0000, not the faulting page."""
    from engine.session import LiveSession

    path = next(p for p in BUGS if p.name.startswith("7d894834a305"))
    text = path.read_text()

    def after_log_stop(text):
        s = LiveSession(text, engine=engine)

        def view(name):
            return next(a for a in s.actors_view() if a["name"] == name)

        while view("host0")["op_index"] == 0:  # log_start
            s.step("host0")
        while view("vcpu0")["op_index"] < 2:  # split on the write, read-only 4K on the read
            s.step("vcpu0")
        while not view("host0")["done"]:  # log_stop
            s.step("host0")
        s.events()
        for _ in range(40):
            if view("vcpu0")["done"]:
                break
            s.step("vcpu0")
        return view("vcpu0")["done"], s.events()

    done, events = after_log_stop(text)
    assert done and any(e["kind"] == "store" and e["level"] == 2 for e in events)  # 2M again
    broken = text.replace('["-694d071f8d85"]', '["-694d071f8d85", "-7d894834a305"]')
    done, events = after_log_stop(broken.replace('fix = "7d894834a305"\n', ""))
    faults = [e for e in events if e["kind"] == "fault"]
    relaxed = {e["ipa"] for e in events if e["kind"] == "load" and e["level"] == 3}
    assert not done and len(faults) >= 3 and {f["ipa"] for f in faults} == {"0x80123000"}
    assert relaxed == {"0x80000000"} and not any(e["kind"] in ("store", "cas-ok") for e in events)


def test_expect_cycles_is_a_non_negative_count_and_only_explore_checks_it(capsys, tmp_path):
    assert "expect.cycles" in error("v6.6", "", BODY + "[expect]\ncycles = -1\n")
    assert "expect.cycles" in error("v6.6", "", BODY + '[expect]\ncycles = "none"\n')
    path = tmp_path / "c.toml"
    path.write_text(HEAD.format(kernel="v6.6") + BODY + "[expect]\ncycles = 3\n")
    assert main(["explore", str(path)]) == 1
    assert "expect cycles = 3: FAILED (found 0)" in capsys.readouterr().out
    assert main(["run", str(path), "--schedule", "vcpu0"]) == 0  # one run has no cycles


def test_a_fork_to_another_kernel_drops_the_commits_written_for_the_old_one():
    from ptviz.debugger.scenarios import with_machine

    text = (ROOT_BUGS / "be097997a273_relax_eagain_tlbi.toml").read_text()
    forked = parse_scenario(with_machine(text, kernel="seed"))
    assert forked.kernel == "seed" and forked.commit_changes == () and forked.fix is None
    same = parse_scenario(with_machine(text, ha=True))
    assert same.commit_changes == ("+be097997a273",) and same.fix == "be097997a273"


def test_before_fc61f554_the_access_flag_fault_takes_the_write_lock_and_stores_plainly():
    before = program_for("v6.6", GENERATIONS["v6.6"].commits - {"fc61f554e694"})
    after = assemble("v6.6")

    def af_path(prog):
        start = next(pc for pc, line in enumerate(prog.lines) if "handle_access_fault" in line)
        return [prog.code[pc] for pc in range(start, start + 12)]

    assert (I.OP_LOCK, I.LOCK_WRITE, 0, 0) in af_path(before)
    assert (I.OP_LOCK, I.LOCK_READ, 0, 0) in af_path(after)
    assert any(op == I.OP_STORE for op, *_ in af_path(before))
    assert any(op == I.OP_CAS for op, *_ in af_path(after))
