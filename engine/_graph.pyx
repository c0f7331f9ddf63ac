# cython: language_level=3
"""The explorer's state graph in flat memory, and the two passes over it (engine/explore.py).

`generate` steps the machine depth-first from given states and records every distinct
state (its 128-bit key: node id = order of discovery) and, once per state, its successors
in the order of its enabled actors; `walk` then replays the serial search on that graph
alone: which edges close a cycle, the post-order, the first schedule reaching each final
state and each violation. The graph is the same whichever processes generated it (a
state's successors do not depend on who stepped them), so a parallel generation (fork,
several `generate` calls sharing one Graph) gives the serial results exactly.

Memory, per state: 16 bytes of key, 8-16 of index (at most half full), 4 of edge offset,
1 of edge count, 1 of violation mask, and while walking 5 more; per edge: 4 bytes of
successor and 1 of actor.
Every array is reserved up front for max_states (virtual address space, never touched
past what is used) so that processes forked after the reservation share it as it grows.
"""

from libc.stdint cimport uint8_t, uint32_t, uint64_t
from libc.stdlib cimport free, malloc, realloc
from libc.string cimport memcpy


cdef extern from "sys/mman.h" nogil:
    void *mmap(void *addr, size_t length, int prot, int flags, int fd, long offset)
    int munmap(void *addr, size_t length)
    int madvise(void *addr, size_t length, int advice)
    int PROT_READ, PROT_WRITE, MAP_SHARED, MAP_PRIVATE, MAP_ANONYMOUS, MAP_NORESERVE
    int MADV_DONTNEED, MADV_REMOVE
    void *MAP_FAILED

cdef extern from "sched.h" nogil:
    int sched_yield()

cdef extern from *:
    """
    static inline int pt_try_lock(volatile int *l) {
        /* test before test-and-set: a waiter reads the line, it does not take it */
        return __atomic_load_n(l, __ATOMIC_RELAXED) == 0
            && __atomic_exchange_n(l, 1, __ATOMIC_ACQUIRE) == 0;
    }
    static inline void pt_unlock(volatile int *l) { __atomic_store_n(l, 0, __ATOMIC_RELEASE); }
    static inline uint64_t pt_fetch_add(volatile uint64_t *p, uint64_t v) {
        return __atomic_fetch_add(p, v, __ATOMIC_ACQ_REL);
    }
    """
    bint pt_try_lock(volatile int *l) nogil
    void pt_unlock(volatile int *l) nogil
    uint64_t pt_fetch_add(volatile uint64_t *p, uint64_t v) nogil


DEF NONE = 0xFFFFFFFF  # a cut edge's successor (walk) / an index slot's emptiness is 0
DEF INDEX_MIN = 1024
DEF EDGE_CHUNK = 4096  # successor slots a process takes from the shared array at a time
# Node ids a process takes at a time: its states' offsets, counts and masks then share no
# cache line with another process's (interleaved ids made two processes 50% slower). The
# last block of each process may be left part-used: ids with no state, never reached.
DEF ID_BLOCK = 1024
DEF ID_SLACK = 64 * ID_BLOCK

# Why a generation stopped early (Graph.stopped); the parent then searches serially.
STOP_BOUND = 1  # more than max_states states
STOP_DEADLOCK = 2  # a state where every unfinished actor is blocked
STOP_ERROR = 3  # anything else went wrong in a worker


# The shared counters, a cache line each for what the processes write at different rates
# (a line written under the lock and read at every step made two processes 50% slower).
cdef struct Header:
    int lock
    uint64_t n  # states
    uint64_t ids  # node ids handed out (ID_BLOCK at a time to a process)
    uint64_t slots  # index size (a power of two)
    uint64_t gen  # index region in use: gen & 1
    char pad0[24]
    uint64_t edges  # successor slots handed out (EDGE_CHUNK at a time to a process)
    char pad1[56]
    int stopped
    uint64_t next_unit  # parallel generation: the next unit of work to take


