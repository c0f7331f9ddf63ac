// The toolbar (position, run, step, fork/compare, share, help) and the inject form.
import { h } from "./dom.js";
import { label } from "./icons.js";
import { actorSlot } from "./tree.js";

const SPEEDS = [
  [1, "1 step/s"],
  [2, "2/s"],
  [5, "5/s"],
  [10, "10/s"],
  [50, "50/s"],
  [200, "200/s"],
  [1000, "1000/s"],
  [0, "max"],
];

const STATUS_TEXT = {
  connecting: "connecting…",
  open: "handshake…",
  live: "live",
  reconnecting: "reconnecting…",
  waiting: "offline",
  closed: "closed",
};

export class Toolbar {
  constructor(store, actions) {
    this.store = store;
    this.a = actions;
    const btn = (html, title, onclick, cls = "") => h("button", { type: "button", class: `btn ${cls}`, title, "aria-label": title.replace(/ \(.*$/, ""), onclick, html });

    this.status = h("button", { type: "button", class: "conn", title: "Connection state (click to reconnect now)", onclick: () => actions.reconnect() });
    this.statusText = h("span", { class: "conn-text" });
    this.status.append(h("span", { class: "dot", "aria-hidden": "true" }), this.statusText);
    this.roleTag = h("span", { class: "role-tag" });

    // position
    this.bStart = btn(label("start"), "Seek to the start (Home)", () => actions.seek(0), "icon");
    this.bBack = btn(label("back", "back"), "Step back one decision (b, ←)", () => actions.back(), "");
    this.slider = h("input", { type: "range", min: "0", max: "0", value: "0", step: "1", class: "pos-slider", "aria-label": "Position in the recorded decisions" });
    this.bFwd = btn(label("fwd", "fwd"), "Forward one recorded decision (f, →)", () => actions.forward(), "");
    this.bEnd = btn(label("end"), "Back to live: follow the session's head (End)", () => actions.live(), "icon");
    this.posText = h("output", { class: "pos-text", "aria-live": "off" });
    this.bFork = btn(label("fork", "fork here"), "A new session from the first `position` decisions (k)", () => actions.forkHere(), "fork");
    this.slider.addEventListener("input", () => (this.posText.textContent = `${this.slider.value} / ${this.store.decisions}`));
    this.slider.addEventListener("change", () => actions.seek(Number(this.slider.value)));

    // run
    this.bRun = btn(label("play", "run"), "Run (r)", () => actions.run(), "primary");
    this.bPause = btn(label("pause", "pause"), "Pause (p)", () => actions.pause(), "");
    this.mode = h("select", { "aria-label": "Scheduling mode", title: "Which actor runs next" },
      h("option", { value: "round_robin" }, "round-robin"), h("option", { value: "random" }, "random"));
    this.seed = h("input", { type: "number", value: "1", min: "0", class: "num", "aria-label": "Random seed", title: "Seed for random scheduling" });
    this.speed = h("select", { "aria-label": "Speed", title: "Steps per second" }, SPEEDS.map(([v, l]) => h("option", { value: String(v) }, l)));
    this.speed.value = "10";
    this.maxSteps = h("input", { type: "number", value: "1000", min: "1", class: "num wide", "aria-label": "Maximum steps", title: "Stop after this many steps" });
    this.mode.addEventListener("change", () => (this.seedWrap.hidden = this.mode.value !== "random"));
    this.speed.addEventListener("change", () => actions.speedChanged());
    this.seedWrap = h("label", { class: "inline", hidden: true }, "seed ", this.seed);

    // steps
    this.steps = h("span", { class: "step-btns", role: "group", "aria-label": "Step one actor" });

    // explore
    this.bExplore = btn(label("explore", "explore all"), "Explore every interleaving (e)", () => actions.explore(), "");

    // compare (fork with another kernel / HA / HD)
    this.kernel = h("select", { "aria-label": "Kernel generation" }, ["v4.6", "seed", "v6.6", "v6.12"].map((k) => h("option", { value: k }, k)));
    this.ha = h("input", { type: "checkbox" });
    this.hd = h("input", { type: "checkbox" });
    this.hafdbs = h("select", { "aria-label": "ID_AA64MMFR1_EL1.HAFDBS" }, [0, 1, 2].map((v) => h("option", { value: String(v) }, String(v))));
    this.compareOut = h("div", { class: "menu-out" });
    this.compare = h("details", { class: "menu" },
      h("summary", { class: "btn", title: "Open a copy of this scenario with another kernel generation or HA/HD setting", html: label("compare", "compare…") }),
      h("div", { class: "menu-body" },
        h("p", { class: "small muted" }, "A copy of this session's scenario with another kernel generation or hardware flags (its decisions are not kept)."),
        h("label", null, "kernel ", this.kernel),
        h("label", { title: "ID_AA64MMFR1_EL1.HAFDBS" }, "HAFDBS ", this.hafdbs),
        h("label", { title: "VTCR_EL2.HA" }, this.ha, " HA"),
        h("label", { title: "VTCR_EL2.HD (needs HAFDBS 2)" }, this.hd, " HD"),
        h("div", { class: "row" },
          btn("open copy in new tab", "Fork with these settings", () => actions.compare(this.compareFields(), true), "primary"),
          btn("open here", "Fork with these settings and go there", () => actions.compare(this.compareFields(), false))),
        this.compareOut));
    this.compare.addEventListener("toggle", () => this.compare.open && this.syncCompare());

    // share
    this.shareOut = h("div", { class: "menu-out" });
    this.exportLink = h("a", { class: "btn", download: "", title: "Download the recording (scenario + decisions + state hashes)", html: label("download", "export recording") });
    this.share = h("details", { class: "menu right" },
      h("summary", { class: "btn", title: "Share links and the recording", html: label("share", "share…") }),
      h("div", { class: "menu-body" },
        h("div", { class: "row" },
          btn("view link", "Create a read-only link to this session", () => actions.link("view")),
          (this.bControlLink = btn("control link", "Create a link that can also drive the session", () => actions.link("control"))),
          this.exportLink),
        this.shareOut));

    this.bHelp = btn("?", "Keyboard shortcuts (?)", () => actions.help(), "icon help-btn");
    keepInView(this.compare);
    keepInView(this.share);

    this.el = h("div", { class: "toolbar", role: "toolbar", "aria-label": "Session controls" },
      h("div", { class: "tb-row" },
        this.status, this.roleTag,
        h("span", { class: "sep" }),
        h("span", { class: "grp pos", role: "group", "aria-label": "Position" }, this.bStart, this.bBack, this.slider, this.bFwd, this.bEnd, this.posText),
        this.bFork,
        h("span", { class: "sep" }),
        h("span", { class: "grp", role: "group", "aria-label": "Run" }, this.bRun, this.bPause, this.mode, this.seedWrap,
          h("label", { class: "inline" }, "speed ", this.speed), h("label", { class: "inline", title: "max steps" }, "max ", this.maxSteps)),
        h("span", { class: "sep" }),
        this.steps,
        h("span", { class: "spacer" }),
        this.bExplore, this.compare, this.share, this.bHelp));
    this.stepKey = "";
  }

  compareFields() {
    return { kernel: this.kernel.value, ha: this.ha.checked, hd: this.hd.checked, hafdbs: Number(this.hafdbs.value) };
  }

  syncCompare() {
    const m = this.store.machine;
    if (!m) return;
    this.kernel.value = m.kernel === "v4.6" ? "seed" : m.kernel === "seed" ? "v4.6" : "seed";
    this.hafdbs.value = String(m.hafdbs);
    this.ha.checked = !!m.ha;
    this.hd.checked = !!m.hd;
  }

  /** A run going on shows its parameters (whoever started it), unless one is being edited. */
  showRun(run) {
    if (!run || this.runShown === run) return;
    this.runShown = run;
    const set = (el, value) => {
      if (document.activeElement !== el && value !== null && value !== undefined) el.value = String(value);
    };
    set(this.mode, run.mode);
    set(this.seed, run.seed);
    const speed = String(run.speed);
    if ([...this.speed.options].some((o) => o.value === speed)) set(this.speed, speed);
    set(this.maxSteps, run.max_steps ?? "");
    this.seedWrap.hidden = this.mode.value !== "random";
  }

  runParams() {
    return {
      mode: this.mode.value,
      seed: Number(this.seed.value) || 0,
      speed: Number(this.speed.value),
      max_steps: Math.max(1, Number(this.maxSteps.value) || 1000),
    };
  }

  showLink(out, label, url) {
    const input = h("input", { type: "text", readonly: true, value: url, class: "link-field", "aria-label": label, onfocus: (e) => e.target.select() });
    const copy = h("button", { type: "button", class: "btn small" }, "copy");
    copy.addEventListener("click", async () => {
      try {
        await navigator.clipboard.writeText(url);
        copy.textContent = "copied ✓";
      } catch {
        input.select();
        document.execCommand && document.execCommand("copy");
        copy.textContent = "copied (selected)";
      }
      setTimeout(() => (copy.textContent = "copy"), 1500);
    });
    out.prepend(h("div", { class: "link-row" }, h("span", { class: "small" }, label), input, copy));
  }

  render() {
    const s = this.store;
    const st = s.conn.status;
    this.status.className = `conn c-${st}`;
    const retry = st === "waiting" && /retrying in (\d+ s)/.exec(s.conn.detail || "");
    this.statusText.textContent = (STATUS_TEXT[st] || st) + (retry ? ` · retry in ${retry[1]}` : "");
    this.status.title = `Connection: ${STATUS_TEXT[st] || st}${s.conn.detail ? " — " + s.conn.detail : ""} (click to reconnect now)`;
    this.roleTag.textContent = s.role === "control" ? "control" : "view only";
    this.roleTag.className = `role-tag r-${s.role}`;
    this.roleTag.title = s.role === "control" ? "This link can drive the session" : "This link can watch, expand tables and inspect; it cannot take decisions";

    const ctl = s.canControl && s.haveSnapshot;
    const live = st === "live";
    this.slider.max = String(s.decisions);
    if (document.activeElement !== this.slider) this.slider.value = String(s.position);
    this.posText.innerHTML = `<b>${s.position}</b> / ${s.decisions}${s.rewound ? ' <span class="rewound-tag">rewound</span>' : ""} <span class="muted">· seq ${s.seq}</span>`;
    this.posText.title = `position ${s.position} of ${s.decisions} recorded decisions; next event seq ${s.seq}; delta batch ${s.batch ?? "—"}`;
    // Time travel moves only this viewer's cursor: any role may.
    for (const b of [this.bStart, this.bBack]) b.disabled = !live || s.position === 0;
    this.bFwd.disabled = !live || !s.rewound;
    this.bEnd.disabled = !live || !s.past;
    this.slider.disabled = !live || s.decisions === 0;
    this.bFork.disabled = !s.haveSnapshot;
    this.bFork.classList.toggle("attention", s.rewound);
    this.bRun.disabled = !ctl || !live || s.running;
    this.bPause.disabled = !ctl || !live || !s.running;
    this.bRun.classList.toggle("running", s.running);
    this.bExplore.disabled = !ctl || !live || s.explore.state === "running";
    this.showRun(s.run);
    this.exportLink.href = this.a.recordingUrl();
    this.bControlLink.disabled = !s.canControl;
    this.bControlLink.title = s.canControl ? "Create a link that can also drive the session" : "a view-only link cannot make control links";

    const actors = s.actors.length ? s.actors : s.actorsBoot;
    const key = actors.map((a) => a.name).join(",");
    if (key !== this.stepKey) {
      this.stepKey = key;
      this.steps.replaceChildren(
        h("span", { class: "small muted" }, "step"),
        ...actors.map((a, i) =>
          h("button", { type: "button", class: "btn step", dataset: { actor: a.name }, title: `Step ${a.name} one micro-step (key ${i + 1})`, onclick: () => this.a.step(a.name) },
            h("kbd", null, String(i + 1)), " ", h("span", { class: `actor-tag a-${actorSlot(s, a.name)}` }, a.name))),
      );
    }
    for (const b of this.steps.querySelectorAll("button[data-actor]")) {
      const a = actors.find((x) => x.name === b.dataset.actor);
      b.disabled = !ctl || !live || !a || a.done || a.blocked || a.ops === undefined;
      b.classList.toggle("blocked", !!(a && a.blocked));
      b.title = `Step ${b.dataset.actor} one micro-step${a && a.done ? " (finished)" : a && a.blocked ? " (blocked on kvm->mmu_lock)" : ""}`;
    }
  }
}

// A popover menu opens right-aligned under its summary (the menus sit at the toolbar's
// end); when the toolbar wraps and the summary starts a row, that would put the menu off
// the left edge: align it the other way then.
function keepInView(details) {
  details.addEventListener("toggle", () => {
    const body = details.querySelector(".menu-body");
    if (!body) return;
    body.style.left = body.style.right = "";
    if (!details.open) return;
    const r = body.getBoundingClientRect();
    if (r.left < 0) {
      body.style.left = "0";
      body.style.right = "auto";
    } else if (r.right > document.documentElement.clientWidth) {
      body.style.left = "auto";
      body.style.right = "0";
    }
  });
}

// --- inject ---------------------------------------------------------------------------
const VCPU_OPS = [
  ["read", "read"],
  ["write", "write"],
];
const HOST_OPS = [
  ["set_readonly", "set_readonly"],
  ["wp", "wp (range)"],
  ["age", "age (range)"],
  ["test_age", "test_age"],
  ["unmap", "unmap (range)"],
  ["flush_tlb", "flush_tlb"],
  ["log_start", "log_start (range)"],
  ["get_dirty_log", "get_dirty_log (range)"],
  ["log_stop", "log_stop (range)"],
];
const SIZED = new Set(["wp", "age", "unmap", "log_start", "get_dirty_log", "log_stop"]);

export class InjectPanel {
  constructor(store, actions) {
    this.store = store;
    this.a = actions;
    this.actor = h("select", { "aria-label": "Actor", id: "inject-actor" });
    this.op = h("select", { "aria-label": "Operation" });
    this.ipa = h("input", { type: "text", placeholder: "IPA, e.g. 0x8000_0000", spellcheck: "false", autocomplete: "off", class: "mono", id: "inject-ipa", "aria-label": "IPA (click a descriptor row to fill)" });
    this.size = h("input", { type: "text", placeholder: "size", spellcheck: "false", class: "mono size", "aria-label": "Size (4K, 2M, 1G or bytes)" });
    this.preview = h("code", { class: "preview" });
    this.go = h("button", { type: "submit", class: "btn primary" }, "inject");
    this.form = h("form", { class: "inject-form" },
      this.actor, this.op, this.ipa, this.size, this.go);
    this.el = h("div", { class: "inject", role: "group", "aria-label": "Inject an operation" },
      h("span", { class: "inject-title" }, "Inject"),
      this.form,
      h("span", { class: "small" }, h("span", { class: "muted" }, "→ "), this.preview));
    this.actor.addEventListener("change", () => this.syncOps());
    for (const x of [this.op, this.ipa, this.size]) x.addEventListener("input", () => this.syncPreview());
    this.op.addEventListener("change", () => this.syncPreview());
    this.form.addEventListener("submit", (ev) => {
      ev.preventDefault();
      const text = this.text();
      if (text) this.a.inject(this.actor.value, text);
    });
    this.actorKey = "";
  }

