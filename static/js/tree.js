// The stage-2 tree: VTTBR_EL2 -> start level (concatenated tables) -> L2 -> L3, expanded
// lazily (subscribe/unsubscribe per table) and virtualized: the open tables are flattened
// into one list of fixed-height lines and only the lines in view exist in the DOM.
import { big, LOST_BIT_FIELD } from "./decode.js";
import { esc, h } from "./dom.js";
import { failText } from "./explain.js";
import { hexHtml, ipaDigits, num, sizeName } from "./fmt.js";

export const ROW_H = 20;
const HEAD_H = 22;
const OVERSCAN = 12;
const FLASH_MS = 1600;
const ENTRIES = 512;

export class Tree {
  /**
   * @param {Store} store
   * @param {object} cb  toggle(tablePa, open), pick(row, table), select(addr)
   */
  constructor(store, cb) {
    this.store = store;
    this.cb = cb;
    this.items = [];
    this.index = new Map(); // item key -> position in items
    this.live = new Map(); // item key -> {el, sig}
    this.reveal = null; // {ipa: BigInt, addr, level} being opened
    this.el = h("div", {
      class: "tree-vp",
      tabindex: "0",
      role: "tree",
      "aria-label": "Stage-2 translation tables",
    });
    this.head = h("div", { class: "tr tree-head", "aria-hidden": "true" });
    this.space = h("div", { class: "tree-space" });
    this.el.append(this.head, this.space);
    // The viewport's geometry is kept from its own events: reading it while painting
    // forces a layout of everything the other panels just changed.
    this.scrollY = 0;
    this.viewH = 0;
    this.el.addEventListener("scroll", () => {
      this.scrollY = this.el.scrollTop;
      this.paint();
    });
    this.el.addEventListener("click", (ev) => this.onClick(ev));
    this.el.addEventListener("dblclick", (ev) => this.onDblClick(ev));
    this.el.addEventListener("keydown", (ev) => this.onKey(ev));
    new ResizeObserver(() => {
      this.viewH = this.el.clientHeight;
      this.paint();
    }).observe(this.el);
    this.head.innerHTML = [
      '<span class="c-tog"></span>',
      '<span class="c-lvl">lvl</span>',
      '<span class="c-idx">idx</span>',
      '<span class="c-ipa">IPA</span>',
      '<span class="c-addr">desc @PA</span>',
      '<span class="c-raw">raw descriptor</span>',
      '<span class="f-type">type</span>',
      '<span class="f-oa">OA / next table</span>',
      '<span class="f-s2ap" title="S2AP[1:0] (bits 7:6)">S2AP</span>',
      '<span class="f-af" title="Access Flag (bit 10)">AF</span>',
      '<span class="f-dbm" title="Dirty Bit Modifier (bit 51)">DBM</span>',
      '<span class="f-sh" title="Shareability (bits 9:8)">SH</span>',
      '<span class="f-memattr" title="MemAttr[3:0] (bits 5:2)">Attr</span>',
      '<span class="f-xn" title="XN[1:0] (bits 54:53)">XN</span>',
      '<span class="f-contiguous" title="Contiguous (bit 52)">C</span>',
      '<span class="c-who">last write</span>',
    ].join("");
  }

  // --- model -------------------------------------------------------------------------
  /** The items again from the store; `force`: refill every line in view, not only those
   * whose signature changed. */
  rebuild(force = false) {
    const s = this.store;
    const items = [];
    const m = s.machine;
    if (m) {
      items.push({ t: "root", key: "root", depth: 0 });
      if (s.rootOpen) this.addTable(items, m.root.toLowerCase(), m.start_level, 1, m.start_tables || 1);
    }
    this.items = items;
    this.index = new Map(items.map((it, i) => [it.key, i]));
    this.space.style.height = items.length * ROW_H + "px";
    this.tryReveal();
    this.paintSoon(force);
  }

