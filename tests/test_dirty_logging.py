"""Dirty logging, table lifetime and lost dirty state (SCENARIOS.md extension), on both cores.

Each test pins one kernel behaviour with an explicit schedule: what user_mem_abort does to a
block while logging, read faults mapping read-only, get_dirty_log harvesting and
write-protecting, unmap freeing the tables it empties and faults allocating them, the 6.6
relax-or-map decision, and the no_lost_dirty check firing (and only) when dirty state is lost.
"""

import pytest

from engine import bits as B
from engine import isa as I
from engine.core import new_machine
from engine.scenario import ScenarioError, parse_scenario
from engine.spec import build_spec

ENGINES = ("cython", "python")


def scenario(kernel, maps, host, vcpu, machine="hafdbs = 1"):
    text = f'name = "t"\nkernel = "{kernel}"\n[machine]\n{machine}\n'
    for ipa, pa, extra in maps:
        text += f"[[map]]\nipa = {ipa:#x}\npa = {pa:#x}\n{extra}\n"
    text += f'[[actor]]\nname = "host0"\nkind = "host"\ndo = {host!r}\n'.replace("'", '"')
    text += f'[[actor]]\nname = "vcpu0"\nkind = "vcpu"\ndo = {vcpu!r}\n'.replace("'", '"')
    return build_spec(parse_scenario(text, "t.toml"))


def finish(m, actor):
    while not m.done(actor):
        m.step(actor)


def kinds(m):
    return [I.EVENT_KIND_NAMES[e[4]] for e in m.event_tuples()]


BLOCK = [(0x8000_0000, 0x4000_0000, 'size = "2M"')]
PAGE = [(0x8000_0000, 0x4000_0000, "")]


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("kernel", ["v4.6", "seed", "v6.6"])
def test_a_write_after_log_start_turns_a_block_into_one_writable_dirty_page(engine, kernel):
    spec = scenario(kernel, BLOCK, ["log_start 0x8000_0000 2M"], ["write 0x8012_3000"])
    m = new_machine(spec, engine)
    finish(m, 0)
    finish(m, 1)
    desc, level = m.walk(0x8012_3000)
    assert level == 3 and desc & B.S2AP_W and desc & B.OA_MASK == 0x4012_3000
    assert m.walk(0x8000_0000) == (0, 3)  # the rest of the block faults in lazily
    assert m.dirty_log()["bitmap"] == [0x8012_3000]
    # 4.7 stage2_dissolve_pmd / 6.6 stage2_try_break_pte: the block is cleared and its TLB
    # entries invalidated before the table goes in.
    assert "tlbi" in kinds(m)[kinds(m).index("fault") :]


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("kernel", ["seed", "v6.6"])
def test_a_read_fault_while_logging_maps_the_page_read_only(engine, kernel):
    spec = scenario(
        kernel, PAGE, ["log_start 0x8000_0000", "unmap 0x8000_0000"], ["read 0x8000_0000"]
    )
    m = new_machine(spec, engine)
    finish(m, 0)
    finish(m, 1)
    desc, level = m.walk(0x8000_0000)
    assert level == 3 and desc & B.DESC_VALID
    assert desc & B.S2AP_MASK == B.S2AP_R
    assert m.dirty_log()["bitmap"] == []


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("kernel", ["v4.6", "seed", "v6.6", "v6.12"])
@pytest.mark.parametrize("s2ap", ["none", "wo"])
def test_a_read_permission_fault_is_refused_with_efault_and_changes_nothing(engine, kernel, s2ap):
    """user_mem_abort: `if (fault_status == FSC_PERM && !write_fault) return -EFAULT` (every
    generation); only the write that follows maps the page writable."""
    spec = scenario(
        kernel,
        [(0x8000_0000, 0x4000_0000, f's2ap = "{s2ap}"')],
        ["flush_tlb"],
        ["read 0x8000_0000"],
    )
    m = new_machine(spec, engine)
    before = m.walk(0x8000_0000)
    finish(m, 1)
    assert kinds(m)[-1] == "fault"  # no lock taken, nothing stored: KVM_RUN fails
    assert m.walk(0x8000_0000) == before
    m.append_op(1, _op(spec, "write 0x8000_0000", "vcpu"))
    finish(m, 1)
    desc, level = m.walk(0x8000_0000)
    assert level == 3 and desc & B.S2AP_W  # "none": user_mem_abort maps it RW


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("kernel", ["seed", "v6.6"])
def test_get_dirty_log_harvests_and_write_protects_the_dirty_pages(engine, kernel):
    spec = scenario(
        kernel,
        [(0x8000_0000, 0x4000_0000, "count = 4")],
        ["log_start 0x8000_0000 16K"],
        ["write 0x8000_1000", "write 0x8000_3000"],
    )
    m = new_machine(spec, engine)
    finish(m, 0)
    finish(m, 1)
    assert m.dirty_log()["bitmap"] == [0x8000_1000, 0x8000_3000]
    m.append_op(0, _op(spec, "get_dirty_log 0x8000_0000 16K"))
    finish(m, 0)
    log = m.dirty_log()
    assert (log["bitmap"], log["harvested"]) == ([], [0x8000_1000, 0x8000_3000])
    for ipa in (0x8000_1000, 0x8000_3000):
        assert m.walk(ipa)[0] & B.S2AP_MASK == B.S2AP_R
    assert kinds(m)[-1] == "tlbi"  # if (is_dirty) kvm_flush_remote_tlbs()


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("kernel", ["seed", "v6.6"])
def test_dirty_bitmap_words_count_from_the_memslot_base(engine, kernel):
    """mark_page_dirty_in_slot sets bit gfn - memslot->base_gfn; kvm_get_dirty_log_protect
    harvests 64 of them per xchg. A memslot at 0x8001_0000 (not 256K-aligned) with dirty pages
    at +0x10000 and +0x3f000 has both in its word 0: one harvest, bits 16 and 63, then
    stage2_wp_range from the first to the last (the words of IPA 0 would split them)."""
    spec = scenario(
        kernel,
        [(0x8001_0000, 0x4001_0000, "count = 128")],
        ["log_start 0x8001_0000 512K"],
        ["write 0x8002_0000", "write 0x8004_f000"],
    )
    m = new_machine(spec, engine)
    finish(m, 0)
    finish(m, 1)
    m.clear_events()
    m.append_op(0, _op(spec, "get_dirty_log 0x8001_0000 512K"))
    finish(m, 0)
    harvests = [(e[9], e[10]) for e in m.event_tuples() if e[4] == I.EV_HARVEST]
    assert harvests == [(0x8001_0000, 1 << 16 | 1 << 63), (0x8005_0000, 0)]
    assert m.dirty_log()["harvested"] == [0x8002_0000, 0x8004_F000]


