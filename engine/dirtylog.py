"""Dirty-logging state both cores share: logging ranges, the dirty bitmap, harvested pages,
and what the no_lost_dirty check (SCENARIOS.md, "Dirty logging ...") needs to remember.

Plain sorted tuples, so a core can snapshot the whole state by reference (save/restore
while exploring) and hash it. Ranges are [start, end) IPA pairs; pages are 4K-aligned IPAs.
"""

from __future__ import annotations

from bisect import bisect_left, insort

from . import bits as B
from .isa import DIRTY_WORD_PAGES as WORD_PAGES  # pages per word (BITS_PER_LONG)

PAGE_MASK = ~(B.PAGE_SIZE - 1)


def _add(ranges: tuple, start: int, end: int) -> tuple:
    out = []
    for s, e in ranges:
        if e < start or s > end:
            out.append((s, e))
        else:
            start, end = min(s, start), max(e, end)
    out.append((start, end))
    return tuple(sorted(out))


def _sub(ranges: tuple, start: int, end: int) -> tuple:
    out = []
    for s, e in ranges:
        if e <= start or s >= end:
            out.append((s, e))
            continue
        if s < start:
            out.append((s, start))
        if e > end:
            out.append((end, e))
    return tuple(out)


def _has(ranges: tuple, ipa: int) -> bool:
    return any(s <= ipa < e for s, e in ranges)


class DirtyLog:
    """The VM's dirty-logging state (memslot flags and bitmaps, virt/kvm/kvm_main.c)."""

    __slots__ = (
        "slots",
        "logging",
        "tracked",
        "bitmap",
        "harvested",
        "written",
        "hwdirty",
        "used",
    )

    def __init__(self, slots=()):
        # (base IPA, end IPA) of each memslot: each has its own dirty_bitmap, bit i for gfn
        # base_gfn + i (kvm_main.c mark_page_dirty_in_slot: rel_gfn = gfn - base_gfn).
        self.slots = tuple(sorted((s, e) for s, e in slots))
        self.logging = ()  # ranges with KVM_MEM_LOG_DIRTY_PAGES (memslot_is_logging)
        self.tracked = ()  # ranges whose log_start has finished (no_lost_dirty part a)
        self.bitmap = ()  # pages in memslot->dirty_bitmap
        self.harvested = ()  # pages a KVM_GET_DIRTY_LOG returned
        self.written = ()  # pages a guest write completed on while tracked
        self.hwdirty = ()  # (descriptor PA, page): S2AP[1] set by the walker (HD + DBM)
        self.used = False  # a logging operation ran (the JSON then shows dirty_log)

    # --- snapshots ---------------------------------------------------------------------
    def state(self) -> tuple:
        return (
            self.logging,
            self.tracked,
            self.bitmap,
            self.harvested,
            self.written,
            self.hwdirty,
            self.used,
        )

    def restore(self, state: tuple) -> None:
        """Back to a state() of this log (its parts are tuples already: no copy; a mark's
        restore, once per explored branch)."""
        (
            self.logging,
            self.tracked,
            self.bitmap,
            self.harvested,
            self.written,
            self.hwdirty,
            self.used,
        ) = state

    def load(self, state) -> None:
        logging, tracked, bitmap, harvested, written, hwdirty, used = state
        self.logging = tuple(tuple(r) for r in logging)
        self.tracked = tuple(tuple(r) for r in tracked)
        self.bitmap = tuple(bitmap)
        self.harvested = tuple(harvested)
        self.written = tuple(written)
        self.hwdirty = tuple(tuple(r) for r in hwdirty)
        self.used = bool(used)

    # --- memslot flags -------------------------------------------------------------------
    def is_logging(self, ipa: int) -> bool:
        return _has(self.logging, ipa)

    def start(self, start: int, end: int) -> None:
        self.logging = _add(self.logging, start & PAGE_MASK, end)
        self.used = True

    def stop(self, start: int, end: int) -> None:
        self.logging = _sub(self.logging, start & PAGE_MASK, end)
        self.tracked = _sub(self.tracked, start & PAGE_MASK, end)
        self.used = True

    def track(self, start: int, end: int) -> None:
        self.tracked = _add(self.tracked, start & PAGE_MASK, end)

    # --- the bitmap ----------------------------------------------------------------------
    def mark(self, ipa: int) -> None:
        """mark_page_dirty: set_bit_le(rel_gfn, memslot->dirty_bitmap)."""
        page = ipa & PAGE_MASK
        if page not in self.bitmap:
            bitmap = list(self.bitmap)
            insort(bitmap, page)
            self.bitmap = tuple(bitmap)

    def harvest(self, cursor: int, lo: int, hi: int) -> tuple[int, int, list[int], int]:
        """One `mask = xchg(&dirty_bitmap[i], 0)` of kvm_get_dirty_log_protect: the bitmap word
        of the memslot at or after `cursor` (a word is 64 pages from the memslot's base gfn,
        cut at its end), over the pages in [lo, hi). Returns (word start, mask, pages, the
        cursor of the next word); the pages move from the bitmap to `harvested`."""
        word = top = hi
        for base, end in self.slots:
            if end <= cursor:
                continue
            start = max(cursor, base)
            if start >= hi:
                break
            span = WORD_PAGES * B.PAGE_SIZE
            word = base + (start - base) // span * span
            top = min(word + span, end)
            break
        pages = [p for p in self.bitmap if max(word, lo) <= p < min(top, hi)]
        if pages:
            self.bitmap = tuple(p for p in self.bitmap if p not in pages)
            self.harvested = tuple(sorted(set(self.harvested) | set(pages)))
        mask = 0
        for p in pages:
            mask |= 1 << ((p - word) >> B.PAGE_SHIFT)
        self.used = True
        return word, mask, pages, top

    def recorded(self, page: int) -> bool:
        i = bisect_left(self.bitmap, page)
        if i < len(self.bitmap) and self.bitmap[i] == page:
            return True
        i = bisect_left(self.harvested, page)
        return i < len(self.harvested) and self.harvested[i] == page

    # --- what no_lost_dirty remembers ---------------------------------------------------------
    def note_write(self, ipa: int) -> None:
        """A guest store completed: remember it if its page is tracked (part a)."""
        page = ipa & PAGE_MASK
        if _has(self.tracked, page) and page not in self.written:
            written = list(self.written)
            insort(written, page)
            self.written = tuple(written)

    def hw_set_dirty(self, desc_pa: int, ipa: int) -> None:
        """The walker set S2AP[1] of a DBM descriptor for a store to ipa (part b)."""
        if all(d != desc_pa for d, _ in self.hwdirty):
            self.hwdirty = tuple(sorted((*self.hwdirty, (desc_pa, ipa & PAGE_MASK))))

    def sw_cleared(self, desc_pa: int) -> int | None:
        """Software cleared S2AP[1] of the descriptor at desc_pa: the page whose hardware
        dirty state that discarded without it being in the dirty log, else None."""
        for d, page in self.hwdirty:
            if d == desc_pa:
                self.hwdirty = tuple(x for x in self.hwdirty if x[0] != desc_pa)
                return None if self.recorded(page) else page
        return None

    def lost_writes(self, hw_dirty) -> list[int]:
        """Part (a) at the end: tracked writes neither in the bitmap, nor harvested, nor
        still dirty in hardware (`hw_dirty(page)`: its leaf has DBM and S2AP[1] set)."""
        return [p for p in self.written if not self.recorded(p) and not hw_dirty(p)]

    def view(self) -> dict:
        return {
            "bitmap": list(self.bitmap),
            "harvested": list(self.harvested),
            "logging": [list(r) for r in self.logging],
        }