  addTable(items, pa, level, depth, concat = 1) {
    const view = this.store.tableOf(pa);
    if (!view) {
      items.push({ t: "loading", key: "load:" + pa, pa, level, depth });
      return;
    }
    const n = view.entries;
    let next = 0;
    const gap = (from, to) => {
      // split at concatenated-table boundaries
      while (from < to) {
        const bound = concat > 1 ? (Math.floor(from / ENTRIES) + 1) * ENTRIES : to;
        if (concat > 1 && from % ENTRIES === 0) items.push(this.concatItem(pa, from, depth, view));
        const end = Math.min(to, bound);
        items.push({ t: "gap", key: `gap:${pa}:${from}`, from, to: end - 1, depth, level });
        from = end;
      }
    };
    for (const row of view.rows) {
      if (row.index > next) gap(next, row.index);
      if (concat > 1 && row.index % ENTRIES === 0) items.push(this.concatItem(pa, row.index, depth, view));
      items.push({ t: "row", key: row.addr, row, table: pa, level: view.level, size: view.size, depth });
      const d = row.decoded;
      if (d.type === "table" && this.store.expanded.has(d.next_table.toLowerCase())) {
        this.addTable(items, d.next_table.toLowerCase(), view.level + 1, depth + 1);
      }
      next = row.index + 1;
    }
    if (next < n) gap(next, n);
  }

  concatItem(pa, index, depth, view) {
    const k = index / ENTRIES;
    const tpa = "0x" + (big(pa) + BigInt(k * 4096)).toString(16);
    return { t: "concat", key: `cat:${pa}:${k}`, k, pa: tpa, depth, level: view.level, index };
  }

  // --- painting ----------------------------------------------------------------------
  /** Paint once the current task's work is done: revealing a descriptor rebuilds the tree
   * once per level it opens, and each paint's reading of the viewport forces a layout. */
  paintSoon(force = false) {
    this.forceNext = this.forceNext || force;
    if (this.paintQueued) return;
    this.paintQueued = true;
    queueMicrotask(() => {
      if (this.paintQueued) this.paint();
    });
  }

  paint(force = false) {
    force = force || this.forceNext;
    this.forceNext = this.paintQueued = false;
    const top = Math.max(0, this.scrollY - HEAD_H);
    const first = Math.max(0, Math.floor(top / ROW_H) - OVERSCAN);
    const last = Math.min(this.items.length, Math.ceil((top + this.viewH) / ROW_H) + OVERSCAN);
    const want = new Set();
    const now = performance.now();
    for (let i = first; i < last; i++) {
      const it = this.items[i];
      want.add(it.key);
      const sig = this.sig(it, now);
      let slot = this.live.get(it.key);
      if (!slot) {
        slot = { el: document.createElement("div"), sig: null, pos: -1 };
        slot.el.dataset.key = it.key;
        this.live.set(it.key, slot);
        this.space.append(slot.el);
      }
      if (slot.pos !== i) {
        slot.el.style.top = i * ROW_H + "px";
        slot.pos = i;
      }
      if (force || slot.sig !== sig) {
        this.fill(slot.el, it, now);
        slot.sig = sig;
      }
    }
    for (const [key, slot] of this.live) {
      if (!want.has(key)) {
        slot.el.remove();
        this.live.delete(key);
      }
    }
  }

  sig(it, now) {
    const s = this.store;
    const sel = this.selectedKey() === it.key ? "S" : "";
    if (it.t === "root") {
      const m = s.machine;
      return `root|${s.rootOpen}|${JSON.stringify(m.counts)}|${sel}`;
    }
    if (it.t === "gap") return `${it.key}|${it.to}${sel}`;
    if (it.t !== "row") return it.key + sel;
    const r = it.row;
    const ch = s.lastChange.get(r.addr);
    const fl = s.lastFail.get(r.addr);
    const open = r.decoded.type === "table" && s.expanded.has(r.decoded.next_table.toLowerCase());
    const lost = s.violations.length && isLeaf(r) ? [...(s.lostBitsAt(r.ipa) || [])].join() : "";
    return `${r.decoded.raw}|${r.counts ? JSON.stringify(r.counts) : ""}|${open}|${sel}|${ch ? ch.seq : ""}|${fl ? fl.seq : ""}|${lost}`;
  }

  selectedKey() {
    return this.store.selectedAddr ?? null;
  }

