"""The pure-Python twin of the engine core: the oracle the Cython core is tested against.

It interprets the same micro-step programs (engine/programs.py) over the same table
image, written for clarity rather than speed. Every behaviour here names its source; the
Cython core (engine/_core.pyx) must produce identical event traces and final states.
"""

from __future__ import annotations

import hashlib
import struct
from array import array

from . import bits as B
from . import isa as I
from .dirtylog import DirtyLog
from .spec import MachineSpec, OpSpec


class EngineError(Exception):
    """A schedule asked for something the machine cannot do (a finished or blocked actor)."""


def _leaf_kind(desc: int, level: int) -> int:
    """0: not a valid leaf; else the level (a valid block at 1/2 or a page at 3)."""
    if not desc & B.DESC_VALID:
        return 0
    if level == 3:
        return 3 if desc & B.DESC_TYPE else 0  # bit 1 clear at level 3 is reserved
    if level in (1, 2) and not desc & B.DESC_TYPE:
        return level
    return 0


class _Actor:
    __slots__ = ("kind", "ops", "op_i", "pc", "regs", "mon", "tlb")

    def __init__(self, spec):
        self.kind = spec.kind
        self.ops = spec.ops
        self.op_i = 0
        self.pc = -1
        self.regs = [0] * I.NREGS
        self.mon = 0  # address the exclusive monitor holds, 0 = open
        self.tlb = list(spec.tlb)  # [(ipa base, size, descriptor, descriptor PA)], FIFO

    def copy(self):
        other = _Actor.__new__(_Actor)
        other.kind, other.ops, other.op_i, other.pc = self.kind, self.ops, self.op_i, self.pc
        other.regs, other.mon, other.tlb = list(self.regs), self.mon, list(self.tlb)
        return other

    def state(self):
        return (self.op_i, self.pc, tuple(self.regs), self.mon, tuple(self.tlb))


