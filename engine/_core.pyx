# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""The Cython core: the same machine as engine/twin.py, in typed memory.

Table memory is one uint64_t array, actors are C structs, events go to C arrays of
records; a micro-step allocates no Python object. The twin is the oracle: every
rule here mirrors a method there (same names), and tests/test_differential.py checks
that both produce identical traces and final states on random scenarios.
"""

from cpython.array cimport array

cimport cython
from cpython.bytes cimport PyBytes_FromStringAndSize
from libc.stdint cimport int32_t, int64_t, uint8_t, uint32_t, uint64_t
from libc.stdlib cimport free, malloc, realloc
from libc.limits cimport LLONG_MAX
from libc.string cimport memcpy, memset


from . import isa
from ._leaves import walk_maps
from .dirtylog import DirtyLog
from .spec import OpSpec
from .twin import EngineError

_EMPTY_SLOTS = array("Q")  # (walk_leaves of a machine without tables)

cdef extern from "_bits.h":
    uint64_t PT_TABLE_BASE, PT_PAGE_SIZE, PT_PTRS_PER_TABLE, PT_OA_MASK, PT_BBM_MASK
    uint64_t PT_DESC_VALID, PT_DESC_TYPE, PT_AF, PT_DBM, PT_S2AP_R, PT_S2AP_W
    uint64_t PT_LEVEL_SHIFT_2, PT_NREGS, PT_TLB_ENTRIES
    uint64_t PT_R0, PT_PTR, PT_IPA, PT_END, PT_CUR, PT_LEVEL, PT_WLEVEL, PT_WT0, PT_RET
    uint64_t PT_STATUS, PT_PHASE, PT_HWOLD, PT_HWNEW, PT_WRITE, PT_EIPA, PT_FAULTS, PT_FAULTS_MAX
    uint64_t PT_RWALK_VISIT_INVALID, PT_RWALK_TABLE_POST, PT_RWALK_TABLE_PRE
    uint64_t PT_DIRTY_WORD_PAGES
    uint64_t PT_FLEVEL, PT_LOG, PT_TLEVEL, PT_VISIT, PT_AUX, PT_R2, PT_PEND
    uint64_t PT_VISIT_LEAF, PT_VISIT_TABLE_POST, PT_VISIT_TABLE_PRE
    uint64_t PT_EV_MARK_DIRTY, PT_EV_LOG, PT_EV_HARVEST, PT_CHECK_NO_LOST_DIRTY, PT_S2AP_RW
    uint64_t PT_LOCK_READ
    # opcodes as an enum: Cython compiles an if/elif chain over them to one C switch
    enum:
        PT_OP_MOV
        PT_OP_MOVK
        PT_OP_AND
        PT_OP_ANDN
        PT_OP_ORR
        PT_OP_BZ
        PT_OP_BNZ
        PT_OP_BEQ
        PT_OP_B
        PT_OP_BLT
        PT_OP_ADDK
        PT_OP_MEMSLOT
        PT_OP_END
        PT_OP_WALK_INIT
        PT_OP_TLB_IPA_LOCAL
        PT_OP_BEQK
        PT_OP_BNEK
        PT_OP_EOR
        PT_OP_ORRR
        PT_OP_LOCK
        PT_OP_UNLOCK
        PT_OP_LOAD
        PT_OP_STORE
        PT_OP_LDXR
        PT_OP_STXR
        PT_OP_CAS
        PT_OP_TLBI_IPA
        PT_OP_TLBI_ALL
        PT_OP_SWALK
        PT_OP_RWALK
        PT_OP_HW_ACCESS
        PT_OP_TLB_EVICT
        PT_OP_ALLOC
        PT_OP_DESCEND
        PT_OP_TABLE_EMPTY
        PT_OP_LOG_TRACK
        PT_OP_FREE
        PT_OP_MARK_DIRTY
        PT_OP_LOG
        PT_OP_HARVEST
    uint64_t PT_FAULT_NONE, PT_FAULT_TRANSLATION, PT_FAULT_ACCESS_FLAG, PT_FAULT_PERMISSION
    uint64_t PT_EV_LOAD, PT_EV_STORE, PT_EV_LDXR, PT_EV_STXR_OK, PT_EV_STXR_FAIL, PT_EV_CAS_OK
    uint64_t PT_EV_CAS_FAIL, PT_EV_WALK, PT_EV_HW_UPDATE, PT_EV_HW_UPDATE_FAIL, PT_EV_FAULT
    uint64_t PT_EV_TLB_HIT, PT_EV_LOCK, PT_EV_UNLOCK, PT_EV_TLBI
    uint64_t PT_EVF_TLB_FILL, PT_EVF_OP_DONE, PT_EVF_LOST_UPDATE, PT_EVF_BBM
    uint64_t PT_CHECK_NO_LOST_UPDATE, PT_CHECK_BREAK_BEFORE_MAKE

# Superinstructions: two register-only instructions, at pc and pc + 1, in one dispatch
# (the pairs the bulk paths run most). Only the first's opcode is replaced, in the core's
# copy of the program: pc + 1 keeps its own, for the branches that go there, and the pair
# does exactly what the two do one after the other (no event, no step between them).
# Their opcodes are local ones (below OP_LOCK) that engine/isa.py leaves free.
cdef enum:
    FUSE_ANDN_ORR = 20  # bit clear then set (kvm_set_s2pte_readonly, stage2_attr_walker)
    FUSE_AND_BEQK = 21  # test a masked field (if (!kvm_s2pte_readonly(pte)))
    FUSE_ADDK_BLT = 22  # the gfn loop (for (; gfn < gfn_end; ++gfn))
    FUSE_BZ_BZ = 23  # two bit tests, each may leave (pte_none, pte_young)
    FUSE_ORR_ADDK_BLT = 24  # young |= ...; the gfn loop (three instructions)
    FUSE_ORRR_ADDK_BLT = 25

FUSED = {
    (PT_OP_ANDN, PT_OP_ORR): FUSE_ANDN_ORR,
    (PT_OP_AND, PT_OP_BEQK): FUSE_AND_BEQK,
    (PT_OP_ADDK, PT_OP_BLT): FUSE_ADDK_BLT,
    (PT_OP_BZ, PT_OP_BZ): FUSE_BZ_BZ,
    (PT_OP_ORR, PT_OP_ADDK, PT_OP_BLT): FUSE_ORR_ADDK_BLT,
    (PT_OP_ORRR, PT_OP_ADDK, PT_OP_BLT): FUSE_ORRR_ADDK_BLT,
}

DEF NR = 28  # isa.NREGS (checked at import)
DEF NTLB = 64  # isa.TLB_ENTRIES (checked at import)
DEF EV_SHIFT = 12
DEF EV_CHUNK = 4096  # event records per chunk (1 << EV_SHIFT; 224 KiB)

if NR != PT_NREGS or NTLB != PT_TLB_ENTRIES:
    raise ImportError("engine/_core.pyx: NR/NTLB disagree with engine/isa.py; update them")
if set(FUSED.values()) & {v for n, v in vars(isa).items() if n.startswith("OP_")} or max(
        FUSED.values()) >= PT_OP_LOCK:
    raise ImportError("engine/_core.pyx: a superinstruction's opcode is taken in engine/isa.py")

ctypedef struct Instr:
    int32_t op
    int32_t a
    int32_t b
    int32_t c

ctypedef struct TlbEntry:
    uint64_t base
    uint64_t size
    uint64_t desc
    uint64_t desc_pa

ctypedef struct COp:
    int32_t entry
    uint64_t ipa
    uint64_t end
    uint64_t write

ctypedef struct Actor:
    int32_t kind
    int32_t n_ops
    int32_t op_i
    int32_t pc
    int32_t op_base   # index of the actor's first op in Machine.ops
    int32_t tlb_n
    uint64_t mon
    uint64_t regs[NR]
    TlbEntry tlb[NTLB]

ctypedef struct Event:
    int64_t seq
    int32_t actor
    int32_t op_i
    int32_t pc
    uint8_t kind
    uint8_t detail
    uint8_t flags
    uint8_t level
    uint64_t addr
    uint64_t ipa
    uint64_t old
    uint64_t new

ctypedef struct Pending:
    uint64_t addr
    uint64_t old
    uint64_t ipa
    uint64_t size

ctypedef struct Violation:
    int32_t check
    int32_t actor
    int32_t op_i
    int64_t seq
    uint64_t ipa
    uint64_t bits

ctypedef struct Memslot:
    uint64_t ipa
    uint64_t end
    uint64_t pa
    uint64_t leaf_size
    uint64_t level




cdef inline int level_shift(int level) noexcept nogil:
    return 12 + 9 * (3 - level)


cdef inline int leaf_kind(uint64_t desc, int level) noexcept nogil:
    """0: not a valid leaf; else its level (twin: _leaf_kind)."""
    if not (desc & PT_DESC_VALID):
        return 0
    if level == 3:
        return 3 if desc & PT_DESC_TYPE else 0
    if (level == 1 or level == 2) and not (desc & PT_DESC_TYPE):
        return level
    return 0


cdef inline uint64_t mix(uint64_t slot, uint64_t value, uint64_t seed) noexcept nogil:
    """Per-descriptor hash term (splitmix64); zero descriptors contribute nothing."""
    if value == 0:
        return 0
    cdef uint64_t z = value ^ (slot * <uint64_t>0x9E3779B97F4A7C15ULL) ^ seed
    z = (z ^ (z >> 30)) * <uint64_t>0xBF58476D1CE4E5B9ULL
    z = (z ^ (z >> 27)) * <uint64_t>0x94D049BB133111EBULL
    return z ^ (z >> 31)


cdef inline uint64_t words(uint64_t h, const uint64_t *p, Py_ssize_t n) noexcept nogil:
    """Hash n 64-bit words into h: one multiply and shift per word (a byte at a time was a
    third of the explorer's time), in four independent chains over runs of eight or more
    (one chain's multiplies wait on each other: it was a fifth of the explorer's time)."""
    cdef Py_ssize_t k = 0
    cdef uint64_t b, c, d
    if n >= 8:
        b = h ^ <uint64_t>0x5851F42D4C957F2DULL
        c = h ^ <uint64_t>0x14057B7EF767814FULL
        d = h ^ <uint64_t>0xD6E8FEB86659FD93ULL
        while k + 4 <= n:
            h = (h ^ p[k]) * <uint64_t>0x9E3779B97F4A7C15ULL
            b = (b ^ p[k + 1]) * <uint64_t>0x9E3779B97F4A7C15ULL
            c = (c ^ p[k + 2]) * <uint64_t>0x9E3779B97F4A7C15ULL
            d = (d ^ p[k + 3]) * <uint64_t>0x9E3779B97F4A7C15ULL
            h ^= h >> 32
            b ^= b >> 32
            c ^= c >> 32
            d ^= d >> 32
            k += 4
        h = words(h, &b, 1)
        h = words(h, &c, 1)
        h = words(h, &d, 1)
    while k < n:
        h = (h ^ p[k]) * <uint64_t>0x9E3779B97F4A7C15ULL
        h ^= h >> 32
        k += 1
    return h


# Event chunks of machines gone, kept for the next ones (up to SPARE_MAX, 28 MiB): their
# pages are already touched, so a fresh machine's records cost no page faults (one per 4
# KiB: 4,009 for a 311,492-step run, a third of its time here). The GIL guards them.
DEF SPARE_MAX = 128
cdef Event **_spare = NULL
cdef Py_ssize_t _n_spare = 0


cdef Event *_chunk_get() noexcept nogil:
    global _n_spare
    if _n_spare:
        _n_spare -= 1
        return _spare[_n_spare]
    return <Event *>malloc(EV_CHUNK * sizeof(Event))


cdef void _chunk_put(Event *chunk) noexcept nogil:
    global _spare, _n_spare
    if _spare == NULL:
        _spare = <Event **>malloc(SPARE_MAX * sizeof(Event *))
    if _spare != NULL and _n_spare < SPARE_MAX:
        _spare[_n_spare] = chunk
        _n_spare += 1
    else:
        free(chunk)


cdef (int, long long) _extend(list runs, int last, long long count, int i, long long n) except *:
    """A schedule's run-length encoding (runs, then the open pair last, count) after n
    more steps of actor i: the open pair grows, or is closed and another opens."""
    if runs is None or not n:
        return last, count
    if i == last:
        return last, count + n
    if count:
        runs.append([last, count])
    return i, n


@cython.final
cdef class Machine:
    """One stage-2 regime with its actors (engine/twin.py's Machine, in C)."""

    cdef readonly object spec
    cdef uint64_t *mem
    cdef Py_ssize_t nslots  # descriptors in use: the initial image plus allocated table pages
    cdef Py_ssize_t cap_slots
    cdef readonly object dlog  # engine.dirtylog.DirtyLog (shared with the twin)
    cdef bint dl_watch  # the dirty log needs to hear of completed guest writes
    cdef tuple free_pages  # table pages given back before they were ever linked (twin)
    cdef Actor *act
    cdef readonly int n_actors
    cdef COp *ops
    cdef Instr *code
    cdef uint64_t *consts
    cdef Memslot *memslots
    cdef int n_memslots
    cdef int start_level
    cdef uint64_t start_entries
    cdef uint64_t index_mask[4]  # per level: entries - 1 (the start level's may be more)
    cdef bint ha, hd, tlb_on, count_faults
    cdef bint af_on_perm, af_dirty_separate, tlbi_vmalle1  # [machine] what-ifs
    cdef int lock_writer
    cdef int lock_readers
    cdef Pending *pending
    cdef Py_ssize_t n_pending, cap_pending
    cdef readonly uint64_t viol_mask
    cdef Violation *viols
    cdef Py_ssize_t n_viols, cap_viols
    cdef readonly int64_t seq
    # Event records, in chunks of EV_CHUNK that never move: growing copies nothing (a
    # realloc'd buffer copied every record once more, and touched twice the memory).
    cdef Event **chunks
    cdef Py_ssize_t n_chunks, cap_chunks
    cdef Event *events  # the chunk records n_events.. go to: record ev_base + j is events[j]
    cdef Py_ssize_t ev_base
    cdef Py_ssize_t n_events
    cdef Py_ssize_t room  # records _event writes before asking _event_room (0: ask now)
    cdef public bint recording
    cdef long long ran  # micro-steps the current _run call has completed (if it raises)
    cdef Py_ssize_t _record_limit  # recording stops for good past this many (-1: none)
    cdef uint64_t h1, h2
    cdef bint hash_valid
    # exploration marks: an undo log of descriptor writes and saved small state
    cdef uint64_t *undo
    cdef Py_ssize_t n_undo, cap_undo
    cdef list marks
    cdef object mem_owner  # the spec's image, when this machine took it over (not malloc'd)
    cdef list _op_texts  # per actor: the OpSpec objects (names and texts for views)
    cdef tuple _ops_frozen  # the same, immutable: what a mark remembers


    engine = "cython"

    def __cinit__(self, spec, take_image=False):
        self.mem = NULL
        self.act = NULL
        self.ops = NULL
        self.code = NULL
        self.consts = NULL
        self.memslots = NULL
        self.pending = NULL
        self.viols = NULL
        self.chunks = NULL
        self.events = NULL
        self.undo = NULL

    def __init__(self, spec, bint take_image=False):
        """take_image: table memory is the spec's image itself, not a copy (`run`, which
        never needs the initial image again: the copy was the peak's second 8 MB at a
        million leaves); the image is then the machine's until it first grows."""
        cdef Py_ssize_t k, j, nops
        cdef array image
        cdef const uint64_t[::1] src
        self.spec = spec
        g = spec.geometry
        self.start_level = g.start_level
        self.start_entries = g.start_entries
        for k in range(4):
            self.index_mask[k] = PT_PTRS_PER_TABLE - 1
        self.index_mask[self.start_level] = self.start_entries - 1
        self.ha = spec.ha
        self.hd = spec.hd
        self.tlb_on = spec.tlb
        self.count_faults = spec.count_faults
        self.af_on_perm = spec.af_on_permission_fault
        self.af_dirty_separate = spec.af_dirty_separate
        self.tlbi_vmalle1 = spec.tlbi_vmalle1
        self.nslots = len(spec.mem)
        self.cap_slots = max(512, self.nslots)
        if take_image and self.nslots and isinstance(spec.mem, array) and spec.mem.typecode == "Q":
            image = spec.mem
            self.mem_owner = image
            self.mem = <uint64_t *>image.data.as_ulonglongs
            self.cap_slots = self.nslots
        else:
            self.mem = <uint64_t *>malloc(self.cap_slots * 8)
            if self.nslots:
                src = spec.mem  # (read in place: a tobytes() copy was 8 MB more at the peak)
                memcpy(self.mem, &src[0], self.nslots * 8)
        self.dlog = DirtyLog((m.ipa, m.end) for m in spec.memslots)
        self.dl_watch = False
        self.free_pages = ()
        code = spec.program.code
        self.code = <Instr *>malloc(len(code) * sizeof(Instr))
        for k, (op, a, b, c) in enumerate(code):
            self.code[k].op, self.code[k].a, self.code[k].b, self.code[k].c = op, a, b, c
        for k in range(len(code)):
            ops = tuple(x[0] for x in code[k:k + 3])
            self.code[k].op = FUSED.get(ops, FUSED.get(ops[:2], ops[0]))
            if ops[0] in (PT_OP_LOAD, PT_OP_LDXR, PT_OP_STORE):
                # where the step goes on after them, in their unused c: past a `b`
                if code[k][3]:
                    raise AssertionError(f"pc {k}: the core keeps the next pc in c")
                self.code[k].c = code[k + 1][1] if ops[1:2] == (PT_OP_B,) else k + 1
        consts = spec.program.consts
        self.consts = <uint64_t *>malloc(len(consts) * 8)
        for k, value in enumerate(consts):
            self.consts[k] = value
        self.n_memslots = len(spec.memslots)
        self.memslots = <Memslot *>malloc(max(1, self.n_memslots) * sizeof(Memslot))
        for k, slot in enumerate(spec.memslots):
            self.memslots[k].ipa = slot.ipa
            self.memslots[k].end = slot.end
            self.memslots[k].pa = slot.pa
            self.memslots[k].leaf_size = slot.leaf_size
            self.memslots[k].level = {4096: 3, 1 << 21: 2}.get(slot.leaf_size, 1)
        self.n_actors = len(spec.actors)
        self.act = <Actor *>malloc(max(1, self.n_actors) * sizeof(Actor))
        memset(self.act, 0, max(1, self.n_actors) * sizeof(Actor))
        nops = sum(len(a.ops) for a in spec.actors)
        self.ops = <COp *>malloc(max(1, nops) * sizeof(COp))
        j = 0
        self._op_texts = [list(a.ops) for a in spec.actors]
        self._ops_frozen = tuple(tuple(x) for x in self._op_texts)
        for k, a in enumerate(spec.actors):
            self.act[k].kind = a.kind
            self.act[k].n_ops = len(a.ops)
            self.act[k].op_base = j
            self.act[k].pc = -1
            for op in a.ops:
                self.ops[j].entry = op.entry
                self.ops[j].ipa = op.ipa
                self.ops[j].end = op.end
                self.ops[j].write = op.write
                j += 1
            if len(a.tlb) > NTLB:
                raise EngineError(f"actor {a.name}: {len(a.tlb)} TLB entries; the model holds {NTLB}")
            self.act[k].tlb_n = len(a.tlb)
            for t, (base, size, desc, desc_pa) in enumerate(a.tlb):
                self.act[k].tlb[t].base = base
                self.act[k].tlb[t].size = size
                self.act[k].tlb[t].desc = desc
                self.act[k].tlb[t].desc_pa = desc_pa
        self.lock_writer = -1
        self.lock_readers = 0
        self.cap_pending = 16
        self.pending = <Pending *>malloc(self.cap_pending * sizeof(Pending))
        self.n_pending = 0
        self.cap_viols = 16
        self.viols = <Violation *>malloc(self.cap_viols * sizeof(Violation))
        self.n_viols = 0
        self.viol_mask = 0
        self.seq = 0
        self.n_chunks = self.cap_chunks = 0
        self.ev_base = 0
        self.n_events = 0
        self.recording = True
        self._record_limit = -1
        self.room = 0
        self.cap_undo = 0
        self.n_undo = 0
        self.marks = []
        self.hash_valid = False
        for k in range(self.n_actors):
            self._start_op(k)
            self._run(k, 0)

    def __dealloc__(self):
        if self.mem_owner is None:
            free(self.mem)
        free(self.act)
        free(self.ops)
        free(self.code)
        free(self.consts)
        free(self.memslots)
        free(self.pending)
        free(self.viols)
        cdef Py_ssize_t c
        for c in range(self.n_chunks):
            _chunk_put(self.chunks[c])
        free(self.chunks)
        free(self.undo)

    # --- memory ------------------------------------------------------------------------
    cdef inline uint64_t _read(self, uint64_t addr) noexcept nogil:
        return self.mem[(addr - PT_TABLE_BASE) >> 3]

    def read(self, uint64_t addr):
        cdef uint64_t slot = (addr - PT_TABLE_BASE) >> 3
        if addr < PT_TABLE_BASE or slot >= <uint64_t>self.nslots:
            raise IndexError(f"no table memory at {addr:#x}")
        return self.mem[slot]

    cdef inline int _write(self, int actor, uint64_t addr, uint64_t value) except -1:
        """twin: _write (clears every other CPU's exclusive monitor on the address)."""
        cdef uint64_t slot = (addr - PT_TABLE_BASE) >> 3
        cdef uint64_t old = self.mem[slot]
        cdef int j
        if self.hash_valid:  # exploring: marks undo-log writes, the hash follows them
            self._explore_write(slot, old, value)
        self.mem[slot] = value
        if self.n_actors > 1:  # (a lone actor has no other monitor to clear)
            for j in range(self.n_actors):
                if j != actor and self.act[j].mon == addr:
                    self.act[j].mon = 0
        return 0

    cdef int _explore_write(self, uint64_t slot, uint64_t old, uint64_t value) except -1:
        if self.marks:
            if self.n_undo + 2 > self.cap_undo:
                self.cap_undo = max(1024, self.cap_undo * 2)
                self.undo = <uint64_t *>realloc(self.undo, self.cap_undo * 8)
            self.undo[self.n_undo] = slot
            self.undo[self.n_undo + 1] = old
            self.n_undo += 2
        # the memory hash is kept up to date only while exploring (see state_key)
        self.h1 ^= mix(slot, old, 0) ^ mix(slot, value, 0)
        self.h2 ^= mix(slot, old, 0x5851F42D4C957F2DULL) ^ mix(slot, value, 0x5851F42D4C957F2DULL)
        return 0

    cdef int _resize_mem(self, Py_ssize_t cap) except -1:
        """Table memory of `cap` slots, the first nslots kept; an image taken over from the
        spec is copied into memory of the machine's own."""
        cdef uint64_t *grown
        if self.mem_owner is None:
            grown = <uint64_t *>realloc(self.mem, cap * 8)
        else:
            grown = <uint64_t *>malloc(cap * 8)
            if grown != NULL and self.nslots:
                memcpy(grown, self.mem, self.nslots * 8)
        if grown == NULL:
            raise MemoryError("table memory")
        self.mem = grown
        self.mem_owner = None
        self.cap_slots = cap
        return 0

    cdef uint64_t _alloc_table(self) except 0:
        """twin: OP_ALLOC (a fresh zeroed page at the end of table memory, never reused)."""
        cdef uint64_t *grown
        cdef uint64_t pa = PT_TABLE_BASE + 8 * <uint64_t>self.nslots
        if self.free_pages:
            pa = self.free_pages[0]
            self.free_pages = self.free_pages[1:]
            return pa
        if self.nslots + 512 > self.cap_slots:
            self._resize_mem(max(2 * self.cap_slots, self.nslots + 512))
        memset(&self.mem[self.nslots], 0, 512 * 8)
        self.nslots += 512
        return pa

    cdef inline uint64_t _entry(self, uint64_t table, int level, uint64_t ipa) noexcept nogil:
        return table + 8 * ((ipa >> level_shift(level)) & self.index_mask[level])

    # --- events ------------------------------------------------------------------------
    cdef inline int _event(self, int actor, int kind, int level, uint64_t addr, uint64_t ipa,
                           uint64_t old, uint64_t new, int detail, int flags) except -1:
        """twin: _event. Inline: one record per micro-step is the core's hot path; the
        buffer's growth and the record limit are checked on one compare (_event_room).
        The counters are read once (a record's stores could alias them)."""
        cdef Event *e
        cdef Py_ssize_t n = self.n_events
        cdef int64_t seq = self.seq
        if self.recording and (n < self.room or self._event_room()):
            e = &self.events[n - self.ev_base]
            e.seq = seq
            e.actor = actor
            e.op_i = self.act[actor].op_i
            e.pc = self.act[actor].pc
            e.kind = kind
            e.detail = detail
            e.flags = flags
            e.level = level
            e.addr = addr
            e.ipa = ipa
            e.old = old
            e.new = new
            self.n_events = n + 1
        self.seq = seq + 1
        return 0

    cdef bint _event_room(self) except -1:
        """Room for one more record (n_events reached `room`): stop recording at the
        record limit (nobody will list these events), else find (or add) the chunk record
        n_events goes to. `room` is min(the chunk's end, record_limit), so the fast path
        needs one compare; 0 sends the next record here (n_events went back)."""
        cdef Py_ssize_t n = self.n_events, c = n >> EV_SHIFT
        cdef Event **grown
        if n == self._record_limit:
            self.recording = False
            return False
        if c >= self.n_chunks:
            if c >= self.cap_chunks:
                grown = <Event **>realloc(self.chunks, (c + 16) * sizeof(Event *))
                if grown == NULL:
                    raise MemoryError("event records")
                self.chunks = grown
                self.cap_chunks = c + 16
            while self.n_chunks <= c:
                self.chunks[self.n_chunks] = _chunk_get()
                if self.chunks[self.n_chunks] == NULL:
                    raise MemoryError("event records")
                self.n_chunks += 1
        self.events = self.chunks[c]
        self.ev_base = c << EV_SHIFT
        self.room = self.ev_base + EV_CHUNK
        if n < self._record_limit < self.room:
            self.room = self._record_limit
        return True

    cdef inline Event *_event_at(self, Py_ssize_t k) noexcept nogil:
        return &self.chunks[k >> EV_SHIFT][k & (EV_CHUNK - 1)]

    # --- checks ------------------------------------------------------------------------
    cdef inline int _check_store(self, int actor, uint64_t addr, uint64_t cur, uint64_t new,
                                 uint64_t meant, int level, uint64_t ipa) except -1:
        """twin: _check_store (no_lost_update, break_before_make)."""
        cdef int flags = 0
        cdef uint64_t lost = (cur ^ new) & ~meant
        cdef uint64_t changed = 0
        if lost:
            flags |= PT_EVF_LOST_UPDATE
            self._violation(PT_CHECK_NO_LOST_UPDATE, actor, ipa, lost)
        if new & PT_DESC_VALID:
            if leaf_kind(cur, level):
                changed = (cur ^ new) & PT_BBM_MASK  # R_WHZWS
            if self.n_pending:
                changed = self._pending_made(addr, new, level, ipa, changed)
            if changed:
                flags |= PT_EVF_BBM
                self._violation(PT_CHECK_BREAK_BEFORE_MAKE, actor, ipa, changed)
        elif leaf_kind(cur, level):
            self._pend(addr, cur, ipa, (<uint64_t>1) << level_shift(level))
        elif level < 3 and (cur & PT_DESC_VALID) and (cur & PT_DESC_TYPE):
            self._pend_leaves_below(cur & PT_OA_MASK, level + 1, ipa)
        return flags

    cdef uint64_t _pending_made(self, uint64_t addr, uint64_t new, int level, uint64_t ipa,
                                uint64_t changed) noexcept nogil:
        """_check_store's valid store while invalidated entries await a TLBI: the changed
        bits against the entry's value before its break (replacing `changed`, those
        against the current leaf), and the entries it makes are no longer pending."""
        cdef uint64_t size = (<uint64_t>1) << level_shift(level)
        cdef Py_ssize_t k, w = 0
        for k in range(self.n_pending):
            if self.pending[k].addr == addr:
                changed = (self.pending[k].old ^ new) & PT_BBM_MASK
        # twin: leaves of another size under a removed table, not invalidated yet
        if leaf_kind(new, level):
            for k in range(self.n_pending):
                if self._stale_under(&self.pending[k], addr, ipa, size):
                    changed |= PT_DESC_TYPE
        for k in range(self.n_pending):
            if self.pending[k].addr != addr and not (
                    leaf_kind(new, level) and self._stale_under(&self.pending[k], addr, ipa, size)):
                self.pending[w] = self.pending[k]
                w += 1
        self.n_pending = w
        return changed

    cdef inline bint _stale_under(self, Pending *p, uint64_t addr, uint64_t ipa,
                                  uint64_t size) noexcept nogil:
        return (p.addr != addr and p.size != size and p.ipa < ipa + size
                and ipa < p.ipa + p.size)

    cdef int _pend(self, uint64_t addr, uint64_t old, uint64_t ipa, uint64_t size) except -1:
        if self.n_pending == self.cap_pending:
            self.cap_pending *= 2
            self.pending = <Pending *>realloc(self.pending, self.cap_pending * sizeof(Pending))
        self.pending[self.n_pending].addr = addr
        self.pending[self.n_pending].old = old
        self.pending[self.n_pending].ipa = ipa
        self.pending[self.n_pending].size = size
        self.n_pending += 1
        return 0

    cdef int _pend_leaves_below(self, uint64_t table, int level, uint64_t base) except -1:
        """twin: _leaves_below (a broken table entry: its leaves may still be cached)."""
        cdef Py_ssize_t k
        cdef uint64_t d, e_ipa
        for k in range(PT_PTRS_PER_TABLE):
            d = self._read(table + 8 * k)
            e_ipa = base + ((<uint64_t>k) << level_shift(level))
            if level < 3 and (d & PT_DESC_VALID) and (d & PT_DESC_TYPE):
                self._pend_leaves_below(d & PT_OA_MASK, level + 1, e_ipa)
            elif leaf_kind(d, level):
                self._pend(table + 8 * k, d, e_ipa, (<uint64_t>1) << level_shift(level))
        return 0

    cdef int _violation(self, int check, int actor, uint64_t ipa, uint64_t bits, int op_i=-1) except -1:
        self.viol_mask |= (<uint64_t>1) << check
        if self.n_viols == self.cap_viols:
            self.cap_viols *= 2
            self.viols = <Violation *>realloc(self.viols, self.cap_viols * sizeof(Violation))
        cdef Violation *v = &self.viols[self.n_viols]
        v.check = check
        v.seq = self.seq
        v.actor = actor
        v.op_i = self.act[actor].op_i if op_i < 0 else op_i
        v.ipa = ipa
        v.bits = bits
        self.n_viols += 1
        return 0

    # --- scheduling --------------------------------------------------------------------
    cdef bint _done(self, int i) noexcept nogil:
        return self.act[i].op_i >= self.act[i].n_ops

    cdef bint _blocked(self, int i) noexcept nogil:
        if self._done(i):
            return False
        cdef Instr *ins = &self.code[self.act[i].pc]
        return ins.op == PT_OP_LOCK and not self._lock_free(ins.a)

    cdef inline bint _lock_free(self, int mode) noexcept nogil:
        if mode == PT_LOCK_READ:
            return self.lock_writer < 0
        return self.lock_writer < 0 and self.lock_readers == 0

    def done(self, int i):
        return self._done(i)

    def blocked(self, int i):
        return self._blocked(i)

    def all_done(self):
        cdef int i
        for i in range(self.n_actors):
            if not self._done(i):
                return False
        return True

    def enabled(self):
        cdef int i
        return [i for i in range(self.n_actors) if not self._done(i) and not self._blocked(i)]

    @property
    def actors(self):
        return self.spec.actors

    def ops_of(self, int i):
        """The OpSpecs of actor i (injected ones included)."""
        return list(self._op_texts[i])

    cdef void _start_op(self, int i) noexcept nogil:
        cdef Actor *a = &self.act[i]
        if a.op_i >= a.n_ops:
            return
        cdef COp *op = &self.ops[a.op_base + a.op_i]
        cdef uint64_t faults = a.regs[PT_FAULTS]
        a.pc = op.entry
        memset(a.regs, 0, sizeof(a.regs))
        a.regs[PT_FAULTS] = faults
        a.regs[PT_IPA] = op.ipa
        a.regs[PT_END] = op.end
        a.regs[PT_WRITE] = op.write

    def step(self, int i):
        """One micro-step of actor i: exactly one access to shared state."""
        if not 0 <= i < self.n_actors:
            raise EngineError(f"no actor {i}")
        if self._done(i):
            raise EngineError(f"actor {i} has finished")
        if self._blocked(i):
            raise EngineError(f"actor {i} is blocked on kvm->mmu_lock")
        self._run(i, 1)

    def step_n(self, int i, long long n):
        """Up to n micro-steps of actor i, stopping early when it finishes or blocks;
        returns how many it took (a run-length-encoded run of one actor's steps)."""
        if not 0 <= i < self.n_actors:
            raise EngineError(f"no actor {i}")
        if n <= 0 or self._done(i) or self._blocked(i):
            return 0
        return self._run(i, n)

    cdef long long _run(self, int i, long long n) except -1:
        """Up to n micro-steps of actor i (n > 0: it is neither finished nor blocked),
        stopping early when it finishes or blocks: returns how many it took. A micro-step
        is one shared instruction and the local ones after it, up to the next shared one;
        n = 0 runs only the local ones up to the first. One loop over the steps, one C
        switch over the opcodes (Cython compiles this if/elif chain over the opcode enum
        to one): the register-only instructions and the descriptor accesses of the bulk
        paths are inline here, the rest in _local and _shared (twin: _run, _local,
        _shared, the same rules; stepping one micro-step at a time is the same). The pc
        lives in a local between shared instructions; a.pc is current whenever anything
        else can see it (events, the other handlers, on return)."""
        cdef Actor *a = &self.act[i]
        cdef uint64_t *r = a.regs
        cdef uint64_t *k = self.consts
        cdef Instr *code = self.code
        cdef Instr *ins
        cdef uint64_t value, addr
        cdef int op, pc = a.pc
        cdef long long taken = 1 if n > 0 else 0
        cdef bint shared_done = n == 0  # this step has made its shared access
        if a.op_i >= a.n_ops:
            return taken
        try:
            while True:
                ins = &code[pc]
                op = ins.op
                if op >= PT_OP_LOCK:
                    a.pc = pc
                    if shared_done:  # a step ends here; the next one begins, unless blocked
                        if taken == n or (op == PT_OP_LOCK and not self._lock_free(ins.a)):
                            return taken
                        taken += 1
                    shared_done = True  # (a walk that reached its level without a load: False)
                if op == PT_OP_MOV:
                    r[ins.a] = r[ins.b]
                    pc += 1
                elif op == PT_OP_MOVK:
                    r[ins.a] = k[ins.b]
                    pc += 1
                elif op == PT_OP_AND:
                    r[ins.a] = r[ins.b] & k[ins.c]
                    pc += 1
                elif op == PT_OP_ANDN:
                    r[ins.a] = r[ins.b] & ~k[ins.c]
                    pc += 1
                elif op == PT_OP_ORR:
                    r[ins.a] = r[ins.b] | k[ins.c]
                    pc += 1
                elif op == PT_OP_EOR:
                    r[ins.a] = r[ins.b] ^ r[ins.c]
                    pc += 1
                elif op == PT_OP_ORRR:
                    r[ins.a] = r[ins.b] | r[ins.c]
                    pc += 1
                elif op == PT_OP_ADDK:
                    r[ins.a] = r[ins.b] + k[ins.c]
                    pc += 1
                elif op == PT_OP_BZ:
                    pc = pc + 1 if r[ins.a] & k[ins.b] else ins.c
                elif op == PT_OP_BNZ:
                    pc = ins.c if r[ins.a] & k[ins.b] else pc + 1
                elif op == PT_OP_BEQ:
                    pc = ins.c if r[ins.a] == r[ins.b] else pc + 1
                elif op == PT_OP_BEQK:
                    pc = ins.c if r[ins.a] == k[ins.b] else pc + 1
                elif op == PT_OP_BNEK:
                    pc = ins.c if r[ins.a] != k[ins.b] else pc + 1
                elif op == PT_OP_BLT:
                    pc = ins.c if r[ins.a] < r[ins.b] else pc + 1
                elif op == PT_OP_B:
                    pc = ins.a
                elif op == FUSE_ANDN_ORR:
                    r[ins.a] = r[ins.b] & ~k[ins.c]
                    ins += 1
                    r[ins.a] = r[ins.b] | k[ins.c]
                    pc += 2
                elif op == FUSE_AND_BEQK:
                    r[ins.a] = r[ins.b] & k[ins.c]
                    ins += 1
                    pc = ins.c if r[ins.a] == k[ins.b] else pc + 2
                elif op == FUSE_ADDK_BLT:
                    r[ins.a] = r[ins.b] + k[ins.c]
                    ins += 1
                    pc = ins.c if r[ins.a] < r[ins.b] else pc + 2
                elif op == FUSE_ORR_ADDK_BLT or op == FUSE_ORRR_ADDK_BLT:
                    r[ins.a] = r[ins.b] | (k[ins.c] if op == FUSE_ORR_ADDK_BLT else r[ins.c])
                    ins += 1
                    r[ins.a] = r[ins.b] + k[ins.c]
                    ins += 1
                    pc = ins.c if r[ins.a] < r[ins.b] else pc + 3
                elif op == FUSE_BZ_BZ:
                    if not (r[ins.a] & k[ins.b]):
                        pc = ins.c
                    else:
                        ins += 1
                        pc = pc + 2 if r[ins.a] & k[ins.b] else ins.c
                elif op == PT_OP_WALK_INIT:
                    r[PT_WLEVEL] = self.start_level
                    r[PT_WT0 + self.start_level] = PT_TABLE_BASE
                    if ins.a == 1:
                        r[PT_CUR] = r[PT_IPA] & ~(PT_PAGE_SIZE - 1)
                    pc += 1
                elif op == PT_OP_END:
                    a.pc = pc
                    a.op_i += 1
                    if self.recording and self.n_events:
                        self._event_at(self.n_events - 1).flags |= PT_EVF_OP_DONE
                    self._start_op(i)
                    if self.dl_watch and self.dlog.written and self.all_done():
                        self._final_checks(i)
                    if a.op_i >= a.n_ops:
                        return taken
                    pc = a.pc
                elif op == PT_OP_LOAD or op == PT_OP_LDXR:
                    value = self._read(r[PT_PTR])
                    r[ins.a] = value
                    if op == PT_OP_LDXR:
                        a.mon = r[PT_PTR]
                    self._event(i, PT_EV_LDXR if op == PT_OP_LDXR else PT_EV_LOAD, r[PT_LEVEL],
                                r[PT_PTR], r[PT_EIPA], value, value, 0, 0)
                    pc = ins.c  # pc + 1, or past the `b` there (see __init__)
                elif op == PT_OP_STORE:
                    self._software_write(i, a, r[ins.a], k[ins.b], PT_EV_STORE)
                    pc = ins.c
                elif op == PT_OP_STXR:
                    addr = r[PT_PTR]
                    if a.mon == addr:
                        a.mon = 0
                        self._software_write(i, a, r[ins.b], k[ins.c], PT_EV_STXR_OK)
                        r[ins.a] = 0
                    else:
                        a.mon = 0
                        value = self._read(addr)
                        self._event(i, PT_EV_STXR_FAIL, r[PT_LEVEL], addr, r[PT_EIPA], value,
                                    r[ins.b], 0, 0)
                        r[ins.a] = 1
                    pc += 1
                elif op == PT_OP_SWALK:
                    shared_done = self._swalk(i, a, ins)
                    pc = a.pc
                elif op == PT_OP_RWALK:
                    shared_done = self._rwalk(i, a, ins)
                    pc = a.pc
                else:  # the switch's default (Cython makes no switch of a chain with a `<`)
                    a.pc = pc
                    if op < PT_OP_LOCK:
                        self._local(a, ins)
                    else:
                        shared_done = self._shared(i, a, ins)
                    pc = a.pc
        finally:  # (only read when _run raised: the steps before the one that failed)
            self.ran = taken - 1 if taken else 0

    cdef int _final_checks(self, int i) except -1:
        """twin: _final_checks (no_lost_dirty part a, once every actor has finished)."""
        for page in self.dlog.lost_writes(self._hw_dirty):
            self._violation(PT_CHECK_NO_LOST_DIRTY, i, page, PT_S2AP_W, self.act[i].op_i - 1)
        return 0

    def _hw_dirty(self, uint64_t page):
        desc, level = self.walk(page)
        return bool(leaf_kind(desc, level) and desc & PT_DBM and desc & PT_S2AP_W)

    def walk(self, uint64_t ipa):
        """twin: walk ((descriptor, level) of the entry translating ipa)."""
        cdef uint64_t table = PT_TABLE_BASE, desc
        cdef int level = self.start_level
        while True:
            desc = self._read(self._entry(table, level, ipa))
            if level < 3 and (desc & PT_DESC_VALID) and (desc & PT_DESC_TYPE):
                table = desc & PT_OA_MASK
                level += 1
                continue
            return desc, level

    def dirty_log(self):
        """twin: dirty_log."""
        return self.dlog.view() if self.dlog.used else None

    def run_round_robin(self, long long max_steps=-1, list runs=None):
        """Round-robin in file order, one micro-step each, skipping finished and blocked actors.
        `runs`, if given, receives the schedule run-length encoded: [actor, steps] pairs,
        the last pair extended while the same actor steps again. Once a single actor is
        unfinished, every round is one step of it: its steps run in one _run call."""
        cdef long long steps = 0, n, limit
        cdef int i, alone, last = -1, running = -1
        cdef long long count = 0
        cdef bint progressed
        if runs:
            last, count = runs.pop()  # (no runs[-1]: the core is compiled without wraparound)
        try:
            while steps != max_steps:
                progressed = False
                alone = self._alone()
                for i in range(self.n_actors):
                    if not self._done(i) and not self._blocked(i):
                        limit = 1
                        if alone >= 0:
                            limit = max_steps - steps if max_steps >= 0 else LLONG_MAX
                        running = i
                        n = self._run(i, limit)
                        running = -1
                        steps += n
                        progressed = True
                        last, count = _extend(runs, last, count, i, n)
                        if steps == max_steps:
                            break
                if not progressed:
                    if self.all_done():
                        break
                    raise EngineError("deadlock: every unfinished actor is blocked")
        finally:
            if running >= 0:  # _run raised: the steps it completed are in the schedule
                last, count = _extend(runs, last, count, running, self.ran)
            if runs is not None and count:
                runs.append([last, count])
        return steps

    cdef int _alone(self) noexcept nogil:
        """The only unfinished actor, or -1 (none, or more than one)."""
        cdef int i, found = -1
        for i in range(self.n_actors):
            if not self._done(i):
                if found >= 0:
                    return -1
                found = i
        return found

    # --- register-only instructions ----------------------------------------------------
    cdef int _local(self, Actor *a, Instr *ins) except -1:
        cdef uint64_t *r = a.regs
        cdef uint64_t *k = self.consts
        cdef int x = ins.a, y = ins.b, z = ins.c, op = ins.op, t, w, level
        cdef uint64_t ipa, base
        cdef Memslot *slot
        a.pc += 1
        if op == PT_OP_MEMSLOT:
            r[x] = 0
            ipa = r[PT_IPA]
            for t in range(self.n_memslots):
                slot = &self.memslots[t]
                if slot.ipa <= ipa < slot.end:
                    # memslot_is_logging -> force_pte (twin: OP_MEMSLOT)
                    r[PT_LOG] = 1 if (self.dl_watch and self.dlog.is_logging(ipa)) else 0
                    if r[PT_LOG] or slot.leaf_size == PT_PAGE_SIZE:
                        base = ipa & ~(PT_PAGE_SIZE - 1)
                        r[x] = k[y] | (slot.pa + base - slot.ipa)
                        r[PT_LEVEL] = 3
                    else:
                        base = ipa & ~(slot.leaf_size - 1)
                        r[x] = k[z] | (slot.pa + base - slot.ipa)
                        r[PT_LEVEL] = slot.level
                    break
        elif op == PT_OP_ALLOC:
            r[x] = self._alloc_table() | PT_DESC_VALID | PT_DESC_TYPE
        elif op == PT_OP_FREE:
            self.free_pages = tuple(sorted(self.free_pages + (r[x] & PT_OA_MASK,)))
        elif op == PT_OP_DESCEND:
            level = r[PT_LEVEL]
            if level < 3 and (r[x] & PT_DESC_VALID) and (r[x] & PT_DESC_TYPE):
                r[PT_WLEVEL] = level + 1
                r[PT_WT0 + level + 1] = r[x] & PT_OA_MASK
                r[PT_CUR] = max(r[PT_EIPA], r[PT_IPA] & ~(PT_PAGE_SIZE - 1))
        elif op == PT_OP_TABLE_EMPTY:
            r[x] = 1 if self._table_empty(r[y] & PT_OA_MASK) else 0
        elif op == PT_OP_LOG_TRACK:
            self.dlog.track(r[PT_IPA], r[PT_END])
            self.dl_watch = True
        elif op == PT_OP_TLB_IPA_LOCAL:
            if self.tlbi_vmalle1:  # what-if: ... TLBI VMALLE1 (this CPU) follows
                a.tlb_n = 0
            self._tlb_drop(a, r[PT_IPA])
        else:
            raise AssertionError(f"unknown local opcode {op}")
        return 0

    cdef bint _table_empty(self, uint64_t table) noexcept nogil:
        """twin: OP_TABLE_EMPTY (no valid entry; the start-level table is never freed)."""
        cdef Py_ssize_t k, first = (table - PT_TABLE_BASE) >> 3
        if table == PT_TABLE_BASE:
            return False
        for k in range(512):
            if self.mem[first + k] & PT_DESC_VALID:
                return False
        return True

    cdef inline void _tlb_drop(self, Actor *a, uint64_t ipa) noexcept nogil:
        cdef int t, w = 0
        for t in range(a.tlb_n):
            if not (a.tlb[t].base <= ipa < a.tlb[t].base + a.tlb[t].size):
                a.tlb[w] = a.tlb[t]
                w += 1
        a.tlb_n = w

    # --- shared instructions: each is one micro-step ------------------------------------
    cdef bint _shared(self, int i, Actor *a, Instr *ins) except -1:
        cdef uint64_t *r = a.regs
        cdef uint64_t *k = self.consts
        cdef int x = ins.a, y = ins.b, z = ins.c, op = ins.op
        cdef uint64_t value, addr, cur
        if op == PT_OP_LOCK:
            if not self._lock_free(x):
                raise EngineError(f"actor {i} reached a held kvm->mmu_lock inside a step")
            if x == PT_LOCK_READ:
                self.lock_readers += 1
            else:
                self.lock_writer = i
            self._event(i, PT_EV_LOCK, 0, 0, 0, 0, 0, x, 0)
            a.pc += 1
        elif op == PT_OP_UNLOCK:
            if x == PT_LOCK_READ:
                self.lock_readers -= 1
            else:
                self.lock_writer = -1
            self._event(i, PT_EV_UNLOCK, 0, 0, 0, 0, 0, x, 0)
            a.pc += 1
        elif op == PT_OP_CAS:
            addr = r[PT_PTR]
            cur = self._read(addr)
            if cur == r[x]:
                self._software_write(i, a, r[y], k[z], PT_EV_CAS_OK)
                r[PT_STATUS] = 0
            else:
                self._event(i, PT_EV_CAS_FAIL, r[PT_LEVEL], addr, r[PT_EIPA], cur, r[y], 0, 0)
                r[PT_STATUS] = 1
            r[x] = cur
            a.pc += 1
        elif op == PT_OP_TLBI_IPA:
            self._tlbi(r[x], False)
            self._event(i, PT_EV_TLBI, 0, 0, r[x], 0, 0, 0, 0)
            a.pc += 1
        elif op == PT_OP_TLBI_ALL:
            self._tlbi(0, True)
            self._event(i, PT_EV_TLBI, 0, 0, 0, 0, 0, 1, 0)
            a.pc += 1
        elif op == PT_OP_SWALK:
            return self._swalk(i, a, ins)
        elif op == PT_OP_RWALK:
            return self._rwalk(i, a, ins)
        elif op == PT_OP_HW_ACCESS:
            self._hw_access(i, a, ins)
        elif op == PT_OP_TLB_EVICT:  # twin: OP_TLB_EVICT
            self.act[r[x]].tlb_n = 0
            self._event(i, PT_EV_TLBI, 0, 0, r[x], 0, 0, 2, 0)
            a.pc += 1
        elif op == PT_OP_MARK_DIRTY:
            value = r[PT_IPA] & ~(PT_PAGE_SIZE - 1)
            self.dlog.mark(value)
            self._event(i, PT_EV_MARK_DIRTY, 0, 0, value, 0, 0, 0, 0)
            a.pc += 1
        elif op == PT_OP_LOG:
            if x:
                self.dlog.start(r[PT_IPA], r[PT_END])
            else:
                self.dlog.stop(r[PT_IPA], r[PT_END])
            self.dl_watch = True
            self._event(i, PT_EV_LOG, 0, 0, r[PT_IPA], 0, r[PT_END], x, 0)
            a.pc += 1
        elif op == PT_OP_HARVEST:
            # kvm_get_dirty_log_protect: one word of the memslot's dirty_bitmap (engine/dirtylog.py)
            addr, mask, pages, nxt = self.dlog.harvest(
                r[PT_AUX], r[PT_IPA] & ~(PT_PAGE_SIZE - 1), r[PT_END])
            r[PT_R0] = 1 if pages else 0
            if pages:
                r[PT_CUR] = pages[0]
                r[PT_R2] = pages[len(pages) - 1] + PT_PAGE_SIZE  # (wraparound is off)
            r[PT_AUX] = nxt
            self._event(i, PT_EV_HARVEST, 0, 0, addr, mask, 0, 0, 0)
            a.pc += 1
        else:
            raise AssertionError(f"unknown shared opcode {op}")
        return True

    cdef inline int _software_write(self, int i, Actor *a, uint64_t value, uint64_t meant,
                                    int kind) except -1:
        cdef uint64_t *r = a.regs
        cdef uint64_t addr = r[PT_PTR]
        cdef uint64_t cur = self._read(addr)
        cdef uint64_t ipa = r[PT_EIPA]
        cdef int flags
        self._write(i, addr, value)
        flags = self._check_store(i, addr, cur, value, meant, r[PT_LEVEL], ipa)
        if self.hd and (cur & PT_S2AP_W) and not (value & PT_S2AP_W):
            self._sw_cleared(i, addr)
        self._event(i, kind, r[PT_LEVEL], addr, ipa, cur, value, 0, flags)
        return 0

    cdef int _sw_cleared(self, int i, uint64_t addr) except -1:
        """Software cleared a dirty state the hardware set: no_lost_dirty (b) (twin:
        _software_write)."""
        if self.dlog.hwdirty:
            page = self.dlog.sw_cleared(addr)
            if page is not None:
                self._violation(PT_CHECK_NO_LOST_DIRTY, i, page, PT_S2AP_W)
        return 0

    cdef void _tlbi(self, uint64_t ipa, bint everything) noexcept nogil:
        """twin: _tlbi (TLBI IPAS2E1IS / VMALLS12E1IS, broadcast)."""
        cdef int j
        cdef Py_ssize_t k, w = 0
        for j in range(self.n_actors):
            if everything or self.tlbi_vmalle1:  # what-if: KVM's TLBI VMALLE1IS after it
                self.act[j].tlb_n = 0
            else:
                self._tlb_drop(&self.act[j], ipa)
        if everything:
            self.n_pending = 0
            return
        for k in range(self.n_pending):
            if not (self.pending[k].ipa <= ipa < self.pending[k].ipa + self.pending[k].size):
                self.pending[w] = self.pending[k]
                w += 1
        self.n_pending = w

    cdef inline bint _swalk(self, int i, Actor *a, Instr *ins) except -1:
        """twin: _swalk."""
        cdef uint64_t *r = a.regs
        cdef uint64_t ipa = r[PT_IPA]
        cdef int level = r[PT_WLEVEL]
        cdef int target = r[PT_LEVEL] if ins.c else 3
        cdef uint64_t entry = self._entry(r[PT_WT0 + level], level, ipa)
        cdef uint64_t desc, base
        if level >= target:
            r[PT_PTR] = entry
            r[PT_LEVEL] = level
            r[PT_EIPA] = ipa & ~(((<uint64_t>1) << level_shift(level)) - 1)
            a.pc += 1
            return False
        desc = self._read(entry)
        base = ipa & ~(((<uint64_t>1) << level_shift(level)) - 1)
        self._event(i, PT_EV_LOAD, level, entry, base, desc, desc, 0, 0)
        if (desc & PT_DESC_VALID) and (desc & PT_DESC_TYPE):
            level += 1
            r[PT_WLEVEL] = level
            r[PT_WT0 + level] = desc & PT_OA_MASK
            if level >= target:
                r[PT_PTR] = self._entry(desc & PT_OA_MASK, level, ipa)
                r[PT_LEVEL] = level
                r[PT_EIPA] = ipa & ~(((<uint64_t>1) << level_shift(level)) - 1)
                a.pc += 1
            return True
        r[ins.a] = desc
        r[PT_PTR] = entry
        r[PT_LEVEL] = level
        r[PT_EIPA] = base
        a.pc = a.pc + 1 if leaf_kind(desc, level) else ins.b
        return True

    cdef inline bint _rwalk(self, int i, Actor *a, Instr *ins) except -1:
        """twin: _rwalk (with the TABLE_PRE / TABLE_POST visits)."""
        cdef uint64_t *r = a.regs
        cdef uint64_t cur = r[PT_CUR], end = r[ins.c >> 4]
        cdef int level = r[PT_WLEVEL], wlevel
        cdef uint64_t entry, desc, size, base, span, last
        cdef bint table, pre
        if r[PT_PEND]:
            span = (<uint64_t>1) << level_shift(level - 1)
            last = cur - 1
            r[PT_PEND] -= 1
            r[PT_WLEVEL] = level - 1
            r[ins.a] = r[PT_WT0 + level] | PT_DESC_VALID | PT_DESC_TYPE
            r[PT_PTR] = self._entry(r[PT_WT0 + level - 1], level - 1, last)
            r[PT_LEVEL] = level - 1
            r[PT_EIPA] = last & ~(span - 1)
            r[PT_VISIT] = PT_VISIT_TABLE_POST
            a.pc += 1
            return False
        if cur >= end:
            a.pc = ins.b
            return False
        entry = self._entry(r[PT_WT0 + level], level, cur)
        desc = self._read(entry)
        size = (<uint64_t>1) << level_shift(level)
        base = cur & ~(size - 1)
        self._event(i, PT_EV_LOAD, level, entry, base, desc, desc, 0, 0)
        table = level < 3 and (desc & PT_DESC_VALID) and (desc & PT_DESC_TYPE)
        pre = table and (ins.c & PT_RWALK_TABLE_PRE) and level == <int>r[PT_TLEVEL]
        if table and not pre:
            r[PT_WLEVEL] = level + 1
            r[PT_WT0 + level + 1] = desc & PT_OA_MASK
            return True
        cur = base + size
        r[PT_CUR] = cur
        wlevel = level
        while wlevel > self.start_level and (
                cur % ((<uint64_t>1) << level_shift(wlevel - 1)) == 0
                or ((ins.c & PT_RWALK_TABLE_POST) and cur >= end)):
            wlevel -= 1
        if ins.c & PT_RWALK_TABLE_POST:
            r[PT_PEND] = level - wlevel
        else:
            r[PT_WLEVEL] = wlevel
        if pre or leaf_kind(desc, level) or (ins.c & PT_RWALK_VISIT_INVALID):
            r[ins.a] = desc
            r[PT_PTR] = entry
            r[PT_LEVEL] = level
            r[PT_EIPA] = base
            r[PT_VISIT] = PT_VISIT_TABLE_PRE if pre else PT_VISIT_LEAF
            a.pc += 1
        return True

    # --- the hardware ------------------------------------------------------------------
    cdef inline int _evaluate(self, uint64_t desc, uint64_t write, uint64_t *out) noexcept nogil:
        """twin: _evaluate (QEMU ptw.c: AF, DBM, permission check on the new descriptor)."""
        cdef uint64_t new = desc
        if not (desc & PT_AF):
            if not self.ha:
                return PT_FAULT_ACCESS_FLAG
            new |= PT_AF
        if write and self.hd and (desc & PT_DBM) and not (new & PT_S2AP_W):
            new |= PT_S2AP_W
        if not (new & (PT_S2AP_W if write else PT_S2AP_R)):
            return PT_FAULT_PERMISSION
        out[0] = new
        return PT_FAULT_NONE

    cdef inline int _target(self, uint64_t desc, uint64_t write, uint64_t *out, int *phase) noexcept nogil:
        """twin: _target (the Arm ARM choices R_QSPMS, R_PRHKD as what-ifs)."""
        cdef int fault = self._evaluate(desc, write, out)
        phase[0] = 2
        if fault == PT_FAULT_PERMISSION and self.af_on_perm and not (desc & PT_AF):
            out[0] = desc | PT_AF
            phase[0] = 3
            return PT_FAULT_NONE
        if fault == PT_FAULT_NONE and self.af_dirty_separate and ((out[0] ^ desc) & PT_AF):
            out[0] = desc | PT_AF
        return fault

    cdef int _complete(self, Actor *a) except -1:
        a.pc += 1
        a.regs[PT_PHASE] = 0
        if a.regs[PT_WRITE] and self.dl_watch and self.dlog.tracked:
            self.dlog.note_write(a.regs[PT_IPA])
        return 0

    cdef int _fill(self, Actor *a, uint64_t new, int level, uint64_t desc_pa) noexcept nogil:
        """twin: _fill (FIFO replacement, one entry per leaf)."""
        cdef uint64_t size, base
        cdef int t, w = 0
        if not self.tlb_on:
            return 0
        size = (<uint64_t>1) << level_shift(level)
        base = a.regs[PT_IPA] & ~(size - 1)
        for t in range(a.tlb_n):
            if a.tlb[t].base != base:
                a.tlb[w] = a.tlb[t]
                w += 1
        a.tlb_n = w
        if a.tlb_n >= NTLB:
            for t in range(1, a.tlb_n):
                a.tlb[t - 1] = a.tlb[t]
            a.tlb_n -= 1
        a.tlb[a.tlb_n].base = base
        a.tlb[a.tlb_n].size = size
        a.tlb[a.tlb_n].desc = new
        a.tlb[a.tlb_n].desc_pa = desc_pa
        a.tlb_n += 1
        return PT_EVF_TLB_FILL

    cdef inline void _fault(self, Actor *a, int fault, int level) noexcept nogil:
        if self.count_faults and a.regs[PT_FAULTS] < PT_FAULTS_MAX:
            a.regs[PT_FAULTS] += 1
        a.regs[PT_STATUS] = fault
        a.regs[PT_FLEVEL] = level
        a.regs[PT_PHASE] = 0
        a.pc = self.code[a.pc].b

    cdef int _hw_access(self, int i, Actor *a, Instr *ins) except -1:
        """twin: _hw_access."""
        cdef uint64_t *r = a.regs
        cdef uint64_t ipa = r[PT_IPA], write = r[PT_WRITE]
        cdef uint64_t entry, desc, base, cur, written, new = 0
        cdef int level, fault, flags, t, phase = 2
        cdef TlbEntry *e
        if r[PT_PHASE] == 0:
            if self.tlb_on:
                for t in range(a.tlb_n):
                    e = &a.tlb[t]
                    if e.base <= ipa < e.base + e.size:
                        level = 3 if e.size == PT_PAGE_SIZE else (2 if e.size == ((<uint64_t>1) << PT_LEVEL_SHIFT_2) else 1)
                        if e.desc & (PT_S2AP_W if write else PT_S2AP_R):
                            self._event(i, PT_EV_TLB_HIT, level, e.desc_pa, e.base, e.desc, e.desc, 0, 0)
                            self._complete(a)
                            return 0
                        if not (write and self.hd and (e.desc & PT_DBM)):
                            self._event(i, PT_EV_FAULT, level, e.desc_pa, e.base, e.desc, e.desc,
                                        PT_FAULT_PERMISSION, 0)
                            self._fault(a, PT_FAULT_PERMISSION, level)
                            return 0
                        break
            r[PT_WLEVEL] = self.start_level
            r[PT_WT0 + self.start_level] = PT_TABLE_BASE
            r[PT_PHASE] = 1
        if r[PT_PHASE] == 1:
            level = r[PT_WLEVEL]
            entry = self._entry(r[PT_WT0 + level], level, ipa)
            desc = self._read(entry)
            base = ipa & ~(((<uint64_t>1) << level_shift(level)) - 1)
            if level < 3 and (desc & PT_DESC_VALID) and (desc & PT_DESC_TYPE):
                r[PT_WLEVEL] = level + 1
                r[PT_WT0 + level + 1] = desc & PT_OA_MASK
                self._event(i, PT_EV_WALK, level, entry, base, desc, desc, 0, 0)
                return 0
            if not leaf_kind(desc, level):
                self._event(i, PT_EV_FAULT, level, entry, base, desc, desc, PT_FAULT_TRANSLATION, 0)
                self._fault(a, PT_FAULT_TRANSLATION, level)
                return 0
            fault = self._target(desc, write, &new, &phase)
            if fault:
                self._event(i, PT_EV_FAULT, level, entry, base, desc, desc, fault, 0)
                self._fault(a, fault, level)
                return 0
            r[PT_PTR] = entry
            r[PT_LEVEL] = level
            if new == desc:
                flags = self._fill(a, new, level, entry)
                self._event(i, PT_EV_WALK, level, entry, base, desc, desc, 0, flags)
                self._complete(a)
                return 0
            r[PT_HWOLD] = desc
            r[PT_HWNEW] = new
            r[PT_PHASE] = phase
            self._event(i, PT_EV_WALK, level, entry, base, desc, desc, 0, 0)
            return 0
        # phase 2: arm_casq_ptw; on a mismatch re-evaluate from memory (Arm ARM I_YZSVV)
        entry = r[PT_PTR]
        level = r[PT_LEVEL]
        base = ipa & ~(((<uint64_t>1) << level_shift(level)) - 1)
        cur = self._read(entry)
        if cur == r[PT_HWOLD]:
            written = r[PT_HWNEW]
            self._write(i, entry, written)
            if written & ~cur & PT_S2AP_W:  # the dirty state (HD + DBM) was set
                self.dlog.hw_set_dirty(entry, ipa)
            if r[PT_PHASE] == 3:  # R_QSPMS what-if: AF set, then the Permission fault
                self._event(i, PT_EV_HW_UPDATE, level, entry, base, cur, written,
                            PT_FAULT_PERMISSION, 0)
                self._fault(a, PT_FAULT_PERMISSION, level)
                return 0
            new = written
            self._target(written, write, &new, &phase)
            if new != written:  # R_PRHKD what-if: the dirty-state update follows
                self._event(i, PT_EV_HW_UPDATE, level, entry, base, cur, written, 0, 0)
                r[PT_HWOLD] = written
                r[PT_HWNEW] = new
                return 0
            flags = self._fill(a, written, level, entry)
            self._event(i, PT_EV_HW_UPDATE, level, entry, base, cur, written, 0, flags)
            self._complete(a)
            return 0
        if level < 3 and (cur & PT_DESC_VALID) and (cur & PT_DESC_TYPE):
            # the leaf became a table (a block split): walk on through it (twin)
            r[PT_WLEVEL] = level + 1
            r[PT_WT0 + level + 1] = cur & PT_OA_MASK
            r[PT_PHASE] = 1
            self._event(i, PT_EV_HW_UPDATE_FAIL, level, entry, base, r[PT_HWOLD], cur, 0, 0)
            return 0
        if not leaf_kind(cur, level):
            fault = PT_FAULT_TRANSLATION
        else:
            fault = self._target(cur, write, &new, &phase)
        if fault:
            self._event(i, PT_EV_HW_UPDATE_FAIL, level, entry, base, r[PT_HWOLD], cur, fault, 0)
            self._fault(a, fault, level)
            return 0
        if new == cur:
            flags = self._fill(a, new, level, entry)
            self._event(i, PT_EV_HW_UPDATE_FAIL, level, entry, base, r[PT_HWOLD], cur, 0, flags)
            self._complete(a)
            return 0
        self._event(i, PT_EV_HW_UPDATE_FAIL, level, entry, base, r[PT_HWOLD], cur, 0, 0)
        r[PT_HWOLD] = cur
        r[PT_HWNEW] = new
        r[PT_PHASE] = phase
        return 0

    # --- exploration support -----------------------------------------------------------
    cdef void _rehash(self) noexcept nogil:
        cdef Py_ssize_t k
        self.h1 = 0
        self.h2 = 0
        for k in range(self.nslots):
            self.h1 ^= mix(k, self.mem[k], 0)
            self.h2 ^= mix(k, self.mem[k], 0x5851F42D4C957F2DULL)
        self.hash_valid = True

    def save(self):
        """Mark the current state; descriptor writes are undo-logged until released, and
        the memory hash is maintained incrementally while marks exist."""
        if not self.hash_valid:
            self._rehash()
        actors = PyBytes_FromStringAndSize(<char *>self.act, self.n_actors * sizeof(Actor))
        pending = PyBytes_FromStringAndSize(<char *>self.pending, self.n_pending * sizeof(Pending))
        self.marks.append((actors, pending, self.lock_writer, self.lock_readers, self.viol_mask,
                           self.n_viols, self.seq, self.n_events, self.n_undo, self.h1, self.h2,
                           self._ops_frozen, self.nslots, self.dlog.state(), self.dl_watch,
                           self.free_pages))
        return len(self.marks) - 1

    def restore(self, int mark):
        cdef bytes actors, pending
        cdef Py_ssize_t n_undo, np
        cdef uint64_t slot
        del self.marks[mark + 1:]
        (actors, pending, self.lock_writer, self.lock_readers, self.viol_mask, self.n_viols,
         self.seq, self.n_events, n_undo, self.h1, self.h2, ops, self.nslots, dlog,
         self.dl_watch, self.free_pages) = self.marks[mark]
        self.room = 0  # the records after n_events are dropped
        self.dlog.restore(dlog)
        if ops is not self._ops_frozen:  # operations were injected after the mark
            self._op_texts = [list(x) for x in ops]
            self._freeze_ops()
        while self.n_undo > n_undo:
            self.n_undo -= 2
            slot = self.undo[self.n_undo]
            self.mem[slot] = self.undo[self.n_undo + 1]
        memcpy(self.act, <char *>actors, self.n_actors * sizeof(Actor))
        np = len(pending) // sizeof(Pending)
        if np > self.cap_pending:
            self.cap_pending = np
            self.pending = <Pending *>realloc(self.pending, np * sizeof(Pending))
        if np:
            memcpy(self.pending, <char *>pending, len(pending))
        self.n_pending = np

    def release(self, int mark):
        del self.marks[mark:]
        if not self.marks:
            self.n_undo = 0
            self.hash_valid = False

    def state_key(self):
        """128 bits identifying the state (memory hashed incrementally, the rest here)."""
        if not self.hash_valid:
            self._rehash()
        cdef uint64_t a = self.h1
        cdef uint64_t key[2]
        cdef uint64_t small[3]
        cdef int j
        cdef Actor *x
        for j in range(self.n_actors):
            x = &self.act[j]
            small[0] = <uint32_t>x.op_i | (<uint64_t><uint32_t>x.pc) << 32
            small[1] = <uint32_t>x.tlb_n
            a = words(a, small, 2)
            a = words(a, x.regs, NR)
            a = words(a, &x.mon, 1)
            a = words(a, <uint64_t *>x.tlb, x.tlb_n * (sizeof(TlbEntry) // 8))
        small[0] = <uint32_t>self.lock_writer | (<uint64_t><uint32_t>self.lock_readers) << 32
        small[1] = self.viol_mask
        small[2] = <uint64_t>self.n_pending
        a = words(a, small, 3)
        # Dirty logging and table lifetime state (HEAD: fidelity round two).
        small[0] = <uint64_t>self.nslots
        small[1] = <uint64_t><int64_t>(hash(self.dlog.state()) if self.dl_watch or self.dlog.hwdirty else 0)
        small[2] = <uint64_t><int64_t>hash(self.free_pages)
        a = words(a, small, 3)
        a = words(a, <uint64_t *>self.pending, self.n_pending * (sizeof(Pending) // 8))
        key[0] = a
        key[1] = self.h2 ^ (a * <uint64_t>0x9E3779B97F4A7C15ULL)
        return PyBytes_FromStringAndSize(<char *>key, 16)

    # --- live sessions: injected operations, snapshots, table views ------------------------
    cdef int _freeze_ops(self) except -1:
        """Rebuild the C op array from _op_texts and remember them for marks."""
        self._ops_frozen = tuple(tuple(x) for x in self._op_texts)
        self._set_ops([[(op.entry, op.ipa, op.end, op.write) for op in ops] for ops in self._op_texts])
        return 0

    cdef int _set_ops(self, list per_actor) except -1:
        """Rebuild the flat op array from [(entry, ipa, end, write), ...] per actor."""
        cdef Py_ssize_t total = sum(len(x) for x in per_actor), j = 0
        cdef COp *ops = <COp *>malloc(max(1, total) * sizeof(COp))
        if ops == NULL:
            raise MemoryError()
        for i, specs in enumerate(per_actor):
            self.act[i].op_base = j
            self.act[i].n_ops = len(specs)
            for entry, ipa, end, write in specs:
                ops[j].entry = entry
                ops[j].ipa = ipa
                ops[j].end = end
                ops[j].write = write
                j += 1
        free(self.ops)
        self.ops = ops
        return 0

    def append_op(self, int i, op):
        """Queue one more operation (an OpSpec) on actor i; a finished actor starts it."""
        if not 0 <= i < self.n_actors:
            raise EngineError(f"no actor {i}")
        cdef bint was_done = self._done(i)
        self._op_texts[i].append(op)
        self._freeze_ops()
        if was_done:
            self._start_op(i)
            self._run(i, 0)

    def get_state(self):
        """Everything that determines the future (engine/snapshot.py packs it); the same
        structure as the twin's get_state."""
        cdef Actor *a
        cdef Py_ssize_t k
        actors = []
        for i in range(self.n_actors):
            a = &self.act[i]
            actors.append({
                "ops": [op.row() for op in self._op_texts[i]],
                "op_i": a.op_i,
                "pc": a.pc,
                "regs": [a.regs[k] for k in range(NR)],
                "mon": a.mon,
                "tlb": [[a.tlb[t].base, a.tlb[t].size, a.tlb[t].desc, a.tlb[t].desc_pa]
                        for t in range(a.tlb_n)],
            })
        return {
            "mem": PyBytes_FromStringAndSize(<char *>self.mem, self.nslots * 8),
            "actors": actors,
            "lock_writer": self.lock_writer,
            "lock_readers": self.lock_readers,
            "pending": [[self.pending[k].addr, self.pending[k].old, self.pending[k].ipa,
                         self.pending[k].size] for k in range(self.n_pending)],
            "viol_mask": self.viol_mask,
            "violations": [list(v) for v in self.violations],
            "seq": self.seq,
            "dirty_log": self.dlog.state(),
            "free_pages": list(self.free_pages),
        }

    def set_state(self, dict state):
        cdef const unsigned char[:] mem = state["mem"]
        cdef Actor *a
        cdef Py_ssize_t k
        cdef Py_ssize_t slots = mem.shape[0] // 8
        cdef uint64_t *grown
        if slots < len(self.spec.mem) or slots % 512 or mem.shape[0] % 8:
            raise EngineError("snapshot table memory does not match this scenario")
        if len(state["actors"]) != self.n_actors:
            raise EngineError("snapshot actors do not match this scenario")
        if slots > self.cap_slots:
            self._resize_mem(slots)
        self.nslots = slots
        if self.nslots:
            memcpy(self.mem, &mem[0], self.nslots * 8)
        self.dlog.load(state.get("dirty_log", DirtyLog().state()))
        self.dl_watch = self.dlog.used or bool(self.dlog.tracked)
        self.free_pages = tuple(state.get("free_pages", ()))
        self.hash_valid = False
        self._op_texts = [[OpSpec(*op) for op in st["ops"]] for st in state["actors"]]
        self._freeze_ops()
        for i, st in enumerate(state["actors"]):
            a = &self.act[i]
            a.op_i = st["op_i"]
            a.pc = st["pc"]
            for k in range(NR):  # older snapshots have fewer registers
                a.regs[k] = st["regs"][k] if k < len(st["regs"]) else 0
            a.mon = st["mon"]
            if len(st["tlb"]) > NTLB:
                raise EngineError("snapshot TLB larger than the model's")
            a.tlb_n = len(st["tlb"])
            for k, (base, size, desc, desc_pa) in enumerate(st["tlb"]):
                a.tlb[k].base = base
                a.tlb[k].size = size
                a.tlb[k].desc = desc
                a.tlb[k].desc_pa = desc_pa
        self.lock_writer = state["lock_writer"]
        self.lock_readers = state["lock_readers"]
        self.n_pending = 0
        for addr, old, ipa, size in state["pending"]:
            self._pend(addr, old, ipa, size)
        self.viol_mask = state["viol_mask"]
        self.n_viols = 0
        for check, seq, actor, op_i, ipa, bits in state["violations"]:
            if self.n_viols == self.cap_viols:
                self.cap_viols *= 2
                self.viols = <Violation *>realloc(self.viols, self.cap_viols * sizeof(Violation))
            self.viols[self.n_viols].check = check
            self.viols[self.n_viols].seq = seq
            self.viols[self.n_viols].actor = actor
            self.viols[self.n_viols].op_i = op_i
            self.viols[self.n_viols].ipa = ipa
            self.viols[self.n_viols].bits = bits
            self.n_viols += 1
        self.seq = state["seq"]
        self.n_events = 0
        self.room = 0
        self.marks = []
        self.n_undo = 0

    def subtree_counts(self, uint64_t table_pa, int level, Py_ssize_t entries=512):
        """(leaves, young, read-only, dirty, invalid) over the subtree of a table (twin:
        subtree_counts): the counters a collapsed table shows."""
        cdef uint64_t c[5]
        cdef Py_ssize_t first = (table_pa - PT_TABLE_BASE) >> 3
        if table_pa < PT_TABLE_BASE or first + entries > self.nslots:
            raise IndexError(f"no table at {table_pa:#x}")
        memset(c, 0, sizeof(c))
        self._count(table_pa, level, entries, c)
        return (c[0], c[1], c[2], c[3], c[4])

    cdef void _count(self, uint64_t table_pa, int level, Py_ssize_t entries, uint64_t *c) noexcept nogil:
        cdef Py_ssize_t k, first = (table_pa - PT_TABLE_BASE) >> 3
        cdef uint64_t d
        for k in range(entries):
            d = self.mem[first + k]
            if level < 3 and (d & PT_DESC_VALID) and (d & PT_DESC_TYPE):
                self._count(d & PT_OA_MASK, level + 1, 512, c)
            elif leaf_kind(d, level):
                c[0] += 1
                if d & PT_AF:
                    c[1] += 1
                if (d & (PT_S2AP_R | PT_S2AP_W)) == PT_S2AP_R:
                    c[2] += 1
                if (d & PT_DBM) and (d & PT_S2AP_W):
                    c[3] += 1
            else:
                c[4] += 1

    def table(self, uint64_t table_pa, Py_ssize_t entries=512):
        cdef Py_ssize_t first = (table_pa - PT_TABLE_BASE) >> 3
        if table_pa < PT_TABLE_BASE or first + entries > self.nslots:
            raise IndexError(f"no table at {table_pa:#x}")
        return [self.mem[first + k] for k in range(entries)]

    # --- views -------------------------------------------------------------------------
    def walk_leaves(self, maps):
        """(descriptors array("Q"), levels array("B")) of the leaves of `maps` ((ipa, count,
        size) runs): the entry translating each IPA and its level, read in table memory
        itself (mem_array's copy was 8 MB at a million leaves)."""
        cdef uint64_t[::1] view = _EMPTY_SLOTS
        if self.nslots:
            view = <uint64_t[:self.nslots]> self.mem
        return walk_maps(view, self.start_level, self.start_entries, maps)

    def mem_array(self):
        """A copy of table memory (one copy: a million-leaf image is 8 MB)."""
        out = array("Q", bytes(0))
        cdef uint64_t[::1] view
        if self.nslots:
            out = array("Q", [0]) * self.nslots
            view = out
            memcpy(&view[0], self.mem, self.nslots * 8)
        return out

    @property
    def violations(self):
        cdef Py_ssize_t k
        return [(self.viols[k].check, self.viols[k].seq, self.viols[k].actor, self.viols[k].op_i,
                 self.viols[k].ipa, self.viols[k].bits) for k in range(self.n_viols)]

    @property
    def n_violations(self):
        """len(violations), without building the list (the explorer reads it per state)."""
        return self.n_viols

    @property
    def record_limit(self):
        """Recording stops for good once this many events are kept (-1: never)."""
        return self._record_limit

    @record_limit.setter
    def record_limit(self, Py_ssize_t limit):
        self._record_limit = limit
        self.room = 0  # _event_room recomputes it on the next record

    @property
    def n_events_recorded(self):
        return self.n_events

    def event_tuples(self, Py_ssize_t start=0):
        cdef Py_ssize_t k
        cdef Event *e
        out = []
        for k in range(max(0, start), self.n_events):
            e = self._event_at(k)
            out.append((e.seq, e.actor, e.op_i, e.pc, e.kind, e.detail, e.flags, e.level,
                        e.addr, e.ipa, e.old, e.new))
        return out

    def clear_events(self):
        self.n_events = 0
        self.room = 0

    def drain_events(self, Py_ssize_t keep, watch=()):
        """Take the recorded events off the buffer, as a live session's delta needs them:
        (the last `keep` event tuples, how many were recorded, the 4K pages written by
        descriptor writes that changed a value (a page written several times in a row is
        listed once), the addresses of those writes within the pages in `watch`, whether
        a dirty-log event happened, whether a write above level 3 linked or unlinked a
        table). One pass at C speed: no Python object for an event no delta lists, nor
        for a write outside the tables a viewer has open. twin: drain_events."""
        cdef Py_ssize_t k, j, n = self.n_events
        cdef Event *e
        cdef bint logged = False, relinked = False, watched = False, first = True
        cdef uint64_t tbits = PT_DESC_VALID | PT_DESC_TYPE
        cdef uint64_t page, last = 0, mask = ~(PT_PAGE_SIZE - 1)
        cdef uint64_t[::1] wv = array("Q", sorted(set(watch)) or [0])
        cdef Py_ssize_t nw = len(watch) and wv.shape[0]
        pages = []
        addrs = []
        for k in range(n):
            e = self._event_at(k)
            if e.kind == PT_EV_MARK_DIRTY or e.kind == PT_EV_LOG or e.kind == PT_EV_HARVEST:
                logged = True
            elif (e.kind == PT_EV_STORE or e.kind == PT_EV_STXR_OK or e.kind == PT_EV_CAS_OK
                  or e.kind == PT_EV_HW_UPDATE) and e.old != e.new:
                page = e.addr & mask
                if first or page != last:
                    first = False
                    last = page
                    pages.append(page)
                    watched = False
                    for j in range(nw):
                        if wv[j] == page:
                            watched = True
                            break
                if watched:
                    addrs.append(e.addr)
                if e.level < 3 and ((e.old & tbits) == tbits) != ((e.new & tbits) == tbits):
                    relinked = True
        tail = self.event_tuples(max(0, n - keep))
        self.n_events = 0
        self.room = 0  # (as clear_events: _event_room recomputes it on the next record)
        return tail, n, pages, addrs, logged, relinked

    def lock_holder(self):
        return self.lock_writer, self.lock_readers

    def actor_view(self, int i):
        cdef Actor *a = &self.act[i]
        return {"op_i": a.op_i, "pc": a.pc, "regs": [a.regs[k] for k in range(NR)],
                "monitor": a.mon,
                "tlb": [(a.tlb[t].base, a.tlb[t].size, a.tlb[t].desc, a.tlb[t].desc_pa)
                        for t in range(a.tlb_n)]}