def test_a_harvest_never_crosses_a_memslot_and_skips_the_gaps_between_them():
    from engine.dirtylog import DirtyLog

    log = DirtyLog([(0x8000_0000, 0x8000_2000), (0x8010_0000, 0x8020_0000)])
    for page in (0x8000_1000, 0x8010_0000, 0x8013_F000, 0x8014_0000):
        log.mark(page)
    assert log.harvest(0x8000_0000, 0x8000_0000, 0x8020_0000) == (
        0x8000_0000,
        0b10,
        [0x8000_1000],
        0x8000_2000,  # the memslot ends inside its first word
    )
    word, mask, pages, nxt = log.harvest(0x8000_2000, 0x8000_0000, 0x8020_0000)
    assert (word, mask, pages, nxt) == (
        0x8010_0000,
        1 | 1 << 63,
        [0x8010_0000, 0x8013_F000],
        0x8014_0000,
    )
    assert log.harvest(nxt, 0x8000_0000, 0x8014_1000)[1:3] == (1, [0x8014_0000])
    assert log.harvest(0x8030_0000, 0, 0x8040_0000) == (0x8040_0000, 0, [], 0x8040_0000)
    assert log.bitmap == () and len(log.harvested) == 4


def _op(spec, text, kind="host"):
    from engine.scenario import parse_op
    from engine.spec import op_spec

    return op_spec(spec.program, parse_op(text, kind, 40), spec.scenario)


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("kernel", ["v4.6", "seed", "v6.6"])
def test_unmap_frees_the_tables_it_empties_and_a_refault_allocates_new_ones(engine, kernel):
    spec = scenario(kernel, PAGE, ["unmap 0x8000_0000"], ["read 0x8000_0000"])
    m = new_machine(spec, engine)
    pages = len(m.mem_array()) // B.PTRS_PER_TABLE
    finish(m, 0)
    # The pte table, then the pmd table, emptied: the level-1 entry is cleared.
    assert m.walk(0x8000_0000) == (0, 1)
    finish(m, 1)
    desc, level = m.walk(0x8000_0000)
    assert level == 3 and desc & B.DESC_VALID
    # Two new table pages (pmd and pte tables) from the memory cache; the freed ones stay.
    assert len(m.mem_array()) // B.PTRS_PER_TABLE == pages + 2


