"""What the CLI prints (SCENARIOS.md, CLI): final states, traces, violations, expectations."""

from __future__ import annotations

import hashlib
from array import array
from collections.abc import Callable

from . import bits as B
from . import isa as I
from ._leaves import summary_counts
from .commits import commits_json, reverted
from .core import new_machine
from .explore import explore
from .scenario import WHAT_IF_KEYS, Scenario
from .schedules import RunLength, compact_schedule
from .sizes import size_name
from .spec import MachineSpec

LEAVES_LISTED_MAX = 4096
# Leaves read at a time to tell final states apart: a million leaves' descriptors and
# levels at once were 9 MB more at `run`'s peak than the tables themselves.
CHUNK_LEAVES = 1 << 16


def chunked_runs(runs, size: int = CHUNK_LEAVES) -> list[list[tuple[int, int, int]]]:
    """(ipa, count, size) runs of leaves, split into groups of at most `size` leaves."""
    out: list[list[tuple[int, int, int]]] = [[]]
    room = size
    for ipa, count, step in runs:
        while count:
            if not room:
                out.append([])
                room = size
            take = min(count, room)
            out[-1].append((ipa, take, step))
            ipa, count, room = ipa + take * step, count - take, room - take
    return out


EVF_NAMES = (
    (I.EVF_TLB_FILL, "tlb-fill"),
    (I.EVF_OP_DONE, "op-done"),
    (I.EVF_LOST_UPDATE, "lost-update"),
    (I.EVF_BBM, "break-before-make"),
)


def hexs(value: int) -> str:
    return f"{value:#x}"


def leaf_fields(desc: int, level: int) -> dict:
    """A leaf as predicates and the JSON see it."""
    valid = 1 if _is_leaf(desc, level) else 0
    size = 1 << B.level_shift(level)
    return {
        "valid": valid,
        "af": 1 if desc & B.AF else 0,
        "s2ap": B.s2ap_name(desc),
        "dbm": 1 if desc & B.DBM else 0,
        "pa": desc & B.OA_MASK & ~(size - 1) if valid else 0,
        "raw": desc,
        "size": size_name(size),
    }


def _is_leaf(desc: int, level: int) -> bool:
    if not desc & B.DESC_VALID:
        return False
    return bool(desc & B.DESC_TYPE) if level == 3 else level in (1, 2) and not desc & B.DESC_TYPE


def leaf_json(fields: dict) -> dict:
    out = dict(fields)
    out["pa"] = hexs(fields["pa"])
    out["raw"] = hexs(fields["raw"])
    return out


class Observer:
    """Reads final states off a machine: the scenario's leaves and the predicates' leaves."""

    def __init__(self, spec: MachineSpec):
        self.spec = spec
        sc = spec.scenario
        # (ipa, count, size) of each map: its leaves, walked at C speed (_leaves.pyx)
        self.chunks = chunked_runs((m.ipa, m.count, m.size) for m in sc.maps)
        self.leaves_count = sum(m.count for m in sc.maps)
        ex = sc.expect
        preds = (ex.always + ex.sometimes + ex.never) if ex else ()
        self.pred_ipas = sorted({p.ipa for p in preds if p.actor is None})
        self.pred_runs = [(ipa, 1, B.PAGE_SIZE) for ipa in self.pred_ipas]
        # Actors that predicates read: their values are part of what tells states apart.
        names = spec.actor_names
        self.pred_actors = sorted({names.index(p.actor) for p in preds if p.actor})
        self.info: dict[bytes, dict] = {}

    def __call__(self, machine) -> bytes:
        h = hashlib.blake2b(digest_size=16)
        h_levels = hashlib.blake2b(digest_size=16)
        one = len(self.chunks) == 1
        counts: dict = {}
        for runs in self.chunks:
            values, levels = machine.walk_leaves(runs)
            h.update(values)
            h_levels.update(levels)
            if not one:  # (a state seen before needs no summary: one chunk waits for that)
                for row, n in summary_counts(values, levels).items():
                    counts[row] = counts.get(row, 0) + n
        actors = {}
        for i in self.pred_actors:
            regs = machine.actor_view(i)["regs"]
            vcpu = self.spec.actors[i].kind == I.KIND_VCPU
            actors[self.spec.actor_names[i]] = (
                {"faults": regs[I.FAULTS]} if vcpu else {"ret": int(regs[I.RET] != 0)}
            )
        # The leaves the predicates name (a split block's pages are not map leaves), the
        # levels of the leaves and the dirty log are part of what a final state is.
        pred_values, pred_levels = machine.walk_leaves(self.pred_runs)
        extra = array("Q", pred_values)
        extra.extend(v for a in actors.values() for v in a.values())
        dirty = machine.dirty_log()
        h.update(h_levels.digest())
        h.update(extra.tobytes())
        h.update(repr(dirty).encode())
        key = h.digest()
        if key not in self.info:
            if one:
                counts = summary_counts(values, levels)
            listed = (values, levels) if self.leaves_count <= LEAVES_LISTED_MAX else None
            self.info[key] = self._describe(counts, listed, pred_values, pred_levels, dirty)
            self.info[key]["actors"] = actors
        return key

    def _describe(self, counts, listed, pred_values, pred_levels, dirty) -> dict:
        """`listed`: (descriptors, levels) of every leaf, when there are few enough to list
        (they are then one chunk)."""
        rows = {
            (v, af, B.s2ap_name(s2ap << B.S2AP_SHIFT), dbm): n
            for (v, af, s2ap, dbm), n in counts.items()
        }
        leaves = {}
        if listed is not None:
            ipas = (ipa for m in self.spec.scenario.maps for ipa, _pa in m.leaves())
            for ipa, desc, level in zip(ipas, *listed, strict=True):
                leaves[hexs(ipa)] = leaf_fields(desc, level)
        recorded = set(dirty["bitmap"]) | set(dirty["harvested"]) if dirty else set()
        preds = {}
        for ipa, desc, level in zip(self.pred_ipas, pred_values, pred_levels, strict=True):
            preds[ipa] = leaf_fields(desc, level)
            preds[ipa]["dirty"] = int(ipa & ~(B.PAGE_SIZE - 1) in recorded)
        summary = [
            {"valid": v, "af": af, "s2ap": s2ap, "dbm": dbm, "count": n}
            for (v, af, s2ap, dbm), n in sorted(rows.items(), key=lambda kv: (-kv[1], kv[0]))
        ]
        out = {"leaves": leaves if listed is not None else None, "summary": summary, "preds": preds}
        if dirty is not None:
            out["dirty_log"] = {
                "bitmap": [hexs(p) for p in dirty["bitmap"]],
                "harvested": [hexs(p) for p in dirty["harvested"]],
            }
        return out


