"""`python -m engine report`: an interleaving as a mailing-list-ready table (issue 7).

One column per CPU, one row per micro-step in kernel terms: the operation and the code
line the step models (`at`, from engine/programs.py), the descriptor's address and level,
old -> new with the fields that changed, lost bits marked with the update they reverted.
A verdict line comes first. Stretches of steps that touch nothing another CPU touches
(a 1M-leaf walk) are folded into one line saying how many steps of what.
"""

from __future__ import annotations

import textwrap
from collections import Counter
from dataclasses import dataclass, field

from . import bits as B
from . import isa as I
from .report import Observer, evaluate_expect, hexs, leaf_fields
from .scenario import parse_op
from .spec import op_spec, walk_image

WIDTH = 100
FOLD_MIN = 8  # uneventful steps in a row before they fold into one line


@dataclass
class Row:
    step: int  # 1-based decision number
    actor: int
    events: list[tuple] = field(default_factory=list)
    inject: str | None = None


def play(spec, machine, decisions) -> list[Row]:
    """Take the decisions on a fresh machine, noting which events each step made."""
    sc = spec.scenario
    rows = []
    for n, d in enumerate(decisions, 1):
        actor = d[1]
        if d[0] == "inject":
            op = parse_op(d[2], sc.actors[actor].kind, sc.machine.ipa_bits)
            machine.append_op(actor, op_spec(spec.program, op))
            rows.append(Row(n, actor, inject=d[2]))
            continue
        before = machine.n_events_recorded
        machine.step(actor)
        rows.append(Row(n, actor, list(machine.event_tuples(before))))
    return rows


def _changed(old: int, new: int) -> str:
    names = B.lost_bit_names(old ^ new)
    parts = []
    for name in names:
        if name == "AF":
            parts.append("AF=1" if new & B.AF else "AF=0")
        elif name == "S2AP":
            parts.append(f"S2AP {B.s2ap_name(old)}->{B.s2ap_name(new)}")
        elif name == "VALID":
            parts.append("valid" if new & B.DESC_VALID else "invalid")
        else:
            parts.append(name)
    return ", ".join(parts)


