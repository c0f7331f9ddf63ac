"""Hypothesis strategies for the differential tests: random valid scenarios, and schedules.

`scenario_texts()` draws the text of a scenario file (SCENARIOS.md) that the parser accepts
and the engine builds: a machine (kernel, HAFDBS, HA/HD, IPA size, TLB), one to four
non-overlapping [[map]]s (4K pages, 2M and occasionally 1G blocks where the kernel makes
them: v6.6), and one to three actors
whose operations aim mostly at the mapped leaves. `schedules()` draws the choices that
pick, at each step, which enabled actor moves.
"""

from __future__ import annotations

from dataclasses import dataclass

from hypothesis import strategies as st

from engine.commits import COMMITS, GENERATIONS, PGTABLE
from engine.isa import FAULTS_MAX, TLB_ENTRIES
from engine.scenario import HOST_OPS, LOGGING_OPS, Scenario, parse_scenario
from engine.spec import NO_PUD_BLOCK_KERNELS, build_spec

K4 = 1 << 12
M2 = 1 << 21
G1 = 1 << 30
SIZE_BYTES = {"4K": K4, "2M": M2, "1G": G1}

# Below 35 IPA bits the stage-2 walk starts at level 2 (engine/layout.py): no level-1
# entry exists to hold a 1G block.
LEVEL1_IPA_BITS = 35

# Ops that loop per 4K gfn in v4.6/seed (handle_hva_to_gpa): a 1G range is 262,144
# iterations, far beyond what a test can run, so their ranges stay at most 2M there.
GFN_LOOP_OPS = ("age", "unmap")


@dataclass(frozen=True)
class _Map:
    ipa: int
    pa: int
    size: int
    count: int
    s2ap: str | None
    af: bool | None
    dbm: bool | None

    @property
    def end(self) -> int:
        return self.ipa + self.size * self.count

    def toml(self) -> str:
        lines = ["[[map]]", f"ipa = {self.ipa:#x}", f"pa = {self.pa:#x}"]
        name = {v: k for k, v in SIZE_BYTES.items()}[self.size]
        if name != "4K" or self.count % 2:  # the default size, written only sometimes
            lines.append(f'size = "{name}"')
        if self.s2ap is not None:
            lines.append(f's2ap = "{self.s2ap}"')
        if self.af is not None:
            lines.append(f"af = {str(self.af).lower()}")
        if self.dbm is not None:
            lines.append(f"dbm = {str(self.dbm).lower()}")
        if self.count != 1:
            lines.append(f"count = {self.count}")
        return "\n".join(lines)


def _optional(strategy):
    """None (the key is left out: its default applies) or a value."""
    return st.none() | strategy


@st.composite
def machines(draw, racy: bool = False):
    """(kernel, [machine] table lines, ipa_bits, tlb on); `racy`: hardware updates on (HA)."""
    kernel = draw(st.sampled_from(("v6.6", "v4.6", "seed", "v6.12")))
    hafdbs = draw(st.sampled_from((2, 1) if racy else (2, 1, 0)))
    lines = [f"hafdbs = {hafdbs}"] if hafdbs != 1 or draw(st.booleans()) else []
    # HA on (a what-if for v4.6) and HD on are where hardware updates race with software.
    if racy:
        ha = True
    elif hafdbs >= 1:
        ha = draw(st.sampled_from((True, None, False)))
    else:
        ha = draw(_optional(st.just(False)))
    if ha is not None:
        lines.append(f"ha = {str(ha).lower()}")
    hd = draw(st.sampled_from((True, None, False)) if hafdbs == 2 else _optional(st.just(False)))
    if hd is not None:
        lines.append(f"hd = {str(hd).lower()}")
    if GENERATIONS[kernel].base == PGTABLE:
        ipa_bits = draw(st.sampled_from((40, 44, 36, 32, 48)) | st.integers(32, 48) | st.just(None))
    else:
        ipa_bits = draw(st.sampled_from((40, None)))
    if ipa_bits is not None:
        lines.append(f"ipa_bits = {ipa_bits}")
    tlb = draw(_optional(st.booleans()))
    if tlb is not None:
        lines.append(f"tlb = {str(tlb).lower()}")
    # The Arm ARM choices ([machine] what-ifs), where their preconditions hold.
    # (HA by default only where no drawn `commits` can take it away: v6.6.)
    effective_ha = ha is True or (ha is None and kernel.startswith("v6") and hafdbs >= 1)
    allowed = {
        "af_on_permission_fault": effective_ha,
        "af_dirty_separate": hd is True,
        "tlb_evict": tlb is not False,
        "tlbi_vmalle1": tlb is not False,
    }
    for key, ok in allowed.items():
        if ok and draw(st.integers(0, 3)) == 0:
            lines.append(f"{key} = true")
    return kernel, lines, ipa_bits or 40, tlb is not False


