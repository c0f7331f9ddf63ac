"""A scenario turned into what an engine core runs: table image, code, actors.

Both cores (engine/_core.pyx and engine/twin.py) are built from one MachineSpec, so they
start from the same bits and differ only in how they execute.
"""

from __future__ import annotations

from array import array
from dataclasses import dataclass

from . import bits as B
from . import isa as I
from .commits import GENERATIONS, MMU_C
from .layout import Geometry, Image, Memslot, build_image
from .programs import Program, program_for
from .scenario import EVICT_ACTOR, LOGGING_OPS, Op, Scenario, ScenarioError

# KVM_PHYS_SHIFT was fixed at 40 before Linux 4.20: the whole arch/arm/kvm/mmu.c era.
FIXED_IPA_KERNELS = tuple(k for k, g in GENERATIONS.items() if g.base == MMU_C)
# Kernels whose stage 2 never has level-1 (1G) blocks: 4.7 user_mem_abort maps PMD blocks at
# most and stage2_wp_puds has BUG_ON(stage2_pud_huge(*pud)) ("PUD not supported"). Stage-2
# PUD hugepages came with Linux 5.0 ("KVM: arm64: Support PUD hugepage in stage2"), in the
# virt/kvm/arm/mmu.c code the kvm_pgtable code replaced.
NO_PUD_BLOCK_KERNELS = FIXED_IPA_KERNELS


@dataclass(frozen=True)
class OpSpec:
    name: str
    entry: int  # pc of the op's program
    ipa: int
    end: int  # exclusive end of the IPA range (ipa + 1 = "the one leaf at IPA")
    write: int  # 1 for a guest store
    text: str

    def row(self) -> list:
        """The fields as a list, as get_state stores them (dataclasses.astuple deep-copies
        and costs 0.2 ms per op: a snapshot of 512 queued ops took 100 ms)."""
        return [self.name, self.entry, self.ipa, self.end, self.write, self.text]


@dataclass(frozen=True)
class ActorSpec:
    name: str
    kind: int  # isa.KIND_VCPU / KIND_HOST
    ops: tuple[OpSpec, ...]
    tlb: tuple[tuple[int, int, int, int], ...]  # preloaded (ipa base, size, descriptor, desc PA)
    role: str = ""  # "vcpu", "host", or "hardware" (machine.tlb_evict's evictions)


@dataclass
class MachineSpec:
    scenario: Scenario
    geometry: Geometry
    mem: array  # initial table memory, one uint64 per descriptor from TABLE_BASE
    memslots: tuple[Memslot, ...]
    program: Program
    actors: tuple[ActorSpec, ...]
    ha: bool  # effective: VTCR_EL2.HA && HAFDBS >= 1
    hd: bool  # effective: VTCR_EL2.HD && HA && HAFDBS >= 2 (QEMU ptw.c: .hd = ha && hd)
    tlb: bool
    count_faults: bool = False  # a `faults` predicate reads isa.FAULTS
    # Arm ARM choices ([machine] what-ifs; engine/twin.py _target, _tlbi, OP_TLB_EVICT)
    af_on_permission_fault: bool = False
    af_dirty_separate: bool = False
    tlbi_vmalle1: bool = False

    @property
    def vtcr(self) -> int:
        m = self.scenario.machine
        return self.geometry.vtcr(m.ha, m.hd)

    @property
    def actor_names(self) -> list[str]:
        return [a.name for a in self.actors]


def walk_image(mem, geometry: Geometry, ipa: int) -> tuple[int, int, int]:
    """(descriptor, level, descriptor PA) of the entry that translates `ipa`: a leaf, or the
    first invalid entry on the way. Used outside the cores (final states, TLB preload)."""
    table = B.TABLE_BASE
    level = geometry.start_level
    while True:
        index = ipa >> B.level_shift(level)
        index &= (geometry.start_entries if level == geometry.start_level else B.PTRS_PER_TABLE) - 1
        desc_pa = table + 8 * index
        desc = mem[(desc_pa - B.TABLE_BASE) >> 3]
        if level < 3 and desc & B.DESC_VALID and desc & B.DESC_TYPE:
            table = desc & B.OA_MASK
            level += 1
            continue
        return desc, level, desc_pa


