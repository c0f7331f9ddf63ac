"""Real stage-2 dumps in: the arm64 KVM debugfs dump (`python -m engine import-ptdump`).

`/sys/kernel/debug/kvm/<pid>-<fd>/stage2_page_tables` (Linux 6.12+, arch/arm64/kvm/ptdump.c)
walks the stage-2 tables with KVM_PGTABLE_WALK_LEAF and feeds every leaf-level entry (valid
or not) to arm64's `note_page` (arch/arm64/mm/ptdump.c), which merges runs of entries with
the same level and the same masked attributes into one line:

    ---[ Guest IPA ]---
    0x0000000040000000-0x0000000040200000           2M 2   R W px ux  AF BLK
    0x0000000040200000-0x0000000040203000          12K 3   R W px ux  AF

`"0x%016lx-0x%016lx   "`, then `"%9lu%c %s"`: the size in the largest unit of K, M, G, T,
P, E that divides it, and the level's name (`"%u"` of the level: kvm_ptdump_build_levels),
then for an entry whose masked bits are not zero, `" %s"` of each attribute column of
`stage2_pte_bits`: valid (" " / "F"), S2AP read ("R" / " "), S2AP write ("W" / " "),
XN[1:0] ("px ux ", "PXNux ", "PXNUXN", "px UXN"), AF ("AF" / "  "), and bits 1:0 = 0b01
("BLK" / "   "). An all-zero entry prints no columns. The walk ends without a final
`note_page` flush, so the range in progress at the end (usually the unmapped top of the
IPA space) is never printed. `ipa_range` holds `"%2u\\n"` of the IPA size and
`stage2_levels` `"%1d\\n"` of the number of levels.

The dump carries no output addresses: ptviz maps each leaf to PA = IPA (identity), which
keeps every block aligned and every range distinct. The descriptors ptviz installs are
KVM's (layout.leaf_value) with the dumped S2AP and AF; XN has no scenario key and is
noted in the description.
"""

from __future__ import annotations

import re

from . import bits as B
from .freeze import write_scenario
from .layout import Geometry
from .scenario import IPA_BITS_MAX, IPA_BITS_MIN, ScenarioError, parse_scenario
from .sizes import hexs, is_digits, size_name

HEADER = "---[ Guest IPA ]---"
UNITS = "KMGTPE"
XN_COLUMNS = ("px ux ", "PXNux ", "PXNUXN", "px UXN")  # XN[1:0] = 0b00, 0b01, 0b10, 0b11
# Bits the dump masks an entry with (the OR of stage2_pte_bits' masks).
PROT_MASK = B.DESC_VALID | B.S2AP_MASK | B.XN_MASK | B.AF | 0b11
LINE_RE = re.compile(
    r"^0x(?P<start>[0-9a-f]{16})-0x(?P<end>[0-9a-f]{16})   "
    r"(?P<size> *[0-9]+)(?P<unit>[KMGTPE]) (?P<level>[0-9]+)(?P<attrs>.*)$"
)
ATTRS_RE = re.compile(
    r"^ (?P<valid>[ F]) (?P<r>[R ]) (?P<w>[W ]) (?P<xn>px ux |PXNux |PXNUXN|px UXN) "
    r"(?P<af>AF|  ) (?P<blk>BLK|   )$"
)


class DumpError(ValueError):
    """One line: `{path}:{line}: what is wrong` (nothing is imported)."""


# --- writing (what the kernel prints for a table image) ---------------------------------------
def size_text(nbytes: int) -> str:
    """note_page's size: `%9lu%c` in the largest unit that divides it."""
    delta, unit = nbytes >> 10, 0
    while not delta & 1023 and unit + 1 < len(UNITS):
        delta >>= 10
        unit += 1
    return f"{delta:9d}{UNITS[unit]}"


def attr_text(prot: int) -> str:
    if not prot:
        return ""
    xn = (prot & B.XN_MASK) >> B.XN_SHIFT
    return "".join(
        " " + s
        for s in (
            " " if prot & B.DESC_VALID else "F",
            "R" if prot & B.S2AP_R else " ",
            "W" if prot & B.S2AP_W else " ",
            XN_COLUMNS[xn],
            "AF" if prot & B.AF else "  ",
            "BLK" if prot & 0b11 == 0b01 else "   ",
        )
    )


