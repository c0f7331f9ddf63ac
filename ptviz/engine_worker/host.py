"""SessionHost: one live debug session inside an engine worker (sync; no I/O of its own).

It owns the LiveSession, turns protocol commands into engine calls, stores every new
decision (and checkpoint) in the database before it acknowledges the command or shows
the decision to anyone, and produces the outbound protocol messages (docs/protocol.md):
delta batches numbered consecutively per session, snapshots, acks, errors, exploration
progress and results. Both transports (the distributed worker on the Redis channel layer
and the embedded worker processes) run this same class through EngineLoop.

`run` is executed in slices (at most SLICE_SECONDS of engine time or SLICE_STEPS
micro-steps, fewer when `speed` paces it); the loop serves queued commands between
slices, so `pause` is handled within a slice of arriving (DESIGN.md, "Pitfalls": a long
engine loop inside a handler blocks control messages). A fast run is coalesced into at
most one delta per FLUSH_INTERVAL, listing its most recent MAX_DELTA_EVENTS events; when
a delta takes long to make (a loaded machine: 100 ms at 1M leaves), the next waits longer,
so that making deltas takes at most about a third of a run's time, up to
FLUSH_MAX_INTERVAL (flush_every).
"""

from __future__ import annotations

import json
import logging
import random
import time
from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

from engine import bits as B
from engine import isa as I
from engine.history import Checkpoint, HistoryError
from engine.report import event_json, hexs
from engine.session import LiveSession
from engine.twin import EngineError
from ptviz import protocol as P
from ptviz.engine_worker import store
from ptviz.engine_worker.explorer import ExploreJob
from ptviz.engine_worker.quotas import Quotas

log = logging.getLogger("ptviz.engine")

WRITE_NAMES = frozenset(I.EVENT_KIND_NAMES[k] for k in I.WRITE_KINDS)
HISTORY_MAX = 1000  # writes listed by `history` (the most recent ones)
HISTORY_CHUNK = 50_000  # decisions replayed between two drains of the event buffer

# Emit(target kind, target name, layer message): kind "group" or "channel".
Emit = Callable[[str, str, dict], None]


class CommandError(Exception):
    def __init__(self, code: str, text: str):
        super().__init__(text)
        self.code = code
        self.text = text


class HostLost(Exception):
    """The session can no longer be served here (lease lost, session deleted)."""


@dataclass
class RunState:
    mode: str
    speed: float
    max_steps: int | None
    rng: random.Random
    started: float
    seed: int = 0
    steps: int = 0
    turn: int = 0
    until: str | None = None  # "violation": stop right after a check is first violated
    violations: int = 0

    def as_json(self) -> dict:
        """What a worker taking the session over needs to go on exactly (stored with
        every append; the random generator's state only in random mode)."""
        out = {
            "mode": self.mode,
            "speed": self.speed,
            "max_steps": self.max_steps,
            "seed": self.seed,
            "steps": self.steps,
            "turn": self.turn,
        }
        if self.mode == "random":
            version, state, gauss = self.rng.getstate()
            out["rng"] = [version, list(state), gauss]
        return out

    @classmethod
    def from_json(cls, data: dict, now: float) -> RunState:
        rng = random.Random(data["seed"])
        if data.get("rng"):
            version, state, gauss = data["rng"]
            rng.setstate((version, tuple(state), gauss))
        speed = float(data["speed"])
        steps = int(data["steps"])
        return cls(
            mode=data["mode"],
            speed=speed,
            max_steps=data["max_steps"],
            rng=rng,
            # paced as if it had never stopped from here on
            started=now - (steps / speed if speed > 0 else 0.0),
            steps=steps,
            turn=int(data["turn"]),
            seed=data["seed"],
        )

    def params(self) -> dict:
        """The running parameters, as every viewer's toolbar shows them."""
        return {
            "mode": self.mode,
            "seed": self.seed,
            "speed": self.speed,
            "max_steps": self.max_steps,
        }


@dataclass
class Viewer:
    """One websocket's view of the session: its cursor (None: following the head live),
    the tables it has open, and what the others see of it (presence)."""

    id: str  # short, shown to the others ("v3")
    role: str = "view"
    name: str = ""
    label: str = ""  # the share link's name, if the owner gave it one
    tables: set[int] = field(default_factory=set)
    cursor: tuple[int, int] | None = None  # (branch, position)
    follows: str | None = None  # the viewer (channel) whose cursor and focus it follows
    focus: str | None = None  # the descriptor it has selected (hex address)
    opened: bool = False  # its link named a descriptor: its own snapshot has the tables to it
    notice: str | None = None  # for its next snapshot: its link names no moment here
    want_hash: str | None = None  # the state hash prefix its link names


@dataclass
class TableInfo:
    level: int
    entries: int
    parent: int | None
    ipa: int = 0  # the IPA its first entry maps
    slot: int = 0  # its entry in the parent table