@pytest.mark.parametrize("engine", ENGINES)
def test_a_walk_racing_the_teardown_reads_the_freed_table_as_it_was_left(engine):
    spec = scenario("seed", PAGE, ["unmap 0x8000_0000"], ["read 0x8000_0000"], "hafdbs = 0")
    m = new_machine(spec, engine)
    m.step(1)  # the walk reads the level-1 entry
    m.step(1)  # ... and the level-2 entry: it now holds the pte table's address
    finish(m, 0)  # unmap clears the pte, frees the pte and pmd tables
    m.step(1)  # the walk reads the freed pte table: the cleared entry
    fault = m.event_tuples()[-1]
    assert I.EVENT_KIND_NAMES[fault[4]] == "fault" and fault[7] == 3 and fault[11] == 0


@pytest.mark.parametrize("engine", ENGINES)
def test_v66_relaxes_permissions_only_when_the_mapping_size_is_the_fault_granule(engine):
    # Not logging: a permission fault on the read-only block relaxes it in place.
    spec = scenario(
        "v6.6",
        [(0x8000_0000, 0x4000_0000, 'size = "2M"\ns2ap = "ro"')],
        ["flush_tlb"],
        ["write 0x8012_3000"],
    )
    m = new_machine(spec, engine)
    pages = len(m.mem_array())
    finish(m, 1)
    assert "cas-ok" in kinds(m) and len(m.mem_array()) == pages  # no table taken
    desc, level = m.walk(0x8012_3000)
    assert level == 2 and desc & B.S2AP_W
    # Logging: vma_pagesize is 4K, the fault granule 2M: kvm_pgtable_stage2_map splits.
    spec = scenario("v6.6", BLOCK, ["log_start 0x8000_0000 2M"], ["write 0x8012_3000"])
    m = new_machine(spec, engine)
    finish(m, 0)
    finish(m, 1)
    assert m.walk(0x8012_3000)[1] == 3


@pytest.mark.parametrize("kernel", ["v4.6", "seed"])
def test_a_1g_block_is_bad_input_where_the_kernel_never_makes_one(kernel):
    with pytest.raises(ScenarioError) as e:
        scenario(
            kernel, [(0x4000_0000, 0x4000_0000, 'size = "1G"')], ["flush_tlb"], ["read 0x4000_0000"]
        )
    assert e.value.where == "map[0].size" and "1G" in e.value.message


@pytest.mark.parametrize("engine", ENGINES)
def test_no_lost_dirty_b_fires_when_software_clears_hardware_dirty_state(engine):
    dbm = [(0x8000_0000, 0x4000_0000, 's2ap = "ro"\ndbm = true')]
    machine = "hafdbs = 2\nha = true\nhd = true"
    spec = scenario("seed", dbm, ["set_readonly 0x8000_0000"], ["write 0x8000_0000"], machine)
    # the write first (the walker sets S2AP[1]), then set_readonly clears it: lost
    m = new_machine(spec, engine)
    finish(m, 1)
    finish(m, 0)
    assert [I.CHECK_NAMES[v[0]] for v in m.violations] == ["no_lost_dirty"]
    # set_readonly first, then the write: the page ends dirty in hardware, nothing lost
    m = new_machine(spec, engine)
    finish(m, 0)
    finish(m, 1)
    assert m.violations == []


@pytest.mark.parametrize("engine", ENGINES)
def test_no_lost_dirty_a_fires_when_a_logged_write_ends_nowhere(engine):
    dbm = [(0x8000_0000, 0x4000_0000, "dbm = true")]
    machine = "hafdbs = 2\nhd = true"
    spec = scenario(
        "v6.6", dbm, ["log_start 0x8000_0000", "wp 0x8000_0000"], ["write 0x8000_0000"], machine
    )
    m = new_machine(spec, engine)
    while m.actor_view(0)["op_i"] == 0:  # log_start runs to its end
        m.step(0)
    finish(m, 1)  # the write sets the dirty state in hardware (no fault: no bitmap)
    finish(m, 0)  # wp clears it
    lost = sorted({(I.CHECK_NAMES[v[0]], v[4]) for v in m.violations})
    assert lost == [("no_lost_dirty", 0x8000_0000)]
    assert len(m.violations) == 2  # part (b) at wp's store, part (a) at the end
    # Without HD the write faults, lands in the bitmap: nothing lost.
    spec = scenario(
        "v6.6", PAGE, ["log_start 0x8000_0000", "wp 0x8000_0000"], ["write 0x8000_0000"]
    )
    m = new_machine(spec, engine)
    while m.actor_view(0)["op_i"] == 0:
        m.step(0)
    finish(m, 1)
    finish(m, 0)
    assert m.violations == [] and m.dirty_log()["bitmap"] == [0x8000_0000]
