// Client-side session state: applies protocol-v1 snapshots and deltas (docs/protocol.md)
// and keeps what the panels render. Emits "change" with a detail naming what changed.
import { changedFields, decode } from "./decode.js";
import { FAIL_KINDS, WRITE_KINDS } from "./fmt.js";

export const MAX_EVENTS = 2000; // kept for the timeline (it renders the last N of these)

export class Store extends EventTarget {
  constructor(boot) {
    super();
    this.boot = boot;
    this.sessionId = boot.session;
    this.role = boot.role || "view";
    this.name = boot.name || "";
    this.kernel = boot.kernel || "";
    this.actorsBoot = boot.actors || [];
    this.reset();
    // What the viewer has open: table addresses (hex) it subscribed to. The start-level
    // table is open by default. Survives reconnects (resubscribed on hello).
    this.expanded = new Set();
    this.rootOpen = true;
    this.selectedAddr = null;
    this.selectedSeq = null;
    this.explore = { state: "idle", states: 0, depth: 0, maxStates: null, result: null };
    this.conn = { status: "connecting", detail: "" };
    // Moments (docs/protocol.md, "Moments"): this viewer's cursor, the shared head, the
    // branches of the history, who else is here.
    this.cursor = null; // {moment, branch, position, end, live}
    this.head = null; // {moment, branch, position, running}
    this.branches = [];
    this.you = null;
    this.hash = null;
    this.presence = [];
  }

  reset() {
    this.haveSnapshot = false;
    this.batch = null;
    this.seq = 0;
    this.position = 0;
    this.decisions = 0;
    this.running = false;
    this.machine = null;
    this.actors = [];
    this.lock = null;
    this.violations = [];
    this.tables = new Map(); // table pa (hex, lower-case) -> LiveSession.table_view()
    this.rowsByAddr = new Map(); // descriptor addr -> {table, row}
    this.events = [];
    this.lastChange = new Map(); // descriptor addr -> {actor, seq, kind, fields, time, bad}
    this.lastFail = new Map(); // descriptor addr -> the last failed STXR/CAS/hw update there
  }

  get canControl() {
    return this.role === "control";
  }

  get rewound() {
    return this.position < this.decisions;
  }

  /** This viewer looks at another moment than the head (it is not following it live). */
  get past() {
    return !!this.cursor && !this.cursor.live;
  }

  /** The messages of moments: head, tables, presence, focus, moment. */
  moments(msg) {
    if (msg.type === "head") {
      this.head = { moment: msg.moment, branch: msg.branch, position: msg.position, running: msg.running };
      this.running = !!msg.running;
      this.emit({ head: true });
    } else if (msg.type === "tables") {
      this.mergeTables(msg.tables || {});
      this.emit({ tables: true });
    } else if (msg.type === "presence") {
      this.presence = msg.viewers || [];
      if (msg.you) this.you = msg.you; // (sent to a viewer that joined live)
      this.emit({ presence: true });
    } else {
      this.emit({ [msg.type]: msg });
    }
  }

  emit(what) {
    this.dispatchEvent(new CustomEvent("change", { detail: what }));
  }

  setConn(status, detail = "") {
    this.conn = { status, detail };
    this.emit({ conn: true });
  }

  hello(msg) {
    if (msg.role) this.role = msg.role;
    if (msg.name) this.name = msg.name;
    if (msg.kernel) this.kernel = msg.kernel;
    if (msg.session) this.sessionId = msg.session;
    this.emit({ hello: true });
  }

  snapshot(msg) {
    const expanded = this.expanded;
    // A snapshot that moves forward (seek/forward through a recording, a collapsed
    // backlog) flashes what changed since the previous view, like deltas do.
    const fromSeq = this.haveSnapshot && (msg.position ?? 0) > this.position ? this.seq : Infinity;
    // Seeking back on the same branch keeps the events after the new moment, greyed
    // (`later`): the timeline still shows what comes next.
    const sameBranch = msg.cursor && this.cursor && msg.cursor.branch === this.cursor.branch;
    const later = msg.cursor && !msg.cursor.live && sameBranch
      ? this.events.filter((e) => e.seq >= (msg.seq ?? 0)).map((e) => ({ ...e, later: true }))
      : [];
    this.reset();
    this.expanded = expanded;
    this.haveSnapshot = true;
    this.batch = msg.batch;
    this.seq = msg.seq ?? 0;
    this.position = msg.position ?? 0;
    this.decisions = msg.decisions ?? 0;
    this.running = !!msg.running;
    this.run = msg.run || null;
    this.machine = msg.machine || null;
    this.actors = msg.actors || [];
    this.lock = msg.lock || null;
    this.violations = msg.violations || [];
    if (msg.cursor) this.cursor = msg.cursor;
    if (msg.head) this.head = msg.head;
    if (msg.branches) this.branches = msg.branches;
    if (msg.you) this.you = msg.you;
    this.hash = msg.hash || null;
    this.mergeTables(msg.tables || {});
    this.addEvents(msg.events || [], false, fromSeq);
    if (later.length) this.events.push(...later);
    this.emit({ snapshot: true, tables: true, events: true, actors: true, machine: true });
  }

