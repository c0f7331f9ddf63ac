"""Stage-2 geometry and the table image, as KVM sets them up (4KB granule)."""

from array import array

import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine import bits as B
from engine.layout import Geometry, Image, build_image, leaf_run, leaf_value
from engine.scenario import parse_scenario
from engine.spec import walk_image


@pytest.mark.parametrize(
    ("ipa_bits", "start_level", "entries", "concat", "sl0"),
    [
        (40, 1, 1024, 2, 1),  # KVM's classic 40-bit IPA: level 1, two concatenated tables
        (44, 0, 32, 1, 2),  # a level-0 table of 32 entries
        (42, 1, 4096, 8, 1),
        (43, 1, 8192, 16, 1),  # the Arm ARM's maximum of 16 concatenated tables
        (32, 2, 2048, 4, 0),
        (36, 1, 64, 1, 1),
        (48, 0, 512, 1, 2),
    ],
)
def test_start_level_and_concatenation_follow_kvm_get_vtcr(
    ipa_bits, start_level, entries, concat, sl0
):
    g = Geometry.for_ipa_bits(ipa_bits)
    assert (g.start_level, g.start_entries, g.concat, g.sl0) == (start_level, entries, concat, sl0)


def test_vtcr_el2_fields():
    vtcr = Geometry.for_ipa_bits(40).vtcr(ha=True, hd=False)
    assert vtcr & 0x3F == 24  # T0SZ = 64 - 40
    assert (vtcr >> 6) & 3 == 1  # SL0: start at level 1
    assert (vtcr >> 14) & 3 == 0  # TG0: 4KB
    assert (vtcr >> 16) & 7 == 5  # PS: 48-bit
    assert vtcr & B.VTCR_HA and not vtcr & B.VTCR_HD
    assert Geometry.for_ipa_bits(40).vttbr == (1 << 48) | B.TABLE_BASE


def test_leaf_values_are_kvms_page_s2():
    assert leaf_value(0x4000_0000, 4096, "rw", True, False) == 0x4000_07FF
    assert leaf_value(0x4000_0000, 2 << 20, "ro", False, True) == B.DBM | 0x4000_037D


def test_the_bulk_builder_matches_leaf_by_leaf_installation():
    sc = parse_scenario(
        """
name = "bulk"
kernel = "v6.6"
[[map]]
ipa = 0x8000_0000
pa = 0x1_0000_0000
count = 1500
s2ap = "ro"
[[map]]
ipa = 0x1_0000_0000
pa = 0x2_0000_0000
size = "2M"
count = 600
[[actor]]
name = "h"
kind = "host"
do = ["flush_tlb"]
"""
    )
    image, _ = build_image(sc)
    slow = Image(image.geometry)
    for m in sc.maps:
        for i in range(m.count):
            slow.install(
                m.ipa + i * m.size,
                B.leaf_level_for_size(m.size),
                leaf_value(m.pa + i * m.size, m.size, m.s2ap, m.af, m.dbm),
            )
    assert image.mem == slow.mem
    desc, level, _ = walk_image(image.mem, image.geometry, 0x8000_0000 + 1499 * 4096)
    assert level == 3 and desc & B.OA_MASK == 0x1_0000_0000 + 1499 * 4096


@given(
    first=st.integers(0, (1 << 64) - 1),
    n=st.integers(1, 512),
    step=st.sampled_from([1, 8, B.PAGE_SIZE, 1 << 21, 1 << 30]),
)
def test_a_leaf_run_is_the_range_it_stands_for(first, n, step):
    if first + (n - 1) * step >= 1 << 64:
        with pytest.raises(OverflowError):
            leaf_run(first, n, step)
        with pytest.raises(OverflowError):
            array("Q", range(first, first + n * step, step))
    else:
        assert leaf_run(first, n, step) == array("Q", range(first, first + n * step, step))
