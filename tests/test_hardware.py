"""What hardware may do (Arm ARM choices, each a [machine] what-if, default off) and the
wider break_before_make check: each changes exactly what its rule allows, on both cores."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine import bits as B
from engine.core import new_machine
from engine.report import explore_json
from engine.scenario import ScenarioError, load_scenario, parse_scenario
from engine.spec import build_spec

ROOT = Path(__file__).resolve().parents[1] / "scenarios"
ENGINES = ["cython", "python"]


def explore(text_or_path, engine, **machine):
    """Explore a scenario with [machine] keys overridden (key = value lines appended)."""
    text = Path(text_or_path).read_text() if isinstance(text_or_path, Path) else text_or_path
    for key, value in machine.items():
        text = text.replace(f"{key} = true", "").replace("[machine]\n", "[machine]\n", 1)
        text = text.replace("[machine]\n", f"[machine]\n{key} = {str(value).lower()}\n", 1)
    return explore_json(build_spec(parse_scenario(text, "t.toml")), engine, 2_000_000)


@pytest.mark.parametrize("engine", ENGINES)
def test_a_faulting_access_that_sets_af_races_a_plain_rmw_only_with_the_what_if(engine):
    path = ROOT / "whatif_af_on_permission_fault_v4.6.toml"
    with_it = explore(path, engine, af_on_permission_fault=True)
    without = explore(path, engine, af_on_permission_fault=False)
    assert [v["check"] for v in with_it["violations"]] == ["no_lost_update"]
    assert with_it["violations"][0]["bits"] == ["AF"]
    assert without["violations"] == []
    # the update is its own hardware micro-step, taken before the permission fault
    kinds = [(e["kind"], e.get("fault")) for e in with_it["violations"][0]["trace"]]
    assert ("hw-update", "permission") in kinds


@pytest.mark.parametrize("engine", ENGINES)
def test_af_and_dirty_as_two_updates_let_plain_aging_lose_the_dirty_state(engine):
    path = ROOT / "whatif_af_dirty_separate_v4.6.toml"
    with_it = explore(path, engine, af_dirty_separate=True)
    without = explore(path, engine, af_dirty_separate=False)
    # the reverted S2AP bit, and the page's dirty state nothing recorded (no_lost_dirty)
    assert [(v["check"], v["bits"]) for v in with_it["violations"]] == [
        ("no_lost_update", ["S2AP"]),
        ("no_lost_dirty", ["S2AP"]),
    ]
    assert without["violations"] == []
    updates = [e for e in with_it["violations"][0]["trace"] if e["kind"] == "hw-update"]
    af_first = int(updates[0]["new"], 16) ^ int(updates[0]["old"], 16)
    assert af_first == B.AF  # AF alone first: never dirty with AF clear (I_DSHLJ)


@pytest.mark.parametrize("engine", ENGINES)
def test_an_evicted_tlb_entry_makes_the_vcpu_walk_again(engine):
    path = ROOT / "whatif_tlb_evict_v6.6.toml"
    with_it = explore(path, engine, tlb_evict=True)
    without = explore(path, engine, tlb_evict=False)
    faults = {f["actors"]["vcpu0"]["faults"] for f in with_it["final_states"]}
    assert faults == {0, 1}
    assert {f["actors"]["vcpu0"]["faults"] for f in without["final_states"]} == {0}
    assert not without["expect"]["passed"]
    assert "evict" in with_it["final_states"][0]["example_schedule"]


TWO_PAGES = """
name = "two pages in one TLB"
kernel = "v6.6"
[machine]
hafdbs = 1
{extra}
[[map]]
ipa = 0x8000_0000
pa = 0x4000_0000
count = 2
[[actor]]
name = "vcpu0"
kind = "vcpu"
do = ["read 0x8000_0000"]
tlb = [0x8000_0000, 0x8000_1000]
[[actor]]
name = "host0"
kind = "host"
do = ["unmap 0x8000_0000"]
"""


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("vmalle1, left", [(False, [0x8000_1000]), (True, [])])
def test_kvm_tlbi_by_ipa_also_drops_every_entry_with_the_vmalle1_what_if(engine, vmalle1, left):
    extra = "tlbi_vmalle1 = true" if vmalle1 else ""
    m = new_machine(build_spec(parse_scenario(TWO_PAGES.format(extra=extra))), engine)
    while not m.done(1):
        m.step(1)
    assert [e[0] for e in m.actor_view(0)["tlb"]] == left


@pytest.mark.parametrize(
    "machine, key, words",
    [
        (
            "hafdbs = 1\nha = false\naf_on_permission_fault = true",
            "af_on_permission_fault",
            "ha = true",
        ),
        ("hafdbs = 2\naf_dirty_separate = true", "af_dirty_separate", "hd = true"),
        ("tlb = false\ntlb_evict = true", "tlb_evict", "tlb = true"),
        ("tlb = false\ntlbi_vmalle1 = true", "tlbi_vmalle1", "tlb = true"),
        ("tlb_evict = 1", "tlb_evict", "must be a boolean"),
    ],
)
def test_a_what_if_without_what_it_needs_is_one_error_naming_it(machine, key, words):
    text = TWO_PAGES.format(extra="").replace("hafdbs = 1\n", machine + "\n")
    with pytest.raises(ScenarioError) as e:
        parse_scenario(text, "t.toml")
    assert f"t.toml: machine.{key}: " in str(e.value) and words in str(e.value)


def test_the_evict_actor_name_is_reserved_only_with_tlb_evict():
    text = TWO_PAGES.format(extra="").replace('"host0"', '"evict"')
    parse_scenario(text)
    with pytest.raises(ScenarioError, match=r"actor\[1\]\.name: 'evict' names the hardware"):
        parse_scenario(text.replace("hafdbs = 1\n", "hafdbs = 1\ntlb_evict = true\n"))


def test_every_what_if_is_off_by_default():
    m = load_scenario(ROOT / "seed_race_seed.toml").machine
    assert not (m.af_on_permission_fault or m.af_dirty_separate or m.tlb_evict or m.tlbi_vmalle1)


# --- break_before_make: memory type and shareability too (Arm ARM D8.17.1 R_WHZWS) ---------

REFAULT = """
name = "refault"
kernel = "v4.6"
[machine]
hafdbs = 0
[[map]]
ipa = 0x8000_0000
pa = 0x4000_0000
[[actor]]
name = "vcpu0"
kind = "vcpu"
do = ["read 0x8000_0000"]
"""


def refault_over(engine, old_attrs_xor):
    """The vCPU's refault installs the memslot's page over a break whose old leaf differed
    from it in `old_attrs_xor` (and had no TLB invalidation yet)."""
    from engine.spec import walk_image

    spec = build_spec(parse_scenario(REFAULT))
    m = new_machine(spec, engine)
    state = m.get_state()
    desc, _, addr = walk_image(spec.mem, spec.geometry, 0x8000_0000)
    mem = bytearray(state["mem"])
    slot = (addr - B.TABLE_BASE) >> 3
    mem[8 * slot : 8 * slot + 8] = bytes(8)
    state["mem"] = bytes(mem)
    state["pending"] = [[addr, desc ^ old_attrs_xor, 0x8000_0000, 4096]]
    m.set_state(state)
    while not m.done(0):
        m.step(0)
    return m.violations


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize(
    "change", [B.MEMATTR_MASK & (0xD << B.MEMATTR_SHIFT), 1 << B.SH_SHIFT], ids=["memattr", "sh"]
)
def test_a_new_memory_type_or_shareability_without_tlbi_breaks_break_before_make(engine, change):
    (v,) = refault_over(engine, change)
    assert v[0] == 1 and v[5] == change


@pytest.mark.parametrize("engine", ENGINES)
def test_permissions_and_access_flag_need_no_break(engine):
    assert refault_over(engine, B.S2AP_W | B.AF) == []