@st.composite
def maps(draw, ipa_bits: int, max_maps: int = 4, racy: bool = False, kernel: str = "v6.6"):
    """1..max_maps non-overlapping leaves runs, clustered so that they share tables."""
    space = 1 << ipa_bits
    regions = sorted({0, 1, 2, (space >> 30) - 1})  # 1G regions: first ones and the last
    out: list[_Map] = []
    for _ in range(draw(st.integers(1, max_maps))):
        kind = draw(st.integers(0, 19))
        region = draw(st.sampled_from(regions)) << 30
        if kind < 15:  # 4K pages; near a table's end the run spills into the next table
            size = K4
            chunk = draw(st.sampled_from((0, 1, 2, 511)))
            page = draw(st.integers(0, 8) | st.integers(500, 511))
            ipa = region + chunk * M2 + page * K4
            count = draw(st.integers(1, 8))
        elif kind < 19:  # 2M blocks
            size = M2
            ipa = region + draw(st.sampled_from((0, 1, 2, 3, 8, 510))) * M2
            count = draw(st.integers(1, 4))
        elif ipa_bits >= LEVEL1_IPA_BITS and kernel not in NO_PUD_BLOCK_KERNELS:
            size, ipa, count = G1, region, 1  # a 1G block (needs a level-1 table)
        else:  # no level-1 entries or no PUD blocks: a 2M block at the region's start
            size, ipa, count = M2, region, 1
        while count > 1 and ipa + count * size > space:
            count -= 1
        if ipa + count * size > space:
            continue  # (never for the first run: every start above lies inside the space)
        if any(ipa < m.end and m.ipa < ipa + count * size for m in out):
            continue  # overlapping runs are skipped: the first one is always kept
        pa = (draw(st.integers(1, 255)) << 30) | (ipa & (G1 - 1))
        s2ap = draw(_optional(st.sampled_from(("rw", "rw", "ro", "none", "wo"))))
        # Old leaves invite races (hardware and software both setting/clearing AF).
        af = False if racy else draw(st.sampled_from((False, None, True)))
        dbm = draw(st.sampled_from((True, None, False)))
        out.append(_Map(ipa, pa, size, count, s2ap, af, dbm))
    assert out
    return out


@st.composite
def mapped_ipa(draw, ms: list[_Map], aligned: bool):
    """An address inside one of the leaves (4K aligned for host operations)."""
    m = draw(st.sampled_from(ms))
    leaf = m.ipa + draw(st.integers(0, m.count - 1)) * m.size
    pages = m.size // K4
    page = draw(st.sampled_from(sorted({0, 1 % pages, pages - 1})))
    ipa = leaf + page * K4
    if not aligned:
        ipa += draw(st.sampled_from((0, 0, 8, K4 - 8)))
    return ipa


def _covered(ms: list[_Map], ipa: int) -> bool:
    return any(m.ipa <= ipa < m.end for m in ms)


