/* bench._baseline: the plain C loop the benchmark (bench/engine.py) holds the Cython core
 * against.
 *
 * It does by hand, over the same table memory, the shared-memory work one host actor's bulk
 * `wp` or `age` does in engine/programs.py for a kernel generation: the same table walk
 * (a range walk that loads every table entry once for wp and v6.6 age; a walk from the
 * start level per gfn for v4.6/seed age), the same descriptor loads, exclusives and stores
 * with the same values, the same lock/TLBI steps, the no_lost_update / break-before-make
 * test on every store, and one 56-byte event record per micro-step (the Cython core's
 * Event struct) in a buffer allocated before the run and never touched before it (like the
 * core's growing buffer, its pages are first touched by the run). What it leaves out is
 * what makes the core an engine: interpreting micro-step programs, scheduling, the TLB
 * and lock model, the incremental state hash.
 *
 * Only fully mapped ranges of 4K pages are handled (every table entry on the way a valid
 * table, every leaf a valid page); anything else is a ValueError. The events of the last
 * run stay in a module-level buffer (so no compiler may drop the stores) and can be read
 * back with events().
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "_bits.h"

typedef struct {
    int64_t seq;
    int32_t actor;
    int32_t op_i;
    int32_t pc;
    uint8_t kind;
    uint8_t detail;
    uint8_t flags;
    uint8_t level;
    uint64_t addr;
    uint64_t ipa;
    uint64_t old;
    uint64_t new_;
} Event;

_Static_assert(sizeof(Event) == 56, "Event must match engine/_core.pyx's Event struct");

enum { KERNEL_V46 = 0, KERNEL_SEED = 1, KERNEL_V66 = 2 };
enum { WORK_WP = 0, WORK_AGE = 1 };

typedef struct {
    uint64_t *mem;
    uint64_t nslots;
    int start_level;
    uint64_t start_entries;
    int actor;
    Event *ev;
    int64_t n;
    int64_t cap;
    uint64_t mon;  /* the exclusive monitor: address it holds, 0 = open */
    uint64_t ret;  /* young */
    int bad;       /* the layout is not a fully mapped range of 4K pages */
} Run;

static Event *g_events = NULL; /* the last run's records (read back by events()) */
static int64_t g_n_events = 0;

static inline int level_shift(int level) { return 12 + 9 * (3 - level); }

static inline uint64_t *slot_of(Run *r, uint64_t addr)
{
    uint64_t slot = (addr - PT_TABLE_BASE) >> 3;
    if (addr < PT_TABLE_BASE || slot >= r->nslots) {
        r->bad = 1;
        return NULL;
    }
    return &r->mem[slot];
}

static inline uint64_t entry_of(Run *r, uint64_t table, int level, uint64_t ipa)
{
    uint64_t index = ipa >> level_shift(level);
    index &= (level == r->start_level ? r->start_entries : PT_PTRS_PER_TABLE) - 1;
    return table + 8 * index;
}

static inline int is_table(uint64_t desc, int level)
{
    return level < 3 && (desc & PT_DESC_VALID) && (desc & PT_DESC_TYPE);
}

static inline int is_page(uint64_t desc) { return (desc & PT_DESC_VALID) && (desc & PT_DESC_TYPE); }

static inline void emit(Run *r, int kind, int level, uint64_t addr, uint64_t ipa, uint64_t old,
                        uint64_t new_, int detail, int flags)
{
    if (__builtin_expect(r->n == r->cap, 0)) {
        r->bad = 2;
        return;
    }
    Event *e = &r->ev[r->n];
    e->seq = r->n;
    e->actor = r->actor;
    e->op_i = 0;
    e->pc = -1; /* no program: the C loop has no pc */
    e->kind = (uint8_t)kind;
    e->detail = (uint8_t)detail;
    e->flags = (uint8_t)flags;
    e->level = (uint8_t)level;
    e->addr = addr;
    e->ipa = ipa;
    e->old = old;
    e->new_ = new_;
    r->n++;
}

