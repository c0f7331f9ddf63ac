"""Stage-2 geometry and the initial table image, as KVM sets them up (4KB granule).

Start level and concatenation follow `kvm_get_vtcr` / `stage2_pgtable_levels`
(arch/arm64/include/asm/stage2_pgtable.h, arch/arm64/kvm/hyp/pgtable.c): KVM folds up to
four IPA bits into concatenated start-level tables (Arm ARM: at most 16), so
levels = ARM64_HW_PGTABLE_LEVELS(ipa_bits - 4) = (ipa_bits - 8) // 9, at least 2.
40-bit IPA: level 1, two concatenated tables (1024 entries); 44-bit: level 0, 32 entries.
The v4.6 and seed kernels have a fixed 40-bit IPA (KVM_PHYS_SHIFT).
"""

from __future__ import annotations

import sys
from array import array
from dataclasses import dataclass
from functools import lru_cache

from . import bits as B


@dataclass(frozen=True)
class Geometry:
    ipa_bits: int
    start_level: int
    start_entries: int  # entries in the (concatenated) start-level table
    concat: int  # concatenated start-level table pages

    @classmethod
    def for_ipa_bits(cls, ipa_bits: int) -> Geometry:
        levels = max(2, (ipa_bits - 8) // 9)
        start = 4 - levels
        entries = 1 << (ipa_bits - B.level_shift(start))
        concat = max(1, entries // B.PTRS_PER_TABLE)
        assert concat <= B.MAX_CONCAT
        return cls(ipa_bits, start, entries, concat)

    @property
    def sl0(self) -> int:
        """VTCR_EL2.SL0 for the 4KB granule: 0 -> level 2, 1 -> level 1, 2 -> level 0."""
        return 2 - self.start_level

    def vtcr(self, ha: bool, hd: bool) -> int:
        """VTCR_EL2 as kvm_get_vtcr programs it (T0SZ, SL0, TG0 4K, PS 48-bit, VS, HA, HD)."""
        value = B.VTCR_COMMON | B.VTCR_TG0_4K | B.VTCR_VS_16BIT
        value |= (64 - self.ipa_bits) << B.VTCR_T0SZ_SHIFT
        value |= self.sl0 << B.VTCR_SL0_SHIFT
        value |= B.VTCR_PS_48BIT << B.VTCR_PS_SHIFT
        if ha:
            value |= B.VTCR_HA
        if hd:
            value |= B.VTCR_HD
        return value

    @property
    def vttbr(self) -> int:
        """VTTBR_EL2: BADDR = the start-level table, VMID in bits 63:48."""
        return (B.VMID << B.VTTBR_VMID_SHIFT) | B.TABLE_BASE


@dataclass(frozen=True)
class Memslot:
    """Guest RAM backing a [[map]]: what user_mem_abort maps again after an unmap."""

    ipa: int
    end: int
    pa: int
    leaf_size: int


def leaf_value(pa: int, size: int, s2ap: str, af: bool, dbm: bool) -> int:
    """A stage-2 leaf as KVM builds it from PAGE_S2 (page) or pmd_mkhuge/pud_mkhuge (block)."""
    value = (B.PAGE_S2 if size == B.PAGE_SIZE else B.BLOCK_S2) & ~(B.S2AP_MASK | B.AF)
    value |= B.S2AP_BY_NAME[s2ap] | pa
    if af:
        value |= B.AF
    if dbm:
        value |= B.DBM
    return value


class Image:
    """Table pages, allocated from TABLE_BASE: the concatenated start level first."""

    def __init__(self, geometry: Geometry):
        self.geometry = geometry
        self.pages = geometry.concat
        self.mem = array("Q", bytes(8 * B.PTRS_PER_TABLE * self.pages))

    def alloc_table(self) -> int:
        pa = B.TABLE_BASE + self.pages * B.PAGE_SIZE
        self.pages += 1
        self.mem.extend(ZERO_TABLE)
        return pa

    def slot(self, desc_pa: int) -> int:
        return (desc_pa - B.TABLE_BASE) >> 3

    def entry_pa(self, table_pa: int, level: int, ipa: int) -> int:
        """Address of the entry for `ipa` in the table at `table_pa` (start level: concatenated)."""
        index = ipa >> B.level_shift(level)
        if level == self.geometry.start_level:
            index &= self.geometry.start_entries - 1
        else:
            index &= B.PTRS_PER_TABLE - 1
        return table_pa + 8 * index

    def leaf_entry(self, ipa: int, level: int) -> int:
        """Address of the entry at `level` for `ipa` (the tables above must exist)."""
        table = B.TABLE_BASE
        for lvl in range(self.geometry.start_level, level):
            table = self.mem[self.slot(self.entry_pa(table, lvl, ipa))] & B.OA_MASK
        return self.entry_pa(table, level, ipa)

    def install(self, ipa: int, level: int, value: int) -> int:
        """Install a leaf at `level`, allocating the tables above it (kvm_mmu_topup_memory_cache).
        Returns the leaf's address."""
        if level < self.geometry.start_level:
            raise ValueError(
                f"no level-{level} table: the walk starts at level {self.geometry.start_level}"
            )
        table = B.TABLE_BASE
        for lvl in range(self.geometry.start_level, level):
            entry = self.entry_pa(table, lvl, ipa)
            desc = self.mem[self.slot(entry)]
            if not desc & B.DESC_VALID:
                desc = self.alloc_table() | B.DESC_VALID | B.DESC_TYPE
                self.mem[self.slot(entry)] = desc
            elif not desc & B.DESC_TYPE:
                raise ValueError(f"IPA {ipa:#x} lies inside a block at level {lvl}")
            table = desc & B.OA_MASK
        entry = self.entry_pa(table, level, ipa)
        self.mem[self.slot(entry)] = value
        return entry


ZERO_TABLE = array("Q", bytes(8 * B.PTRS_PER_TABLE))


@lru_cache(maxsize=16)
def _lanes(n: int, step: int) -> tuple[int, int]:
    """n 64-bit lanes as one integer: a 1 in each, and 0, step, 2 * step, ..."""
    ones = int.from_bytes(array("Q", [1] * n).tobytes(), sys.byteorder)
    steps = int.from_bytes(array("Q", range(0, n * step, step)).tobytes(), sys.byteorder)
    return ones, steps


def leaf_run(first: int, n: int, step: int) -> array:
    """array("Q", range(first, first + n * step, step)), made as one integer with the n
    values side by side in 64-bit lanes (first * ones + steps: no lane carries into the
    next while the last value fits 64 bits): 3x faster at a table's 512 entries, which
    is most of loading a 1M-leaf session."""
    if first + (n - 1) * step >= 1 << 64:
        raise OverflowError(f"descriptor {first + (n - 1) * step:#x} does not fit 64 bits")
    ones, steps = _lanes(n, step)
    return array("Q", (first * ones + steps).to_bytes(8 * n, sys.byteorder))


def build_image(scenario) -> tuple[Image, list[Memslot]]:
    geometry = Geometry.for_ipa_bits(scenario.machine.ipa_bits)
    image = Image(geometry)
    memslots = []
    for m in scenario.maps:
        level = B.leaf_level_for_size(m.size)
        template = leaf_value(0, m.size, m.s2ap, m.af, m.dbm)
        i = 0
        while i < m.count:
            # Install the first leaf of a run through the tables, then fill the rest of the
            # run within the same table page directly: a 4 GiB map builds in a blink.
            ipa = m.ipa + i * m.size
            slot = image.slot(image.install(ipa, level, template | (m.pa + i * m.size)))
            room = B.PTRS_PER_TABLE - (slot % B.PTRS_PER_TABLE)
            n = min(room, m.count - i)
            pa0 = m.pa + i * m.size
            first = template | pa0  # the template holds no output-address bit: | is +
            image.mem[slot : slot + n] = leaf_run(first, n, m.size)
            i += n
        memslots.append(Memslot(m.ipa, m.ipa + m.count * m.size, m.pa, m.size))
    return image, memslots
