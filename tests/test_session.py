"""Live sessions: decisions, injected operations, stepping back, recordings replayed exactly."""

import re
from pathlib import Path

import pytest

from engine.session import LiveSession, ReplayError
from engine.twin import EngineError

V46 = (Path(__file__).resolve().parents[1] / "scenarios" / "seed_race_v4.6.toml").read_text()
LOST = ["vcpu0"] * 3 + ["host0"] * 4 + ["vcpu0"] + ["host0"] * 2


@pytest.fixture(params=["cython", "python"])
def engine(request):
    return request.param


def test_the_lost_update_schedule_flags_no_lost_update(engine):
    s = LiveSession(V46, engine=engine)
    for name in LOST:
        s.step(name)
    assert [v["check"] for v in s.violations()] == ["no_lost_update"]
    assert s.violations()[0]["bits"] == ["AF"]


def test_stepping_back_and_forward_returns_to_the_same_state(engine):
    s = LiveSession(V46, engine=engine, snapshot_every=3)
    hashes = [s.state_hash()]
    for name in LOST:
        s.step(name)
        hashes.append(s.state_hash())
    for position in (7, 0, 10, 4, 9):
        s.seek(position)
        assert s.state_hash() == hashes[position]
    s.back(3)
    assert s.position == 6 and s.state_hash() == hashes[6]


def test_the_state_hash_at_a_checkpoint_is_the_hash_of_the_state_there(engine):
    from engine.snapshot import pack, state_hash

    s = LiveSession(V46, engine=engine, snapshot_every=3)
    assert s.state_hash() == state_hash(pack(s.machine.get_state()))
    for name in LOST:
        s.step(name)
        assert s.state_hash() == state_hash(pack(s.machine.get_state()))
    for position in (9, 3, 0, 6, 7):  # (every third one has a checkpoint)
        s.seek(position)
        assert s.state_hash() == state_hash(pack(s.machine.get_state()))


def test_a_decision_after_stepping_back_starts_a_branch_and_keeps_the_old_one(engine):
    s = LiveSession(V46, engine=engine, snapshot_every=3)
    for name in LOST:
        s.step(name)
    old_tip = s.state_hash()
    s.back(4)
    s.step("vcpu0")
    assert (s.branch, s.position, len(s.decisions)) == (1, 7, 7)
    assert s.moment() == "b1-7"
    s.run(100)
    new_tip = s.state_hash()
    s.goto_moment("10")  # the first branch's tip is still there
    assert s.state_hash() == old_tip and s.decisions == [["step", s.names.index(n)] for n in LOST]
    s.goto_moment(s.moment(1, len(s.tree.path(1))))
    assert s.state_hash() == new_tip
    # The shared prefix is named by the branch that owns it.
    assert s.moment(1, 6) == "6" and s.moment(1, 7) == "b1-7"
    # Branching again from the first branch makes branch 2; all three tips stay reachable.
    s.goto_moment("3")
    s.step("host0")
    assert s.moment() == "b2-4" and s.tree.branch(2).parent == 0
    assert [b["end"] for b in s.tree.summary()] == [10, len(s.tree.path(1)), 4]


def test_a_moment_that_is_not_in_the_session_is_refused_by_name(engine):
    s = LiveSession(V46, engine=engine)
    s.run(5)
    for bad, why in (("6", "outside|not in"), ("b1-3", "no branch"), ("x", "not a moment")):
        with pytest.raises(EngineError, match=why):
            s.goto_moment(bad)
    assert s.path_to("3") == s.decisions[:3]


def test_an_event_maps_to_the_moment_right_after_its_step(engine):
    s = LiveSession(V46, engine=engine)
    s.step("vcpu0")
    s.inject("host0", "age 0x8000_0000")
    s.step("host0")
    s.inject("vcpu0", "read 0x8000_0000")
    s.step("vcpu0")
    events = s.events()
    assert [s.decisions.position_of_seq(e["seq"]) for e in events] == [1, 3, 5]


def test_an_injected_operation_runs_on_a_finished_actor(engine):
    s = LiveSession(V46, engine=engine)
    s.run(100)
    assert all(a["done"] for a in s.actors_view())
    s.inject("vcpu0", "write 0x8000_0000")
    assert not s.actors_view()[0]["done"]
    s.run(100)
    assert s.actors_view()[0]["done"]