def leaf_entries(read_table, geometry: Geometry):
    """(ipa, level, descriptor) of every entry kvm_pgtable_walk visits with
    KVM_PGTABLE_WALK_LEAF: each non-table entry, in IPA order."""

    def walk(table: int, level: int, base: int, entries: int):
        shift = B.level_shift(level)
        for index, desc in enumerate(read_table(table, entries)):
            ipa = base + (index << shift)
            if level < 3 and desc & B.DESC_VALID and desc & B.DESC_TYPE:
                yield from walk(desc & B.OA_MASK, level + 1, ipa, B.PTRS_PER_TABLE)
            else:
                yield ipa, level, desc

    yield from walk(B.TABLE_BASE, geometry.start_level, 0, geometry.start_entries)


def format_dump(entries) -> str:
    """stage2_page_tables for these entries, as note_page prints them (no final flush)."""
    out = [HEADER]
    current = None  # (start, level, prot)
    for ipa, level, desc in entries:
        prot = desc & PROT_MASK
        if current is None:
            current = (ipa, level, prot)
        elif (level, prot) != current[1:]:
            start, lvl, cur = current
            out.append(
                f"0x{start:016x}-0x{ipa:016x}   {size_text(ipa - start)} {lvl}{attr_text(cur)}"
            )
            current = (ipa, level, prot)
    return "\n".join(out) + "\n"


def dump_machine(machine, geometry: Geometry) -> str:
    return format_dump(leaf_entries(machine.table, geometry))


# --- reading ----------------------------------------------------------------------------------
def parse_dump(text: str, path: str = "<dump>") -> list[dict]:
    """The dump's ranges: {start, end, level, valid, s2ap, af, xn, block, line}."""
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    if not lines or lines[0] != HEADER:
        got = lines[0][:40] if lines else "an empty file"
        raise DumpError(f"{path}:1: expected {HEADER!r} (a stage2_page_tables dump), got {got!r}")
    ranges = []
    prev_end = None
    for n, line in enumerate(lines[1:], 2):
        where = f"{path}:{n}"
        m = LINE_RE.match(line)
        if not m:
            raise DumpError(
                f"{where}: expected '0x<16 hex>-0x<16 hex>   <size><unit> <level> <attributes>'"
                f", got {line[:60]!r}"
            )
        start, end = int(m["start"], 16), int(m["end"], 16)
        level = int(m["level"])
        if not 0 <= level <= 3:
            raise DumpError(f"{where}: level {level} (stage-2 levels are 0..3)")
        if end <= start:
            raise DumpError(f"{where}: the range ends at {hexs(end)}, not after {hexs(start)}")
        if prev_end is not None and start != prev_end:
            raise DumpError(
                f"{where}: the range starts at {hexs(start)} but the previous one ended at "
                f"{hexs(prev_end)} (the kernel prints contiguous ranges)"
            )
        if len(m["size"]) != 9 or size_text(end - start) != m["size"] + m["unit"]:
            raise DumpError(
                f"{where}: size {m['size'].strip()}{m['unit']} does not match the range "
                f"({size_text(end - start).strip()})"
            )
        leaf = 1 << B.level_shift(level)
        if start % leaf or end % leaf:
            raise DumpError(
                f"{where}: the range is not aligned to level {level}'s {size_name(leaf)}"
            )
        attrs = m["attrs"]
        entry = {"start": start, "end": end, "level": level, "line": n, "valid": False}
        if attrs:
            a = ATTRS_RE.match(attrs)
            if not a:
                raise DumpError(
                    f"{where}: attributes {attrs!r} are not the six stage2_pte_bits columns "
                    "(valid, R, W, XN, AF, BLK)"
                )
            entry |= {
                "valid": a["valid"] == " ",
                "s2ap": {"RW": "rw", "R ": "ro", " W": "wo", "  ": "none"}[a["r"] + a["w"]],
                "xn": XN_COLUMNS.index(a["xn"]),
                "af": a["af"] == "AF",
                "block": a["blk"] == "BLK",
            }
            if entry["valid"] and entry["block"] != (level < 3):
                kind = "a block (BLK)" if entry["block"] else "a page"
                raise DumpError(f"{where}: {kind} at level {level} is not a stage-2 leaf")
            if entry["valid"] and level == 0:
                raise DumpError(f"{where}: a valid level-0 leaf (4K granule: no level-0 blocks)")
        ranges.append(entry)
        prev_end = end
    return ranges