@st.composite
def unmapped_ipa(draw, ms: list[_Map], ipa_bits: int):
    """An address no [[map]] covers (falls back to a mapped one if there is none nearby)."""
    space = 1 << ipa_bits
    candidates = [m.end for m in ms] + [m.ipa - K4 for m in ms] + [space - K4, K4 * 3]
    candidates = [c for c in candidates if 0 <= c < space and not _covered(ms, c)]
    if not candidates:
        return draw(mapped_ipa(ms, aligned=True))
    return draw(st.sampled_from(sorted(set(candidates))))


@st.composite
def target_ipa(draw, ms: list[_Map], hot: list[int], ipa_bits: int, aligned: bool, focus=6):
    """Mostly one of the scenario's hot pages (so that actors race on the same leaf: `focus`
    in 10), else any mapped address, one in ten an unmapped one."""
    pick = draw(st.integers(0, 9))  # Hypothesis favours 0: the hot pages come first
    if pick < focus:
        ipa = draw(st.sampled_from(hot))
        return ipa if aligned else ipa + draw(st.sampled_from((0, 8, K4 - 8)))
    if pick < 9:
        return draw(mapped_ipa(ms, aligned))
    return draw(unmapped_ipa(ms, ipa_bits))


@st.composite
def op_sizes(draw, ms, ipa: int, ipa_bits: int, name: str, kernel: str, small: bool):
    """An optional SIZE for wp/age/unmap: a few pages, 2M, or up to the end of its map."""
    if small:
        size = draw(st.sampled_from((None, None, K4, 2 * K4)))
    else:
        size = draw(st.sampled_from((None, None, K4, 2 * K4, 4 * K4, M2, "cover")))
    if size == "cover":  # from IPA to the end of the run it lies in
        size = next((m.end - ipa for m in ms if m.ipa <= ipa < m.end), None)
    if size is None:
        return None
    if GENERATIONS[kernel].base != PGTABLE and name in GFN_LOOP_OPS:
        size = min(size, M2)
    if ipa + size > 1 << ipa_bits:
        return None
    return size


def _size_token(size: int) -> str:
    for suffix, unit in (("G", G1), ("M", 1 << 20), ("K", 1 << 10)):
        if size % unit == 0:
            return f"{size // unit}{suffix}"
    return f"{size:#x}"


# Dirty logging and table lifetime: the host toggles logging, harvests and unmaps while
# vCPUs read and write (faults then dissolve/split blocks and allocate tables).
LOGGING_HOST_OPS = (*LOGGING_OPS, "log_start", "get_dirty_log", "unmap", "wp", "set_readonly")


@st.composite
def actors(draw, ms, kernel, ipa_bits, tlb, max_actors, max_ops, small, racy, logging=False):
    out = []
    counters = {"vcpu": 0, "host": 0}
    focus = 10 if racy else 8 if small else 6
    hot = [draw(mapped_ipa(ms, aligned=True))]
    if draw(st.integers(0, 3)) == 0:
        hot.append(draw(mapped_ipa(ms, aligned=True)))
    # Races need company: one actor alone is drawn a fifth of the time.
    n = 2 if racy else min(max_actors, draw(st.sampled_from((2, 1, 2, 3, 3))))
    for k in range(n):
        if racy:
            kind = ("vcpu", "host")[k]
        else:
            kind = draw(st.sampled_from(("vcpu", "host") if k % 2 == 0 else ("host", "vcpu")))
        name = f"{kind}{counters[kind]}"
        counters[kind] += 1
        ops = []
        for _ in range(draw(st.integers(1, max_ops))):
            if kind == "vcpu":
                op = draw(
                    st.sampled_from(("write", "read", "write") if logging else ("read", "write"))
                )
                ops.append(f"{op} {draw(target_ipa(ms, hot, ipa_bits, False, focus)):#x}")
                continue
            op = draw(st.sampled_from(LOGGING_HOST_OPS if logging else HOST_OPS))
            if op == "flush_tlb":
                ops.append(op)
                continue
            ipa = draw(target_ipa(ms, hot, ipa_bits, True, focus))
            text = f"{op} {ipa:#x}"
            if op in ("wp", "age", "unmap", *LOGGING_OPS):
                size = draw(op_sizes(ms, ipa, ipa_bits, op, kernel, small))
                if size is not None:
                    text += f" {_size_token(size)}"
            ops.append(text)
        lines = ["[[actor]]", f'name = "{name}"', f'kind = "{kind}"']
        lines.append("do = [" + ", ".join(f'"{o}"' for o in ops) + "]")
        if kind == "vcpu" and tlb and draw(st.integers(0, 3)) == 0:
            if draw(st.integers(0, 7)) == 0:  # a full TLB: fills must evict (FIFO)
                many = TLB_ENTRIES - draw(st.integers(0, 2))
                preload = draw(
                    st.lists(mapped_ipa(ms, aligned=False), min_size=many, max_size=many)
                )
            else:
                preload = draw(st.lists(mapped_ipa(ms, aligned=False), min_size=1, max_size=3))
            lines.append("tlb = [" + ", ".join(f"{ipa:#x}" for ipa in preload) + "]")
        out.append("\n".join(lines))
    return out


