"""Modelled kernel commits, and the generations built from them.

Every behaviour that differs between kernel generations is tied to the commit that
introduced it. A generation is a code base (the `arch/arm/kvm/mmu.c` era or the
`kvm_pgtable` era: two different programs in engine/programs.py) plus the set of modelled
commits it carries; a scenario may apply (`+ID`) or revert (`-ID`) individual modelled
commits on top of its generation (the optional `commits` key, README "Extensions to the
contract"). engine/programs.py asks `Program.has(ID)` wherever a commit changes a path.

A commit lists the code base it changes: reverting the seed on the kvm_pgtable code, where
its lines no longer exist, is refused rather than guessed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

MMU_C = "mmu.c"  # arch/arm/kvm/mmu.c + asm/kvm_mmu.h (v4.6, seed), later virt/kvm/arm/mmu.c
PGTABLE = "pgtable"  # arch/arm64/kvm/hyp/pgtable.c + arch/arm64/kvm/mmu.c (v5.10+)
BASE_TEXT = {
    MMU_C: "arch/arm/kvm/mmu.c (v4.6, seed)",
    PGTABLE: "the kvm_pgtable code, arch/arm64/kvm/hyp/pgtable.c (v6.6, v6.12)",
}


@dataclass(frozen=True)
class Commit:
    sha: str  # the full 40-hex-digit id
    subject: str
    release: str  # the first mainline release that carries it
    base: str  # the code base it changes: MMU_C or PGTABLE
    effect: str  # what changes in the model

    @property
    def short(self) -> str:
        return self.sha[:12]


SEED = "064850532444"
SKIP_PMD_NOCHANGE = "86658b819cd0"
SKIP_PTE_NOCHANGE = "976d34e2dab1"
HUGE_OVER_TABLE = "3c3736cd32bf"
MERGE_TABLES_TLBI = "3a0b870e3448"
FAULT_GRANULE = "7d894834a305"
MAP_PERMS_FILTER = "694d071f8d85"
AF_READ_LOCK = "fc61f554e694"
TEST_AGE_RANGE = "cf2d23e0bac9"
LOCAL_TLBI_RELAX = "a12ab1378a88"
RELAX_EAGAIN_TLBI = "be097997a273"

COMMITS: dict[str, Commit] = {
    c.short: c
    for c in (
        Commit(
            "06485053244480f5f403d8f89b8617bd7d549113",
            "kvm: arm64: Enable hardware updates of the Access Flag for Stage 2 page tables",
            "v4.7",
            MMU_C,
            "kvm_set_s2pte_readonly becomes an LDXR/STXR loop; aging uses the atomic "
            "stage2_ptep_test_and_clear_young; s2-setup.c sets VTCR_EL2.HA when "
            "ID_AA64MMFR1_EL1.HAFDBS != 0 (the default of machine.ha)",
        ),
        Commit(
            "86658b819cd0a9aa584cd84453ed268a6f013770",
            "KVM: arm/arm64: Skip updating PMD entry if no change",
            "v4.19",
            MMU_C,
            "stage2_set_pmd_huge returns 0 when the present pmd already holds the new block "
            "(pmd_val(old_pmd) == pmd_val(*new_pmd)) instead of pmd_clear, "
            "kvm_tlb_flush_vmid_ipa and the same store again",
        ),
        Commit(
            "976d34e2dab10ece5ea8fe7090b7692913f89084",
            "KVM: arm/arm64: Skip updating PTE entry if no change",
            "v4.19",
            MMU_C,
            "stage2_set_pte returns 0 when the present pte already holds the new value "
            "(pte_val(old_pte) == pte_val(*new_pte)) instead of kvm_set_pte(pte, __pte(0)), "
            "kvm_tlb_flush_vmid_ipa and the same store again",
        ),
        Commit(
            "3c3736cd32bf5197aed1410ae826d2d254a5b277",
            "KVM: arm/arm64: Fix handling of stage2 huge mappings",
            "v5.1",
            MMU_C,
            "stage2_set_pmd_huge over a pmd that still points to a pte table (left by dirty "
            "logging that has stopped) first unmaps the 2M range (unmap_stage2_range: each "
            "pte cleared and invalidated, the emptied table freed) and retries, instead of "
            "pmd_clear and one kvm_tlb_flush_vmid_ipa",
        ),
        Commit(
            "cf2d23e0bac9f6b5cd1cba8898f5f05ead40e530",
            "KVM: arm/arm64: Fix young bit from mmu notifier",
            "v5.6",
            MMU_C,
            "kvm_test_age_hva passes (hva, hva + PAGE_SIZE) to handle_hva_to_gpa, so "
            "kvm_test_age_hva_handler reads the leaf and returns its AF",
        ),
        Commit(
            "3a0b870e3448302ca2ba703bea1b79b61c3f33c6",
            "KVM: arm64: Fix handling of merging tables into a block entry",
            "v5.10",
            PGTABLE,
            "stage2_map_walk_table_pre, replacing a table by a block, invalidates the whole "
            "VMID (__kvm_tlb_flush_vmid) instead of the one IPA of the entry",
        ),
        Commit(
            "7d894834a305568a0168c55d4729216f5f8cb4e6",
            "KVM: arm64: Add usage of stage 2 fault lookup level in user_mem_abort()",
            "v5.10",
            PGTABLE,
            "a permission fault relaxes only when vma_pagesize equals the granule of the "
            "faulting entry (ESR_EL2.DFSC level), else kvm_pgtable_stage2_map changes the "
            "block size; before it, every permission fault outside `logging_active && "
            "writable` relaxed the leaf at fault_ipa aligned down to vma_pagesize",
        ),
        Commit(
            "694d071f8d85d504055540a27f0dbe9dbf44584e",
            "KVM: arm64: Filter out the case of only changing permissions from stage-2 map path",
            "v5.12",
            PGTABLE,
            "stage2_map_walker_try_leaf returns -EAGAIN when the valid entry differs from the "
            "new one only in its permissions (stage2_pte_needs_update), instead of "
            "break-before-make to the new permissions (only an identical entry was left alone)",
        ),
        Commit(
            "fc61f554e6947edd21cd84fb814f8418349a3569",
            "KVM: arm64: Handle access faults behind the read lock",
            "v6.3",
            PGTABLE,
            "handle_access_fault takes mmu_lock for read and kvm_pgtable_stage2_mkyoung walks "
            "shared (cmpxchg, -EAGAIN on a lost race) instead of under the write lock with an "
            "exclusive walk (WRITE_ONCE)",
        ),
        Commit(
            "a12ab1378a88b38f3af8b1a899b7d8526324ba6f",
            "KVM: arm64: Use local TLBI on permission relaxation",
            "v6.4",
            PGTABLE,
            "kvm_pgtable_stage2_relax_perms invalidates with __kvm_tlb_flush_vmid_ipa_nsh "
            "(this CPU only) instead of the broadcast __kvm_tlb_flush_vmid_ipa",
        ),
        Commit(
            "be097997a273259f1723baac5463cf19d8564efa",
            "KVM: arm64: Always invalidate TLB for stage-2 permission faults",
            "v6.7",
            PGTABLE,
            "kvm_pgtable_stage2_relax_perms also invalidates when the walk returns -EAGAIN "
            "(another CPU changed the PTE first), not only when it succeeded",
        ),
    )
}


@dataclass(frozen=True)
class Generation:
    name: str
    base: str
    commits: frozenset[str]  # short ids
    text: str


GENERATIONS: dict[str, Generation] = {
    g.name: g
    for g in (
        Generation("v4.6", MMU_C, frozenset(), "before the seed (plain load/store RMW)"),
        Generation("seed", MMU_C, frozenset({SEED}), "Linux 4.7: LDXR/STXR, hardware AF"),
        Generation(
            "v6.6",
            PGTABLE,
            frozenset(
                {MERGE_TABLES_TLBI, FAULT_GRANULE, MAP_PERMS_FILTER, AF_READ_LOCK, LOCAL_TLBI_RELAX}
            ),
            "kvm_pgtable walker, rwlock mmu_lock",
        ),
        # The 6.12 LTS: what changed since 6.6 on the modelled paths (docs/kernel-sources.md,
        # "v6.12"): the relax -EAGAIN invalidation.
        Generation(
            "v6.12",
            PGTABLE,
            frozenset(
                {
                    MERGE_TABLES_TLBI,
                    FAULT_GRANULE,
                    MAP_PERMS_FILTER,
                    AF_READ_LOCK,
                    LOCAL_TLBI_RELAX,
                    RELAX_EAGAIN_TLBI,
                }
            ),
            "the 6.12 LTS: v6.6 + be097997a273",
        ),
    )
}

_CHANGE = re.compile(r"([+-])([0-9a-fA-F]{7,40})\Z")


class CommitError(ValueError):
    """Entry `index` of a `commits` list is wrong; the message says what."""

    def __init__(self, index: int, message: str):
        self.index = index
        self.message = message
        super().__init__(f"commits[{index}]: {message}")


def modelled_list() -> str:
    return ", ".join(f"{c.short} ({c.release})" for c in COMMITS.values())


def lookup(prefix: str) -> Commit | None:
    """The modelled commit whose id starts with `prefix` (7 to 40 hex digits), or None."""
    prefix = prefix.lower()
    hits = [c for c in COMMITS.values() if c.sha.startswith(prefix)]
    return hits[0] if hits else None  # 7+ digits are unique among the modelled commits


def resolve(kernel: str, changes: list, start: frozenset[str] | None = None) -> frozenset[str]:
    """The commits a scenario runs: `start` (default: its generation's), with `changes`
    ("+ID" applies, "-ID" reverts) on top. Raises CommitError naming the entry at fault."""
    gen = GENERATIONS[kernel]
    applied = set(gen.commits if start is None else start)
    where = repr(kernel) if start is None else f"{kernel!r} as the scenario sets it up"
    seen: dict[str, int] = {}
    for j, change in enumerate(changes):
        m = _CHANGE.match(change) if isinstance(change, str) else None
        if m is None:
            raise CommitError(
                j, f"{change!r}: expected '+ID' (apply) or '-ID' (revert), ID 7 to 40 hex digits"
            )
        sign, prefix = m.groups()
        commit = lookup(prefix)
        if commit is None:
            raise CommitError(j, f"{prefix} is not a modelled commit (modelled: {modelled_list()})")
        if commit.short in seen:
            raise CommitError(
                j, f"commit {commit.short} listed twice (also [{seen[commit.short]}])"
            )
        seen[commit.short] = j
        if commit.base != gen.base:
            raise CommitError(
                j,
                f"commit {commit.short} ({commit.subject!r}) changes {BASE_TEXT[commit.base]}; "
                f"kernel {kernel!r} runs {BASE_TEXT[gen.base]}",
            )
        if sign == "+":
            if commit.short in applied:
                raise CommitError(j, f"commit {commit.short} is already in {where}")
            applied.add(commit.short)
        else:
            if commit.short not in applied:
                raise CommitError(j, f"commit {commit.short} is not in {where}: nothing to revert")
            applied.discard(commit.short)
    return frozenset(applied)


def ordered(commits: frozenset[str]) -> list[Commit]:
    """The commits in catalogue (release) order."""
    return [c for short, c in COMMITS.items() if short in commits]


def commits_json(kernel: str, commits: frozenset[str]) -> list[dict]:
    """The applied commits as the JSON `machine.commits` and the UI show them; `origin`
    says whether the generation carries the commit or the scenario applied it."""
    gen = GENERATIONS[kernel].commits
    return [
        {
            "id": c.short,
            "subject": c.subject,
            "release": c.release,
            "origin": "generation" if c.short in gen else "scenario",
        }
        for c in ordered(commits)
    ]


def reverted(kernel: str, commits: frozenset[str]) -> list[str]:
    """The generation's commits the scenario reverted."""
    return [c.short for c in ordered(GENERATIONS[kernel].commits - commits)]
