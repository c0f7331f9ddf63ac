"""Every interleaving of a scenario's actors, with state de-duplication.

A depth-first search over micro-steps builds the state graph (states are identified by
the core's state_key, which covers table memory, every actor's registers, monitor and
TLB, the lock, pending break-before-make and the checks violated so far); the number of
interleavings reaching each final state is then counted over that graph, so a state
reached by many schedules is explored once. A schedule that returns to a state it has
already passed through is a spin (a vCPU retrying a fault against a held break-before-make)
that a fair scheduler leaves; it is cut and counted in `cycles`.

What the search keeps: each distinct state's 128-bit key (engine/_states.pyx: 24 bytes a
state, its index is the state's id), and each state's
successors only once it is finished (a flat array in post-order, which the counting pass
walks backwards). Marks (the core's saved states, a copy of every actor) exist only where
the search branches: a state with one enabled actor is left by stepping on, and a later
sibling restores its branching ancestor's mark. A scenario with a single unfinished actor
is one schedule: it is run, not searched, and its states (kept: none) are not bounded by
max_states.
"""

from __future__ import annotations

import gc
import sys
import time
from array import array
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from itertools import groupby

from . import isa as I
from ._states import StateTable
from .schedules import RunLength
from .twin import EngineError


class StateBoundExceeded(EngineError):
    pass


@dataclass
class Violation:
    check: str
    ipa: int
    bits: int
    actor: int
    op_index: int
    schedule: Sequence[int]


@dataclass
class FinalState:
    key: bytes  # identifies the final table contents
    count: int
    schedule: Sequence[int]  # one schedule reaching it (a RunLength for a one-actor run)
    node: int


@dataclass
class Exploration:
    states: int
    interleavings: int
    cycles: int
    finals: list[FinalState]
    violations: dict[str, Violation] = field(default_factory=dict)
    # check name -> how many interleavings end having violated it
    violation_counts: dict[str, int] = field(default_factory=dict)


# on_progress is called after every PROGRESS_STATES new distinct states.
PROGRESS_STATES = 4096


def explore(
    machine,
    final_key: Callable[[object], bytes],
    max_states: int = 2_000_000,
    progress: bool | None = None,
    on_progress: Callable[[int, int], None] | None = None,
) -> Exploration:
    """Explore every interleaving from `machine`'s current state (left as it was found).

    `on_progress(states, depth)` (distinct states so far, never above max_states; the
    current schedule's length) is called every PROGRESS_STATES new states; an exception
    it raises stops the exploration (the web explorer's cancel)."""
    if progress is None:
        progress = sys.stderr.isatty()
    recording = machine.recording
    machine.recording = False
    # The search allocates no reference cycles; the cyclic collector would only walk its
    # millions of keys over and over (half the time of a long search).
    collecting = gc.isenabled()
    gc.disable()
    try:
        return _explore(machine, final_key, max_states, progress, on_progress)
    finally:
        machine.recording = recording
        if collecting:
            gc.enable()


