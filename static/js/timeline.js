// Timeline: one swimlane per actor, the last N events as small labeled boxes in seq
// order, filterable by actor and kind; lost updates and failed exclusives are marked.
import { changedFields } from "./decode.js";
import { failText } from "./explain.js";
import { esc, h } from "./dom.js";
import { eventBad, eventText, FAIL_KINDS, KIND_SHORT, KINDS, WRITE_KINDS } from "./fmt.js";
import { ICONS } from "./icons.js";
import { momentName, momentUrl, revertedHtml } from "./moments.js";
import { actorSlot } from "./tree.js";

const COL_W = 54; // up to 3-digit seq numbers; each digit more widens the columns
const DIGIT_W = 8;

/** The column width that fits a chip's label and its seq number. */
export function columnWidth(maxSeq) {
  return COL_W + Math.max(0, String(maxSeq).length - 3) * DIGIT_W;
}
const LANE_H = 24;
const LABEL_W = 84; // .tl-labels (sticky, left of the lanes)
export const TIMELINE_MAX = 400;

/** innerHTML, when it changes (the same markup again is parsed and laid out again). */
function setHtml(el, html) {
  if (el._html !== html) el.innerHTML = el._html = html;
}

const KIND_CLASS = (k) => {
  if (FAIL_KINDS.has(k)) return "k-fail";
  if (WRITE_KINDS.has(k)) return k === "hw-update" ? "k-hw" : "k-write";
  if (k === "lock" || k === "unlock") return "k-lock";
  if (k === "fault") return "k-fault";
  if (k === "tlbi" || k === "tlb-hit") return "k-tlb";
  return "k-read";
};

export class Timeline {
  /** @param cb select(event) */
  constructor(store, cb) {
    this.store = store;
    this.cb = cb;
    this.hiddenActors = new Set();
    this.hiddenKinds = new Set();
    this.onlyMarked = false;
    this.colW = COL_W;
    this.shown = [];
    this.el = h("section", { class: "panel timeline", "aria-label": "Timeline" });
    this.filters = h("div", { class: "tl-filters", role: "toolbar", "aria-label": "Timeline filters" });
    this.info = h("span", { class: "muted small tl-info" });
    this.scroller = h("div", {
      class: "tl-scroll",
      tabindex: "0",
      "aria-label": "Events by actor; Left/Right select the previous/next event",
    });
    this.lanes = h("div", { class: "tl-lanes" });
    this.labels = h("div", { class: "tl-labels" });
    this.scroller.append(this.labels, this.lanes);
    this.detail = h("div", { class: "tl-detail", "aria-live": "polite" });
    this.el.append(h("div", { class: "tl-head" }, h("h2", null, "Timeline"), this.filters, this.info), this.scroller, this.detail);
    this.lanes.addEventListener("click", (ev) => {
      const b = ev.target.closest(".ev");
      if (b) this.selectSeq(Number(b.dataset.seq), true);
    });
    this.scroller.addEventListener("keydown", (ev) => this.onKey(ev));
    // Only the chips in and around view exist (a full-speed run replaces all 400 chips
    // many times a second). The scroller's geometry is kept from its own events: reading
    // it while rendering would force a layout of everything the other panels just changed.
    this.viewW = 0;
    this.scrollX = 0;
    this.follow = true; // scrolled to the end: stays there as events come
    this.setX = -1; // the scrollLeft last set
    this.window = [0, 0]; // the columns rendered
    this.scroller.addEventListener("scroll", () => {
      const sc = this.scroller;
      this.scrollX = sc.scrollLeft;
      this.follow = sc.scrollLeft + sc.clientWidth >= sc.scrollWidth - this.colW * 2;
      const [from, to] = this.columns(this.scrollX);
      if (from < this.window[0] || to > this.window[1]) this.renderLanes();
    }, { passive: true });
    new ResizeObserver(() => {
      this.viewW = this.scroller.clientWidth;
      this.renderLanes();
    }).observe(this.scroller);
    this.detail.addEventListener("click", (ev) => {
      const copy = ev.target.closest("button[data-copy]");
      if (copy) this.cb.copy?.(copy.dataset.copy);
      const a = ev.target.closest("a[data-moment]");
      if (a && !ev.ctrlKey && !ev.metaKey) {
        ev.preventDefault();
        this.cb.goto?.(a.dataset.moment);
      }
    });
    this.filters.addEventListener("click", (ev) => this.onFilter(ev));
    this.builtFor = "";
  }

