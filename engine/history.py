"""A session's history: an append-only tree of decisions, and moments in it.

Decisions are never removed. Taking a decision at a node that already has a successor
starts a new *branch*: it shares the first `start` decisions of its parent's path and owns
the ones after. A branch's own decisions are one sequence, so the common case, one branch
growing at its tip, costs what a flat recording did. It is run-length encoded (`Runs`; in
the database, a row per long run): the 786,956 micro-steps of a 1 GiB write-protect are a
dozen runs, so storing, loading and replaying them costs per run, not per step.

A *moment* is one node: (branch, position), the state after the first `position`
decisions of the branch's path. A node on a branch's shared prefix is canonically named
by the branch that owns that decision. Its id is short and permanent: "812" on the first
branch, "b3-57" on branch 3. Its state is a pure function of the scenario and the path
(DESIGN.md, "One currency"); the checkpoints' state hashes verify a replay.
"""

from __future__ import annotations

import re
from bisect import bisect_right
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field

from .snapshot import state_hash

MOMENT_RE = re.compile(r"^(?:b(\d{1,9})-)?(\d{1,12})$")


class HistoryError(ValueError):
    pass


class Runs(Sequence):
    """A list of decisions stored as runs: consecutive ["step", A] decisions of one actor
    are one run (decision, count); an injected operation is a run of one. Indexing and
    iterating give the decisions one by one (as a list would); `runs` gives the runs."""

    __slots__ = ("items", "counts", "ends")

    def __init__(self, decisions: Iterable[list] = ()):
        self.items: list[list] = []  # a run's decision (shared by its steps)
        self.counts: list[int] = []
        self.ends: list[int] = []  # cumulative: run i holds indexes ends[i-1]..ends[i]-1
        for d in decisions:
            self.add(d, 1)

    @classmethod
    def of(cls, runs: Iterable[tuple[list, int]]) -> Runs:
        out = cls()
        for d, n in runs:
            out.add(d, n)
        return out

    def add(self, decision: list, n: int = 1) -> None:
        """Append n copies of a decision (n > 1: steps of one actor)."""
        if n <= 0:
            return
        items = self.items
        if decision[0] == "step":
            if items:
                last = items[-1]
                if last[1] == decision[1] and last[0] == "step":  # the run goes on
                    self.counts[-1] += n
                    self.ends[-1] += n
                    return
            decision = ["step", decision[1]]
        elif n != 1:
            raise ValueError("only steps repeat: an injected operation is one decision")
        else:
            decision = list(decision)
        items.append(decision)
        self.counts.append(n)
        self.ends.append((self.ends[-1] if self.ends else 0) + n)

    def append(self, decision: list) -> None:
        self.add(decision, 1)

    def extend(self, decisions: Iterable[list]) -> None:
        if isinstance(decisions, Runs):
            for d, n in decisions.runs():
                self.add(d, n)
            return
        for d in decisions:
            self.add(d, 1)

    def __len__(self) -> int:
        return self.ends[-1] if self.ends else 0

    def __getitem__(self, key):
        if isinstance(key, slice):
            start, stop, step = key.indices(len(self))
            if step != 1:
                return list(self)[key]
            return Runs.of(self.runs(start, stop))
        n = len(self)
        if key < 0:
            key += n
        if not 0 <= key < n:
            raise IndexError(key)
        return self.items[bisect_right(self.ends, key)]

    def runs(self, start: int = 0, stop: int | None = None) -> Iterator[tuple[list, int]]:
        """(decision, count) covering indexes start..stop-1, the first and last clipped."""
        stop = len(self) if stop is None else min(stop, len(self))
        if start >= stop:
            return
        i = bisect_right(self.ends, start)
        pos = start
        while pos < stop:
            end = min(self.ends[i], stop)
            yield self.items[i], end - pos
            pos = end
            i += 1

    def __iter__(self) -> Iterator[list]:
        for d, n in zip(self.items, self.counts, strict=True):
            if n == 1:
                yield d
            else:
                for _ in range(n):
                    yield d

    def __eq__(self, other) -> bool:
        if isinstance(other, Runs):
            return (self.items, self.counts) == (other.items, other.counts)
        return list(self) == list(other)

    def __repr__(self) -> str:
        return f"Runs({len(self)} decisions in {len(self.items)} runs)"


@dataclass
class Checkpoint:
    """A packed machine state on a branch. Its hash (engine.snapshot.state_hash) is
    computed when first asked for: hashing a million-leaf state takes about 10 ms, and
    most checkpoints of a live session are never compared or stored."""

    position: int
    snapshot: bytes
    known_hash: str | None = None

    @property
    def hash(self) -> str:
        if self.known_hash is None:
            self.known_hash = state_hash(self.snapshot)
        return self.known_hash


@dataclass
class Branch:
    id: int
    parent: int | None  # None: the first branch, from position 0
    start: int  # decisions shared with the parent's path; own ones are start..end-1
    decisions: Runs = field(default_factory=Runs)
    # Own checkpoints: positions start+1..end (the first branch also holds 0).
    checkpoints: dict[int, Checkpoint] = field(default_factory=dict)
    injects: list[int] = field(default_factory=list)  # indexes of own injected operations

    @property
    def end(self) -> int:
        return self.start + len(self.decisions)

    def append(self, decision: list) -> None:
        if decision[0] == "inject":
            self.injects.append(self.end)
        self.decisions.append(decision)

    def add_runs(self, runs: Iterable[tuple[list, int]] | Runs) -> None:
        """Append runs (decision, count) as append would each of their decisions (a
        Runs given to a branch with no decisions yet becomes its own)."""
        if isinstance(runs, Runs) and not self.decisions:
            self.decisions = runs
            self.injects = [
                self.start + end - 1
                for d, end in zip(runs.items, runs.ends, strict=True)
                if d[0] == "inject"
            ]
            return
        for d, n in runs.runs() if isinstance(runs, Runs) else runs:
            if d[0] == "inject":
                self.injects.append(self.end)
            self.decisions.add(d, n)


