"""Making sessions (from a scenario, a fork, an imported recording) and exporting them.

Everything is validated in full (the scenario parsed, the machine built, every decision
replayed) before anything is written, and written in one transaction: a user error never
leaves a half-created session behind.
"""

from __future__ import annotations

from django.conf import settings
from django.db import transaction

from engine.history import Runs
from engine.scenario import ScenarioError
from engine.session import LiveSession, ReplayError
from engine.twin import EngineError
from ptviz import protocol as P
from ptviz.debugger.models import (
    ROLE_CONTROL,
    ROLE_VIEW,
    Branch,
    Checkpoint,
    DebugSession,
    Decision,
    ShareLink,
)
from ptviz.debugger.scenarios import with_machine
from ptviz.engine_worker.store import compress, history_of, live_from_history, live_from_rows

MAX_RECORDING_BYTES = 32 * 1024 * 1024
# A scenario's text, however it comes (pasted, uploaded, made from a dump, inside a
# recording or a bundle): every load of its session parses it and builds its machine.
MAX_SCENARIO_BYTES = 4 * 1024 * 1024


class InputError(Exception):
    """A user error: `message` names the input at fault; `where` the key when known."""

    def __init__(self, message: str, code: str = "invalid", where: str | None = None):
        super().__init__(message)
        self.message = message
        self.code = code
        self.where = where


def engine_name() -> str:
    return settings.PTVIZ_ENGINE


def check_scenario_size(text: str, label: str) -> None:
    size = len(text.encode(errors="surrogatepass"))
    if size > MAX_SCENARIO_BYTES:
        raise InputError(
            f"{label}: the scenario is {size:,} bytes, larger than "
            f"{MAX_SCENARIO_BYTES >> 20} MiB ({MAX_SCENARIO_BYTES:,} bytes)",
            "scenario",
        )


def check_scenario(text: str, path: str) -> LiveSession:
    """Parse the scenario and build its machine; InputError naming the key or line."""
    check_scenario_size(text, path)
    try:
        return LiveSession(text, engine=engine_name(), path=path)
    except ScenarioError as exc:
        raise InputError(str(exc), "scenario", exc.where) from None
    except EngineError as exc:
        raise InputError(f"{path}: {exc}", "scenario") from None


@transaction.atomic
def create(
    live: LiveSession,
    origin: str,
    parent: DebugSession | None = None,
    checkpoints: list[tuple[int, bytes, str]] | None = None,
) -> tuple[DebugSession, ShareLink, ShareLink]:
    """Store a session (its recording: live's decision tree, every branch, and its
    checkpoints; `checkpoints` given: those of a single-branch live) and two links."""
    session = DebugSession.objects.create(
        name=live.scenario.name[:300],
        scenario_text=live.scenario_text,
        kernel=live.scenario.kernel,
        engine=live.engine,
        parent=parent,
        origin=origin[:200],
        head_branch=live.branch,
    )
    for br in live.tree.branches:
        if br.parent is not None:
            Branch.objects.create(session=session, number=br.id, parent=br.parent, start=br.start)
        Decision.objects.bulk_create(Decision.rows_for(session.pk, br.start, br.decisions, br.id))
    if checkpoints is None:
        rows = [
            (br.id, c.position, compress(c.snapshot), c.hash)
            for br in live.tree.branches
            for c in br.checkpoints.values()
            if 0 < c.position <= br.end
        ]
    else:
        rows = [(0, p, blob, h) for p, blob, h in checkpoints]
    Checkpoint.objects.bulk_create(
        Checkpoint(session=session, branch=b, position=p, snapshot=blob, state_hash=h)
        for b, p, blob, h in rows
    )
    control = ShareLink.objects.create(session=session, role=ROLE_CONTROL, owner=True)
    view = ShareLink.objects.create(session=session, role=ROLE_VIEW)
    return session, control, view


# A stored checkpoint saves re-executing the decisions before it, but costs a compression
# when stored and a decompression and hash check when loaded (about 10 ms each for 2 MiB
# of tables). Re-executing a run of one actor's steps costs a call into the core and
# ~40 ns per step, so along long runs checkpoints are only worth it this far apart.
RUNS_PER_CHECKPOINT = 4096
STEPS_PER_CHECKPOINT = 1 << 22


def worth_storing(live: LiveSession) -> list[tuple[int, bytes, str]]:
    """The checkpoints of live's path worth storing, compressed (position, blob, hash):
    the newest (the session opens there), and before it one wherever re-executing from
    the previous kept one would take more than RUNS_PER_CHECKPOINT runs or
    STEPS_PER_CHECKPOINT steps."""
    end = len(live.decisions)
    on_path = sorted(p for p in live.checkpoints if 0 < p <= end)
    keep = set(on_path[-1:])
    prev = runs = steps = 0  # since the last kept checkpoint (or the start)
    for p in on_path:
        for _d, n in live.decisions.runs(prev, p):
            runs += 1
            steps += n
        prev = p
        if runs > RUNS_PER_CHECKPOINT or steps > STEPS_PER_CHECKPOINT:
            keep.add(p)
            runs = steps = 0
    cps = live.checkpoints
    return [(p, compress(cps[p].snapshot), cps[p].hash) for p in sorted(keep)]