  fill(el, it, now) {
    const s = this.store;
    const sel = this.selectedKey() === it.key;
    el.className = `tr ${it.t}${sel ? " sel" : ""}`;
    el.setAttribute("role", "treeitem");
    el.id = "tr-" + it.key.replace(/[^a-z0-9]/gi, "_");
    el.setAttribute("aria-level", String(it.depth + 1));
    const pad = `style="padding-left:${it.depth * 10}px"`;
    if (it.t === "root") {
      const m = s.machine;
      el.setAttribute("aria-expanded", String(s.rootOpen));
      const concat = m.start_tables > 1 ? `L${m.start_level} ×${m.start_tables} concatenated, ${m.start_entries} entries` : `L${m.start_level}, ${m.start_entries} entries`;
      el.innerHTML =
        `<span class="c-tog" ${pad}>${s.rootOpen ? "▾" : "▸"}</span>` +
        `<span class="root-label"><b>VTTBR_EL2</b> ${esc(m.vttbr_el2)} → <b>${esc(concat)}</b> @${esc(m.root)}` +
        ` <span class="counts">${countsHtml(m.counts)}</span></span>`;
      return;
    }
    el.removeAttribute("aria-expanded");
    if (it.t === "loading") {
      el.innerHTML = `<span class="c-tog" ${pad}></span><span class="c-lvl">L${it.level}</span><span class="span-from-3 muted">loading table ${esc(it.pa)}…</span>`;
      return;
    }
    if (it.t === "concat") {
      el.innerHTML = `<span class="c-tog" ${pad}></span><span class="span-from-2 concat-head">concatenated table ${it.k} @${esc(it.pa)} — entries ${it.index}–${it.index + ENTRIES - 1}</span>`;
      return;
    }
    if (it.t === "gap") {
      const n = it.to - it.from + 1;
      el.innerHTML = `<span class="c-tog" ${pad}></span><span class="c-lvl muted">L${it.level}</span><span class="span-from-3 muted">${n === 1 ? `entry ${it.from}` : `entries ${it.from}–${it.to}`}: ${n} invalid (0x0)</span>`;
      return;
    }
    // a descriptor
    const r = it.row;
    const d = r.decoded;
    const digits = ipaDigits(s.machine?.ipa_bits);
    const ch = s.lastChange.get(r.addr);
    const lost = isLeaf(r) ? s.lostBitsAt(r.ipa) : null;
    const lostFields = new Set(lost ? [...lost].map((b) => LOST_BIT_FIELD[b]) : []);
    const age = ch ? now - ch.time : Infinity;
    const cls = (f) => {
      let c = "f-" + f;
      if (ch && ch.fields.includes(f === "next" ? "oa" : f)) {
        c += " chg";
        if (age < FLASH_MS) c += " flash";
      }
      if (lostFields.has(f)) c += " lost";
      return c;
    };
    const delay = age < FLASH_MS ? ` style="animation-delay:-${Math.round(age)}ms"` : "";
    const cell = (f, v, title = "") => `<span class="${cls(f)}"${delay}${title ? ` title="${esc(title)}"` : ""}>${v}</span>`;
    const isTable = d.type === "table";
    const open = isTable && s.expanded.has(d.next_table.toLowerCase());
    if (isTable) el.setAttribute("aria-expanded", String(open));
    let html =
      `<span class="c-tog" ${pad}>${isTable ? (open ? "▾" : "▸") : ""}</span>` +
      `<span class="c-lvl">L${d.level}</span>` +
      `<span class="c-idx">${r.index}</span>` +
      `<span class="c-ipa" title="IPA range ${esc(r.ipa)} + ${sizeName(it.size)}">${hexHtml(r.ipa, digits)}</span>` +
      `<span class="c-addr">${hexHtml(r.addr, 10)}</span>` +
      `<span class="c-raw${ch ? " chg" : ""}${ch && age < FLASH_MS ? " flash" : ""}"${delay}>${hexHtml(d.raw, 16)}</span>` +
      cell("type", typeLabel(d), d.type === "invalid" && big(d.raw) === 1n << 10n ? "KVM_INVALID_PTE_LOCKED: break-before-make in progress" : "");
    if (isTable) {
      html += cell("oa", "→ " + esc(d.next_table));
      html += `<span class="span-from-9"><span class="counts">${r.counts ? countsHtml(r.counts) : ""}</span> ${whoHtml(s, ch, null, s.lastFail.get(r.addr))}</span>`;
      el.innerHTML = html;
      return;
    } else if (d.type === "block" || d.type === "page") {
      html +=
        cell("oa", esc(d.pa) + (d.type === "block" ? ` <span class="muted">${sizeName(it.size)}</span>` : "")) +
        cell("s2ap", esc(d.s2ap)) +
        cell("af", d.af) +
        cell("dbm", d.dbm) +
        cell("sh", d.sh) +
        cell("memattr", d.memattr.toString(16)) +
        cell("xn", d.xn) +
        cell("contiguous", d.contiguous);
    } else {
      html += `<span class="span-fields muted">${d.type === "reserved" ? "reserved encoding (treated as invalid)" : ""}</span>`;
    }
    html += `<span class="c-who">${whoHtml(s, ch, lost, s.lastFail.get(r.addr))}<button type="button" tabindex="-1" class="c-link" title="Copy a link to this moment with this descriptor selected">link</button></span>`;
    el.innerHTML = html;
    if (lost && lost.size) el.classList.add("has-lost");
  }

