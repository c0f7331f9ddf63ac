"""What the database keeps: the recording (scenario + decisions + checkpoints), share links
and which engine worker owns a live session.

The database, not the channel layer, is the recording (DESIGN.md, "Pitfalls"): a decision
is stored before it is acknowledged or shown to anyone, and decisions are append-only.
"""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Iterable
from itertools import groupby

from django.db import models
from django.utils import timezone

from engine.history import Path, Runs

ROLE_VIEW = "view"
ROLE_CONTROL = "control"
ROLES = (ROLE_VIEW, ROLE_CONTROL)


def new_token() -> str:
    return secrets.token_urlsafe(18)


class DebugSession(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    name = models.CharField(max_length=300)
    scenario_text = models.TextField()
    kernel = models.CharField(max_length=16)
    engine = models.CharField(max_length=16, default="cython")
    created = models.DateTimeField(auto_now_add=True)
    updated = models.DateTimeField(auto_now=True)
    parent = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.SET_NULL, related_name="forks"
    )
    # How it was made: "example:<file>", "paste", "upload", "form", "import", "fork:...".
    origin = models.CharField(max_length=200, blank=True, default="")
    # The branch whose tip is the session's head (engine/history.py).
    head_branch = models.PositiveIntegerField(default=0)

    class Meta:
        ordering = ["-created"]

    def __str__(self) -> str:
        return f"{self.name} ({self.id})"


class Branch(models.Model):
    """A branch of a session's decision tree (engine/history.py) other than the first:
    it shares the first `start` decisions of branch `parent`'s path."""

    session = models.ForeignKey(DebugSession, on_delete=models.CASCADE, related_name="branches")
    number = models.PositiveIntegerField()
    parent = models.PositiveIntegerField()
    start = models.PositiveIntegerField()
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["session", "number"]
        constraints = [
            models.UniqueConstraint(fields=["session", "number"], name="branch_number_unique")
        ]


class Decision(models.Model):
    """Scheduling decisions and injected operations: the recording, append-only.

    A row is one injected operation, one step, or `count` consecutive steps from `index`
    on ("steps"): either one byte per step naming the actor (an interleaving), or no bytes
    when all `count` steps are `actor`'s (a run: the 786,956 steps of a 1 GiB write-protect
    are a few rows of a few bytes). A fast run records hundreds of thousands of
    micro-steps a second without a row each. `index` is the position on the path of
    `branch` (a branch's rows start at its `start`).
    """

    STEP = "step"
    INJECT = "inject"
    STEPS = "steps"
    # A run of one actor's steps at least this long is a row of its own (no bytes).
    RUN_ROW = 64

    session = models.ForeignKey(DebugSession, on_delete=models.CASCADE, related_name="decisions")
    branch = models.PositiveIntegerField(default=0)
    index = models.PositiveIntegerField()
    kind = models.CharField(max_length=8, choices=[(STEP, STEP), (INJECT, INJECT), (STEPS, STEPS)])
    actor = models.PositiveSmallIntegerField()
    op = models.TextField(blank=True, default="")
    count = models.PositiveIntegerField(default=1)
    steps = models.BinaryField(blank=True, default=b"")

    class Meta:
        ordering = ["session", "branch", "index"]
        constraints = [
            # Also the fence between two workers that both think they own a session: the
            # second to write a given index fails and gives the session up.
            models.UniqueConstraint(
                fields=["session", "branch", "index"], name="decision_branch_index_unique"
            )
        ]

    def save(self, *args, **kwargs):
        if not self._state.adding:
            raise ValueError("decisions are append-only: a recorded decision is never changed")
        super().save(*args, **kwargs)

    def as_runs(self) -> list[tuple[list, int]]:
        """The row's decisions as runs (decision, count): ["step", actor] or ["inject",
        actor, op]."""
        if self.kind == self.STEPS:
            steps = bytes(self.steps)
            if not steps:
                return [([self.STEP, self.actor], self.count)]
            return [([self.STEP, a], len(list(g))) for a, g in groupby(steps)]
        if self.kind == self.STEP:
            return [([self.STEP, self.actor], 1)]
        return [([self.kind, self.actor, self.op], 1)]

    def as_lists(self) -> list[list]:
        """The LiveSession form: ["step", actor] or ["inject", actor, op] per decision."""
        return [d for d, n in self.as_runs() for _ in range(n)]

    @classmethod
    def recorded(cls, session, branch: int = 0) -> list[list]:
        """One branch's own decisions, in order (the first branch: from position 0)."""
        out: list[list] = []
        for row in cls.objects.filter(session=session, branch=branch).order_by("index"):
            out.extend(row.as_lists())
        return out

    @classmethod
    def by_branch(cls, session) -> dict[int, Runs]:
        """Every decision of a session: each branch's own decisions, in order, as runs."""
        out: dict[int, Runs] = {}
        rows = cls.objects.filter(session=session).order_by("branch", "index")
        for branch, kind, actor, op, count, steps in rows.values_list(
            "branch", "kind", "actor", "op", "count", "steps"
        ):
            runs = out.get(branch)
            if runs is None:
                runs = out[branch] = Runs()
            if kind == cls.INJECT:
                runs.add([kind, actor, op], 1)
            elif kind == cls.STEP or not steps:
                runs.add([cls.STEP, actor], count)
            else:
                for a, g in groupby(bytes(steps)):
                    runs.add([cls.STEP, a], len(list(g)))
        return out

    @classmethod
    def rows_for(
        cls, session_id, start: int, decisions: Iterable[list] | Runs, branch: int = 0
    ) -> list[Decision]:
        """Rows recording decisions start.., runs of at least RUN_ROW steps of one actor
        as a row each, other consecutive steps packed one byte each into "steps" rows."""
        runs = decisions.runs() if isinstance(decisions, (Runs, Path)) else Runs(decisions).runs()
        rows: list[Decision] = []
        index = start
        packed = bytearray()  # steps not written yet, from index - len(packed)

        def row(**fields) -> Decision:
            return cls(session_id=session_id, branch=branch, **fields)

        def flush() -> None:
            if len(packed) == 1:
                rows.append(row(index=index - 1, kind=cls.STEP, actor=packed[0]))
            elif packed:
                at = index - len(packed)
                steps = bytes(packed)  # actors are few (< 256)
                rows.append(
                    row(index=at, kind=cls.STEPS, actor=steps[0], count=len(steps), steps=steps)
                )
            packed.clear()

        for d, n in runs:
            if d[0] == cls.INJECT:
                flush()
                rows.append(row(index=index, kind=cls.INJECT, actor=d[1], op=d[2]))
            elif n >= cls.RUN_ROW:
                flush()
                rows.append(row(index=index, kind=cls.STEPS, actor=d[1], count=n))
            else:
                packed.extend(bytes([d[1]]) * n)
            index += n
        flush()
        return rows