def event_json(spec: MachineSpec, e: tuple, ops_of: Callable[[int], list] | None = None) -> dict:
    """One event record as JSON. `ops_of` (a machine's ops_of) names the operations
    injected after the scenario's own: pass it whenever the machine may have some."""
    seq, actor, op_i, pc, kind, detail, flags, level, addr, ipa, old, new = e
    a = spec.actors[actor]
    out = {
        "seq": seq,
        "actor": a.name,
        "op": op_name(spec, actor, op_i, ops_of),
        "op_index": op_i,
        "kind": I.EVENT_KIND_NAMES[kind],
        "at": spec.program.lines[pc],
        "pc": pc,
    }
    if kind in (I.EV_LOCK, I.EV_UNLOCK):
        out["lock"] = I.LOCK_MODE_NAMES[detail]
    elif kind == I.EV_TLBI:
        out["tlbi"] = I.TLBI_NAMES[detail]
        if detail == 0:
            out["ipa"] = hexs(ipa)
        elif detail == 2:  # a TLB eviction (machine.tlb_evict): whose TLB
            out["vcpu"] = spec.actors[ipa].name
    elif kind == I.EV_MARK_DIRTY:
        out["ipa"] = hexs(ipa)
    elif kind == I.EV_LOG:
        out.update(logging="start" if detail else "stop", ipa=hexs(ipa), end=hexs(new))
    elif kind == I.EV_HARVEST:
        out.update(ipa=hexs(ipa), mask=hexs(old))
    else:
        out.update(level=level, addr=hexs(addr), ipa=hexs(ipa), old=hexs(old), new=hexs(new))
        if detail:
            out["fault"] = I.FAULT_NAMES[detail]
    names = [name for bit, name in EVF_NAMES if flags & bit]
    if names:
        out["flags"] = names
    return out


def op_name(
    spec: MachineSpec, actor: int, op_i: int, ops_of: Callable[[int], list] | None = None
) -> str | None:
    """The name of actor's operation number op_i: the scenario's, else an injected one."""
    ops = spec.actors[actor].ops
    if op_i < len(ops):
        return ops[op_i].name
    if ops_of is not None:
        live = ops_of(actor)
        if op_i < len(live):
            return live[op_i].name
    return None


def final_state_json(observer: Observer, key: bytes, count: int, schedule: list[str]) -> dict:
    info = observer.info[key]
    out = {}
    if info["leaves"] is not None:
        out["leaves"] = {ipa: leaf_json(f) for ipa, f in info["leaves"].items()}
    out["leaf_summary"] = info["summary"]
    if "dirty_log" in info:
        out["dirty_log"] = info["dirty_log"]
    if info["actors"]:
        out["actors"] = info["actors"]
    out["count"] = count
    out["example_schedule"] = schedule
    return out