/* A software store of a leaf: the core's _software_write and _check_store (one host actor:
 * no other monitor to clear, no break-before-make pending). */
static inline void store(Run *r, int kind, uint64_t *p, uint64_t addr, uint64_t ipa,
                         uint64_t value, uint64_t meant)
{
    uint64_t cur = *p;
    int flags = 0;
    *p = value;
    if ((cur ^ value) & ~meant)
        flags |= PT_EVF_LOST_UPDATE;
    if ((value & PT_DESC_VALID) && is_page(cur) && ((cur ^ value) & (PT_OA_MASK | PT_DESC_TYPE)))
        flags |= PT_EVF_BBM;
    emit(r, kind, 3, addr, ipa, cur, value, 0, flags);
}

static inline void load(Run *r, uint64_t *p, uint64_t addr, uint64_t ipa, uint64_t *out)
{
    uint64_t v = *p;
    emit(r, PT_EV_LOAD, 3, addr, ipa, v, v, 0, 0);
    *out = v;
}

static inline void ldxr(Run *r, uint64_t *p, uint64_t addr, uint64_t ipa, uint64_t *out)
{
    uint64_t v = *p;
    r->mon = addr;
    emit(r, PT_EV_LDXR, 3, addr, ipa, v, v, 0, 0);
    *out = v;
}

/* 0: stored; 1: the monitor was lost (the caller retries from its LDXR). */
static inline int stxr(Run *r, uint64_t *p, uint64_t addr, uint64_t ipa, uint64_t value,
                       uint64_t meant)
{
    if (r->mon == addr) {
        r->mon = 0;
        store(r, PT_EV_STXR_OK, p, addr, ipa, value, meant);
        return 0;
    }
    r->mon = 0;
    emit(r, PT_EV_STXR_FAIL, 3, addr, ipa, *p, value, 0, 0);
    return 1;
}

/* What one leaf costs after the walk reached it (desc: the value the walk loaded, for the
 * range-walk variants). `kernel` and `work` are constants at every call site. */
static inline __attribute__((always_inline)) void leaf(Run *r, int kernel, int work, uint64_t *p,
                                                       uint64_t addr, uint64_t ipa, uint64_t desc)
{
    uint64_t v, young;
    if (work == WORK_WP) {
        if (kernel == KERNEL_V66) {
            /* stage2_attr_walker: clear S2AP_W, WRITE_ONCE if it changed, then the reload */
            uint64_t new_ = desc & ~(uint64_t)PT_S2AP_W;
            if ((desc & PT_DESC_VALID) && new_ != desc)
                store(r, PT_EV_STORE, p, addr, ipa, new_, PT_S2AP_W);
            load(r, p, addr, ipa, &v);
            return;
        }
        if ((desc & PT_S2AP_RW) == PT_S2AP_R) /* if (!kvm_s2pte_readonly(pte)) */
            return;
        if (kernel == KERNEL_V46) {
            store(r, PT_EV_STORE, p, addr, ipa, (desc & ~(uint64_t)PT_S2AP_RW) | PT_S2AP_R,
                  PT_S2AP_MASK);
            return;
        }
        do { /* seed kvm_set_s2pte_readonly: ldxr; and; orr; stxr; cbnz */
            ldxr(r, p, addr, ipa, &v);
            if (!(v & PT_DESC_VALID))
                return;
        } while (stxr(r, p, addr, ipa, (v & ~(uint64_t)PT_S2AP_RW) | PT_S2AP_R, PT_S2AP_MASK));
        return;
    }
    if (kernel == KERNEL_V66) {
        /* stage2_age_walker: clear AF if valid and young, WRITE_ONCE, then the reload */
        uint64_t new_ = desc & ~(uint64_t)PT_AF;
        if ((desc & PT_DESC_VALID) && new_ != desc) {
            r->ret |= 1;
            store(r, PT_EV_STORE, p, addr, ipa, new_, PT_AF);
        }
        load(r, p, addr, ipa, &v);
        return;
    }
    load(r, p, addr, ipa, &v); /* pte_offset_kernel(pmd, gpa); if (pte_none(*pte)) */
    if (!(v & PT_DESC_VALID))
        return;
    if (kernel == KERNEL_V46) {
        if (!(v & PT_AF)) /* if (pte_young(*pte)) */
            return;
        store(r, PT_EV_STORE, p, addr, ipa, v & ~(uint64_t)PT_AF, PT_AF);
        r->ret |= 1;
        return;
    }
    do { /* seed __ptep_test_and_clear_young: ldxr; ubfx; and; stxr; cbnz */
        ldxr(r, p, addr, ipa, &v);
        young = (v >> 10) & 1;
    } while (stxr(r, p, addr, ipa, v & ~(uint64_t)PT_AF, PT_AF));
    r->ret |= young;
}

