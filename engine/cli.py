"""`python -m engine explore|run|decode` (SCENARIOS.md, CLI), and the bug-report commands
`bundle|replay|report|freeze|import-ptdump|import-image` (engine/bugcli.py).

Exit status: 0 every expectation holds, 1 one fails, 2 bad input (one line naming the
file and the key, value or line at fault; nothing is run).
"""

from __future__ import annotations

import argparse
import json
import random
import sys

from . import bugcli
from . import isa as I
from .bits import lost_bit_names
from .core import ENGINES, new_machine
from .decode import decode, format_text
from .report import (
    Observer,
    evaluate_expect,
    event_json,
    explore_json,
    final_state_json,
    hexs,
    machine_json,
)
from .scenario import ScenarioError, load_scenario
from .schedules import RunLength, compact_json, fold
from .sizes import parse_int
from .spec import build_spec
from .twin import EngineError, add_run

TRACE_LISTED_MAX = 10_000


class UsageError(Exception):
    """Bad input on the command line: exit 2 with this one line."""


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m engine", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)
    ex = sub.add_parser("explore", help="explore every interleaving of a scenario")
    ex.add_argument("file")
    ex.add_argument("--json", action="store_true")
    ex.add_argument("--engine", choices=ENGINES, default="cython")
    _commits_option(ex)
    ex.add_argument(
        "--max-states",
        type=int,
        default=2_000_000,
        help="stop with an error past this many distinct states (default 2,000,000)",
    )
    run = sub.add_parser("run", help="run one schedule")
    run.add_argument("file")
    run.add_argument(
        "--schedule",
        help="comma-separated actor names, one micro-step each; "
        "actors left unfinished then run round-robin",
    )
    run.add_argument("--json", action="store_true")
    run.add_argument(
        "--random",
        type=int,
        metavar="SEED",
        help="after --schedule, pick each micro-step's actor at random among the enabled "
        "ones with this seed (the printed schedule reproduces the run)",
    )
    run.add_argument(
        "--trace",
        action="store_true",
        help=f"list the trace even when it is longer than {TRACE_LISTED_MAX:,} micro-steps",
    )
    run.add_argument("--engine", choices=ENGINES, default="cython")
    _commits_option(run)
    dec = sub.add_parser("decode", help="decode one stage-2 descriptor")
    dec.add_argument("raw")
    dec.add_argument("--level", type=int, default=3, choices=(0, 1, 2, 3))
    dec.add_argument("--json", action="store_true")
    bugcli.add_parsers(sub)
    return p


def _commits_option(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--commits",
        action="append",
        default=[],
        metavar="+ID,-ID",
        help="apply (+ID) or revert (-ID) modelled kernel commits on top of the scenario's "
        "own `commits` (write --commits=-ID: a leading '-' needs the '=')",
    )


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command in bugcli.COMMANDS:
        return bugcli.main(args)
    try:
        if args.command == "decode":
            return _decode(args)
        changes = tuple(c.strip() for arg in args.commits for c in arg.split(",") if c.strip())
        scenario = load_scenario(args.file, changes)
        spec = build_spec(scenario)
        if args.command == "explore":
            return _explore(args, spec)
        return _run(args, spec)
    except (ScenarioError, UsageError) as exc:
        print(str(exc), file=sys.stderr)
        return 2
    except EngineError as exc:
        print(f"{args.file}: {exc}", file=sys.stderr)
        return 2


def _decode(args) -> int:
    try:
        raw = parse_int(args.raw)
        fields = decode(raw, args.level)
    except ValueError as exc:
        raise UsageError(f"decode: {args.raw!r}: {exc}") from None
    print(json.dumps(fields) if args.json else format_text(fields))
    return 0


def _header(spec) -> dict:
    sc = spec.scenario
    return {"scenario": sc.name, "kernel": sc.kernel, "machine": machine_json(spec)}


def _explore(args, spec) -> int:
    out = explore_json(spec, args.engine, args.max_states, progress=None)
    if args.json:
        print(json.dumps(compact_json(out), indent=1))
    else:
        _print_text(out)
    return 0 if out["expect"]["passed"] else 1


# `run` stops a round-robin schedule that never ends (actors that re-break each other's
# mappings for ever: scenarios/bugs/86658b819cd0 reverted) rather than loop for ever.
RUN_MAX_STEPS = 1_000_000_000


def play_schedule(spec, machine, schedule_text: str | None, seed: int | None) -> list[int]:
    """Step `machine` as `run --schedule S --random SEED` does: S first, then random
    choices, then round-robin until every actor finishes; returns the actors stepped."""
    return [a for a, n in play_runs(spec, machine, schedule_text, seed) for _ in range(n)]


def play_runs(spec, machine, schedule_text: str | None, seed: int | None) -> list[list[int]]:
    """play_schedule's steps, run-length encoded ([actor, steps]); the round-robin part
    runs inside the core (Machine.run_round_robin), not a Python call per micro-step."""
    names = spec.actor_names
    runs: list[list[int]] = []
    if schedule_text:
        for n, name in enumerate(s.strip() for s in schedule_text.split(",")):
            where = f"--schedule entry {n + 1} ({name!r})"
            if name not in names:
                raise UsageError(
                    f"{spec.scenario.path}: {where}: no such actor; actors are " + ", ".join(names)
                )
            actor = names.index(name)
            if machine.done(actor):
                raise UsageError(f"{spec.scenario.path}: {where}: that actor has finished")
            if machine.blocked(actor):
                raise UsageError(
                    f"{spec.scenario.path}: {where}: that actor is blocked on kvm->mmu_lock"
                )
            machine.step(actor)
            add_run(runs, actor)
    rng = random.Random(seed) if seed is not None else None
    while rng is not None and not machine.all_done():
        enabled = machine.enabled()
        if not enabled:
            raise EngineError("deadlock: every unfinished actor is blocked")
        actor = rng.choice(enabled)
        machine.step(actor)
        add_run(runs, actor)
    machine.run_round_robin(RUN_MAX_STEPS, runs)
    if not machine.all_done():
        raise EngineError(
            f"the round-robin schedule did not finish within {RUN_MAX_STEPS:,} micro-steps: "
            "an actor never finishes (a livelock; `explore` cuts such cycles and counts them)"
        )
    return runs