class Machine:
    """One stage-2 regime with its actors (the twin: plain Python, slow, obviously right)."""

    engine = "python"

    def __init__(self, spec: MachineSpec, take_image: bool = False):
        self.spec = spec  # (take_image: the core's; the twin keeps a list of its own anyway)
        g = spec.geometry
        self.start_level = g.start_level
        self.start_entries = g.start_entries
        self.code = spec.program.code
        self.consts = spec.program.consts
        self.count_faults = spec.count_faults
        self.mem = list(spec.mem)
        self.actors = [_Actor(a) for a in spec.actors]
        self.lock_writer = -1
        self.lock_readers = 0
        self.pending = []  # break-before-make: (slot, old leaf, ipa base, size) awaiting TLBI
        self.viol_mask = 0
        self.violations = []  # (check, seq, actor, op index, ipa, bits)
        self.seq = 0
        self.events = []
        self.recording = True
        self.record_limit = -1  # recording stops for good past this many events (-1: none)
        self._marks = []
        self.dlog = DirtyLog((m.ipa, m.end) for m in spec.memslots)
        self.free_pages = ()  # table pages given back before they were ever linked
        for i in range(len(self.actors)):
            self._start_op(i)
            self._settle(i)

    # --- memory ------------------------------------------------------------------------
    def read(self, addr: int) -> int:
        return self.mem[(addr - B.TABLE_BASE) >> 3]

    def _write(self, actor: int, addr: int, value: int) -> None:
        """A write to a descriptor clears every other CPU's exclusive monitor on it (Arm ARM
        B2.9: a store to the marked address by another observer clears the global monitor)."""
        self.mem[(addr - B.TABLE_BASE) >> 3] = value
        for j, other in enumerate(self.actors):
            if j != actor and other.mon == addr:
                other.mon = 0

    def _entry(self, table: int, level: int, ipa: int) -> int:
        index = ipa >> B.level_shift(level)
        index &= (self.start_entries if level == self.start_level else B.PTRS_PER_TABLE) - 1
        return table + 8 * index

    # --- events ------------------------------------------------------------------------
    def _event(self, actor, kind, level=0, addr=0, ipa=0, old=0, new=0, detail=0, flags=0):
        a = self.actors[actor]
        if self.recording and len(self.events) == self.record_limit:
            self.recording = False  # nobody will list these events: stop keeping them
        if self.recording:
            self.events.append(
                [self.seq, actor, a.op_i, a.pc, kind, detail, flags, level, addr, ipa, old, new]
            )
        self.seq += 1

    def _flag_last(self, flag: int) -> None:
        if self.recording and self.events:
            self.events[-1][6] |= flag

    # --- checks ------------------------------------------------------------------------
    def _check_store(
        self, actor: int, addr: int, cur: int, new: int, meant: int, level: int, ipa: int
    ):
        """no_lost_update and break_before_make, on every software write (SCENARIOS.md, Checks)."""
        flags = 0
        lost = (cur ^ new) & ~meant
        if lost:
            flags |= I.EVF_LOST_UPDATE
            self._violation(I.CHECK_NO_LOST_UPDATE, actor, ipa, lost)
        size = 1 << B.level_shift(level)
        if new & B.DESC_VALID:
            before = cur if _leaf_kind(cur, level) else None
            for entry in self.pending:
                if entry[0] == addr:
                    before = entry[1]
            # a different output address, or a block replaced by a table
            changed = (before ^ new) & B.BBM_MASK if before is not None else 0
            # A leaf over leaves of another size that a removed table held and no TLBI has
            # invalidated yet: they may still be cached next to it (a block-size change,
            # Arm ARM D8.17.1 R_WHZWS).
            stale = [
                e
                for e in self.pending
                if _leaf_kind(new, level)
                and e[0] != addr
                and e[3] != size
                and e[2] < ipa + size
                and ipa < e[2] + e[3]
            ]
            if stale:
                changed |= B.DESC_TYPE
            if changed:
                flags |= I.EVF_BBM
                self._violation(I.CHECK_BREAK_BEFORE_MAKE, actor, ipa, changed)
            self.pending = [e for e in self.pending if e[0] != addr and e not in stale]
        elif _leaf_kind(cur, level):
            self.pending.append((addr, cur, ipa, size))
        elif level < 3 and cur & B.DESC_VALID and cur & B.DESC_TYPE:
            # A table entry broken: every leaf below it may be cached until invalidated.
            self.pending.extend(self._leaves_below(cur & B.OA_MASK, level + 1, ipa))
        return flags

    def _leaves_below(self, table: int, level: int, base: int) -> list[tuple]:
        """(descriptor PA, leaf, ipa, size) of every valid leaf in a table's subtree."""
        out = []
        shift = B.level_shift(level)
        for k in range(B.PTRS_PER_TABLE):
            d = self.read(table + 8 * k)
            ipa = base + (k << shift)
            if level < 3 and d & B.DESC_VALID and d & B.DESC_TYPE:
                out += self._leaves_below(d & B.OA_MASK, level + 1, ipa)
            elif _leaf_kind(d, level):
                out.append((table + 8 * k, d, ipa, 1 << shift))
        return out

    def _violation(self, check: int, actor: int, ipa: int, bits: int, op_i: int = -1) -> None:
        self.viol_mask |= 1 << check
        if op_i < 0:
            op_i = self.actors[actor].op_i
        self.violations.append((check, self.seq, actor, op_i, ipa, bits))

    def _final_checks(self, i: int) -> None:
        """no_lost_dirty part (a), once every actor has finished (SCENARIOS.md)."""
        for page in self.dlog.lost_writes(self._hw_dirty):
            self._violation(I.CHECK_NO_LOST_DIRTY, i, page, B.S2AP_W, self.actors[i].op_i - 1)

    def _hw_dirty(self, page: int) -> bool:
        desc, level = self.walk(page)
        return bool(_leaf_kind(desc, level) and desc & B.DBM and desc & B.S2AP_W)

    def walk(self, ipa: int) -> tuple[int, int]:
        """(descriptor, level) of the entry translating ipa: a leaf or the first invalid one."""
        table, level = B.TABLE_BASE, self.start_level
        while True:
            desc = self.read(self._entry(table, level, ipa))
            if level < 3 and desc & B.DESC_VALID and desc & B.DESC_TYPE:
                table, level = desc & B.OA_MASK, level + 1
                continue
            return desc, level

    # --- scheduling --------------------------------------------------------------------
    def done(self, i: int) -> bool:
        return self.actors[i].op_i >= len(self.actors[i].ops)

    def all_done(self) -> bool:
        return all(self.done(i) for i in range(len(self.actors)))

    def blocked(self, i: int) -> bool:
        a = self.actors[i]
        if self.done(i):
            return False
        op, mode = self.code[a.pc][0], self.code[a.pc][1]
        return op == I.OP_LOCK and not self._lock_free(mode)

    def enabled(self) -> list[int]:
        return [i for i in range(len(self.actors)) if not self.done(i) and not self.blocked(i)]

    def _lock_free(self, mode: int) -> bool:
        if mode == I.LOCK_READ:
            return self.lock_writer < 0
        return self.lock_writer < 0 and self.lock_readers == 0

    def _start_op(self, i: int) -> None:
        a = self.actors[i]
        if a.op_i >= len(a.ops):
            return
        op = a.ops[a.op_i]
        a.pc = op.entry
        faults = a.regs[I.FAULTS]
        a.regs = [0] * I.NREGS
        a.regs[I.FAULTS] = faults
        a.regs[I.IPA] = op.ipa
        a.regs[I.END] = op.end
        a.regs[I.WRITE] = op.write

    def _settle(self, i: int) -> None:
        """Run register-only instructions until the actor rests at a shared one."""
        self._run(i, shared_done=True)

    def step(self, i: int) -> None:
        """One micro-step of actor i: exactly one access to shared state."""
        if not 0 <= i < len(self.actors):
            raise EngineError(f"no actor {i}")
        if self.done(i):
            raise EngineError(f"actor {i} has finished")
        if self.blocked(i):
            raise EngineError(f"actor {i} is blocked on kvm->mmu_lock")
        self._run(i, shared_done=False)

    def step_n(self, i: int, n: int) -> int:
        """Up to n micro-steps of actor i, stopping early when it finishes or blocks;
        returns how many it took (a run-length-encoded run of one actor's steps)."""
        if not 0 <= i < len(self.actors):
            raise EngineError(f"no actor {i}")
        taken = 0
        while taken < n and not self.done(i) and not self.blocked(i):
            self._run(i, shared_done=False)
            taken += 1
        return taken

    def _run(self, i: int, shared_done: bool) -> None:
        a = self.actors[i]
        while a.op_i < len(a.ops):
            instr = self.code[a.pc]
            if instr[0] >= I.OP_LOCK:
                if shared_done:
                    return
                shared_done = self._shared(i, a, instr)
            elif instr[0] == I.OP_END:
                a.op_i += 1
                self._flag_last(I.EVF_OP_DONE)
                self._start_op(i)
                if self.dlog.written and self.all_done():
                    self._final_checks(i)
            else:
                self._local(a, instr)

    def run_round_robin(self, max_steps: int = -1, runs: list | None = None) -> int:
        """Round-robin in file order, one micro-step each, skipping finished and blocked actors.
        `runs`, if given, receives the schedule run-length encoded: [actor, steps] pairs,
        the last pair extended while the same actor steps again."""
        steps = 0
        n = len(self.actors)
        while not self.all_done() and steps != max_steps:
            progressed = False
            for i in range(n):
                if not self.done(i) and not self.blocked(i):
                    self.step(i)
                    steps += 1
                    progressed = True
                    if runs is not None:
                        add_run(runs, i)
                    if steps == max_steps:
                        break
            if not progressed:
                raise EngineError("deadlock: every unfinished actor is blocked")
        return steps

    # --- register-only instructions ----------------------------------------------------
    def _local(self, a: _Actor, instr) -> None:
        op, x, y, z = instr
        r, k = a.regs, self.consts
        a.pc += 1
        if op == I.OP_MOV:
            r[x] = r[y]
        elif op == I.OP_MOVK:
            r[x] = k[y]
        elif op == I.OP_AND:
            r[x] = r[y] & k[z]
        elif op == I.OP_ANDN:
            r[x] = r[y] & ~k[z] & 0xFFFF_FFFF_FFFF_FFFF
        elif op == I.OP_ORR:
            r[x] = r[y] | k[z]
        elif op == I.OP_EOR:
            r[x] = r[y] ^ r[z]
        elif op == I.OP_ORRR:
            r[x] = r[y] | r[z]
        elif op == I.OP_ADDK:
            r[x] = (r[y] + k[z]) & 0xFFFF_FFFF_FFFF_FFFF
        elif op == I.OP_BZ:
            if not r[x] & k[y]:
                a.pc = z
        elif op == I.OP_BNZ:
            if r[x] & k[y]:
                a.pc = z
        elif op == I.OP_BEQ:
            if r[x] == r[y]:
                a.pc = z
        elif op == I.OP_BEQK:
            if r[x] == k[y]:
                a.pc = z
        elif op == I.OP_BNEK:
            if r[x] != k[y]:
                a.pc = z
        elif op == I.OP_BLT:
            if r[x] < r[y]:
                a.pc = z
        elif op == I.OP_B:
            a.pc = x
        elif op == I.OP_WALK_INIT:
            r[I.WLEVEL] = self.start_level
            r[I.WT0 + self.start_level] = B.TABLE_BASE
            if x == 1:
                r[I.CUR] = r[I.IPA] & ~(B.PAGE_SIZE - 1)
        elif op == I.OP_MEMSLOT:
            r[x] = 0
            ipa = r[I.IPA]
            for slot in self.spec.memslots:
                if slot.ipa <= ipa < slot.end:
                    # memslot_is_logging -> force_pte: a 4K page even in a block memslot
                    r[I.LOG] = int(self.dlog.is_logging(ipa))
                    size = B.PAGE_SIZE if r[I.LOG] else slot.leaf_size
                    base = ipa & ~(size - 1)
                    template = k[y] if size == B.PAGE_SIZE else k[z]
                    r[x] = template | (slot.pa + base - slot.ipa)
                    r[I.LEVEL] = B.leaf_level_for_size(size)
                    break
        elif op == I.OP_ALLOC:
            if self.free_pages:
                page, self.free_pages = self.free_pages[0], self.free_pages[1:]
            else:
                page = B.TABLE_BASE + 8 * len(self.mem)
                self.mem.extend([0] * B.PTRS_PER_TABLE)
            r[x] = page | B.DESC_VALID | B.DESC_TYPE
        elif op == I.OP_FREE:
            self.free_pages = tuple(sorted((*self.free_pages, r[x] & B.OA_MASK)))
        elif op == I.OP_DESCEND:
            desc, level = r[x], r[I.LEVEL]
            if level < 3 and desc & B.DESC_VALID and desc & B.DESC_TYPE:
                r[I.WLEVEL] = level + 1
                r[I.WT0 + level + 1] = desc & B.OA_MASK
                r[I.CUR] = max(r[I.EIPA], r[I.IPA] & ~(B.PAGE_SIZE - 1))
        elif op == I.OP_TABLE_EMPTY:
            table = r[y] & B.OA_MASK
            r[x] = int(
                table != B.TABLE_BASE and not any(d & B.DESC_VALID for d in self.table(table))
            )
        elif op == I.OP_LOG_TRACK:
            self.dlog.track(r[I.IPA], r[I.END])
        elif op == I.OP_TLB_IPA_LOCAL:
            ipa = r[I.IPA]
            if self.spec.tlbi_vmalle1:  # what-if: ... TLBI VMALLE1 (this CPU) follows
                a.tlb = []
            a.tlb = [e for e in a.tlb if not e[0] <= ipa < e[0] + e[1]]
        else:
            raise AssertionError(f"unknown local opcode {op}")

    # --- shared instructions: each is one micro-step ------------------------------------
    def _shared(self, i: int, a: _Actor, instr) -> bool:
        op, x, y, z = instr
        r, k = a.regs, self.consts
        if op == I.OP_LOCK:
            if not self._lock_free(x):
                raise EngineError(f"actor {i} reached a held kvm->mmu_lock inside a step")
            if x == I.LOCK_READ:
                self.lock_readers += 1
            else:
                self.lock_writer = i
            self._event(i, I.EV_LOCK, detail=x)
            a.pc += 1
        elif op == I.OP_UNLOCK:
            if x == I.LOCK_READ:
                self.lock_readers -= 1
            else:
                self.lock_writer = -1
            self._event(i, I.EV_UNLOCK, detail=x)
            a.pc += 1
        elif op == I.OP_LOAD:
            value = self.read(r[I.PTR])
            r[x] = value
            self._event(i, I.EV_LOAD, r[I.LEVEL], r[I.PTR], self._leaf_ipa(r), value, value)
            a.pc += 1
        elif op == I.OP_LDXR:
            value = self.read(r[I.PTR])
            r[x] = value
            a.mon = r[I.PTR]
            self._event(i, I.EV_LDXR, r[I.LEVEL], r[I.PTR], self._leaf_ipa(r), value, value)
            a.pc += 1
        elif op == I.OP_STORE:
            self._software_write(i, a, r[x], k[y], I.EV_STORE)
            a.pc += 1
        elif op == I.OP_STXR:
            addr = r[I.PTR]
            if a.mon == addr:
                a.mon = 0
                self._software_write(i, a, r[y], k[z], I.EV_STXR_OK)
                r[x] = 0
            else:
                a.mon = 0
                value = self.read(addr)
                self._event(i, I.EV_STXR_FAIL, r[I.LEVEL], addr, self._leaf_ipa(r), value, r[y])
                r[x] = 1
            a.pc += 1
        elif op == I.OP_CAS:
            addr = r[I.PTR]
            cur = self.read(addr)
            if cur == r[x]:
                self._software_write(i, a, r[y], k[z], I.EV_CAS_OK)
                r[I.STATUS] = 0
            else:
                self._event(i, I.EV_CAS_FAIL, r[I.LEVEL], addr, self._leaf_ipa(r), cur, r[y])
                r[I.STATUS] = 1
            r[x] = cur
            a.pc += 1
        elif op == I.OP_TLBI_IPA:
            self._tlbi(r[x])
            self._event(i, I.EV_TLBI, ipa=r[x], detail=0)
            a.pc += 1
        elif op == I.OP_TLBI_ALL:
            self._tlbi(None)
            self._event(i, I.EV_TLBI, detail=1)
            a.pc += 1
        elif op == I.OP_SWALK:
            return self._swalk(i, a, instr)
        elif op == I.OP_RWALK:
            return self._rwalk(i, a, instr)
        elif op == I.OP_HW_ACCESS:
            self._hw_access(i, a, instr)
        elif op == I.OP_TLB_EVICT:  # Arm ARM: a TLB may evict any entry at any time
            self.actors[r[x]].tlb = []
            self._event(i, I.EV_TLBI, ipa=r[x], detail=2)
            a.pc += 1
        elif op == I.OP_MARK_DIRTY:
            page = r[I.IPA] & ~(B.PAGE_SIZE - 1)
            self.dlog.mark(page)
            self._event(i, I.EV_MARK_DIRTY, ipa=page)
            a.pc += 1
        elif op == I.OP_LOG:
            if x:
                self.dlog.start(r[I.IPA], r[I.END])
            else:
                self.dlog.stop(r[I.IPA], r[I.END])
            self._event(i, I.EV_LOG, ipa=r[I.IPA], new=r[I.END], detail=x)
            a.pc += 1
        elif op == I.OP_HARVEST:
            lo = r[I.IPA] & ~(B.PAGE_SIZE - 1)
            word, mask, pages, r[I.AUX] = self.dlog.harvest(r[I.AUX], lo, r[I.END])
            r[I.R0] = int(bool(pages))
            if pages:
                r[I.CUR], r[I.R2] = pages[0], pages[-1] + B.PAGE_SIZE
            self._event(i, I.EV_HARVEST, ipa=word, old=mask)
            a.pc += 1
        else:
            raise AssertionError(f"unknown shared opcode {op}")
        return True

    def _leaf_ipa(self, r) -> int:
        return r[I.EIPA]

    def _software_write(self, i: int, a: _Actor, value: int, meant: int, kind: int) -> None:
        r = a.regs
        addr = r[I.PTR]
        cur = self.read(addr)
        ipa = self._leaf_ipa(r)
        self._write(i, addr, value)
        flags = self._check_store(i, addr, cur, value, meant, r[I.LEVEL], ipa)
        if self.dlog.hwdirty and cur & B.S2AP_W and not value & B.S2AP_W:
            page = self.dlog.sw_cleared(addr)
            if page is not None:  # no_lost_dirty (b): hardware's dirty state discarded
                self._violation(I.CHECK_NO_LOST_DIRTY, i, page, B.S2AP_W)
        self._event(i, kind, r[I.LEVEL], addr, ipa, cur, value, flags=flags)

    def _tlbi(self, ipa) -> None:
        """TLBI IPAS2E1IS / VMALLS12E1IS: broadcast, every vCPU's TLB (and completes the
        break-before-make of the entries it covers)."""
        for a in self.actors:
            if ipa is None:
                a.tlb = []
            else:
                a.tlb = [e for e in a.tlb if not e[0] <= ipa < e[0] + e[1]]
        if ipa is None:
            self.pending = []
        else:
            if self.spec.tlbi_vmalle1:  # what-if: the TLBI VMALLE1IS KVM issues after it
                for a in self.actors:
                    a.tlb = []
            self.pending = [e for e in self.pending if not e[2] <= ipa < e[2] + e[3]]

    def _swalk(self, i: int, a: _Actor, instr) -> bool:
        """OP_SWALK: the kernel's own walk (stage2_get_pmd, pte_offset_kernel)."""
        _, x, y, z = instr
        r = a.regs
        ipa = r[I.IPA]
        level = r[I.WLEVEL]
        target = r[I.LEVEL] if z else 3
        entry = self._entry(r[I.WT0 + level], level, ipa)
        if level >= target:
            r[I.PTR], r[I.LEVEL] = entry, level
            r[I.EIPA] = ipa & ~((1 << B.level_shift(level)) - 1)
            a.pc += 1
            return False
        desc = self.read(entry)
        base = ipa & ~((1 << B.level_shift(level)) - 1)
        self._event(i, I.EV_LOAD, level, entry, base, desc, desc)
        if desc & B.DESC_VALID and desc & B.DESC_TYPE:
            level += 1
            r[I.WLEVEL] = level
            r[I.WT0 + level] = desc & B.OA_MASK
            if level >= target:
                r[I.PTR], r[I.LEVEL] = self._entry(desc & B.OA_MASK, level, ipa), level
                r[I.EIPA] = ipa & ~((1 << B.level_shift(level)) - 1)
                a.pc += 1
            return True
        r[x], r[I.PTR], r[I.LEVEL], r[I.EIPA] = desc, entry, level, base
        a.pc = a.pc + 1 if _leaf_kind(desc, level) else y
        return True

    def _rwalk(self, i: int, a: _Actor, instr) -> bool:
        """OP_RWALK: a range walk reading every entry once (stage2_wp_range's nested loops,
        kvm_pgtable_walk), with the kvm_pgtable walker's TABLE_PRE / TABLE_POST visits."""
        _, x, y, z = instr
        r = a.regs
        cur, end = r[I.CUR], r[z >> 4]
        level = r[I.WLEVEL]
        if r[I.PEND]:
            # Done with the table at `level`: visit the entry that points to it again
            # (ctx->old as read on the way down: KVM's table descriptors are PA | 0b11).
            span = 1 << B.level_shift(level - 1)
            last = cur - 1
            r[I.PEND] -= 1
            r[I.WLEVEL] = level - 1
            r[x] = r[I.WT0 + level] | B.DESC_VALID | B.DESC_TYPE
            r[I.PTR] = self._entry(r[I.WT0 + level - 1], level - 1, last)
            r[I.LEVEL], r[I.EIPA] = level - 1, last & ~(span - 1)
            r[I.VISIT] = I.VISIT_TABLE_POST
            a.pc += 1
            return False
        if cur >= end:
            a.pc = y
            return False
        entry = self._entry(r[I.WT0 + level], level, cur)
        desc = self.read(entry)
        size = 1 << B.level_shift(level)
        base = cur & ~(size - 1)
        self._event(i, I.EV_LOAD, level, entry, base, desc, desc)
        table = level < 3 and desc & B.DESC_VALID and desc & B.DESC_TYPE
        pre = table and z & I.RWALK_TABLE_PRE and level == r[I.TLEVEL]
        if table and not pre:
            r[I.WLEVEL] = level + 1
            r[I.WT0 + level + 1] = desc & B.OA_MASK
            return True
        cur = base + size
        r[I.CUR] = cur
        wlevel = level
        while wlevel > self.start_level and (
            cur % (1 << B.level_shift(wlevel - 1)) == 0 or (z & I.RWALK_TABLE_POST and cur >= end)
        ):
            wlevel -= 1
        if z & I.RWALK_TABLE_POST:
            r[I.PEND] = level - wlevel  # the tables this step finished, visited next
        else:
            r[I.WLEVEL] = wlevel
        if pre or _leaf_kind(desc, level) or z & I.RWALK_VISIT_INVALID:
            r[x], r[I.PTR], r[I.LEVEL], r[I.EIPA] = desc, entry, level, base
            r[I.VISIT] = I.VISIT_TABLE_PRE if pre else I.VISIT_LEAF
            a.pc += 1
        return True

    # --- the hardware ------------------------------------------------------------------
    def _evaluate(self, desc: int, write: int):
        """QEMU ptw.c get_phys_addr_lpae on a leaf: AF (HA), dirty state (HD + DBM), then the
        permission check on the would-be descriptor. Returns (fault, new descriptor)."""
        new = desc
        if not desc & B.AF:
            if not self.spec.ha:
                return I.FAULT_ACCESS_FLAG, desc  # Access Flag fault: software manages AF
            new |= B.AF  # hardware update of the Access Flag (FEAT_HAFDBS, VTCR_EL2.HA)
        if write and self.spec.hd and desc & B.DBM and not new & B.S2AP_W:
            new |= B.S2AP_W  # stage-2 dirty state: DBM makes S2AP[1] writable (VTCR_EL2.HD)
        if not new & (B.S2AP_W if write else B.S2AP_R):
            return I.FAULT_PERMISSION, desc  # checked before anything is written (ptw.c)
        return I.FAULT_NONE, new

    def _target(self, desc: int, write: int):
        """(fault, the descriptor the walker writes, the phase that writes it). Two Arm ARM
        choices, each a [machine] what-if: an access that takes a Permission fault may set
        AF first (R_QSPMS: CONSTRAINED UNPREDICTABLE; phase 3 = update, then fault); the AF
        and dirty-state updates may be two atomic updates, AF first (R_PRHKD; I_DSHLJ: never
        dirty with AF clear)."""
        fault, new = self._evaluate(desc, write)
        if fault == I.FAULT_PERMISSION and self.spec.af_on_permission_fault and not desc & B.AF:
            return I.FAULT_NONE, desc | B.AF, 3
        if not fault and self.spec.af_dirty_separate and (new ^ desc) & B.AF:
            new = desc | B.AF
        return fault, new, 2

    def _complete(self, a: _Actor) -> None:
        a.pc += 1
        a.regs[I.PHASE] = 0
        if a.regs[I.WRITE] and self.dlog.tracked:
            self.dlog.note_write(a.regs[I.IPA])

    def _fill(self, a: _Actor, new: int, level: int, desc_pa: int) -> int:
        """The TLB caches the translation the walk completed (with the descriptor it wrote)."""
        if not self.spec.tlb:
            return 0
        size = 1 << B.level_shift(level)
        base = a.regs[I.IPA] & ~(size - 1)
        a.tlb = [e for e in a.tlb if e[0] != base]
        if len(a.tlb) >= I.TLB_ENTRIES:
            a.tlb.pop(0)
        a.tlb.append((base, size, new, desc_pa))
        return I.EVF_TLB_FILL

    def _fault(self, a: _Actor, fault: int, level: int) -> None:
        if self.count_faults and a.regs[I.FAULTS] < I.FAULTS_MAX:
            a.regs[I.FAULTS] += 1
        a.regs[I.STATUS] = fault
        a.regs[I.FLEVEL] = level  # ESR_EL2.DFSC reports the level of the faulting entry
        a.regs[I.PHASE] = 0
        a.pc = self.code[a.pc][2]

    def _hw_access(self, i: int, a: _Actor, instr) -> None:
        r = a.regs
        ipa, write = r[I.IPA], r[I.WRITE]
        if r[I.PHASE] == 0:
            if self.spec.tlb:
                for base, size, desc, desc_pa in a.tlb:
                    if base <= ipa < base + size:
                        level = {B.PAGE_SIZE: 3, 1 << B.LEVEL_SHIFT_2: 2}.get(size, 1)
                        if desc & (B.S2AP_W if write else B.S2AP_R):
                            self._event(i, I.EV_TLB_HIT, level, desc_pa, base, desc, desc)
                            self._complete(a)
                            return
                        if not (write and self.spec.hd and desc & B.DBM):
                            self._event(
                                i,
                                I.EV_FAULT,
                                level,
                                desc_pa,
                                base,
                                desc,
                                desc,
                                detail=I.FAULT_PERMISSION,
                            )
                            self._fault(a, I.FAULT_PERMISSION, level)
                            return
                        break  # DBM-managed: walk to set the dirty state
            r[I.WLEVEL] = self.start_level
            r[I.WT0 + self.start_level] = B.TABLE_BASE
            r[I.PHASE] = 1
        if r[I.PHASE] == 1:
            level = r[I.WLEVEL]
            entry = self._entry(r[I.WT0 + level], level, ipa)
            desc = self.read(entry)
            base = ipa & ~((1 << B.level_shift(level)) - 1)
            if level < 3 and desc & B.DESC_VALID and desc & B.DESC_TYPE:
                r[I.WLEVEL] = level + 1
                r[I.WT0 + level + 1] = desc & B.OA_MASK
                self._event(i, I.EV_WALK, level, entry, base, desc, desc)
                return
            if not _leaf_kind(desc, level):
                self._event(
                    i, I.EV_FAULT, level, entry, base, desc, desc, detail=I.FAULT_TRANSLATION
                )
                self._fault(a, I.FAULT_TRANSLATION, level)
                return
            fault, new, phase = self._target(desc, write)
            if fault:
                self._event(i, I.EV_FAULT, level, entry, base, desc, desc, detail=fault)
                self._fault(a, fault, level)
                return
            r[I.PTR], r[I.LEVEL] = entry, level
            if new == desc:
                flags = self._fill(a, new, level, entry)
                self._event(i, I.EV_WALK, level, entry, base, desc, desc, flags=flags)
                self._complete(a)
                return
            r[I.HWOLD], r[I.HWNEW], r[I.PHASE] = desc, new, phase
            self._event(i, I.EV_WALK, level, entry, base, desc, desc)
            return
        # PHASE 2 (3: then a Permission fault): the atomic update (arm_casq_ptw); on a
        # mismatch, restart the descriptor evaluation from the value now in memory (I_YZSVV).
        entry, level = r[I.PTR], r[I.LEVEL]
        base = ipa & ~((1 << B.level_shift(level)) - 1)
        cur = self.read(entry)
        if cur == r[I.HWOLD]:
            written = r[I.HWNEW]
            self._write(i, entry, written)
            if written & ~cur & B.S2AP_W:  # the dirty state (HD + DBM) was set
                self.dlog.hw_set_dirty(entry, ipa)
            if r[I.PHASE] == 3:
                self._event(
                    i, I.EV_HW_UPDATE, level, entry, base, cur, written, detail=I.FAULT_PERMISSION
                )
                self._fault(a, I.FAULT_PERMISSION, level)
                return
            _, more, _ = self._target(written, write)
            if more != written:  # R_PRHKD what-if: the dirty-state update follows
                self._event(i, I.EV_HW_UPDATE, level, entry, base, cur, written)
                r[I.HWOLD], r[I.HWNEW] = written, more
                return
            flags = self._fill(a, written, level, entry)
            self._event(i, I.EV_HW_UPDATE, level, entry, base, cur, written, flags=flags)
            self._complete(a)
            return
        if level < 3 and cur & B.DESC_VALID and cur & B.DESC_TYPE:
            # The leaf became a table (a block split): the walk goes on through it, as
            # QEMU's restart does (goto next_level).
            r[I.WLEVEL] = level + 1
            r[I.WT0 + level + 1] = cur & B.OA_MASK
            r[I.PHASE] = 1
            self._event(i, I.EV_HW_UPDATE_FAIL, level, entry, base, r[I.HWOLD], cur)
            return
        phase = 2
        if not _leaf_kind(cur, level):
            fault, new = I.FAULT_TRANSLATION, cur
        else:
            fault, new, phase = self._target(cur, write)
        if fault:
            self._event(i, I.EV_HW_UPDATE_FAIL, level, entry, base, r[I.HWOLD], cur, detail=fault)
            self._fault(a, fault, level)
            return
        if new == cur:
            flags = self._fill(a, new, level, entry)
            self._event(i, I.EV_HW_UPDATE_FAIL, level, entry, base, r[I.HWOLD], cur, flags=flags)
            self._complete(a)
            return
        self._event(i, I.EV_HW_UPDATE_FAIL, level, entry, base, r[I.HWOLD], cur)
        r[I.HWOLD], r[I.HWNEW], r[I.PHASE] = cur, new, phase

    # --- exploration support -----------------------------------------------------------
    def save(self) -> int:
        self._marks.append(self._state_copy())
        return len(self._marks) - 1

    def restore(self, mark: int) -> None:
        del self._marks[mark + 1 :]
        (
            mem,
            actors,
            self.lock_writer,
            self.lock_readers,
            pending,
            self.viol_mask,
            nviol,
            self.seq,
            nevents,
            dlog,
            self.free_pages,
        ) = self._marks[mark]
        self.dlog.load(dlog)
        self.mem = list(mem)
        self.actors = [x.copy() for x in actors]
        self.pending = list(pending)
        del self.violations[nviol:]
        del self.events[nevents:]

    def release(self, mark: int) -> None:
        del self._marks[mark:]

    def _state_copy(self):
        return (
            list(self.mem),
            [x.copy() for x in self.actors],
            self.lock_writer,
            self.lock_readers,
            list(self.pending),
            self.viol_mask,
            len(self.violations),
            self.seq,
            len(self.events),
            self.dlog.state(),
            self.free_pages,
        )

    def state_key(self) -> bytes:
        """Identifies the machine state for de-duplication (not the sequence number)."""
        h = hashlib.blake2b(digest_size=16)
        h.update(struct.pack(f"<{len(self.mem)}Q", *self.mem))
        h.update(
            repr(
                (
                    tuple(a.state() for a in self.actors),
                    self.lock_writer,
                    self.lock_readers,
                    tuple(self.pending),
                    self.viol_mask,
                    self.dlog.state(),
                    self.free_pages,
                )
            ).encode()
        )
        return h.digest()

    def mem_array(self):
        return array("Q", self.mem)

    def walk_leaves(self, maps):
        """The core's walk_leaves: (descriptors, levels) of the leaves of `maps`."""
        from ._leaves import walk_maps  # (the C-speed reader both engines' callers use)

        return walk_maps(self.mem_array(), self.start_level, self.start_entries, maps)

    def lock_holder(self):
        return self.lock_writer, self.lock_readers

    # --- live sessions: injected operations, snapshots, table views ------------------------
    def append_op(self, i: int, op) -> None:
        """Queue one more operation (an OpSpec) on actor i; a finished actor starts it."""
        a = self.actors[i]
        was_done = self.done(i)
        a.ops = (*a.ops, op)
        if was_done:
            self._start_op(i)
            self._settle(i)

    def get_state(self) -> dict:
        """Everything that determines the future (engine/snapshot.py packs it)."""
        return {
            "mem": self.mem_array().tobytes(),
            "actors": [
                {
                    "ops": [op.row() for op in a.ops],
                    "op_i": a.op_i,
                    "pc": a.pc,
                    "regs": list(a.regs),
                    "mon": a.mon,
                    "tlb": [list(e) for e in a.tlb],
                }
                for a in self.actors
            ],
            "lock_writer": self.lock_writer,
            "lock_readers": self.lock_readers,
            "pending": [list(e) for e in self.pending],
            "viol_mask": self.viol_mask,
            "violations": [list(v) for v in self.violations],
            "seq": self.seq,
            "dirty_log": self.dlog.state(),
            "free_pages": list(self.free_pages),
        }

    def set_state(self, state: dict) -> None:
        mem = array("Q")
        mem.frombytes(state["mem"])
        if len(mem) < len(self.spec.mem) or len(mem) % B.PTRS_PER_TABLE:
            raise EngineError("snapshot table memory does not match this scenario")
        if len(state["actors"]) != len(self.actors):
            raise EngineError("snapshot actors do not match this scenario")
        self.mem = list(mem)
        for a, st in zip(self.actors, state["actors"], strict=True):
            a.ops = tuple(OpSpec(*op) for op in st["ops"])
            regs = list(st["regs"]) + [0] * (I.NREGS - len(st["regs"]))  # older snapshots
            a.op_i, a.pc, a.regs, a.mon = st["op_i"], st["pc"], regs, st["mon"]
            a.tlb = [tuple(e) for e in st["tlb"]]
        self.lock_writer, self.lock_readers = state["lock_writer"], state["lock_readers"]
        self.pending = [tuple(e) for e in state["pending"]]
        self.viol_mask = state["viol_mask"]
        self.violations = [tuple(v) for v in state["violations"]]
        self.seq = state["seq"]
        self.dlog.load(state.get("dirty_log", DirtyLog().state()))  # (slots stay)
        self.free_pages = tuple(state.get("free_pages", ()))
        self.events = []
        self._marks = []

    def ops_of(self, i: int) -> list:
        """The OpSpecs of actor i (injected ones included)."""
        return list(self.actors[i].ops)

    def subtree_counts(self, table_pa: int, level: int, entries: int = B.PTRS_PER_TABLE):
        """(leaves, young, read-only, dirty, invalid) over the subtree of a table: the
        counters a collapsed table shows (dirty: DBM set and S2AP[1] writable)."""
        counts = [0] * 5
        for d in self.table(table_pa, entries):
            if level < 3 and d & B.DESC_VALID and d & B.DESC_TYPE:
                sub = self.subtree_counts(d & B.OA_MASK, level + 1)
                counts = [x + y for x, y in zip(counts, sub, strict=True)]
            elif _leaf_kind(d, level):
                counts[0] += 1
                counts[1] += bool(d & B.AF)
                counts[2] += (d & B.S2AP_MASK) == B.S2AP_R
                counts[3] += bool(d & B.DBM and d & B.S2AP_W)
            else:
                counts[4] += 1
        return tuple(counts)

    def clear_events(self) -> None:
        self.events = []

    def table(self, table_pa: int, entries: int = B.PTRS_PER_TABLE) -> list[int]:
        first = (table_pa - B.TABLE_BASE) >> 3
        if table_pa < B.TABLE_BASE or first + entries > len(self.mem):
            raise IndexError(f"no table at {table_pa:#x}")
        return self.mem[first : first + entries]

    def dirty_log(self) -> dict | None:
        """The dirty bitmap and harvested pages, once a logging operation has run."""
        return self.dlog.view() if self.dlog.used else None

    def actor_view(self, i: int) -> dict:
        a = self.actors[i]
        return {
            "op_i": a.op_i,
            "pc": a.pc,
            "regs": list(a.regs),
            "monitor": a.mon,
            "tlb": [tuple(e) for e in a.tlb],
        }

    @property
    def n_events_recorded(self) -> int:
        return len(self.events)

    def event_tuples(self, start: int = 0) -> list[tuple]:
        return [tuple(e) for e in self.events[start:]]


def add_run(runs: list, actor: int) -> None:
    """One more micro-step of `actor` on a run-length encoded schedule ([actor, steps] pairs)."""
    if runs and runs[-1][0] == actor:
        runs[-1][1] += 1
    else:
        runs.append([actor, 1])