  // --- interaction -------------------------------------------------------------------
  itemAt(ev) {
    const el = ev.target.closest(".tr");
    if (!el || !el.dataset.key) return null;
    const i = this.index.get(el.dataset.key);
    return i === undefined ? null : this.items[i];
  }

  onClick(ev) {
    const it = this.itemAt(ev);
    if (!it) return;
    this.el.focus({ preventScroll: true });
    if (ev.target.closest(".c-link") && it.t === "row") {
      this.cb.link?.(it.row);
      return;
    }
    if (ev.target.closest(".c-tog")) {
      this.toggle(it);
      return;
    }
    this.select(it);
    if (it.t === "row") this.cb.pick(it.row, it);
  }

  onDblClick(ev) {
    const it = this.itemAt(ev);
    if (it && !ev.target.closest(".c-tog")) this.toggle(it);
  }

  toggle(it) {
    if (it.t === "root") {
      this.store.rootOpen = !this.store.rootOpen;
      this.rebuild();
      return;
    }
    if (it.t !== "row" || it.row.decoded.type !== "table") return;
    const pa = it.row.decoded.next_table.toLowerCase();
    this.cb.toggle(pa, !this.store.expanded.has(pa), it.level + 1);
  }

  select(it) {
    this.store.selectedAddr = it.key;
    this.el.setAttribute("aria-activedescendant", "tr-" + it.key.replace(/[^a-z0-9]/gi, "_"));
    this.cb.select?.(it);
    this.paint();
  }

  selectable(i) {
    const t = this.items[i]?.t;
    return t === "row" || t === "root";
  }

  onKey(ev) {
    if (ev.altKey || ev.ctrlKey || ev.metaKey) return;
    const cur = this.index.get(this.selectedKey());
    const move = (delta) => {
      let i = cur === undefined ? (delta > 0 ? -1 : this.items.length) : cur;
      do i += delta;
      while (i >= 0 && i < this.items.length && !this.selectable(i));
      if (i >= 0 && i < this.items.length) {
        this.select(this.items[i]);
        this.scrollTo(i);
      }
    };
    const it = cur === undefined ? null : this.items[cur];
    let handled = true;
    switch (ev.key) {
      case "ArrowDown":
        move(1);
        break;
      case "ArrowUp":
        move(-1);
        break;
      case "PageDown":
        move(Math.max(1, Math.floor(this.el.clientHeight / ROW_H) - 1));
        break;
      case "PageUp":
        move(-Math.max(1, Math.floor(this.el.clientHeight / ROW_H) - 1));
        break;
      case "ArrowRight":
        if (it && isOpenable(it, this.store) && !isOpen(it, this.store)) this.toggle(it);
        else move(1);
        break;
      case "ArrowLeft":
        if (it && isOpenable(it, this.store) && isOpen(it, this.store)) this.toggle(it);
        else if (it) this.toParent(cur);
        break;
      // Home, End and Space are the session's keys (help.js), also with the tree focused.
      case "Enter":
        if (it && isOpenable(it, this.store)) this.toggle(it);
        else if (it && it.t === "row") this.cb.pick(it.row, it, true);
        break;
      default:
        handled = false;
    }
    if (handled) {
      ev.preventDefault();
      ev.stopPropagation();
    }
  }

  toParent(i) {
    const depth = this.items[i].depth;
    for (let j = i - 1; j >= 0; j--) {
      if (this.items[j].depth < depth && this.selectable(j)) {
        this.select(this.items[j]);
        this.scrollTo(j);
        return;
      }
    }
  }

