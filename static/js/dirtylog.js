// The dirty-log part of the machine panel: each memslot's dirty_bitmap as the engine holds
// it (LiveSession.dirty_log_view()). Bit i is gfn base_gfn + i (mark_page_dirty_in_slot);
// KVM_GET_DIRTY_LOG takes one 64-bit word per xchg, so the bits are drawn 64 to a row.
import { esc } from "./dom.js";

const MAX_BITS = 1024; // bits drawn per memslot; the rest are summarised

function pageIpa(base, bit) {
  return `0x${(BigInt(base) + (BigInt(bit) << 12n)).toString(16)}`;
}

function slotHtml(slot, wordBits) {
  const dirty = new Set(slot.bits);
  const harvested = new Set(slot.harvested);
  const logging = (i) => slot.logging.some(([a, b]) => a <= i && i < b);
  const shown = Math.min(slot.npages, MAX_BITS);
  let rows = "";
  for (let w = 0; w < shown; w += wordBits) {
    let cells = "";
    for (let i = w; i < Math.min(w + wordBits, shown); i++) {
      const cls = ["bit"];
      let what = "clear";
      if (dirty.has(i)) {
        cls.push("set");
        what = "set: dirty, not yet harvested";
      } else if (harvested.has(i)) {
        cls.push("harvested");
        what = "harvested by KVM_GET_DIRTY_LOG";
      }
      if (logging(i)) cls.push("logging");
      cells += `<span class="${cls.join(" ")}" title="${esc(`bit ${i} · ${pageIpa(slot.base, i)} · ${what}`)}"></span>`;
    }
    rows += `<div class="word"><span class="word-i">[${w / wordBits}]</span>${cells}</div>`;
  }
  const more = slot.npages > shown ? `<div class="muted small">… ${slot.npages - shown} more bits not drawn</div>` : "";
  const on = slot.logging.length
    ? `logging ${slot.logging.map(([a, b]) => `bits ${a}–${b - 1}`).join(", ")}`
    : "not logging";
  return (
    `<div class="slot"><div class="kvs"><span class="kv"><i>memslot</i> <code>${esc(slot.base)}</code></span>` +
    `<span class="kv"><i>pages</i> ${slot.npages}</span>` +
    `<span class="kv"><i>dirty</i> ${slot.bits.length}</span>` +
    `<span class="kv"><i>harvested</i> ${slot.harvested.length}</span>` +
    `<span class="kv muted">${esc(on)}</span></div>${rows}${more}</div>`
  );
}

/** The dirty-log section, or "" before any logging operation ran. */
export function dirtyLogHtml(log) {
  if (!log) return "";
  return (
    `<div class="dirty-log" role="group" aria-label="Dirty log: memslot dirty bitmaps">` +
    `<div class="reg-name">dirty_bitmap <span class="muted small">bit i = gfn base_gfn + i; one row per 64-bit word</span></div>` +
    log.slots.map((s) => slotHtml(s, log.word_bits)).join("") +
    `<div class="legend small"><span class="bit set"></span> dirty <span class="bit harvested"></span> harvested ` +
    `<span class="bit logging"></span> clear, logging <span class="bit"></span> clear</div></div>`
  );
}