class Report:
    def __init__(self, spec, machine, rows: list[Row], title: str = ""):
        self.spec = spec
        self.machine = machine
        self.rows = rows
        self.names = spec.actor_names
        self.title = title
        touched: dict[int, set] = {}
        for r in rows:
            for e in r.events:
                if e[4] not in (I.EV_LOCK, I.EV_UNLOCK, I.EV_TLBI):
                    touched.setdefault(e[8], set()).add(e[1])
        self.shared = {addr for addr, who in touched.items() if len(who) > 1}
        self.by_seq = {e[0]: (r, e) for r in rows for e in r.events}

    # --- what a step says --------------------------------------------------------------------
    def op_name(self, actor: int, op_i: int) -> str:
        ops = self.machine.ops_of(actor)
        return ops[op_i].name if op_i < len(ops) else "?"

    def interesting(self, r: Row) -> bool:
        if r.inject is not None or not r.events:
            return True
        for e in r.events:
            kind, detail, flags, addr = e[4], e[5], e[6], e[8]
            if (
                flags & (I.EVF_LOST_UPDATE | I.EVF_BBM)
                or detail
                and kind
                not in (
                    I.EV_LOCK,
                    I.EV_UNLOCK,
                    I.EV_TLBI,
                )
            ):
                return True
            if kind not in (I.EV_LOCK, I.EV_UNLOCK, I.EV_TLBI) and addr in self.shared:
                return True
        return False

    def reverted(self, e: tuple) -> str:
        """The update a lost update put back: the last change by another CPU of the lost
        bits of the same descriptor."""
        seq, actor, addr, old, new = e[0], e[1], e[8], e[10], e[11]
        lost = (old ^ new) & old
        for s in range(seq - 1, -1, -1):
            hit = self.by_seq.get(s)
            if hit is None:
                continue
            r, f = hit
            if f[8] == addr and f[1] != actor and (f[10] ^ f[11]) & (old ^ new):
                what = ",".join(B.lost_bit_names((f[10] ^ f[11]) & (old ^ new)))
                kind = I.EVENT_KIND_NAMES[f[4]]
                return f"reverts step {r.step} ({self.names[f[1]]} {kind}: {what})"
        return f"lost {','.join(B.lost_bit_names(lost or old ^ new))}"

    def cell(self, r: Row) -> list[str]:
        if r.inject is not None:
            return [f"inject: {r.inject}"]
        out = []
        for e in r.events:
            seq, actor, op_i, pc, kind, detail, flags, level, addr, ipa, old, new = e
            op = self.op_name(actor, op_i)
            head = f"{op}: {I.EVENT_KIND_NAMES[kind]}"
            if kind in (I.EV_LOCK, I.EV_UNLOCK):
                out.append(f"{head} ({I.LOCK_MODE_NAMES[detail]})")
            elif kind == I.EV_TLBI:
                out.append(f"{head} {'all' if detail else hexs(ipa)}")
            else:
                out.append(f"{head} L{level} {hexs(addr)}")
                change = _changed(old, new)
                value = f"= {hexs(old)}" if old == new else f"{hexs(old)} -> {hexs(new)}"
                out.append(f"[ipa {hexs(ipa)}] {value}" + (f" ({change})" if change else ""))
                if detail:
                    out.append(f"fault: {I.FAULT_NAMES[detail]}")
            if flags & I.EVF_LOST_UPDATE:
                out.append(f"** LOST UPDATE: {self.reverted(e)} **")
            if flags & I.EVF_BBM:
                out.append("** BREAK-BEFORE-MAKE violated **")
            out.append(f"at {self.spec.program.lines[pc]}")
        return out or ["(no shared access)"]

    def folded(self, rows: list[Row]) -> str:
        per_actor = Counter(r.actor for r in rows)
        what = Counter()
        for r in rows:
            for e in r.events:
                what[(self.names[e[1]], self.op_name(e[1], e[2]), I.EVENT_KIND_NAMES[e[4]])] += 1
        kinds = ", ".join(f"{n:,} {kind}" for (_a, _o, kind), n in what.most_common(4))
        actors = ", ".join(
            f"{self.names[a]} {sorted({o for (n, o, _k) in what if n == self.names[a]})}"
            for a in per_actor
        ).replace("'", "")
        return (
            f"... steps {rows[0].step:,}-{rows[-1].step:,} folded: {len(rows):,} steps of "
            f"{actors} touching nothing another CPU touches ({kinds})"
        )

    def blocks(self):
        """Rows and folded stretches, in order."""
        out: list = []
        quiet: list[Row] = []
        for r in self.rows:
            if self.interesting(r):
                out.extend([quiet] if len(quiet) >= FOLD_MIN else quiet)
                quiet = []
                out.append(r)
            else:
                quiet.append(r)
        out.extend([quiet] if len(quiet) >= FOLD_MIN else quiet)
        return out

    # --- the verdict ------------------------------------------------------------------------
    def verdict(self) -> str:
        m = self.machine
        g = self.spec.geometry
        mem = m.mem_array()
        seen = {}
        for check, seq, actor, op_i, ipa, bits in m.violations:
            seen.setdefault(I.CHECK_NAMES[check], (seq, actor, op_i, ipa, bits))
        observer = Observer(self.spec)
        key = observer(m)
        checks = set(seen)
        expect = evaluate_expect(self.spec.scenario, observer, [key], checks)
        parts = []
        for check, (seq, actor, op_i, ipa, bits) in seen.items():
            desc, level, _ = walk_image(mem, g, ipa)
            f = leaf_fields(desc, level)
            step = self.by_seq[seq][0].step if seq in self.by_seq else "?"
            parts.append(
                f"VIOLATED {check} at {hexs(ipa)} ({'|'.join(B.lost_bit_names(bits))}) "
                f"by {self.names[actor]} {self.op_name(actor, op_i)} at step {step}; "
                f"final {hexs(ipa)}: {hexs(desc)} (L{level} valid={f['valid']} af={f['af']} "
                f"s2ap={f['s2ap']} dbm={f['dbm']})"
            )
        if not parts:
            summary = observer.info[key]["summary"]
            rows = "; ".join(
                f"{r['count']:,} x valid={r['valid']} af={r['af']} s2ap={r['s2ap']}"
                for r in summary[:3]
            )
            parts.append(f"no check violated; final leaves: {rows}")
        if expect["results"]:
            parts.append("expectations hold" if expect["passed"] else "EXPECTATIONS FAILED")
        return "VERDICT: " + "; ".join(parts)

    def header(self) -> list[str]:
        sc = self.spec.scenario
        return [
            f"{sc.name}",
            f"kernel {sc.kernel}, HAFDBS={sc.machine.hafdbs} HA={int(self.spec.ha)} "
            f"HD={int(self.spec.hd)}, VTCR_EL2={hexs(self.spec.vtcr)}, "
            f"{len(self.rows):,} decisions",
        ]

    # --- formats ----------------------------------------------------------------------------
    def text(self, width: int = WIDTH) -> str:
        n = len(self.names)
        stepw = max(5, len(f"{len(self.rows):,}"))
        colw = max(12, (width - stepw - 3 * n) // n)
        lines = [*textwrap.wrap(self.verdict(), width), *self.header(), ""]

        def line(step: str, cells: list[str]) -> str:
            return (f"{step:>{stepw}} | " + " | ".join(f"{c:<{colw}}" for c in cells)).rstrip()

        lines.append(line("step", self.names))
        lines.append("-" * (stepw + 1) + "+" + "+".join("-" * (colw + 2) for _ in self.names))
        for block in self.blocks():
            if isinstance(block, list):
                for k, text in enumerate(textwrap.wrap(self.folded(block), width - stepw - 3)):
                    lines.append(f"{'' if k else '...':>{stepw}} | {text}")
                continue
            wrapped = []
            for text in self.cell(block):
                wrapped += textwrap.wrap(
                    text, colw, subsequent_indent="  ", break_on_hyphens=False
                ) or [""]
            for k, text in enumerate(wrapped):
                cells = [text if a == block.actor else "" for a in range(n)]
                lines.append(line(f"{block.step:,}" if k == 0 else "", cells))
        return "\n".join(lines) + "\n"

    def markdown(self) -> str:
        def esc(text: str) -> str:
            return text.replace("|", "\\|").replace("*", "\\*")

        out = [f"**{esc(self.verdict())}**", "", *[esc(h) + "  " for h in self.header()], ""]
        out.append("| step | " + " | ".join(self.names) + " |")
        out.append("|---:|" + "---|" * len(self.names))
        for block in self.blocks():
            if isinstance(block, list):
                out.append(f"| ... | {esc(self.folded(block))} |" + " |" * (len(self.names) - 1))
                continue
            cell = "<br>".join(
                f"`{esc(t)}`" if t.startswith("at ") else esc(t) for t in self.cell(block)
            )
            cells = [cell if a == block.actor else "" for a in range(len(self.names))]
            out.append(f"| {block.step:,} | " + " | ".join(cells) + " |")
        return "\n".join(out) + "\n"