  scrollTo(i, center = false) {
    const vp = this.el;
    const y = HEAD_H + i * ROW_H;
    if (center) vp.scrollTop = Math.max(0, y - vp.clientHeight / 2);
    else if (y < vp.scrollTop + HEAD_H) vp.scrollTop = y - HEAD_H;
    else if (y + ROW_H > vp.scrollTop + vp.clientHeight) vp.scrollTop = y + ROW_H - vp.clientHeight;
    this.scrollY = vp.scrollTop;
    this.paintSoon();
  }

  /** Open the path to the descriptor at `addr` (covering `ipa`, at `level`) and select it. */
  revealDescriptor(addr, ipa, level) {
    if (!addr) return;
    this.reveal = { addr: addr.toLowerCase(), ipa: ipa ? big(ipa) : null, level };
    if (!this.store.rootOpen) {
      this.store.rootOpen = true;
      this.rebuild();
    } else this.tryReveal();
  }

  tryReveal() {
    const rv = this.reveal;
    if (!rv) return;
    const i = this.index.get(rv.addr);
    if (i !== undefined) {
      this.reveal = null;
      this.store.selectedAddr = rv.addr;
      this.scrollTo(i, true);
      return;
    }
    if (rv.ipa === null) return;
    // Find the deepest open table row covering the IPA and open it.
    for (const it of this.items) {
      if (it.t !== "row" || it.row.decoded.type !== "table" || it.level >= rv.level) continue;
      const base = big(it.row.ipa);
      if (rv.ipa >= base && rv.ipa < base + BigInt(it.size)) {
        const pa = it.row.decoded.next_table.toLowerCase();
        if (!this.store.expanded.has(pa)) {
          this.cb.toggle(pa, true, it.level + 1);
          return;
        }
      }
    }
  }
}

function isOpenable(it, store) {
  return it.t === "root" || (it.t === "row" && it.row.decoded.type === "table");
}
function isOpen(it, store) {
  if (it.t === "root") return store.rootOpen;
  return store.expanded.has(it.row.decoded.next_table.toLowerCase());
}

function whoHtml(s, ch, lost, fl) {
  let who = "";
  if (fl && (!ch || fl.seq > ch.seq)) {
    // the most recent thing that happened here is a failed exclusive / CAS / hw update
    const e = s.events.find((x) => x.seq === fl.seq);
    const why = (e && failText(e, s.events)) || "the descriptor changed under it, it retries";
    who +=
      `<span class="fail-tag" title="${esc(`#${fl.seq} ${fl.actor} ${fl.op || ""} ${fl.kind}: ${why}`)}">` +
      `${esc(fl.actor)} #${fl.seq} ${esc(fl.kind)}</span>`;
    return who;
  }
  if (lost && lost.size) who += `<span class="lost-tag" title="a violation lost these bits here">lost ${esc([...lost].join(","))}</span> `;
  if (ch) {
    who +=
      `<span class="who${ch.bad ? " bad" : ""}" title="${esc(`#${ch.seq} ${ch.actor} ${ch.op || ""} ${ch.kind}: ${ch.old} → ${ch.new}; changed ${ch.fields.join(", ") || "nothing"}`)}">` +
      `<span class="actor-tag a-${actorSlot(s, ch.actor)}">${esc(ch.actor)}</span> #${ch.seq} ${esc(ch.kind)}</span>`;
  }
  return who;
}

function isLeaf(r) {
  return r.decoded.type === "page" || r.decoded.type === "block" || r.decoded.type === "invalid";
}

function typeLabel(d) {
  if (d.type === "invalid") return big(d.raw) === 1n << 10n ? "locked" : "inv";
  if (d.type === "reserved") return "rsvd";
  return d.type;
}

export function countsHtml(c) {
  if (!c) return "";
  const part = (n, label, cls) => `<span class="cnt ${cls}${n ? "" : " zero"}">${num(n)} ${label}</span>`;
  return (
    part(c.leaves, c.leaves === 1 ? "leaf" : "leaves", "c-leaves") +
    part(c.young, "young", "c-young") +
    part(c.readonly, "ro", "c-ro") +
    part(c.dirty, "dirty", "c-dirty") +
    part(c.invalid, "inv", "c-inv")
  );
}

export function actorSlot(store, name) {
  const i = store.actorIndex(name);
  return i < 0 ? "x" : String(i % 8);
}