def moment_id(branch: int, position: int) -> str:
    return str(position) if branch == 0 else f"b{branch}-{position}"


def parse_moment(text: str) -> tuple[int, int]:
    """(branch, position) from a moment id; HistoryError naming what is wrong."""
    m = MOMENT_RE.match(str(text).strip())
    if not m:
        raise HistoryError(
            f"{text!r} is not a moment (a step number such as 812, or b3-57 on branch 3)"
        )
    return int(m.group(1) or 0), int(m.group(2))


class Tree:
    def __init__(self, branches: list[Branch] | None = None):
        self.branches: list[Branch] = branches or [Branch(0, None, 0)]

    def branch(self, b: int) -> Branch:
        if not 0 <= b < len(self.branches):
            raise HistoryError(f"this session has no branch {b}")
        return self.branches[b]

    def segments(self, b: int) -> list[tuple[Branch, int, int]]:
        """The path to branch b's tip as (branch, first index, end index), root first."""
        out = []
        end = None
        while b is not None:
            br = self.branch(b)
            hi = br.end if end is None else min(end, br.end)
            out.append((br, br.start, hi))
            end = br.start
            b = br.parent
        out.reverse()
        return out

    def owner(self, b: int, position: int) -> int:
        """The branch that names node (b, position) canonically."""
        br = self.branch(b)
        if not 0 <= position <= br.end:
            raise HistoryError(f"position {position} is outside 0..{br.end} on branch {b}")
        while br.parent is not None and position <= br.start:
            br = self.branches[br.parent]
        return br.id

    def moment(self, b: int, position: int) -> str:
        return moment_id(self.owner(b, position), position)

    def resolve(self, text: str) -> tuple[int, int]:
        """(branch, position) of a moment id naming a node of this tree."""
        b, position = parse_moment(text)
        if b >= len(self.branches):
            raise HistoryError(f"this session has no branch {b} (moment {text})")
        br = self.branches[b]
        if position > br.end or (br.parent is not None and position <= br.start):
            raise HistoryError(
                f"moment {text} is not in this session: branch {b} holds steps "
                f"{br.start + 1 if br.parent is not None else 0}..{br.end}"
            )
        return b, position

    def fork(self, b: int, position: int) -> Branch:
        """A new branch taking its decisions after node (b, position)."""
        new = Branch(len(self.branches), self.owner(b, position), position)
        self.branches.append(new)
        return new

    def path(self, b: int) -> Path:
        return Path(self, b)

    def checkpoint_before(self, b: int, position: int) -> Checkpoint:
        """The newest checkpoint at or before `position` on branch b's path."""
        best = None
        for br, lo, hi in self.segments(b):
            if lo > position:
                break
            for p, c in br.checkpoints.items():
                if lo <= p <= min(hi, position) and (best is None or p > best.position):
                    best = c
        assert best is not None  # position 0 of the first branch is always there
        return best

    def checkpoints_on(self, b: int) -> dict[int, Checkpoint]:
        out: dict[int, Checkpoint] = {}
        for br, lo, hi in self.segments(b):
            out.update((p, c) for p, c in br.checkpoints.items() if lo <= p <= hi)
        return out

    def children(self, b: int) -> list[Branch]:
        return [br for br in self.branches if br.parent == b]

    def summary(self) -> list[dict]:
        return [
            {"branch": br.id, "parent": br.parent, "start": br.start, "end": br.end}
            for br in self.branches
        ]


class Path(Sequence):
    """The decisions on the path to a branch's tip (a live view: it grows with the tip)."""

    def __init__(self, tree: Tree, b: int):
        self.tree = tree
        self.branch = b

    def _segments(self):
        return self.tree.segments(self.branch)

    def __len__(self) -> int:
        return self.tree.branch(self.branch).end

    def __getitem__(self, key):
        if isinstance(key, slice):
            start, stop, step = key.indices(len(self))
            if step != 1:
                return list(self)[key]
            return list(self.between(start, stop))
        n = len(self)
        if key < 0:
            key += n
        if not 0 <= key < n:
            raise IndexError(key)
        for br, lo, hi in self._segments():
            if lo <= key < hi:
                return br.decisions[key - br.start]
        raise IndexError(key)

    def __iter__(self) -> Iterator[list]:
        return self.between(0, len(self))

    def between(self, start: int, stop: int) -> Iterator[list]:
        for d, n in self.runs(start, stop):
            for _ in range(n):
                yield d

    def runs(self, start: int = 0, stop: int | None = None) -> Iterator[tuple[list, int]]:
        """The decisions start..stop-1 as runs (decision, count) (a run can be split where
        a branch starts)."""
        stop = len(self) if stop is None else stop
        for br, lo, hi in self._segments():
            a, b = max(lo, start), min(hi, stop)
            if a < b:
                yield from br.decisions.runs(a - br.start, b - br.start)

    def __eq__(self, other) -> bool:
        return list(self) == list(other)

    def injects_before(self, stop: int) -> list[int]:
        out = []
        for br, lo, hi in self._segments():
            out.extend(i for i in br.injects if lo <= i < min(hi, stop))
        return out

    def position_of_seq(self, seq: int) -> int:
        """The position right after the step whose event has this seq (every step makes
        exactly one event; an injected operation none)."""
        index = seq
        for i in self.injects_before(len(self)):
            if i <= index:
                index += 1
            else:
                break
        return index + 1