cdef class Graph:
    cdef Header *h
    cdef uint64_t *keys
    cdef uint32_t *index[2]
    cdef uint32_t *off
    cdef uint8_t *nedge
    cdef uint8_t *mask
    cdef uint32_t *succ
    cdef uint8_t *actor
    cdef readonly uint64_t max_states, max_edges
    cdef uint64_t index_max
    cdef uint64_t chunk_next, chunk_end  # this process's successor slots not yet used
    cdef uint64_t id_next, id_end  # this process's node ids not yet used
    cdef readonly uint64_t cap_ids
    cdef bint shared
    cdef list regions

    def __cinit__(self, uint64_t max_states, int n_actors, bint shared=False):
        if max_states >= NONE - 2 - ID_SLACK:
            max_states = NONE - 2 - ID_SLACK
        if n_actors > 255:
            raise ValueError("the explorer records at most 255 actors a state")
        self.max_states = max_states
        self.max_edges = min(max(1, max_states * <uint64_t>n_actors), NONE)
        self.cap_ids = max_states + 1 + ID_SLACK
        self.index_max = INDEX_MIN
        while self.index_max < 2 * (max_states + 1):
            self.index_max *= 2
        self.shared = shared
        self.regions = []
        self.h = <Header *>self._reserve(sizeof(Header))
        self.keys = <uint64_t *>self._reserve(16 * self.cap_ids)
        self.index[0] = <uint32_t *>self._reserve(4 * self.index_max)
        self.index[1] = <uint32_t *>self._reserve(4 * self.index_max)
        self.off = <uint32_t *>self._reserve(4 * self.cap_ids)
        self.nedge = <uint8_t *>self._reserve(self.cap_ids)
        self.mask = <uint8_t *>self._reserve(self.cap_ids)
        self.succ = <uint32_t *>self._reserve(4 * self.max_edges)
        self.actor = <uint8_t *>self._reserve(self.max_edges)
        self.h.slots = INDEX_MIN

    cdef void *_reserve(self, size_t size) except NULL:
        cdef int flags = (MAP_SHARED if self.shared else MAP_PRIVATE) | MAP_ANONYMOUS | MAP_NORESERVE
        cdef void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, flags, -1, 0)
        if p == MAP_FAILED:
            raise MemoryError(f"cannot reserve {size:,} bytes for the explorer's states")
        self.regions.append((<size_t>p, size))
        return p

    def __dealloc__(self):
        if self.regions is not None:
            for p, size in self.regions:
                munmap(<void *><size_t>p, size)

    def __len__(self):
        return self.h.n

    @property
    def stopped(self):
        return self.h.stopped

    def stop(self, int why):
        if not self.h.stopped:
            self.h.stopped = why

    @property
    def edges(self):
        return self.h.edges

    cdef inline void _lock(self) noexcept nogil:
        cdef int spins = 0
        if not self.shared:
            return
        while not pt_try_lock(&self.h.lock):
            spins += 1
            if spins > 64:
                sched_yield()

    cdef inline void _unlock(self) noexcept nogil:
        if self.shared:
            pt_unlock(&self.h.lock)

    cdef void _grow(self) noexcept nogil:
        """Double the index into the other region, then give the old one's pages back."""
        cdef uint32_t *old = self.index[self.h.gen & 1]
        cdef uint32_t *new = self.index[(self.h.gen + 1) & 1]
        cdef uint64_t slots = 2 * self.h.slots, mask = slots - 1, slot, j
        cdef uint32_t k
        for j in range(self.h.slots):
            if not old[j]:
                continue
            k = old[j] - 1
            slot = (self.keys[2 * k] ^ (self.keys[2 * k + 1] >> 7)) & mask
            while new[slot]:
                slot = (slot + 1) & mask
            new[slot] = k + 1
        madvise(old, 4 * self.h.slots, MADV_REMOVE if self.shared else MADV_DONTNEED)
        self.h.slots = slots
        self.h.gen += 1

    cdef Py_ssize_t intern(self, const char *key, bint *new) noexcept nogil:
        """The node id of a 16-byte key (*new: it was unseen); -1 past max_states."""
        cdef uint64_t k[2]
        memcpy(k, key, 16)
        self._lock()
        cdef uint32_t *index = self.index[self.h.gen & 1]
        cdef uint64_t mask = self.h.slots - 1
        cdef uint64_t slot = (k[0] ^ (k[1] >> 7)) & mask
        cdef uint32_t node
        while True:
            node = index[slot]
            if not node:
                break
            node -= 1
            if self.keys[2 * node] == k[0] and self.keys[2 * node + 1] == k[1]:
                self._unlock()
                new[0] = False
                return node
            slot = (slot + 1) & mask
        if self.h.n >= self.max_states:
            self._unlock()
            return -1
        if self.id_next == self.id_end:
            if self.h.ids + ID_BLOCK > self.cap_ids:
                self._unlock()
                return -1
            self.id_next = self.h.ids
            self.id_end = self.id_next + ID_BLOCK
            self.h.ids = self.id_end
        node = <uint32_t>self.id_next
        self.id_next += 1
        self.keys[2 * node] = k[0]
        self.keys[2 * node + 1] = k[1]
        index[slot] = node + 1
        self.h.n += 1
        if 2 * self.h.n >= self.h.slots and self.h.slots < self.index_max:
            self._grow()
        self._unlock()
        new[0] = True
        return node

    def intern_key(self, bytes key):
        """(node id, new) of a state key; StateBoundExceeded's caller checks -1."""
        cdef bint new = False
        if len(key) != 16:
            raise ValueError("a state key is 16 bytes")
        node = self.intern(<const char *>key, &new)
        return node, new

    def set_mask(self, Py_ssize_t node, uint64_t mask):
        self.mask[node] = <uint8_t>mask

    def mask_of(self, Py_ssize_t node):
        return self.mask[node]

    cdef uint64_t edge_slots(self, Py_ssize_t n) noexcept nogil:
        """Where n successor slots start, taken from this process's chunk."""
        cdef uint64_t base
        if self.chunk_next + n > self.chunk_end:
            self.chunk_next = pt_fetch_add(&self.h.edges, EDGE_CHUNK + n)
            self.chunk_end = self.chunk_next + EDGE_CHUNK + n
        base = self.chunk_next
        self.chunk_next += n
        return base

    def forked(self):
        """In a process just forked: the parent's chunks of successor slots and ids are the
        parent's."""
        self.chunk_next = self.chunk_end = 0
        self.id_next = self.id_end = 0

    def next_unit(self):
        return pt_fetch_add(&self.h.next_unit, 1)