def _explore(machine, final_key, max_states, progress, on_progress=None) -> Exploration:
    ids = StateTable()
    flat = array("I")  # successors of finished states, in post-order
    ends = array("Q")  # ends[k]: where the successors of order[k] end in `flat`
    terminal: dict[int, bytes] = {}  # node -> final key
    terminal_mask: dict[int, int] = {}  # node -> the checks violated on the way there
    examples: dict[bytes, list[int]] = {}  # final key -> first schedule reaching it
    violations: dict[str, Violation] = {}
    cycles = 0
    on_path: set[int] = set()
    order = array("I")  # post-order
    schedule: list[int] = []
    last_report = time.monotonic()

    def node_of(key: bytes) -> tuple[int, bool]:
        n = len(ids)
        node = ids.intern(key)
        if node != n:
            return node, False
        if n >= max_states:
            raise StateBoundExceeded(
                f"exploration passed {max_states:,} states; raise --max-states or make the "
                f"scenario smaller (fewer actors, operations or leaves)"
            )
        if on_progress is not None and not node % PROGRESS_STATES:
            on_progress(node + 1, len(schedule))
        return node, True

    def finished(node: int, children: list[int]) -> None:
        order.append(node)
        flat.extend(children)
        ends.append(len(flat))

    root, _ = node_of(machine.state_key())
    unfinished = [i for i in range(len(machine.actors)) if not machine.done(i)]
    if len(unfinished) == 1 and machine.enabled():
        solo = _solo(machine, final_key, unfinished[0])
        if solo is not None:
            return solo
    root_mark = machine.save()  # the machine is left at the root, restored to this mark
    # Iterative DFS. Each frame: (node, mark or None, enabled actors, next index,
    # successors). The machine is in the frame's state when its index is 0; a later index
    # restores the frame's mark (only frames with several enabled actors have one).
    stack = [[root, root_mark, machine.enabled(), 0, []]]
    on_path.add(root)
    # Bound once: the loop below runs once per edge of the state graph.
    step, state_key, save, restore = machine.step, machine.state_key, machine.save, machine.restore
    all_done, enabled_of = machine.all_done, machine.enabled
    if machine.all_done():
        terminal[root] = final_key(machine)
        terminal_mask[root] = machine.viol_mask
        examples.setdefault(terminal[root], [])
    elif not stack[0][2]:
        raise EngineError("deadlock: every unfinished actor is blocked")
    while stack:
        frame = stack[-1]
        node, mark, enabled, index, children = frame
        if index == len(enabled):
            stack.pop()
            on_path.discard(node)
            finished(node, children)
            if mark is not None:
                if mark == root_mark:
                    machine.restore(mark)
                machine.release(mark)
            if schedule:
                schedule.pop()
            continue
        frame[3] = index + 1
        if index:
            restore(mark)
        actor = enabled[index]
        before = machine.viol_mask
        nviol = len(machine.violations)
        step(actor)
        schedule.append(actor)
        if machine.viol_mask != before:
            for check, _seq, who, op_i, ipa, bits in machine.violations[nviol:]:
                name = I.CHECK_NAMES[check]
                if name not in violations:
                    violations[name] = Violation(
                        name, ipa, bits, who, op_i, schedule + _complete(machine)
                    )
        child, new = node_of(state_key())
        if child in on_path:
            cycles += 1
            new = False
        else:
            children.append(child)
        if progress and time.monotonic() - last_report > 0.5:
            last_report = time.monotonic()
            print(
                f"\rexploring: {len(ids):,} states, depth {len(schedule)}",
                end="",
                file=sys.stderr,
                flush=True,
            )
        if not new:
            schedule.pop()
            continue
        if all_done():
            key = final_key(machine)
            terminal[child] = key
            terminal_mask[child] = machine.viol_mask
            examples.setdefault(key, list(schedule))
            finished(child, [])
            schedule.pop()
            continue
        child_enabled = enabled_of()
        if not child_enabled:
            raise EngineError(
                "deadlock: every unfinished actor is blocked, after schedule "
                + ",".join(map(str, schedule))
            )
        on_path.add(child)
        stack.append([child, save() if len(child_enabled) > 1 else None, child_enabled, 0, []])
    if progress:
        print("\r" + " " * 60 + "\r", end="", file=sys.stderr, flush=True)

    # Count the schedules reaching each node: reverse post-order is a topological order.
    # A count is dropped once passed on (only the terminals' are read afterwards).
    paths: list[int | None] = [0] * len(ids)
    paths[root] = 1
    for k in range(len(order) - 1, -1, -1):
        node = order[k]
        here = paths[node]
        for child in flat[ends[k - 1] if k else 0 : ends[k]]:
            paths[child] += here
        if node not in terminal:
            paths[node] = None
    counts: dict[bytes, int] = {}
    first_node: dict[bytes, int] = {}
    for node, key in terminal.items():
        counts[key] = counts.get(key, 0) + paths[node]
        first_node.setdefault(key, node)
    finals = [FinalState(key, counts[key], examples[key], first_node[key]) for key in examples]
    violation_counts = {
        name: sum(paths[n] for n, mask in terminal_mask.items() if mask >> check & 1)
        for check, name in enumerate(I.CHECK_NAMES)
        if name in violations
    }
    return Exploration(len(ids), sum(counts.values()), cycles, finals, violations, violation_counts)


def _complete(machine) -> list[int]:
    """A round-robin completion of the current schedule (machine left where it was)."""
    mark = machine.save()
    extra = []
    n = len(machine.actors)
    try:
        while not machine.all_done():
            progressed = False
            for i in range(n):
                if not machine.done(i) and not machine.blocked(i):
                    machine.step(i)
                    extra.append(i)
                    progressed = True
            if not progressed:
                break
    finally:
        machine.restore(mark)
        machine.release(mark)
    return extra


def _solo(machine, final_key, actor: int) -> Exploration | None:
    """One unfinished actor: a single schedule, run (not searched) and kept as nothing but
    its length. Its states are all distinct unless the actor loops forever, which is
    checked at every SOLO_CHUNK steps (Brent's cycle detection on those states); then None,
    and the search proper (which cuts the cycle) takes over."""
    mask, nviol = machine.viol_mask, len(machine.violations)
    mark = machine.save()
    try:
        runs: list[list[int]] = []
        saved, power, since = machine.state_key(), 1, 0
        while not machine.all_done():
            machine.run_round_robin(SOLO_CHUNK, runs)
            if machine.all_done():
                break
            key = machine.state_key()
            if key == saved:
                return None
            since += 1
            if since == power:
                saved, power, since = key, 2 * power, 0
        steps = sum(n for _actor, n in runs)
        schedule = RunLength([[actor, steps]])  # (not a list of millions of the same actor)
        violations: dict[str, Violation] = {}
        # As the search would see them: step by step (a step's violations share its seq).
        for _seq, group in groupby(machine.violations[nviol:], key=lambda v: v[1]):
            step = list(group)
            if any(not mask & 1 << v[0] for v in step):  # the step changed the mask
                for check, _seq, who, op_i, ipa, bits in step:
                    name = I.CHECK_NAMES[check]
                    if name not in violations:
                        violations[name] = Violation(name, ipa, bits, who, op_i, schedule)
            for v in step:
                mask |= 1 << v[0]
        key = final_key(machine)
    finally:
        machine.restore(mark)
        machine.release(mark)
    return Exploration(steps + 1, 1, 0, [FinalState(key, 1, schedule, steps)], violations)


SOLO_CHUNK = 1 << 16
