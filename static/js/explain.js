// Plain-language explanations of events: what a failed STXR/CAS or hardware update
// attempted (field by field) and which event made it fail (the write to the same
// descriptor that cleared the exclusive monitor or changed the value under it).
import { decode } from "./decode.js";
import { WRITE_KINDS } from "./fmt.js";

const BIT_FIELDS = { af: "AF", dbm: "DBM", contiguous: "Contiguous" };
const FIELD_NAMES = { type: "type", pa: "OA", s2ap: "S2AP", sh: "SH", memattr: "MemAttr", xn: "XN", sw: "SW" };

/** The fields writing `newHex` over `oldHex` changes: [{name, from, to, bit}]. */
export function fieldChanges(oldHex, newHex, level = 3) {
  const a = decode(oldHex, level);
  const b = decode(newHex, level);
  const out = [];
  if (a.type !== b.type) out.push({ name: "type", from: a.type, to: b.type });
  if (a.type !== b.type && (b.type === "invalid" || a.type === "invalid")) return out;
  for (const [k, name] of Object.entries(FIELD_NAMES)) {
    if (k !== "type" && a[k] !== undefined && a[k] !== b[k]) out.push({ name, from: a[k], to: b[k] });
  }
  for (const [k, name] of Object.entries(BIT_FIELDS)) {
    if (a[k] !== undefined && a[k] !== b[k]) out.push({ name, from: a[k], to: b[k], bit: true });
  }
  if (a.next_table && b.next_table && a.next_table !== b.next_table) out.push({ name: "next table", from: a.next_table, to: b.next_table });
  return out;
}

/** "change S2AP rw→ro, clear AF" */
export function changesText(changes) {
  const bits = changes.filter((c) => c.bit).map((c) => `${c.to ? "set" : "clear"} ${c.name}`);
  const fields = changes.filter((c) => !c.bit).map((c) => `${c.name} ${c.from}→${c.to}`);
  return [fields.length ? `change ${fields.join(", ")}` : "", ...bits].filter(Boolean).join(", ");
}

/** The latest write to e's descriptor by another actor, among `events`, after e's actor
 * last read it (its LDXR, load or walk) and before e; null when not among them. */
export function failCause(e, events) {
  let cause = null;
  for (const x of events) {
    if (x.seq >= e.seq) break;
    if (x.addr !== e.addr) continue;
    if (x.actor === e.actor && (x.kind === "ldxr" || x.kind === "load" || x.kind === "walk")) cause = null;
    else if (x.actor !== e.actor && WRITE_KINDS.has(x.kind) && x.old !== x.new) cause = x;
  }
  return cause;
}

const name = (x) => `${x.actor} ${x.kind} #${x.seq}`;

/** One sentence for a failed STXR, CAS or hardware update; null for other events. */
export function failText(e, events) {
  const level = e.level ?? 3;
  const cause = failCause(e, events);
  if (e.kind === "stxr-fail" || e.kind === "cas-fail") {
    // old: the value in memory; new: the value it tried to write (engine/twin.py OP_STXR/OP_CAS)
    const would = changesText(fieldChanges(e.old, e.new, level));
    const what = `attempted ${e.new}${would ? ` (would ${would})` : ""}; nothing written`;
    const why =
      e.kind === "stxr-fail"
        ? cause
          ? `the exclusive monitor was cleared by ${name(cause)}`
          : "the exclusive monitor was cleared (the write that cleared it is not among the events in this view)"
        : cause
          ? `the descriptor was changed by ${name(cause)}`
          : "the descriptor no longer held the expected value";
    return `${what}: ${why}${e.kind === "stxr-fail" ? "; the LDXR/STXR loop retries" : ""}`;
  }
  if (e.kind === "hw-update-fail") {
    // old: the value the walk read; new: the value found in memory
    const who = cause ? name(cause) : "a write";
    const changed = changesText(fieldChanges(e.old, e.new, level));
    return `the walk read ${e.old}; ${who} changed it to ${e.new}${changed ? ` (${changed})` : ""}: the hardware update is re-evaluated from the new value`;
  }
  return null;
}
