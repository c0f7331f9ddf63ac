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
- Tables live and die as the kernel's do: faults take table pages from the vCPU's memory
  cache (topped up before the lock, so the allocation is not an interleaving point) and
  unmap tears down the tables it empties. A freed table page is never reused by the model,
  so it keeps its last contents: a hardware walk that already holds a pointer into it reads
  what it read before the teardown (Arm ARM D8.15 "TLB maintenance": until the TLBI that
  follows the break completes, a walk may still use the removed table entry, cached or in
  flight; the kernel frees the page only after that TLBI, RCU-deferred for shared walks).
- Dirty logging is state: the memslot ranges with KVM_MEM_LOG_DIRTY_PAGES (read by
  user_mem_abort's memslot_is_logging when the fault starts), the dirty bitmap
  (mark_page_dirty) and the pages a KVM_GET_DIRTY_LOG harvested.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache

from . import bits as B
from . import isa as I
from .commits import (
    AF_READ_LOCK,
    FAULT_GRANULE,
    GENERATIONS,
    HUGE_OVER_TABLE,
    LOCAL_TLBI_RELAX,
    MAP_PERMS_FILTER,
    MERGE_TABLES_TLBI,
    PGTABLE,
    RELAX_EAGAIN_TLBI,
    SEED,
    SKIP_PMD_NOCHANGE,
    SKIP_PTE_NOCHANGE,
    TEST_AGE_RANGE,
)

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


def _read_permission_fault(p: Program, test: str) -> None:
    """user_mem_abort's first check (4.7 arch/arm/kvm/mmu.c, 6.6 arch/arm64/kvm/mmu.c): a
    permission fault on a read cannot come from KVM's own mappings (every valid leaf it
    installs is readable), so it is refused before any lock: kvm_err, -EFAULT, and KVM_RUN
    fails without retrying the access (a scenario's s2ap "none"/"wo" leaves reach it)."""
    K = p.k
    p.emit(I.OP_BNEK, I.STATUS, K(I.FAULT_PERMISSION), "uma_rw", at=f"user_mem_abort: {test}")
    p.emit(I.OP_BNZ, I.WRITE, K(ALL), "uma_rw", at=f"user_mem_abort: {test}")
    p.emit(
        I.OP_END,
        at='kvm_err("Unexpected L2 read permission error"); return -EFAULT  '
        "// KVM_RUN fails: the access is not retried",
    )
    p.label("uma_rw")


def _walk_init(p: Program, kind: str) -> None:
    """Start a software walk at the start-level table (kvm->arch.pgd / pgt->pgd): "one" for
    a walk to IPA's entry, "range" for a range walk from IPA, "cursor" from CUR as it is."""
    mode = {"one": 0, "range": 1, "cursor": 2}[kind]
    p.emit(I.OP_WALK_INIT, mode, at="walk from kvm->arch.pgd")


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
        at="user_mem_abort: logging_active = memslot_is_logging(memslot) (force_pte); "
        f"gfn_to_pfn_prot(); new_pte = pfn_pte(pfn, PAGE_S2); {new_pte}",
    )
    p.emit(I.OP_BZ, I.R1, K(ALL), "mmio", at="no memslot: io_mem_abort")
    _read_permission_fault(p, "if (fault_status == FSC_PERM && !write_fault)")
    p.emit(I.OP_BZ, I.LOG, K(ALL), "uma_lock", at="else if (logging_active) {")
    p.emit(I.OP_BNZ, I.WRITE, K(ALL), "uma_lock", at="if (!write_fault)")
    p.emit(I.OP_ANDN, I.R1, I.R1, K(B.S2AP_W), at="writable = false  // new_pte stays PAGE_S2")
    p.label("uma_lock")
    p.emit(I.OP_MOV, I.TLEVEL, I.LEVEL, at="hugetlb ? stage2_set_pmd_huge : stage2_set_pte")
    p.emit(I.OP_LOCK, I.LOCK_SPIN, at="user_mem_abort: spin_lock(&kvm->mmu_lock)")
    p.emit(
        I.OP_BZ,
        I.LOG,
        K(ALL),
        "uma_walk_init",
        at="mark_page_dirty_in_slot: if (memslot && memslot->dirty_bitmap)",
    )
    p.emit(I.OP_BZ, I.R1, K(B.S2AP_W), "uma_walk_init", at="if (writable)")
    p.emit(I.OP_MARK_DIRTY, at="kvm_set_pfn_dirty(pfn); mark_page_dirty(kvm, gfn)")
    p.label("uma_walk_init")
    _walk_init(p, "one")
    p.label("uma_walk")
    p.emit(I.OP_MOV, I.LEVEL, I.TLEVEL, at="stage2_get_pmd(kvm, cache, addr)")
    p.emit(
        I.OP_SWALK,
        I.R0,
        "uma_none",
        1,
        at="stage2_set_pte: pmd = stage2_get_pmd(kvm, cache, addr) (the pmd is read by "
        "stage2_dissolve_pmd and pmd_none)",
    )
    p.emit(I.OP_BEQ, I.LEVEL, I.TLEVEL, "uma_leaf", at="if (logging_active) stage2_dissolve_pmd()")
    # A huge pmd where a logging fault wants a pte: stage2_dissolve_pmd.
    p.emit(I.OP_MOVK, I.R3, K(0), at="stage2_dissolve_pmd: if (!pmd_thp_or_huge(*pmd)) return")
    p.emit(I.OP_STORE, I.R3, K(ALL), at="stage2_dissolve_pmd: pmd_clear(pmd)")
    p.emit(I.OP_TLBI_IPA, I.IPA, at="stage2_dissolve_pmd: kvm_tlb_flush_vmid_ipa(kvm, addr)")
    p.label("uma_none")
    # No table below this entry: take one from the memory cache mmu_topup_memory_cache()
    # filled before the lock, and link it in.
    p.emit(
        I.OP_ALLOC,
        I.R3,
        at="if (pmd_none(*pmd)) { pte = mmu_memory_cache_alloc(cache); kvm_clean_pte(pte)  "
        "/ stage2_get_pmd: if (stage2_pud_none(*pud)) pmd = mmu_memory_cache_alloc(cache)",
    )
    p.emit(
        I.OP_STORE,
        I.R3,
        K(ALL),
        at="pmd_populate_kernel(NULL, pmd, pte) / stage2_pud_populate(pud, pmd); get_page()",
    )
    p.emit(I.OP_DESCEND, I.R3, at="pte = pte_offset_kernel(pmd, addr) / stage2_pmd_offset()")
    p.emit(I.OP_B, "uma_walk", at="(continue down to the leaf)")
    p.label("uma_leaf")
    p.emit(I.OP_LOAD, I.R0, at="old_pte = *pte")
    p.emit(I.OP_BZ, I.R0, K(B.DESC_VALID), "uma_make", at="if (pte_present(old_pte))")
    _v4_skip_unchanged(p)
    if p.has(HUGE_OVER_TABLE):  # 3c3736cd32bf (v5.1)
        _v4_unmap_block_over_table(p)
    p.emit(I.OP_MOVK, I.R3, K(0), at="__pte(0)")
    p.emit(I.OP_STORE, I.R3, K(ALL), at="kvm_set_pte(pte, __pte(0))")
    p.emit(I.OP_TLBI_IPA, I.IPA, at="kvm_tlb_flush_vmid_ipa(kvm, addr)")
    p.label("uma_make")
    p.emit(I.OP_STORE, I.R1, K(ALL), at="kvm_set_pte(pte, *new_pte)")
    p.label("uma_unlock")
    p.emit(I.OP_UNLOCK, I.LOCK_SPIN, at="user_mem_abort: spin_unlock(&kvm->mmu_lock)")
    p.emit(I.OP_B, "access", at="return to the guest: retry the access")
    p.label("mmio")
    p.emit(I.OP_END, at="io_mem_abort: the access exits to userspace")


