"""Raw stage-2 tables in (`python -m engine import-image`): table pages as binary plus the
VTTBR_EL2 and VTCR_EL2 values, walked as the hardware walks them.

The image is whole 4K table pages, little-endian 64-bit descriptors, the first byte at
physical address BASE (default: VTTBR_EL2.BADDR, the start-level table first). VTCR_EL2
gives the IPA size (T0SZ, bits 5:0), the start level (SL0, bits 7:6, 4KB granule: 0 ->
level 2, 1 -> level 1, 2 -> level 0), the granule (TG0, bits 15:14, must be 0b00 = 4KB)
and HA/HD (bits 21, 22). The walk follows the Arm ARM (D8.2, "Translation table walk";
the stage-2 start level and concatenation rules of R_SRKBC): the start-level table is
2^(ipa_bits - shift(start level)) entries, concatenated over up to 16 pages; a valid entry
with bit 1 set below level 3 points to the next table; level-3 entries with bits 1:0 =
0b01 and level-0 blocks are reserved encodings (translation faults), noted and skipped.

Every error names the byte offset at fault; nothing is imported on error.
"""

from __future__ import annotations

import struct

from . import bits as B
from .freeze import maps_of, write_scenario
from .layout import Geometry
from .scenario import IPA_BITS_MAX, IPA_BITS_MIN, ScenarioError, parse_scenario
from .sizes import hexs

PAGE = B.PAGE_SIZE


class ImageError(ValueError):
    """One line naming the byte offset (or register field) at fault."""


def decode_vtcr(vtcr: int) -> dict:
    t0sz = vtcr & 0x3F
    sl0 = (vtcr >> B.VTCR_SL0_SHIFT) & 3
    tg0 = (vtcr >> 14) & 3
    if tg0 != 0:
        raise ImageError(f"VTCR_EL2.TG0 = {tg0:#b}: only the 4KB granule (0b00) is modelled")
    ipa_bits = 64 - t0sz
    if not IPA_BITS_MIN <= ipa_bits <= IPA_BITS_MAX:
        raise ImageError(
            f"VTCR_EL2.T0SZ = {t0sz}: a {ipa_bits}-bit IPA space (ptviz models "
            f"{IPA_BITS_MIN}..{IPA_BITS_MAX})"
        )
    if sl0 == 3:
        raise ImageError("VTCR_EL2.SL0 = 3 is reserved for the 4KB granule")
    start = 2 - sl0
    entries = 1 << max(0, ipa_bits - B.level_shift(start))
    if entries > B.MAX_CONCAT * B.PTRS_PER_TABLE:
        raise ImageError(
            f"VTCR_EL2.SL0 = {sl0} (start level {start}) with T0SZ = {t0sz} needs {entries} "
            f"start-level entries: more than {B.MAX_CONCAT} concatenated tables"
        )
    return {
        "ipa_bits": ipa_bits,
        "start_level": start,
        "entries": entries,
        "ha": bool(vtcr & B.VTCR_HA),
        "hd": bool(vtcr & B.VTCR_HD),
    }