  buildFilters() {
    const names = this.store.actorNames();
    const key = names.join(",");
    if (key === this.builtFor) return;
    this.builtFor = key;
    const chip = (group, value, label, cls = "") =>
      `<button type="button" class="chip ${cls}" data-group="${group}" data-value="${esc(value)}" aria-pressed="true">${label}</button>`;
    this.filters.innerHTML =
      `<span class="fl-group" role="group" aria-label="actors">` +
      names.map((n) => chip("actor", n, `<span class="actor-tag a-${actorSlot(this.store, n)}">${esc(n)}</span>`)).join("") +
      `</span><span class="fl-group" role="group" aria-label="kinds">` +
      KINDS.map((k) => chip("kind", k, esc(KIND_SHORT[k]), KIND_CLASS(k))).join("") +
      `</span>` +
      `<button type="button" class="chip marked-only" data-group="marked" data-value="1" aria-pressed="false" title="only events flagged lost-update / break-before-make and failed exclusives">marked only</button>`;
    this.syncChips();
  }

  syncChips() {
    for (const b of this.filters.querySelectorAll(".chip")) {
      const g = b.dataset.group;
      const v = b.dataset.value;
      const on = g === "actor" ? !this.hiddenActors.has(v) : g === "kind" ? !this.hiddenKinds.has(v) : this.onlyMarked;
      b.setAttribute("aria-pressed", String(on));
    }
  }

  onFilter(ev) {
    const b = ev.target.closest(".chip");
    if (!b) return;
    const g = b.dataset.group;
    const v = b.dataset.value;
    const set = g === "actor" ? this.hiddenActors : g === "kind" ? this.hiddenKinds : null;
    if (set) {
      if (ev.shiftKey || ev.altKey) {
        // solo: show only this one
        const all = g === "actor" ? this.store.actorNames() : KINDS;
        set.clear();
        for (const x of all) if (x !== v) set.add(x);
      } else if (set.has(v)) set.delete(v);
      else set.add(v);
    } else this.onlyMarked = !this.onlyMarked;
    this.syncChips();
    this.render();
  }

  visible(e) {
    if (this.hiddenActors.has(e.actor) || this.hiddenKinds.has(e.kind)) return false;
    if (this.onlyMarked) return eventBad(e) || FAIL_KINDS.has(e.kind);
    return true;
  }

  /** The columns in view at scroll position x, and a view's width either side. */
  columns(x) {
    const w = this.viewW || 2000;
    const from = Math.max(0, Math.floor((x - LABEL_W - w) / this.colW));
    return [from, Math.min(this.shown.length, Math.ceil((x + 2 * w) / this.colW))];
  }

  render() {
    this.buildFilters();
    const s = this.store;
    const names = s.actorNames();
    const all = s.events;
    const shown = [];
    for (let i = all.length - 1; i >= 0 && shown.length < TIMELINE_MAX; i--) if (this.visible(all[i])) shown.push(all[i]);
    shown.reverse();
    this.shown = shown;
    const colW = (this.colW = columnWidth(shown.length ? shown[shown.length - 1].seq : 0));
    this.lanes.style.setProperty("--ev-w", `${colW - 4}px`);
    setHtml(this.labels, names
      .map((n) => {
        const a = s.actors.find((x) => x.name === n);
        return `<div class="tl-label" style="height:${LANE_H}px"><span class="actor-tag a-${actorSlot(s, n)}">${esc(n)}</span>${a && a.holds_lock ? ` <span class="lock-mini" title="holds kvm-&gt;mmu_lock">${ICONS.lock}</span>` : ""}</div>`;
      })
      .join(""));
    this.lanes.style.width = Math.max(shown.length * colW + 8, 100) + "px";
    this.lanes.style.height = names.length * LANE_H + "px";
    this.labels.style.height = names.length * LANE_H + "px";
    if (this.follow) this.scrollX = Math.max(0, LABEL_W + shown.length * colW + 8 - (this.viewW || 0));
    this.renderLanes();
    const total = all.length;
    const marked = all.filter((e) => eventBad(e)).length;
    const fails = all.filter((e) => FAIL_KINDS.has(e.kind)).length;
    setHtml(this.info,
      `${shown.length} shown of ${total}${total >= TIMELINE_MAX ? ` (last ${TIMELINE_MAX} rendered)` : ""}` +
      (marked ? ` · <b class="bad-text">${marked} lost-update/BBM</b>` : "") +
      (fails ? ` · <b class="fail-text">${fails} failed exclusive/CAS/hw</b>` : ""));
    // (a write forces a layout: only when the end moved, not once 400 chips fill it)
    if (this.follow && this.viewW && this.scrollX !== this.setX) this.scroller.scrollLeft = this.setX = this.scrollX;
    this.renderDetail();
  }