def _v4_skip_unchanged(p: Program) -> None:
    """86658b819cd0 / 976d34e2dab1 (v4.19): stage2_set_pmd_huge / stage2_set_pte leave a
    present entry that already holds the new value alone (return 0). Before them a vCPU
    that faulted on an entry another vCPU had just installed broke it again (clear, TLBI,
    the same store): every vCPU using it took a fresh translation fault in that window."""
    K = p.k
    pmd, pte = p.has(SKIP_PMD_NOCHANGE), p.has(SKIP_PTE_NOCHANGE)
    if not (pmd or pte):
        return
    if not (pmd and pte):  # only one of the two functions has the check
        p.emit(
            I.OP_BNEK,
            I.TLEVEL,
            K(3 if pte else 2),
            "uma_changed",
            at="stage2_set_pte" if pte else "stage2_set_pmd_huge",
        )
    at = (
        "stage2_set_pmd_huge: if (pmd_val(old_pmd) == pmd_val(*new_pmd)) return 0  // 86658b819cd0"
        if not pte
        else "stage2_set_pte: if (pte_val(old_pte) == pte_val(*new_pte)) return 0  // 976d34e2dab1"
        if not pmd
        else "if (pte_val(old_pte) == pte_val(*new_pte)) return 0  // 976d34e2dab1 / "
        "stage2_set_pmd_huge: pmd_val(old_pmd) == pmd_val(*new_pmd)  // 86658b819cd0"
    )
    p.emit(I.OP_BEQ, I.R0, I.R1, "uma_unlock", at=at)
    p.label("uma_changed")