/* The leaves of one level-3 table over [cur, stop), one after the other. */
static inline __attribute__((always_inline)) void leaves(Run *r, int kernel, int work,
                                                         uint64_t table, uint64_t cur,
                                                         uint64_t stop)
{
    uint64_t first = entry_of(r, table, 3, cur);
    uint64_t *q = slot_of(r, first);
    if (!q || !slot_of(r, first + 8 * (((stop - cur) >> 12) - 1)))
        return;
    uint64_t addr = first;
    for (uint64_t a = cur; a < stop; a += PT_PAGE_SIZE, q++, addr += 8) {
        uint64_t d = *q;
        emit(r, PT_EV_LOAD, 3, addr, a, d, d, 0, 0);
        if (!is_page(d)) {
            r->bad = 1;
            return;
        }
        leaf(r, kernel, work, q, addr, a, d);
    }
}

typedef void (*walker)(Run *r, uint64_t table, int level, uint64_t lo, uint64_t hi);

/* The range walk (the core's OP_RWALK): every table entry over [lo, hi) loaded once, in
 * order, each level-3 table's leaves in turn. `self` is the specialised walker (for the
 * level below). */
static inline __attribute__((always_inline)) void range_walk(Run *r, int kernel, int work,
                                                             walker self, uint64_t table,
                                                             int level, uint64_t lo, uint64_t hi)
{
    uint64_t size = (uint64_t)1 << level_shift(level);
    for (uint64_t cur = lo; cur < hi && !r->bad;) {
        uint64_t base = cur & ~(size - 1);
        uint64_t next = base + size;
        uint64_t stop = next < hi ? next : hi;
        uint64_t entry = entry_of(r, table, level, cur);
        uint64_t *p = slot_of(r, entry);
        if (!p)
            return;
        uint64_t desc = *p;
        emit(r, PT_EV_LOAD, level, entry, base, desc, desc, 0, 0);
        if (!is_table(desc, level)) {
            r->bad = 1; /* blocks and holes are not handled */
            return;
        }
        if (level == 2)
            leaves(r, kernel, work, desc & PT_OA_MASK, cur, stop);
        else
            self(r, desc & PT_OA_MASK, level + 1, cur, stop);
        cur = next;
    }
}

#define DEFINE_RANGE(NAME, K, W)                                                    \
    static void NAME(Run *r, uint64_t table, int level, uint64_t lo, uint64_t hi) \
    {                                                                               \
        range_walk(r, K, W, NAME, table, level, lo, hi);                            \
    }

DEFINE_RANGE(range_v46_wp, KERNEL_V46, WORK_WP)
DEFINE_RANGE(range_seed_wp, KERNEL_SEED, WORK_WP)
DEFINE_RANGE(range_v66_wp, KERNEL_V66, WORK_WP)
DEFINE_RANGE(range_v66_age, KERNEL_V66, WORK_AGE)

/* The walk from the start level for one gfn (the core's OP_SWALK, stopping at level 3
 * without loading it), then the leaf. */
