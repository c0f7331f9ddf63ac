"""Decode one stage-2 descriptor (4K granule, 48-bit output addresses).

`decode()` returns exactly the object `python -m engine decode RAW --json` prints (see
SCENARIOS.md); `format_text()` is the one-line human form. Every field comes from
engine/bits.py.
"""

from __future__ import annotations

from . import bits
from .sizes import hexs

TYPES = ("invalid", "table", "block", "page", "reserved")


def _oa_mask(level: int) -> int:
    """Output-address bits of a leaf at `level`: 47:12 (L3), 47:21 (L2), 47:30 (L1)."""
    return bits.OA_MASK & ~((1 << bits.level_shift(level)) - 1)


def decode(raw: int, level: int = 3) -> dict:
    """Decode `raw` as a stage-2 descriptor found at translation level `level` (0..3)."""
    if not isinstance(raw, int) or isinstance(raw, bool):
        raise ValueError(f"descriptor must be an integer, got {type(raw).__name__}")
    if not 0 <= raw < 1 << 64:
        raise ValueError(f"descriptor {raw:#x} is not a 64-bit value (0 <= raw < 2**64)")
    if not isinstance(level, int) or isinstance(level, bool) or not 0 <= level <= 3:
        raise ValueError(f"level must be 0, 1, 2 or 3, got {level!r}")

    out: dict = {"raw": hexs(raw), "level": level, "valid": raw & bits.DESC_VALID}
    if not raw & bits.DESC_VALID:
        out["type"] = "invalid"
        return out
    type_bit = bool(raw & bits.DESC_TYPE)
    if level == 3:
        kind = "page" if type_bit else "reserved"
    elif type_bit:
        kind = "table"
    else:
        # 4K granule: blocks exist at levels 1 and 2 only.
        kind = "block" if level in (1, 2) else "reserved"
    out["type"] = kind
    if kind == "table":
        out["next_table"] = hexs(raw & bits.OA_MASK)
    elif kind in ("block", "page"):
        out["pa"] = hexs(raw & _oa_mask(level))
        out["memattr"] = (raw & bits.MEMATTR_MASK) >> bits.MEMATTR_SHIFT
        out["s2ap"] = bits.s2ap_name(raw)
        out["sh"] = (raw & bits.SH_MASK) >> bits.SH_SHIFT
        out["af"] = int(bool(raw & bits.AF))
        out["dbm"] = int(bool(raw & bits.DBM))
        out["contiguous"] = int(bool(raw & bits.CONTIG))
        out["xn"] = (raw & bits.XN_MASK) >> bits.XN_SHIFT
        out["sw"] = (raw & bits.SW_MASK) >> bits.SW_SHIFT
    return out


def format_text(d: dict) -> str:
    """One line for humans, from a decode() result."""
    head = f"{d['raw']} L{d['level']} {d['type']}"
    kind = d["type"]
    if kind == "invalid":
        if int(d["raw"], 16) == bits.INVALID_PTE_LOCKED:
            return f"{head} (KVM_INVALID_PTE_LOCKED: break-before-make in progress)"
        return head
    if kind == "table":
        return f"{head} next_table={d['next_table']}"
    if kind == "reserved":
        why = "no blocks at level 0 with a 4K granule" if d["level"] == 0 else "bit 1 clear"
        return f"{head} (reserved encoding: {why}; treated as invalid, translation fault)"
    return (
        f"{head} pa={d['pa']} s2ap={d['s2ap']} af={d['af']} dbm={d['dbm']} sh={d['sh']}"
        f" memattr={d['memattr']:#x} xn={d['xn']} contig={d['contiguous']} sw={d['sw']}"
    )