def _v4_unmap_block_over_table(p: Program) -> None:
    """3c3736cd32bf (v5.1) stage2_set_pmd_huge: a pmd that still points to a pte table
    (dirty logging stopped after splitting the block) is unmapped first -- every pte cleared
    and invalidated, the emptied table cleared, invalidated and freed -- and the walk
    retried, so no 4K entry of the old table survives next to the block."""
    K = p.k
    p.emit(I.OP_BEQK, I.TLEVEL, K(3), "uma_break", at="stage2_set_pte: (a pte, no block)")
    p.emit(
        I.OP_BZ,
        I.R0,
        K(B.DESC_TYPE),
        "uma_break",
        at="stage2_set_pmd_huge: if (!pmd_thp_or_huge(old_pmd)) {",
    )
    _walk_init(p, "range")
    p.emit(I.OP_ANDN, I.CUR, I.CUR, K((1 << B.LEVEL_SHIFT_2) - 1), at="addr & S2_PMD_MASK")
    p.emit(
        I.OP_ADDK,
        I.R3,
        I.CUR,
        K(1 << B.LEVEL_SHIFT_2),
        at="unmap_stage2_range(kvm, addr & S2_PMD_MASK, S2_PMD_SIZE)",
    )
    p.label("uma_un_next")
    p.emit(
        I.OP_RWALK,
        I.R0,
        "uma_retry",
        (I.R3 << 4) | I.RWALK_TABLE_POST,
        at="unmap_stage2_ptes: if (!pte_none(*pte))",
    )
    p.emit(I.OP_BNZ, I.VISIT, K(ALL), "uma_un_table", at="} while (pte++, addr += PAGE_SIZE, ...)")
    p.emit(I.OP_MOVK, I.R0, K(0), at="old_pte = *pte")
    p.emit(I.OP_STORE, I.R0, K(ALL), at="kvm_set_pte(pte, __pte(0))")
    p.emit(I.OP_TLBI_IPA, I.EIPA, at="kvm_tlb_flush_vmid_ipa(kvm, addr)")
    p.emit(I.OP_B, "uma_un_next", at="put_page(virt_to_page(pte))")
    p.label("uma_un_table")
    p.emit(
        I.OP_TABLE_EMPTY,
        I.AUX,
        I.R0,
        at="if (stage2_pte_table_empty(start_pte))  // kvm_page_empty(): page_count == 1",
    )
    p.emit(I.OP_BZ, I.AUX, K(ALL), "uma_un_next", at="(the table still maps something)")
    p.emit(I.OP_MOVK, I.R0, K(0), at="clear_stage2_pmd_entry(kvm, pmd, start_addr)")
    p.emit(I.OP_STORE, I.R0, K(ALL), at="clear_stage2_pmd_entry: pmd_clear(pmd)")
    p.emit(I.OP_TLBI_IPA, I.EIPA, at="clear_stage2_pmd_entry: kvm_tlb_flush_vmid_ipa(kvm, addr)")
    p.emit(I.OP_B, "uma_un_next", at="pte_free_kernel(NULL, pte_table); put_page()")
    p.label("uma_retry")
    _walk_init(p, "one")
    p.emit(I.OP_B, "uma_walk", at="goto retry  // stage2_get_pmd() again: the table may be gone")
    p.label("uma_break")


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


def _v4_wp_range(p: Program, prefix: str, end_reg: int, done: str) -> None:
    """stage2_wp_range over [CUR, end_reg): write-protect every present leaf (mmu_lock held)."""
    K = p.k
    p.label(f"{prefix}_next")
    p.emit(
        I.OP_RWALK,
        I.R0,
        done,
        end_reg << 4,
        at="stage2_wp_ptes: if (!pte_none(*pte)) / stage2_wp_pmds: if (pmd_thp_or_huge(*pmd))",
    )
    p.emit(I.OP_AND, I.R1, I.R0, K(B.S2AP_RW), at="kvm_s2pte_readonly(pte)")
    p.emit(I.OP_BEQK, I.R1, K(B.S2AP_R), f"{prefix}_next", at="if (!kvm_s2pte_readonly(pte))")
    _v4_readonly_rmw(p, f"{prefix}_retry", f"{prefix}_next")


def _v4_wp_memory_region(p: Program, prefix: str) -> None:
    """kvm_mmu_wp_memory_region: lock, stage2_wp_range, unlock, kvm_flush_remote_tlbs."""
    p.emit(I.OP_LOCK, I.LOCK_SPIN, at="kvm_mmu_wp_memory_region: spin_lock(&kvm->mmu_lock)")
    _walk_init(p, "range")
    _v4_wp_range(p, prefix, I.END, f"{prefix}_done")
    p.label(f"{prefix}_done")
    p.emit(I.OP_UNLOCK, I.LOCK_SPIN, at="spin_unlock(&kvm->mmu_lock)")
    p.emit(I.OP_TLBI_ALL, at="kvm_flush_remote_tlbs(kvm)")


