"""A moment as a scenario that starts there (`python -m engine freeze`, issue 7).

The scenario keeps the machine and kernel, maps every leaf as the tables hold it now, and
turns what each CPU still has to do (its queued and injected operations) into its `do`
list, so that `explore` answers "from here, what can still happen". What a scenario
cannot say is listed, one note per thing, and written into the file's description:
an operation half done (it restarts from its beginning: its effects so far are in the
descriptors), a lock held, an exclusive monitor armed, a TLB entry that no longer matches
the tables, descriptor bits the scenario language has no key for, leaves unmapped since
the start.
"""

from __future__ import annotations

import tomllib

from . import bits as B
from .layout import leaf_value
from .report import hexs
from .scenario import parse_scenario
from .sizes import size_name


class FreezeError(ValueError):
    """The moment cannot be a scenario (one line)."""


FROZEN_KEYS = ("name", "description", "kernel", "machine", "map", "actor", "expect")


def leaves_now(machine, geometry) -> tuple[list[tuple[int, int, int]], list[tuple[int, int]]]:
    """(ipa, level, descriptor) of every valid leaf, in IPA order, and (ipa, descriptor)
    of every invalid entry that is not zero (a descriptor mid break-before-make)."""
    out, odd = [], []

    def walk(table: int, level: int, base: int, entries: int) -> None:
        shift = B.level_shift(level)
        for index, desc in enumerate(machine.table(table, entries)):
            if not desc:
                continue
            ipa = base + (index << shift)
            if not desc & B.DESC_VALID:
                odd.append((ipa, desc))
            elif level < 3 and desc & B.DESC_TYPE:
                walk(desc & B.OA_MASK, level + 1, ipa, B.PTRS_PER_TABLE)
            elif level == 3 and not desc & B.DESC_TYPE:
                odd.append((ipa, desc))  # reserved encoding at level 3
            else:
                out.append((ipa, level, desc))

    walk(B.TABLE_BASE, geometry.start_level, 0, geometry.start_entries)
    return out, odd


def maps_of(leaves) -> tuple[list[dict], list[str]]:
    """Runs of leaves that one [[map]] with `count` describes."""
    maps: list[dict] = []
    notes = []
    for ipa, level, desc in leaves:
        size = 1 << B.level_shift(level)
        pa = desc & B.OA_MASK & ~(size - 1)
        entry = {
            "ipa": ipa,
            "pa": pa,
            "size": size,
            "s2ap": B.s2ap_name(desc),
            "af": bool(desc & B.AF),
            "dbm": bool(desc & B.DBM),
        }
        default = leaf_value(pa, size, entry["s2ap"], entry["af"], entry["dbm"])
        if desc != default:
            bits = ", ".join(B.lost_bit_names(desc ^ default))
            notes.append(
                f"{hexs(ipa)}: descriptor {hexs(desc)} has {bits} bits no scenario key sets "
                f"(mapped as KVM installs it: {hexs(default)})"
            )
        last = maps[-1] if maps else None
        if (
            last is not None
            and all(last[k] == entry[k] for k in ("size", "s2ap", "af", "dbm"))
            and last["ipa"] + last["count"] * size == ipa
            and last["pa"] + last["count"] * size == pa
        ):
            last["count"] += 1
        else:
            maps.append(entry | {"count": 1})
    return maps, notes


def _toml_str(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def toml_value(value) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int):
        return str(value)
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    return _toml_str(value)


def write_scenario(name, description, kernel, machine: dict, maps, actors, extra=None) -> str:
    """Scenario text (SCENARIOS.md): `maps` as maps_of makes them, `actors` as
    (name, kind, do, tlb) tuples, `extra` more top-level keys (written as they are)."""
    lines = [
        f"name = {_toml_str(name)}",
        f"description = {_toml_str(description)}",
        f"kernel = {_toml_str(kernel)}",
        *(f"{k} = {toml_value(v)}" for k, v in (extra or {}).items()),
        "",
        "[machine]",
        *(f"{k} = {toml_value(v)}" for k, v in machine.items()),
    ]
    for mp in maps:
        lines += [
            "",
            "[[map]]",
            f"ipa = {hexs(mp['ipa'])}",
            f"pa = {hexs(mp['pa'])}",
            f"size = {_toml_str(size_name(mp['size']))}",
            f"s2ap = {_toml_str(mp['s2ap'])}",
            f"af = {toml_value(mp['af'])}",
            f"dbm = {toml_value(mp['dbm'])}",
        ]
        if mp["count"] > 1:
            lines.append(f"count = {mp['count']}")
    for name_, kind, do, tlb in actors:
        lines += [
            "",
            "[[actor]]",
            f"name = {_toml_str(name_)}",
            f"kind = {_toml_str(kind)}",
            "do = [" + ", ".join(_toml_str(t) for t in do) + "]",
        ]
        if tlb:
            lines.append("tlb = [" + ", ".join(hexs(t) for t in tlb) + "]")
    return "\n".join(lines) + "\n"