@st.composite
def scenario_texts(
    draw,
    max_actors: int = 3,
    max_ops: int = 3,
    max_maps: int = 4,
    small=False,
    racy=False,
    logging=False,
):
    """The text of a valid scenario file. `small` keeps host ranges to a page or two (for
    exhaustive exploration); `racy` sets up a race: HA on, old leaves, a vCPU and a host
    both working on the same page; `logging`: the host mostly runs the dirty-logging
    operations and unmap, the vCPUs mostly write."""
    kernel, machine_lines, ipa_bits, tlb = draw(machines(racy))
    ms = draw(maps(ipa_bits, max_maps, racy, kernel))
    parts = ['name = "generated"', f'kernel = "{kernel}"']
    changes = draw(commit_changes(kernel))
    if changes:
        parts.append("commits = [" + ", ".join(f'"{c}"' for c in changes) + "]")
    if machine_lines:
        parts.append("\n[machine]\n" + "\n".join(machine_lines))
    parts += ["\n" + m.toml() for m in ms]
    parts += [
        "\n" + a
        for a in draw(actors(ms, kernel, ipa_bits, tlb, max_actors, max_ops, small, racy, logging))
    ]
    if draw(st.integers(0, 3)) == 0:
        ipa = draw(mapped_ipa(ms, aligned=True))
        preds = [f"{ipa:#x}: valid=1"]
        if "vcpu0" in "".join(parts) and draw(st.booleans()):  # counts vCPU faults
            preds.append(f"vcpu0: faults={draw(st.integers(0, FAULTS_MAX))}")
        parts.append("\n[expect]\nsometimes = [" + ", ".join(f'"{p}"' for p in preds) + "]")
    text = "\n".join(parts) + "\n"
    # The strategy's contract: only scenarios the parser accepts and the engine builds.
    scenario = parse_scenario(text, "generated.toml")
    assert isinstance(scenario, Scenario)
    build_spec(scenario)
    return text


@st.composite
def commit_changes(draw, kernel: str):
    """Modelled commits applied ("+ID") or reverted ("-ID") on top of `kernel`: any of those
    that change its code base, each toggled or not."""
    gen = GENERATIONS[kernel]
    out = []
    for short, commit in COMMITS.items():
        if commit.base == gen.base and draw(st.integers(0, 2)) == 0:
            out.append(("-" if short in gen.commits else "+") + short)
    return out


def schedules(max_size: int = 400):
    """Choices: step k runs enabled[choices[k] % len(enabled)] (0..5 is uniform for 1-3
    enabled actors); past the end of the list the drivers rotate through the enabled ones."""
    return st.lists(st.integers(0, 5), max_size=max_size)