@dataclass
class TableIndex:
    """Where every table of the live machine is: level, size, parent (for counters)."""

    live: LiveSession
    tables: dict[int, TableInfo] = field(default_factory=dict)
    pages: dict[int, int] = field(default_factory=dict)  # 4K page -> table pa
    valid: bool = False

    def build(self) -> None:
        g = self.live.spec.geometry
        m = self.live.machine
        self.tables = {B.TABLE_BASE: TableInfo(g.start_level, g.start_entries, None)}
        stack = [B.TABLE_BASE]
        while stack:
            pa = stack.pop()
            info = self.tables[pa]
            if info.level >= 3:
                continue
            shift = B.level_shift(info.level)
            for slot, raw in enumerate(m.table(pa, info.entries)):
                if raw & B.TABLE_BITS == B.TABLE_BITS:
                    child = raw & B.OA_MASK
                    if child not in self.tables:
                        self.tables[child] = TableInfo(
                            info.level + 1,
                            B.PTRS_PER_TABLE,
                            pa,
                            info.ipa + (slot << shift),
                            slot,
                        )
                        stack.append(child)
        self.pages = {}
        for pa, info in self.tables.items():
            for page in range(pa, pa + 8 * info.entries, B.PAGE_SIZE):
                self.pages[page] = pa
        self.valid = True

    def info(self, pa: int) -> TableInfo | None:
        if not self.valid:
            self.build()
        return self.tables.get(pa)

    def path(self, addr: int) -> list[int]:
        """The tables from the start level down to the one holding the descriptor at
        `addr` (empty: no table holds it)."""
        if not self.valid:
            self.build()
        out = []
        pa = self.pages.get(addr & ~(B.PAGE_SIZE - 1))
        while pa is not None:
            out.append(pa)
            pa = self.tables[pa].parent
        return out[::-1]

    def pages_of(self, tables: Iterable[int]) -> set[int]:
        """The 4K pages these tables occupy (the start level's concatenated ones: several)."""
        out: set[int] = set()
        for pa in tables:
            info = self.info(pa)
            if info is not None:
                out.update(range(pa, pa + 8 * info.entries, B.PAGE_SIZE))
        return out

    def touched_entries(
        self, pages: Iterable[int], addrs: Iterable[int], tables: set[int]
    ) -> tuple[dict[int, set[int]], set[int]]:
        """What changed in these tables when descriptors in these pages were written
        (`addrs`: the writes within the tables' own pages, as drain_events watched them):
        table pa -> its entries whose view changed (the descriptors themselves and, above
        each written page, the table entry whose subtree counters moved); and the tables
        holding written pages."""
        if not self.valid:
            self.build()
        out: dict[int, set[int]] = {}
        held: set[int] = set()
        climbed: set[int] = set()
        for page in pages:
            pa = self.pages.get(page)
            if pa is None:
                continue
            if pa in tables:
                held.add(pa)
            while pa not in climbed:  # (the tables above it: their entry to it)
                climbed.add(pa)
                info = self.tables[pa]
                if info.parent is None:
                    break
                if info.parent in tables:
                    out.setdefault(info.parent, set()).add(info.slot)
                pa = info.parent
        mask = ~(B.PAGE_SIZE - 1)
        for addr in addrs:
            pa = self.pages.get(addr & mask)
            if pa in held:
                out.setdefault(pa, set()).add((addr - pa) >> 3)
        return out, held


def packed(c: Checkpoint) -> tuple[bytes, str]:
    """A checkpoint as the database stores it: compressed snapshot, state hash."""
    return store.compress(c.snapshot), c.hash


# One thread packs the checkpoints of every session of the worker, off the loop's thread.
PACKER = ThreadPoolExecutor(1, thread_name_prefix="ptviz-packer")