cdef struct Frame:
    uint32_t node
    int n  # its edges
    int next  # the next edge to take
    Py_ssize_t mark  # the machine's mark of its state, -1 if it has one edge
    Py_ssize_t nviol  # the machine's violations in its state (on this path)
    uint64_t base  # where its edges start


cdef class _Stack:
    """The depth-first search's frames and the schedule into them, in C arrays."""
    cdef Frame *frames
    cdef uint8_t *path  # path[k]: the actor stepped into depth k + 1
    cdef Py_ssize_t top, depth, cap

    def __cinit__(self):
        self.cap = 256
        self.frames = <Frame *>malloc(self.cap * sizeof(Frame))
        self.path = <uint8_t *>malloc(self.cap + 1)
        if self.frames == NULL or self.path == NULL:
            raise MemoryError()

    def __dealloc__(self):
        free(self.frames)
        free(self.path)

    cdef int reserve(self) except -1:
        if self.top < self.cap and self.depth < self.cap:
            return 0
        self.cap *= 2
        cdef Frame *frames = <Frame *>realloc(self.frames, self.cap * sizeof(Frame))
        cdef uint8_t *path = <uint8_t *>realloc(self.path, self.cap + 1)
        if frames == NULL or path == NULL:
            raise MemoryError()
        self.frames, self.path = frames, path
        return 0

    cdef list schedule(self):
        return [self.path[k] for k in range(self.depth)]


