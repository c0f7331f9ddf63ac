// Dev harness (not a test fixture): plays messages recorded by bench/dev/record.py
// through a fake WebSocket so the UI modules can be looked at without a server.
// Query: ?rec=seed_race_v4.6|seed_race_seed|wp_range_seed  &role=view  &gap=N (drop batch N once)
//        &at=N (start with N decisions already played)
// Serve the project root (e.g. `python -m http.server -d . 8600`) and open /bench/dev/harness.html.
import { mount } from "../../static/js/app.js";

const q = new URLSearchParams(location.search);
const recName = q.get("rec") || "seed_race_v4.6";
const role = q.get("role") || "control";
const dropBatch = q.has("gap") ? Number(q.get("gap")) : null;

document.getElementById("recs").innerHTML = ["seed_race_v4.6", "seed_race_seed", "wp_range_seed"]
  .map((r) => `<a href="?rec=${r}">${r}</a>`)
  .join(" · ");

const rec = await (await fetch(`recorded/${recName}.json`)).json();
const hello = rec.messages.find((m) => m.type === "hello");
const snap0 = rec.messages.find((m) => m.type === "snapshot");
const deltas = rec.messages.filter((m) => m.type === "delta");
const explore = rec.messages.find((m) => m.type === "explore_result");

class FakeSocket {
  constructor(url) {
    this.url = url;
    this.readyState = 0;
    this.recorded = deltas.length; // decisions available
    this.decisions = Number(q.get("at") || 0); // decisions taken (a prefix of the recording)
    this.position = this.decisions;
    this.batch = 0;
    this.subs = new Set();
    this.timer = null;
    this.dropped = false;
    setTimeout(() => {
      this.readyState = 1;
      this.onopen && this.onopen();
      this.emit({ ...hello, role });
      this.snapshot();
    }, 50);
  }

  emit(msg) {
    setTimeout(() => this.onmessage && this.onmessage({ data: JSON.stringify(msg) }), 5);
  }

  filterTables(tables) {
    const out = {};
    for (const [pa, v] of Object.entries(tables || {})) if (this.subs.has(pa)) out[pa] = v;
    return out;
  }

  stateAt(pos) {
    const d = pos === 0 ? snap0 : deltas[pos - 1];
    const events = [...snap0.events];
    const violations = [...snap0.violations];
    for (let i = 0; i < pos; i++) {
      events.push(...deltas[i].events);
      violations.push(...deltas[i].violations);
    }
    return { d, events: events.slice(-500), violations };
  }

  snapshot() {
    const { d, events, violations } = this.stateAt(this.position);
    this.emit({
      v: 1, type: "snapshot", batch: this.batch, seq: events.length ? events[events.length - 1].seq + 1 : 0,
      position: this.position, decisions: this.decisions, running: !!this.timer,
      machine: snap0.machine, actors: d.actors, lock: d.lock, violations,
      tables: this.filterTables(d.tables || snap0.tables), events,
    });
  }

  advance() {
    if (this.decisions >= this.recorded) return false;
    const d = deltas[this.decisions];
    this.decisions += 1;
    this.position = this.decisions;
    this.batch += 1;
    if (dropBatch === this.batch && !this.dropped) {
      this.dropped = true;
      return true; // lost on the way
    }
    this.emit({ ...d, batch: this.batch, position: this.position, decisions: this.decisions, running: !!this.timer, tables: this.filterTables(d.tables) });
    return true;
  }

  send(text) {
    const m = JSON.parse(text);
    const ack = () => this.emit({ v: 1, type: "ack", id: m.id });
    const err = (code, message) => this.emit({ v: 1, type: "error", id: m.id ?? null, code, message });
    if (m.type === "resync") return this.snapshot();
    if (m.type !== "command") return err("bad_message", `unknown type ${m.type}`);
    const control = ["step", "run", "pause", "back", "seek", "inject", "explore"];
    if (control.includes(m.cmd) && role !== "control") return err("forbidden", "this link is view-only");
    const decision = ["step", "run", "inject"].includes(m.cmd);
    if (decision && this.position < this.decisions) return err("rewound", `the session is at position ${this.position} of ${this.decisions}: fork first`);
    switch (m.cmd) {
      case "subscribe":
        for (const t of m.tables) this.subs.add(t);
        ack();
        return this.snapshot();
      case "unsubscribe":
        for (const t of m.tables) this.subs.delete(t);
        return ack();
      case "step": {
        const next = deltas[this.decisions];
        if (!next) return err("engine", `${m.actor} has finished its operations (end of the recording)`);
        ack();
        return this.advance();
      }
      case "inject":
        return err("engine", "the dev harness plays a recording; inject is not recorded");
      case "run":
        ack();
        clearInterval(this.timer);
        this.timer = setInterval(() => {
          if (!this.advance()) {
            clearInterval(this.timer);
            this.timer = null;
            this.snapshot();
          }
        }, m.speed ? 1000 / m.speed : 30);
        return;
      case "pause":
        clearInterval(this.timer);
        this.timer = null;
        ack();
        return this.snapshot();
      case "back":
      case "seek":
        this.position = m.cmd === "back" ? Math.max(0, this.position - (m.n || 1)) : m.position;
        ack();
        this.batch += 1;
        return this.snapshot();
      case "explore": {
        ack();
        let n = 0;
        const t = setInterval(() => {
          n += 1;
          this.emit({ v: 1, type: "explore_progress", states: n * 7, depth: n });
          if (n >= 6) {
            clearInterval(t);
            this.emit(explore);
          }
        }, 120);
        return;
      }
      default:
        return err("bad_message", `unknown command ${m.cmd}`);
    }
  }

  close() {
    this.readyState = 3;
    this.onclose && this.onclose({ code: 1000 });
  }
}

const boot = {
  session: "dev",
  token: "dev-token",
  role,
  ws: "/ws/sessions/dev/?token=dev-token",
  name: hello.name,
  kernel: hello.kernel,
  protocol: 1,
  actors: rec.actors,
};
window.ptviz = mount(document.getElementById("app"), boot, { factory: (u) => new FakeSocket(u) });
