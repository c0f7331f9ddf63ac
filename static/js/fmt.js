// Formatting helpers: hex with dimmed leading zeros, sizes, event summaries.
import { esc } from "./dom.js";

/** 0x-prefixed hex padded to `digits`, leading zeros wrapped for dimming (HTML). */
export function hexHtml(hex, digits = 16) {
  if (hex === null || hex === undefined) return "";
  const body = String(hex).replace(/^0x/i, "").replace(/_/g, "").toLowerCase();
  const padded = body.padStart(digits, "0");
  const lead = padded.length - body.replace(/^0+(?=.)/, "").length;
  return (
    '<span class="z">0x' + padded.slice(0, lead) + "</span>" + esc(padded.slice(lead))
  );
}

const NUMBER = new Intl.NumberFormat("en-US");

/** A number with thousands separators ("1,048,576"), as toLocaleString("en-US") writes
 * it; one formatter for all (toLocaleString makes one per call: the tree's counters of a
 * live run called it thousands of times a second). */
export function num(n) {
  return NUMBER.format(n);
}

/** A count with thousands separators, exact also above 2^53 (sent as a decimal string:
 * docs/protocol.md, "explore_result"). */
export function countText(n) {
  if (n === null || n === undefined) return "0";
  try {
    return BigInt(n).toLocaleString("en-US");
  } catch {
    return String(n);
  }
}

export function sizeName(bytes) {
  const n = Number(bytes);
  const units = [
    [2 ** 40, "T"],
    [2 ** 30, "G"],
    [2 ** 20, "M"],
    [2 ** 10, "K"],
  ];
  for (const [u, s] of units) if (n >= u && n % u === 0) return n / u + s;
  return String(n);
}

export function ipaDigits(ipaBits) {
  return Math.ceil((ipaBits || 40) / 4);
}

// Short labels for timeline boxes.
export const KIND_SHORT = {
  load: "ld",
  store: "st",
  ldxr: "ldxr",
  "stxr-ok": "stxr",
  "stxr-fail": "stxr✗",
  "cas-ok": "cas",
  "cas-fail": "cas✗",
  walk: "walk",
  "hw-update": "hw",
  "hw-update-fail": "hw✗",
  fault: "fault",
  "tlb-hit": "tlb",
  lock: "lock",
  unlock: "unlk",
  tlbi: "tlbi",
  "mark-dirty": "dirty",
  log: "log",
  harvest: "harv",
};

export const KINDS = Object.keys(KIND_SHORT);

// Kinds whose old/new describe a descriptor write.
export const WRITE_KINDS = new Set(["store", "stxr-ok", "cas-ok", "hw-update"]);
export const FAIL_KINDS = new Set(["stxr-fail", "cas-fail", "hw-update-fail"]);
export const BAD_FLAGS = ["lost-update", "break-before-make"];

export function eventBad(e) {
  return !!e.flags && e.flags.some((f) => BAD_FLAGS.includes(f));
}

/** One line of plain text describing an event (titles, detail line). */
export function eventText(e) {
  const parts = [`#${e.seq}`, e.actor, e.op ? `${e.op}` : "", e.kind];
  if (e.level !== undefined) parts.push(`L${e.level}`);
  if (e.addr) parts.push(`@${e.addr}`);
  if (e.ipa) parts.push(`ipa ${e.ipa}`);
  if (e.old !== undefined && e.new !== undefined) parts.push(e.old === e.new ? e.old : `${e.old} → ${e.new}`);
  if (e.fault) parts.push(`${e.fault} fault`);
  if (e.lock) parts.push(`mmu_lock ${e.lock}`);
  if (e.tlbi) parts.push(`tlbi ${e.tlbi}`);
  if (e.logging) parts.push(`logging ${e.logging} to ${e.end}`);
  if (e.mask) parts.push(`mask ${e.mask}`);
  if (e.flags && e.flags.length) parts.push(`[${e.flags.join(", ")}]`);
  if (e.at) parts.push(`— ${e.at}`);
  return parts.filter(Boolean).join(" ");
}