cdef class _Calls:
    """The machine's methods the search calls, bound once (a lookup per call was 5%)."""
    cdef object machine, step, state_key, save, restore, release, enabled, all_done

    def __cinit__(self, machine):
        self.machine = machine
        self.step, self.state_key = machine.step, machine.state_key
        self.save, self.restore, self.release = machine.save, machine.restore, machine.release
        self.enabled, self.all_done = machine.enabled, machine.all_done


class Deadlock(Exception):
    """Every unfinished actor is blocked (args: the schedule from the root)."""


def generate(Graph g, machine, list units, final_key, dict terminals, dict steps,
             on_new=None, Py_ssize_t depth_limit=-1, list frontier=None):
    """Expand, depth-first, every state reachable from each unit (node, schedule from the
    root) that no one has interned yet; the machine starts and ends at the root.

    A state is expanded by the caller that interned it, once: its enabled actors are
    recorded, each stepped (from the state's mark when there are several), the
    successors interned. A final state's key goes to terminals[node]; the checks of the
    violations a step adds, where it adds a check to the state's, to steps[edge]. `on_new(states,
    depth)` is called every 4096 new states. With depth_limit >= 0, states that deep
    below the unit are not expanded but appended to `frontier` as new units.
    Returns False if the graph was stopped (bound, deadlock, another worker's error)."""
    cdef Py_ssize_t child, start
    cdef Frame *f
    cdef bint new = False
    cdef bytes key
    cdef int a
    cdef _Stack st = _Stack()
    cdef _Calls m = _Calls(machine)
    step, state_key, restore = m.step, m.state_key, m.restore
    root = m.save()
    try:
        for node, prefix in units:
            st.depth = 0
            for a in prefix:
                step(a)
                st.reserve()
                st.path[st.depth] = a
                st.depth += 1
            start = st.depth
            st.top = 0
            _expand(g, m, node, st, terminals, final_key)
            while st.top:
                if g.h.stopped:
                    return False
                f = &st.frames[st.top - 1]
                if f.next == f.n:
                    if f.mark >= 0:
                        m.release(f.mark)
                    st.top -= 1
                    st.depth -= 1
                    continue
                if f.next:
                    restore(f.mark)
                a = g.actor[f.base + f.next]
                f.next += 1
                step(a)
                key = state_key()
                child = g.intern(<const char *>key, &new)
                if child < 0:
                    g.stop(STOP_BOUND)
                    return False
                g.succ[f.base + f.next - 1] = <uint32_t>child
                if new:
                    g.mask[child] = <uint8_t>machine.viol_mask
                if g.mask[child] & ~g.mask[f.node]:
                    steps[f.base + f.next - 1] = _checks(machine.violations[f.nviol:])
                if not new:
                    continue
                st.reserve()
                st.path[st.depth] = a
                st.depth += 1
                if on_new is not None and not child % 4096:
                    on_new(child + 1, st.depth)
                if depth_limit >= 0 and st.depth - start >= depth_limit:
                    if not m.all_done():  # (a final state has nothing to hand out)
                        frontier.append((child, st.schedule()))
                        st.depth -= 1
                        continue
                _expand(g, m, child, st, terminals, final_key)
            restore(root)
    finally:
        restore(root)
        m.release(root)
    return True


cdef uint8_t _checks(list violations):
    """The checks violated in a list of the machine's violations, as a mask."""
    cdef uint8_t bits = 0
    for v in violations:
        bits |= 1 << <int>v[0]
    return bits