def _dirty_log_ops(
    p: Program,
    *,
    wp,
    wp_range,
    lock: int,
    lock_at: str,
    unlock_at: str,
    flush_at: str,
    commit: str,
    stop_commit: str,
    mask_wp: str,
) -> None:
    """KVM_SET_USER_MEMORY_REGION toggling KVM_MEM_LOG_DIRTY_PAGES, and KVM_GET_DIRTY_LOG.

    virt/kvm/kvm_main.c: __kvm_set_memory_region installs the new memslot (with its
    dirty_bitmap) before kvm_arch_commit_memory_region write-protects it, so a fault that
    starts after the install already sees logging_active. kvm_get_dirty_log_protect
    harvests the bitmap a word at a time under mmu_lock (the `if (!dirty_bitmap[i])` read
    folds into the xchg: mark_page_dirty also runs under mmu_lock), write-protects from
    the first to the last dirty page of the word, and the caller flushes the TLBs once.
    """
    K = p.k
    p.op("log_start", f"virt/kvm/kvm_main.c: __kvm_set_memory_region (LOG_DIRTY_PAGES) -> {commit}")
    p.emit(
        I.OP_LOG,
        1,
        at="__kvm_set_memory_region: install_new_memslots() (memslot->dirty_bitmap allocated)",
    )
    wp(p, "ls")
    p.emit(I.OP_LOG_TRACK, at="KVM_SET_USER_MEMORY_REGION returns: dirty logging is on")
    p.emit(I.OP_END, at="return")

    p.op(
        "get_dirty_log",
        "virt/kvm/kvm_main.c: kvm_vm_ioctl_get_dirty_log -> kvm_get_dirty_log_protect -> "
        + mask_wp,
    )
    p.emit(I.OP_LOCK, lock, at=lock_at)
    p.emit(
        I.OP_ANDN,
        I.AUX,
        I.IPA,
        K(B.PAGE_SIZE - 1),
        at="for (i = 0; i < n / sizeof(long); i++)  // words of the memslot's dirty_bitmap",
    )
    p.label("gdl_word")
    p.emit(
        I.OP_HARVEST,
        at="if (!dirty_bitmap[i]) continue; mask = xchg(&dirty_bitmap[i], 0); "
        "dirty_bitmap_buffer[i] = mask  // bit j: gfn memslot->base_gfn + 64 * i + j",
    )
    p.emit(I.OP_ORRR, I.RET, I.RET, I.R0, at="*is_dirty = true")
    p.emit(I.OP_BZ, I.R0, K(ALL), "gdl_next", at="if (mask)")
    _walk_init(p, "cursor")
    wp_range(p, "gdlw", I.R2, "gdl_next")
    p.label("gdl_next")
    p.emit(I.OP_BLT, I.AUX, I.END, "gdl_word", at="for (i = 0; i < n / sizeof(long); i++)")
    p.emit(I.OP_UNLOCK, lock, at=unlock_at)
    p.emit(I.OP_BZ, I.RET, K(ALL), "gdl_out", at="if (flush)")
    p.emit(I.OP_TLBI_ALL, at=flush_at)
    p.label("gdl_out")
    p.emit(I.OP_END, at="copy_to_user(log->dirty_bitmap, dirty_bitmap_buffer, n)")

    p.op(
        "log_stop",
        f"virt/kvm/kvm_main.c: __kvm_set_memory_region (no LOG_DIRTY_PAGES) -> {stop_commit}",
    )
    p.emit(
        I.OP_LOG,
        0,
        at="__kvm_set_memory_region: install_new_memslots() (the kernel frees the dirty_bitmap;"
        " ptviz keeps it to show)",
    )
    p.emit(I.OP_END, at="return")


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
    _v4_wp_memory_region(p, "wp")
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
        "-> unmap_stage2_puds/pmds/ptes, each ending with clear_stage2_pud/pmd_entry when "
        "its table is empty",
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
        (I.R3 << 4) | I.RWALK_TABLE_POST,
        at="unmap_stage2_ptes: if (!pte_none(*pte)) / unmap_stage2_pmds: if (!pmd_none(*pmd)) "
        "{ if (pmd_thp_or_huge(*pmd))",
    )
    p.emit(I.OP_BNZ, I.VISIT, K(ALL), "un_table", at="} while (pte++, addr += PAGE_SIZE, ...)")
    p.emit(I.OP_MOVK, I.R1, K(0), at="old_pte = *pte")
    p.emit(I.OP_STORE, I.R1, K(ALL), at="kvm_set_pte(pte, __pte(0)) / pmd_clear(pmd)")
    p.emit(I.OP_TLBI_IPA, I.EIPA, at="kvm_tlb_flush_vmid_ipa(kvm, addr)")
    p.emit(I.OP_B, "un_next", at="kvm_flush_dcache_pte(old_pte); put_page(virt_to_page(pte))")
    # The walk has finished a table: unmap_stage2_ptes (a pte table, whose pmd entry is
    # cleared) or unmap_stage2_pmds (a pmd table, whose pud entry -- the level-1 entry, pud
    # folded into pgd -- is cleared). Emptiness is the table page's refcount: one
    # reference per present entry (get_page in stage2_set_pte, put_page in unmap).
    p.label("un_table")
    p.emit(
        I.OP_TABLE_EMPTY,
        I.R1,
        I.R0,
        at="if (stage2_pte_table_empty(start_pte)) / if (stage2_pmd_table_empty(start_pmd))  "
        "// kvm_page_empty(): page_count == 1",
    )
    p.emit(I.OP_BZ, I.R1, K(ALL), "un_next", at="(the table still maps something)")
    p.emit(I.OP_MOVK, I.R1, K(0), at="clear_stage2_pmd_entry(kvm, pmd, start_addr)")
    p.emit(
        I.OP_STORE,
        I.R1,
        K(ALL),
        at="clear_stage2_pmd_entry: pmd_clear(pmd) / clear_stage2_pud_entry: stage2_pud_clear(pud)",
    )
    p.emit(I.OP_TLBI_IPA, I.IPA, at="clear_stage2_p*d_entry: kvm_tlb_flush_vmid_ipa(kvm, addr)")
    p.emit(
        I.OP_B,
        "un_next",
        at="pte_free_kernel(NULL, pte_table) / stage2_pmd_free(pmd_table); put_page()",
    )
    p.label("un_gfn_done")
    p.emit(I.OP_ADDK, I.IPA, I.IPA, K(B.PAGE_SIZE), at="for (; gfn < gfn_end; ++gfn)")
    p.emit(I.OP_BLT, I.IPA, I.END, "un_gfn", at="for (; gfn < gfn_end; ++gfn)")
    p.emit(I.OP_UNLOCK, lock, at="spin_unlock(&kvm->mmu_lock)")
    p.emit(I.OP_END, at="return")

    _dirty_log_ops(
        p,
        wp=_v4_wp_memory_region,
        wp_range=_v4_wp_range,
        lock=lock,
        unlock_at="kvm_get_dirty_log_protect: spin_unlock(&kvm->mmu_lock)",
        lock_at="kvm_get_dirty_log_protect: spin_lock(&kvm->mmu_lock)",
        flush_at="kvm_vm_ioctl_get_dirty_log: if (is_dirty) kvm_flush_remote_tlbs(kvm)",
        commit="arch/arm/kvm/mmu.c: kvm_arch_commit_memory_region -> kvm_mmu_wp_memory_region",
        stop_commit="arch/arm/kvm/mmu.c: kvm_arch_commit_memory_region (nothing to do)",
        mask_wp="arch/arm/kvm/mmu.c: kvm_arch_mmu_enable_log_dirty_pt_masked -> "
        "kvm_mmu_write_protect_pt_masked -> stage2_wp_range(__ffs(mask), __fls(mask) + 1)",
    )

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


