"""The bug-report commands of `python -m engine` (issue 7; docs/bundle.md):

    bundle FILE [--schedule S] [--random SEED] [--counterexample N] -o OUT
    replay BUNDLE [--to STEP] [--json]
    report FILE|BUNDLE [--schedule S] [--random SEED] [--format text|markdown]
    freeze BUNDLE [--to STEP] -o scenario.toml
    import-ptdump DUMP [--ipa-bits N] [--levels N] -o scenario.toml
    import-image IMAGE --vttbr X --vtcr Y [--base PA] [--kernel K] -o scenario.toml

Exit status as for `run`: 0 verified / expectations hold, 1 a hash differs or an
expectation fails, 2 bad input (one line naming the file and what is wrong).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from . import bundle as BD
from . import isa as I
from .bits import lost_bit_names
from .core import ENGINES, new_machine
from .freeze import FreezeError, freeze
from .image import ImageError, scenario_from_image
from .mailreport import Report, play
from .ptdump import DumpError, read_ipa_bits, scenario_from_dump
from .report import Observer, evaluate_expect, explore_json, final_state_json, hexs, machine_json
from .scenario import ScenarioError, load_scenario, parse_scenario
from .schedules import compact_json
from .sizes import is_digits, parse_int
from .spec import build_spec
from .twin import EngineError


class CommandError(Exception):
    """Bad input: exit 2 with this one line."""


def add_parsers(sub) -> None:
    b = sub.add_parser("bundle", help="run a scenario and write the bundle of the run")
    b.add_argument("file")
    _schedule_args(b)
    b.add_argument(
        "--counterexample",
        type=int,
        metavar="N",
        help="explore first and bundle the schedule of its N-th violation (1-based, in "
        "the order `explore --json` lists them)",
    )
    b.add_argument("-o", "--output", required=True, metavar="OUT")
    r = sub.add_parser("replay", help="verify a bundle and print the state at its moment")
    r.add_argument("bundle")
    r.add_argument("--to", type=int, metavar="STEP", help="stop after STEP decisions")
    r.add_argument("--json", action="store_true")
    r.add_argument("--engine", choices=ENGINES, default="cython")
    rep = sub.add_parser("report", help="an interleaving as a table for a mail")
    rep.add_argument("file", help="a scenario (run as `run` does) or a bundle")
    _schedule_args(rep)
    rep.add_argument("--format", choices=("text", "markdown"), default="text")
    f = sub.add_parser("freeze", help="a bundle's moment as a scenario that starts there")
    f.add_argument("bundle")
    f.add_argument("--to", type=int, metavar="STEP", help="freeze after STEP decisions")
    f.add_argument("-o", "--output", required=True, metavar="OUT")
    d = sub.add_parser("import-ptdump", help="a KVM stage2_page_tables dump as a scenario")
    d.add_argument(
        "dump", help="the dump, or its debugfs directory (with ipa_range, stage2_levels)"
    )
    d.add_argument(
        "--ipa-bits",
        type=int,
        metavar="N",
        help="the VM's ipa_range (default: "
        "the directory's ipa_range, else the smallest of 40 and up that holds the dump)",
    )
    d.add_argument("--levels", type=int, metavar="N", help="the VM's stage2_levels, checked")
    d.add_argument("-o", "--output", required=True, metavar="OUT")
    im = sub.add_parser("import-image", help="raw stage-2 table pages as a scenario")
    im.add_argument("image", help="table pages, 4K each, little-endian descriptors")
    im.add_argument("--vttbr", required=True, help="VTTBR_EL2 (BADDR: the start-level table)")
    im.add_argument("--vtcr", required=True, help="VTCR_EL2 (T0SZ, SL0, TG0, HA, HD)")
    im.add_argument("--base", help="physical address of the image's first byte (default BADDR)")
    im.add_argument("--kernel", choices=("v4.6", "seed", "v6.6"), default="v6.6")
    im.add_argument("-o", "--output", required=True, metavar="OUT")


def _schedule_args(p) -> None:
    p.add_argument(
        "--schedule",
        help="comma-separated actor names, one micro-step each (NAME*N: N steps); actors "
        "left unfinished then run round-robin",
    )
    p.add_argument("--random", type=int, metavar="SEED", help="as `run --random`")
    p.add_argument("--engine", choices=ENGINES, default="cython")


COMMANDS = ("bundle", "replay", "report", "freeze", "import-ptdump", "import-image")


def main(args) -> int:
    commands = {
        "bundle": _bundle,
        "replay": _replay,
        "report": _report,
        "freeze": _freeze,
        "import-ptdump": _import_ptdump,
        "import-image": _import_image,
    }
    from .cli import UsageError  # cli imports this module: import at call time

    try:
        return commands[args.command](args)
    except (CommandError, UsageError, ScenarioError, DumpError, ImageError, FreezeError) as exc:
        print(str(exc), file=sys.stderr)
        return 2
    except BD.BundleMismatch as exc:
        print(f"{_source(args)}: {exc}", file=sys.stderr)
        return 1
    except (BD.BundleError, EngineError) as exc:
        print(f"{_source(args)}: {exc}", file=sys.stderr)
        return 2


def _source(args) -> str:
    return getattr(args, "bundle", None) or getattr(args, "file", "")


def _read(path: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise CommandError(f"{path}: {exc.strerror}") from None


def _write(path: str, data: bytes) -> None:
    try:
        Path(path).write_bytes(data)
    except OSError as exc:
        raise CommandError(f"{path}: cannot write: {exc.strerror}") from None


def is_bundle(data: bytes) -> bool:
    return data.lstrip()[:1] == b"{"


# --- schedules (as `run` takes them) ---------------------------------------------------------
def schedule_decisions(spec, engine: str, schedule: str | None, seed: int | None) -> list[list]:
    """The decisions `run FILE --schedule S --random SEED` takes (same rules, same errors)."""
    from .cli import play_schedule

    machine = new_machine(spec, engine)
    machine.recording = False
    return [["step", a] for a in play_schedule(spec, machine, _expand(schedule), seed)]


def _expand(schedule: str | None) -> str | None:
    """NAME*N tokens (as the folded and run-length-encoded schedules write runs) -> names."""
    if not schedule:
        return schedule
    out = []
    for token in schedule.split(","):
        name, star, count = token.strip().rpartition("*")
        if star and is_digits(count):
            out += [name] * int(count)
        else:
            out.append(token)
    return ",".join(out)


# --- bundle -------------------------------------------------------------------------------------
def _bundle(args) -> int:
    scenario = load_scenario(args.file)
    spec = build_spec(scenario)
    if args.counterexample is not None:
        if args.schedule or args.random is not None:
            raise CommandError(f"{args.file}: --counterexample replaces --schedule/--random")
        out = explore_json(spec, args.engine, 2_000_000, progress=None)
        found = out["violations"]
        if not 1 <= args.counterexample <= len(found):
            raise CommandError(
                f"{args.file}: --counterexample {args.counterexample}: explore found "
                f"{len(found)} violation(s)"
            )
        names = spec.actor_names
        decisions = [["step", names.index(n)] for n in found[args.counterexample - 1]["schedule"]]
    else:
        decisions = schedule_decisions(spec, args.engine, args.schedule, args.random)
    text = Path(args.file).read_text()
    b = BD.from_decisions(text, decisions, engine=args.engine, spec=spec)
    data = BD.dumps(b)
    _write(args.output, data)
    print(
        f"{args.output}: {len(data):,} bytes, {b.position:,} decisions, "
        f"{len(b.hashes)} state hashes ({scenario.name}, kernel {scenario.kernel})"
    )
    return 0


# --- replay -------------------------------------------------------------------------------------
def _replay(args) -> int:
    b = BD.loads(_read(args.bundle))
    session = BD.replay(b, engine=args.engine, to=args.to)
    spec = session.spec
    decisions = [list(d) for d in session.decisions]
    schedule = [spec.actor_names[d[1]] for d in decisions if d[0] == "step"]
    out = state_json(spec, session.machine, schedule)
    checked = [p for p in b.hashes if p <= session.position]
    out = {
        "bundle": args.bundle,
        "format": BD.FORMAT,
        "ptviz": b.ptviz,
        "position": session.position,
        "of": b.position,
        "verified": True,
        "hashes_checked": len(checked),
        "injected": [
            {"step": n + 1, "actor": spec.actor_names[d[1]], "op": d[2]}
            for n, d in enumerate(decisions)
            if d[0] == "inject"
        ],
    } | out
    if args.json:
        print(json.dumps(compact_json(out), indent=1))
    else:
        print(
            f"{args.bundle}: verified {len(checked)} state hashes up to step "
            f"{session.position:,} of {b.position:,} (written by ptviz {b.ptviz})"
        )
        from .cli import _print_text

        _print_text(out)
    return 0 if out["expect"]["passed"] else 1


def state_json(spec, machine, schedule: list[str]) -> dict:
    """What `run --json` prints about the state a machine is in (SCENARIOS.md)."""
    names = spec.actor_names
    observer = Observer(spec)
    key = observer(machine)
    checks = {I.CHECK_NAMES[c] for c, *_ in machine.violations}
    violations, seen = [], set()
    for check, seq, actor, op_i, ipa, bits in machine.violations:
        name = I.CHECK_NAMES[check]
        if name in seen:
            continue
        seen.add(name)
        ops = machine.ops_of(actor)
        violations.append(
            {
                "check": name,
                "ipa": hexs(ipa),
                "bits": lost_bit_names(bits),
                "actor": names[actor],
                "op": ops[op_i].name if op_i < len(ops) else None,
                "seq": seq,
                "schedule": schedule,
            }
        )
    sc = spec.scenario
    return {
        "scenario": sc.name,
        "kernel": sc.kernel,
        "machine": machine_json(spec),
        "schedule": schedule,
        "final_states": [final_state_json(observer, key, 1, schedule)],
        "violations": violations,
        "expect": evaluate_expect(sc, observer, [key], checks),
    }


# --- report -------------------------------------------------------------------------------------
def _report(args) -> int:
    data = _read(args.file)
    if is_bundle(data):
        if args.schedule or args.random is not None:
            raise CommandError(f"{args.file}: a bundle carries its path: no --schedule/--random")
        b = BD.loads(data)
        BD.replay(b, engine=args.engine)  # verified before it is reported
        text, decisions = b.scenario, list(b.decisions())
        spec = build_spec(parse_scenario(text, args.file))
    else:
        spec = build_spec(load_scenario(args.file))
        decisions = schedule_decisions(spec, args.engine, args.schedule, args.random)
    machine = new_machine(spec, args.engine)
    rows = play(spec, machine, decisions)
    report = Report(spec, machine, rows)
    print(report.markdown() if args.format == "markdown" else report.text(), end="")
    return 0


# --- freeze -------------------------------------------------------------------------------------
def _freeze(args) -> int:
    b = BD.loads(_read(args.bundle))
    session = BD.replay(b, to=args.to)
    text, notes = freeze(session)
    _write(args.output, text.encode())
    print(f"{args.output}: the moment after step {session.position:,} as a scenario")
    for note in notes:
        print(f"  not carried over: {note}")
    return 0


# --- imports --------------------------------------------------------------------------------------
def _import_ptdump(args) -> int:
    path = Path(args.dump)
    ipa_bits, levels = args.ipa_bits, args.levels
    if path.is_dir():
        folder, path = path, path / "stage2_page_tables"
        if ipa_bits is None and (folder / "ipa_range").exists():
            ipa_bits = read_ipa_bits(_text(folder / "ipa_range"), str(folder / "ipa_range"))
        if levels is None and (folder / "stage2_levels").exists():
            raw = _text(folder / "stage2_levels").strip()
            if not is_digits(raw):
                raise CommandError(
                    f"{folder / 'stage2_levels'}:1: expected a number, got {raw[:20]!r}"
                )
            levels = int(raw)
    text = scenario_from_dump(_text(path), str(path), ipa_bits, levels)
    _write(args.output, text.encode())
    scenario = load_scenario(args.output)
    leaves = sum(m.count for m in scenario.maps)
    print(f"{args.output}: {leaves:,} leaves in {len(scenario.maps)} map(s) from {path}")
    return 0


def _import_image(args) -> int:
    try:
        vttbr, vtcr = parse_int(args.vttbr), parse_int(args.vtcr)
        base = None if args.base is None else parse_int(args.base)
    except ValueError as exc:
        raise CommandError(f"{args.image}: {exc}") from None
    data = _read(args.image)
    text = scenario_from_image(data, vttbr, vtcr, base, args.kernel, args.image)
    _write(args.output, text.encode())
    scenario = load_scenario(args.output)
    leaves = sum(m.count for m in scenario.maps)
    print(f"{args.output}: {leaves:,} leaves in {len(scenario.maps)} map(s) from {args.image}")
    return 0


def _text(path: Path) -> str:
    data = _read(str(path))
    try:
        return data.decode()
    except UnicodeDecodeError as exc:
        raise CommandError(f"{path}: byte {exc.start} is not UTF-8 (not a text dump)") from None
