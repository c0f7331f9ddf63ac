"""`decode` is the `python -m engine decode --json` object of SCENARIOS.md."""

import json

import pytest

from engine import bits
from engine.decode import decode, format_text

LEAF_KEYS = {
    "raw",
    "level",
    "valid",
    "type",
    "pa",
    "memattr",
    "s2ap",
    "sh",
    "af",
    "dbm",
    "contiguous",
    "xn",
    "sw",
}


def test_page_s2_read_write_is_a_young_inner_shareable_normal_page():
    raw = 0x4000_0000 | bits.PAGE_S2 | bits.S2AP_W  # 0x400007ff
    assert raw == 0x400007FF
    assert decode(raw) == {
        "raw": "0x400007ff",
        "level": 3,
        "valid": 1,
        "type": "page",
        "pa": "0x40000000",
        "memattr": 0xF,
        "s2ap": "rw",
        "sh": 3,
        "af": 1,
        "dbm": 0,
        "contiguous": 0,
        "xn": 0,
        "sw": 0,
    }


def test_level_defaults_to_3():
    assert decode(0x400007FF)["level"] == 3


def test_result_is_plain_json():
    d = decode(0x400007FF, 3)
    assert json.loads(json.dumps(d)) == d


@pytest.mark.parametrize(
    ("s2ap_bits", "name"),
    [(0, "none"), (bits.S2AP_R, "ro"), (bits.S2AP_W, "wo"), (bits.S2AP_RW, "rw")],
)
def test_s2ap_names_bits_7_6(s2ap_bits, name):
    raw = (bits.PAGE_S2 & ~bits.S2AP_MASK) | s2ap_bits
    assert decode(raw)["s2ap"] == name


def test_af_clear_is_reported():
    assert decode(bits.PAGE_S2 & ~bits.AF)["af"] == 0


def test_dbm_contiguous_xn_and_software_bits():
    raw = bits.PAGE_S2 | bits.DBM | bits.CONTIG | (2 << bits.XN_SHIFT) | (0xA << bits.SW_SHIFT)
    d = decode(raw)
    assert (d["dbm"], d["contiguous"], d["xn"], d["sw"]) == (1, 1, 2, 0xA)
    assert d["pa"] == "0x0", "upper attribute bits are not part of the output address"


def test_xn_is_both_bits_54_53_as_an_integer():
    assert decode(bits.PAGE_S2 | bits.XN_MASK)["xn"] == 3


def test_memattr_and_sh_fields():
    raw = bits.DESC_VALID | bits.DESC_TYPE | (0x5 << bits.MEMATTR_SHIFT) | (2 << bits.SH_SHIFT)
    d = decode(raw)
    assert (d["memattr"], d["sh"], d["af"], d["s2ap"]) == (5, 2, 0, "none")


def test_page_output_address_is_bits_47_12():
    raw = bits.PAGE_S2 | 0xFFFF_FFFF_F000 | (1 << 48)  # bit 48 is outside the OA
    assert decode(raw)["pa"] == "0xfffffffff000"


def test_level_2_block_output_address_is_bits_47_21():
    raw = bits.BLOCK_S2 | 0x4020_0000 | 0x1F_F000  # bits 20:12 are not output address
    d = decode(raw, 2)
    assert d["type"] == "block"
    assert d["pa"] == "0x40200000"
    assert set(d) == LEAF_KEYS


def test_level_1_block_output_address_is_bits_47_30():
    raw = bits.BLOCK_S2 | 0x8000_0000 | 0x3FFF_F000  # bits 29:12 are not output address
    d = decode(raw, 1)
    assert d["type"] == "block"
    assert d["pa"] == "0x80000000"


@pytest.mark.parametrize("level", [0, 1, 2])
def test_tables_at_levels_0_to_2_give_next_table_bits_47_12(level):
    raw = bits.TABLE_BASE | 0x5000 | bits.DESC_VALID | bits.DESC_TYPE
    assert decode(raw, level) == {
        "raw": hex(raw),
        "level": level,
        "valid": 1,
        "type": "table",
        "next_table": hex(bits.TABLE_BASE | 0x5000),
    }


def test_bits_1_0_set_at_level_3_is_a_page_not_a_table():
    assert decode(0b11, 3)["type"] == "page"


@pytest.mark.parametrize("raw", [0, bits.PAGE_S2 & ~bits.DESC_VALID, bits.INVALID_PTE_LOCKED])
@pytest.mark.parametrize("level", [0, 1, 2, 3])
def test_invalid_entries_have_no_fields(raw, level):
    assert decode(raw, level) == {"raw": hex(raw), "level": level, "valid": 0, "type": "invalid"}


def test_valid_level_3_entry_with_bit_1_clear_is_reserved():
    assert decode(bits.BLOCK_S2, 3) == {
        "raw": hex(bits.BLOCK_S2),
        "level": 3,
        "valid": 1,
        "type": "reserved",
    }


def test_level_0_block_does_not_exist_with_4k_granule():
    assert decode(bits.BLOCK_S2, 0)["type"] == "reserved"


def test_hex_strings_are_lower_case_without_separators():
    d = decode(0xFFFF_FFFF_FFFF_FFFF)
    assert d["raw"] == "0xffffffffffffffff"
    assert d["pa"] == "0xfffffffff000"
    assert d["sw"] == 0xF


@pytest.mark.parametrize("raw", [-1, 1 << 64, 1 << 70])
def test_raw_out_of_64_bit_range_is_rejected(raw):
    with pytest.raises(ValueError, match="64-bit"):
        decode(raw)


@pytest.mark.parametrize("level", [-1, 4, 7])
def test_level_out_of_range_is_rejected(level):
    with pytest.raises(ValueError, match="level"):
        decode(0, level)


@pytest.mark.parametrize("raw", ["0x7ff", 1.0, None, True])
def test_non_integer_raw_is_rejected(raw):
    with pytest.raises(ValueError, match="integer"):
        decode(raw)


def test_format_text_page():
    assert format_text(decode(0x400007FF)) == (
        "0x400007ff L3 page pa=0x40000000 s2ap=rw af=1 dbm=0 sh=3 memattr=0xf xn=0 contig=0 sw=0"
    )


def test_format_text_other_types_are_one_line():
    for raw, level, word in [
        (0, 3, "invalid"),
        (bits.INVALID_PTE_LOCKED, 3, "KVM_INVALID_PTE_LOCKED"),
        (bits.TABLE_BASE | 3, 1, "next_table=0x1000000000"),
        (bits.BLOCK_S2, 3, "reserved"),
        (bits.BLOCK_S2 | 0x4000_0000, 1, "L1 block pa=0x40000000"),
    ]:
        text = format_text(decode(raw, level))
        assert word in text
        assert "\n" not in text