def _v66_visit(p: Program, prefix: str, *, done: str, end: int = I.END, flags: int = 0) -> None:
    """kvm_pgtable_walk -> __kvm_pgtable_visit: every entry is read once (ctx->old =
    READ_ONCE(*ptep)); tables are followed; every other entry, invalid ones included, goes to
    the leaf callback, after which the entry is read again ("reload"). `flags` adds the
    walker's KVM_PGTABLE_WALK_TABLE_PRE / _TABLE_POST visits."""
    p.label(f"{prefix}_next")
    p.emit(
        I.OP_RWALK,
        I.R0,
        done,
        (end << 4) | I.RWALK_VISIT_INVALID | flags,
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
    end: int = I.END,
) -> None:
    """stage2_update_leaf_attrs -> stage2_attr_walker on each leaf.

    The visitor computes (old & ~clr) | set and, when it differs, stage2_try_set_pte:
    WRITE_ONCE for an exclusive walk, cmpxchg for a shared one (failure -> -EAGAIN). The
    kernel's comment there: "We may race with the CPU trying to set the access flag here,
    but worst-case the access flag update gets lost and will be set on the next access
    instead." -EAGAIN ends only a KVM_PGTABLE_WALK_HANDLE_FAULT (shared, fault) walk.
    """
    K = p.k
    _v66_visit(p, prefix, done=done, end=end)
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