def test_events_of_injected_operations_name_their_operation(engine):
    s = LiveSession(V46, engine=engine)
    s.run(100)
    s.events()
    s.inject("host0", "age 0x8000_0000")
    s.inject("vcpu0", "write 0x8000_0000")
    s.run(100)
    ops = {(e["actor"], e["op"]) for e in s.events()}
    assert ops == {("host0", "age"), ("vcpu0", "write")}


def test_bad_injections_and_steps_name_what_is_wrong(engine):
    s = LiveSession(V46, engine=engine)
    with pytest.raises(EngineError, match="host operation"):
        s.inject("vcpu0", "wp 0x8000_0000")
    with pytest.raises(EngineError, match="unknown operation"):
        s.inject("host0", "explode 0x0")
    with pytest.raises(EngineError, match="no actor"):
        s.step("nobody")
    s.run(100)
    with pytest.raises(EngineError, match="finished"):
        s.step("host0")
    assert s.decisions[-1][0] == "step"  # nothing recorded was lost


def test_a_recording_replays_exactly_and_verifies_its_hashes(engine):
    s = LiveSession(V46, engine=engine, snapshot_every=2)
    s.run(4, mode="random", seed=7)
    s.inject("host0", "age 0x8000_0000")
    s.run(100, mode="random", seed=8)
    rec = s.export()
    again = LiveSession.from_recording(rec, engine=engine)
    assert again.state_hash() == s.state_hash()
    assert again.decisions == s.decisions

    first = rec["decisions"][0]
    rec["decisions"][0] = ["step", 1 - first[1]]
    with pytest.raises(ReplayError):
        LiveSession.from_recording(rec, engine=engine, snapshot_every=2)


def test_who_holds_mmu_lock_is_shown(engine):
    s = LiveSession(V46, engine=engine)
    s.step("host0")  # spin_lock
    view = {a["name"]: a for a in s.actors_view()}
    assert view["host0"]["holds_lock"] == "spin"
    assert s.lock_view() == {"kind": "spinlock", "writer": "host0", "readers": 0}


def test_snapshots_of_a_big_machine_are_rarer_and_bounded_in_number():
    big = """
name = "4 GiB"
kernel = "seed"
[[map]]
ipa = 0x1_0000_0000
pa = 0x4000_0000
count = 1048576
[[actor]]
name = "host0"
kind = "host"
do = ["wp 0x1_0000_0000 4G"]
"""
    s = LiveSession(big, snapshot_every=256)
    assert s.interval > 100_000  # 8 MiB of tables: about 64 bytes of snapshot per decision
    small = LiveSession(V46, snapshot_every=2)
    hashes = [small.state_hash()]
    for _ in range(3):
        small.inject("host0", "age 0x8000_0000")
        small.run(1000)
        hashes.append(small.state_hash())
    for _ in range(200):
        small.inject("host0", "flush_tlb")
        small.step("host0")
    assert len(small.checkpoints) <= 64
    assert 0 in small.checkpoints
    small.seek(len(small.decisions) - 400)
    assert small.state_hash() == hashes[-1]


DIRTY = """name = "dirty bitmap view"
kernel = "seed"
[[map]]
ipa = 0x8001_0000
pa = 0x4001_0000
count = 128
[[map]]
ipa = 0x8020_0000
pa = 0x4020_0000
size = "2M"
[[actor]]
name = "host0"
kind = "host"
do = ["log_start 0x8001_0000 512K"]
[[actor]]
name = "vcpu0"
kind = "vcpu"
do = ["read 0x8001_0000"]
"""


