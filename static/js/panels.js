// Side panels: VTCR_EL2 / features, kvm->mmu_lock, actors, violations.
import { decodeVtcr, decodeVttbr } from "./decode.js";
import { dirtyLogHtml } from "./dirtylog.js";
import { esc, h } from "./dom.js";
import { ICONS } from "./icons.js";
import { actorSlot, countsHtml } from "./tree.js";

const HAFDBS = ["0 (none)", "1 (AF)", "2 (AF + DBM)"];
const KERNEL_TEXT = {
  "v4.6": "v4.6: before the seed (plain load/store RMW)",
  seed: "seed, Linux 4.7: LDXR/STXR, hardware AF",
  "v6.6": "v6.6: kvm_pgtable walker, rwlock mmu_lock",
  "v6.12": "v6.12 LTS: v6.6 + be097997a273 (relax -EAGAIN TLBI)",
};

/** Counters of a table view, the way engine subtree_counts() counts them. */
export function countsOfTable(view) {
  const c = { leaves: 0, young: 0, readonly: 0, dirty: 0, invalid: view.entries - view.rows.length };
  for (const r of view.rows) {
    const d = r.decoded;
    if (d.type === "table") {
      if (!r.counts) return null;
      for (const k of Object.keys(c)) c[k] += r.counts[k];
    } else if (d.type === "block" || d.type === "page") {
      c.leaves += 1;
      c.young += d.af;
      c.readonly += d.s2ap === "ro" ? 1 : 0;
      c.dirty += d.dbm && (d.s2ap === "rw" || d.s2ap === "wo") ? 1 : 0;
    } else c.invalid += 1;
  }
  return c;
}

/** The modelled kernel commits the session runs (engine/commits.py): the generation's,
 * those the scenario applied (+) and those it reverted (-). */
function commitsHtml(m) {
  const applied = m.commits || [];
  const reverted = m.reverted || [];
  if (!applied.length && !reverted.length) return "";
  const one = (c) =>
    `<span class="commit ${c.origin}" title="${esc(`${c.subject} (${c.release})`)}">` +
    `${c.origin === "scenario" ? "+" : ""}<code>${esc(c.id)}</code></span>`;
  const gone = (id) => `<span class="commit reverted" title="reverted by the scenario">-<code>${esc(id)}</code></span>`;
  return `<div class="kvs commits"><i>commits</i> ${applied.map(one).join(" ")} ${reverted.map(gone).join(" ")}</div>`;
}

export class MachinePanel {
  constructor(store) {
    this.store = store;
    this.el = h("section", { class: "panel machine", "aria-label": "Machine: VTCR_EL2 and features" });
  }