static inline __attribute__((always_inline)) void gfn_walk(Run *r, int kernel, int work,
                                                           uint64_t ipa)
{
    uint64_t table = PT_TABLE_BASE;
    for (int level = r->start_level; level < 3; level++) {
        uint64_t entry = entry_of(r, table, level, ipa);
        uint64_t *p = slot_of(r, entry);
        if (!p)
            return;
        uint64_t desc = *p;
        emit(r, PT_EV_LOAD, level, entry, ipa & ~(((uint64_t)1 << level_shift(level)) - 1), desc,
             desc, 0, 0);
        if (!is_table(desc, level)) {
            r->bad = 1;
            return;
        }
        table = desc & PT_OA_MASK;
    }
    uint64_t entry = entry_of(r, table, 3, ipa);
    uint64_t *p = slot_of(r, entry);
    if (!p)
        return;
    leaf(r, kernel, work, p, entry, ipa & ~(uint64_t)(PT_PAGE_SIZE - 1), 0);
}

#define RANGE(NAME) NAME(r, PT_TABLE_BASE, r->start_level, ipa, end)
#define PER_GFN(K, W)                                                    \
    for (uint64_t g = ipa; g < end && !r->bad; g += PT_PAGE_SIZE) \
        gfn_walk(r, K, W, g)

static void run_op(Run *r, int kernel, int work, uint64_t ipa, uint64_t end)
{
    int lock = kernel == KERNEL_V66 ? PT_LOCK_WRITE : PT_LOCK_SPIN;
    emit(r, PT_EV_LOCK, 0, 0, 0, 0, 0, lock, 0);
    switch (kernel * 2 + work) {
    case KERNEL_V46 * 2 + WORK_WP: RANGE(range_v46_wp); break;
    case KERNEL_SEED * 2 + WORK_WP: RANGE(range_seed_wp); break;
    case KERNEL_V66 * 2 + WORK_WP: RANGE(range_v66_wp); break;
    case KERNEL_V46 * 2 + WORK_AGE: PER_GFN(KERNEL_V46, WORK_AGE); break;
    case KERNEL_SEED * 2 + WORK_AGE: PER_GFN(KERNEL_SEED, WORK_AGE); break;
    case KERNEL_V66 * 2 + WORK_AGE: RANGE(range_v66_age); break;
    }
    if (work == WORK_WP) { /* unlock, then kvm_flush_remote_tlbs */
        emit(r, PT_EV_UNLOCK, 0, 0, 0, 0, 0, lock, 0);
        emit(r, PT_EV_TLBI, 0, 0, 0, 0, 0, 1, PT_EVF_OP_DONE);
    } else { /* if (young) kvm_flush_remote_tlbs; unlock */
        if (r->ret)
            emit(r, PT_EV_TLBI, 0, 0, 0, 0, 0, 1, 0);
        emit(r, PT_EV_UNLOCK, 0, 0, 0, 0, 0, lock, PT_EVF_OP_DONE);
    }
}

static double now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

PyDoc_STRVAR(bulk_doc,
             "bulk(mem, kernel, work, ipa, end, start_level, start_entries, actor=0, warm=False)\n"
             "--\n\n"
             "Run one host actor's bulk op over the writable uint64 table buffer `mem` (from\n"
             "TABLE_BASE). kernel: 0 v4.6, 1 seed, 2 v6.6; work: 0 wp, 1 age. Returns\n"
             "(events, ns, young, checksum): the records written, the loop's time in ns, the op's\n"
             "young result and a checksum of the records. The event buffer is allocated before\n"
             "the clock starts and first touched by the loop, unless `warm` (then it is written\n"
             "once before: the loop without its page faults).");