def test_the_machine_view_shows_each_memslots_dirty_bitmap_from_its_base(engine):
    s = LiveSession(DIRTY, engine=engine)
    assert s.machine_view()["dirty_log"] is None  # no logging operation yet
    s.run(10_000)
    for ipa in ("0x8001_3000", "0x8004_f000", "0x8006_0000"):
        s.inject("vcpu0", f"write {ipa}")
    s.run(10_000)
    s.inject("host0", "get_dirty_log 0x8001_0000 256K")
    s.run(10_000)
    view = s.machine_view()["dirty_log"]
    assert view["word_bits"] == 64
    first, block = view["slots"]
    assert (first["base"], first["npages"], first["logging"]) == ("0x80010000", 128, [[0, 128]])
    # word 0 (bits 0-63 from the memslot base) was harvested, bit 80 of word 1 was not
    assert (first["harvested"], first["bits"]) == ([3, 63], [80])
    assert (block["base"], block["npages"], block["logging"], block["bits"]) == (
        "0x80200000",
        512,
        [],
        [],
    )


def _three_branches(engine) -> LiveSession:
    """Branch 0: the lost update; branch 1: another actor at step 5, then round-robin;
    branch 2: an injected read at step 8 of branch 1. The head is branch 1's tip."""
    s = LiveSession(V46, engine=engine, snapshot_every=2)
    for name in LOST:
        s.step(name)
    s.seek(5)
    s.step("vcpu0" if LOST[5] == "host0" else "host0")
    s.run(3)
    s.seek(8, 1)
    s.inject("vcpu0", "read 0x8000_0000")
    s.run(100)
    s.seek(s.tree.branches[1].end, 1)
    return s


def test_a_recording_keeps_every_branch_and_opens_at_the_head(engine):
    s = _three_branches(engine)
    assert [br.parent for br in s.tree.branches] == [None, 0, 1]
    rec = s.export()
    assert rec["tree"]["head"] == 1 and len(rec["tree"]["branches"]) == 3
    # a reader that knows no branches replays the head's path, as before
    assert rec["decisions"] == [list(d) for d in s.decisions]

    again = LiveSession.from_recording(rec, engine=engine)
    assert again.tree.summary() == s.tree.summary()
    assert (again.branch, again.position) == (1, s.position)
    assert again.state_hash() == s.state_hash()
    for br in s.tree.branches:
        s.seek(br.end, br.id)
        again.seek(br.end, br.id)
        assert again.state_hash() == s.state_hash(), f"branch {br.id}"
        assert again.moment() == s.moment()


def test_a_recording_without_branches_has_no_tree_field(engine):
    s = LiveSession(V46, engine=engine)
    for name in LOST:
        s.step(name)
    assert "tree" not in s.export()


@pytest.mark.parametrize(
    "tamper, message",
    [
        (lambda t: t["branches"][2].update(parent=5), "branch 2: 'parent' 5 is not an earlier"),
        (lambda t: t["branches"][1].update(start=999), "branch 1: it must start inside"),
        (lambda t: t["branches"][1].update(decisions=[]), "branch 1: it must start inside"),
        (lambda t: t.update(head=7), "'head' 7 is not one of its branches"),
        (lambda t: t["branches"][2].update(final_hash="0" * 32), "branch 2: the final state"),
        (lambda t: t["branches"][1]["decisions"].append(["step", 9]), "branch 1: decision"),
        (lambda t: t.update(head=2), "'decisions' is not the path to the tree's head"),
    ],
)
def test_a_tampered_tree_is_refused_naming_the_branch(engine, tamper, message):
    rec = _three_branches(engine).export()
    tamper(rec["tree"])
    with pytest.raises(ReplayError, match=re.escape(message)):
        LiveSession.from_recording(rec, engine=engine)


def test_a_recording_replays_runs_of_steps_at_once_and_names_the_step_refused(engine):
    s = LiveSession(V46, engine=engine, snapshot_every=2)
    s.run(100)  # round-robin to the end
    rec = s.export()
    again = LiveSession.from_recording(rec, engine=engine)
    assert again.decisions == s.decisions and again.state_hash() == s.state_hash()

    n = len(rec["decisions"])
    longer = {**rec, "decisions": rec["decisions"] + [["step", 1]] * 3, "final_hash": None}
    with pytest.raises(ReplayError, match=rf"decision {n} \(\['step', 1\]\) cannot be taken"):
        LiveSession.from_recording(longer, engine=engine)
    broken = {**rec, "decisions": [*rec["decisions"][:3], ["step"], *rec["decisions"][3:]]}
    with pytest.raises(ReplayError, match=r"decision 3 is malformed"):
        LiveSession.from_recording(broken, engine=engine)
