"""Bug-report bundles: one file that reproduces one moment of a session (docs/bundle.md).

A bundle holds the scenario source and the path of decisions from the start to the
moment (runs of steps by one actor run-length encoded), with the state hashes
(engine/snapshot.py's `state_hash`, as recordings carry) that verify a replay of it. The
machine after the path is a pure function of (scenario, path) (DESIGN.md, "One
currency"), so nothing else is needed; the ptviz version, kernel generation and machine
are stored for the reader and checked against the scenario.

API: `from_session` (a LiveSession at a position -> Bundle), `from_schedule`, `dumps`,
`loads` (bytes -> Bundle, or BundleError naming the field at fault), `replay` (Bundle ->
LiveSession at the moment, verifying every hash; BundleMismatch names the first step
whose hash differs and which parts of the state differ).
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from importlib import metadata

from .core import new_machine
from .history import HistoryError, Path, Runs
from .report import machine_json
from .scenario import ScenarioError, parse_op, parse_scenario
from .session import LiveSession
from .sizes import is_digits
from .snapshot import pack, state_hash
from .spec import actor_names_of, build_spec, op_spec
from .twin import EngineError

FORMAT = "ptviz-bundle/1"
# Hash points: at most this many, and when the table memory is big, only where a
# LiveSession checkpoints anyway (hashing a 4 GiB guest's 8 MiB of tables costs ~30 ms).
MAX_HASH_POINTS = 64
HASH_BYTES_BUDGET = 32 << 20
PROGRESS_EVERY = 1 << 16
KEYS = (
    "format",
    "ptviz",
    "name",
    "kernel",
    "machine",
    "actors",
    "moment",
    "position",
    "scenario",
    "path",
    "hashes",
    "digests",
)
DIGESTED = ("scenario", "path", "hashes")


def ptviz_version() -> str:
    try:
        return metadata.version("ptviz")
    except metadata.PackageNotFoundError:  # running from a source tree without install
        return "0+unknown"


class BundleError(ValueError):
    """Bad input: the bundle cannot be read or its path cannot be replayed (exit 2)."""


class BundleMismatch(BundleError):
    """The path replays but a state hash differs (exit 1)."""

    def __init__(self, step: int, last_match: int | None, what: list[str]):
        self.step, self.last_match, self.what = step, last_match, what
        since = "" if last_match is None else f"; step {last_match:,} matched"
        super().__init__(
            f"step {step:,}: the state hash differs (differs: "
            f"{', '.join(what) or 'the state as a whole'}{since})"
        )


# --- the path: decisions, run-length encoded -----------------------------------------------
def encode_path(decisions: Iterable[list] | Runs | Path) -> list:
    """Decisions -> runs: a string of step tokens `A` or `A*N` (actor index A, N steps),
    one list ["inject", A, "op text"] per injected operation. Runs (engine/history.py)
    are encoded run by run, never expanded."""
    out: list = []
    tokens: list[str] = []
    actor, count = -1, 0

    def flush_run():
        if count:
            tokens.append(f"{actor}*{count}" if count > 1 else str(actor))

    runs = decisions.runs() if isinstance(decisions, (Runs, Path)) else ((d, 1) for d in decisions)
    for d, n in runs:
        if d[0] == "step":
            if d[1] == actor:
                count += n
                continue
            flush_run()
            actor, count = d[1], n
        else:
            flush_run()
            actor, count = -1, 0
            if tokens:
                out.append(" ".join(tokens))
                tokens = []
            out.append(["inject", d[1], d[2]])
    flush_run()
    if tokens:
        out.append(" ".join(tokens))
    return out


def runs(path: list) -> Iterator[tuple]:
    """("step", actor, n) and ("inject", actor, text), in order."""
    for item in path:
        if isinstance(item, str):
            for token in item.split(" "):
                actor, _, n = token.partition("*")
                yield ("step", int(actor), int(n) if n else 1)
        else:
            yield ("inject", item[1], item[2])


def decisions(path: list) -> Iterator[list]:
    for run in runs(path):
        if run[0] == "step":
            step = ["step", run[1]]
            for _ in range(run[2]):
                yield step
        else:
            yield ["inject", run[1], run[2]]


def path_length(path: list) -> int:
    return sum(r[2] if r[0] == "step" else 1 for r in runs(path))


# --- the state hashes -----------------------------------------------------------------------
def part_names(actor_names: list[str]) -> list[str]:
    out = ["tables", "kvm->mmu_lock", "pending TLB invalidations", "violations", "event count"]
    for name in actor_names:
        out += [f"{name} operations", f"{name} pc/registers/monitor", f"{name} TLB"]
    return out


def part_digests(state: dict) -> str:
    """Short digests of the parts of a state, to say what differs when its hash does."""

    def d(value) -> str:
        data = value if isinstance(value, bytes) else repr(value).encode()
        return hashlib.blake2b(data, digest_size=4).hexdigest()

    out = [
        d(state["mem"]),
        d([state["lock_writer"], state["lock_readers"]]),
        d(state["pending"]),
        d([state["viol_mask"], state["violations"]]),
        d(state["seq"]),
    ]
    for a in state["actors"]:
        out += [d([a["ops"], a["op_i"]]), d([a["pc"], a["regs"], a["mon"]]), d(a["tlb"])]
    return " ".join(out)


def _hash_point(machine) -> tuple[str, str]:
    state = machine.get_state()
    return state_hash(pack(state)), part_digests(state)


def hash_stride(total: int, table_bytes: int, interval: int) -> int:
    stride = max(1, math.ceil(total / MAX_HASH_POINTS))
    if table_bytes * math.ceil(total / stride) > HASH_BYTES_BUDGET:
        stride = max(stride, interval)
    return stride


def hash_positions(total: int, stride: int) -> list[int]:
    """Step 0 (the scenario's start), every `stride` steps, and the moment itself."""
    points = list(range(0, total + 1, stride))
    if points[-1] != total:
        points.append(total)
    return points


# --- the bundle ---------------------------------------------------------------------------
@dataclass
class Bundle:
    scenario: str
    path: list
    position: int
    hash_every: int
    hashes: dict[int, tuple[str, str]]  # position -> (state hash, part digests)
    name: str = ""
    kernel: str = ""
    machine: dict = field(default_factory=dict)
    actors: list[str] = field(default_factory=list)
    moment: str | None = None
    ptviz: str = field(default_factory=ptviz_version)

    def decisions(self) -> Iterator[list]:
        return decisions(self.path)


def from_decisions(
    scenario_text: str,
    path: Iterable[list],
    *,
    moment: str | None = None,
    engine: str = "cython",
    spec=None,
    interval: int | None = None,
) -> Bundle:
    """The bundle of a path of decisions: replayed once on a fresh machine to take the
    hashes (so a bundle never carries a hash it has not just reproduced)."""
    try:
        scenario = parse_scenario(scenario_text, "<bundle>")
    except ScenarioError as exc:
        raise BundleError(f"scenario: {exc}") from None
    spec = spec if spec is not None else build_spec(scenario)
    encoded = encode_path(path)
    total = path_length(encoded)
    if interval is None:
        interval = LiveSession.interval_for(spec)
    stride = hash_stride(total, len(spec.mem) * 8, interval)
    wanted = hash_positions(total, stride)
    machine = new_machine(spec, engine)
    machine.recording = False
    hashes = {}
    kinds = [a.kind for a in scenario.actors]
    position = 0
    points = iter(wanted)
    nxt = next(points, None)
    if nxt == 0:
        hashes[0] = _hash_point(machine)
        nxt = next(points, None)
    for run in runs(encoded):
        if run[0] == "inject":
            op = parse_op(run[2], kinds[run[1]], scenario.machine.ipa_bits)
            machine.append_op(run[1], op_spec(spec.program, op))
            position += 1
        else:
            left = run[2]
            while left:
                chunk = left if nxt is None else min(left, nxt - position)
                taken = 0
                try:
                    taken = machine.step_n(run[1], chunk)
                    if taken < chunk:  # finished or blocked: machine.step says which
                        machine.step(run[1])
                except EngineError as exc:
                    raise BundleError(f"step {position + taken + 1:,}: {exc}") from None
                position += chunk
                left -= chunk
                if position == nxt:
                    hashes[position] = _hash_point(machine)
                    nxt = next(points, None)
        if position == nxt:
            hashes[position] = _hash_point(machine)
            nxt = next(points, None)
    return Bundle(
        scenario=scenario_text,
        path=encoded,
        position=total,
        hash_every=stride,
        hashes=hashes,
        name=scenario.name,
        kernel=scenario.kernel,
        machine=machine_json(spec),
        actors=list(spec.actor_names),
        moment=moment,
    )


def from_session(
    session: LiveSession, position: int | None = None, moment: str | None = None
) -> Bundle:
    """The bundle of the path from a LiveSession's start to a node: `moment` (an id of
    engine/history.py, on any branch), else `position` on the session's current path,
    else where the session is. The session is not moved."""
    decisions = session.decisions
    if moment is not None:
        try:
            branch, position = session.tree.resolve(moment)
        except HistoryError as exc:
            raise BundleError(f"moment: {exc}") from None
        decisions = session.tree.path(branch)
        moment = session.tree.moment(branch, position)  # its canonical name
    position = session.position if position is None else position
    if not 0 <= position <= len(decisions):
        raise BundleError(f"position {position} is outside 0..{len(decisions)}")
    if moment is None:
        moment = session.tree.moment(session.branch, position)
    path = Runs.of(decisions.runs(0, position))
    return from_decisions(
        session.scenario_text,
        path,
        moment=moment,
        engine=session.engine,
        spec=session.spec,
        interval=session.interval,
    )


def from_schedule(scenario_text: str, schedule: list[int], engine: str = "cython") -> Bundle:
    return from_decisions(scenario_text, (["step", a] for a in schedule), engine=engine)


# --- bytes ----------------------------------------------------------------------------------
def _digest(value) -> str:
    text = json.dumps(value, separators=(",", ":"), sort_keys=True, ensure_ascii=False)
    return hashlib.blake2b(text.encode(), digest_size=8).hexdigest()


def to_json(b: Bundle) -> dict:
    doc = {
        "format": FORMAT,
        "ptviz": b.ptviz,
        "name": b.name,
        "kernel": b.kernel,
        "machine": b.machine,
        "actors": b.actors,
        "moment": b.moment,
        "position": b.position,
        "scenario": b.scenario,
        "path": b.path,
        "hashes": {
            "every": b.hash_every,
            "parts": part_names(b.actors),
            "at": [[pos, h, parts] for pos, (h, parts) in sorted(b.hashes.items())],
        },
    }
    doc["digests"] = {key: _digest(doc[key]) for key in DIGESTED}
    return doc


def dumps(b: Bundle) -> bytes:
    """The file: JSON, one field per line (scenario text and path stay readable)."""
    doc = to_json(b)
    lines = ",\n".join(
        f"{json.dumps(k)}: {json.dumps(doc[k], separators=(',', ':'), ensure_ascii=False)}"
        for k in KEYS
    )
    return ("{\n" + lines + "\n}\n").encode()


def loads(data: bytes, max_scenario: int | None = None) -> Bundle:
    """Read and check a bundle's structure, digests and metadata (not its hashes: replay
    does that). Raises BundleError with one line naming the field at fault; a scenario of
    more than `max_scenario` bytes is refused before it is parsed."""
    if isinstance(data, str):
        data = data.encode()
    try:
        text = data.decode()
    except UnicodeDecodeError as exc:
        raise BundleError(f"not a ptviz bundle: byte {exc.start} is not UTF-8") from None
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        looks_like_one = f'"{FORMAT}"' in text[:64]
        if exc.pos >= len(text.rstrip()) or (looks_like_one and not text.rstrip().endswith("}")):
            raise BundleError(
                f"truncated: the file ends at byte {len(data)} inside the JSON (line {exc.lineno})"
            ) from None
        raise BundleError(
            f"not a ptviz bundle: invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}"
        ) from None
    except RecursionError:
        raise BundleError("not a ptviz bundle: the JSON is nested too deeply") from None
    if re.search(r"\\u[dD][89a-fA-F]", text):  # JSON may escape a lone surrogate; UTF-8 cannot
        try:
            json.dumps(doc, ensure_ascii=False).encode()
        except UnicodeEncodeError:
            raise BundleError("not a ptviz bundle: a string holds a lone surrogate") from None
    if not isinstance(doc, dict):
        raise BundleError("not a ptviz bundle: the JSON is not an object")
    fmt = doc.get("format")
    if fmt != FORMAT:
        hint = " (a recording: import it in the gallery)" if fmt == "ptviz-recording/1" else ""
        raise BundleError(f"format: {fmt!r} is not {FORMAT!r}{hint}")
    for key in KEYS:
        if key not in doc:
            raise BundleError(f"{key}: missing")
    for key in doc:
        if key not in KEYS:
            raise BundleError(f"{key}: unknown field (fields: {', '.join(KEYS)})")
    digests = _expect(doc, "digests", dict)
    for key in DIGESTED:
        if digests.get(key) != _digest(doc[key]):
            raise BundleError(f"{key}: altered after the bundle was written (digest differs)")
    scenario_text = _expect(doc, "scenario", str)
    if max_scenario is not None and len(scenario_text.encode()) > max_scenario:
        raise BundleError(
            f"scenario: {len(scenario_text.encode()):,} bytes, larger than the limit of "
            f"{max_scenario:,} bytes"
        )
    try:
        scenario = parse_scenario(scenario_text, "<bundle>")
    except ScenarioError as exc:
        raise BundleError(f"scenario: {exc}") from None
    actors = actor_names_of(scenario)
    for key, want in (("name", scenario.name), ("kernel", scenario.kernel), ("actors", actors)):
        if doc[key] != want:
            raise BundleError(f"{key}: {doc[key]!r} does not match the scenario's {want!r}")
    if not isinstance(doc["machine"], dict):
        raise BundleError("machine: must be an object")
    path = _check_path(_expect(doc, "path", list), actors)
    position = _expect(doc, "position", int)
    if position != path_length(path):
        raise BundleError(f"position: {position} but the path has {path_length(path)} decisions")
    hashes, every = _check_hashes(_expect(doc, "hashes", dict), position, actors)
    moment = doc["moment"]
    if moment is not None and not isinstance(moment, str):
        raise BundleError("moment: must be a string or null")
    return Bundle(
        scenario=scenario_text,
        path=path,
        position=position,
        hash_every=every,
        hashes=hashes,
        name=scenario.name,
        kernel=scenario.kernel,
        machine=doc["machine"],
        actors=actors,
        moment=moment,
        ptviz=str(doc["ptviz"]),
    )


def _expect(doc: dict, key: str, kind: type):
    value = doc[key]
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise BundleError(f"{key}: must be {kind.__name__}, got {type(value).__name__}")
    return value


def _check_path(path: list, actors: list[str]) -> list:
    n = len(actors)
    for i, item in enumerate(path):
        where = f"path[{i}]"
        if isinstance(item, str):
            for k, token in enumerate(item.split(" ")):
                actor, star, count = token.partition("*")
                ok = is_digits(actor) and int(actor) < n and (not star or is_digits(count))
                if not ok or (star and int(count) < 2) or actor != str(int(actor)):
                    raise BundleError(
                        f"{where}: token {k + 1} {token!r} is not ACTOR or ACTOR*COUNT "
                        f"(actor 0..{n - 1}, count >= 2)"
                    )
        elif isinstance(item, list):
            if (
                len(item) != 3
                or item[0] != "inject"
                or not isinstance(item[1], int)
                or isinstance(item[1], bool)
                or not 0 <= item[1] < n
                or not isinstance(item[2], str)
            ):
                raise BundleError(f'{where}: not ["inject", ACTOR, "op text"] (actor 0..{n - 1})')
        else:
            raise BundleError(f"{where}: must be a string of steps or an inject list")
    return path


def _check_hashes(h: dict, position: int, actors: list[str]):
    every = h.get("every")
    if not isinstance(every, int) or isinstance(every, bool) or every < 1:
        raise BundleError("hashes.every: must be a positive integer")
    if h.get("parts") != part_names(actors):
        raise BundleError("hashes.parts: does not name this scenario's state parts")
    at = h.get("at")
    if not isinstance(at, list):
        raise BundleError("hashes.at: must be a list")
    if position // every > MAX_HASH_POINTS:  # a crafted file asking for more checks
        raise BundleError(
            f"hashes.every: {every} asks for more than {MAX_HASH_POINTS} checks of "
            f"{position:,} decisions (at least {math.ceil(position / MAX_HASH_POINTS):,})"
        )
    want = hash_positions(position, every)
    out = {}
    for i, entry in enumerate(at):
        ok = (
            isinstance(entry, list)
            and len(entry) == 3
            and isinstance(entry[0], int)
            and isinstance(entry[1], str)
            and len(entry[1]) == 32
            and isinstance(entry[2], str)
            and len(entry[2].split(" ")) == len(h["parts"])
        )
        if not ok:
            raise BundleError(f"hashes.at[{i}]: not [POSITION, HASH, PART DIGESTS]")
        out[entry[0]] = (entry[1], entry[2])
    if sorted(out) != want:
        raise BundleError(
            f"hashes.at: positions {sorted(out)[:4]}... are not every {every} up to {position}"
        )
    return out, every


# --- replay ---------------------------------------------------------------------------------
def replay(
    b: Bundle,
    *,
    engine: str = "cython",
    to: int | None = None,
    progress: Callable[[int, int], None] | None = None,
    snapshot_every: int = 256,
) -> LiveSession:
    """A LiveSession at the bundle's moment (or at step `to`), every hash on the way
    verified. BundleError: a decision cannot be taken (names the step); BundleMismatch: a
    hash differs (names the first one)."""
    end = b.position if to is None else to
    if not 0 <= end <= b.position:
        raise BundleError(f"--to {end} is outside 0..{b.position}")
    try:
        session = LiveSession(b.scenario, engine=engine, snapshot_every=snapshot_every)
    except (ScenarioError, EngineError) as exc:
        raise BundleError(f"scenario: {exc}") from None
    recording = session.machine.recording
    session.machine.recording = False  # a replay's events are never shown
    checked = None
    points = iter(p for p in sorted(b.hashes) if p <= end)
    nxt = next(points, None)

    def check():
        nonlocal nxt, checked
        want, want_parts = b.hashes[nxt]
        got = session.checkpoints.get(nxt)
        got_hash = got.hash if got is not None else session.state_hash()
        if got_hash != want:
            parts = part_digests(session.machine.get_state()).split(" ")
            names = part_names(b.actors)
            differ = [
                n for n, x, y in zip(names, parts, want_parts.split(" "), strict=True) if x != y
            ]
            raise BundleMismatch(nxt, checked, differ)
        checked = nxt
        nxt = next(points, None)

    def report():
        if progress is not None:
            progress(session.position, end)

    last_report = 0
    if nxt == 0:
        check()
    for run in runs(b.path):
        if session.position >= end:
            break
        try:
            if run[0] == "inject":
                session.apply(list(run))
            else:
                left = min(run[2], end - session.position)
                while left:
                    stop = nxt if nxt is not None else end
                    chunk = min(left, stop - session.position, PROGRESS_EVERY)
                    session.apply_steps(run[1], chunk)
                    left -= chunk
                    if session.position == nxt:
                        check()
                    if session.position - last_report >= PROGRESS_EVERY:
                        last_report = session.position
                        report()
        except EngineError as exc:
            raise BundleError(f"step {session.position + 1:,}: {exc}") from None
        if session.position == nxt:
            check()
    session.machine.recording = recording
    report()
    return session


def load_and_replay(data: bytes, **kwargs) -> LiveSession:
    return replay(loads(data), **kwargs)