def evaluate_expect(
    scenario: Scenario,
    observer: Observer,
    final_keys: list[bytes],
    violated: set[str],
    cycles: int | None = None,
) -> dict:
    """The [expect] results over `final_keys`; `cycles` is the explorer's count (a single
    run has none: `expect.cycles` is then not checked)."""
    ex = scenario.expect
    results = []
    if ex is None:
        return {"passed": True, "results": results}

    def holds(pred, key):
        info = observer.info[key]
        return pred.holds(info["actors"][pred.actor] if pred.actor else info["preds"][pred.ipa])

    for kind, preds, test in (
        ("always", ex.always, all),
        ("sometimes", ex.sometimes, any),
        ("never", ex.never, lambda it: not any(it)),
    ):
        for pred in preds:
            held = test(holds(pred, key) for key in final_keys)
            results.append({"kind": kind, "expr": pred.text, "held": bool(held)})
    if ex.violations is not None:
        expected = set(ex.violations)
        results.append(
            {
                "kind": "violations",
                "expr": sorted(expected),
                "found": sorted(violated),
                "held": expected == violated,
            }
        )
    if ex.cycles is not None and cycles is not None:
        results.append(
            {
                "kind": "cycles",
                "expr": f"= {ex.cycles}",
                "found": cycles,
                "held": cycles == ex.cycles,
            }
        )
    return {"passed": all(r["held"] for r in results), "results": results}


def machine_json(spec: MachineSpec) -> dict:
    m = spec.scenario.machine
    g = spec.geometry
    sc = spec.scenario
    return {
        "commits": commits_json(sc.kernel, sc.commits),
        "reverted": reverted(sc.kernel, sc.commits),
        "hafdbs": m.hafdbs,
        "ha": m.ha,
        "hd": m.hd,
        "ipa_bits": m.ipa_bits,
        "granule": m.granule,
        "tlb": m.tlb,
        **{key: getattr(m, key) for key in WHAT_IF_KEYS},
        "vtcr_el2": hexs(spec.vtcr),
        "vttbr_el2": hexs(g.vttbr),
        "start_level": g.start_level,
        "start_tables": g.concat,
    }


def explore_json(
    spec, engine: str, max_states: int, machine=None, progress=False, on_progress=None
) -> dict:
    """What `python -m engine explore FILE --json` prints (SCENARIOS.md); the web explorer
    sends the same object. Explores from `machine`'s state (a live session's moment:
    injected operations included) or from the scenario's start; a violation that had
    already happened there is listed with an empty schedule and "before": true."""
    # (from the scenario's start, a replay needs no copy of it: 8 MB at a million leaves)
    start = machine.get_state() if machine is not None else None
    machine = machine if machine is not None else new_machine(spec, engine)
    already = {I.CHECK_NAMES[v[0]]: v for v in machine.violations}
    observer = Observer(spec)
    result = explore(
        machine, observer, max_states=max_states, progress=progress, on_progress=on_progress
    )
    names = spec.actor_names
    ops_of = machine.ops_of

    def replay_trace(schedule: list[int]) -> list[dict]:
        m = new_machine(spec, engine)
        if start is not None:
            m.set_state(start)
        for actor in schedule:
            m.step(actor)
        return [event_json(spec, e, ops_of) for e in m.event_tuples()]

    def named(schedule) -> list[str] | RunLength:
        if isinstance(schedule, RunLength):  # (a one-actor run: stays run-length encoded)
            return schedule.named(names)
        return [names[i] for i in schedule]

    # JSON-ready for the web explorer too: a long example as `example_schedule_rle`
    finals = [
        compact_schedule(
            final_state_json(observer, f.key, f.count, named(f.schedule)), "example_schedule"
        )
        for f in result.finals
    ]
    violations = [
        {
            "check": check,
            "ipa": hexs(ipa),
            "bits": B.lost_bit_names(bits),
            "actor": names[who],
            "op": op_name(spec, who, op_i, ops_of),
            "schedule": [],
            "trace": [],
            "before": True,
        }
        for check, (_c, _seq, who, op_i, ipa, bits) in already.items()
    ]
    violations += [
        {
            "check": v.check,
            "ipa": hexs(v.ipa),
            "bits": B.lost_bit_names(v.bits),
            "actor": names[v.actor],
            "op": op_name(spec, v.actor, v.op_index, ops_of),
            "schedule": list(named(v.schedule)),
            "trace": replay_trace(v.schedule),
            "interleavings": result.violation_counts.get(v.check, 0),
        }
        for v in result.violations.values()
        if v.check not in already
    ]
    expect = evaluate_expect(
        spec.scenario,
        observer,
        [f.key for f in result.finals],
        set(result.violations) | set(already),
        result.cycles,
    )
    sc = spec.scenario
    return {
        "scenario": sc.name,
        "kernel": sc.kernel,
        "machine": machine_json(spec),
        "interleavings": result.interleavings,
        "states": result.states,
        "cycles": result.cycles,
        "final_states": finals,
        "violations": violations,
        "expect": expect,
    }