  render() {
    const m = this.store.machine;
    if (!m) {
      this.el.innerHTML = '<h2>Machine</h2><p class="muted">waiting for the first snapshot…</p>';
      return;
    }
    const root = this.store.tableOf(m.root);
    const counts = (root && countsOfTable(root)) || m.counts;
    const vt = decodeVtcr(m.vtcr_el2);
    const tt = decodeVttbr(m.vttbr_el2);
    const whatIf = [];
    if (m.kernel === "v4.6" && m.ha) whatIf.push("HA on with pre-seed code");
    if (m.hd) whatIf.push("HD on (KVM never sets it)");
    // Arm ARM choices the hardware may make ([machine] what-ifs, README "What hardware may do")
    if (m.af_on_permission_fault) whatIf.push("AF set on a permission-faulting access (R_QSPMS)");
    if (m.af_dirty_separate) whatIf.push("AF and dirty as two updates (R_PRHKD)");
    if (m.tlb_evict) whatIf.push("TLB entries evicted at any time (actor evict)");
    if (m.tlbi_vmalle1) whatIf.push("TLBI by IPA + TLBI VMALLE1IS, as KVM issues it");
    const flag = (on) => `<b class="${on ? "on" : "off"}">${on ? "on" : "off"}</b>`;
    const kv = (k, v, t = "") => `<span class="kv"${t ? ` title="${esc(t)}"` : ""}><i>${k}</i> ${v}</span>`;
    this.el.innerHTML =
      `<h2>Machine <span class="muted small">${esc(KERNEL_TEXT[m.kernel] || m.kernel)}</span></h2>` +
      `<div class="kvs">` +
      kv("kernel", `<b>${esc(m.kernel)}</b>`) +
      kv("HAFDBS", esc(HAFDBS[m.hafdbs] ?? m.hafdbs), "ID_AA64MMFR1_EL1.HAFDBS") +
      kv("HA", flag(m.ha), "VTCR_EL2.HA: hardware Access Flag update") +
      kv("HD", flag(m.hd), "VTCR_EL2.HD: hardware dirty state (DBM)") +
      kv("IPA", `${m.ipa_bits} bits`) +
      kv("TLB", flag(m.tlb)) +
      (whatIf.length ? `<span class="kv whatif">what-if: ${esc(whatIf.join("; "))}</span>` : "") +
      `</div>` +
      commitsHtml(m) +
      `<div class="reg"><span class="reg-name">VTCR_EL2</span> <code>${esc(m.vtcr_el2)}</code>` +
      `<span class="fields">` +
      kv("T0SZ", `${vt.t0sz} <span class="muted">(${vt.ipaBits}-bit IPA)</span>`, "bits 5:0") +
      kv("SL0", `${vt.sl0} <span class="muted">(start L${vt.startLevel})</span>`, "bits 7:6") +
      kv("TG0", vt.granule, "bits 15:14") +
      kv("PS", `${vt.ps} <span class="muted">(${vt.paBits}-bit)</span>`, "bits 18:16") +
      kv("SH0", vt.sh0, "bits 13:12") +
      kv("IRGN0/ORGN0", `${vt.irgn0}/${vt.orgn0}`, "bits 9:8 / 11:10") +
      kv("VS", vt.vs, "bit 19: 16-bit VMID") +
      kv("HA", `<b class="${vt.ha ? "on" : "off"}">${vt.ha}</b>`, "bit 21") +
      kv("HD", `<b class="${vt.hd ? "on" : "off"}">${vt.hd}</b>`, "bit 22") +
      `</span></div>` +
      `<div class="reg"><span class="reg-name">VTTBR_EL2</span> <code>${esc(m.vttbr_el2)}</code>` +
      `<span class="fields">` +
      kv("VMID", tt.vmid, "bits 63:48") +
      kv("BADDR", esc(tt.baddr), "bits 47:1") +
      kv("CnP", tt.cnp, "bit 0") +
      `</span></div>` +
      `<div class="kvs">` +
      kv("start level", `L${m.start_level}`) +
      kv("concatenated", m.start_tables > 1 ? `${m.start_tables} tables, ${m.start_entries} entries` : `no (${m.start_entries} entries)`) +
      `</div>` +
      `<div class="counts root-counts">${countsHtml(counts)}</div>` +
      dirtyLogHtml(m.dirty_log);
  }
}

export class LockPanel {
  constructor(store) {
    this.store = store;
    this.el = h("div", { class: "lock", role: "status", "aria-label": "kvm->mmu_lock" });
  }

  render() {
    const l = this.store.lock;
    if (!l) {
      this.el.innerHTML = "";
      return;
    }
    const holder = l.writer
      ? `held by <span class="actor-tag a-${actorSlot(this.store, l.writer)}">${esc(l.writer)}</span>${l.kind === "rwlock" ? " (write)" : ""}`
      : l.readers
        ? `${l.readers} reader${l.readers === 1 ? "" : "s"}`
        : '<span class="muted">free</span>';
    const readers = l.kind === "rwlock" && l.writer ? ` · ${l.readers} readers` : "";
    const holders = this.store.actors.filter((a) => a.holds_lock).map((a) => `${a.name} (${a.holds_lock})`);
    this.el.className = `lock${l.writer || l.readers ? " held" : ""}`;
    this.el.innerHTML =
      `<span class="lock-icon" aria-hidden="true">${l.writer || l.readers ? ICONS.lock : ICONS.unlock}</span>` +
      `<b>kvm-&gt;mmu_lock</b> <span class="muted">${esc(l.kind)}</span> ${holder}${readers}` +
      (holders.length ? ` <span class="muted">· in critical section: ${esc(holders.join(", "))}</span>` : "");
  }
}

export class ActorsPanel {
  /** @param cb step(name) */
  constructor(store, cb) {
    this.store = store;
    this.cb = cb;
    this.cards = new Map();
    this.el = h("section", { class: "panel actors", "aria-label": "Actors" });
    this.head = h("h2", null, "Actors");
    this.list = h("div", { class: "actor-list" });
    this.el.append(this.head, this.list);
  }

  render() {
    const s = this.store;
    const actors = s.actors.length ? s.actors : s.actorsBoot;
    const names = actors.map((a) => a.name);
    for (const [name, card] of this.cards) {
      if (!names.includes(name)) {
        card.root.remove();
        this.cards.delete(name);
      }
    }
    actors.forEach((a, i) => {
      let card = this.cards.get(a.name);
      if (!card) {
        card = this.makeCard(a, i);
        this.cards.set(a.name, card);
      }
      this.list.append(card.root); // keeps order
      this.fillCard(card, a, i);
    });
  }

