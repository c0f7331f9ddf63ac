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
most one delta per FLUSH_INTERVAL, listing its most recent MAX_DELTA_EVENTS events.
"""

from __future__ import annotations

import json
import logging
import random
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from engine import bits as B
from engine import isa as I
from engine.report import event_json, hexs
from engine.session import LiveSession
from engine.twin import EngineError
from ptviz import protocol as P
from ptviz.engine_worker import store
from ptviz.engine_worker.explorer import ExploreJob
from ptviz.engine_worker.quotas import Quotas

log = logging.getLogger("ptviz.engine")

# Event kinds that write a descriptor (the table holding it, and the counters of every
# table above it, change).
WRITE_KINDS = frozenset((I.EV_STORE, I.EV_STXR_OK, I.EV_CAS_OK, I.EV_HW_UPDATE))
TABLE_BITS = B.DESC_VALID | B.DESC_TYPE

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
    seed: int = 0

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
class TableInfo:
    level: int
    entries: int
    parent: int | None


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
            for raw in m.table(pa, info.entries):
                if raw & TABLE_BITS == TABLE_BITS:
                    child = raw & B.OA_MASK
                    if child not in self.tables:
                        self.tables[child] = TableInfo(info.level + 1, B.PTRS_PER_TABLE, pa)
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

    def containing(self, addrs: Iterable[int]) -> set[int]:
        """The tables holding these descriptor addresses, and every table above them."""
        if not self.valid:
            self.build()
        out: set[int] = set()
        for addr in addrs:
            pa = self.pages.get(addr & ~(B.PAGE_SIZE - 1))
            while pa is not None and pa not in out:
                out.add(pa)
                pa = self.tables[pa].parent
        return out


class SessionHost:
    RECENT_EVENTS = 500  # snapshot "events"
    MAX_DELTA_EVENTS = 1000
    FLUSH_INTERVAL = 0.05
    SLICE_SECONDS = 0.002
    SLICE_STEPS = 2000
    PROGRESS_INTERVAL = 0.5

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
        self.quotas = quotas if quotas is not None else Quotas()
        self.persisted = len(live.decisions)
        self.stored_checkpoints = set(stored_checkpoints) | {0}
        # Batch numbers only need to be consecutive; starting from the clock (ms) keeps
        # them increasing across a takeover by another worker, so a viewer never mistakes
        # a new owner's batches for ones it has seen.
        self.batch = int(time.time() * 1000)
        self.viewers: dict[str, set[int]] = {}
        self.seen: dict[str, float] = {}  # viewer -> when last heard from (monotonic)
        self.index = TableIndex(live)
        self.recent: deque[dict] = deque(maxlen=self.RECENT_EVENTS)
        self.pending: list[tuple] = []
        self.omitted = 0
        self.touched: set[int] = set()
        self.wrote = False
        self.run: RunState | None = None
        self.last_flush = 0.0
        self.violations_sent = len(live.machine.violations)
        self.job: ExploreJob | None = None
        self.idle_since = time.monotonic()
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
        out: set[int] = set()
        for tables in self.viewers.values():
            out |= tables
        return out

    def table_views(self, tables: Iterable[int]) -> dict:
        out = {}
        for pa in sorted(tables):
            info = self.index.info(pa)
            view = None
            if info is not None:
                try:
                    view = self.live.table_view(pa, info.level)
                except (EngineError, IndexError):
                    view = None
            out[hexs(pa)] = view  # null: the table is gone (the browser drops it)
        return out

    def snapshot(self, tables: Iterable[int]) -> dict:
        live = self.live
        return P.message(
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
            tables=self.table_views(tables),
            events=list(self.recent),
        )

    # --- the engine's events -----------------------------------------------------------
    def _drain(self) -> None:
        """Collect the events of what was just executed (LiveSession.events(), converted
        to JSON only for the events a delta will list)."""
        m = self.live.machine
        events = m.event_tuples()
        if not events:
            return
        m.clear_events()
        for e in events:
            kind, level, addr, old, new = e[4], e[7], e[8], e[10], e[11]
            if kind in WRITE_KINDS and old != new:
                self.touched.add(addr)
                self.wrote = True
                if level < 3 and (old & TABLE_BITS == TABLE_BITS) != (
                    new & TABLE_BITS == TABLE_BITS
                ):
                    self.index.valid = False
        self.pending.extend(events)
        extra = len(self.pending) - self.MAX_DELTA_EVENTS
        if extra > 0:
            self.omitted += extra
            del self.pending[:extra]

    def _fill_recent(self, position: int) -> None:
        """Go to `position`, re-executing enough decisions before it to fill the
        timeline's recent events (a snapshot after seek/back or a takeover shows them)."""
        live = self.live
        start = max(0, position - self.RECENT_EVENTS)
        every = live.checkpoints
        live.checkpoints = {p: c for p, c in every.items() if p <= start}
        try:
            live.seek(position)
        finally:
            live.checkpoints = every
        events = live.machine.event_tuples()[-self.RECENT_EVENTS :]
        live.machine.clear_events()
        self.recent.clear()
        self.recent.extend(event_json(live.spec, e, live.machine.ops_of) for e in events)
        self.pending.clear()
        self.omitted = 0
        self.touched.clear()
        self.wrote = False
        self.index.valid = False
        self.violations_sent = len(live.machine.violations)

    def persist(self) -> None:
        """Store the decisions (and checkpoints) not stored yet."""
        live = self.live
        if not self.persist_enabled or self.persisted >= len(live.decisions):
            return
        new = live.decisions[self.persisted :]
        checkpoints = [
            c
            for p, c in sorted(live.checkpoints.items())
            if p not in self.stored_checkpoints and p <= len(live.decisions)
        ]
        try:
            store.append(
                self.session_id,
                self.persisted,
                new,
                checkpoints,
                self.worker,
                run=self.run.as_json() if self.run is not None else None,
            )
        except (store.LostOwnership, store.SessionGone) as exc:
            raise HostLost(f"{type(exc).__name__}: {exc}") from None
        self.persisted = len(live.decisions)
        self.stored_checkpoints.update(c.position for c in checkpoints)

    def save_run(self) -> None:
        """Store the run's state now (it started or stopped; appends store it too)."""
        if self.persist_enabled:
            store.save_run(self.session_id, self.run.as_json() if self.run is not None else None)

    def resume(self, data: dict) -> None:
        """Go on with the run a previous owner stored (after a takeover)."""
        self.run = RunState.from_json(data, time.monotonic())
        log.info("session %s: resuming its run at step %d", self.session_id, self.run.steps)

    def flush(self, *, force: bool = False) -> None:
        """Persist, then send one delta batch with what happened since the last one."""
        self.persist()
        if not (self.pending or force):
            return
        live = self.live
        spec = live.spec
        events = [event_json(spec, e, live.machine.ops_of) for e in self.pending]
        self.recent.extend(events)
        subscribed = self.subscribed()
        changed = self.index.containing(self.touched) if self.touched else set()
        tables = changed & subscribed
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
            tables=self.table_views(tables),
            violations=all_violations[self.violations_sent :],
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
                "msg": {"type": msg["type"], "batch": msg["batch"]},
                "text": json.dumps(msg, separators=(",", ":")),
                "tables": {pa: json.dumps(v, separators=(",", ":")) for pa, v in tables.items()},
            },
        )

    def broadcast_snapshot(self) -> None:
        """A new state for everyone (seek, back, takeover): a snapshot to the group. It
        takes a batch number of its own, so a viewer that misses it sees a gap."""
        self.batch += 1
        self.to_group(self.snapshot(self.subscribed()))

    # --- viewers -----------------------------------------------------------------------
    def join(self, viewer: str, tables: Iterable = (), *, reply: bool = True) -> None:
        subs = set()
        for value in tables:
            try:
                pa = P.parse_table_address(value)
            except ValueError:
                continue
            if self.index.info(pa) is not None:
                subs.add(pa)
        self.viewers[viewer] = subs
        self.seen[viewer] = time.monotonic()
        if reply:
            self.flush()
            self.to_viewer(viewer, self.snapshot(subs))

    def heard(self, viewer: str, tables: Iterable = ()) -> None:
        """A viewer's heartbeat (or any message of it): it is alive."""
        if viewer not in self.viewers:
            self.join(viewer, tables, reply=False)
        self.seen[viewer] = time.monotonic()

    def leave(self, viewer: str) -> None:
        self.viewers.pop(viewer, None)
        self.seen.pop(viewer, None)
        if not self.viewers:
            self.idle_since = time.monotonic()
            if self.job is not None:  # nobody is waiting for it any more
                self.job.cancel()

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

    def _not_rewound(self) -> None:
        live = self.live
        if live.position < len(live.decisions):
            raise CommandError(
                P.REWOUND,
                f"the session is at position {live.position} of {len(live.decisions)} "
                "recorded decisions: a new decision here needs a fork (or seek to the end)",
            )

    def _decide(self, msg: dict, viewer: str | None, decision: Callable[[], None]) -> None:
        self._not_rewound()  # (while running is fine: the run goes on after it)
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
        self._not_rewound()
        seed = msg.get("seed", 0)
        self.run = RunState(
            mode=msg.get("mode", "round_robin"),
            speed=float(msg.get("speed") or 0),
            max_steps=msg.get("max_steps"),
            rng=random.Random(seed),
            started=time.monotonic(),
            seed=seed,
        )
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

    def _goto(self, position: int, msg: dict, viewer: str | None) -> None:
        live = self.live
        if not 0 <= position <= len(live.decisions):
            raise CommandError(P.ENGINE, f"position {position} is outside 0..{len(live.decisions)}")
        self._stop_run()
        self.flush()
        self._fill_recent(position)
        self._ack(viewer, msg)
        self.broadcast_snapshot()

    def cmd_seek(self, msg: dict, viewer: str | None) -> None:
        self._goto(msg["position"], msg, viewer)

    def cmd_back(self, msg: dict, viewer: str | None) -> None:
        self._goto(max(0, self.live.position - msg.get("n", 1)), msg, viewer)

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

    def cmd_subscribe(self, msg: dict, viewer: str | None) -> None:
        tables = msg["tables"]
        for pa in tables:
            if self.index.info(pa) is None:
                raise CommandError(P.ENGINE, f"there is no stage-2 table at {hexs(pa)}")
        if viewer is not None:
            self.viewers.setdefault(viewer, set()).update(tables)
        self._ack(viewer, msg)
        self._drain()
        self.flush()  # what happened before, to everyone; then the tables, to this viewer
        views = self.table_views(tables)
        self.to_viewer(viewer, P.message("tables", batch=self.batch, tables=views))

    def cmd_unsubscribe(self, msg: dict, viewer: str | None) -> None:
        if viewer is not None:
            self.viewers.setdefault(viewer, set()).difference_update(msg["tables"])
        self._ack(viewer, msg)

    def cmd_resync(self, msg: dict, viewer: str | None) -> None:
        self._drain()
        self.flush()
        self._ack(viewer, msg)
        self.to_viewer(viewer, self.snapshot(self.viewers.get(viewer or "", set())))

    # --- time --------------------------------------------------------------------------
    def tick(self, now: float | None = None) -> float | None:
        """Advance a run by one slice and report exploration progress. Returns when this
        host next wants to be called (monotonic time), or None when it is idle."""
        now = time.monotonic() if now is None else now
        wake = None
        if self.run is not None:
            wake = self._run_slice(now)
        if self.job is not None:
            job_wake = self._explore_tick(now)
            wake = job_wake if wake is None else min(wake, job_wake)
        return wake

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
        done = 0
        while done < budget:
            if r.max_steps is not None and r.steps >= r.max_steps:
                finished = True
                break
            enabled = m.enabled()
            if not enabled:
                finished = True  # every actor finished (or the rest are blocked)
                break
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
            if done % 32 == 0 and time.perf_counter() > deadline:
                break
        if not finished and r.max_steps is not None and r.steps >= r.max_steps:
            finished = True
        if not finished and r.max_steps is None and not m.enabled():
            finished = True
        self._drain()
        if finished:
            self.run = None
            self.flush(force=True)
            self.save_run()
            return None
        if self.pending and time.monotonic() - self.last_flush >= self.FLUSH_INTERVAL:
            self.flush()
        if r.speed > 0:
            nxt = r.started + r.steps / r.speed
            if self.pending:
                nxt = min(nxt, self.last_flush + self.FLUSH_INTERVAL)
            return nxt
        return now

    def _explore_tick(self, now: float) -> float:
        job = self.job
        assert job is not None
        if job.done:
            self.job = None
            if job.result is not None:
                self.to_group(P.message("explore_result", result=job.result))
            elif job.error_code == P.CANCELLED:
                self.to_group(P.message("explore_cancelled", states=job.states))
            else:
                if job.error_code == P.TOO_BIG:
                    # A search faster than PROGRESS_INTERVAL still shows how far it got.
                    self._explore_progress(job)
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