def freeze(session) -> tuple[str, list[str]]:
    """(scenario text, notes on what could not be carried over) for where `session` is."""
    m = session.machine
    sc = session.scenario
    spec = session.spec
    g = spec.geometry
    notes: list[str] = []
    leaves, odd = leaves_now(m, g)
    maps, bit_notes = maps_of(leaves)
    notes += bit_notes
    for ipa, desc in odd:
        notes.append(
            f"{hexs(ipa)}: invalid descriptor {hexs(desc)} (mid break-before-make): left unmapped"
        )
    now = {ipa for ipa, _level, _desc in leaves}
    gone = [ipa for mp in sc.maps for ipa, _pa in mp.leaves() if ipa not in now]
    if gone:
        notes.append(
            f"{len(gone):,} leaves of the scenario's maps are unmapped now (first "
            f"{hexs(gone[0])}): the frozen scenario has no guest memory behind them"
        )
    writer, readers = m.lock_holder()
    if writer >= 0 or readers:
        held = session.names[writer] if writer >= 0 else f"{readers} reader(s)"
        notes.append(f"kvm->mmu_lock held by {held}: free at the start of the frozen scenario")
    state = m.get_state()
    if state["pending"]:
        notes.append(
            f"{len(state['pending'])} TLB invalidation(s) owed by a break-before-make in "
            "progress: not carried (the frozen start has none pending)"
        )
    actors = []
    for i, name in enumerate(session.names):
        if i >= len(sc.actors):  # the what-if TLB evictor: machine.tlb_evict brings it back
            continue
        view = m.actor_view(i)
        ops = m.ops_of(i)
        if m.done(i):
            notes.append(f"{name} had finished its operations: left out")
            continue
        op = ops[view["op_i"]]
        if view["pc"] != op.entry:
            notes.append(
                f"{name} was half-way through {op.text!r} (at "
                f"{spec.program.lines[view['pc']]!r}): it restarts from its beginning"
            )
        if view["monitor"]:
            notes.append(f"{name}'s exclusive monitor on {hexs(view['monitor'])}: cleared")
        tlb = []
        for base, size, desc, desc_pa in view["tlb"]:
            now_desc = m.read(desc_pa)
            if now_desc == desc and base in now:
                tlb.append(base)
            else:
                notes.append(
                    f"{name}'s TLB entry for {hexs(base)} ({size_name(size)}, {hexs(desc)}) "
                    f"is stale (the table now holds {hexs(now_desc)}): not preloaded"
                )
        actors.append((name, session.kinds[i], [o.text for o in ops[view["op_i"] :]], tlb))
    if not actors:
        raise FreezeError(
            f"every actor had finished by step {session.position:,}: a scenario needs one "
            "to run (freeze an earlier step with --to)"
        )
    for v in session.violations():
        notes.append(
            f"{v['check']} was already violated at {v['ipa']} ({'|'.join(v['bits'])}) by "
            f"{v['actor']}: the frozen scenario starts from its result"
        )
    # The machine and any other top-level keys (what-ifs, commits) as the scenario wrote
    # them: the frozen scenario runs the same code on the same hardware.
    source = tomllib.loads(session.scenario_text)
    machine = source.get("machine", {})
    extra = {k: v for k, v in source.items() if k not in FROZEN_KEYS}
    description = (
        f"Frozen from {sc.name!r} after {session.position:,} decisions (python -m engine freeze)."
        + "".join(f"\nNot carried over: {n}" for n in notes)
    )
    name = f"{sc.name} @ step {session.position:,}"
    text = write_scenario(name, description, sc.kernel, machine, maps, actors, extra)
    parse_scenario(text, "<frozen>")  # what we write must be a scenario
    return text, notes