class SessionHost:
    RECENT_EVENTS = 500  # snapshot "events"
    PAST_EVENTS = 250  # those of a snapshot at a moment of the past (the timeline greys later ones)
    MAX_DELTA_EVENTS = 1000
    FLUSH_INTERVAL = 0.05
    FLUSH_SHARE = 3  # a run's deltas are at least this many times their making apart
    FLUSH_MAX_INTERVAL = 0.25  # ... but never further apart than this
    SLICE_SECONDS = 0.002
    SLICE_STEPS = 2000
    PACKED_POLL = 0.02  # after a run, how often tick looks whether its checkpoints are packed
    STEP_RUN = 500  # micro-steps of one actor per core call between two looks at the clock
    PROGRESS_INTERVAL = 0.5
    # Presence news at most this often: a burst of joins (200 viewers opening one link)
    # is one message to everyone per interval, not one per join (n^2 messages).
    PRESENCE_INTERVAL = 0.05

    def __init__(
        self,
        session_id: str,
        live: LiveSession,
        stored_checkpoints: set[int],
        emit: Emit,
        *,
        explore_max_states: int = 2_000_000,
        persist: bool = True,
        worker: str | None = None,
        quotas: Quotas | None = None,
    ):
        self.session_id = str(session_id)
        self.group = P.group_name(self.session_id)
        self.live = live
        self.emit = emit
        self.persist_enabled = persist
        self.worker = worker  # the lease holder the decisions are stored under
        self.explore_max_states = explore_max_states
        # Stored: each branch's decisions up to this end, and these (branch, position)
        # checkpoints.
        self.persisted = {br.id: br.end for br in live.tree.branches}
        self.stored_checkpoints = set(stored_checkpoints) | {(0, 0)}
        # (branch, position) -> the packer's (compressed snapshot, hash), not stored yet
        self.packing: dict[tuple[int, int], Future] = {}
        self.quotas = quotas if quotas is not None else Quotas()
        # Batch numbers only need to be consecutive; starting from the clock (ms) keeps
        # them increasing across a takeover by another worker, so a viewer never mistakes
        # a new owner's batches for ones it has seen.
        self.batch = int(time.time() * 1000)
        self.viewers: dict[str, Viewer] = {}
        self.viewer_serial = 0
        self.head_moved = False  # the head went to another existing branch: store it
        self.lens: LiveSession | None = None  # a second machine for viewers in the past
        self.lens_index: TableIndex | None = None
        self.seen: dict[str, float] = {}  # viewer -> when last heard from (monotonic)
        self.index = TableIndex(live)
        self.recent: deque[dict] = deque(maxlen=self.RECENT_EVENTS)
        self.pending: list[tuple] = []
        self.omitted = 0
        self.touched: set[int] = set()  # 4K pages written since the last delta
        self.touched_addrs: set[int] = set()  # ... descriptors written in watched tables
        self.watched: set[int] | None = None  # tables every drain since then watched
        self.wrote = False
        self.run: RunState | None = None
        self.last_flush = 0.0
        self.flush_cost = 0.0  # how long the last delta of a run took to make (s)
        self.violations_sent = len(live.machine.violations)
        self.job: ExploreJob | None = None
        self.idle_since = time.monotonic()
        self.presence_due = False
        self.presence_next = float("-inf")  # presence news may go out from then on
        self._fill_recent(live.position)

    # --- construction ------------------------------------------------------------------
    @classmethod
    def load(cls, session_id: str, emit: Emit, **kwargs) -> SessionHost:
        _row, live, stored = store.load(session_id)
        return cls(session_id, live, stored, emit, **kwargs)

    # --- output ------------------------------------------------------------------------
    def to_group(self, msg: dict) -> None:
        self.emit("group", self.group, {"type": P.OUT, "msg": msg})

    def to_viewer(self, viewer: str | None, msg: dict) -> None:
        if viewer:
            self.emit("channel", viewer, {"type": P.OUT, "msg": msg})

    def subscribed(self) -> set[int]:
        """The tables the viewers following the head have open (deltas carry those)."""
        out: set[int] = set()
        for v in self.viewers.values():
            if v.cursor is None:
                out |= v.tables
        return out

    def table_views(self, tables: Iterable[int], live=None, index=None) -> dict:
        """Whole views of these tables (null: the table is gone; the browser drops it)."""
        live = live or self.live
        index = index or self.index
        return {hexs(pa): self._table_view(live, index.info(pa), pa) for pa in sorted(tables)}

    def table_changes(
        self, touched: dict[int, set[int]], subscribed: set[int], whole: set[int] = frozenset()
    ) -> dict:
        """The changed entries of the subscribed tables (docs/protocol.md, "delta":
        `only` lists the entries a view carries; one of them without a row is invalid
        now). A full view when more than half the table changed (a cheaper message), and
        of the tables in `whole`."""
        out = {}
        for pa in sorted((touched.keys() | whole) & subscribed):
            info = self.index.info(pa)
            slots = sorted(touched.get(pa, ()))
            whole_view = pa in whole or info is None or 2 * len(slots) > info.entries
            out[hexs(pa)] = self._table_view(self.live, info, pa, None if whole_view else slots)
        return out

    @staticmethod
    def _table_view(live, info: TableInfo | None, pa: int, slots: list[int] | None = None):
        """The view of a table the index knows (its level and IPA from there, not from a
        walk), whole or only `slots`; None when it is gone."""
        if info is None:
            return None
        try:
            view = live.table_rows(
                pa, info.level, range(info.entries) if slots is None else slots, info.ipa
            )
        except (EngineError, IndexError):
            return None
        if slots is not None:
            view["only"] = slots
        return view

    def head(self) -> dict:
        live = self.live
        return {
            "moment": live.moment(),
            "branch": live.branch,
            "position": live.position,
            "running": self.run is not None,
        }

    def snapshot(self, tables: Iterable[int], viewer: str | None = None) -> dict:
        """The head's state (for the group, or a viewer following it live), or the state
        at a viewer's cursor (computed on the lens, a second machine)."""
        v = self.viewers.get(viewer or "")
        cursor = v.cursor if v is not None else None
        if cursor is None:
            live, recent, index = self.live, list(self.recent), self.index
        else:
            live, index = self._lens_at(cursor)
            recent = self._lens_events
        msg = P.message(
            "snapshot",
            batch=self.batch,
            seq=live.machine.seq,
            position=live.position,
            decisions=len(live.decisions),
            running=self.run is not None,
            run=self.run.params() if self.run is not None else None,
            machine=live.machine_view(),
            actors=live.actors_view(),
            lock=live.lock_view(),
            violations=live.violations(),
            tables=self.table_views(tables, live, index),
            events=recent,
            cursor={
                "moment": live.moment(),
                "branch": live.branch,
                "position": live.position,
                "end": len(live.decisions),
                "live": cursor is None,
            },
            head=self.head(),
            branches=self.live.tree.summary(),
        )
        if v is not None:
            msg["you"] = v.id
            msg["hash"] = live.state_hash()
        return msg

    def _lens_at(self, cursor: tuple[int, int]) -> tuple[LiveSession, TableIndex]:
        """The lens at a node, with the events of the decisions just before it."""
        if self.lens is None:
            self.lens = self.live.lens()
            self.lens_index = TableIndex(self.lens)
            self._lens_node = None
            # (branch, seq) -> its event record: stepping back or forward in the past
            # converts one event, not all of them
            self._past_json: dict[tuple[int, int], dict] = {}
        assert self.lens_index is not None
        if self._lens_node != cursor:
            branch, position = cursor
            self.lens.machine.clear_events()
            self.lens.seek(position, branch, replay=self.PAST_EVENTS)
            events = self.lens.machine.event_tuples()[-self.PAST_EVENTS :]
            self.lens.machine.clear_events()
            if len(self._past_json) > 20 * self.PAST_EVENTS:
                self._past_json.clear()
            self._lens_events = self._events_json(self.lens, events, self._past_json)
            self._lens_node = cursor
            self.lens_index.valid = False
        return self.lens, self.lens_index

    def _events_json(self, live: LiveSession, events, cache: dict | None = None) -> list[dict]:
        """Event records with the moment right after each one's step (`moment`), so a
        click on an event can go there. `cache`: records already made, by (branch, seq)
        (on one branch's path a seq is always the same event)."""
        out = []
        injects = live.decisions.injects_before(len(live.decisions))
        k = 0
        skipped = 0
        tree = live.tree
        br = tree.branches[live.branch]
        for e in events:
            index = e[0] + skipped
            while k < len(injects) and injects[k] <= index:
                k += 1
                skipped += 1
                index += 1
            if cache is not None:
                j = cache.get((br.id, e[0]))
                if j is not None:
                    out.append(j)
                    continue
            j = event_json(live.spec, e, live.machine.ops_of)
            pos = index + 1
            if br.parent is None or pos > br.start:  # owned by this branch
                j["moment"] = f"b{br.id}-{pos}" if br.id else str(pos)
            else:
                j["moment"] = tree.moment(br.id, pos)
            if cache is not None:
                cache[(br.id, e[0])] = j
            if e[6] & I.EVF_LOST_UPDATE:
                reverted = reverted_by(j, reversed(out))
                if reverted is None and live is self.live:
                    reverted = reverted_by(j, reversed(self.recent))
                if reverted is not None:
                    j["reverted"] = reverted
            out.append(j)
        return out

    # --- the engine's events -----------------------------------------------------------
    def _drain(self) -> None:
        """Collect the events of what was just executed: the core summarises them in one
        pass (the pages written, and the descriptors written in the subscribed tables,
        dirty-log news, tables linked or unlinked) and hands over as tuples only the last
        MAX_DELTA_EVENTS, the ones a delta lists."""
        if self.live.machine.n_events_recorded == 0:
            return
        tables = self.subscribed()
        # (tables some drain since the last delta did not watch: sent whole if written)
        self.watched = tables if self.watched is None else self.watched & tables
        tail, n, written, addrs, logged, relinked = self.live.machine.drain_events(
            self.MAX_DELTA_EVENTS, self.index.pages_of(tables)
        )
        if written:
            self.touched.update(written)
            self.touched_addrs.update(addrs)
        if written or logged:
            self.wrote = True  # the machine view carries the counters and dirty bitmap
        if relinked:
            self.index.valid = False
        if len(tail) >= self.MAX_DELTA_EVENTS:
            self.omitted += len(self.pending) + n - len(tail)
            self.pending = tail
        else:
            self.pending.extend(tail)
            self.omitted += n - len(tail)
            extra = len(self.pending) - self.MAX_DELTA_EVENTS
            if extra > 0:
                self.omitted += extra
                del self.pending[:extra]

    def _fill_recent(self, position: int, branch: int | None = None) -> None:
        """Put the head at `position` (of `branch`), re-executing enough decisions before
        it to fill the timeline's recent events (a snapshot shows them)."""
        live = self.live
        live.machine.clear_events()
        live.seek(position, branch, replay=self.RECENT_EVENTS)
        events = live.machine.event_tuples()[-self.RECENT_EVENTS :]
        live.machine.clear_events()
        self.recent.clear()
        self.recent.extend(self._events_json(live, events))
        self.pending.clear()
        self.omitted = 0
        self.touched.clear()
        self.touched_addrs.clear()
        self.watched = None
        self.wrote = False
        self.index.valid = False
        self.violations_sent = len(live.machine.violations)

    def persist(self, *, wait: bool = True) -> None:
        """Store the decisions (and checkpoints) not stored yet: the head's branch (a new
        branch with its first decisions, moving the session's head to it).

        A checkpoint is compressed and hashed in the packer thread (zlib and blake2b run
        without the GIL: 40 ms at 1M leaves, beside the run); a run (not `wait`) stores it
        with the first append after it is ready (tick stores the last ones), anything else
        at once. Decisions never wait: the recording is the decisions, a checkpoint only
        shortens a replay."""
        live = self.live
        br = live.tree.branches[live.branch]
        done = self.persisted.get(br.id)
        if not self.persist_enabled or (done == br.end and not self.packing):
            return
        new_branch = None
        if done is None:  # a branch made here: created with its first decisions
            new_branch = (br.parent, br.start)
            done = br.start
        new = br.decisions[done - br.start :]
        for key in [k for k in self.packing if k[0] != br.id]:
            del self.packing[key]  # (the head left that branch: not stored, not needed)
        for p, c in sorted(br.checkpoints.items()):
            key = (br.id, p)
            if key not in self.stored_checkpoints and key not in self.packing and p <= br.end:
                self.packing[key] = PACKER.submit(packed, c)
        ready = [key for key, job in self.packing.items() if wait or job.done()]
        if done == br.end and not ready:
            return
        checkpoints = [(key[1], *self.packing[key].result()) for key in ready]
        try:
            store.append(
                self.session_id,
                done,
                new,
                checkpoints,
                self.worker,
                branch=br.id,
                new_branch=new_branch,
                head=br.id if new_branch is not None or self.head_moved else None,
                run=self.run.as_json() if self.run is not None else None,
            )
        except (store.LostOwnership, store.SessionGone) as exc:
            raise HostLost(f"{type(exc).__name__}: {exc}") from None
        self.head_moved = False
        self.persisted[br.id] = br.end
        for key in ready:
            del self.packing[key]
            self.stored_checkpoints.add(key)

    def save_run(self) -> None:
        """Store the run's state now (it started or stopped; appends store it too)."""
        if self.persist_enabled:
            store.save_run(self.session_id, self.run.as_json() if self.run is not None else None)

    def resume(self, data: dict) -> None:
        """Go on with the run a previous owner stored (after a takeover)."""
        self.run = RunState.from_json(data, time.monotonic())
        log.info("session %s: resuming its run at step %d", self.session_id, self.run.steps)

    def flush(self, *, force: bool = False, wait: bool = True) -> None:
        """Persist, then send one delta batch with what happened since the last one."""
        self.persist(wait=wait)
        if not (self.pending or force):
            return
        live = self.live
        events = self._events_json(live, self.pending)
        self.recent.extend(events)
        subscribed = self.subscribed()
        touched, held = (
            self.index.touched_entries(self.touched, self.touched_addrs, subscribed)
            if self.touched
            else ({}, set())
        )
        unwatched = held - (self.watched if self.watched is not None else subscribed)
        all_violations = live.violations()
        self.batch += 1
        msg = P.message(
            "delta",
            batch=self.batch,
            position=live.position,
            decisions=len(live.decisions),
            running=self.run is not None,
            events=events,
            actors=live.actors_view(),
            lock=live.lock_view(),
            tables=self.table_changes(touched, subscribed, unwatched),
            violations=all_violations[self.violations_sent :],
            head=self.head(),
        )
        if self.run is not None:
            msg["run"] = self.run.params()
        if self.omitted:
            msg["omitted"] = self.omitted
        if self.wrote:
            msg["machine"] = live.machine_view()
        self.violations_sent = len(all_violations)
        self.pending = []
        self.omitted = 0
        self.touched = set()
        self.touched_addrs = set()
        self.watched = None
        self.wrote = False
        self.last_flush = time.monotonic()
        self.to_group_encoded(msg)

    def to_group_encoded(self, msg: dict) -> None:
        """A delta for the group, JSON-encoded once here rather than once per viewer: the
        text without its tables, and each table's text; each consumer joins the text with
        the tables its viewer subscribed (docs/protocol.md: viewers get their own)."""
        tables = msg.pop("tables")
        self.emit(
            "group",
            self.group,
            {
                "type": P.OUT,
                # (`head`: what a viewer at another moment is told instead)
                "msg": {"type": msg["type"], "batch": msg["batch"], "head": msg.get("head")},
                "text": json.dumps(msg, separators=(",", ":")),
                "tables": {pa: json.dumps(v, separators=(",", ":")) for pa, v in tables.items()},
            },
        )

    def broadcast_snapshot(self) -> None:
        """A new head for everyone following it (the head moved to another branch, or a
        takeover): a snapshot to the group (viewers in the past only take its `head`). It
        takes a batch number of its own, so a viewer that misses it sees a gap."""
        self.batch += 1
        self.to_group(self.snapshot(self.subscribed()))

    # --- viewers -----------------------------------------------------------------------
    def join(
        self, viewer: str, tables: Iterable = (), *, reply: bool = True, who: dict | None = None
    ) -> None:
        """A viewer connected (or re-registers after a takeover). `who`: what its consumer
        knows of it: role, name, label, and `at` (its cursor's moment, null: live)."""
        who = who or {}
        v = self.viewers.get(viewer)
        if v is None:
            self.viewer_serial += 1
            v = self.viewers[viewer] = Viewer(id=f"v{self.viewer_serial}")
        v.role = str(who.get("role") or v.role)
        v.name = str(who.get("name") or v.name)[:60]
        v.label = str(who.get("label") or v.label)[:60]
        v.tables = set()
        for value in tables:
            try:
                v.tables.add(P.parse_table_address(value))
            except ValueError:
                continue
        notice = None
        at = who.get("at")
        if at:
            try:
                v.cursor = self._node(str(at))
            except CommandError as exc:
                v.cursor = None
                notice = exc.text
        index = self._lens_at(v.cursor)[1] if v.cursor is not None else self.index
        v.tables = {pa for pa in v.tables if index.info(pa) is not None}
        focus = who.get("focus")  # its link names a descriptor: open the tables down to it
        if focus:
            try:
                path = index.path(P.parse_table_address(focus))
            except ValueError:
                path = []
            if path:
                v.tables.update(path)
                v.focus = hexs(P.parse_table_address(focus))
                v.opened = True
        v.notice = notice
        v.want_hash = str(who.get("hash") or "") or None
        self.seen[viewer] = time.monotonic()
        if reply:
            self.flush()
            self.welcome(viewer, always=True)

    def welcome(self, viewer: str, *, always: bool = False) -> None:
        """A joining viewer's own snapshot (with a notice when its link names no moment
        of the session, or a state that does not match the link's hash), and the news
        of it to everyone. Not `always`: only when the group's snapshot does not do
        (the viewer opens at another moment than the head, or has a notice)."""
        v = self.viewers[viewer]
        if always or v.cursor is not None or v.notice or v.opened:
            v.opened = False
            msg = self.snapshot(v.tables, viewer)
            if v.notice:
                msg["notice"] = v.notice
            elif v.want_hash and not str(msg.get("hash", "")).startswith(v.want_hash):
                msg["notice"] = (
                    f"the state at moment {msg['cursor']['moment']} does not match the "
                    f"link's hash {v.want_hash}: it was made for another recording"
                )
            v.notice = v.want_hash = None
            self.to_viewer(viewer, msg)
        else:  # it follows the head: the group's snapshot is its; only say who it is
            self.to_viewer(viewer, P.message("presence", viewers=self.presence(), you=v.id))
        self.send_presence()

    def heard(self, viewer: str, tables: Iterable = (), who: dict | None = None) -> None:
        """A viewer's heartbeat (or any message of it): it is alive."""
        if viewer not in self.viewers:
            self.join(viewer, tables, reply=False, who=who)
        self.seen[viewer] = time.monotonic()

    def leave(self, viewer: str) -> None:
        gone = self.viewers.pop(viewer, None)
        self.seen.pop(viewer, None)
        for v in self.viewers.values():
            if v.follows == viewer:
                v.follows = None
        if not self.viewers:
            self.idle_since = time.monotonic()
            if self.job is not None:  # nobody is waiting for it any more
                self.job.cancel()
        elif gone is not None:
            self.send_presence()

    def presence(self) -> list[dict]:
        out = []
        anon = 0
        for v in self.viewers.values():
            name = v.name
            if not name:
                anon += 1
                name = f"anonymous {anon}"
            leader = self.viewers.get(v.follows or "")
            out.append(
                {
                    "id": v.id,
                    "name": name,
                    "role": v.role,
                    "label": v.label,
                    "moment": self.live.moment() if v.cursor is None else self._moment(v.cursor),
                    "live": v.cursor is None,
                    "follows": leader.id if leader else None,
                    "focus": v.focus,
                }
            )
        return out

    def send_presence(self) -> None:
        """Tell everyone who is here, at the next tick (coalesced: PRESENCE_INTERVAL)."""
        self.presence_due = True

    def _presence_tick(self, now: float) -> float | None:
        if not self.presence_due:
            return None
        if now < self.presence_next:
            return self.presence_next
        self.presence_due = False
        self.presence_next = now + self.PRESENCE_INTERVAL
        if self.viewers:  # (encoded once here, not once per viewer by its consumer)
            msg = P.message("presence", viewers=self.presence())
            text = json.dumps(msg, separators=(",", ":"))
            self.emit(
                "group", self.group, {"type": P.OUT, "msg": {"type": "presence"}, "text": text}
            )
        return None

    def _moment(self, cursor: tuple[int, int]) -> str:
        return self.live.tree.moment(*cursor)

    def _node(self, moment: str) -> tuple[int, int]:
        try:
            return self.live.tree.resolve(moment)
        except HistoryError as exc:
            raise CommandError(P.NO_MOMENT, str(exc)) from None

    def _viewer(self, viewer: str | None) -> Viewer:
        v = self.viewers.get(viewer or "")
        if v is None:
            raise CommandError(P.ENGINE, "this viewer is not registered with the session")
        return v

    def move_cursor(self, viewer: str, cursor: tuple[int, int] | None, *, own: bool = True):
        """Put one viewer at a node (None: back to following the head) and send it the
        state there; its followers come along. `own`: the viewer's own action (it stops
        following anyone)."""
        v = self.viewers[viewer]
        if cursor is not None:
            branch, position = cursor
            cursor = (self.live.tree.owner(branch, position), position)
            if cursor == (self.live.branch, self.live.position):
                cursor = None  # the head itself: follow it live
        v.cursor = cursor
        if own:
            v.follows = None
        self.to_viewer(viewer, self.snapshot(v.tables, viewer))
        for channel, other in self.viewers.items():
            if other.follows == viewer and channel != viewer:
                self.move_cursor(channel, cursor, own=False)

    def _cursor(self, v: Viewer) -> tuple[int, int]:
        return v.cursor if v.cursor is not None else (self.live.branch, self.live.position)

    def expire(self, now: float, silence: float) -> list[str]:
        """Forget the viewers not heard from for `silence` seconds (their server died, or
        their consumer ended without a LEAVE) and take their channels out of the group."""
        gone = [v for v, t in self.seen.items() if now - t > silence]
        for viewer in gone:
            log.info("session %s: viewer %s went silent; forgetting it", self.session_id, viewer)
            self.leave(viewer)
            self.emit(P.DISCARD, viewer, {"group": self.group})
        return gone

    # --- commands ----------------------------------------------------------------------
    def command(self, msg: dict, viewer: str | None) -> None:
        cmd, id_ = msg["cmd"], msg.get("id")
        try:
            getattr(self, "cmd_" + cmd)(msg, viewer)
        except CommandError as exc:
            self.to_viewer(viewer, P.error(exc.code, exc.text, id_))
        except EngineError as exc:
            self.to_viewer(viewer, P.error(P.ENGINE, str(exc), id_))

    def _ack(self, viewer: str | None, msg: dict) -> None:
        if msg.get("id") is not None:
            self.to_viewer(viewer, P.ack(msg["id"]))

    def _from_cursor(self, msg: dict, viewer: str | None) -> None:
        """A decision is taken at the head. A controller looking at the past chooses: the
        command carries `branch: true` (continue from its cursor: the head moves there and
        the decision starts a new branch, the old one is kept), or it is refused with
        `rewound` (the page offers that, or a fork into a new session)."""
        v = self.viewers.get(viewer or "")
        if v is None or v.cursor is None:
            return
        cursor = v.cursor
        if not msg.get("branch"):
            live = self.live
            raise CommandError(
                P.REWOUND,
                f"you are looking at moment {self._moment(cursor)}, not the head "
                f"({live.moment()}): continue from here on a new branch, or fork a new "
                "session from here",
            )
        self._stop_run()
        self.flush()
        branch, position = cursor
        self._fill_recent(position, branch)
        self.head_moved = True
        v.cursor = None
        self.broadcast_snapshot()  # the viewers following the head see where it went
        self.to_viewer(viewer, self.snapshot(v.tables, viewer))

    def _decide(self, msg: dict, viewer: str | None, decision: Callable[[], None]) -> None:
        self._from_cursor(msg, viewer)  # (while running is fine: the run goes on after it)
        decision()  # an EngineError leaves nothing recorded
        self._drain()
        self.persist()  # stored before anyone hears of it
        self._ack(viewer, msg)
        self.flush(force=True)

    def cmd_step(self, msg: dict, viewer: str | None) -> None:
        self._decide(msg, viewer, lambda: self.live.step(msg["actor"]))

    def cmd_inject(self, msg: dict, viewer: str | None) -> None:
        self._decide(msg, viewer, lambda: self.live.inject(msg["actor"], msg["op"]))

    def cmd_run(self, msg: dict, viewer: str | None) -> None:
        self._from_cursor(msg, viewer)
        seed = msg.get("seed", 0)
        self.run = RunState(
            mode=msg.get("mode", "round_robin"),
            speed=float(msg.get("speed") or 0),
            max_steps=msg.get("max_steps"),
            rng=random.Random(seed),
            started=time.monotonic(),
            until=msg.get("until"),
            violations=len(self.live.machine.violations),
            seed=seed,
        )
        self.flush_cost = 0.0
        self.save_run()
        self._ack(viewer, msg)
        self.flush(force=True)  # running: true

    def cmd_pause(self, msg: dict, viewer: str | None) -> None:
        was_running = self.run is not None
        self.run = None
        self._drain()
        self.persist()
        if was_running:
            self.save_run()
        self._ack(viewer, msg)
        if was_running or self.pending:
            self.flush(force=True)  # running: false

    def _stop_run(self) -> None:
        if self.run is not None:
            self.run = None
            self._drain()
            self.flush(force=True)
            self.save_run()

    # Time travel moves only the viewer's own cursor (docs/protocol.md, "Moments").
    def cmd_seek(self, msg: dict, viewer: str | None) -> None:
        v = self._viewer(viewer)
        if msg.get("moment") is not None:
            cursor = self._node(msg["moment"])
        else:
            branch = msg.get("branch")
            branch = self._cursor(v)[0] if branch is None else branch
            if not 0 <= branch < len(self.live.tree.branches):
                raise CommandError(P.NO_MOMENT, f"this session has no branch {branch}")
            end = self.live.tree.branches[branch].end
            position = msg["position"]
            if not 0 <= position <= end:
                raise CommandError(P.ENGINE, f"position {position} is outside 0..{end}")
            cursor = (branch, position)
        self.flush()
        self._ack(viewer, msg)
        self.move_cursor(viewer or "", cursor)
        self.send_presence()

    def cmd_back(self, msg: dict, viewer: str | None) -> None:
        v = self._viewer(viewer)
        branch, position = self._cursor(v)
        self.flush()
        self._ack(viewer, msg)
        self.move_cursor(viewer or "", (branch, max(0, position - msg.get("n", 1))))
        self.send_presence()

    def cmd_live(self, msg: dict, viewer: str | None) -> None:
        self._viewer(viewer)
        self.flush()
        self._ack(viewer, msg)
        self.move_cursor(viewer or "", None)
        self.send_presence()

    def cmd_follow(self, msg: dict, viewer: str | None) -> None:
        """Follow another viewer's cursor and focus (a presenter), or stop (null)."""
        v = self._viewer(viewer)
        target = msg.get("viewer")
        if target is None:
            v.follows = None
            self._ack(viewer, msg)
            self.send_presence()
            return
        leader = next((c for c, o in self.viewers.items() if o.id == target), None)
        if leader is None or leader == viewer:
            raise CommandError(P.ENGINE, f"there is no other viewer {target!r} here")
        self._ack(viewer, msg)
        self.move_cursor(viewer or "", self.viewers[leader].cursor, own=False)
        v.follows = leader
        if self.viewers[leader].focus:
            self.to_viewer(viewer, self._focus_msg(leader))
        self.send_presence()

    def _focus_msg(self, leader: str) -> dict:
        lv = self.viewers[leader]
        return P.message("focus", addr=lv.focus, by=lv.id)

    def cmd_focus(self, msg: dict, viewer: str | None) -> None:
        v = self._viewer(viewer)
        v.focus = msg.get("addr")
        self._ack(viewer, msg)
        for channel, other in self.viewers.items():
            if other.follows == viewer:
                self.to_viewer(channel, self._focus_msg(viewer or ""))
        self.send_presence()

    def cmd_hello(self, msg: dict, viewer: str | None) -> None:
        """The name this viewer shows to the others."""
        v = self._viewer(viewer)
        v.name = msg["name"][:60]
        self._ack(viewer, msg)
        self.send_presence()

    def cmd_moment(self, msg: dict, viewer: str | None) -> None:
        """The id and state hash of this viewer's cursor (what a link to it names)."""
        v = self._viewer(viewer)
        cursor = self._cursor(v)
        live = self.live if v.cursor is None else self._lens_at(cursor)[0]
        self._ack(viewer, msg)
        self.to_viewer(
            viewer,
            P.message(
                "moment",
                id=msg.get("id"),
                moment=self._moment(cursor),
                hash=live.state_hash(),
                position=cursor[1],
                branch=cursor[0],
            ),
        )

    def cmd_explore(self, msg: dict, viewer: str | None) -> None:
        if self.job is not None and not self.job.done:
            raise CommandError(P.ENGINE, "an exploration of this session is already running")
        q = self.quotas
        if len([j for j in q.jobs if not j.done]) >= q.explorations:
            raise CommandError(
                P.LIMIT,
                f"this engine worker already runs {q.explorations} exploration(s), its limit "
                "(PTVIZ_EXPLORATIONS); retry when one has finished",
            )
        limit = self.explore_max_states
        wanted = msg.get("max_states") or limit
        if wanted > limit:
            raise CommandError(
                P.TOO_BIG,
                f"max_states {wanted:,} is above this server's limit of {limit:,} states",
            )
        self.job = ExploreJob(self.live, wanted, viewer, msg.get("id"), server_limit=limit).start()
        q.jobs = {j for j in q.jobs if not j.done} | {self.job}
        self._ack(viewer, msg)

    def cmd_explore_cancel(self, msg: dict, viewer: str | None) -> None:
        if self.job is None or self.job.done:
            raise CommandError(P.ENGINE, "no exploration of this session is running")
        self.job.cancel()  # the thread stops at its next progress call
        self._ack(viewer, msg)

    def cmd_history(self, msg: dict, viewer: str | None) -> None:
        """Every write to one descriptor on the path to this viewer's cursor (replayed
        from the start on the lens), each with its moment; a lost update names the
        write it reverted."""
        v = self._viewer(viewer)
        addr = P.parse_table_address(msg["addr"])
        branch, position = self._cursor(v)
        lens, _index = self._lens_at((branch, position))
        self._lens_node = None  # the replay below moves it
        writes: deque[dict] = deque(maxlen=HISTORY_MAX)
        total = 0
        m = lens.machine
        lens.seek(0, branch)
        m.clear_events()
        while lens.position < position:
            lens.advance(min(position, lens.position + HISTORY_CHUNK))
            events = m.event_tuples()
            m.clear_events()
            hits = [e for e in events if e[8] == addr and e[4] in I.WRITE_KINDS]
            for j in self._events_json(lens, hits) if hits else ():
                if "lost-update" in j.get("flags", ()) and "reverted" not in j:
                    found = reverted_by(j, reversed(writes))
                    if found is not None:
                        j["reverted"] = found
                writes.append(j)
                total += 1
        self._ack(viewer, msg)
        self.to_viewer(
            viewer,
            P.message(
                "history",
                addr=hex(addr),
                moment=self._moment((branch, position)),
                writes=list(writes),
                truncated=total > len(writes),
            ),
        )

    def cmd_subscribe(self, msg: dict, viewer: str | None) -> None:
        tables = msg["tables"]
        v = self.viewers.get(viewer or "")
        past = v is not None and v.cursor is not None
        if past:
            live, index = self._lens_at(v.cursor)
        else:
            live, index = self.live, self.index
        for pa in tables:
            if index.info(pa) is None:
                raise CommandError(P.ENGINE, f"there is no stage-2 table at {hexs(pa)}")
        if v is not None:
            v.tables.update(tables)
        self._ack(viewer, msg)
        if past:  # the tables at its cursor, to it alone
            self.to_viewer(
                viewer,
                P.message("tables", tables=self.table_views(tables, live, index)),
            )
            return
        self._drain()
        self.flush()  # what happened before, to everyone; then the tables, to this viewer
        views = self.table_views(tables)
        self.to_viewer(viewer, P.message("tables", batch=self.batch, tables=views))

    def cmd_unsubscribe(self, msg: dict, viewer: str | None) -> None:
        v = self.viewers.get(viewer or "")
        if v is not None:
            v.tables.difference_update(msg["tables"])
        self._ack(viewer, msg)

    def cmd_resync(self, msg: dict, viewer: str | None) -> None:
        self._drain()
        self.flush()
        self._ack(viewer, msg)
        v = self.viewers.get(viewer or "")
        self.to_viewer(viewer, self.snapshot(v.tables if v else set(), viewer))

    # --- time --------------------------------------------------------------------------
    def tick(self, now: float | None = None) -> float | None:
        """Advance a run by one slice, report exploration progress, send presence news.
        Returns when this host next wants to be called (monotonic time), or None when it
        is idle."""
        now = time.monotonic() if now is None else now
        wakes = [self._presence_tick(now)]
        if self.run is not None:
            wakes.append(self._run_slice(now))
        if self.job is not None:
            wakes.append(self._explore_tick(now))
        if self.packing and self.run is None:  # (a run's last checkpoints)
            self.persist(wait=False)
            if self.packing:
                wakes.append(now + self.PACKED_POLL)
        return min((w for w in wakes if w is not None), default=None)

    def _run_slice(self, now: float) -> float | None:
        r = self.run
        assert r is not None
        live = self.live
        m = live.machine
        if r.speed > 0:
            budget = min(self.SLICE_STEPS, int((now - r.started) * r.speed) + 1 - r.steps)
        else:
            budget = self.SLICE_STEPS
        deadline = time.perf_counter() + self.SLICE_SECONDS
        finished = False
        n_actors = len(live.names)
        # Round-robin with one actor left (the others finished): its steps go to the core
        # in runs (step_n), not one Python call each. (Random mode draws for every step;
        # until=violation stops right after one.)
        runs = r.mode != "random" and r.until != "violation"
        done = 0
        while done < budget:
            if r.max_steps is not None and r.steps >= r.max_steps:
                finished = True
                break
            enabled = m.enabled()
            if not enabled:
                finished = True  # every actor finished (or the rest are blocked)
                break
            if (
                runs
                and len(enabled) == 1
                and live.position == len(live.decisions)
                and all(j == enabled[0] or m.done(j) for j in range(n_actors))
            ):
                actor = enabled[0]
                n = min(budget - done, self.STEP_RUN)
                if r.max_steps is not None:
                    n = min(n, r.max_steps - r.steps)
                taken = live.take_steps(actor, n)
                r.turn = actor + 1
                r.steps += taken
                done += taken
                if time.perf_counter() > deadline:
                    break
                continue
            if r.mode == "random":
                actor = r.rng.choice(enabled)
            else:  # round-robin in file order, as LiveSession.run
                actor = next(
                    i % n_actors
                    for i in range(r.turn, r.turn + n_actors)
                    if i % n_actors in enabled
                )
                r.turn = actor + 1
            live.step(actor)
            r.steps += 1
            done += 1
            if r.until == "violation" and len(m.violations) > r.violations:
                finished = True  # stop right after the step that violated a check
                break
            if done % 32 == 0 and time.perf_counter() > deadline:
                break
        if not finished and r.max_steps is not None and r.steps >= r.max_steps:
            finished = True
        if not finished and r.max_steps is None and not m.enabled():
            finished = True
        self._drain()
        if finished:
            self.run = None
            self.flush(force=True, wait=False)
            self.save_run()
            return None
        if self.pending and time.monotonic() - self.last_flush >= self.flush_every():
            t0 = time.perf_counter()
            self.flush(wait=False)
            self.flush_cost = time.perf_counter() - t0
        if r.speed > 0:
            nxt = r.started + r.steps / r.speed
            if self.pending:
                nxt = min(nxt, self.last_flush + self.flush_every())
            return nxt
        return now

    def flush_every(self) -> float:
        """The time between a run's deltas: FLUSH_INTERVAL, or more when making one took
        long (every batch is still sent, numbered in order; only fewer are made)."""
        share = min(self.FLUSH_MAX_INTERVAL, self.FLUSH_SHARE * self.flush_cost)
        return max(self.FLUSH_INTERVAL, share)

    def _explore_tick(self, now: float) -> float:
        job = self.job
        assert job is not None
        if job.done:
            self.job = None
            # A search faster than PROGRESS_INTERVAL still shows how far it got.
            self._explore_progress(job)
            if job.result is not None:
                self.to_group(P.message("explore_result", result=job.result))
            elif job.error_code == P.CANCELLED:
                self.to_group(P.message("explore_cancelled", states=job.states))
            else:
                self.to_viewer(
                    job.requester, P.error(job.error_code or P.ENGINE, job.error, job.cmd_id)
                )
            return now
        if now - job.last_report >= self.PROGRESS_INTERVAL:
            job.last_report = now
            self._explore_progress(job)
        return min(job.last_report + self.PROGRESS_INTERVAL, now + 0.05)

    def _explore_progress(self, job) -> None:
        self.to_group(
            P.message(
                "explore_progress", states=job.states, depth=job.depth, max_states=job.max_states
            )
        )

    # --- lifecycle ---------------------------------------------------------------------
    @property
    def busy(self) -> bool:
        return bool(self.viewers) or self.run is not None or self.job is not None

    def footprint(self) -> int:
        """Bytes this session holds: its machine (about one snapshot) and checkpoints."""
        sizes = [len(c.snapshot) for c in self.live.checkpoints.values()]
        return sum(sizes) + max(sizes, default=0)

    def close(self) -> None:
        """Stop running and exploring; store what was decided."""
        if self.job is not None:
            self.job.cancel()
        self.run = None
        try:
            self._drain()
            self.persist()
        except HostLost:
            pass


def reverted_by(store: dict, earlier: Iterable[dict]) -> dict | None:
    """The write a lost update reverted: the latest earlier write that changed the same
    descriptor, and the bits it set that the store cleared."""
    for x in earlier:
        if x.get("addr") != store["addr"] or x["kind"] not in WRITE_NAMES:
            continue
        if x["seq"] >= store["seq"] or x.get("old") == x.get("new"):
            continue
        old, new, now = int(x["old"], 16), int(x["new"], 16), int(store["new"], 16)
        return {
            "seq": x["seq"],
            "actor": x["actor"],
            "kind": x["kind"],
            "moment": x.get("moment"),
            "bits": B.lost_bit_names(new & ~now & (new ^ old)),
        }
    return None
