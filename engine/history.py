"""A session's history: an append-only tree of decisions, and moments in it.

Decisions are never removed. Taking a decision at a node that already has a successor
starts a new *branch*: it shares the first `start` decisions of its parent's path and owns
the ones after. A branch's own decisions are one Python list (and, in the database, packed
runs of steps, as before), so the common case, one branch growing at its tip, costs
exactly what a flat recording did.

A *moment* is one node: (branch, position), the state after the first `position`
decisions of the branch's path. A node on a branch's shared prefix is canonically named
by the branch that owns that decision. Its id is short and permanent: "812" on the first
branch, "b3-57" on branch 3. Its state is a pure function of the scenario and the path
(DESIGN.md, "One currency"); the checkpoints' state hashes verify a replay.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

MOMENT_RE = re.compile(r"^(?:b(\d{1,9})-)?(\d{1,12})$")


class HistoryError(ValueError):
    pass


@dataclass
class Checkpoint:
    position: int
    snapshot: bytes
    hash: str


@dataclass
class Branch:
    id: int
    parent: int | None  # None: the first branch, from position 0
    start: int  # decisions shared with the parent's path; own ones are start..end-1
    decisions: list[list] = field(default_factory=list)
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
        for br, lo, hi in self._segments():
            a, b = max(lo, start), min(hi, stop)
            if a < b:
                yield from br.decisions[a - br.start : b - br.start]

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