def read_ipa_bits(text: str, path: str) -> int:
    """ipa_range: `"%2u\\n"` of the IPA size."""
    value = text.strip()
    if not is_digits(value) or not IPA_BITS_MIN <= int(value) <= IPA_BITS_MAX:
        raise DumpError(
            f"{path}:1: expected the IPA size in bits ({IPA_BITS_MIN}..{IPA_BITS_MAX}), got {value[:20]!r}"
        )
    return int(value)


def scenario_from_dump(
    text: str,
    path: str = "<dump>",
    ipa_bits: int | None = None,
    levels: int | None = None,
    name: str | None = None,
) -> str:
    """A v6.6 scenario whose tables hold the dump's leaves (PA = IPA), with a vCPU writing
    the first mapped page and a host write-protecting the first mapped run."""
    ranges = parse_dump(text, path)
    valid = [r for r in ranges if r["valid"]]
    if not valid:
        raise DumpError(f"{path}: no valid leaf in the dump: nothing to import")
    top = max(r["end"] for r in ranges)
    if ipa_bits is None:
        ipa_bits = max(40, (top - 1).bit_length())
    if top > 1 << ipa_bits:
        raise DumpError(
            f"{path}:{ranges[-1]['line']}: the dump reaches {hexs(top)}, beyond ipa_bits = {ipa_bits}"
        )
    geometry = Geometry.for_ipa_bits(ipa_bits)
    if levels is not None and levels != 4 - geometry.start_level:
        raise DumpError(
            f"{path}: stage2_levels = {levels}, but KVM walks {4 - geometry.start_level} levels "
            f"for a {ipa_bits}-bit IPA space (ptviz lays out tables as kvm_get_vtcr does)"
        )
    for r in valid:
        if r["level"] < geometry.start_level:
            raise DumpError(
                f"{path}:{r['line']}: a level-{r['level']} leaf above the start level "
                f"{geometry.start_level}"
            )
    notes = []
    xn = [r for r in valid if r["xn"]]
    if xn:
        notes.append(
            f"{len(xn)} range(s) have XN set (first {hexs(xn[0]['start'])}, {XN_COLUMNS[xn[0]['xn']].strip()}):"
            " no scenario key sets XN, mapped executable"
        )
    odd = [r for r in ranges if not r["valid"] and "s2ap" in r]
    if odd:
        notes.append(
            f"{len(odd)} invalid range(s) with attribute bits (first {hexs(odd[0]['start'])}): "
            "left unmapped"
        )
    maps = [
        {
            "ipa": r["start"],
            "pa": r["start"],
            "size": 1 << B.level_shift(r["level"]),
            "s2ap": r["s2ap"],
            "af": r["af"],
            "dbm": False,
            "count": (r["end"] - r["start"]) >> B.level_shift(r["level"]),
        }
        for r in valid
    ]
    first = valid[0]
    actors = [
        ("vcpu0", "vcpu", [f"write {hexs(first['start'])}"], []),
        ("host0", "host", [f"wp {hexs(first['start'])} {first['end'] - first['start']}"], []),
    ]
    description = "\n".join(
        [
            f"Imported from the KVM stage-2 dump {path} (arch/arm64/kvm/ptdump.c, Linux 6.12+): "
            f"{sum(r['end'] - r['start'] for r in valid) >> 20} MiB mapped in "
            f"{len(valid)} range(s). Output addresses are not in the dump: PA = IPA.",
            *notes,
        ]
    )
    title = name or "stage-2 dump " + path.rsplit("/", 1)[-1]
    scenario = write_scenario(title, description, "v6.6", {"ipa_bits": ipa_bits}, maps, actors)
    try:
        parse_scenario(scenario, path)
    except ScenarioError as exc:  # e.g. a 1G block the generation cannot make
        raise DumpError(
            f"{path}: the imported scenario is refused: {exc.message} ({exc.where})"
        ) from None
    return scenario
