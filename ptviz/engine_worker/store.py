"""The engine worker's database side (sync ORM): leases, loading a live session from its
recording, and appending decisions and checkpoints.

Loading restores the latest stored checkpoint (its state hash verified) and re-executes
only the decisions after it, so a session with a long recording resumes fast.
"""

from __future__ import annotations

import zlib
from datetime import timedelta

from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.db.models import Q
from django.utils import timezone

from engine.session import Checkpoint as LiveCheckpoint
from engine.session import LiveSession, ReplayError
from engine.snapshot import state_hash, unpack
from ptviz.debugger.models import Checkpoint, DebugSession, Decision, EngineLease


class SessionGone(Exception):
    """The session is not in the database (deleted, or never was)."""


class LostOwnership(Exception):
    """Another worker owns the session now: this worker must drop its copy."""


def compress(snapshot: bytes) -> bytes:
    return zlib.compress(snapshot, 1)


def decompress(blob: bytes) -> bytes:
    return zlib.decompress(bytes(blob))


def live_from_rows(
    scenario_text: str,
    engine: str,
    decisions: list[list],
    checkpoints: list[tuple[int, bytes, str]],
    path: str = "<session>",
) -> LiveSession:
    """A LiveSession at the end of `decisions`, from the newest usable checkpoint.

    `checkpoints` are (position, compressed snapshot, state hash). A checkpoint whose
    hash does not match its snapshot is ignored (the decisions are the recording)."""
    live = LiveSession(scenario_text, engine=engine, path=path)
    usable: dict[int, LiveCheckpoint] = {}
    for position, blob, digest in checkpoints:
        if not 0 < position <= len(decisions):
            continue
        try:
            data = decompress(blob)
        except zlib.error:
            continue
        if state_hash(data) == digest:
            usable[position] = LiveCheckpoint(position, data, digest)
    start = 0
    if usable:
        start = max(usable)
        live.machine.set_state(unpack(usable[start].snapshot))
        live.checkpoints.update(usable)
        live.decisions = [list(d) for d in decisions[:start]]
        live.position = start
    for n, decision in enumerate(decisions[start:], start):
        try:
            live.apply(list(decision))
        except Exception as exc:  # an EngineError: the recording does not replay
            raise ReplayError(
                f"recorded decision {n} ({decision!r}) cannot be taken: {exc}"
            ) from None
    live.machine.clear_events()
    return live


def load(session_id: str) -> tuple[DebugSession, LiveSession, set[int]]:
    """The session row, its live session at the end of the recording, and the positions of
    the checkpoints already stored."""
    try:
        row = DebugSession.objects.get(pk=session_id)
    except (DebugSession.DoesNotExist, ValidationError, ValueError):
        raise SessionGone(session_id) from None
    decisions = Decision.recorded(row)
    checkpoints = list(
        Checkpoint.objects.filter(session=row).values_list("position", "snapshot", "state_hash")
    )
    live = live_from_rows(row.scenario_text, row.engine, decisions, checkpoints, path=row.name)
    return row, live, {c[0] for c in checkpoints}


def append(
    session_id: str,
    start: int,
    decisions: list[list],
    checkpoints: list[LiveCheckpoint],
    worker: str | None = None,
    run: dict | None = None,
) -> None:
    """Store decisions start.. and new checkpoints in one transaction, if `worker` still
    holds the session's lease (a worker that lost it, say after a stall long enough for
    another to take over, must not write). The unique (session, index) constraint is the
    second fence. `run` (the running run's state after these decisions, or None) goes to
    the lease in the same transaction: a takeover resumes exactly there."""
    rows = Decision.rows_for(session_id, start, decisions)
    snaps = [
        Checkpoint(
            session_id=session_id,
            position=c.position,
            snapshot=compress(c.snapshot),
            state_hash=c.hash,
        )
        for c in checkpoints
    ]
    try:
        with transaction.atomic():
            if worker is not None:
                held = EngineLease.objects.select_for_update().filter(
                    session_id=session_id, worker=worker
                )
                if not held.exists():
                    raise LostOwnership(session_id)
            # Rows start where the recording ends (a packed row covers several indexes, so
            # the unique index alone would not catch an overlap).
            last = Decision.objects.filter(session_id=session_id).order_by("-index").first()
            if (last.index + last.count if last else 0) != start:
                raise LostOwnership(session_id)
            Decision.objects.bulk_create(rows)
            EngineLease.objects.filter(session_id=session_id).update(run=run)
            if snaps:
                Checkpoint.objects.bulk_create(snaps, ignore_conflicts=True)
            DebugSession.objects.filter(pk=session_id).update(updated=timezone.now())
    except IntegrityError:
        if not DebugSession.objects.filter(pk=session_id).exists():
            raise SessionGone(session_id) from None
        raise LostOwnership(session_id) from None


def claim(
    session_id: str, worker: str, channel: str, timeout: float, force: bool = False
) -> str | None:
    """Take the lease of a session. None: this worker owns it now; otherwise the channel of
    the live worker that does. `force` (embedded transport: the bridge decides) takes it
    regardless."""
    now = timezone.now()
    stale = now - timedelta(seconds=timeout)
    if not DebugSession.objects.filter(pk=session_id).exists():
        raise SessionGone(session_id)
    with transaction.atomic():
        taken = EngineLease.objects.filter(session_id=session_id)
        if not force:
            taken = taken.filter(Q(worker=worker) | Q(heartbeat__lt=stale))
        if taken.update(worker=worker, channel=channel, heartbeat=now):
            return None
        lease = EngineLease.objects.filter(session_id=session_id).first()
        if lease is None:
            try:
                with transaction.atomic():
                    EngineLease.objects.create(
                        session_id=session_id, worker=worker, channel=channel, heartbeat=now
                    )
                return None
            except IntegrityError:
                lease = EngineLease.objects.filter(session_id=session_id).first()
                if lease is None:
                    raise SessionGone(session_id) from None
        return lease.channel


def heartbeat(worker: str, session_ids: list[str]) -> set[str]:
    """Renew this worker's leases; the sessions it still owns."""
    if not session_ids:
        return set()
    leases = EngineLease.objects.filter(worker=worker, session_id__in=session_ids)
    leases.update(heartbeat=timezone.now())
    return {str(s) for s in leases.values_list("session_id", flat=True)}


def save_run(session_id: str, run: dict | None) -> None:
    EngineLease.objects.filter(session_id=session_id).update(run=run)


def saved_run(session_id: str) -> dict | None:
    """The run a previous owner was running (to resume after a takeover)."""
    return EngineLease.objects.filter(session_id=session_id).values_list("run", flat=True).first()


def release(worker: str, session_id: str) -> None:
    EngineLease.objects.filter(worker=worker, session_id=session_id).delete()


def release_all(worker: str) -> None:
    EngineLease.objects.filter(worker=worker).delete()
