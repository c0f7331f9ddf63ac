# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Final states at C speed (engine/report.py, Observer): every leaf of the scenario's
maps walked from the start level as engine.spec.walk_image walks one IPA (a leaf, or the
first invalid entry on the way), and the leaves counted by what the final-state summary
shows. tests/test_leaves.py holds them to engine.spec.walk_image and report.leaf_fields,
the Python reference."""

from cpython.array cimport array, clone
from libc.stdint cimport uint8_t, uint64_t


cdef extern from "_bits.h":
    uint64_t PT_TABLE_BASE
    uint64_t PT_DESC_VALID
    uint64_t PT_DESC_TYPE
    uint64_t PT_OA_MASK
    uint64_t PT_AF
    uint64_t PT_DBM
    uint64_t PT_S2AP_MASK
    uint64_t PT_S2AP_SHIFT
    uint64_t PT_PTRS_PER_TABLE

cdef array _Q = array("Q")
cdef array _B = array("B")


cdef inline int _shift(int level) nogil:
    return 12 + 9 * (3 - level)


def walk_maps(const uint64_t[::1] mem, int start_level, uint64_t start_entries, maps):
    """(descriptors array("Q"), levels array("B")): one per leaf of `maps` ((ipa, count,
    size) each, in order), the entry that translates the leaf's IPA and its level."""
    cdef Py_ssize_t total = 0, n = 0, k, count
    cdef uint64_t ipa, size, table, index, slot, desc
    cdef Py_ssize_t nslots = mem.shape[0]
    cdef int level
    for _ipa, _count, _size in maps:
        total += _count
    cdef array values = clone(_Q, total, False)
    cdef array levels = clone(_B, total, False)
    cdef uint64_t *out = values.data.as_ulonglongs
    cdef uint8_t *lv = levels.data.as_uchars
    for _ipa, _count, _size in maps:
        ipa, count, size = _ipa, _count, _size
        for k in range(count):
            table = PT_TABLE_BASE
            level = start_level
            while True:
                index = ipa >> _shift(level)
                index &= (start_entries if level == start_level else PT_PTRS_PER_TABLE) - 1
                slot = (table - PT_TABLE_BASE + 8 * index) >> 3
                if table < PT_TABLE_BASE or slot >= <uint64_t>nslots:
                    raise IndexError(f"the walk of {ipa:#x} left table memory at {table:#x}")
                desc = mem[slot]
                if level < 3 and desc & PT_DESC_VALID and desc & PT_DESC_TYPE:
                    table = desc & PT_OA_MASK
                    level += 1
                    continue
                break
            out[n] = desc
            lv[n] = level
            n += 1
            ipa += size
    return values, levels


def summary_counts(const uint64_t[::1] values, const uint8_t[::1] levels):
    """{(valid, af, s2ap index, dbm): leaves} over the leaves walk_maps read, as
    report.leaf_fields sees each one (valid: a page at level 3, a block at 1 or 2)."""
    cdef Py_ssize_t counts[32]
    cdef Py_ssize_t k
    cdef uint64_t d
    cdef int level, valid, key
    for k in range(32):
        counts[k] = 0
    for k in range(values.shape[0]):
        d = values[k]
        level = levels[k]
        if not d & PT_DESC_VALID:
            valid = 0
        elif level == 3:
            valid = 1 if d & PT_DESC_TYPE else 0
        else:
            valid = 1 if (level == 1 or level == 2) and not d & PT_DESC_TYPE else 0
        key = (
            valid
            | (2 if d & PT_AF else 0)
            | <int>((d & PT_S2AP_MASK) >> PT_S2AP_SHIFT) << 2
            | (16 if d & PT_DBM else 0)
        )
        counts[key] += 1
    return {
        (key & 1, (key >> 1) & 1, (key >> 2) & 3, (key >> 4) & 1): counts[key]
        for key in range(32)
        if counts[key]
    }
