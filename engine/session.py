"""A live debugging session: a scenario, the decisions taken on it, and the machine.

The machine's state after N decisions is a pure function of (scenario, first N decisions)
(DESIGN.md, "One currency"), so a session is recorded as its scenario text plus its
decisions: ("step", actor) runs one micro-step, ("inject", actor, "op text") queues an
operation. Snapshots every `snapshot_every` decisions make seeking and stepping back cheap;
each carries the state hash that verifies a replay. Nothing here knows about Django.

History is append-only (engine/history.py): a decision taken after seeking back starts a
new branch and keeps the old one; `decisions` is the path to the current branch's tip.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from . import bits as B
from . import isa as I
from .commits import GENERATIONS, PGTABLE, commits_json, reverted
from .core import new_machine
from .decode import decode
from .history import Checkpoint, HistoryError, Path, Tree
from .report import event_json, hexs
from .scenario import WHAT_IF_KEYS, Scenario, ScenarioError, parse_op, parse_scenario
from .snapshot import pack, state_hash, unpack
from .spec import MachineSpec, build_spec, op_spec
from .twin import EngineError

RECORDING_FORMAT = "ptviz-recording/1"
# Snapshots cost memory in proportion to the table memory (8 MiB for a 4 GiB guest), so a
# big machine is snapshotted less often: at most about this many snapshot bytes per
# decision, and at most MAX_CHECKPOINTS kept (older ones thinned out; seeking re-executes
# from the nearest one left, at tens of millions of micro-steps a second).
SNAPSHOT_BYTES_PER_DECISION = 64
MAX_CHECKPOINTS = 64


class ReplayError(EngineError):
    pass


__all__ = ["Checkpoint", "LiveSession", "ReplayError"]


# A recording lists checkpoint hashes; checking one costs a full state hash (0.1 s on 4M
# leaves), so a small crafted file listing hundreds would cost minutes of CPU. At most this
# many, spread evenly over the recording, are checked; the final hash covers the rest.
MAX_VERIFIED_CHECKPOINTS = 16


def _same_step(decision, step: list) -> bool:
    return (
        isinstance(decision, list)
        and len(decision) >= 2
        and decision[0] == "step"
        and type(decision[1]) is type(step[1])
        and decision[1] == step[1]
    )


def verified_checkpoints(listed, decisions: int) -> dict[int, str]:
    """position -> hash of the checkpoints from_recording checks (at most
    MAX_VERIFIED_CHECKPOINTS of those listed, evenly spaced)."""
    if not isinstance(listed, list):
        raise ReplayError("recording: 'checkpoints' must be a list")
    found = {}
    for c in listed:
        if not isinstance(c, dict) or not isinstance(c.get("position"), int):
            raise ReplayError(f"recording: checkpoint {c!r} is malformed")
        if 0 < c["position"] <= decisions and isinstance(c.get("hash"), str):
            found[c["position"]] = c["hash"]
    positions = sorted(found)
    if len(positions) > MAX_VERIFIED_CHECKPOINTS:
        step = len(positions) / MAX_VERIFIED_CHECKPOINTS
        positions = [positions[int(i * step)] for i in range(MAX_VERIFIED_CHECKPOINTS)]
    return {p: found[p] for p in positions}


@dataclass
class LiveSession:
    scenario_text: str
    engine: str = "cython"
    snapshot_every: int = 256
    path: str = "<scenario>"
    decisions: list[list] = field(default_factory=list)

    def __post_init__(self):
        self.scenario: Scenario = parse_scenario(self.scenario_text, self.path)
        self.spec: MachineSpec = build_spec(self.scenario)
        self.names = self.spec.actor_names
        self.kinds = [a.role for a in self.spec.actors]
        self.machine = new_machine(self.spec, self.engine)
        self.interval = self.interval_for(self.spec, self.snapshot_every)
        self.position = 0
        self.tree = Tree()
        self.branch = 0
        self.decisions: Path = self.tree.path(0)
        self._checkpoint()
        todo = self.__dict__.pop("_todo", [])
        for decision in todo:
            self.apply(decision)

    def __setattr__(self, name, value):
        # The dataclass field `decisions` is the input (decisions to apply at once); after
        # construction the attribute is the path (a view of the tree).
        if name == "decisions" and not isinstance(value, Path):
            self.__dict__["_todo"] = list(value)
            return
        super().__setattr__(name, value)

    @property
    def checkpoints(self) -> dict[int, Checkpoint]:
        """The checkpoints on the current path, by position."""
        return self.tree.checkpoints_on(self.branch)

    def lens(self) -> LiveSession:
        """Another machine on the same history (shared tree), for looking at other moments
        without moving this one; it starts at position 0 of the first branch."""
        other = object.__new__(type(self))
        other.__dict__.update(
            {k: v for k, v in self.__dict__.items() if k not in ("machine", "decisions")}
        )
        other.machine = new_machine(self.spec, self.engine)
        other.branch = 0
        other.position = 0
        other.decisions = self.tree.path(0)
        return other

    @staticmethod
    def interval_for(spec: MachineSpec, snapshot_every: int = 256) -> int:
        """Decisions between snapshots: more for bigger table memory."""
        return max(snapshot_every, 8 * len(spec.mem) // SNAPSHOT_BYTES_PER_DECISION)

    # --- decisions -----------------------------------------------------------------------
    def actor_index(self, actor: int | str) -> int:
        if isinstance(actor, str):
            if actor not in self.names:
                raise EngineError(f"no actor {actor!r}; actors are {', '.join(self.names)}")
            return self.names.index(actor)
        if not 0 <= actor < len(self.names):
            raise EngineError(f"no actor {actor}")
        return actor

    def apply(self, decision: list) -> None:
        """Take one decision at the current position. Before the tip of the branch, this
        starts a new branch there (the old one is kept)."""
        kind = decision[0]
        actor = self.actor_index(decision[1])
        if kind == "step":
            m = self.machine
            if m.done(actor):
                raise EngineError(f"{self.names[actor]} has finished its operations")
            if m.blocked(actor):
                raise EngineError(f"{self.names[actor]} is blocked on kvm->mmu_lock")
            m.step(actor)
            record = ["step", actor]
        elif kind == "inject":
            text = str(decision[2])
            try:
                op = parse_op(
                    text,
                    self.kinds[actor],
                    self.scenario.machine.ipa_bits,
                    path=self.names[actor],
                    where="inject",
                )
            except ScenarioError as exc:
                raise EngineError(str(exc)) from None
            self.machine.append_op(actor, op_spec(self.spec.program, op, self.spec.scenario))
            record = ["inject", actor, op.text]
        else:
            raise EngineError(f"unknown decision {kind!r}")
        if self.position < len(self.decisions):  # not at the tip: a new branch
            self._switch(self.tree.fork(self.branch, self.position).id)
        self.tree.branches[self.branch].append(record)
        self.position += 1
        if self.position % self.interval == 0:
            self._checkpoint()

    def step(self, actor: int | str) -> None:
        self.apply(["step", actor])

    def apply_steps(self, actor: int | str, n: int) -> None:
        """n micro-steps of one actor: what n apply(["step", actor]) do, without the
        per-decision bookkeeping (a bundle's run-length-encoded runs replay through it)."""
        actor = self.actor_index(actor)
        if n and self.position < len(self.decisions):
            self.apply(["step", actor])  # rewound: apply drops or forks the redo tail
            n -= 1
        if self.take_steps(actor, n) < n:
            name = self.names[actor]
            if self.machine.done(actor):
                raise EngineError(f"{name} has finished its operations")
            raise EngineError(f"{name} is blocked on kvm->mmu_lock")

    def take_steps(self, actor: int, n: int) -> int:
        """Up to n micro-steps of actor (an index) at the tip of the branch, stopping
        early when it finishes or blocks; returns how many it took. Each is recorded
        (one run-length-encoded run) and checkpointed as apply does."""
        m = self.machine
        record = ["step", actor]
        total = 0
        while n:
            chunk = min(n, self.interval - self.position % self.interval)
            taken = m.step_n(actor, chunk)
            # Steps taken before a refusal are recorded: the session stays consistent.
            self.tree.branches[self.branch].decisions.add(record, taken)
            self.position += taken
            total += taken
            if taken and self.position % self.interval == 0:
                self._checkpoint()
            if taken < chunk:
                break
            n -= chunk
        return total

    def inject(self, actor: int | str, op_text: str) -> None:
        self.apply(["inject", actor, op_text])

    def run(self, max_steps: int, mode: str = "round_robin", seed: int = 0) -> int:
        """Up to max_steps micro-steps: round-robin in file order, or seeded random choice
        among the enabled actors. Each step is recorded, so replays need no RNG."""
        rng = random.Random(seed)
        steps = 0
        turn = 0
        while steps < max_steps:
            enabled = self.machine.enabled()
            if not enabled:
                break
            if mode == "random":
                actor = rng.choice(enabled)
            else:
                n = len(self.names)
                actor = next(i % n for i in range(turn, turn + n) if i % n in enabled)
                turn = actor + 1
            self.step(actor)
            steps += 1
        return steps

    # --- time travel -------------------------------------------------------------------------
    def _checkpoint(self) -> None:
        data = pack(self.machine.get_state())
        own = self.tree.branches[self.branch].checkpoints
        own[self.position] = Checkpoint(self.position, data)
        if len(own) > MAX_CHECKPOINTS:
            # Keep the branch's first and newest; drop every other one in between.
            positions = sorted(own)
            for pos in positions[1:-1:2]:
                del own[pos]

    def _switch(self, branch: int) -> None:
        self.branch = branch
        self.decisions = self.tree.path(branch)

    def seek(self, position: int, branch: int | None = None, replay: int = 0) -> None:
        """Go to the state after `position` decisions of `branch`'s path (default: the
        current branch), by restoring the nearest snapshot at or before it and
        re-executing the decisions after it (deterministic). `replay`: re-execute at least
        that many decisions before `position` (their events are wanted)."""
        if branch is not None and branch != self.branch:
            try:
                self.tree.branch(branch)
            except HistoryError as exc:
                raise EngineError(str(exc)) from None
            self._switch(branch)
        if not 0 <= position <= len(self.decisions):
            raise EngineError(f"position {position} is outside 0..{len(self.decisions)}")
        base = self.tree.checkpoint_before(self.branch, max(0, position - replay))
        self.machine.set_state(unpack(base.snapshot))
        self.position = base.position
        wanted = position - replay  # events before this are not wanted: not recorded
        m = self.machine
        if replay and m.recording and wanted > base.position:
            # (a checkpoint can be far back: an import keeps few along long runs)
            m.recording = False
            try:
                self._replay_runs(self.decisions.runs(base.position, wanted))
            finally:
                m.recording = True
        self._replay_runs(self.decisions.runs(self.position, position))
        self.position = position

    def advance(self, position: int) -> None:
        """Re-execute the path's decisions from here up to `position` (no restore)."""
        if not self.position <= position <= len(self.decisions):
            raise EngineError(
                f"position {position} is outside {self.position}..{len(self.decisions)}"
            )
        self._replay_runs(self.decisions.runs(self.position, position))

    def moment(self, branch: int | None = None, position: int | None = None) -> str:
        """The id of a node (default: where this session is)."""
        b = self.branch if branch is None else branch
        return self.tree.moment(b, self.position if position is None else position)

    def goto_moment(self, moment: str, replay: int = 0) -> None:
        try:
            branch, position = self.tree.resolve(moment)
        except HistoryError as exc:
            raise EngineError(str(exc)) from None
        self.seek(position, branch, replay)

    def path_to(self, moment: str) -> list[list]:
        """The decisions from the root to a moment (what a bug report replays)."""
        try:
            branch, position = self.tree.resolve(moment)
        except HistoryError as exc:
            raise EngineError(str(exc)) from None
        return [list(d) for d in self.tree.path(branch).between(0, position)]

    def _replay_runs(self, runs) -> None:
        """Re-execute recorded runs (decision, count): a run of steps in the core
        (step_n), not a Python call per step."""
        for decision, n in runs:
            if decision[0] == "step":
                taken = self.machine.step_n(decision[1], n)
                self.position += taken
                if taken < n:  # what machine.step would have refused, with its message
                    self.machine.step(decision[1])
            else:
                self._replay(decision)

    def _replay(self, decision: list) -> None:
        if decision[0] == "step":
            self.machine.step(decision[1])
        else:
            op = parse_op(decision[2], self.kinds[decision[1]], self.scenario.machine.ipa_bits)
            self.machine.append_op(decision[1], op_spec(self.spec.program, op, self.spec.scenario))
        self.position += 1

    def back(self, n: int = 1) -> None:
        self.seek(max(0, self.position - n))

    def state_hash(self) -> str:
        # (a checkpoint here has it: the state after these decisions is always the same;
        # a viewer's own snapshot carries it, 12 ms to compute at 1M leaves)
        here = self.tree.branches[self.branch].checkpoints.get(self.position)
        if here is not None:
            return here.hash
        return state_hash(pack(self.machine.get_state()))

    # --- recordings --------------------------------------------------------------------------
    def export(self) -> dict:
        """The recording of the current path: scenario text and decisions, with verified
        checkpoint hashes."""
        return {
            "format": RECORDING_FORMAT,
            "scenario": self.scenario_text,
            "decisions": [list(d) for d in self.decisions],
            "checkpoints": [
                {"position": c.position, "hash": c.hash}
                for c in sorted(self.checkpoints.values(), key=lambda c: c.position)
                if c.position <= len(self.decisions)
            ],
            "final_hash": self._final_hash(),
            **({"tree": self._tree_json()} if len(self.tree.branches) > 1 else {}),
        }

    def _tree_json(self) -> dict:
        """Every branch (docs/protocol.md, "Recordings"): its parent, where it starts, its
        own decisions, checkpoint hashes and the hash at its tip. `decisions` stays the
        path to the head, so a reader that knows no branches still replays the head."""
        here = (self.branch, self.position)
        out = []
        for br in self.tree.branches:
            self.seek(br.end, br.id)
            out.append(
                {
                    "parent": br.parent,
                    "start": br.start,
                    "decisions": [list(d) for d in br.decisions],
                    "checkpoints": [
                        {"position": p, "hash": br.checkpoints[p].hash}
                        for p in sorted(br.checkpoints)
                        if p > 0
                    ],
                    "final_hash": self.state_hash(),
                }
            )
        self.seek(here[1], here[0])
        return {"head": self.branch, "branches": out}

    def _final_hash(self) -> str:
        here = self.position
        if here != len(self.decisions):
            self.seek(len(self.decisions))
        digest = self.state_hash()
        if here != len(self.decisions):
            self.seek(here)
        return digest

    @classmethod
    def from_recording(cls, rec: dict, engine: str = "cython", snapshot_every: int = 256):
        """Replay a recording exactly; every checkpoint hash must match."""
        if not isinstance(rec, dict) or rec.get("format") != RECORDING_FORMAT:
            raise ReplayError(f"not a {RECORDING_FORMAT} recording")
        decisions = rec.get("decisions")
        if not isinstance(decisions, list):
            raise ReplayError("recording: 'decisions' must be a list")
        session = cls(str(rec.get("scenario", "")), engine=engine, snapshot_every=snapshot_every)
        expected = verified_checkpoints(rec.get("checkpoints", []), len(decisions))
        session._take(decisions, expected, "recording")
        final = rec.get("final_hash")
        if final and session.state_hash() != final:
            raise ReplayError("recording: the final state hash differs")
        if rec.get("tree") is not None:
            return cls._from_tree(rec, engine, snapshot_every, session)
        return session

    def _take(self, decisions: list, expected: dict[int, str], where: str) -> None:
        """Take a recording's decisions here, a run of one actor's steps at once
        (apply_steps: a 1 GiB write-protect is one run of 786,948), checking each
        expected state hash at its position; ReplayError naming the decision at fault."""
        start = self.position
        checks = sorted(p for p in expected if p > start)
        c = n = 0
        while n < len(decisions):
            decision = decisions[n]
            if not isinstance(decision, list) or len(decision) < 2:
                raise ReplayError(f"{where}: decision {n} is malformed: {decision!r}")
            end = n + 1
            if decision[0] == "step":
                while c < len(checks) and checks[c] <= start + n:
                    c += 1
                stop = min(len(decisions), checks[c] - start if c < len(checks) else len(decisions))
                while end < stop and _same_step(decisions[end], decision):
                    end += 1
            try:
                if end - n > 1:
                    self.apply_steps(decision[1], end - n)
                else:
                    self.apply(decision)
            except EngineError as exc:
                at = self.position - start  # (steps taken before a refusal are kept)
                raise ReplayError(
                    f"{where}: decision {at} ({decisions[at]!r}) cannot be taken: {exc}"
                ) from None
            n = end
            want = expected.get(self.position)
            if want and self.state_hash() != want:
                raise ReplayError(f"{where}: the state hash differs at position {self.position}")

    @classmethod
    def _from_tree(cls, rec: dict, engine: str, snapshot_every: int, head_path) -> LiveSession:
        """Every branch of a recording's `tree`, replayed in branch order (a branch's
        parent comes before it), hashes checked as for the head path (at most
        MAX_VERIFIED_CHECKPOINTS per branch, and the tip's hash of at most that many
        branches spread over the tree: a crafted file of many branches stays cheap)."""
        tree = rec["tree"]
        if not isinstance(tree, dict) or not isinstance(tree.get("branches"), list):
            raise ReplayError("recording: 'tree' must be an object with a list 'branches'")
        listed = tree["branches"]
        head = tree.get("head")
        if not listed or not isinstance(head, int) or not 0 <= head < len(listed):
            raise ReplayError(f"recording: tree: 'head' {head!r} is not one of its branches")
        step = max(1, len(listed) / MAX_VERIFIED_CHECKPOINTS)
        tips = {int(i * step) for i in range(MAX_VERIFIED_CHECKPOINTS)} | {head}
        session = cls(str(rec.get("scenario", "")), engine=engine, snapshot_every=snapshot_every)
        for number, br in enumerate(listed):
            where = f"recording: tree: branch {number}"
            if not isinstance(br, dict) or not isinstance(br.get("decisions"), list):
                raise ReplayError(f"{where}: must be an object with a list 'decisions'")
            parent, start = br.get("parent"), br.get("start")
            if number == 0:
                if parent is not None or start != 0:
                    raise ReplayError(f"{where}: the first branch starts at 0, with no parent")
            else:
                if not isinstance(parent, int) or not 0 <= parent < number:
                    raise ReplayError(f"{where}: 'parent' {parent!r} is not an earlier branch")
                tip = session.tree.branches[parent].end
                low = session.tree.branches[parent].start if parent else -1
                if not isinstance(start, int) or not low < start < tip or not br["decisions"]:
                    raise ReplayError(
                        f"{where}: it must start inside branch {parent} "
                        f"(after step {low + 1}, before its tip {tip}) and hold decisions"
                    )
                session.seek(start, parent)
            expected = verified_checkpoints(
                br.get("checkpoints", []), session.position + len(br["decisions"])
            )
            session._take(br["decisions"], expected, where)
            if session.branch != number:
                raise ReplayError(f"{where}: it is not where its parent and start put it")
            final = br.get("final_hash")
            if number in tips and final and session.state_hash() != final:
                raise ReplayError(f"{where}: the final state hash differs")
        session.seek(session.tree.branches[head].end, head)
        if [list(d) for d in session.decisions] != [list(d) for d in head_path.decisions]:
            raise ReplayError("recording: 'decisions' is not the path to the tree's head")
        session.machine.clear_events()
        return session

    # --- views -------------------------------------------------------------------------------
    def events(self, drain: bool = True) -> list[dict]:
        """Event records produced since the last drain, as JSON objects."""
        ops_of = self.machine.ops_of
        out = [event_json(self.spec, e, ops_of) for e in self.machine.event_tuples()]
        if drain:
            self.machine.clear_events()
        return out

    def actors_view(self) -> list[dict]:
        m = self.machine
        writer, readers = m.lock_holder()
        out = []
        for i, name in enumerate(self.names):
            v = m.actor_view(i)
            ops = m.ops_of(i)
            done = m.done(i)
            out.append(
                {
                    "name": name,
                    "kind": self.kinds[i],
                    "ops": [op.text for op in ops],
                    "op_index": v["op_i"],
                    "op": None if done else ops[v["op_i"]].text,
                    "done": done,
                    "blocked": m.blocked(i),
                    "at": None if done else self.spec.program.lines[v["pc"]],
                    "pc": v["pc"],
                    "regs": {name_: hexs(v["regs"][r]) for name_, r in REG_NAMES},
                    "monitor": hexs(v["monitor"]) if v["monitor"] else None,
                    "tlb": [
                        {"ipa": hexs(b), "size": s, "desc": hexs(d), "addr": hexs(pa)}
                        for b, s, d, pa in v["tlb"]
                    ],
                    "holds_lock": None
                    if done or self.spec.program.lock_held[v["pc"]] < 0
                    else I.LOCK_MODE_NAMES[self.spec.program.lock_held[v["pc"]]],
                }
            )
        return out

    def lock_view(self) -> dict:
        writer, readers = self.machine.lock_holder()
        base = GENERATIONS[self.scenario.kernel].base
        return {
            "kind": "rwlock" if base == PGTABLE else "spinlock",
            "writer": self.names[writer] if writer >= 0 else None,
            "readers": readers,
        }

    def table_view(self, table_pa: int, level: int) -> dict:
        """One table's entries, decoded; table entries carry their subtree counters."""
        g = self.spec.geometry
        entries = g.start_entries if level == g.start_level else B.PTRS_PER_TABLE
        if level == g.start_level and table_pa != B.TABLE_BASE:
            raise EngineError(f"the start-level table is at {hexs(B.TABLE_BASE)}")
        base_ipa = self._table_ipa(table_pa, level)
        return self.table_rows(table_pa, level, range(entries), base_ipa)

    def table_rows(self, table_pa: int, level: int, indexes, base_ipa: int) -> dict:
        """The view of some entries of a table (table_view's format; invalid entries have
        no row). The caller knows the table's level and the IPA it starts at."""
        g = self.spec.geometry
        entries = g.start_entries if level == g.start_level else B.PTRS_PER_TABLE
        shift = B.level_shift(level)
        m = self.machine
        values = m.table(table_pa, entries)
        rows = []
        for index in indexes:
            raw = values[index]
            if not raw:
                continue
            row = {
                "index": index,
                "ipa": hexs(base_ipa + (index << shift)),
                "addr": hexs(table_pa + 8 * index),
                "decoded": decode(raw, level),
            }
            if level < 3 and raw & B.DESC_VALID and raw & B.DESC_TYPE:
                row["counts"] = counts_json(m.subtree_counts(raw & B.OA_MASK, level + 1))
            rows.append(row)
        return {
            "table": hexs(table_pa),
            "level": level,
            "entries": entries,
            "ipa": hexs(base_ipa),
            "size": 1 << shift,
            "rows": rows,
        }

    def _table_ipa(self, table_pa: int, level: int) -> int:
        """The IPA a table starts at (found by walking from the start level)."""
        g = self.spec.geometry
        if level == g.start_level:
            return 0
        stack = [(B.TABLE_BASE, g.start_level, 0, g.start_entries)]
        while stack:
            pa, lvl, ipa, n = stack.pop()
            for index, raw in enumerate(self.machine.table(pa, n)):
                if lvl < level - 1 and raw & B.DESC_VALID and raw & B.DESC_TYPE:
                    stack.append(
                        (
                            raw & B.OA_MASK,
                            lvl + 1,
                            ipa + (index << B.level_shift(lvl)),
                            B.PTRS_PER_TABLE,
                        )
                    )
                elif (
                    lvl == level - 1
                    and raw & B.DESC_VALID
                    and raw & B.DESC_TYPE
                    and raw & B.OA_MASK == table_pa
                ):
                    return ipa + (index << B.level_shift(lvl))
        raise EngineError(f"no level-{level} table at {hexs(table_pa)}")

    def machine_view(self) -> dict:
        sc = self.scenario
        g = self.spec.geometry
        return {
            "name": sc.name,
            "kernel": sc.kernel,
            "commits": commits_json(sc.kernel, sc.commits),
            "reverted": reverted(sc.kernel, sc.commits),
            "hafdbs": sc.machine.hafdbs,
            "ha": self.spec.ha,
            "hd": self.spec.hd,
            "ipa_bits": sc.machine.ipa_bits,
            "tlb": sc.machine.tlb,
            **{key: getattr(sc.machine, key) for key in WHAT_IF_KEYS},
            "vtcr_el2": hexs(self.spec.vtcr),
            "vttbr_el2": hexs(g.vttbr),
            "start_level": g.start_level,
            "start_tables": g.concat,
            "start_entries": g.start_entries,
            "root": hexs(B.TABLE_BASE),
            "counts": counts_json(
                self.machine.subtree_counts(B.TABLE_BASE, g.start_level, g.start_entries)
            ),
            "dirty_log": self.dirty_log_view(),
        }

    def dirty_log_view(self) -> dict | None:
        """Each memslot's dirty_bitmap as the engine holds it, once a logging operation ran:
        bit i is gfn base_gfn + i (mark_page_dirty_in_slot); `harvested` are the bits a
        KVM_GET_DIRTY_LOG returned, `logging` the [first, end) bit ranges with
        KVM_MEM_LOG_DIRTY_PAGES set."""
        log = self.machine.dirty_log()
        if log is None:
            return None
        slots = []
        for slot in self.spec.memslots:

            def bits(pages, slot=slot):
                return [(p - slot.ipa) >> B.PAGE_SHIFT for p in pages if slot.ipa <= p < slot.end]

            logging = [
                [
                    (max(s, slot.ipa) - slot.ipa) >> B.PAGE_SHIFT,
                    (min(e, slot.end) - slot.ipa) >> B.PAGE_SHIFT,
                ]
                for s, e in log["logging"]
                if s < slot.end and e > slot.ipa
            ]
            slots.append(
                {
                    "base": hexs(slot.ipa),
                    "npages": (slot.end - slot.ipa) >> B.PAGE_SHIFT,
                    "bits": bits(log["bitmap"]),
                    "harvested": bits(log["harvested"]),
                    "logging": logging,
                }
            )
        return {"word_bits": I.DIRTY_WORD_PAGES, "slots": slots}

    def violations(self) -> list[dict]:
        return [
            {
                "check": I.CHECK_NAMES[c],
                "seq": seq,
                "actor": self.names[a],
                "op_index": op_i,
                "ipa": hexs(ipa),
                "bits": B.lost_bit_names(bits),
            }
            for c, seq, a, op_i, ipa, bits in self.machine.violations
        ]


REG_NAMES = (
    ("x0", I.R0),
    ("x1", I.R1),
    ("x2", I.R2),
    ("x3", I.R3),
    ("ptr", I.PTR),
    ("ipa", I.IPA),
    ("ret", I.RET),
    ("status", I.STATUS),
)


def counts_json(counts) -> dict:
    leaves, young, ro, dirty, invalid = counts
    return {"leaves": leaves, "young": young, "readonly": ro, "dirty": dirty, "invalid": invalid}