def load_live(session: DebugSession) -> LiveSession:
    """The session's LiveSession (its whole tree), at the head."""
    branches, checkpoints = history_of(session)
    return live_from_history(
        session.scenario_text,
        session.engine,
        branches,
        checkpoints,
        session.head_branch,
        path=session.name,
    )


# --- forks --------------------------------------------------------------------------------
def _replayed(
    session: DebugSession, position: int, kept: list | None = None, branch: int = 0
) -> LiveSession:
    """A new single-branch LiveSession holding the decisions on the path to node
    (branch, position) of the session (from its stored checkpoints); `kept` receives
    those checkpoints (position, compressed snapshot, hash)."""
    try:
        live = load_live(session)
    except (ReplayError, EngineError, ScenarioError) as exc:
        raise InputError(f"the recording does not replay: {exc}", "engine") from None
    if not 0 <= branch < len(live.tree.branches):
        raise InputError(f"this session has no branch {branch}", where="branch")
    end = live.tree.branches[branch].end
    if not 0 <= position <= end:
        raise InputError(
            f"position {position} is outside 0..{end} (the recorded decisions)",
            where="position",
        )
    kept = kept if kept is not None else []
    kept[:] = [
        (p, compress(c.snapshot), c.hash)
        for p, c in live.tree.checkpoints_on(branch).items()
        if 0 < p <= position
    ]
    try:
        return live_from_rows(
            session.scenario_text,
            session.engine,
            Runs.of(live.tree.path(branch).runs(0, position)),
            kept,
            path=session.name,
        )
    except (ReplayError, EngineError, ScenarioError) as exc:
        raise InputError(f"the recording does not replay: {exc}", "engine") from None


def fork_at(
    session: DebugSession, position: int, branch: int = 0
) -> tuple[DebugSession, ShareLink, ShareLink]:
    """A new session holding the decisions on the path to node (branch, position)."""
    kept: list = []
    live = _replayed(session, position, kept, branch)
    where = f"{session.id}@{position}" if branch == 0 else f"{session.id}@b{branch}-{position}"
    return create(live, f"fork:{where}", parent=session, checkpoints=kept)


def fork_machine(
    session: DebugSession,
    kernel: str | None,
    ha: bool | None,
    hd: bool | None,
    hafdbs: int | None,
) -> tuple[DebugSession, ShareLink, ShareLink]:
    """A copy of the scenario (from position 0) with another kernel or HA/HD/HAFDBS."""
    text = with_machine(session.scenario_text, kernel=kernel, ha=ha, hd=hd, hafdbs=hafdbs)
    what = ",".join(
        f"{k}={v}"
        for k, v in (("kernel", kernel), ("ha", ha), ("hd", hd), ("hafdbs", hafdbs))
        if v is not None
    )
    live = check_scenario(text, f"{session.name} ({what})")
    return create(live, f"fork:{session.id}:{what}", parent=session)


def fork_schedule(session: DebugSession, schedule: list[str], position: int | None = None) -> tuple:
    """A schedule (a counterexample) recorded as decisions: after the scenario's start,
    or after the first `position` decisions of the session (an exploration from that
    moment). The page opens at that position so the user steps through it."""
    if position is None:
        live = check_scenario(session.scenario_text, session.name)
    else:
        live = _replayed(session, position)
    for n, name in enumerate(schedule):
        try:
            live.step(str(name))
        except EngineError as exc:
            raise InputError(
                f"schedule entry {n + 1} ({name!r}): {exc}", "engine", where=f"schedule[{n}]"
            ) from None
    return create(live, f"fork:{session.id}:schedule", parent=session)


def fork_scenario(session: DebugSession, text: str) -> tuple:
    """A new session from an edited copy of the scenario (from position 0), its parent
    this session; InputError naming the line or key at fault (nothing is created)."""
    live = check_scenario(text, "the edited scenario")
    return create(live, f"fork:{session.id}:edited", parent=session)


# --- recordings ---------------------------------------------------------------------------
def export(session: DebugSession) -> dict:
    rec = load_live(session).export()
    rec["name"] = session.name
    rec["kernel"] = session.kernel
    return rec


def import_recording(data: bytes | str, label: str = "recording") -> tuple:
    """Replay a recording file exactly (every hash verified) into a new session."""
    if len(data) > MAX_RECORDING_BYTES:
        raise InputError(f"{label}: larger than {MAX_RECORDING_BYTES >> 20} MiB", "recording")
    try:
        rec = P.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InputError(f"{label}: not a JSON recording ({exc})", "recording") from None
    except RecursionError:
        raise InputError(
            f"{label}: not a recording (JSON nested too deeply)", "recording"
        ) from None
    if isinstance(rec, dict) and isinstance(rec.get("scenario"), str):
        check_scenario_size(rec["scenario"], label)
    try:
        live = LiveSession.from_recording(rec, engine=engine_name())
    except ScenarioError as exc:
        raise InputError(f"{label}: its scenario: {exc}", "recording", exc.where) from None
    except (ReplayError, EngineError) as exc:
        raise InputError(f"{label}: {exc}", "recording") from None
    except (TypeError, KeyError, AttributeError, ValueError, RecursionError) as exc:
        raise InputError(f"{label}: malformed recording ({exc!r})", "recording") from None
    return create(live, f"import:{label}"[:200])
