"""Machine snapshots: bytes out, state back in, with a state hash.

Both cores expose the same get_state()/set_state() structure, so a snapshot taken from one
restores into the other. Layout: magic, a little-endian u32 length, the JSON of everything
but the table memory, then the table memory (uint64 little-endian).
"""

from __future__ import annotations

import hashlib
import json
import struct

MAGIC = b"PTVZSNP1"


class SnapshotError(ValueError):
    pass


def pack(state: dict) -> bytes:
    meta = {k: v for k, v in state.items() if k != "mem"}
    head = json.dumps(meta, separators=(",", ":"), sort_keys=True).encode()
    return MAGIC + struct.pack("<I", len(head)) + head + state["mem"]


def unpack(data: bytes) -> dict:
    if not data.startswith(MAGIC) or len(data) < len(MAGIC) + 4:
        raise SnapshotError("not a ptviz snapshot (bad magic)")
    (length,) = struct.unpack_from("<I", data, len(MAGIC))
    start = len(MAGIC) + 4
    try:
        state = json.loads(data[start : start + length])
    except ValueError as exc:
        raise SnapshotError(f"corrupt snapshot header: {exc}") from None
    state["mem"] = bytes(data[start + length :])
    return state


def state_hash(data: bytes) -> str:
    """Hash of a packed snapshot: equal hashes, equal futures."""
    return hashlib.blake2b(data, digest_size=16).hexdigest()


def snapshot(machine) -> bytes:
    return pack(machine.get_state())


def restore(machine, data: bytes) -> None:
    machine.set_state(unpack(data))