def _v510_relax_or_map(p: Program) -> None:
    """Before 7d894834a305 (v5.9 arch/arm64/kvm/mmu.c user_mem_abort): `if (fault_status ==
    FSC_PERM && !(logging_active && writable)) relax_perms(pgt, fault_ipa, prot)`, with
    fault_ipa aligned down to vma_pagesize for a block-backed memslot (`fault_ipa &=
    ~(vma_pagesize - 1)`). After dirty logging stopped, a write to a page it left read-only
    in a split block relaxes the leaf at the 2M-aligned IPA instead, and the faulting page
    never becomes writable: "an endless loop and guest panic due to soft lockup"."""
    K = p.k
    p.emit(
        I.OP_BNEK,
        I.STATUS,
        K(I.FAULT_PERMISSION),
        "map_next",
        at="if (fault_status == FSC_PERM && !(logging_active && writable))",
    )
    p.emit(I.OP_BZ, I.LOG, K(ALL), "rp_align", at="if (... && !(logging_active && writable))")
    p.emit(I.OP_BZ, I.R2, K(B.S2AP_W), "rp_align", at="if (... && !(logging_active && writable))")
    p.emit(I.OP_B, "map_next", at="else ret = kvm_pgtable_stage2_map()")
    p.label("rp_align")
    for level, size in ((2, B.PAGE_SIZE << 9), (1, B.PAGE_SIZE << 18)):  # PAGE_SIZE: as is
        p.emit(I.OP_BNEK, I.TLEVEL, K(level), f"rp_align_{level}", at="vma_pagesize")
        p.emit(
            I.OP_ANDN,
            I.CUR,
            I.IPA,
            K(size - 1),
            at="fault_ipa &= ~(vma_pagesize - 1)  // relax_perms(pgt, fault_ipa, prot)",
        )
        p.label(f"rp_align_{level}")
    p.emit(I.OP_ADDK, I.END, I.CUR, K(1), at="kvm_pgtable_stage2_relax_perms(pgt, fault_ipa, prot)")
    _walk_init(p, "cursor")
    p.emit(I.OP_B, "rp_next", at="ret = kvm_pgtable_stage2_relax_perms(pgt, fault_ipa, prot)")


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
    # fc61f554e694 (v6.3): the read lock and a shared walk (cmpxchg); before it, the write
    # lock and an exclusive walk (WRITE_ONCE).
    shared = p.has(AF_READ_LOCK)
    mode, name = (I.LOCK_READ, "read") if shared else (I.LOCK_WRITE, "write")
    p.emit(I.OP_LOCK, mode, at=f"handle_access_fault: {name}_lock(&vcpu->kvm->mmu_lock)")
    p.emit(I.OP_ADDK, I.END, I.IPA, K(1), at="kvm_pgtable_stage2_mkyoung(mmu->pgt, fault_ipa)")
    _walk_init(p, "range")
    _v66_attr_walk(p, "mky", set_bits=B.AF, clr_bits=0, shared=shared, done="mky_out")
    p.label("mky_out")
    p.emit(I.OP_UNLOCK, mode, at=f"{name}_unlock(&vcpu->kvm->mmu_lock)")
    p.emit(I.OP_B, "access", at="return to the guest: retry the access")

    p.label("uma")
    p.emit(
        I.OP_MEMSLOT,
        I.R2,
        K(B.PAGE_S2 | B.S2AP_RW | V66_XN),
        K(B.BLOCK_S2 | B.S2AP_RW | V66_XN),
        at="user_mem_abort: if (logging_active) { force_pte = true; vma_shift = PAGE_SHIFT; }; "
        "__gfn_to_pfn_memslot(); prot = R | W (writable)",
    )
    p.emit(I.OP_BZ, I.R2, K(ALL), "mmio", at="no memslot: io_mem_abort")
    _read_permission_fault(
        p, "if (fault_status == ESR_ELx_FSC_PERM && !write_fault && !exec_fault)"
    )
    p.emit(I.OP_BZ, I.LOG, K(ALL), "uma_lock", at="} else if (logging_active && !write_fault) {")
    p.emit(I.OP_BNZ, I.WRITE, K(ALL), "uma_lock", at="} else if (logging_active && !write_fault) {")
    p.emit(I.OP_ANDN, I.R2, I.R2, K(B.S2AP_W), at="writable = false  // no KVM_PGTABLE_PROT_W")
    p.label("uma_lock")
    p.emit(I.OP_MOV, I.TLEVEL, I.LEVEL, at="vma_pagesize = 1UL << vma_shift")
    p.emit(I.OP_LOCK, I.LOCK_READ, at="user_mem_abort: read_lock(&kvm->mmu_lock)")
    p.emit(I.OP_ADDK, I.END, I.IPA, K(1), at="one leaf at fault_ipa")
    _walk_init(p, "range")
    if p.has(FAULT_GRANULE):  # 7d894834a305 (v5.10): relax only at the fault granule
        p.emit(
            I.OP_BNEK,
            I.STATUS,
            K(I.FAULT_PERMISSION),
            "map_next",
            at="if (fault_status == ESR_ELx_FSC_PERM && vma_pagesize == fault_granule)",
        )
        p.emit(
            I.OP_BEQ,
            I.FLEVEL,
            I.TLEVEL,
            "rp_next",
            at="if (fault_status == ESR_ELx_FSC_PERM && vma_pagesize == fault_granule)",
        )
        p.emit(I.OP_B, "map_next", at="else ret = kvm_pgtable_stage2_map(): change the block size")
    else:
        _v510_relax_or_map(p)
    # be097997a273 (v6.7): -EAGAIN (another CPU changed the PTE) invalidates too.
    eagain_tlbi = p.has(RELAX_EAGAIN_TLBI)
    _v66_attr_walk(
        p,
        "rp",
        set_bits=B.S2AP_RW,
        clr_bits=0,
        shared=True,
        done="rp_ok",
        eagain="rp_eagain" if eagain_tlbi else "uma_out",
    )
    p.label("rp_ok")
    cond = "if (!ret || ret == -EAGAIN)" if eagain_tlbi else "if (!ret)"

    def relax_tlbi() -> None:
        if p.has(LOCAL_TLBI_RELAX):  # a12ab1378a88 (v6.4): this CPU only
            p.emit(I.OP_TLB_IPA_LOCAL, at=f"relax_perms: {cond} __kvm_tlb_flush_vmid_ipa_nsh")
        else:
            p.emit(I.OP_TLBI_IPA, I.IPA, at=f"relax_perms: {cond} __kvm_tlb_flush_vmid_ipa")

    relax_tlbi()
    p.emit(I.OP_B, "uma_dirty", at="mark_dirty: if (writable && !ret)")
    if eagain_tlbi:
        p.label("rp_eagain")
        relax_tlbi()
        p.emit(I.OP_B, "uma_out", at="user_mem_abort: out_unlock (ret == -EAGAIN: nothing marked)")

    # kvm_pgtable_stage2_map(pgt, fault_ipa, vma_pagesize, ...) -> stage2_map_walker (shared
    # walk, HANDLE_FAULT; TABLE_PRE and LEAF visits).
    _v66_visit(p, "map", done="uma_dirty", flags=I.RWALK_TABLE_PRE)
    p.emit(
        I.OP_BNEK,
        I.VISIT,
        K(I.VISIT_LEAF),
        "map_pre",
        at="stage2_map_walker: case KVM_PGTABLE_WALK_LEAF: stage2_map_walk_leaf()",
    )
    p.emit(
        I.OP_BEQ,
        I.LEVEL,
        I.TLEVEL,
        "map_leaf",
        at="stage2_map_walker_try_leaf: if (!stage2_leaf_mapping_allowed()) return -E2BIG",
    )
    # -E2BIG: a block (or nothing) where a smaller leaf goes: a new table in its place.
    p.emit(I.OP_ALLOC, I.R1, at="childp = mm_ops->zalloc_page(data->memcache)")
    p.emit(I.OP_BNZ, I.R0, K(B.DESC_VALID), "map_split_break", at="stage2_try_break_pte()")
    p.emit(
        I.OP_BNZ,
        I.R0,
        K(B.INVALID_PTE_LOCKED),
        "map_split_fail",
        at="if (stage2_pte_is_locked(ctx->old)) return false",
    )
    p.label("map_split_break")
    p.emit(I.OP_MOV, I.AUX, I.R0, at="ctx->old")
    p.emit(I.OP_MOVK, I.R3, K(B.INVALID_PTE_LOCKED), at="KVM_INVALID_PTE_LOCKED")
    p.emit(
        I.OP_CAS, I.R0, I.R3, K(ALL), at="stage2_try_set_pte(ctx, KVM_INVALID_PTE_LOCKED): cmpxchg"
    )
    p.emit(
        I.OP_BNZ,
        I.STATUS,
        K(ALL),
        "map_split_fail",
        at="if (!stage2_try_set_pte()) return false",
    )
    p.emit(
        I.OP_BZ, I.AUX, K(B.DESC_VALID), "map_split_make", at="else if (kvm_pte_valid(ctx->old))"
    )
    p.emit(
        I.OP_TLBI_IPA,
        I.EIPA,
        at="kvm_call_hyp(__kvm_tlb_flush_vmid_ipa, mmu, ctx->addr, ctx->level)",
    )
    p.label("map_split_make")
    p.emit(I.OP_LOAD, I.R3, at="stage2_make_pte: WARN_ON(!stage2_pte_is_locked(*ctx->ptep))")
    p.emit(
        I.OP_STORE,
        I.R1,
        K(ALL),
        at="new = kvm_init_table_pte(childp); stage2_make_pte: smp_store_release(ctx->ptep, new)",
    )
    p.emit(I.OP_LOAD, I.R0, at="__kvm_pgtable_visit: if (reload) ctx.old = READ_ONCE(*ptep)")
    p.emit(
        I.OP_DESCEND,
        I.R0,
        at="if (table) __kvm_pgtable_walk(data, mm_ops, childp, level + 1)",
    )
    p.emit(I.OP_B, "map_next", at="(the new table is walked: its entry for fault_ipa is mapped)")
    p.label("map_split_fail")
    p.emit(
        I.OP_FREE,
        I.R1,
        at="if (!stage2_try_break_pte()) { mm_ops->put_page(childp); return -EAGAIN; }",
    )
    p.emit(I.OP_B, "map_fail_reload", at="return -EAGAIN")

    # TABLE_PRE at the mapping level: a table where the block goes (after dirty logging
    # stopped): stage2_map_walk_table_pre breaks the table and installs the block.
    p.label("map_pre")
    p.emit(I.OP_MOV, I.AUX, I.R0, at="stage2_map_walk_table_pre: stage2_map_walker_try_leaf()")
    p.emit(I.OP_MOVK, I.R3, K(B.INVALID_PTE_LOCKED), at="KVM_INVALID_PTE_LOCKED")
    p.emit(
        I.OP_CAS, I.R0, I.R3, K(ALL), at="stage2_try_set_pte(ctx, KVM_INVALID_PTE_LOCKED): cmpxchg"
    )
    p.emit(
        I.OP_BNZ,
        I.STATUS,
        K(ALL),
        "map_fail_reload",
        at="if (!stage2_try_break_pte()) return -EAGAIN",
    )
    if p.has(MERGE_TABLES_TLBI):  # 3a0b870e3448 (v5.10): every entry the table held
        p.emit(
            I.OP_TLBI_ALL,
            at="if (kvm_pte_table(ctx->old)) kvm_call_hyp(__kvm_tlb_flush_vmid, mmu)",
        )
    else:
        p.emit(
            I.OP_TLBI_IPA,
            I.EIPA,
            at="kvm_call_hyp(__kvm_tlb_flush_vmid_ipa, data->mmu, addr, level)",
        )
    p.emit(I.OP_LOAD, I.R3, at="stage2_make_pte: WARN_ON(!stage2_pte_is_locked(*ctx->ptep))")
    p.emit(I.OP_STORE, I.R2, K(ALL), at="stage2_make_pte: smp_store_release(ctx->ptep, new)")
    p.emit(
        I.OP_B,
        "map_reload",
        at="mm_ops->free_unlinked_table(childp, ctx->level)  // freed after an RCU grace period",
    )

    # stage2_map_walker_try_leaf at the mapping level.
    p.label("map_leaf")
    p.emit(
        I.OP_BZ, I.R0, K(B.DESC_VALID), "map_invalid", at="stage2_pte_needs_update(ctx->old, new)"
    )
    p.emit(I.OP_EOR, I.R3, I.R0, I.R2, at="(old ^ new)")
    if p.has(MAP_PERMS_FILTER):  # 694d071f8d85 (v5.12): permissions go to relax_perms
        p.emit(I.OP_ANDN, I.R3, I.R3, K(S2_PERMS), at="& ~KVM_PTE_LEAF_ATTR_S2_PERMS")
        p.emit(
            I.OP_BZ,
            I.R3,
            K(ALL),
            "map_fail_reload",
            at="if (!stage2_pte_needs_update()) return -EAGAIN",
        )
    else:
        p.emit(
            I.OP_BZ,
            I.R3,
            K(ALL),
            "map_reload",
            at="if (kvm_pte_valid(old)) { if (old == new) return 0;  // the same mapping",
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
    p.label("uma_dirty")
    p.emit(
        I.OP_BZ,
        I.LOG,
        K(ALL),
        "uma_out",
        at="mark_page_dirty_in_slot: if (memslot && memslot->dirty_bitmap)",
    )
    p.emit(I.OP_BZ, I.R2, K(B.S2AP_W), "uma_out", at="if (writable && !ret)")
    p.emit(I.OP_MARK_DIRTY, at="kvm_set_pfn_dirty(pfn); mark_page_dirty_in_slot(kvm, memslot, gfn)")
    p.emit(I.OP_B, "uma_out", at="out_unlock:")
    p.label("map_fail_reload")
    p.emit(I.OP_LOAD, I.R3, at="__kvm_pgtable_visit: if (reload) ctx.old = READ_ONCE(*ptep)")
    p.label("uma_out")
    p.emit(I.OP_UNLOCK, I.LOCK_READ, at="user_mem_abort: read_unlock(&kvm->mmu_lock)")
    p.emit(I.OP_B, "access", at="return to the guest: retry the access")
    p.label("mmio")
    p.emit(I.OP_END, at="io_mem_abort: the access exits to userspace")


def _v66_wp_range(p: Program, prefix: str, end_reg: int, done: str) -> None:
    """stage2_wp_range -> kvm_pgtable_stage2_wrprotect over [CUR, end_reg) (write lock held)."""
    _v66_attr_walk(p, prefix, set_bits=0, clr_bits=B.S2AP_W, shared=False, done=done, end=end_reg)


def _v66_wp_memory_region(p: Program, prefix: str) -> None:
    """kvm_mmu_wp_memory_region: write_lock, stage2_wp_range, write_unlock, then
    kvm_flush_remote_tlbs_memslot."""
    p.emit(I.OP_LOCK, I.LOCK_WRITE, at="kvm_mmu_wp_memory_region: write_lock(&kvm->mmu_lock)")
    _walk_init(p, "range")
    _v66_wp_range(p, prefix, I.END, f"{prefix}_done")
    p.label(f"{prefix}_done")
    p.emit(I.OP_UNLOCK, I.LOCK_WRITE, at="write_unlock(&kvm->mmu_lock)")
    p.emit(I.OP_TLBI_ALL, at="kvm_flush_remote_tlbs_memslot(kvm, memslot)")


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
    _v66_wp_memory_region(p, "wp")
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
        "(stage2_unmap_walker, LEAF and TABLE_POST visits -> stage2_unmap_put_pte, exclusive)",
    )
    p.emit(I.OP_LOCK, lock, at="kvm_mmu_notifier_invalidate_range_start: KVM_MMU_LOCK(kvm)")
    _walk_init(p, "range")
    _v66_visit(p, "un", done="un_done", flags=I.RWALK_TABLE_POST)
    p.emit(
        I.OP_BNZ,
        I.VISIT,
        K(ALL),
        "un_table",
        at="stage2_unmap_walker: if (kvm_pte_table(ctx->old, ctx->level))",
    )
    p.emit(I.OP_BZ, I.R0, K(B.DESC_VALID), "un_reload", at="if (!kvm_pte_valid(ctx->old)) return 0")
    p.emit(I.OP_MOVK, I.R1, K(0), at="stage2_unmap_put_pte: if (kvm_pte_valid(ctx->old))")
    p.emit(I.OP_STORE, I.R1, K(ALL), at="kvm_clear_pte(ctx->ptep)  // WRITE_ONCE(*ptep, 0)")
    p.emit(
        I.OP_TLBI_IPA,
        I.EIPA,
        at="kvm_call_hyp(__kvm_tlb_flush_vmid_ipa, mmu, ctx->addr, ctx->level)",
    )
    _v66_reload(p, "un", "un_next")
    # TABLE_POST: the walk is done with a table; an empty one is zapped and freed.
    p.label("un_table")
    p.emit(
        I.OP_TABLE_EMPTY,
        I.R1,
        I.R0,
        at="childp = kvm_pte_follow(ctx->old); if (mm_ops->page_count(childp) != 1) return 0",
    )
    p.emit(I.OP_BZ, I.R1, K(ALL), "un_next", at="(the table still maps something)")
    p.emit(I.OP_MOVK, I.R1, K(0), at="stage2_unmap_put_pte(ctx, mmu, mm_ops)")
    p.emit(I.OP_STORE, I.R1, K(ALL), at="kvm_clear_pte(ctx->ptep)  // WRITE_ONCE(*ptep, 0)")
    p.emit(
        I.OP_TLBI_IPA,
        I.EIPA,
        at="kvm_call_hyp(__kvm_tlb_flush_vmid_ipa, mmu, ctx->addr, ctx->level)",
    )
    p.emit(
        I.OP_B,
        "un_next",
        at="mm_ops->put_page(ctx->ptep); mm_ops->put_page(childp)  // the table page is freed",
    )
    p.label("un_done")
    p.emit(I.OP_UNLOCK, lock, at="KVM_MMU_UNLOCK(kvm)")
    p.emit(I.OP_END, at="return")

    _dirty_log_ops(
        p,
        wp=_v66_wp_memory_region,
        wp_range=_v66_wp_range,
        lock=lock,
        lock_at="kvm_get_dirty_log_protect: KVM_MMU_LOCK(kvm) (write_lock)",
        unlock_at="kvm_get_dirty_log_protect: KVM_MMU_UNLOCK(kvm)",
        flush_at="kvm_get_dirty_log_protect: if (flush) kvm_flush_remote_tlbs_memslot(kvm, memslot)",
        commit="arch/arm64/kvm/mmu.c: kvm_arch_commit_memory_region -> kvm_mmu_wp_memory_region "
        "(kvm_mmu_split_memory_region: eager splitting is off by default, chunk size 0)",
        stop_commit="arch/arm64/kvm/mmu.c: kvm_arch_commit_memory_region "
        "(kvm_mmu_free_memory_cache(split_page_cache))",
        mask_wp="arch/arm64/kvm/mmu.c: kvm_arch_mmu_enable_log_dirty_pt_masked -> "
        "stage2_wp_range(__ffs(mask), __fls(mask) + 1)",
    )

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
