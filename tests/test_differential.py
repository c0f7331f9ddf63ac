"""The Cython core and its pure-Python twin are one machine (SCENARIOS.md: `--engine cython|
python` "both must give identical results").

For random valid scenarios (tests/strategies.py) and random schedules:
- stepping both cores with the same schedule gives, after every micro-step, the same
  enabled / finished / blocked actors, lock, sequence number, events, violations, table
  memory and actor registers, monitors and TLBs;
- `run_round_robin` is the round-robin it says it is, and agrees across the cores;
- `restore(save())` returns a core exactly to the mark (state_key included), however far
  and however often it wandered off, and continuing from there is continuing a run that
  never wandered;
- the explorer finds the same states, interleavings, cycles, final states and violated
  checks on both cores, and every schedule it reports replays to what it claims;
- a snapshot (get_state/set_state) of either core continues identically in the other, and
  operations injected into running actors (append_op) run identically.
A few pinned cases follow (engine bugs these tests found), and one property of the table
image both cores start from.

On a divergence the message shows the scenario text, the schedule (actor names) and the
first differing event of each core, decoded.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine import bits as B
from engine import isa as I
from engine.commits import GENERATIONS
from engine.core import new_machine
from engine.explore import StateBoundExceeded, explore
from engine.layout import Geometry
from engine.report import Observer, event_json
from engine.scenario import ScenarioError, parse_op, parse_scenario
from engine.snapshot import pack, unpack
from engine.spec import build_spec, op_spec, walk_image
from tests.strategies import scenario_texts, schedules

ENGINES = ("cython", "python")
STEP_BOUND = 400  # micro-steps per schedule
RR_BOUND = 5000  # micro-steps per round-robin run
MAX_STATES = 20_000

# Any scenario, or one set up to race (HA on, old leaves, a vCPU and a host on one page).
SCENARIOS = scenario_texts() | scenario_texts(racy=True)
SMALL_SCENARIOS = scenario_texts(max_actors=2, max_ops=2, max_maps=3, small=True) | scenario_texts(
    max_actors=2, max_ops=2, max_maps=3, small=True, racy=True
)
# Dirty logging and table lifetime: log_start/get_dirty_log/log_stop, unmap's table teardown,
# faults that dissolve or split blocks and allocate tables.
LOGGING_SCENARIOS = scenario_texts(logging=True) | scenario_texts(racy=True, logging=True)
SMALL_LOGGING_SCENARIOS = scenario_texts(
    max_actors=2, max_ops=2, max_maps=2, small=True, logging=True
) | scenario_texts(max_actors=2, max_ops=2, max_maps=2, small=True, racy=True, logging=True)

DIFF = settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


# --- two cores side by side -------------------------------------------------------------


def _short(value, limit: int = 600) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _first_difference(a: list, b: list) -> int | None:
    for k, (x, y) in enumerate(zip(a, b, strict=False)):
        if x != y:
            return k
    return None if len(a) == len(b) else min(len(a), len(b))


class Pair:
    """The same scenario on both cores, stepped in lockstep and compared as it goes."""

    def __init__(self, text: str):
        self.text = text
        self.spec = build_spec(parse_scenario(text, "generated.toml"))
        self.names = self.spec.actor_names
        self.fast = new_machine(self.spec, "cython")
        self.slow = new_machine(self.spec, "python")
        self.schedule: list[int] = []

    # -- reporting --
    def _name(self, entry) -> str:
        return self.names[entry] if isinstance(entry, int) else str(entry)

    def describe(self, what: str, fast=None, slow=None) -> str:
        lines = [f"the cores diverge: {what}", "", "scenario:", textwrap.indent(self.text, "  ")]
        lines.append(
            f"schedule ({len(self.schedule)} steps): "
            + (",".join(self._name(a) for a in self.schedule) or "(none)")
        )
        fe, se = self.fast.event_tuples(), self.slow.event_tuples()
        k = _first_difference(fe, se)
        if k is not None:
            lines.append(f"first differing event, #{k}:")
            for engine, events in (("cython", fe), ("python", se)):
                shown = json.dumps(event_json(self.spec, events[k])) if k < len(events) else "-"
                lines.append(f"  {engine}: {shown}")
            if k:
                lines.append(
                    f"  (the event before: {json.dumps(event_json(self.spec, fe[k - 1]))})"
                )
        if fast is not None or slow is not None:
            lines += [f"cython: {_short(fast)}", f"python: {_short(slow)}"]
        return "\n".join(lines)

    def same(self, what: str, fast, slow) -> None:
        if fast != slow:
            raise AssertionError(self.describe(what, fast, slow))

    # -- driving --
    def step(self, actor: int) -> None:
        self.schedule.append(actor)
        outcomes = []
        for m in (self.fast, self.slow):
            try:
                m.step(actor)
                outcomes.append(None)
            except Exception as exc:  # noqa: BLE001 - reported with the scenario below
                outcomes.append(f"{type(exc).__name__}: {exc}")
        if outcomes != [None, None]:
            raise AssertionError(
                self.describe(f"step({self.names[actor]}) raised", outcomes[0], outcomes[1])
            )

    def run(self, choices: list[int], bound: int = STEP_BOUND) -> None:
        """Step enabled[choice % len(enabled)] until every actor is done or `bound` steps."""
        for k in range(bound):
            self.check_scheduling()
            if self.fast.all_done():
                return
            enabled = self.fast.enabled()
            if not enabled:
                raise AssertionError(self.describe("deadlock: every unfinished actor is blocked"))
            choice = choices[k] if k < len(choices) else k
            before = len(self.fast.event_tuples())
            self.step(enabled[choice % len(enabled)])
            self.check_step(before)
        self.check_scheduling()

    # -- comparing --
    def check_scheduling(self) -> None:
        f, s = self.fast, self.slow
        n = len(self.names)
        self.same("enabled()", f.enabled(), s.enabled())
        self.same("done(i)", [f.done(i) for i in range(n)], [s.done(i) for i in range(n)])
        self.same("blocked(i)", [f.blocked(i) for i in range(n)], [s.blocked(i) for i in range(n)])
        self.same("all_done()", f.all_done(), s.all_done())

    def check_step(self, first_event: int) -> None:
        f, s = self.fast, self.slow
        self.same("events", f.event_tuples(first_event), s.event_tuples(first_event))
        self.same("seq", f.seq, s.seq)
        self.same("lock_holder()", f.lock_holder(), s.lock_holder())
        self.same("viol_mask", f.viol_mask, s.viol_mask)
        self.same("violations", f.violations, s.violations)
        self.same("table memory", f.mem_array().tolist(), s.mem_array().tolist())
        for i, name in enumerate(self.names):
            self.same(f"actor_view({name})", f.actor_view(i), s.actor_view(i))

    def check_all(self) -> None:
        self.check_scheduling()
        self.check_step(0)
        self.same("get_state()", self.fast.get_state(), self.slow.get_state())
        # The table views a session shows: the start level, and the counters of its subtree.
        g = self.spec.geometry
        for what, view in (
            ("table(start level)", lambda m: m.table(B.TABLE_BASE, g.start_entries)),
            (
                "subtree_counts(start level)",
                lambda m: tuple(m.subtree_counts(B.TABLE_BASE, g.start_level, g.start_entries)),
            ),
        ):
            self.same(what, view(self.fast), view(self.slow))


def _view(m) -> dict:
    """Everything observable about one core, for comparing it with itself."""
    n = len(m.spec.actors)
    return {
        "events": m.event_tuples(),
        "mem": m.mem_array().tolist(),
        "violations": m.violations,
        "viol_mask": m.viol_mask,
        "seq": m.seq,
        "lock": m.lock_holder(),
        "enabled": m.enabled(),
        "done": [m.done(i) for i in range(n)],
        "actors": [m.actor_view(i) for i in range(n)],
        "state": m.get_state(),
        "key": m.state_key(),
    }


def _drive(m, choices: list[int], bound: int | None = None) -> list[int]:
    """One core alone: the same driver as Pair.run, for `bound` steps (None: one step per
    choice, no more); returns the actors it stepped."""
    ran = []
    for k in range(len(choices) if bound is None else bound):
        enabled = m.enabled()
        if m.all_done() or not enabled:
            break
        choice = choices[k] if k < len(choices) else k
        ran.append(enabled[choice % len(enabled)])
        m.step(ran[-1])
    return ran


def _replay(spec, engine: str, schedule: list[int]):
    m = new_machine(spec, engine)
    for actor in schedule:
        m.step(actor)
    return m


def _diff_views(text: str, names, schedule, what: str, a: dict, b: dict) -> str | None:
    for field in a:
        if a[field] != b[field]:
            return (
                f"{what}: {field} differs\n\nscenario:\n{textwrap.indent(text, '  ')}\n"
                f"schedule: {','.join(names[x] for x in schedule)}\n"
                f"expected: {_short(b[field])}\ngot:      {_short(a[field])}"
            )
    return None


# --- lockstep ---------------------------------------------------------------------------


@settings(DIFF, max_examples=300)
@given(text=SCENARIOS, choices=schedules())
def test_both_cores_step_identically_under_any_schedule(text, choices):
    pair = Pair(text)
    pair.check_all()  # the initial states (actors settled at their first shared step)
    pair.run(choices)
    pair.check_all()


def _drained(events: list[tuple], keep: int, watch: set[int]) -> tuple:
    """What drain_events(keep, watch) promises, read off the event records."""
    table = B.TABLE_BITS
    writes = [e for e in events if e[4] in I.WRITE_KINDS and e[10] != e[11]]
    pages = [e[8] & ~(B.PAGE_SIZE - 1) for e in writes]
    return (
        events[max(0, len(events) - keep) :],
        len(events),
        [p for k, p in enumerate(pages) if k == 0 or pages[k - 1] != p],
        [e[8] for e, p in zip(writes, pages, strict=True) if p in watch],
        any(e[4] in I.DIRTY_LOG_KINDS for e in events),
        any(e[7] < 3 and (e[10] & table == table) != (e[11] & table == table) for e in writes),
    )


@settings(DIFF, max_examples=150)
@given(
    text=st.one_of(SCENARIOS, LOGGING_SCENARIOS),
    choices=schedules(),
    keep=st.integers(0, 40),
    pick=st.integers(0, 7),
)
def test_draining_the_events_summarises_them_alike_on_both_cores(text, choices, keep, pick):
    """A live session's delta takes the event buffer through drain_events: the last
    `keep` records, how many, the pages written (a run of writes to one page once), the
    writes within the watched pages (a viewer's open tables), dirty-log news and tables
    linked or unlinked; then the buffer is empty."""
    pair = Pair(text)
    pair.run(choices)
    events = pair.fast.event_tuples()
    written = sorted({e[8] & ~(B.PAGE_SIZE - 1) for e in events if e[4] in I.WRITE_KINDS})
    watch = set(written[pick % 2 :: 2]) if written else {B.TABLE_BASE}  # (some of them)
    expected = _drained(events, keep, watch)
    for m in (pair.fast, pair.slow):
        assert m.drain_events(keep, watch) == expected, pair.describe("drain_events")
        assert m.event_tuples() == []


@settings(DIFF, max_examples=200)
@given(text=LOGGING_SCENARIOS, choices=schedules())
def test_both_cores_step_identically_through_dirty_logging_and_table_lifetime(text, choices):
    """The same lockstep comparison (dirty bitmap, harvested pages, allocated and freed
    table pages are part of get_state) on scenarios built around the logging operations."""
    pair = Pair(text)
    pair.check_all()
    pair.run(choices)
    pair.check_all()


@settings(DIFF, max_examples=200)
@given(text=SCENARIOS)
def test_round_robin_runs_agree_and_are_round_robin(text):
    pair = Pair(text)
    results = []
    for m in (pair.fast, pair.slow):
        try:
            results.append(("steps", m.run_round_robin(RR_BOUND)))
        except Exception as exc:  # noqa: BLE001
            results.append((type(exc).__name__, str(exc)))
    pair.same("run_round_robin()", results[0], results[1])
    pair.check_all()
    # What run_round_robin promises: passes over the actors in file order, one micro-step
    # each, skipping finished and blocked ones (blocked as of its turn).
    ref = new_machine(pair.spec, "python")
    steps = 0
    while not ref.all_done() and steps < RR_BOUND:
        progressed = False
        for i in range(len(pair.names)):
            if steps < RR_BOUND and not ref.done(i) and not ref.blocked(i):
                ref.step(i)
                steps += 1
                progressed = True
        if not progressed:
            break
    assert ref.event_tuples() == pair.slow.event_tuples(), pair.describe(
        "run_round_robin() is not the round-robin it documents"
    )


@settings(DIFF, max_examples=150)
@given(text=SCENARIOS, chunks=st.lists(st.integers(1, 400), min_size=1, max_size=6))
def test_round_robin_in_chunks_keeps_the_same_schedule_on_both_cores(text, chunks):
    """run_round_robin(max_steps, runs) called again and again: the same steps, state and
    run-length-encoded schedule on both cores (the core takes a lone unfinished actor's
    steps in one call, the twin one at a time), the runs adding up to the steps."""
    pair = Pair(text)
    outcome = {}
    for name, m in (("cython", pair.fast), ("python", pair.slow)):
        runs, steps = [], []
        try:
            for chunk in chunks:
                steps.append(m.run_round_robin(chunk, runs))
        except Exception as exc:  # noqa: BLE001
            steps.append((type(exc).__name__, str(exc)))
        outcome[name] = (steps, runs)
    pair.same("run_round_robin(chunk, runs)", outcome["cython"], outcome["python"])
    steps, runs = outcome["python"]
    if all(isinstance(x, int) for x in steps):  # (a run that raised returns no count)
        assert sum(n for _, n in runs) == sum(steps)
    assert all(a != b for (a, _), (b, _) in zip(runs, runs[1:], strict=False))
    pair.check_all()


@settings(DIFF, max_examples=150)
@given(text=SCENARIOS, runs=st.lists(st.tuples(st.integers(0, 5), st.integers(0, 60)), max_size=12))
def test_step_n_is_stepping_one_micro_step_at_a_time(text, runs):
    """step_n(i, n) (one call into the core's loop for the whole run) against step(i) n
    times, stopping as it must when i finishes or blocks, and against the twin."""
    pair = Pair(text)
    one = new_machine(pair.spec, "cython")
    took = {"cython": [], "python": [], "one at a time": []}
    for choice, n in runs:
        i = choice % len(pair.names)
        took["cython"].append(pair.fast.step_n(i, n))
        took["python"].append(pair.slow.step_n(i, n))
        k = 0
        while k < n and not one.done(i) and not one.blocked(i):
            one.step(i)
            k += 1
        took["one at a time"].append(k)
    pair.same("step_n() steps taken", took["cython"], took["python"])
    assert took["cython"] == took["one at a time"]
    pair.check_all()
    assert _view(pair.fast) == _view(one)


# --- save / restore ---------------------------------------------------------------------


@settings(DIFF, max_examples=200)
@given(
    text=SCENARIOS,
    prefix=schedules(60),
    excursions=st.lists(schedules(60), min_size=1, max_size=3),
    inner=schedules(30),
    rest=schedules(200),
)
def test_restore_returns_to_the_mark_and_continuing_is_never_having_left(
    text, prefix, excursions, inner, rest
):
    spec = build_spec(parse_scenario(text, "generated.toml"))
    names = spec.actor_names
    finals = {}
    for engine in ENGINES:
        m = new_machine(spec, engine)
        ran = _drive(m, prefix)
        at_mark = _view(m)
        mark = m.save()
        assert m.state_key() == at_mark["key"]
        # The explorer returns to one mark many times, with nested marks on the way.
        for k, excursion in enumerate(excursions):
            away = _drive(m, excursion)
            if k == 1:
                nested = m.save()
                _drive(m, inner)
                m.restore(nested)
                m.release(nested)
            m.restore(mark)
            problem = _diff_views(
                text, names, ran + away, f"{engine}: after restore", _view(m), at_mark
            )
            assert problem is None, problem
        m.release(mark)
        ran += _drive(m, rest, 200)
        straight = _replay(spec, engine, ran)
        problem = _diff_views(
            text, names, ran, f"{engine}: restored run vs straight run", _view(m), _view(straight)
        )
        assert problem is None, problem
        finals[engine] = (ran, _view(m))
    (fast_ran, fast), (slow_ran, slow) = finals["cython"], finals["python"]
    assert fast_ran == slow_ran
    fast.pop("key"), slow.pop("key")  # each core hashes states its own way
    problem = _diff_views(text, names, fast_ran, "cython vs python after restores", fast, slow)
    assert problem is None, problem


# --- the explorer -----------------------------------------------------------------------


def _exploration(spec, engine: str, prefix: list[int]):
    m = new_machine(spec, engine)
    ran = _drive(m, prefix)
    observer = Observer(spec)
    before = _view(m)
    try:
        result = explore(m, observer, max_states=MAX_STATES, progress=False)
    except StateBoundExceeded:
        return ran, None, None
    after = _view(m)
    assert after == before, f"{engine}: explore() did not leave the machine as it found it"
    return ran, result, observer


@settings(DIFF, max_examples=200)
@given(text=SMALL_SCENARIOS | SMALL_LOGGING_SCENARIOS, prefix=schedules(8))
def test_explorer_agrees_across_cores_and_its_schedules_replay(text, prefix):
    spec = build_spec(parse_scenario(text, "generated.toml"))
    names = spec.actor_names
    runs = {engine: _exploration(spec, engine, prefix) for engine in ENGINES}
    (ran, fast, fobs), (_, slow, sobs) = runs["cython"], runs["python"]
    where = f"\n\nscenario:\n{textwrap.indent(text, '  ')}\nprefix: {[names[a] for a in ran]}"
    assert (fast is None) == (slow is None), "only one core exceeded the state bound" + where
    if fast is None:
        return
    assert (fast.states, fast.interleavings, fast.cycles) == (
        slow.states,
        slow.interleavings,
        slow.cycles,
    ), f"(states, interleavings, cycles) differ: cython {fast}, python {slow}" + where
    # Final states are keyed by the leaves' contents: the same keys and counts on both.
    assert {f.key: f.count for f in fast.finals} == {f.key: f.count for f in slow.finals}, where
    for f in fast.finals:
        assert fobs.info[f.key] == sobs.info[f.key], where
    assert sorted(fast.violations) == sorted(slow.violations), where
    assert fast.interleavings >= len(fast.finals) >= 1

    for engine, result, observer in (("cython", fast, fobs), ("python", slow, sobs)):
        # Every example schedule ends in the final state it stands for.
        for f in result.finals:
            m = _replay(spec, engine, ran + f.schedule)
            assert m.all_done(), f"{engine}: example schedule does not finish" + where
            assert observer(m) == f.key, f"{engine}: example schedule ends elsewhere" + where
        # Every counterexample reproduces its violation, step by step on a fresh machine.
        for name, v in result.violations.items():
            m = _replay(spec, engine, ran + v.schedule)
            seen = {
                (I.CHECK_NAMES[c], actor, op_i, ipa, bits)
                for c, _seq, actor, op_i, ipa, bits in m.violations
            }
            assert (name, v.actor, v.op_index, v.ipa, v.bits) in seen, (
                f"{engine}: the {name} counterexample "
                f"{','.join(names[a] for a in ran + v.schedule)} does not reproduce it" + where
            )


# --- snapshots and injected operations (live sessions) ------------------------------------


@settings(DIFF, max_examples=150)
@given(text=SCENARIOS, prefix=schedules(80), rest=schedules(200))
def test_a_snapshot_of_either_core_continues_identically_in_the_other(text, prefix, rest):
    pair = Pair(text)
    pair.run(prefix, bound=len(prefix))
    pair.check_all()
    crossed = Pair(text)
    crossed.schedule = list(pair.schedule)
    # Through the bytes format, as sessions store them: cython's state into the twin and back.
    crossed.slow.set_state(unpack(pack(pair.fast.get_state())))
    crossed.fast.set_state(unpack(pack(pair.slow.get_state())))
    crossed.check_scheduling()
    crossed.same("get_state() after set_state", crossed.fast.get_state(), crossed.slow.get_state())
    seen = len(pair.fast.event_tuples())
    pair.run(rest, bound=200)
    crossed.run(rest, bound=200)
    crossed.check_all()
    crossed.same(
        "events after a snapshot", crossed.fast.event_tuples(), pair.fast.event_tuples(seen)
    )
    crossed.same("state after a snapshot", crossed.fast.get_state(), pair.fast.get_state())


@settings(DIFF, max_examples=150)
@given(
    text=SCENARIOS,
    injections=st.lists(
        st.tuples(schedules(20), st.integers(0, 99), st.integers(0, 99)), min_size=1, max_size=3
    ),
    rest=schedules(200),
)
def test_injected_operations_run_identically_on_both_cores(text, injections, rest):
    """append_op(i, op): an operation queued on a running actor, or restarting a finished one."""
    pair = Pair(text)
    actors = pair.spec.actors
    for steps, who, which in injections:
        pair.run(steps, bound=len(steps))
        i = who % len(actors)
        pool = [op for a in actors if a.kind == actors[i].kind for op in a.ops]
        op = pool[which % len(pool)]
        for m in (pair.fast, pair.slow):
            m.append_op(i, op)
        pair.schedule.append(f"<append_op {pair.names[i]}: {op.text}>")
        pair.check_all()
        pair.same(
            "ops_of()",
            [pair.fast.ops_of(k) for k in range(len(actors))],
            [pair.slow.ops_of(k) for k in range(len(actors))],
        )
    pair.run(rest)
    pair.check_all()


# --- a TLB preload longer than the TLB ----------------------------------------------------

_OVERSIZED_PRELOAD = """
import json, sys
from engine.core import new_machine
from engine.scenario import ScenarioError, parse_scenario
from engine.spec import build_spec
n = 70
text = f'''name = "tlb preload longer than the TLB"
kernel = "seed"
[[map]]
ipa = 0x8000_0000
pa = 0x4000_0000
count = {n}
[[actor]]
name = "vcpu0"
kind = "vcpu"
do = ["read 0x8000_0000"]
tlb = [{", ".join(hex(0x8000_0000 + 4096 * i) for i in range(n))}]
[[actor]]
name = "vcpu1"
kind = "vcpu"
do = ["write 0x8000_1000"]
'''
try:
    spec = build_spec(parse_scenario(text))
except ScenarioError as exc:  # refusing the file is a fine answer too
    print(json.dumps({"refused": str(exc)}))
    sys.exit(0)
out = {}
for engine in ("cython", "python"):
    m = new_machine(spec, engine)
    out[engine] = [m.actor_view(1), m.run_round_robin(1000), m.event_tuples()]
print(json.dumps(out))
"""


@pytest.mark.parametrize("kernel", sorted(GENERATIONS))
def test_bulk_write_protect_and_age_is_the_same_on_both_cores(kernel):
    """The bulk paths the core runs as superinstructions (engine/_core.pyx: FUSED) and
    as one loop over a lone actor's steps: wp then age over 600 4K leaves (past a
    level-3 table's 512), round-robin on both cores, then stepped by hand on the core."""
    text = textwrap.dedent(f"""\
        name = "bulk"
        kernel = "{kernel}"
        [[map]]
        ipa = 0x40000000
        pa = 0x80000000
        count = 600
        [[actor]]
        name = "host0"
        kind = "host"
        do = ["wp 0x40000000 {600 * 4096}", "age 0x40000000 {600 * 4096}"]
        """)
    pair = Pair(text)
    runs = {}
    for name, m in (("cython", pair.fast), ("python", pair.slow)):
        runs[name] = []
        m.run_round_robin(-1, runs[name])
    pair.same("run_round_robin(runs)", runs["cython"], runs["python"])
    pair.check_all()
    by_hand = new_machine(pair.spec, "cython")
    while not by_hand.all_done():
        by_hand.step(0)
    assert _view(by_hand) == _view(pair.fast)
    assert runs["cython"] == [[0, pair.fast.seq]]


def test_a_tlb_preload_longer_than_the_tlb_is_the_same_on_both_cores():
    """The parser accepts any number of `tlb` preloads; the cores must agree on them (the
    Cython core keeps at most isa.TLB_ENTRIES per vCPU in a fixed array). Run in a child
    process: an overrun there corrupts the heap."""
    child = subprocess.run(
        [sys.executable, "-c", _OVERSIZED_PRELOAD],
        cwd=Path(__file__).resolve().parents[1],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert child.returncode == 0, child.stderr[-2000:]
    out = json.loads(child.stdout)
    if "refused" not in out:
        assert out["cython"] == out["python"]


# --- restore() across an injected operation -------------------------------------------------

_APPEND_THEN_RESTORE = """\
name = "append_op, then restore to a mark taken before it"
kernel = "seed"

[[map]]
ipa = 0x8000_0000
pa = 0x4000_0000
s2ap = "ro"
count = 2

[[actor]]
name = "vcpu0"
kind = "vcpu"
do = ["read 0x8000_0000"]

[[actor]]
name = "vcpu1"
kind = "vcpu"
do = ["read 0x8000_1000", "write 0x8000_1000"]
"""


def test_restore_takes_back_an_operation_injected_after_the_mark():
    """restore(mark) returns to the state at the mark; the twin's includes each actor's
    operation list, so an operation appended since is gone again. The same must hold on the
    Cython core, and the actors after the one that grew must still run their own ops."""
    pair = Pair(_APPEND_THEN_RESTORE)
    injected = op_spec(pair.spec.program, parse_op("write 0x8000_0000", "vcpu", 40))
    marks = []
    for m in (pair.fast, pair.slow):
        marks.append(m.save())
        m.append_op(0, injected)
    for m, mark in zip((pair.fast, pair.slow), marks, strict=True):
        m.restore(mark)
    pair.same(
        "ops_of() after restore",
        [[op.text for op in pair.fast.ops_of(i)] for i in range(2)],
        [[op.text for op in pair.slow.ops_of(i)] for i in range(2)],
    )
    pair.run([])
    pair.check_all()


# --- the table image: every leaf where its [[map]] puts it -------------------------------


@settings(DIFF, max_examples=200)
@given(text=SCENARIOS)
def test_every_mapped_leaf_is_where_a_walk_finds_it(text):
    """Not differential: both cores start from this image, so a wrong image fools both."""
    spec = build_spec(parse_scenario(text, "generated.toml"))
    for m in spec.scenario.maps:
        for ipa, pa in m.leaves():
            desc, level, _ = walk_image(spec.mem, spec.geometry, ipa)
            found = (level, desc & B.DESC_VALID, desc & B.OA_MASK & ~(m.size - 1))
            assert found == (m.level, 1, pa), f"leaf {ipa:#x}: (level, valid, pa) {found}\n{text}"


@pytest.mark.parametrize("ipa_bits", [32, 33, 34, 35, 36])
def test_a_1g_block_is_mapped_at_its_ipa_or_refused(ipa_bits):
    """With fewer than 35 IPA bits the walk starts at level 2 (engine/layout.py), so there is
    no level-1 entry for a 1G block: the scenario must be refused, not mapped elsewhere."""
    text = f"""\
name = "a 1G block with {ipa_bits} IPA bits"
kernel = "v6.6"

[machine]
ipa_bits = {ipa_bits}

[[map]]
ipa = 0x4000_0000
pa = 0x4000_0000
size = "1G"

[[actor]]
name = "vcpu0"
kind = "vcpu"
do = ["read 0x20_0000"]
"""
    try:
        spec = build_spec(parse_scenario(text, "1g.toml"))
    except ScenarioError:
        assert Geometry.for_ipa_bits(ipa_bits).start_level > 1
        return
    desc, level, _ = walk_image(spec.mem, spec.geometry, 0x4000_0000)
    assert (level, desc & 1) == (1, 1), f"the 1G leaf is not at level 1 (found level {level})"
    # IPA 0x20_0000 is in no [[map]]: its access must exit to userspace (translation fault,
    # no memslot), not translate through a stray descriptor.
    for engine in ENGINES:
        m = new_machine(spec, engine)
        m.run_round_robin()
        kinds = [I.EVENT_KIND_NAMES[e[4]] for e in m.event_tuples()]
        assert kinds[0] == "fault", f"{engine}: read 0x20_0000 translated: {kinds}"