class Checkpoint(models.Model):
    """A machine snapshot after `position` decisions of `branch`'s path (zlib-compressed
    engine snapshot), with the state hash of the uncompressed snapshot
    (LiveSession.interval apart)."""

    session = models.ForeignKey(DebugSession, on_delete=models.CASCADE, related_name="checkpoints")
    branch = models.PositiveIntegerField(default=0)
    position = models.PositiveIntegerField()
    snapshot = models.BinaryField()
    state_hash = models.CharField(max_length=64)

    class Meta:
        ordering = ["session", "branch", "position"]
        constraints = [
            models.UniqueConstraint(
                fields=["session", "branch", "position"], name="checkpoint_branch_position_unique"
            )
        ]


class ShareLink(models.Model):
    """A link to a session. The creator's link (`owner`) owns the session: it makes named
    links, lists them and revokes them. A revoked or expired link opens nothing."""

    token = models.CharField(max_length=64, unique=True, default=new_token)
    session = models.ForeignKey(DebugSession, on_delete=models.CASCADE, related_name="links")
    role = models.CharField(
        max_length=8, choices=[(ROLE_VIEW, ROLE_VIEW), (ROLE_CONTROL, ROLE_CONTROL)]
    )
    created = models.DateTimeField(auto_now_add=True)
    owner = models.BooleanField(default=False)
    label = models.CharField(max_length=60, blank=True, default="")
    expires = models.DateTimeField(null=True, blank=True)
    revoked = models.DateTimeField(null=True, blank=True)

    @property
    def can_control(self) -> bool:
        return self.role == ROLE_CONTROL

    def dead_reason(self, now=None) -> str | None:
        """Why this link opens nothing any more (None: it is valid)."""
        if self.revoked is not None:
            return "revoked"
        if self.expires is not None and self.expires <= (now or timezone.now()):
            return "expired"
        return None


class EngineLease(models.Model):
    """Which engine worker owns a live session. A lease whose heartbeat is older than
    PTVIZ_LEASE_TIMEOUT is stale: another worker may claim it and rebuild the session
    from the database."""

    session = models.OneToOneField(
        DebugSession, on_delete=models.CASCADE, primary_key=True, related_name="lease"
    )
    worker = models.CharField(max_length=200)
    channel = models.CharField(max_length=200)
    heartbeat = models.DateTimeField()
    # The running `run` as of the last stored decision (host.RunState.as_json), so the
    # worker that takes the session over resumes it exactly; null when not running.
    run = models.JSONField(null=True, blank=True, default=None)
