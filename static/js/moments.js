// Moments (docs/protocol.md, "Moments"): where this viewer is in the session's history,
// links to a moment, who else is here (presence, follow mode), and a descriptor's
// history. Time travel moves only this viewer's cursor; the head is shared.
import { changedFields } from "./decode.js";
import { esc, h } from "./dom.js";
import { num as fmtNum } from "./fmt.js";

const num = (n) => fmtNum(Number(n));

/** The page URL of a moment: short and permanent (a view link, the moment, a prefix of
 * its state hash, and optionally a focused descriptor). */
export function momentUrl(boot, moment, hash = null, addr = null) {
  let url = `${location.origin}/s/${boot.share || boot.token}/?at=${encodeURIComponent(moment)}`;
  if (hash) url += `&h=${hash.slice(0, 12)}`;
  if (addr) url += `&d=${addr}`;
  return url;
}

/** "step 812" on the first branch, "branch 3, step 57" on another. */
export function momentName(moment) {
  const m = /^b(\d+)-(\d+)$/.exec(String(moment ?? ""));
  return m ? `branch ${m[1]}, step ${num(m[2])}` : `step ${num(moment ?? 0)}`;
}

export async function copyText(text) {
  try {
    await navigator.clipboard.writeText(text);
    return true;
  } catch {
    return false;
  }
}

/** Always says where this viewer is: "step 812 of 3,140 · live at 3,140", with "back to
 * live", "fork here" and "copy link to this moment". */
export class MomentBar {
  constructor(store, actions) {
    this.store = store;
    this.actions = actions;
    this.text = h("span", { class: "where", "aria-live": "polite" });
    this.bLive = h("button", { type: "button", class: "btn small attention", title: "Follow the session's head again (End)", onclick: () => actions.live() }, "back to live");
    this.bFork = h("button", { type: "button", class: "btn small", title: "A new session from this moment (k)", onclick: () => actions.forkHere() }, "fork here");
    this.bLink = h("button", { type: "button", class: "btn small", title: "Copy a link that opens exactly here (hash-checked)", onclick: () => actions.copyMomentLink() }, "copy link to this moment");
    this.el = h("div", { class: "moment-bar", role: "status" }, this.text, this.bLive, this.bFork, this.bLink);
  }

  render() {
    const s = this.store;
    const c = s.cursor;
    this.el.hidden = !s.haveSnapshot || !c;
    if (this.el.hidden) return;
    const head = s.head || c;
    const past = s.past;
    this.el.classList.toggle("past", past);
    const onBranch = c.branch ? `branch ${c.branch}, ` : "";
    let html;
    if (!past) html = `<b>live</b> · ${onBranch}step <b>${num(c.position)}</b>${s.running ? " · running" : ""}`;
    else {
      html = `${onBranch}step <b>${num(c.position)}</b> of ${num(c.end)}`;
      html += head.branch === c.branch ? ` · live at ${num(head.position)}` : ` · the head is at ${esc(momentName(head.moment))}`;
      if (head.running) html += " (running)";
    }
    html += ` <span class="muted small">moment ${esc(c.moment)}</span>`;
    this.text.innerHTML = html;
    this.bLive.hidden = !past;
  }
}

/** Who is here: name, role, the moment each one looks at; follow one of them. */
export class PresencePanel {
  constructor(store, actions) {
    this.store = store;
    this.actions = actions;
    this.name = h("input", { type: "text", maxlength: "60", placeholder: "your name", "aria-label": "Your name (shown to the others)", class: "name-in" });
    this.name.value = localStorage.getItem("ptviz.name") || "";
    this.name.addEventListener("change", () => {
      const v = this.name.value.trim();
      localStorage.setItem("ptviz.name", v);
      if (v) actions.setName(v);
    });
    this.list = h("ul", { class: "presence-list" });
    this.list.addEventListener("click", (ev) => {
      const b = ev.target.closest("button[data-follow]");
      if (b) actions.follow(b.dataset.follow || null);
      const m = ev.target.closest("a[data-moment]");
      if (m) {
        ev.preventDefault();
        actions.seekMoment(m.dataset.moment);
      }
    });
    this.el = h("section", { class: "panel presence", "aria-label": "Who is here" },
      h("div", { class: "panel-head" }, h("h2", null, "Here now"), this.name),
      this.list);
  }