def walk_image(data: bytes, base: int, vttbr: int, vtcr: int):
    """(geometry facts, leaves [(ipa, level, descriptor)], notes)."""
    if len(data) % PAGE:
        raise ImageError(
            f"byte {len(data) - len(data) % PAGE}: the image is not a whole number of 4K "
            f"table pages ({len(data)} bytes)"
        )
    if not data:
        raise ImageError("byte 0: the image is empty")
    regs = decode_vtcr(vtcr)
    root = vttbr & B.VTTBR_BADDR_MASK & B.OA_MASK
    concat_bytes = max(PAGE, regs["entries"] * 8)
    if root % concat_bytes:
        raise ImageError(
            f"VTTBR_EL2.BADDR {hexs(root)} is not aligned to the start-level table's "
            f"{concat_bytes} bytes"
        )
    end = base + len(data)
    if not (base <= root and root + concat_bytes <= end):
        raise ImageError(
            f"VTTBR_EL2.BADDR {hexs(root)}: the start-level table is outside the image "
            f"({hexs(base)}-{hexs(end)})"
        )

    def table(pa: int, entries: int) -> tuple:
        off = pa - base
        return struct.unpack_from(f"<{entries}Q", data, off)

    leaves, notes = [], []
    seen: dict[int, int] = {root: regs["start_level"]}

    def walk(pa: int, level: int, ipa_base: int, entries: int):
        shift = B.level_shift(level)
        for index, desc in enumerate(table(pa, entries)):
            offset = pa - base + 8 * index
            ipa = ipa_base + (index << shift)
            if not desc & B.DESC_VALID:
                continue
            if level < 3 and desc & B.DESC_TYPE:
                nxt = desc & B.OA_MASK
                if not base <= nxt < end:
                    raise ImageError(
                        f"byte {offset}: the level-{level} table entry for IPA {hexs(ipa)} points "
                        f"to {hexs(nxt)}, outside the image ({hexs(base)}-{hexs(end)})"
                    )
                if nxt in seen:
                    raise ImageError(
                        f"byte {offset}: the level-{level} table entry for IPA {hexs(ipa)} points "
                        f"to the table at {hexs(nxt)} again (a table is used twice)"
                    )
                seen[nxt] = level + 1
                walk(nxt, level + 1, ipa, B.PTRS_PER_TABLE)
            elif level == 3 and not desc & B.DESC_TYPE:
                notes.append(
                    f"byte {offset}: reserved level-3 encoding {hexs(desc)} at IPA {hexs(ipa)} (faults): skipped"
                )
            elif level == 0:
                notes.append(
                    f"byte {offset}: a level-0 block {hexs(desc)} (faults with 4KB granule): skipped"
                )
            else:
                leaves.append((ipa, level, desc))

    walk(root, regs["start_level"], 0, regs["entries"])
    return regs, leaves, notes


def scenario_from_image(
    data: bytes,
    vttbr: int,
    vtcr: int,
    base: int | None = None,
    kernel: str = "v6.6",
    path: str = "<image>",
) -> str:
    root = vttbr & B.VTTBR_BADDR_MASK & B.OA_MASK
    regs, leaves, notes = walk_image(data, root if base is None else base, vttbr, vtcr)
    if not leaves:
        raise ImageError(f"{path}: the tables hold no valid leaf: nothing to import")
    geometry = Geometry.for_ipa_bits(regs["ipa_bits"])
    if geometry.start_level != regs["start_level"]:
        notes.append(
            f"VTCR_EL2.SL0 starts the walk at level {regs['start_level']}; KVM and ptviz start a "
            f"{regs['ipa_bits']}-bit IPA space at level {geometry.start_level} (the leaves are the same)"
        )
    maps, bit_notes = maps_of(leaves)
    notes += bit_notes
    first = maps[0]
    actors = [
        ("vcpu0", "vcpu", [f"write {hexs(first['ipa'])}"], []),
        ("host0", "host", [f"wp {hexs(first['ipa'])} {first['size'] * first['count']}"], []),
    ]
    hafdbs = 2 if regs["hd"] else 1
    machine = {"hafdbs": hafdbs, "ha": regs["ha"], "hd": regs["hd"], "ipa_bits": regs["ipa_bits"]}
    description = "\n".join(
        [
            f"Imported from the stage-2 table image {path}: VTTBR_EL2 {hexs(vttbr)}, VTCR_EL2 "
            f"{hexs(vtcr)}; {len(leaves)} leaves in {len(maps)} run(s).",
            *notes,
        ]
    )
    text = write_scenario(
        f"stage-2 image {path.rsplit('/', 1)[-1]}", description, kernel, machine, maps, actors
    )
    try:
        parse_scenario(text, path)
    except ScenarioError as exc:
        raise ImageError(
            f"{path}: the imported scenario is refused: {exc.message} ({exc.where})"
        ) from None
    return text


def image_of(machine, spec) -> tuple[bytes, int, int]:
    """A ptviz machine's tables as an image (bytes from TABLE_BASE), VTTBR_EL2, VTCR_EL2."""
    return machine.mem_array().tobytes(), spec.geometry.vttbr, spec.vtcr
