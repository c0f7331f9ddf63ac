"""The engine worker's database side (sync ORM): leases, loading a live session from its
recording (the decision tree, engine/history.py), and appending decisions and checkpoints.

Loading restores the latest stored checkpoint on the head's path (its state hash
verified) and re-executes only the decisions after it, so a session with a long recording
resumes fast.
"""

from __future__ import annotations

import zlib
from datetime import timedelta

from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.db.models import Q
from django.utils import timezone

from engine.history import Branch as HistoryBranch
from engine.history import Checkpoint as LiveCheckpoint
from engine.history import Runs
from engine.session import LiveSession, ReplayError
from engine.snapshot import state_hash
from ptviz.debugger.models import Branch, Checkpoint, DebugSession, Decision, EngineLease


class SessionGone(Exception):
    """The session is not in the database (deleted, or never was)."""


class LostOwnership(Exception):
    """Another worker owns the session now: this worker must drop its copy."""


def compress(snapshot: bytes) -> bytes:
    return zlib.compress(snapshot, 1)


def decompress(blob: bytes) -> bytes:
    return zlib.decompress(bytes(blob))


def live_from_history(
    scenario_text: str,
    engine: str,
    branches: dict[int, tuple[int | None, int, list[list]]],
    checkpoints: list[tuple[int, int, bytes, str]],
    head: int = 0,
    path: str = "<session>",
) -> LiveSession:
    """A LiveSession at the tip of branch `head`, from the newest usable checkpoint.

    `branches`: number -> (parent, start, own decisions: a list, or Runs kept as runs);
    `checkpoints`: (branch, position, compressed snapshot, state hash). A checkpoint whose
    hash does not match its snapshot is ignored (the decisions are the recording)."""
    live = LiveSession(scenario_text, engine=engine, path=path)
    tree = live.tree
    for number in sorted(branches):
        parent, start, decisions = branches[number]
        if number == 0:
            br = tree.branches[0]
        else:
            if number != len(tree.branches) or parent is None or parent >= number:
                raise ReplayError(f"branch {number} of the recording is malformed")
            if start > tree.branches[parent].end:
                raise ReplayError(f"branch {number} starts past the end of branch {parent}")
            br = HistoryBranch(number, parent, start)
            tree.branches.append(br)
        if isinstance(decisions, Runs):  # from the database: runs stay runs
            br.add_runs(decisions)
        else:
            for decision in decisions:
                br.append(list(decision))
    for branch, position, blob, digest in checkpoints:
        if not 0 <= branch < len(tree.branches):
            continue
        br = tree.branches[branch]
        if not (br.start if br.parent is not None else 0) < position <= br.end:
            continue
        try:
            data = decompress(blob)
        except zlib.error:
            continue
        if state_hash(data) == digest:
            br.checkpoints[position] = LiveCheckpoint(position, data, digest)
    if not 0 <= head < len(tree.branches):
        raise ReplayError(f"the head branch {head} is not in the recording")
    try:
        live.seek(tree.branches[head].end, head)
    except Exception as exc:  # an EngineError: the recording does not replay
        raise ReplayError(f"the recorded decisions cannot be taken: {exc}") from None
    live.machine.clear_events()
    return live


def live_from_rows(
    scenario_text: str,
    engine: str,
    decisions: list[list],
    checkpoints: list[tuple[int, bytes, str]],
    path: str = "<session>",
) -> LiveSession:
    """A LiveSession on a single-branch recording (decisions, (position, blob, hash))."""
    return live_from_history(
        scenario_text,
        engine,
        {0: (None, 0, decisions)},
        [(0, p, blob, h) for p, blob, h in checkpoints],
        path=path,
    )


def history_of(row: DebugSession) -> tuple[dict, list]:
    """The stored tree of a session: branches (number -> (parent, start, decisions)) and
    checkpoints ((branch, position, blob, hash))."""
    own = Decision.by_branch(row)
    branches: dict[int, tuple[int | None, int, Runs]] = {0: (None, 0, own.get(0, Runs()))}
    for b in Branch.objects.filter(session=row).order_by("number"):
        branches[b.number] = (b.parent, b.start, own.get(b.number, Runs()))
    checkpoints = [
        (b, p, bytes(blob), h)
        for b, p, blob, h in Checkpoint.objects.filter(session=row).values_list(
            "branch", "position", "snapshot", "state_hash"
        )
    ]
    return branches, checkpoints


def load(session_id: str) -> tuple[DebugSession, LiveSession, set[tuple[int, int]]]:
    """The session row, its live session at the head, and the (branch, position) of the
    checkpoints already stored."""
    try:
        row = DebugSession.objects.get(pk=session_id)
    except (DebugSession.DoesNotExist, ValidationError, ValueError):
        raise SessionGone(session_id) from None
    branches, checkpoints = history_of(row)
    live = live_from_history(
        row.scenario_text, row.engine, branches, checkpoints, row.head_branch, path=row.name
    )
    return row, live, {(c[0], c[1]) for c in checkpoints}


def append(
    session_id: str,
    start: int,
    decisions: list[list],
    checkpoints: list[tuple[int, bytes, str]],
    worker: str | None = None,
    branch: int = 0,
    new_branch: tuple[int, int] | None = None,
    head: int | None = None,
    run: dict | None = None,
) -> None:
    """Store decisions start.. of `branch` and new checkpoints in one transaction, if
    `worker` still holds the session's lease (a worker that lost it, say after a stall
    long enough for another to take over, must not write). The unique (session, branch,
    index) constraint is the second fence. `new_branch` (parent, start): the branch is
    created here; `head`: the session's head moves to that branch. `checkpoints`:
    (position, compressed snapshot, state hash) on `branch`. `run` (the running
    run's state after these decisions, or None) goes to the lease in the same
    transaction: a takeover resumes exactly there."""
    rows = Decision.rows_for(session_id, start, decisions, branch)
    snaps = [
        Checkpoint(session_id=session_id, branch=branch, position=p, snapshot=blob, state_hash=h)
        for p, blob, h in checkpoints
    ]
    try:
        with transaction.atomic():
            if worker is not None:
                held = EngineLease.objects.select_for_update().filter(
                    session_id=session_id, worker=worker
                )
                if not held.exists():
                    raise LostOwnership(session_id)
            if new_branch is not None:
                parent, fork = new_branch
                Branch.objects.create(
                    session_id=session_id, number=branch, parent=parent, start=fork
                )
                end = fork
            else:
                # Rows start where the branch ends (a packed row covers several indexes,
                # so the unique index alone would not catch an overlap).
                last = (
                    Decision.objects.filter(session_id=session_id, branch=branch)
                    .order_by("-index")
                    .first()
                )
                if last is not None:
                    end = last.index + last.count
                elif branch == 0:
                    end = 0
                else:
                    end = Branch.objects.get(session_id=session_id, number=branch).start
            if end != start:
                raise LostOwnership(session_id)
            Decision.objects.bulk_create(rows)
            EngineLease.objects.filter(session_id=session_id).update(run=run)
            if snaps:
                Checkpoint.objects.bulk_create(snaps, ignore_conflicts=True)
            fields = {"updated": timezone.now()}
            if head is not None:
                fields["head_branch"] = head
            DebugSession.objects.filter(pk=session_id).update(**fields)
    except (IntegrityError, Branch.DoesNotExist):
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