static PyObject *bulk(PyObject *Py_UNUSED(self), PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {"mem", "kernel", "work", "ipa", "end", "start_level",
                             "start_entries", "actor", "warm", NULL};
    Py_buffer buf;
    int kernel, work, start_level, actor = 0, warm = 0;
    unsigned long long ipa, end, start_entries;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "w*iiKKiK|ip", kwlist, &buf, &kernel, &work,
                                     &ipa, &end, &start_level, &start_entries, &actor, &warm))
        return NULL;
    if (kernel < 0 || kernel > 2 || work < 0 || work > 1 || start_level < 0 || start_level > 2 ||
        end < ipa || (ipa | end) & (PT_PAGE_SIZE - 1) || buf.len % 8) {
        PyBuffer_Release(&buf);
        PyErr_SetString(PyExc_ValueError, "bulk: bad arguments");
        return NULL;
    }
    /* An upper bound on the records: at most 5 per leaf and 2 table loads per leaf. */
    int64_t cap = (int64_t)((end - ipa) / PT_PAGE_SIZE) * 7 + 16;
    free(g_events);
    g_n_events = 0;
    g_events = malloc((size_t)cap * sizeof(Event));
    if (!g_events) {
        PyBuffer_Release(&buf);
        return PyErr_NoMemory();
    }
    if (warm)
        memset(g_events, 0xff, (size_t)cap * sizeof(Event));
    Run r = {.mem = buf.buf,
             .nslots = (uint64_t)buf.len / 8,
             .start_level = start_level,
             .start_entries = start_entries,
             .actor = actor,
             .ev = g_events,
             .n = 0,
             .cap = cap};
    double t0 = now_ns();
    run_op(&r, kernel, work, ipa, end);
    double t1 = now_ns();
    g_n_events = r.n;
    uint64_t check = 0;
    for (int64_t k = 0; k < r.n; k++)
        check ^= g_events[k].new_ + (uint64_t)k;
    PyBuffer_Release(&buf);
    if (r.bad) {
        PyErr_SetString(PyExc_ValueError,
                        r.bad == 2 ? "bulk: event buffer overflow"
                                   : "bulk: only fully mapped ranges of 4K pages are handled");
        return NULL;
    }
    return Py_BuildValue("(LdKK)", (long long)r.n, t1 - t0, (unsigned long long)r.ret,
                         (unsigned long long)check);
}

PyDoc_STRVAR(events_doc,
             "events(start=0, stop=-1)\n--\n\n"
             "The last run's records as tuples (seq, actor, op_i, pc, kind, detail, flags, level,\n"
             "addr, ipa, old, new), the core's event_tuples() shape; pc is -1.");

static PyObject *events(PyObject *Py_UNUSED(self), PyObject *args)
{
    long long start = 0, stop = -1;
    if (!PyArg_ParseTuple(args, "|LL", &start, &stop))
        return NULL;
    if (stop < 0 || stop > g_n_events)
        stop = g_n_events;
    if (start < 0)
        start = 0;
    PyObject *out = PyList_New(0);
    if (!out)
        return NULL;
    for (long long k = start; k < stop; k++) {
        Event *e = &g_events[k];
        PyObject *t = Py_BuildValue("(LiiiiiiiKKKK)", (long long)e->seq, e->actor, e->op_i, e->pc,
                                    e->kind, e->detail, e->flags, e->level,
                                    (unsigned long long)e->addr, (unsigned long long)e->ipa,
                                    (unsigned long long)e->old, (unsigned long long)e->new_);
        if (!t || PyList_Append(out, t) < 0) {
            Py_XDECREF(t);
            Py_DECREF(out);
            return NULL;
        }
        Py_DECREF(t);
    }
    return out;
}

static PyMethodDef methods[] = {
    {"bulk", (PyCFunction)(void (*)(void))bulk, METH_VARARGS | METH_KEYWORDS, bulk_doc},
    {"events", events, METH_VARARGS, events_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "bench._baseline",
    "The plain C loop bench/engine.py compares the Cython core with.", -1, methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__baseline(void)
{
    PyObject *m = PyModule_Create(&module);
    if (m && PyModule_AddIntConstant(m, "EVENT_SIZE", (long)sizeof(Event)) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