  render() {
    const s = this.store;
    const actors = s.actors.length ? s.actors : s.actorsBoot;
    const key = actors.map((a) => a.name + a.kind).join(",");
    if (key !== this.actorKey) {
      this.actorKey = key;
      const cur = this.actor.value;
      this.actor.replaceChildren(...actors.map((a) => h("option", { value: a.name }, `${a.name} (${a.kind})`)));
      if (actors.some((a) => a.name === cur)) this.actor.value = cur;
      this.syncOps();
    }
    const ok = s.canControl && s.haveSnapshot && s.conn.status === "live";
    this.go.disabled = !ok;
    this.go.title = !s.canControl ? "needs a control link" : s.past ? "you look at the past: continue from here on a new branch, or fork" : "Queue this operation on the actor";
  }

  syncOps() {
    const kind = this.store.actorKind(this.actor.value);
    const list = kind === "host" ? HOST_OPS : VCPU_OPS;
    const cur = this.op.value;
    this.op.replaceChildren(...list.map(([v, label]) => h("option", { value: v }, label)));
    if (list.some(([v]) => v === cur)) this.op.value = cur;
    this.syncPreview();
  }

  syncPreview() {
    const op = this.op.value;
    this.ipa.disabled = op === "flush_tlb";
    this.size.disabled = !SIZED.has(op);
    this.preview.textContent = this.text() || "—";
  }

  text() {
    const op = this.op.value;
    if (!op) return "";
    if (op === "flush_tlb") return op;
    const ipa = this.ipa.value.trim();
    if (!ipa) return "";
    const size = SIZED.has(op) ? this.size.value.trim() : "";
    return [op, ipa, size].filter(Boolean).join(" ");
  }

  /** A descriptor row was picked in the tree. */
  pick(row, item) {
    this.ipa.value = row.ipa;
    const d = row.decoded;
    if (d.type === "table" || d.type === "block") {
      // a range op over what this entry maps
      const n = item.size;
      this.size.value = n >= 2 ** 30 ? n / 2 ** 30 + "G" : n >= 2 ** 20 ? n / 2 ** 20 + "M" : n / 1024 + "K";
    } else this.size.value = "";
    this.syncPreview();
    this.ipa.classList.remove("picked");
    void this.ipa.offsetWidth;
    this.ipa.classList.add("picked");
  }
}