  /** Returns false when the batch is not the next one (the caller resyncs). */
  delta(msg) {
    if (!this.haveSnapshot) return true; // waiting for the first snapshot: ignore
    if (msg.batch <= this.batch) return true; // already included (a snapshot covered it)
    if (msg.batch !== this.batch + 1) return false;
    this.batch = msg.batch;
    // (the state hash came with a snapshot: unknown once a delta moved the state on)
    if (msg.position !== undefined && msg.position !== this.position) this.hash = null;
    if (msg.position !== undefined) this.position = msg.position;
    if (msg.decisions !== undefined) this.decisions = msg.decisions;
    if (msg.running !== undefined) this.running = !!msg.running;
    if (msg.head) {
      this.head = msg.head;
      if (this.cursor) this.cursor = { ...this.cursor, moment: msg.head.moment, branch: msg.head.branch, position: msg.head.position, end: msg.decisions, live: true };
    }
    this.run = this.running ? msg.run || this.run : null;
    if (msg.actors) this.actors = msg.actors;
    if (msg.lock) this.lock = msg.lock;
    if (msg.machine) this.machine = msg.machine;
    const events = msg.events || [];
    this.addEvents(events, true);
    if (events.length) this.seq = events[events.length - 1].seq + 1;
    if (msg.tables) this.mergeTables(msg.tables);
    if (msg.violations && msg.violations.length) {
      const seen = new Set(this.violations.map(violationKey));
      for (const v of msg.violations) if (!seen.has(violationKey(v))) this.violations.push(v);
    }
    this.emit({ delta: true, tables: true, events: events.length > 0, actors: true });
    return true;
  }

  /** Tables sent to this viewer alone (a subscribe's answer): no batch of their own. */
  tablesSent(msg) {
    if (!this.haveSnapshot) return;
    this.mergeTables(msg.tables || {});
    this.emit({ tables: true });
  }

  /** Tables re-sent by the server replace what the browser had (the server is the truth). */
  mergeTables(tables) {
    for (const [pa, view] of Object.entries(tables)) {
      const key = pa.toLowerCase();
      const old = this.tables.get(key);
      if (view && view.only) {
        // A delta's changed entries (docs/protocol.md): the others stay as they are; an
        // entry listed in `only` without a row is invalid now.
        if (!old) continue; // (not open here: a later `tables` message brings it whole)
        const only = new Set(view.only);
        for (const r of old.rows) if (only.has(r.index)) this.rowsByAddr.delete(r.addr);
        const rows = old.rows.filter((r) => !only.has(r.index)).concat(view.rows);
        rows.sort((a, b) => a.index - b.index);
        const merged = { ...view, rows };
        delete merged.only;
        this.tables.set(key, merged);
        for (const r of view.rows) this.rowsByAddr.set(r.addr, { table: key, row: r });
        continue;
      }
      if (old) for (const r of old.rows) this.rowsByAddr.delete(r.addr);
      if (view === null) {
        this.tables.delete(key);
        continue;
      }
      view.rows.sort((a, b) => a.index - b.index);
      this.tables.set(key, view);
      for (const r of view.rows) this.rowsByAddr.set(r.addr, { table: key, row: r });
    }
  }

  addEvents(events, live, fromSeq = Infinity) {
    if (!events.length) return;
    const now = performance.now();
    const liveAll = live;
    for (const e of events) {
      live = liveAll || e.seq >= fromSeq;
      this.events.push(e);
      if (WRITE_KINDS.has(e.kind) && e.addr && e.old !== e.new) {
        const fields = changedFields(e.old, e.new);
        this.lastChange.set(e.addr, {
          actor: e.actor,
          seq: e.seq,
          kind: e.kind,
          op: e.op,
          fields,
          old: e.old,
          new: e.new,
          time: live ? now : -1e9,
          bad: !!(e.flags && e.flags.length && e.flags.some((f) => f !== "op-done" && f !== "tlb-fill")),
        });
        if (liveAll) this.patchRow(e);
      } else if (FAIL_KINDS.has(e.kind) && e.addr) {
        this.lastFail.set(e.addr, { actor: e.actor, seq: e.seq, kind: e.kind, op: e.op, time: live ? now : -1e9 });
      }
    }
    if (this.events.length > MAX_EVENTS) this.events.splice(0, this.events.length - MAX_EVENTS);
  }

  /** Apply a descriptor write to the row we show until the server re-sends its table. */
  patchRow(e) {
    const hit = this.rowsByAddr.get(e.addr);
    if (!hit) return;
    const level = hit.row.decoded.level;
    const decoded = decode(e.new, level);
    const keep = hit.row.decoded.type === "table" && decoded.type === "table" ? hit.row.counts : undefined;
    hit.row.decoded = decoded;
    if (keep === undefined) delete hit.row.counts;
  }

  tableOf(pa) {
    return this.tables.get(String(pa).toLowerCase());
  }

  actorIndex(name) {
    return this.actorNames().indexOf(name);
  }

  actorNames() {
    const list = this.actors.length ? this.actors : this.actorsBoot;
    return list.map((a) => a.name);
  }

  actorKind(name) {
    const list = this.actors.length ? this.actors : this.actorsBoot;
    return list.find((a) => a.name === name)?.kind;
  }

  exploreProgress(msg) {
    this.explore.state = "running";
    this.explore.states = msg.states ?? this.explore.states;
    this.explore.depth = msg.depth ?? this.explore.depth;
    this.explore.maxStates = msg.max_states ?? this.explore.maxStates;
    this.emit({ explore: true });
  }

  exploreCancelled(msg) {
    this.explore.state = "cancelled";
    this.explore.states = msg.states ?? this.explore.states;
    this.emit({ explore: true });
  }

  exploreResult(msg) {
    this.explore.state = "done";
    this.explore.result = msg.result;
    if (msg.result && msg.result.states !== undefined) this.explore.states = msg.result.states;
    this.emit({ explore: true });
  }

  /** Violations that apply to a leaf IPA: the bit names lost there. */
  lostBitsAt(ipa) {
    let out = null;
    for (const v of this.violations) {
      if (v.ipa === ipa) {
        out = out || new Set();
        for (const b of v.bits || []) out.add(b);
      }
    }
    return out;
  }
}

function violationKey(v) {
  return `${v.check}|${v.seq}|${v.actor}|${v.ipa}`;
}
