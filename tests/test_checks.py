"""The checks themselves: each fires exactly when its rule is broken."""

import pytest

from engine import bits as B
from engine.core import new_machine
from engine.scenario import parse_scenario
from engine.spec import build_spec, walk_image

REFAULT = """
name = "refault"
kernel = "v4.6"
[machine]
hafdbs = 0
[[map]]
ipa = 0x8000_0000
pa = 0x4000_0000
[[actor]]
name = "vcpu0"
kind = "vcpu"
do = ["read 0x8000_0000"]
[[actor]]
name = "host0"
kind = "host"
do = ["flush_tlb"]
"""


def run_vcpu(m):
    while not m.done(0):
        m.step(0)


def refault_machine(engine, pending_pa):
    """A PTE already cleared (its old leaf pointing at `pending_pa` still awaits a TLB
    invalidation); the vCPU's refault then installs the memslot's page."""
    spec = build_spec(parse_scenario(REFAULT))
    m = new_machine(spec, engine)
    state = m.get_state()
    desc, level, addr = walk_image(spec.mem, spec.geometry, 0x8000_0000)
    mem = bytearray(state["mem"])
    slot = (addr - B.TABLE_BASE) >> 3
    mem[8 * slot : 8 * slot + 8] = bytes(8)
    state["mem"] = bytes(mem)
    state["pending"] = [[addr, (desc & ~B.OA_MASK) | pending_pa, 0x8000_0000, 4096]]
    m.set_state(state)
    return m


@pytest.mark.parametrize("engine", ["cython", "python"])
def test_a_new_output_address_without_tlb_invalidation_breaks_break_before_make(engine):
    m = refault_machine(engine, pending_pa=0x5000_0000)
    run_vcpu(m)
    (v,) = m.violations
    assert v[0] == 1 and v[4] == 0x8000_0000  # break_before_make at the IPA
    assert v[5] == (0x5000_0000 ^ 0x4000_0000)  # the output-address bits that changed


@pytest.mark.parametrize("engine", ["cython", "python"])
def test_the_same_output_address_again_is_not_a_break(engine):
    m = refault_machine(engine, pending_pa=0x4000_0000)
    run_vcpu(m)
    assert m.violations == []


@pytest.mark.parametrize("engine", ["cython", "python"])
def test_a_tlb_invalidation_completes_the_break(engine):
    m = refault_machine(engine, pending_pa=0x5000_0000)
    m.step(1)  # kvm_flush_remote_tlbs between the break and the make
    run_vcpu(m)
    assert m.violations == []
