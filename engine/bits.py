"""The one definition of every architectural bit field ptviz models.

Sources: Arm ARM D8.3 (VMSAv8-64 translation table descriptor formats, stage 2,
4KB granule), arch/arm64/include/asm/pgtable-hwdef.h, arch/arm64/include/asm/kvm_arm.h
and arch/arm64/kvm/hyp/pgtable.c (KVM_INVALID_PTE_LOCKED).

Everything here is a plain integer so that the pure-Python twin uses it directly and
the build (setup.py) turns it into the C header the Cython core includes: there is no
second copy of any field to drift.
"""

# --- Granule and geometry (4KB granule) -------------------------------------------
PAGE_SHIFT = 12
PAGE_SIZE = 1 << PAGE_SHIFT
PTRS_PER_TABLE = 512  # 2**(PAGE_SHIFT - 3): 8-byte descriptors per table page
BITS_PER_LEVEL = 9
MAX_CONCAT = 16  # Arm ARM: at most 16 concatenated tables at the start level
OA_BITS = 48  # PARange 0b0101: 48-bit output addresses

# Size of the region one entry maps at each level (4KB granule): L0 512G, L1 1G, L2 2M, L3 4K.
LEVEL_SHIFT_0 = 39
LEVEL_SHIFT_1 = 30
LEVEL_SHIFT_2 = 21
LEVEL_SHIFT_3 = 12

# --- Stage-2 block/page/table descriptor (Arm ARM D8.3.1, D8.3.2) -----------------
DESC_VALID = 1 << 0  # bit 0: valid
DESC_TYPE = 1 << 1  # bit 1: table (L0-L2) / page (L3); 0 = block at L1/L2
TABLE_BITS = DESC_VALID | DESC_TYPE  # both set above level 3: a table descriptor
MEMATTR_SHIFT = 2  # bits 5:2: stage-2 MemAttr[3:0]
MEMATTR_MASK = 0xF << MEMATTR_SHIFT
S2AP_SHIFT = 6  # bits 7:6: S2AP[1:0] (HAP); bit 6 read, bit 7 write
S2AP_MASK = 3 << S2AP_SHIFT
S2AP_R = 1 << 6  # PTE_S2_RDONLY
S2AP_W = 1 << 7  # the bit stage-2 dirty state (HD + DBM) sets
S2AP_RW = S2AP_R | S2AP_W  # PTE_S2_RDWR
SH_SHIFT = 8  # bits 9:8: shareability
SH_MASK = 3 << SH_SHIFT
AF = 1 << 10  # bit 10: Access Flag (PTE_AF)
OA_MASK = ((1 << OA_BITS) - 1) & ~(PAGE_SIZE - 1)  # bits 47:12 output / next-table address
DBM = 1 << 51  # bit 51: Dirty Bit Modifier (PTE_DBM)
CONTIG = 1 << 52  # bit 52: Contiguous hint
XN_SHIFT = 53  # bits 54:53: XN[1:0] (FEAT_XNX; bit 54 alone without it)
XN_MASK = 3 << XN_SHIFT
SW_SHIFT = 55  # bits 58:55: reserved for software use
SW_MASK = 0xF << SW_SHIFT
# Arm ARM D8.17.1 R_WHZWS: changing any of these in a live descriptor needs break-before-
# make: the output address, the block size (descriptor type), the memory type and
# cacheability (stage-2 MemAttr) and the Shareability.
BBM_MASK = OA_MASK | DESC_TYPE | MEMATTR_MASK | SH_MASK

# KVM_INVALID_PTE_LOCKED (v6.x pgtable.c): an invalid descriptor with bit 10 set marks a
# PTE owned by a break-before-make in progress.
INVALID_PTE_LOCKED = 1 << 10

# Values KVM installs (pgtable-prot.h): MT_S2_NORMAL = 0xf, inner shareable, young.
MT_S2_NORMAL = 0xF
SH_INNER = 3
PAGE_S2 = (
    DESC_VALID | DESC_TYPE | (MT_S2_NORMAL << MEMATTR_SHIFT) | S2AP_R | (SH_INNER << SH_SHIFT) | AF
)
BLOCK_S2 = PAGE_S2 & ~DESC_TYPE  # pmd_mkhuge/pud_mkhuge: bit 1 clear

# The named bit groups the no_lost_update check reports.
LOST_BIT_NAMES = (
    ("AF", AF),
    ("S2AP", S2AP_MASK),
    ("DBM", DBM),
    ("VALID", DESC_VALID),
    ("TYPE", DESC_TYPE),
    ("OA", OA_MASK),
    ("MEMATTR", MEMATTR_MASK),
    ("SH", SH_MASK),
    ("CONTIG", CONTIG),
    ("XN", XN_MASK),
    ("SW", SW_MASK),
)

# --- VTCR_EL2 (Arm ARM D17.2, arch/arm64/include/asm/kvm_arm.h) ---------------------
VTCR_T0SZ_SHIFT = 0  # bits 5:0
VTCR_SL0_SHIFT = 6  # bits 7:6 (4KB: 0 -> level 2, 1 -> level 1, 2 -> level 0)
VTCR_IRGN0_WBWA = 1 << 8
VTCR_ORGN0_WBWA = 1 << 10
VTCR_SH0_INNER = 3 << 12
VTCR_TG0_4K = 0 << 14
VTCR_PS_SHIFT = 16  # bits 18:16
VTCR_PS_48BIT = 5
VTCR_VS_16BIT = 1 << 19
VTCR_HA = 1 << 21
VTCR_HD = 1 << 22
VTCR_RES1 = 1 << 31
VTCR_COMMON = VTCR_RES1 | VTCR_SH0_INNER | VTCR_ORGN0_WBWA | VTCR_IRGN0_WBWA

# --- VTTBR_EL2 -----------------------------------------------------------------------
VTTBR_VMID_SHIFT = 48
VTTBR_BADDR_MASK = (1 << OA_BITS) - 2  # bits 47:1 (CnP is bit 0)

# --- ID_AA64MMFR1_EL1 -------------------------------------------------------------------
HAFDBS_NONE = 0
HAFDBS_AF = 1
HAFDBS_AF_DBM = 2

# Where the model places stage-2 table pages in physical memory (KVM allocates them from
# the host's memory; any page-aligned base works, this one stays clear of guest RAM
# examples that use 0x4000_0000 upwards).
TABLE_BASE = 0x10_0000_0000
VMID = 1


def s2ap_name(desc: int) -> str:
    """S2AP as the scenario language spells it."""
    return ("none", "ro", "wo", "rw")[(desc & S2AP_MASK) >> S2AP_SHIFT]


S2AP_BY_NAME = {"none": 0, "ro": S2AP_R, "wo": S2AP_W, "rw": S2AP_RW}


def level_shift(level: int) -> int:
    return PAGE_SHIFT + BITS_PER_LEVEL * (3 - level)


def leaf_level_for_size(size: int) -> int:
    """Level of the leaf that maps `size` bytes: 4K -> 3, 2M -> 2, 1G -> 1."""
    return {1 << LEVEL_SHIFT_3: 3, 1 << LEVEL_SHIFT_2: 2, 1 << LEVEL_SHIFT_1: 1}[size]


def lost_bit_names(mask: int) -> list[str]:
    return [name for name, bits in LOST_BIT_NAMES if mask & bits]
