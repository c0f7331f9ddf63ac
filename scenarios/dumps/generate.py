"""Writes the sample KVM stage-2 dumps in this directory (python scenarios/dumps/generate.py).

Each is what arch/arm64/kvm/ptdump.c prints for the tables of a ptviz machine
(engine/ptdump.py, format_dump follows note_page line by line): a QEMU-virt-like guest
with 1 GiB of RAM at 0x4000_0000 part-way through dirty logging, with the PL011 UART page
mapped as a device (XN, no AF), and a small one. tests/test_ptdump.py checks that the
files equal this script's output.
"""

from __future__ import annotations

from pathlib import Path

from engine import bits as B
from engine.core import new_machine
from engine.ptdump import dump_machine
from engine.scenario import parse_scenario
from engine.spec import build_spec, walk_image

HERE = Path(__file__).resolve().parent

VIRT = """
name = "virt guest, 1 GiB, dirty logging under way"
kernel = "v6.6"
[machine]
ipa_bits = 40
[[map]]
ipa = 0x0900_0000
pa = 0x0900_0000
size = "4K"
af = false
[[map]]
ipa = 0x4000_0000
pa = 0x4000_0000
size = "2M"
count = 8
[[map]]
ipa = 0x4100_0000
pa = 0x4100_0000
size = "4K"
count = 300
s2ap = "ro"
[[map]]
ipa = 0x4112_c000
pa = 0x4112_c000
size = "4K"
count = 212
[[map]]
ipa = 0x4120_0000
pa = 0x4120_0000
size = "4K"
count = 512
af = false
[[map]]
ipa = 0x4140_0000
pa = 0x4140_0000
size = "2M"
count = 470
s2ap = "ro"
[[map]]
ipa = 0x7fc0_0000
pa = 0x7fc0_0000
size = "2M"
count = 2
[[actor]]
name = "vcpu0"
kind = "vcpu"
do = ["read 0x4000_0000"]
"""

SMALL = """
name = "small guest"
kernel = "v6.6"
[[map]]
ipa = 0x8000_0000
pa = 0x8000_0000
size = "4K"
count = 3
[[map]]
ipa = 0x8000_3000
pa = 0x8000_3000
size = "4K"
af = false
s2ap = "ro"
[[map]]
ipa = 0x8020_0000
pa = 0x8020_0000
size = "2M"
[[actor]]
name = "vcpu0"
kind = "vcpu"
do = ["read 0x8000_0000"]
"""

# KVM maps device memory with XN (KVM_PGTABLE_PROT_DEVICE has no X): XN[1:0] = 0b10.
DEVICE_XN = 0b10 << B.XN_SHIFT


def machine_dump(text: str, xn_ipas=()) -> str:
    spec = build_spec(parse_scenario(text, "<sample>"))
    m = new_machine(spec)
    state = m.get_state()
    mem = bytearray(state["mem"])
    for ipa in xn_ipas:
        desc, _level, desc_pa = walk_image(m.mem_array(), spec.geometry, ipa)
        off = desc_pa - B.TABLE_BASE
        mem[off : off + 8] = (desc | DEVICE_XN).to_bytes(8, "little")
    state["mem"] = bytes(mem)
    m.set_state(state)
    return dump_machine(m, spec.geometry)


def samples() -> dict[str, str]:
    return {
        "virt-1g/stage2_page_tables": machine_dump(VIRT, xn_ipas=[0x0900_0000]),
        "virt-1g/ipa_range": "40\n",
        "virt-1g/stage2_levels": "3\n",
        "small.stage2_page_tables": machine_dump(SMALL),
    }


if __name__ == "__main__":
    for name, text in samples().items():
        path = HERE / name
        path.parent.mkdir(exist_ok=True)
        path.write_text(text)
        print(path)
