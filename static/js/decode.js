// Stage-2 descriptor fields (4K granule, 48-bit OA), as engine/decode.py and
// engine/bits.py define them. The server sends decoded rows for tables; events carry
// only raw old/new values, so the browser decodes those to find which fields changed.

export const DESC_VALID = 1n;
export const DESC_TYPE = 1n << 1n;
const MEMATTR_SHIFT = 2n;
const MEMATTR_MASK = 0xfn << MEMATTR_SHIFT;
const S2AP_SHIFT = 6n;
const S2AP_MASK = 3n << S2AP_SHIFT;
const SH_SHIFT = 8n;
const SH_MASK = 3n << SH_SHIFT;
export const AF = 1n << 10n;
const OA_MASK = ((1n << 48n) - 1n) & ~0xfffn;
export const DBM = 1n << 51n;
const CONTIG = 1n << 52n;
const XN_SHIFT = 53n;
const XN_MASK = 3n << XN_SHIFT;
const SW_SHIFT = 55n;
const SW_MASK = 0xfn << SW_SHIFT;
const S2AP_NAMES = ["none", "ro", "wo", "rw"];
// KVM_INVALID_PTE_LOCKED (v6.x): invalid with bit 10 set = break-before-make owner.
export const INVALID_PTE_LOCKED = 1n << 10n;

export function levelShift(level) {
  return 12 + 9 * (3 - level);
}

export function big(hex) {
  try {
    return BigInt(hex);
  } catch {
    return 0n;
  }
}

const hexs = (v) => "0x" + v.toString(16);

/** decode(raw, level) -> the same object `python -m engine decode --json` prints. */
export function decode(raw, level = 3) {
  const r = typeof raw === "bigint" ? raw : big(raw);
  const out = { raw: hexs(r), level, valid: Number(r & DESC_VALID) };
  if (!(r & DESC_VALID)) {
    out.type = "invalid";
    return out;
  }
  const typeBit = (r & DESC_TYPE) !== 0n;
  let kind;
  if (level === 3) kind = typeBit ? "page" : "reserved";
  else if (typeBit) kind = "table";
  else kind = level === 1 || level === 2 ? "block" : "reserved";
  out.type = kind;
  if (kind === "table") out.next_table = hexs(r & OA_MASK);
  else if (kind === "block" || kind === "page") {
    const oaMask = OA_MASK & ~((1n << BigInt(levelShift(level))) - 1n);
    out.pa = hexs(r & oaMask);
    out.memattr = Number((r & MEMATTR_MASK) >> MEMATTR_SHIFT);
    out.s2ap = S2AP_NAMES[Number((r & S2AP_MASK) >> S2AP_SHIFT)];
    out.sh = Number((r & SH_MASK) >> SH_SHIFT);
    out.af = r & AF ? 1 : 0;
    out.dbm = r & DBM ? 1 : 0;
    out.contiguous = r & CONTIG ? 1 : 0;
    out.xn = Number((r & XN_MASK) >> XN_SHIFT);
    out.sw = Number((r & SW_MASK) >> SW_SHIFT);
  }
  return out;
}

// The displayed field columns, and the descriptor bits behind each.
export const FIELDS = [
  ["type", DESC_VALID | DESC_TYPE],
  ["oa", OA_MASK],
  ["s2ap", S2AP_MASK],
  ["af", AF],
  ["dbm", DBM],
  ["sh", SH_MASK],
  ["memattr", MEMATTR_MASK],
  ["xn", XN_MASK],
  ["contiguous", CONTIG],
  ["sw", SW_MASK],
];

/** The field columns whose bits differ between two raw descriptor values. */
export function changedFields(oldHex, newHex) {
  const diff = big(oldHex) ^ big(newHex);
  const out = [];
  if (!diff) return out;
  for (const [name, mask] of FIELDS) if (diff & mask) out.push(name);
  return out;
}

// The named bit groups of the no_lost_update check (engine/bits.py LOST_BIT_NAMES) ->
// the field column that shows them.
export const LOST_BIT_FIELD = {
  AF: "af",
  S2AP: "s2ap",
  DBM: "dbm",
  VALID: "type",
  TYPE: "type",
  OA: "oa",
  MEMATTR: "memattr",
  SH: "sh",
  CONTIG: "contiguous",
  XN: "xn",
  SW: "sw",
};

// --- VTCR_EL2 / VTTBR_EL2 (Arm ARM D17.2; arch/arm64/include/asm/kvm_arm.h) -------------
const field = (v, shift, width) => Number((v >> BigInt(shift)) & ((1n << BigInt(width)) - 1n));

export function decodeVtcr(hex) {
  const v = big(hex);
  const t0sz = field(v, 0, 6);
  const sl0 = field(v, 6, 2);
  const tg0 = field(v, 14, 2);
  const ps = field(v, 16, 3);
  return {
    t0sz,
    ipaBits: 64 - t0sz,
    sl0,
    // 4KB granule: SL0 0 -> level 2, 1 -> level 1, 2 -> level 0.
    startLevel: tg0 === 0 ? 2 - sl0 : null,
    irgn0: field(v, 8, 2),
    orgn0: field(v, 10, 2),
    sh0: field(v, 12, 2),
    tg0,
    granule: { 0: "4K", 1: "64K", 2: "16K" }[tg0] ?? "?",
    ps,
    paBits: [32, 36, 40, 42, 44, 48, 52][ps] ?? null,
    vs: field(v, 19, 1),
    ha: field(v, 21, 1),
    hd: field(v, 22, 1),
  };
}

export function decodeVttbr(hex) {
  const v = big(hex);
  return {
    vmid: field(v, 48, 16),
    baddr: hexs(v & (((1n << 48n) - 1n) & ~1n)),
    cnp: field(v, 0, 1),
  };
}
