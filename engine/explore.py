"""Every interleaving of a scenario's actors, with state de-duplication.

A depth-first search over micro-steps builds the state graph (states are identified by
the core's state_key, which covers table memory, every actor's registers, monitor and
TLB, the lock, pending break-before-make and the checks violated so far); the number of
interleavings reaching each final state is then counted over that graph, so a state
reached by many schedules is explored once. A schedule that returns to a state it has
already passed through is a spin (a vCPU retrying a fault against a held break-before-make)
that a fair scheduler leaves; it is cut and counted in `cycles`.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from . import isa as I
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
    schedule: list[int]


@dataclass
class FinalState:
    key: bytes  # identifies the final table contents
    count: int
    schedule: list[int]  # one schedule reaching it
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
    try:
        return _explore(machine, final_key, max_states, progress, on_progress)
    finally:
        machine.recording = recording


def _explore(machine, final_key, max_states, progress, on_progress=None) -> Exploration:
    ids: dict[bytes, int] = {}
    succ: list[list[int]] = []
    terminal: dict[int, bytes] = {}  # node -> final key
    terminal_mask: dict[int, int] = {}  # node -> the checks violated on the way there
    examples: dict[bytes, list[int]] = {}  # final key -> first schedule reaching it
    violations: dict[str, Violation] = {}
    cycles = 0
    on_path: set[int] = set()
    order: list[int] = []  # post-order
    schedule: list[int] = []
    last_report = time.monotonic()

    def node_of(key: bytes) -> tuple[int, bool]:
        node = ids.get(key)
        if node is not None:
            return node, False
        if len(ids) >= max_states:
            raise StateBoundExceeded(
                f"exploration passed {max_states:,} states; raise --max-states or make the "
                f"scenario smaller (fewer actors, operations or leaves)"
            )
        node = len(succ)
        ids[key] = node
        succ.append([])
        if on_progress is not None and not node % PROGRESS_STATES:
            on_progress(node + 1, len(schedule))
        return node, True

    root, _ = node_of(machine.state_key())
    root_mark = machine.save()
    # Iterative DFS. Each frame: (node, mark, enabled actors, next index).
    stack = [(root, root_mark, machine.enabled(), 0)]
    on_path.add(root)
    if machine.all_done():
        terminal[root] = final_key(machine)
        terminal_mask[root] = machine.viol_mask
        examples.setdefault(terminal[root], [])
    elif not stack[0][2]:
        raise EngineError("deadlock: every unfinished actor is blocked")
    while stack:
        node, mark, enabled, index = stack[-1]
        if index == len(enabled):
            stack.pop()
            on_path.discard(node)
            order.append(node)
            machine.release(mark)
            if schedule:
                schedule.pop()
            if stack:
                machine.restore(stack[-1][1])
            continue
        stack[-1] = (node, mark, enabled, index + 1)
        actor = enabled[index]
        before = machine.viol_mask
        nviol = len(machine.violations)
        machine.step(actor)
        schedule.append(actor)
        if machine.viol_mask != before:
            for check, _seq, who, op_i, ipa, bits in machine.violations[nviol:]:
                name = I.CHECK_NAMES[check]
                if name not in violations:
                    violations[name] = Violation(
                        name, ipa, bits, who, op_i, schedule + _complete(machine)
                    )
        child, new = node_of(machine.state_key())
        succ[node].append(child)
        if child in on_path:
            cycles += 1
            succ[node].pop()
            new = False
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
            machine.restore(mark)
            continue
        if machine.all_done():
            key = final_key(machine)
            terminal[child] = key
            terminal_mask[child] = machine.viol_mask
            examples.setdefault(key, list(schedule))
            order.append(child)
            schedule.pop()
            machine.restore(mark)
            continue
        child_enabled = machine.enabled()
        if not child_enabled:
            raise EngineError(
                "deadlock: every unfinished actor is blocked, after schedule "
                + ",".join(map(str, schedule))
            )
        on_path.add(child)
        stack.append((child, machine.save(), child_enabled, 0))
    if progress:
        print("\r" + " " * 60 + "\r", end="", file=sys.stderr, flush=True)

    # Count the schedules reaching each node: reverse post-order is a topological order.
    paths = [0] * len(succ)
    paths[root] = 1
    for node in reversed(order):
        for child in succ[node]:
            paths[child] += paths[node]
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
    return Exploration(
        len(succ), sum(counts.values()), cycles, finals, violations, violation_counts
    )


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