def _run(args, spec) -> int:
    names = spec.actor_names
    machine = new_machine(spec, args.engine, take_image=True)  # (one machine, one run)
    if not args.trace:  # a trace longer than this is not listed: don't keep its events
        machine.record_limit = TRACE_LISTED_MAX + 1
    runs = play_runs(spec, machine, args.schedule, args.random)
    schedule = RunLength(runs).named(names)
    observer = Observer(spec)
    key = observer(machine)
    checks = {I.CHECK_NAMES[c] for c, *_ in machine.violations}
    violations = []
    seen = set()
    for check, seq, actor, op_i, ipa, bits in machine.violations:
        name = I.CHECK_NAMES[check]
        if name in seen:
            continue
        seen.add(name)
        violations.append(
            {
                "check": name,
                "ipa": hexs(ipa),
                "bits": lost_bit_names(bits),
                "actor": names[actor],
                "op": spec.actors[actor].ops[op_i].name,
                "seq": seq,
                "schedule": schedule,
            }
        )
    expect = evaluate_expect(spec.scenario, observer, [key], checks)
    out = _header(spec) | {
        "schedule": schedule,
        "final_states": [final_state_json(observer, key, 1, schedule)],
        "violations": violations,
        "expect": expect,
    }
    if len(schedule) <= TRACE_LISTED_MAX or args.trace:
        out["trace"] = [event_json(spec, e) for e in machine.event_tuples()]
    if args.json:
        print(json.dumps(compact_json(out), indent=1))
    else:
        _print_text(out)
    return 0 if expect["passed"] else 1


def _print_text(out: dict) -> None:
    m = out["machine"]
    print(
        f"{out['scenario']}  [kernel {out['kernel']}, HAFDBS={m['hafdbs']} HA={int(m['ha'])} "
        f"HD={int(m['hd'])}, VTCR_EL2={m['vtcr_el2']}]"
    )
    scenario_commits = [c for c in m["commits"] if c["origin"] == "scenario"]
    if scenario_commits or m["reverted"]:
        applied = " ".join(f"+{c['id']}" for c in scenario_commits)
        undone = " ".join(f"-{c}" for c in m["reverted"])
        print(f"  commits on top of {out['kernel']}: {' '.join(filter(None, (applied, undone)))}")
    if "interleavings" in out:
        print(f"{out['interleavings']:,} interleavings, {out['states']:,} states")
    for trace_event in out.get("trace", []):
        print(_event_line(trace_event))
    for n, f in enumerate(out["final_states"]):
        print(f"final state {n + 1} ({f['count']:,} schedules), e.g. {fold(f['example_schedule'])}")
        for ipa, leaf in (f.get("leaves") or {}).items():
            print(
                f"  {ipa}: valid={leaf['valid']} af={leaf['af']} s2ap={leaf['s2ap']} "
                f"dbm={leaf['dbm']} pa={leaf['pa']} raw={leaf['raw']}"
            )
        for name, values in (f.get("actors") or {}).items():
            print(f"  {name}: " + " ".join(f"{k}={v}" for k, v in values.items()))
        if not f.get("leaves"):
            for row in f["leaf_summary"]:
                print(
                    f"  {row['count']:,} leaves valid={row['valid']} af={row['af']} "
                    f"s2ap={row['s2ap']} dbm={row['dbm']}"
                )
    for v in out["violations"]:
        share = f" in {v['interleavings']:,} interleavings" if "interleavings" in v else ""
        print(
            f"VIOLATION {v['check']}{share} at {v['ipa']} ({'|'.join(v['bits'])}) by "
            f"{v['actor']} {v['op']}; schedule {fold(v['schedule'])}"
        )
    for r in out["expect"]["results"]:
        found = "" if r["held"] or "found" not in r else f" (found {r['found']})"
        print(f"  expect {r['kind']} {r['expr']}: {'held' if r['held'] else 'FAILED'}{found}")
    print("expectations hold" if out["expect"]["passed"] else "EXPECTATIONS FAILED")


def _event_line(e: dict) -> str:
    where = (
        f"L{e['level']} {e['addr']} ipa={e['ipa']} {e['old']} -> {e['new']}" if "addr" in e else ""
    )
    extra = e.get("fault") or e.get("lock") or e.get("tlbi") or ""
    if "addr" not in e and "ipa" in e:  # mark-dirty, log, harvest, tlbi by IPA
        extra = " ".join(
            x
            for x in (
                extra,
                e.get("logging", ""),
                f"ipa={e['ipa']}",
                f"end={e['end']}" if "end" in e else "",
                f"mask={e['mask']}" if "mask" in e else "",
            )
            if x
        )
    flags = " [" + ",".join(e["flags"]) + "]" if "flags" in e else ""
    return f"{e['seq']:>6} {e['actor']:<8} {e['kind']:<14} {where} {extra}{flags}   // {e['at']}"
