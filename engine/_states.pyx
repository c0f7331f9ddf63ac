# cython: language_level=3
"""The explorer's set of visited states: 128-bit state keys -> node ids, 24 bytes a state.

A Python dict of 16-byte keys costs about 120 bytes a state (the bytes object, the dict
entry, the int it maps to); this keeps the keys in one flat array (node n's key at 2n,
2n+1) and an open-addressing index of node ids (linear probing, at most half full).
"""

from libc.stdint cimport uint32_t, uint64_t
from libc.stdlib cimport calloc, free, realloc
from libc.string cimport memcpy

DEF EMPTY = 0xFFFFFFFF


cdef class StateTable:
    cdef uint64_t *keys
    cdef uint32_t *index
    cdef Py_ssize_t n, cap, mask

    def __cinit__(self):
        self.cap = 1024
        self.mask = 2 * self.cap - 1
        self.keys = <uint64_t *>calloc(2 * self.cap, sizeof(uint64_t))
        self.index = <uint32_t *>calloc(2 * self.cap, sizeof(uint32_t))
        if self.keys == NULL or self.index == NULL:
            raise MemoryError()
        self._clear_index()
        self.n = 0

    def __dealloc__(self):
        free(self.keys)
        free(self.index)

    cdef void _clear_index(self) noexcept nogil:
        cdef Py_ssize_t k
        for k in range(self.mask + 1):
            self.index[k] = EMPTY

    def __len__(self):
        return self.n

    cpdef Py_ssize_t intern(self, bytes key) except -1:
        """The node id of `key` (16 bytes), a new one (== len before the call) if unseen."""
        cdef uint64_t k[2]
        if len(key) != 16:
            raise ValueError("a state key is 16 bytes")
        memcpy(k, <char *>key, 16)
        cdef Py_ssize_t slot = (k[0] ^ (k[1] >> 7)) & self.mask
        cdef uint32_t node
        while True:
            node = self.index[slot]
            if node == EMPTY:
                break
            if self.keys[2 * node] == k[0] and self.keys[2 * node + 1] == k[1]:
                return node
            slot = (slot + 1) & self.mask
        if self.n >= <Py_ssize_t>EMPTY - 1:
            raise MemoryError("more than 4 billion states")
        if self.n == self.cap:
            self._grow()
            return self.intern(key)
        node = <uint32_t>self.n
        self.keys[2 * node] = k[0]
        self.keys[2 * node + 1] = k[1]
        self.index[slot] = node
        self.n += 1
        return node

    cdef int _grow(self) except -1:
        cdef Py_ssize_t cap = 2 * self.cap, slot
        cdef uint64_t *keys = <uint64_t *>realloc(self.keys, 2 * cap * sizeof(uint64_t))
        if keys == NULL:
            raise MemoryError()
        self.keys = keys
        free(self.index)
        self.index = <uint32_t *>calloc(2 * cap, sizeof(uint32_t))
        if self.index == NULL:
            raise MemoryError()
        self.cap = cap
        self.mask = 2 * cap - 1
        self._clear_index()
        cdef uint32_t node
        for node in range(self.n):
            slot = (self.keys[2 * node] ^ (self.keys[2 * node + 1] >> 7)) & self.mask
            while self.index[slot] != EMPTY:
                slot = (slot + 1) & self.mask
            self.index[slot] = node
        return 0