  /** The chips of the columns around the view. */
  renderLanes() {
    const s = this.store;
    const names = s.actorNames();
    const shown = this.shown;
    const colW = this.colW;
    const [from, to] = (this.window = this.columns(this.scrollX));
    const lane = new Map(names.map((n, i) => [n, i]));
    const parts = [];
    for (let i = 0; i < names.length; i++) parts.push(`<div class="tl-lane" style="top:${i * LANE_H}px;height:${LANE_H}px"></div>`);
    let lastOp = from > 0 ? shown[from - 1].seq : null;
    for (let x = from; x < to; x++) {
      const e = shown[x];
      const y = (lane.get(e.actor) ?? 0) * LANE_H;
      const bad = eventBad(e);
      const fail = FAIL_KINDS.has(e.kind);
      const sel = s.selectedSeq === e.seq ? " sel" : "";
      const done = e.flags && e.flags.includes("op-done") ? " done" : "";
      const later = e.later ? " later" : ""; // after this viewer's moment (greyed)
      const label = KIND_SHORT[e.kind] || e.kind;
      const lvl = e.kind === "walk" && e.level !== undefined ? `<sub>${e.level}</sub>` : "";
      const opKey = `${e.actor}:${e.op_index}`;
      if (lastOp !== null && e.seq !== lastOp + 1) parts.push(`<div class="tl-gap" style="left:${x * colW - 2}px" title="events hidden by the filter"></div>`);
      lastOp = e.seq;
      parts.push(
        `<button type="button" tabindex="-1" class="ev ${KIND_CLASS(e.kind)}${bad ? " bad" : ""}${fail ? " fail" : ""}${sel}${done}${later}" data-seq="${e.seq}" data-op="${esc(opKey)}" ` +
          `style="left:${x * colW + 2}px;top:${y + 3}px" title="${esc(eventText(e))}">` +
          `${bad ? '<span class="mark">!</span>' : ""}${esc(label)}${lvl}<span class="seq">${e.seq}</span></button>`,
      );
    }
    this.lanes.innerHTML = parts.join("");
  }

  renderDetail() {
    const s = this.store;
    const e = s.selectedSeq === null ? null : s.events.find((x) => x.seq === s.selectedSeq);
    if (!e) {
      const last = s.events[s.events.length - 1];
      this.detail.innerHTML = last
        ? `<span class="muted">last:</span> ${esc(eventText(last))}`
        : '<span class="muted">no events yet — step an actor (keys 1–9) or run (r)</span>';
      return;
    }
    let diff = "";
    const failed = failText(e, s.events);
    if (failed) diff = ` · <b>${esc(failed)}</b>`;
    else if (e.old !== undefined && e.new !== undefined && e.old !== e.new) {
      const f = changedFields(e.old, e.new);
      diff = ` · changed <b>${esc(f.join(", "))}</b>`;
    }
    const at = e.moment
      ? ` · <a href="${esc(momentUrl(this.cb.boot || {}, e.moment))}" data-moment="${esc(e.moment)}" title="go to the moment right after this event">${esc(momentName(e.moment))}</a>` +
        ` <button type="button" class="btn small copy-ev" data-copy="${esc(e.moment)}" title="Copy a link to the moment right after this event">copy link</button>`
      : "";
    this.detail.innerHTML = `<b>selected</b> ${esc(eventText(e))}${diff}${revertedHtml(this.cb.boot || {}, e)}${at}`;
  }

  selectSeq(seq, notify) {
    this.store.selectedSeq = seq;
    this.render();
    const i = this.shown.findIndex((e) => e.seq === seq);
    if (i >= 0) {
      const x = i * this.colW;
      const sc = this.scroller;
      if (x < sc.scrollLeft || x + this.colW > sc.scrollLeft + sc.clientWidth - LABEL_W) sc.scrollLeft = x - sc.clientWidth / 2;
    }
    const e = this.store.events.find((x) => x.seq === seq);
    if (e && notify) this.cb.select(e);
  }

  onKey(ev) {
    if (ev.altKey || ev.ctrlKey || ev.metaKey) return;
    if (ev.key !== "ArrowLeft" && ev.key !== "ArrowRight" && ev.key !== "Enter") return;
    ev.preventDefault();
    ev.stopPropagation();
    const shown = this.shown;
    if (!shown.length) return;
    let i = shown.findIndex((e) => e.seq === this.store.selectedSeq);
    if (ev.key === "Enter") {
      if (i >= 0) this.cb.select(shown[i]);
      return;
    }
    if (i < 0) i = ev.key === "ArrowLeft" ? shown.length : -1;
    i += ev.key === "ArrowLeft" ? -1 : 1;
    i = Math.max(0, Math.min(shown.length - 1, i));
    this.selectSeq(shown[i].seq, true);
  }
}