  render() {
    const s = this.store;
    const me = s.presence.find((p) => p.id === s.you);
    const rows = s.presence.map((p) => {
      const you = p.id === s.you;
      const where = p.live ? "live" : `<a href="#" data-moment="${esc(p.moment)}" title="go there">${esc(momentName(p.moment))}</a>`;
      let follow = "";
      if (!you) {
        follow = me && me.follows === p.id
          ? `<button type="button" class="btn small attention" data-follow="">stop following</button>`
          : `<button type="button" class="btn small" data-follow="${esc(p.id)}" title="see what ${esc(p.name)} sees: their moment and selection">follow</button>`;
      }
      const leader = p.follows ? s.presence.find((x) => x.id === p.follows) : null;
      return `<li class="${you ? "you" : ""}"><span class="who">${esc(p.name)}${you ? " (you)" : ""}</span> ` +
        `<span class="p-role small">${esc(p.role)}</span>${p.label ? ` <span class="muted small">${esc(p.label)}</span>` : ""} ` +
        `<span class="at small">${where}</span>${leader ? ` <span class="muted small">following ${esc(leader.name)}</span>` : ""} ${follow}</li>`;
    });
    this.list.innerHTML = rows.join("") || '<li class="muted">connecting…</li>';
  }
}

/** The selected descriptor: a link to it at this moment, and every write to it up to
 * this moment (by whom, at which step, old -> new, each a link). */
export class DescriptorPanel {
  constructor(store, actions, boot) {
    this.store = store;
    this.actions = actions;
    this.boot = boot;
    this.data = null; // the last "history" message
    this.title = h("h2", null, "Descriptor");
    this.body = h("div", { class: "history-body" });
    this.body.addEventListener("click", (ev) => {
      const a = ev.target.closest("a[data-moment]");
      if (a && !ev.ctrlKey && !ev.metaKey) {
        ev.preventDefault();
        actions.seekMoment(a.dataset.moment);
      }
    });
    this.bHist = h("button", { type: "button", class: "btn small", onclick: () => actions.history(this.store.selectedAddr) }, "history");
    this.bLink = h("button", { type: "button", class: "btn small", title: "Copy a link to this moment with this descriptor selected", onclick: () => actions.copyMomentLink(this.store.selectedAddr) }, "copy link");
    this.el = h("section", { class: "panel descriptor", "aria-label": "Selected descriptor" },
      h("div", { class: "panel-head" }, this.title, this.bHist, this.bLink), this.body);
  }

  show(msg) {
    this.data = msg;
    this.render();
  }

  render() {
    const s = this.store;
    const addr = s.selectedAddr && s.selectedAddr.startsWith("0x") ? s.selectedAddr : null;
    this.el.hidden = !addr;
    if (!addr) return;
    this.title.textContent = `Descriptor ${addr}`;
    const d = this.data;
    if (!d || d.addr !== addr) {
      this.body.innerHTML = '<p class="muted small">"history" lists every write to it up to this moment.</p>';
      return;
    }
    const link = (m, text) => `<a href="${esc(momentUrl(this.boot, m, null, addr))}" data-moment="${esc(m)}">${esc(text)}</a>`;
    const rows = d.writes.map((w) => {
      const f = w.old !== w.new ? changedFields(w.old, w.new) : [];
      const lost = w.flags && w.flags.includes("lost-update");
      let line = `${link(w.moment, `${w.kind} #${w.seq}`)} by ${esc(w.actor)}${w.op ? ` (${esc(w.op)})` : ""}: ` +
        `<code>${esc(w.old)}</code> → <code>${esc(w.new)}</code>${f.length ? ` <span class="muted">${esc(f.join(", "))}</span>` : ""}`;
      if (w.reverted) line += ` <span class="bad-text">reverted ${link(w.reverted.moment, `${w.reverted.kind} #${w.reverted.seq}`)} by ${esc(w.reverted.actor)}: ${esc((w.reverted.bits || []).join(", "))}</span>`;
      return `<li class="${lost ? "lost" : ""}">${line}</li>`;
    });
    this.body.innerHTML =
      `<p class="small muted">${d.writes.length} write${d.writes.length === 1 ? "" : "s"} up to ${esc(momentName(d.moment))}${d.truncated ? ` (the last ${d.writes.length})` : ""}</p>` +
      `<ol class="history">${rows.join("")}</ol>`;
  }
}

/** "store #8 by host0 reverted hw-update #7 by vcpu0: AF" for a lost update (HTML). */
export function revertedHtml(boot, e) {
  if (!e.reverted) return "";
  const r = e.reverted;
  const a = (m, t) => `<a href="${esc(momentUrl(boot, m))}" data-moment="${esc(m)}">${esc(t)}</a>`;
  return ` · ${a(e.moment, `${e.kind} #${e.seq}`)} by ${esc(e.actor)} <b class="bad-text">reverted</b> ${a(r.moment, `${r.kind} #${r.seq}`)} by ${esc(r.actor)}: ${esc((r.bits || []).join(", "))}`;
}
