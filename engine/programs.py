"""KVM's stage-2 code paths, per kernel generation, as micro-step programs.

Each path is written once here over the instruction set of engine/isa.py; the Cython
core and the pure-Python twin both interpret the assembled code. Every instruction
carries the kernel (or hardware) line it models, shown to users as "the code line this
actor is at".

Modelling rules that apply to all generations:
- A load of a descriptor, a store, an exclusive, a cmpxchg, a lock operation, a TLB
  invalidation and each read of a hardware walk is one micro-step; register work joins
  the step before the next shared access.
- Plain C dereferences of the same non-volatile `pte_t *` with nothing in between that
  the compiler must respect (v4.6 `pte_young(*pte)` then `*pte = pte_mkold(*pte)`) are
  folded into one load, as the compiler folds them. `asm volatile` with a "+Q" operand
  (the seed's LDXR/STXR), READ_ONCE/WRITE_ONCE and cmpxchg are never folded.
- Host operations hold kvm->mmu_lock as their kernel callers do (the mmu-notifier
  handlers in virt/kvm/kvm_main.c, kvm_mmu_wp_memory_region, the fault handlers).
- Table pages are never freed or allocated while actors run (the model keeps the tables
  a scenario's [[map]] built; KVM would free empty tables on unmap and refill them from
  its memory cache on the next fault).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache

from . import bits as B
from . import isa as I
from .commits import GENERATIONS, LOCAL_TLBI_RELAX, PGTABLE, RELAX_EAGAIN_TLBI, SEED, TEST_AGE_RANGE

ALL = (1 << 64) - 1

# stage2_pte_needs_update (v6.6 pgtable.c): only these bits may differ for the map
# walker to leave the PTE alone and let the permission fault path relax them.
S2_PERMS = B.S2AP_MASK | B.XN_MASK
# kvm_pgtable_stage2_map leaves for a data fault: no KVM_PGTABLE_PROT_X -> XN.
V66_XN = 2 << B.XN_SHIFT


@dataclass
class Program:
    """Assembled code of one generation: instructions, constants, and where ops start."""

    kernel: str
    commits: frozenset[str] = frozenset()  # the modelled commits (engine/commits.py) applied
    code: list[tuple[int, int, int, int]] = field(default_factory=list)
    lines: list[str] = field(default_factory=list)  # the source line each instruction models
    consts: list[int] = field(default_factory=lambda: [0, 1, ALL])
    entries: dict[str, int] = field(default_factory=dict)
    sources: dict[str, str] = field(default_factory=dict)  # op -> kernel function(s) it follows
    _labels: dict[str, int] = field(default_factory=dict)
    _fixups: list[tuple[int, int, str]] = field(default_factory=list)

    def has(self, commit: str) -> bool:
        """Whether modelled commit `commit` (its 12-digit id) is applied."""
        return commit in self.commits

    # --- assembler ---
    def k(self, value: int) -> int:
        """Constant-pool index of `value`."""
        if value not in self.consts:
            self.consts.append(value)
        return self.consts.index(value)

    def label(self, name: str) -> None:
        assert name not in self._labels, name
        self._labels[name] = len(self.code)

    def op(self, name: str, source: str) -> None:
        """Start the program of operation `name`."""
        self.entries[name] = len(self.code)
        self.sources[name] = source

    def emit(self, opcode: int, a: int | str = 0, b: int | str = 0, c: int | str = 0, *, at: str):
        operands = []
        for position, value in enumerate((a, b, c)):
            if isinstance(value, str):  # a label, resolved at link time
                self._fixups.append((len(self.code), position, value))
                value = 0
            operands.append(value)
        self.code.append((opcode, *operands))
        self.lines.append(at)

    def link(self) -> Program:
        for index, position, name in self._fixups:
            instr = list(self.code[index])
            instr[1 + position] = self._labels[name]
            self.code[index] = tuple(instr)
        self._fixups.clear()
        self.lock_held = self._lock_held()
        return self

    def successors(self, pc: int) -> list[int]:
        op, a, b, c = self.code[pc]
        if op == I.OP_END:
            return []
        if op == I.OP_B:
            return [a]
        if op in (I.OP_BZ, I.OP_BNZ, I.OP_BEQ, I.OP_BEQK, I.OP_BNEK, I.OP_BLT):
            return [pc + 1, c]
        if op in (I.OP_SWALK, I.OP_RWALK, I.OP_HW_ACCESS):
            return [pc, pc + 1, b]
        return [pc + 1]

    def _lock_held(self) -> list[int]:
        """The kvm->mmu_lock mode an actor holds at each pc (-1: none), by data flow from
        every op's entry; a path that could reach a pc holding the lock differently is a bug
        in a program."""
        held = [None] * len(self.code)
        work = [(entry, -1) for entry in self.entries.values()]
        while work:
            pc, mode = work.pop()
            if held[pc] is not None:
                assert held[pc] == mode, (
                    f"{self.kernel}: pc {pc} reached with lock {held[pc]} and {mode}"
                )
                continue
            held[pc] = mode
            op, a, _, _ = self.code[pc]
            after = a if op == I.OP_LOCK else -1 if op == I.OP_UNLOCK else mode
            assert op != I.OP_END or mode == -1, f"{self.kernel}: pc {pc} ends holding the lock"
            work.extend((nxt, after) for nxt in self.successors(pc))
        return [-1 if h is None else h for h in held]


# ---------------------------------------------------------------------------------------
# Shared pieces


def _guest_access(p: Program) -> None:
    """A guest load or store: the vCPU's stage-2 translation in hardware.

    Follows QEMU target/arm/ptw.c get_phys_addr_lpae: TLB, walk, Access Flag (HA),
    dirty state (HD + DBM), permission check on the would-be descriptor, one atomic
    compare-and-swap (arm_casq_ptw), restart on change (Arm ARM I_YZSVV). A fault runs
    the generation's kvm_handle_guest_abort, then the access is retried.
    """
    for name in ("read", "write"):
        p.op(
            name,
            "hardware stage-2 walk (QEMU ptw.c get_phys_addr_lpae); on a fault, "
            "arch/arm64/kvm/mmu.c: kvm_handle_guest_abort",
        )
    p.label("access")
    p.emit(I.OP_HW_ACCESS, 0, "fault", at="guest ldr/str: TLB lookup, stage-2 walk (ptw.c)")
    p.emit(I.OP_END, at="access complete")


def _hardware_ops(p: Program) -> None:
    """What the hardware does on its own (a [machine] what-if adds the actor that runs it)."""
    p.op(
        "tlb_evict",
        "Arm ARM D8.14: a TLB may evict a cached entry at any time; the next access re-walks",
    )
    p.emit(I.OP_TLB_EVICT, I.IPA, at="the TLB of vCPU [IPA] loses every entry (eviction)")
    p.emit(I.OP_END, at="evicted")


def _walk_init(p: Program, kind: str) -> None:
    """Start a software walk at the start-level table (kvm->arch.pgd / pgt->pgd)."""
    p.emit(I.OP_WALK_INIT, 1 if kind == "range" else 0, at="walk from kvm->arch.pgd")


# ---------------------------------------------------------------------------------------
# v4.6 and seed: arch/arm/kvm/mmu.c (shared by arm and arm64), asm/kvm_mmu.h


def _v4_fault_handler(p: Program) -> None:
    """kvm_handle_guest_abort (arch/arm/kvm/mmu.c, 4.6/4.7): FSC_ACCESS -> handle_access_fault,
    else user_mem_abort; both under spin_lock(&kvm->mmu_lock)."""
    K = p.k
    p.label("fault")
    p.emit(
        I.OP_BNEK,
        I.STATUS,
        K(I.FAULT_ACCESS_FLAG),
        "uma",
        at="kvm_handle_guest_abort: if (fault_status == FSC_ACCESS)",
    )
    # handle_access_fault: plain mkyoung under the lock (the seed keeps it: only hardware
    # AF, not DBM, is enabled for stage 2, so it need not be atomic).
    p.emit(I.OP_LOCK, I.LOCK_SPIN, at="handle_access_fault: spin_lock(&vcpu->kvm->mmu_lock)")
    _walk_init(p, "one")
    p.emit(I.OP_SWALK, I.R0, "haf_out", 0, at="pmd = stage2_get_pmd(vcpu->kvm, NULL, fault_ipa)")
    p.emit(I.OP_BNEK, I.LEVEL, K(3), "haf_young", at="if (kvm_pmd_huge(*pmd))")
    p.emit(I.OP_LOAD, I.R0, at="pte = pte_offset_kernel(pmd, fault_ipa); if (pte_none(*pte))")
    p.emit(I.OP_BZ, I.R0, K(B.DESC_VALID), "haf_out", at="if (pte_none(*pte)) goto out")
    p.label("haf_young")
    p.emit(I.OP_ORR, I.R0, I.R0, K(B.AF), at="pte_mkyoung(*pte)")
    p.emit(I.OP_STORE, I.R0, K(B.AF), at="*pte = pte_mkyoung(*pte)")
    p.emit(I.OP_LOAD, I.R0, at="pfn = pte_pfn(*pte)")
    p.label("haf_out")
    p.emit(I.OP_UNLOCK, I.LOCK_SPIN, at="out: spin_unlock(&vcpu->kvm->mmu_lock)")
    p.emit(I.OP_B, "access", at="return to the guest: retry the access")
    # user_mem_abort: a new leaf from the memslot, installed by stage2_set_pte /
    # stage2_set_pmd_huge with break-before-make (plain stores, kvm_tlb_flush_vmid_ipa).
    p.label("uma")
    new_pte = "kvm_s2pte_mkwrite(new_pte)" if p.has(SEED) else "kvm_set_s2pte_writable(&new_pte)"
    p.emit(
        I.OP_MEMSLOT,
        I.R1,
        K(B.PAGE_S2 | B.S2AP_RW),
        K(B.BLOCK_S2 | B.S2AP_RW),
        at=f"user_mem_abort: gfn_to_pfn_prot(); new_pte = pfn_pte(pfn, PAGE_S2); {new_pte}",
    )
    p.emit(I.OP_BZ, I.R1, K(ALL), "mmio", at="no memslot: io_mem_abort")
    p.emit(I.OP_LOCK, I.LOCK_SPIN, at="user_mem_abort: spin_lock(&kvm->mmu_lock)")
    _walk_init(p, "one")
    p.emit(
        I.OP_SWALK, I.R0, "uma_out", 1, at="stage2_set_pte: pmd = stage2_get_pmd(kvm, cache, addr)"
    )
    p.emit(I.OP_LOAD, I.R0, at="old_pte = *pte")
    p.emit(I.OP_BZ, I.R0, K(B.DESC_VALID), "uma_make", at="if (pte_present(old_pte))")
    p.emit(I.OP_MOVK, I.R3, K(0), at="__pte(0)")
    p.emit(I.OP_STORE, I.R3, K(ALL), at="kvm_set_pte(pte, __pte(0))")
    p.emit(I.OP_TLBI_IPA, I.IPA, at="kvm_tlb_flush_vmid_ipa(kvm, addr)")
    p.label("uma_make")
    p.emit(I.OP_STORE, I.R1, K(ALL), at="kvm_set_pte(pte, *new_pte)")
    p.label("uma_out")
    p.emit(I.OP_UNLOCK, I.LOCK_SPIN, at="user_mem_abort: spin_unlock(&kvm->mmu_lock)")
    p.emit(I.OP_B, "access", at="return to the guest: retry the access")
    p.label("mmio")
    p.emit(I.OP_END, at="io_mem_abort: the access exits to userspace")


def _v4_readonly_rmw(p: Program, retry: str, done: str) -> None:
    """kvm_set_s2pte_readonly / kvm_set_s2pmd_readonly on the leaf at PTR, value in R0."""
    K = p.k
    if not p.has(SEED):
        # v4.6 asm/kvm_mmu.h: pte_val(*pte) = (pte_val(*pte) & ~PTE_S2_RDWR) | PTE_S2_RDONLY
        p.emit(I.OP_ANDN, I.R0, I.R0, K(B.S2AP_RW), at="pte_val(*pte) & ~PTE_S2_RDWR")
        p.emit(I.OP_ORR, I.R0, I.R0, K(B.S2AP_R), at="| PTE_S2_RDONLY")
        p.emit(I.OP_STORE, I.R0, K(B.S2AP_MASK), at="pte_val(*pte) = ... (plain store)")
        p.emit(I.OP_B, done, at="kvm_set_s2pte_readonly returns")
        return
    # seed asm/kvm_mmu.h: prfm pstl1strm; 1: ldxr; and; orr; stxr; cbnz 1b
    p.label(retry)
    p.emit(I.OP_LDXR, I.R0, at="1: ldxr %0, %2")
    p.emit(I.OP_BZ, I.R0, K(B.DESC_VALID), done, at="(callers only pass a present pte)")
    p.emit(I.OP_ANDN, I.R0, I.R0, K(B.S2AP_RW), at="and %0, %0, %3  // ~PTE_S2_RDWR")
    p.emit(I.OP_ORR, I.R0, I.R0, K(B.S2AP_R), at="orr %0, %0, %4  // PTE_S2_RDONLY")
    p.emit(I.OP_STXR, I.R1, I.R0, K(B.S2AP_MASK), at="stxr %w1, %0, %2")
    p.emit(I.OP_BNZ, I.R1, K(ALL), retry, at="cbnz %w1, 1b")
    p.emit(I.OP_B, done, at="kvm_set_s2pte_readonly returns")


def _v4_host_ops(p: Program) -> None:
    K = p.k
    seed = p.has(SEED)  # 06485053: LDXR/STXR readonly, atomic test-and-clear-young
    lock = I.LOCK_SPIN

    p.op(
        "set_readonly",
        "asm/kvm_mmu.h: kvm_set_s2pte_readonly / kvm_set_s2pmd_readonly"
        + (" (LDXR/STXR loop)" if seed else " (plain read-modify-write)"),
    )
    p.emit(I.OP_LOCK, lock, at="spin_lock(&kvm->mmu_lock) (held by its callers)")
    _walk_init(p, "one")
    p.emit(I.OP_SWALK, I.R0, "ro_out", 0, at="stage2_get_pmd(kvm, NULL, addr)")
    if not seed:
        p.emit(I.OP_BNEK, I.LEVEL, K(3), "ro_rmw", at="kvm_pmd_huge(*pmd)")
        p.emit(I.OP_LOAD, I.R0, at="pte_val(*pte)")
        p.emit(I.OP_BZ, I.R0, K(B.DESC_VALID), "ro_out", at="(callers only pass a present pte)")
        p.label("ro_rmw")
    _v4_readonly_rmw(p, "ro_retry", "ro_out")
    p.label("ro_out")
    p.emit(I.OP_UNLOCK, lock, at="spin_unlock(&kvm->mmu_lock)")
    p.emit(I.OP_END, at="return")

    p.op(
        "wp",
        "arch/arm/kvm/mmu.c: kvm_mmu_wp_memory_region -> stage2_wp_range "
        "(stage2_wp_puds/pmds/ptes), then kvm_flush_remote_tlbs",
    )
    p.emit(I.OP_LOCK, lock, at="kvm_mmu_wp_memory_region: spin_lock(&kvm->mmu_lock)")
    _walk_init(p, "range")
    p.label("wp_next")
    p.emit(
        I.OP_RWALK,
        I.R0,
        "wp_done",
        I.END << 4,
        at="stage2_wp_ptes: if (!pte_none(*pte)) / stage2_wp_pmds: if (kvm_pmd_huge(*pmd))",
    )
    p.emit(I.OP_AND, I.R1, I.R0, K(B.S2AP_RW), at="kvm_s2pte_readonly(pte)")
    p.emit(I.OP_BEQK, I.R1, K(B.S2AP_R), "wp_next", at="if (!kvm_s2pte_readonly(pte))")
    _v4_readonly_rmw(p, "wp_retry", "wp_next")
    p.label("wp_done")
    p.emit(I.OP_UNLOCK, lock, at="spin_unlock(&kvm->mmu_lock)")
    p.emit(I.OP_TLBI_ALL, at="kvm_flush_remote_tlbs(kvm)")
    p.emit(I.OP_END, at="return")

    p.op(
        "age",
        "virt/kvm/kvm_main.c: kvm_mmu_notifier_clear_flush_young -> arch/arm/kvm/mmu.c: "
        "kvm_age_hva -> handle_hva_to_gpa (per gfn) -> kvm_age_hva_handler"
        + (
            " -> stage2_ptep_test_and_clear_young (__ptep_test_and_clear_young, LDXR/STXR)"
            if seed
            else " (pte_young / pte_mkold, plain)"
        ),
    )
    p.emit(I.OP_LOCK, lock, at="kvm_mmu_notifier_clear_flush_young: spin_lock(&kvm->mmu_lock)")
    p.label("age_gfn")
    _walk_init(p, "one")
    p.emit(
        I.OP_SWALK,
        I.R0,
        "age_next",
        0,
        at="pmd = stage2_get_pmd(kvm, NULL, gpa); if (pmd_none(*pmd))",
    )
    if seed:
        p.emit(
            I.OP_BNEK,
            I.LEVEL,
            K(3),
            "age_tcy",
            at="if (pmd_thp_or_huge(*pmd)) stage2_pmdp_test_and_clear_young",
        )
        p.emit(I.OP_LOAD, I.R0, at="pte = pte_offset_kernel(pmd, gpa); if (pte_none(*pte))")
        p.emit(I.OP_BZ, I.R0, K(B.DESC_VALID), "age_next", at="return 0")
        p.label("age_tcy")
        p.emit(I.OP_LDXR, I.R0, at="__ptep_test_and_clear_young: 1: ldxr %0, %2")
        p.emit(I.OP_AND, I.R1, I.R0, K(B.AF), at="ubfx %w3, %w0, #10, #1  // PTE_AF (young)")
        p.emit(I.OP_ANDN, I.R0, I.R0, K(B.AF), at="and %0, %0, %4  // clear PTE_AF")
        p.emit(I.OP_STXR, I.R2, I.R0, K(B.AF), at="stxr %w1, %0, %2")
        p.emit(I.OP_BNZ, I.R2, K(ALL), "age_tcy", at="cbnz %w1, 1b")
        p.emit(I.OP_ORRR, I.RET, I.RET, I.R1, at="ret |= handler(kvm, gpa, data)")
    else:
        p.emit(I.OP_BNEK, I.LEVEL, K(3), "age_test", at="if (kvm_pmd_huge(*pmd))")
        p.emit(I.OP_LOAD, I.R0, at="pte = pte_offset_kernel(pmd, gpa); if (pte_none(*pte))")
        p.emit(I.OP_BZ, I.R0, K(B.DESC_VALID), "age_next", at="return 0")
        p.label("age_test")
        p.emit(I.OP_BZ, I.R0, K(B.AF), "age_next", at="if (pte_young(*pte))")
        p.emit(I.OP_ANDN, I.R0, I.R0, K(B.AF), at="pte_mkold(*pte)")
        p.emit(I.OP_STORE, I.R0, K(B.AF), at="*pte = pte_mkold(*pte)")
        p.emit(I.OP_ORR, I.RET, I.RET, K(1), at="return 1")
    p.label("age_next")
    p.emit(I.OP_ADDK, I.IPA, I.IPA, K(B.PAGE_SIZE), at="for (; gfn < gfn_end; ++gfn)")
    p.emit(I.OP_BLT, I.IPA, I.END, "age_gfn", at="for (; gfn < gfn_end; ++gfn)")
    p.emit(I.OP_BZ, I.RET, K(ALL), "age_out", at="if (young)")
    p.emit(I.OP_TLBI_ALL, at="kvm_flush_remote_tlbs(kvm)")
    p.label("age_out")
    p.emit(I.OP_UNLOCK, lock, at="spin_unlock(&kvm->mmu_lock)")
    p.emit(I.OP_END, at="return young")

    if p.has(TEST_AGE_RANGE):
        _v4_test_age_fixed(p)
    else:
        p.op(
            "test_age",
            "virt/kvm/kvm_main.c: kvm_mmu_notifier_test_young -> arch/arm/kvm/mmu.c: "
            "kvm_test_age_hva -> handle_hva_to_gpa(kvm, hva, hva, ...): hva_start == hva_end, "
            "so every memslot is skipped and kvm_test_age_hva_handler never runs (returns 0)",
        )
        p.emit(I.OP_LOCK, lock, at="kvm_mmu_notifier_test_young: spin_lock(&kvm->mmu_lock)")
        p.emit(
            I.OP_UNLOCK,
            lock,
            at="handle_hva_to_gpa(kvm, hva, hva, ...): if (hva_start >= hva_end) continue; "
            "spin_unlock",
        )
        p.emit(I.OP_END, at="return young (0)")

    p.op(
        "unmap",
        "virt/kvm/kvm_main.c: kvm_mmu_notifier_invalidate_range_start -> arch/arm/kvm/"
        "mmu.c: kvm_unmap_hva_range -> handle_hva_to_gpa (per gfn) -> unmap_stage2_range "
        "-> unmap_range (unmap_puds/pmds/ptes)",
    )
    p.emit(I.OP_LOCK, lock, at="kvm_mmu_notifier_invalidate_range_start: spin_lock(&kvm->mmu_lock)")
    p.label("un_gfn")
    p.emit(
        I.OP_ADDK,
        I.R3,
        I.IPA,
        K(B.PAGE_SIZE),
        at="kvm_unmap_hva_handler: unmap_stage2_range(kvm, gpa, PAGE_SIZE)",
    )
    _walk_init(p, "range")
    p.label("un_next")
    p.emit(
        I.OP_RWALK,
        I.R0,
        "un_gfn_done",
        I.R3 << 4,
        at="unmap_ptes: if (!pte_none(*pte)) / unmap_pmds: if (kvm_pmd_huge(*pmd))",
    )
    p.emit(I.OP_MOVK, I.R1, K(0), at="old_pte = *pte")
    p.emit(I.OP_STORE, I.R1, K(ALL), at="kvm_set_pte(pte, __pte(0)) / pmd_clear(pmd)")
    p.emit(I.OP_TLBI_IPA, I.EIPA, at="kvm_tlb_flush_vmid_ipa(kvm, addr)")
    p.emit(I.OP_B, "un_next", at="while (pte++, addr += PAGE_SIZE, addr != end)")
    p.label("un_gfn_done")
    p.emit(I.OP_ADDK, I.IPA, I.IPA, K(B.PAGE_SIZE), at="for (; gfn < gfn_end; ++gfn)")
    p.emit(I.OP_BLT, I.IPA, I.END, "un_gfn", at="for (; gfn < gfn_end; ++gfn)")
    p.emit(I.OP_UNLOCK, lock, at="spin_unlock(&kvm->mmu_lock)")
    p.emit(I.OP_END, at="return")

    p.op(
        "flush_tlb",
        "virt/kvm/kvm_main.c: kvm_flush_remote_tlbs -> kvm_tlb_flush_vmid (tlbi vmalls12e1is)",
    )
    p.emit(I.OP_TLBI_ALL, at="kvm_flush_remote_tlbs(kvm)")
    p.emit(I.OP_END, at="return")


def _v4_test_age_fixed(p: Program) -> None:
    """cf2d23e0bac9 (v5.6, virt/kvm/arm/mmu.c): kvm_test_age_hva passes (hva, hva +
    PAGE_SIZE), so kvm_test_age_hva_handler reads the leaf: pmd_young / pte_young."""
    K = p.k
    p.op(
        "test_age",
        "virt/kvm/kvm_main.c: kvm_mmu_notifier_test_young -> arch/arm/kvm/mmu.c: "
        "kvm_test_age_hva -> handle_hva_to_gpa(kvm, hva, hva + PAGE_SIZE, ...) -> "
        "kvm_test_age_hva_handler (cf2d23e0bac9)",
    )
    p.emit(I.OP_LOCK, I.LOCK_SPIN, at="kvm_mmu_notifier_test_young: spin_lock(&kvm->mmu_lock)")
    _walk_init(p, "one")
    p.emit(
        I.OP_SWALK,
        I.R0,
        "ta_out",
        0,
        at="pmd = stage2_get_pmd(kvm, NULL, gpa); if (!pmd || pmd_none(*pmd)) return 0",
    )
    p.emit(I.OP_BNEK, I.LEVEL, K(3), "ta_young", at="if (pmd_thp_or_huge(*pmd)) pmd_young")
    p.emit(I.OP_LOAD, I.R0, at="pte = pte_offset_kernel(pmd, gpa); if (!pte_none(*pte))")
    p.emit(I.OP_BZ, I.R0, K(B.DESC_VALID), "ta_out", at="return 0")
    p.label("ta_young")
    p.emit(I.OP_AND, I.R1, I.R0, K(B.AF), at="return pte_young(*pte)")
    p.emit(I.OP_ORRR, I.RET, I.RET, I.R1, at="ret |= handler(kvm, gpa, data)")
    p.label("ta_out")
    p.emit(I.OP_UNLOCK, I.LOCK_SPIN, at="spin_unlock(&kvm->mmu_lock)")
    p.emit(I.OP_END, at="return young")


# ---------------------------------------------------------------------------------------
# v6.6: arch/arm64/kvm/hyp/pgtable.c (kvm_pgtable walker), arch/arm64/kvm/mmu.c


def _v66_visit(p: Program, prefix: str, *, done: str) -> None:
    """kvm_pgtable_walk -> __kvm_pgtable_visit: every entry is read once (ctx->old =
    READ_ONCE(*ptep)); tables are followed; every other entry, invalid ones included, goes to
    the leaf callback, after which the entry is read again ("reload")."""
    p.label(f"{prefix}_next")
    p.emit(
        I.OP_RWALK,
        I.R0,
        done,
        (I.END << 4) | I.RWALK_VISIT_INVALID,
        at="__kvm_pgtable_visit: ctx.old = READ_ONCE(*ptep)",
    )


def _v66_reload(p: Program, prefix: str, then: str) -> None:
    p.label(f"{prefix}_reload")
    p.emit(I.OP_LOAD, I.R3, at="__kvm_pgtable_visit: if (reload) ctx.old = READ_ONCE(*ptep)")
    p.emit(I.OP_B, then, at="kvm_pgtable_walk_continue()")


def _v66_attr_walk(
    p: Program,
    prefix: str,
    *,
    set_bits: int,
    clr_bits: int,
    shared: bool,
    done: str,
    eagain: str | None = None,
) -> None:
    """stage2_update_leaf_attrs -> stage2_attr_walker on each leaf.

    The visitor computes (old & ~clr) | set and, when it differs, stage2_try_set_pte:
    WRITE_ONCE for an exclusive walk, cmpxchg for a shared one (failure -> -EAGAIN). The
    kernel's comment there: "We may race with the CPU trying to set the access flag here,
    but worst-case the access flag update gets lost and will be set on the next access
    instead." -EAGAIN ends only a KVM_PGTABLE_WALK_HANDLE_FAULT (shared, fault) walk.
    """
    K = p.k
    _v66_visit(p, prefix, done=done)
    stop = f"{prefix}_fail_reload" if shared else f"{prefix}_reload"
    p.emit(I.OP_BZ, I.R0, K(B.DESC_VALID), stop, at="if (!kvm_pte_valid(ctx->old)) return -EAGAIN")
    p.emit(I.OP_ANDN, I.R1, I.R0, K(clr_bits), at="pte &= ~data->attr_clr")
    p.emit(I.OP_ORR, I.R1, I.R1, K(set_bits), at="pte |= data->attr_set")
    p.emit(I.OP_BEQ, I.R1, I.R0, f"{prefix}_reload", at="if (data->pte != pte)")
    meant = K(set_bits | clr_bits)
    if shared:
        p.emit(
            I.OP_CAS, I.R0, I.R1, meant, at="stage2_try_set_pte: cmpxchg(ctx->ptep, ctx->old, new)"
        )
        p.emit(I.OP_BNZ, I.STATUS, K(ALL), stop, at="if (!stage2_try_set_pte()) return -EAGAIN")
    else:
        p.emit(I.OP_STORE, I.R1, meant, at="stage2_try_set_pte: WRITE_ONCE(*ctx->ptep, new)")
    _v66_reload(p, prefix, f"{prefix}_next")
    if shared:
        p.label(f"{prefix}_fail_reload")
        p.emit(I.OP_LOAD, I.R3, at="__kvm_pgtable_visit: if (reload) ctx.old = READ_ONCE(*ptep)")
        p.emit(I.OP_B, eagain or done, at="-EAGAIN: kvm_pgtable_walk_continue() stops the walk")


def _v66_fault_handler(p: Program) -> None:
    """kvm_handle_guest_abort (v6.6 arch/arm64/kvm/mmu.c): handle_access_fault ->
    kvm_pgtable_stage2_mkyoung; user_mem_abort -> kvm_pgtable_stage2_relax_perms for a
    permission fault, kvm_pgtable_stage2_map otherwise; all under read_lock(mmu_lock)."""
    K = p.k
    p.label("fault")
    p.emit(
        I.OP_BNEK,
        I.STATUS,
        K(I.FAULT_ACCESS_FLAG),
        "uma",
        at="kvm_handle_guest_abort: if (fault_status == ESR_ELx_FSC_ACCESS)",
    )
    p.emit(I.OP_LOCK, I.LOCK_READ, at="handle_access_fault: read_lock(&vcpu->kvm->mmu_lock)")
    p.emit(I.OP_ADDK, I.END, I.IPA, K(1), at="kvm_pgtable_stage2_mkyoung(mmu->pgt, fault_ipa)")
    _walk_init(p, "range")
    _v66_attr_walk(p, "mky", set_bits=B.AF, clr_bits=0, shared=True, done="mky_out")
    p.label("mky_out")
    p.emit(I.OP_UNLOCK, I.LOCK_READ, at="read_unlock(&vcpu->kvm->mmu_lock)")
    p.emit(I.OP_B, "access", at="return to the guest: retry the access")

    p.label("uma")
    p.emit(
        I.OP_MEMSLOT,
        I.R2,
        K(B.PAGE_S2 | B.S2AP_RW | V66_XN),
        K(B.BLOCK_S2 | B.S2AP_RW | V66_XN),
        at="user_mem_abort: __gfn_to_pfn_memslot(); prot = R | W (writable)",
    )
    p.emit(I.OP_BZ, I.R2, K(ALL), "mmio", at="no memslot: io_mem_abort")
    p.emit(I.OP_LOCK, I.LOCK_READ, at="user_mem_abort: read_lock(&kvm->mmu_lock)")
    p.emit(I.OP_ADDK, I.END, I.IPA, K(1), at="one leaf at fault_ipa")
    _walk_init(p, "range")
    p.emit(
        I.OP_BNEK,
        I.STATUS,
        K(I.FAULT_PERMISSION),
        "map_next",
        at="if (fault_status == ESR_ELx_FSC_PERM && vma_pagesize == fault_granule)",
    )
    # be097997a273 (v6.7): -EAGAIN (another CPU changed the PTE) invalidates too.
    eagain_tlbi = p.has(RELAX_EAGAIN_TLBI)
    _v66_attr_walk(
        p,
        "rp",
        set_bits=B.S2AP_RW,
        clr_bits=0,
        shared=True,
        done="rp_ok",
        eagain="rp_ok" if eagain_tlbi else "uma_out",
    )
    p.label("rp_ok")
    cond = "if (!ret || ret == -EAGAIN)" if eagain_tlbi else "if (!ret)"
    if p.has(LOCAL_TLBI_RELAX):  # a12ab1378a88 (v6.4): this CPU only
        p.emit(I.OP_TLB_IPA_LOCAL, at=f"relax_perms: {cond} __kvm_tlb_flush_vmid_ipa_nsh")
    else:
        p.emit(I.OP_TLBI_IPA, I.IPA, at=f"relax_perms: {cond} __kvm_tlb_flush_vmid_ipa")
    p.emit(I.OP_B, "uma_out", at="user_mem_abort: out_unlock")

    # kvm_pgtable_stage2_map -> stage2_map_walker_try_leaf (shared walk, HANDLE_FAULT)
    _v66_visit(p, "map", done="uma_out")
    p.emit(
        I.OP_BZ, I.R0, K(B.DESC_VALID), "map_invalid", at="stage2_pte_needs_update(ctx->old, new)"
    )
    p.emit(I.OP_EOR, I.R3, I.R0, I.R2, at="(old ^ new)")
    p.emit(I.OP_ANDN, I.R3, I.R3, K(S2_PERMS), at="& ~KVM_PTE_LEAF_ATTR_S2_PERMS")
    p.emit(
        I.OP_BZ,
        I.R3,
        K(ALL),
        "map_fail_reload",
        at="if (!stage2_pte_needs_update()) return -EAGAIN",
    )
    p.emit(I.OP_B, "map_break", at="stage2_try_break_pte(ctx, mmu)")
    p.label("map_invalid")
    p.emit(
        I.OP_BNZ,
        I.R0,
        K(B.INVALID_PTE_LOCKED),
        "map_fail_reload",
        at="if (stage2_pte_is_locked(ctx->old)) return false  // -EAGAIN",
    )
    p.label("map_break")
    p.emit(I.OP_MOV, I.R1, I.R0, at="ctx->old")
    p.emit(I.OP_MOVK, I.R3, K(B.INVALID_PTE_LOCKED), at="KVM_INVALID_PTE_LOCKED")
    p.emit(
        I.OP_CAS, I.R0, I.R3, K(ALL), at="stage2_try_set_pte(ctx, KVM_INVALID_PTE_LOCKED): cmpxchg"
    )
    p.emit(
        I.OP_BNZ,
        I.STATUS,
        K(ALL),
        "map_fail_reload",
        at="if (!stage2_try_set_pte()) return -EAGAIN",
    )
    p.emit(I.OP_BZ, I.R1, K(B.DESC_VALID), "map_make", at="else if (kvm_pte_valid(ctx->old))")
    p.emit(
        I.OP_TLBI_IPA,
        I.EIPA,
        at="kvm_call_hyp(__kvm_tlb_flush_vmid_ipa, mmu, ctx->addr, ctx->level)",
    )
    p.label("map_make")
    p.emit(I.OP_LOAD, I.R3, at="stage2_make_pte: WARN_ON(!stage2_pte_is_locked(*ctx->ptep))")
    p.emit(I.OP_STORE, I.R2, K(ALL), at="stage2_make_pte: smp_store_release(ctx->ptep, new)")
    _v66_reload(p, "map", "map_next")
    p.label("map_fail_reload")
    p.emit(I.OP_LOAD, I.R3, at="__kvm_pgtable_visit: if (reload) ctx.old = READ_ONCE(*ptep)")
    p.label("uma_out")
    p.emit(I.OP_UNLOCK, I.LOCK_READ, at="user_mem_abort: read_unlock(&kvm->mmu_lock)")
    p.emit(I.OP_B, "access", at="return to the guest: retry the access")
    p.label("mmio")
    p.emit(I.OP_END, at="io_mem_abort: the access exits to userspace")


def _v66_host_ops(p: Program) -> None:
    K = p.k
    lock = I.LOCK_WRITE

    p.op(
        "set_readonly",
        "arch/arm64/kvm/hyp/pgtable.c: kvm_pgtable_stage2_wrprotect on one leaf "
        "(stage2_update_leaf_attrs, exclusive walk: READ_ONCE ... WRITE_ONCE)",
    )
    p.emit(I.OP_LOCK, lock, at="write_lock(&kvm->mmu_lock)")
    _walk_init(p, "range")
    _v66_attr_walk(p, "ro", set_bits=0, clr_bits=B.S2AP_W, shared=False, done="ro_out")
    p.label("ro_out")
    p.emit(I.OP_UNLOCK, lock, at="write_unlock(&kvm->mmu_lock)")
    p.emit(I.OP_END, at="return")

    p.op(
        "wp",
        "arch/arm64/kvm/mmu.c: kvm_mmu_wp_memory_region -> stage2_wp_range -> "
        "kvm_pgtable_stage2_wrprotect (exclusive walk, WRITE_ONCE), then "
        "kvm_flush_remote_tlbs_memslot",
    )
    p.emit(I.OP_LOCK, lock, at="kvm_mmu_wp_memory_region: write_lock(&kvm->mmu_lock)")
    _walk_init(p, "range")
    _v66_attr_walk(p, "wp", set_bits=0, clr_bits=B.S2AP_W, shared=False, done="wp_done")
    p.label("wp_done")
    p.emit(I.OP_UNLOCK, lock, at="write_unlock(&kvm->mmu_lock)")
    p.emit(I.OP_TLBI_ALL, at="kvm_flush_remote_tlbs_memslot(kvm, memslot)")
    p.emit(I.OP_END, at="return")

    p.op(
        "age",
        "virt/kvm/kvm_main.c: kvm_mmu_notifier_clear_flush_young -> arch/arm64/kvm/mmu.c: "
        "kvm_age_gfn -> pgtable.c: kvm_pgtable_stage2_test_clear_young(mkold = true) "
        "(stage2_age_walker, exclusive walk, WRITE_ONCE)",
    )
    p.emit(I.OP_LOCK, lock, at="kvm_handle_hva_range: KVM_MMU_LOCK(kvm) (write_lock)")
    _walk_init(p, "range")
    _v66_visit(p, "age", done="age_done")
    p.emit(I.OP_ANDN, I.R1, I.R0, K(B.AF), at="new = ctx->old & ~KVM_PTE_LEAF_ATTR_LO_S2_AF")
    p.emit(I.OP_BZ, I.R0, K(B.DESC_VALID), "age_reload", at="if (!kvm_pte_valid(ctx->old) ...")
    p.emit(I.OP_BEQ, I.R1, I.R0, "age_reload", at="... || new == ctx->old) return 0")
    p.emit(I.OP_ORR, I.RET, I.RET, K(1), at="data->young = true")
    p.emit(
        I.OP_STORE, I.R1, K(B.AF), at="if (data->mkold) stage2_try_set_pte(ctx, new): WRITE_ONCE"
    )
    _v66_reload(p, "age", "age_next")
    p.label("age_done")
    p.emit(I.OP_BZ, I.RET, K(ALL), "age_out", at="if (range->flush_on_ret && ret)")
    p.emit(I.OP_TLBI_ALL, at="kvm_flush_remote_tlbs(kvm)")
    p.label("age_out")
    p.emit(I.OP_UNLOCK, lock, at="KVM_MMU_UNLOCK(kvm) (write_unlock)")
    p.emit(I.OP_END, at="return young")

    p.op(
        "test_age",
        "virt/kvm/kvm_main.c: kvm_mmu_notifier_test_young -> arch/arm64/kvm/mmu.c: "
        "kvm_test_age_gfn -> kvm_pgtable_stage2_test_clear_young(mkold = false)",
    )
    p.emit(I.OP_LOCK, lock, at="kvm_handle_hva_range_no_flush: KVM_MMU_LOCK(kvm) (write_lock)")
    _walk_init(p, "range")
    _v66_visit(p, "ta", done="ta_out")
    p.emit(I.OP_BZ, I.R0, K(B.DESC_VALID), "ta_reload", at="if (!kvm_pte_valid(ctx->old)) return 0")
    p.emit(I.OP_AND, I.R1, I.R0, K(B.AF), at="new == ctx->old ? (AF clear)")
    p.emit(I.OP_ORRR, I.RET, I.RET, I.R1, at="data->young = true")
    _v66_reload(p, "ta", "ta_next")
    p.label("ta_out")
    p.emit(I.OP_UNLOCK, lock, at="KVM_MMU_UNLOCK(kvm) (write_unlock)")
    p.emit(I.OP_END, at="return young")

    p.op(
        "unmap",
        "virt/kvm/kvm_main.c: kvm_mmu_notifier_invalidate_range_start -> arch/arm64/kvm/"
        "mmu.c: kvm_unmap_gfn_range -> __unmap_stage2_range -> kvm_pgtable_stage2_unmap "
        "(stage2_unmap_walker -> stage2_unmap_put_pte, exclusive)",
    )
    p.emit(I.OP_LOCK, lock, at="kvm_mmu_notifier_invalidate_range_start: KVM_MMU_LOCK(kvm)")
    _walk_init(p, "range")
    _v66_visit(p, "un", done="un_done")
    p.emit(I.OP_BZ, I.R0, K(B.DESC_VALID), "un_reload", at="if (!kvm_pte_valid(ctx->old)) return 0")
    p.emit(I.OP_MOVK, I.R1, K(0), at="stage2_unmap_put_pte: if (kvm_pte_valid(ctx->old))")
    p.emit(I.OP_STORE, I.R1, K(ALL), at="kvm_clear_pte(ctx->ptep)  // WRITE_ONCE(*ptep, 0)")
    p.emit(
        I.OP_TLBI_IPA,
        I.EIPA,
        at="kvm_call_hyp(__kvm_tlb_flush_vmid_ipa, mmu, ctx->addr, ctx->level)",
    )
    _v66_reload(p, "un", "un_next")
    p.label("un_done")
    p.emit(I.OP_UNLOCK, lock, at="KVM_MMU_UNLOCK(kvm)")
    p.emit(I.OP_END, at="return")

    p.op("flush_tlb", "virt/kvm/kvm_main.c: kvm_flush_remote_tlbs -> __kvm_tlb_flush_vmid")
    p.emit(I.OP_TLBI_ALL, at="kvm_flush_remote_tlbs(kvm)")
    p.emit(I.OP_END, at="return")


def assemble(kernel: str, commits: frozenset[str] | None = None) -> Program:
    """The programs of generation `kernel` with the modelled `commits` applied (default:
    the generation's own, engine/commits.py)."""
    gen = GENERATIONS[kernel]
    p = Program(kernel, gen.commits if commits is None else frozenset(commits))
    _guest_access(p)
    _hardware_ops(p)
    if gen.base == PGTABLE:
        _v66_fault_handler(p)
        _v66_host_ops(p)
    else:
        _v4_fault_handler(p)
        _v4_host_ops(p)
    return p.link()


@lru_cache(maxsize=64)
def program_for(kernel: str, commits: frozenset[str]) -> Program:
    """Assembled once per (generation, commit set): every machine of a scenario shares it."""
    return assemble(kernel, commits)


PROGRAMS = {kernel: program_for(kernel, g.commits) for kernel, g in GENERATIONS.items()}