def op_spec(program: Program, op: Op, scenario: Scenario | None = None) -> OpSpec:
    """An operation as a core runs it; no SIZE means "the one leaf at IPA" (end = ipa + 1;
    for the dirty-logging operations the end of the [[map]] leaf holding IPA, which the
    memslot flag and bitmap then cover page by page)."""
    ipa = op.ipa or 0
    end = ipa + op.size if op.size else ipa + 1
    if op.name in LOGGING_OPS and not op.size:
        hit = scenario.leaf_at(ipa) if scenario is not None else None
        end = hit[0] + hit[1].size if hit else ipa + B.PAGE_SIZE
    return OpSpec(op.name, program.entries[op.name], ipa, end, int(op.name == "write"), op.text)


def actor_names_of(scenario: Scenario) -> list[str]:
    """The actors a machine of this scenario has, in order (what build_spec makes,
    without building the tables): the scenario's, then the what-if evictor."""
    names = [a.name for a in scenario.actors]
    if scenario.machine.tlb_evict:
        names.append(EVICT_ACTOR)
    return names


def build_spec(scenario: Scenario) -> MachineSpec:
    m = scenario.machine
    if scenario.kernel in FIXED_IPA_KERNELS and m.ipa_bits != 40:
        raise ScenarioError(
            scenario.path,
            "machine.ipa_bits",
            f"kernel {scenario.kernel!r} has a fixed 40-bit IPA space (KVM_PHYS_SHIFT); "
            f"ipa_bits = {m.ipa_bits} needs a kvm_pgtable kernel ('v6.6')",
        )
    geometry = Geometry.for_ipa_bits(m.ipa_bits)
    for i, mp in enumerate(scenario.maps):
        if mp.size == 1 << B.LEVEL_SHIFT_1 and scenario.kernel in NO_PUD_BLOCK_KERNELS:
            raise ScenarioError(
                scenario.path,
                f"map[{i}].size",
                f"kernel {scenario.kernel!r} never creates 1G (level-1) stage-2 blocks: "
                "user_mem_abort maps 2M blocks at most and stage2_wp_puds BUG()s on a huge "
                "pud; use 2M blocks or kernel 'v6.6'",
            )
        if B.leaf_level_for_size(mp.size) < geometry.start_level:
            raise ScenarioError(
                scenario.path,
                f"map[{i}].size",
                f"a {mp.size >> 30}G block is a level-1 leaf, but with ipa_bits = {m.ipa_bits} "
                f"the stage-2 walk starts at level {geometry.start_level} "
                "(use 2M blocks or ipa_bits >= 35)",
            )
    image: Image
    image, memslots = build_image(scenario)
    program = program_for(scenario.kernel, scenario.commits)
    actors = []
    for actor in scenario.actors:
        ops = [op_spec(program, op, scenario) for op in actor.ops]
        preload = []
        for ipa in actor.tlb:
            desc, level, desc_pa = walk_image(image.mem, image.geometry, ipa)
            size = 1 << B.level_shift(level)
            preload.append((ipa & ~(size - 1), size, desc, desc_pa))
        kind = I.KIND_VCPU if actor.kind == "vcpu" else I.KIND_HOST
        actors.append(ActorSpec(actor.name, kind, tuple(ops), tuple(preload), actor.kind))
    if m.tlb_evict:  # one eviction of each vCPU's whole TLB, at any point of any schedule
        evictions = tuple(
            OpSpec("tlb_evict", program.entries["tlb_evict"], j, j + 1, 0, f"tlb_evict {a.name}")
            for j, a in enumerate(actors)
            if a.kind == I.KIND_VCPU
        )
        actors.append(ActorSpec(EVICT_ACTOR, I.KIND_HOST, evictions, (), "hardware"))
    return MachineSpec(
        scenario=scenario,
        geometry=image.geometry,
        mem=image.mem,
        memslots=tuple(memslots),
        program=program,
        actors=tuple(actors),
        ha=m.ha and m.hafdbs >= B.HAFDBS_AF,
        hd=m.hd and m.ha and m.hafdbs >= B.HAFDBS_AF_DBM,
        tlb=m.tlb,
        count_faults=_reads_faults(scenario),
        af_on_permission_fault=m.af_on_permission_fault,
        af_dirty_separate=m.af_dirty_separate,
        tlbi_vmalle1=m.tlbi_vmalle1,
    )


def _reads_faults(scenario: Scenario) -> bool:
    ex = scenario.expect
    preds = (ex.always + ex.sometimes + ex.never) if ex else ()
    return any(name == "faults" for p in preds if p.actor for name, _ in p.fields)