cdef int _expand(Graph g, _Calls m, Py_ssize_t node, _Stack st, dict terminals,
                 final_key) except -1:
    """Record `node`'s edges (the machine is in its state) and push its frame; a final
    state is recorded as such (no frame)."""
    cdef uint64_t base
    cdef Py_ssize_t j, n
    cdef Frame *f
    actors = m.enabled()
    n = len(actors)
    if not n:
        if not m.all_done():
            g.stop(STOP_DEADLOCK)
            raise Deadlock(st.schedule())
        terminals[node] = final_key(m.machine)
        g.nedge[node] = 0
        st.depth -= 1
        return 0
    base = g.edge_slots(n)
    if base + n > g.max_edges:
        g.stop(STOP_BOUND)
        raise MemoryError("the explorer's successor array is full")
    for j in range(n):
        g.actor[base + j] = <uint8_t>actors[j]
    g.off[node] = <uint32_t>base
    g.nedge[node] = <uint8_t>n
    st.reserve()
    f = &st.frames[st.top]
    st.top += 1
    f.node, f.n, f.next, f.base = node, n, 0, base
    f.nviol = m.machine.n_violations
    f.mark = m.save() if n > 1 else -1
    return 0


def walk(Graph g, Py_ssize_t root, dict steps, on_final, on_violation):
    """The serial depth-first search, replayed on the generated graph: edges in each
    state's enabled order, an edge back to a state on the current path cut (and counted),
    a state's other edges followed only the first time. Calls on_final(node, serial id,
    schedule) for each final state the first time it is reached and
    on_violation(schedule) -> mask of the checks recorded so far, at each edge adding a
    check to the state's whose step violates a check not yet recorded (steps: generate's).
    Returns (cycles, post-order as array('I'), its length); cut edges' successors become
    NONE."""
    from array import array
    cdef Py_ssize_t n = g.h.ids
    cdef uint8_t[::1] seen = bytearray(n)  # 0 unseen, 1 on the path, 2 finished
    order = array("I", [0]) * n
    cdef uint32_t[::1] post = order
    cdef Py_ssize_t npost = 0, serial = 1, node, child, j
    cdef uint64_t cycles = 0, base, recorded = 0
    cdef _Stack st = _Stack()  # frames: node, next edge; path: the actor into each
    cdef Frame *f
    if g.nedge[root] == 0:
        on_final(root, 0, [])
        seen[root] = 2
        post[0] = root
        return 0, order, 1
    seen[root] = 1
    st.frames[0].node = root
    st.frames[0].next = 0
    st.top = 1
    while st.top:
        f = &st.frames[st.top - 1]
        node = f.node
        j = f.next
        if j == g.nedge[node]:
            seen[node] = 2
            post[npost] = node
            npost += 1
            st.top -= 1
            continue
        f.next = j + 1
        base = g.off[node] + j
        child = g.succ[base]
        st.path[st.top - 1] = g.actor[base]
        if g.mask[child] & ~g.mask[node] and steps[base] & ~recorded:
            st.depth = st.top
            recorded = on_violation(st.schedule())
        if seen[child] == 1:
            cycles += 1
            g.succ[base] = NONE
            continue
        if seen[child] == 2:
            continue
        if g.nedge[child] == 0:
            st.depth = st.top
            on_final(child, serial, st.schedule())
            serial += 1
            seen[child] = 2
            post[npost] = child
            npost += 1
            continue
        serial += 1
        seen[child] = 1
        st.depth = st.top
        st.reserve()
        f = &st.frames[st.top]
        f.node = child
        f.next = 0
        st.top += 1
    return cycles, order, npost  # (npost < len(order) past ids a process left unused)


def count(Graph g, order, Py_ssize_t npost, Py_ssize_t root):
    """Schedules reaching each state (reverse post-order is a topological order once the
    cycles are cut): {final node: count}. A count is dropped once passed on."""
    cdef uint32_t[::1] post = order
    cdef Py_ssize_t k, node, j, child
    cdef uint64_t base
    paths = [None] * g.h.ids
    paths[root] = 1
    finals = {}
    for k in range(npost - 1, -1, -1):
        node = post[k]
        here = paths[node]
        paths[node] = None
        n = g.nedge[node]
        if n == 0:
            finals[node] = here
            continue
        base = g.off[node]
        for j in range(n):
            child = g.succ[base + j]
            if child == NONE:
                continue
            was = paths[child]
            paths[child] = here if was is None else was + here
    return finals