  makeCard(a, i) {
    const btn = h("button", {
      class: "btn small step-btn",
      type: "button",
      title: `Step ${a.name} one micro-step (key ${i + 1})`,
      onclick: () => this.cb.step(a.name),
    });
    const title = h("span", { class: "actor-title" });
    const state = h("span", { class: "actor-state" });
    const body = h("div", { class: "actor-body" });
    const root = h("article", { class: "actor", "aria-label": a.name }, h("header", null, title, state, btn), body);
    return { root, btn, title, state, body };
  }

  fillCard(card, a, i) {
    const s = this.store;
    const slot = actorSlot(s, a.name);
    card.title.innerHTML = `<span class="key">${i + 1}</span> <span class="actor-tag a-${slot}">${esc(a.name)}</span> <span class="muted">${esc(a.kind)}</span>`;
    const st = a.done ? "done" : a.blocked ? "blocked" : a.op ? "ready" : "idle";
    card.state.textContent = a.done ? "finished" : a.blocked ? "blocked on mmu_lock" : "";
    card.state.className = `actor-state st-${st}`;
    card.root.className = `actor st-${st}${a.holds_lock ? " holds" : ""}`;
    card.btn.textContent = `step ${i + 1}`;
    card.btn.disabled = !s.canControl || s.conn.status !== "live" || a.done || a.blocked || s.rewound || a.ops === undefined;
    if (a.ops === undefined) {
      card.body.innerHTML = '<p class="muted">no state yet</p>';
      return;
    }
    const ops = a.ops
      .map((o, k) => {
        const cls = k < a.op_index || (a.done && k === a.op_index) ? "op-done" : k === a.op_index ? "op-cur" : "op-next";
        return `<li class="${cls}">${esc(o)}</li>`;
      })
      .join("");
    const regs = Object.entries(a.regs || {})
      .map(([k, v]) => `<span class="reg-kv" title="${esc(k)} = ${esc(v)}"><i>${esc(k)}</i>${esc(v)}</span>`)
      .join("");
    const tlb = (a.tlb || [])
      .map((t) => `<li><code>${esc(t.ipa)}</code> <span class="muted">${sizeShort(t.size)}</span> → <code>${esc(t.desc)}</code> <span class="muted">@${esc(t.addr)}</span></li>`)
      .join("");
    card.body.innerHTML =
      `<ol class="ops">${ops || '<li class="muted">no operations</li>'}</ol>` +
      (a.at ? `<div class="at" title="pc ${a.pc}"><span class="muted">at</span> ${esc(a.at)}</div>` : "") +
      `<div class="regs">${regs}</div>` +
      `<div class="small"><i>monitor</i> ${a.monitor ? `<code class="mon">${esc(a.monitor)}</code>` : '<span class="muted">open</span>'}` +
      ` · <i>mmu_lock</i> ${a.holds_lock ? `<b class="holds-tag">holds (${esc(a.holds_lock)})</b>` : '<span class="muted">no</span>'}` +
      (a.kind === "vcpu" ? ` · <i>TLB</i> ${(a.tlb || []).length ? "" : '<span class="muted">empty</span>'}` : "") +
      `</div>` +
      (tlb ? `<ul class="tlb">${tlb}</ul>` : "");
  }
}

function sizeShort(n) {
  if (typeof n === "string") return n;
  if (n >= 2 ** 30) return n / 2 ** 30 + "G";
  if (n >= 2 ** 20) return n / 2 ** 20 + "M";
  return n / 1024 + "K";
}

export class ViolationsPanel {
  /** @param cb open(violation) -> reveal its event/descriptor */
  constructor(store, cb) {
    this.store = store;
    this.cb = cb;
    this.el = h("section", { class: "panel violations", "aria-label": "Violations" });
    this.el.addEventListener("click", (ev) => {
      const b = ev.target.closest("button[data-i]");
      if (b) this.cb.open(this.store.violations[Number(b.dataset.i)]);
    });
  }

  render() {
    const v = this.store.violations;
    this.el.hidden = !v.length;
    if (!v.length) return;
    this.el.innerHTML =
      `<h2>Violations <span class="badge bad">${v.length}</span></h2><ul>` +
      v
        .map(
          (x, i) =>
            `<li><button type="button" class="link" data-i="${i}" title="show the event and the descriptor">` +
            `<b>${esc(x.check)}</b> at #${x.seq} by ${esc(x.actor)} · ipa ${esc(x.ipa)} · lost <b class="lostbits">${esc((x.bits || []).join(", ") || "—")}</b></button></li>`,
        )
        .join("") +
      `</ul>`;
  }
}
