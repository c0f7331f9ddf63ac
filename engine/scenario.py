"""Scenario files (SCENARIOS.md): parse, validate, and hand the engine plain data.

Every problem with a file is a ScenarioError whose text is one line naming the file and
the key, value or line at fault (`seed.toml: map[1].ipa: 0x80000800 is not aligned to
size 4K`). Nothing else escapes `parse_scenario` / `load_scenario`.
"""

from __future__ import annotations

import json
import re
import tomllib
from bisect import bisect_right
from collections.abc import Iterator
from dataclasses import dataclass, replace
from functools import cached_property
from itertools import pairwise
from os import PathLike
from typing import Any, NoReturn

from . import bits
from .commits import GENERATIONS, PGTABLE, SEED, CommitError, lookup, modelled_list, resolve
from .isa import FAULTS_MAX, TLB_ENTRIES
from .sizes import MAP_SIZES, hexs, is_digits, parse_int, parse_size, size_name

KERNELS = tuple(GENERATIONS)
VCPU_OPS = ("read", "write")
HOST_OPS = (
    "set_readonly",
    "wp",
    "age",
    "test_age",
    "unmap",
    "flush_tlb",
    "log_start",
    "get_dirty_log",
    "log_stop",
)
LOGGING_OPS = ("log_start", "get_dirty_log", "log_stop")
CHECKS = ("no_lost_update", "break_before_make", "no_lost_dirty")
GRANULES = ("4K",)
S2AP_NAMES = ("none", "ro", "wo", "rw")
PREDICATE_FIELDS = ("valid", "af", "dbm", "s2ap", "pa", "raw", "size", "dirty")
LEAF_SIZES = ("4K", "2M", "1G")
# "NAME: field=value" predicates on an actor (an extension): a vCPU's stage-2 faults over
# the run (FAULTS_MAX reads "that many or more"), a host actor's last operation's return
# value (1: nonzero, e.g. test_age found the page young).
ACTOR_PREDICATE_FIELDS = {"vcpu": ("faults",), "host": ("ret",)}
IPA_BITS_MIN, IPA_BITS_MAX = 32, 48
MAX_LEAVES = 1 << 22  # total leaves over all [[map]]s the model will build

TOP_KEYS = (
    "name",
    "description",
    "kernel",
    "commits",
    "fix",
    "machine",
    "map",
    "actor",
    "expect",
)
# Arm ARM choices the hardware may make, each a what-if (default off): README, "What
# hardware may do".
WHAT_IF_KEYS = ("af_on_permission_fault", "af_dirty_separate", "tlb_evict", "tlbi_vmalle1")
MACHINE_KEYS = ("hafdbs", "ha", "hd", "ipa_bits", "granule", "tlb", *WHAT_IF_KEYS)
EVICT_ACTOR = "evict"  # the hardware actor machine.tlb_evict adds
MAP_KEYS = ("ipa", "pa", "size", "s2ap", "af", "dbm", "count")
ACTOR_KEYS = ("name", "kind", "do", "tlb")
ACTOR_KINDS = ("vcpu", "host")
EXPECT_KEYS = ("always", "sometimes", "never", "violations", "cycles")

# Arguments of each operation: "ipa" any byte address, "ipa4k" a 4K-aligned address,
# "size?" an optional SIZE.
OP_ARGS: dict[str, tuple[str, ...]] = {
    "read": ("ipa",),
    "write": ("ipa",),
    "set_readonly": ("ipa4k",),
    "wp": ("ipa4k", "size?"),
    "age": ("ipa4k", "size?"),
    "test_age": ("ipa4k",),
    "unmap": ("ipa4k", "size?"),
    "flush_tlb": (),
    "log_start": ("ipa4k", "size?"),
    "get_dirty_log": ("ipa4k", "size?"),
    "log_stop": ("ipa4k", "size?"),
}
_ARG_USAGE = {"ipa": "IPA", "ipa4k": "IPA", "size?": "[SIZE]"}


def op_usage(name: str) -> str:
    return " ".join([name, *(_ARG_USAGE[a] for a in OP_ARGS[name])])


_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+\Z")

# --- errors -----------------------------------------------------------------------------


def _one_line(text: str) -> str:
    """Escape anything that could break the message over lines (or hide in a terminal)."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode() for c in text)


def _toml_key(key: str) -> str:
    """A key as TOML would write it: bare when it can be, else quoted."""
    text = key if _BARE_KEY.match(key) else json.dumps(key, ensure_ascii=False)
    return text if len(text) <= 60 else text[:56] + '..."'


def _hx(value: int) -> str:
    """An address for a message: hex (no digit limit, unlike str), shortened if absurd."""
    text = hexs(value)
    return text if len(text) <= 24 else text[:20] + "..."


def _num(value: int) -> str:
    """A count or other integer for a message: decimal unless absurdly large."""
    return str(value) if -(1 << 64) < value < 1 << 64 else _hx(value)


def _q(value: Any, limit: int = 60) -> str:
    """A user-supplied value quoted for a message: repr, shortened."""
    if isinstance(value, int) and not isinstance(value, bool):
        return _num(value)
    try:
        text = repr(value)
    except ValueError:  # an int beyond Python's int-to-decimal digit limit, inside a list
        return "<value too large to show>"
    return text if len(text) <= limit else text[: limit - 3] + "..."


class ScenarioError(Exception):
    """A scenario file is wrong. str() is one line: `{path}: {where}: {message}`."""

    def __init__(self, path: str, where: str, message: str):
        self.path = str(path)
        self.where = _one_line(where)
        self.message = _one_line(message)
        super().__init__(f"{_one_line(self.path)}: {self.where}: {self.message}")


# --- data -------------------------------------------------------------------------------


@dataclass(frozen=True)
class MachineConfig:
    hafdbs: int
    ha: bool
    hd: bool
    ipa_bits: int
    granule: str
    tlb: bool
    af_on_permission_fault: bool = False  # R_QSPMS: a faulting access may set AF
    af_dirty_separate: bool = False  # R_PRHKD: AF and dirty state in two atomic updates
    tlb_evict: bool = False  # a TLB may evict entries at any time: a hardware actor does
    tlbi_vmalle1: bool = False  # KVM's TLBI by IPA is followed by TLBI VMALLE1IS


@dataclass(frozen=True)
class Mapping:
    ipa: int
    pa: int
    size: int  # bytes per leaf: 4K page, 2M or 1G block
    s2ap: str
    af: bool
    dbm: bool
    count: int

    @property
    def end(self) -> int:
        """First IPA after the last leaf."""
        return self.ipa + self.size * self.count

    @property
    def level(self) -> int:
        """Translation level of the leaves: 3 for 4K, 2 for 2M, 1 for 1G."""
        return bits.leaf_level_for_size(self.size)

    def leaves(self) -> Iterator[tuple[int, int]]:
        """(ipa, pa) of each of the `count` consecutive leaves."""
        for i in range(self.count):
            yield self.ipa + i * self.size, self.pa + i * self.size

    def leaf_at(self, ipa: int) -> tuple[int, int] | None:
        """(leaf ipa, leaf pa) of the leaf containing `ipa`, or None."""
        if not self.ipa <= ipa < self.end:
            return None
        off = (ipa - self.ipa) // self.size * self.size
        return self.ipa + off, self.pa + off


@dataclass(frozen=True)
class Op:
    name: str
    ipa: int | None  # None for flush_tlb
    size: int | None  # None when not given: the engine's default (one leaf)
    text: str  # the op string as written (stripped)


@dataclass(frozen=True)
class Actor:
    name: str
    kind: str  # "vcpu" | "host"
    ops: tuple[Op, ...]
    tlb: tuple[int, ...]  # IPAs whose leaves start in this vCPU's TLB (vcpu only)


@dataclass(frozen=True)
class Predicate:
    ipa: int | None  # None for a predicate on an actor
    fields: tuple[tuple[str, int | str], ...]
    text: str
    actor: str | None = None  # "NAME: faults=N" / "NAME: ret=0|1"

    def holds(self, leaf: dict) -> bool:
        """Every field matches `leaf` ({"valid", "af", "dbm", "s2ap", "pa", "raw", "size",
        "dirty"}), or for an actor predicate the actor's values ({"faults", "ret"})."""
        for name, want in self.fields:
            got = leaf.get(name)
            if isinstance(got, bool):
                got = int(got)
            elif name in ("pa", "raw") and isinstance(got, str):
                got = int(got, 16)
            if got != want:
                return False
        return True


@dataclass(frozen=True)
class Expect:
    always: tuple[Predicate, ...]
    sometimes: tuple[Predicate, ...]
    never: tuple[Predicate, ...]
    violations: tuple[str, ...] | None  # None: key absent (not checked)
    # Schedules `explore` cuts because they came back to a state they had passed (a vCPU
    # faulting for ever, or spinning on an entry another CPU holds); None: not checked.
    cycles: int | None = None


@dataclass(frozen=True)
class Scenario:
    name: str
    description: str
    kernel: str
    machine: MachineConfig
    maps: tuple[Mapping, ...]
    actors: tuple[Actor, ...]
    expect: Expect | None
    path: str
    commits: frozenset[str] = frozenset()  # modelled commits applied (engine/commits.py)
    commit_changes: tuple[str, ...] = ()  # the `commits` key as written ("+ID", "-ID")
    fix: str | None = None  # a bug scenario: the modelled commit that fixes the bug shown

    @cached_property
    def _by_ipa(self) -> tuple[list[int], list[Mapping]]:
        maps = sorted(self.maps, key=lambda m: m.ipa)
        return [m.ipa for m in maps], maps

    def leaf_at(self, ipa: int) -> tuple[int, Mapping] | None:
        """(leaf ipa, its map) for the leaf containing `ipa`, or None if unmapped."""
        starts, maps = self._by_ipa
        i = bisect_right(starts, ipa) - 1
        if i < 0:
            return None
        hit = maps[i].leaf_at(ipa)
        return None if hit is None else (hit[0], maps[i])

    @property
    def leaf_count(self) -> int:
        return sum(m.count for m in self.maps)


# --- predicates -------------------------------------------------------------------------


def _predicate_value(name: str, value: str) -> int | str:
    if name == "size":
        if value not in LEAF_SIZES:
            raise ValueError(f"size must be one of {', '.join(LEAF_SIZES)}, got {_q(value)}")
        return value
    if name in ("valid", "af", "dbm", "dirty"):
        if value not in ("0", "1"):
            raise ValueError(f"{name} must be 0 or 1, got {_q(value)}")
        return int(value)
    if name == "s2ap":
        if value not in S2AP_NAMES:
            raise ValueError(f"s2ap must be one of {', '.join(S2AP_NAMES)}, got {_q(value)}")
        return value
    limit = bits.OA_BITS if name == "pa" else 64
    try:
        number = parse_int(value)
    except ValueError:
        raise ValueError(f"{name} must be a hex integer, got {_q(value)}") from None
    if number >= 1 << limit:
        raise ValueError(f"{name} {_hx(number)} does not fit in {limit} bits")
    return number


def _actor_value(name: str, value: str) -> int:
    limit = FAULTS_MAX if name == "faults" else 1
    if not is_digits(value) or int(value) > limit:
        raise ValueError(f"{name} must be an integer 0..{limit}, got {_q(value)}")
    return int(value)


def parse_predicate(
    text: str, path: str, where: str, actors: dict[str, str] | None = None
) -> Predicate:
    """`"IPA: field=value field=value"`, fields from PREDICATE_FIELDS; or, naming one of
    `actors` ({name: kind}), `"NAME: field=value"` with ACTOR_PREDICATE_FIELDS."""

    def fail(message: str) -> NoReturn:
        raise ScenarioError(path, where, f"predicate {_q(text)}: {message}")

    if not isinstance(text, str):
        raise ScenarioError(path, where, f"must be a string, got {_type_name(text)}")
    head, colon, rest = text.partition(":")
    if not colon:
        fail("expected 'IPA: field=value ...' (no ':' after the IPA)")
    actor = None
    try:
        ipa = parse_int(head.strip())
    except ValueError as e:
        if actors and head.strip() in actors:
            actor, ipa = head.strip(), None
        else:
            fail(f"bad IPA: {e}" + (" (nor an actor name)" if actors else ""))
    allowed = ACTOR_PREDICATE_FIELDS[actors[actor]] if actor else PREDICATE_FIELDS
    tokens = rest.split()
    if not tokens:
        fail(f"no fields after the ':' (fields: {', '.join(allowed)})")
    fields: list[tuple[str, int | str]] = []
    for token in tokens:
        name, eq, value = token.partition("=")
        if not eq or not name or not value:
            fail(f"expected field=value, got {_q(token)}")
        if name not in allowed:
            whose = f" of a {actors[actor]} actor" if actor else ""
            fail(f"unknown field {_q(name)}{whose} (fields: {', '.join(allowed)})")
        if any(name == seen for seen, _ in fields):
            fail(f"field {name!r} given twice")
        try:
            fields.append(
                (name, _actor_value(name, value) if actor else _predicate_value(name, value))
            )
        except ValueError as e:
            fail(str(e))
    return Predicate(ipa=ipa, fields=tuple(fields), text=text, actor=actor)


# --- the parser -------------------------------------------------------------------------

_MISSING = object()


def _type_name(value: Any) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a float"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "a table"
    return f"a {type(value).__name__}"  # datetime, date, time


_KINDS = {
    "int": ("an integer", lambda v: isinstance(v, int) and not isinstance(v, bool)),
    "bool": ("a boolean (true/false)", lambda v: isinstance(v, bool)),
    "str": ("a string", lambda v: isinstance(v, str)),
    "table": ("a table", lambda v: isinstance(v, dict)),
    "list": ("an array", lambda v: isinstance(v, list)),
}

_TOML_POS = re.compile(r"\s*\(at line (\d+), column (\d+)\)")
_TOML_END = re.compile(r"\s*\(at end of document\)")


class _Parser:
    def __init__(self, path: str, extra_commits: tuple[str, ...] = ()):
        self.path = path
        self.ipa_bits = 40
        self.extra_commits = tuple(extra_commits)  # `--commits` on the command line

    def fail(self, where: str, message: str) -> NoReturn:
        raise ScenarioError(self.path, where, message)

    def space(self) -> str:
        return f"ipa_bits = {self.ipa_bits} (IPAs below {_hx(1 << self.ipa_bits)})"

    # typed access ------------------------------------------------------------------
    def check(self, value: Any, kind: str, where: str) -> Any:
        desc, ok = _KINDS[kind]
        if not ok(value):
            self.fail(where, f"must be {desc}, got {_type_name(value)} {_q(value)}")
        return value

    def get(self, table: dict, key: str, kind: str, where: str, default: Any = _MISSING) -> Any:
        if key not in table:
            if default is _MISSING:
                self.fail(where, f"required key {key!r} is missing")
            return default
        return self.check(table[key], kind, where)

    def check_keys(self, table: dict, allowed: tuple[str, ...], prefix: str) -> None:
        for key in table:
            if key not in allowed:
                where = f"{prefix}.{_toml_key(key)}" if prefix else _toml_key(key)
                self.fail(where, f"unknown key {_q(key)} (allowed: {', '.join(allowed)})")

    def choice(self, value: str, allowed: tuple[str, ...], where: str, what: str) -> str:
        if value not in allowed:
            self.fail(where, f"unknown {what} {_q(value)} (one of: {', '.join(allowed)})")
        return value

    # document ----------------------------------------------------------------------
    def toml(self, text: str) -> dict:
        if not isinstance(text, str):
            self.fail("file", f"scenario text must be a string, got {type(text).__name__}")
        try:
            return tomllib.loads(text)
        except tomllib.TOMLDecodeError as e:
            msg = str(e)
            m = _TOML_POS.search(msg)
            if m:
                self.fail(f"line {m[1]}", f"invalid TOML: {msg[: m.start()]} (column {m[2]})")
            line = max(1, len(text.splitlines()))
            self.fail(f"line {line}", f"invalid TOML: {_TOML_END.sub('', msg)} (at end of file)")
        except ValueError:
            # tomllib lets int()'s digit limit escape on huge decimal literals.
            m = re.search(r"[0-9_]{1000,}", text)
            line = text.count("\n", 0, m.start()) + 1 if m else 1
            self.fail(f"line {line}", "invalid TOML: integer literal too long")
        except RecursionError:
            self.fail("line 1", "invalid TOML: arrays or inline tables nested too deeply")

    def scenario(self, text: str) -> Scenario:
        doc = self.toml(text)
        self.check_keys(doc, TOP_KEYS, "")
        name = self.get(doc, "name", "str", "name")
        if not name.strip():
            self.fail("name", "must not be empty")
        description = self.get(doc, "description", "str", "description", "")
        kernel = self.choice(self.get(doc, "kernel", "str", "kernel"), KERNELS, "kernel", "kernel")
        changes = tuple(self.get(doc, "commits", "list", "commits", []))
        commits = self.commits(kernel, changes, "commits")
        fix = self.fix(doc, kernel, commits)
        if self.extra_commits:  # --commits: on top of the file's own
            commits = self.commits(kernel, self.extra_commits, "--commits", commits)
            changes += self.extra_commits
        machine = self.machine(self.get(doc, "machine", "table", "machine", {}), kernel, commits)
        self.ipa_bits = machine.ipa_bits
        maps = self.maps(self.get(doc, "map", "list", "map", []))
        probe = Scenario(
            name, description, kernel, machine, maps, (), None, self.path, commits, changes
        )
        if "actor" not in doc:
            self.fail("actor", "at least one [[actor]] is required")
        actors = self.actors(self.check(doc["actor"], "list", "actor"), probe)
        expect = None
        if "expect" in doc:
            with_actors = replace(probe, actors=actors)
            expect = self.expect(self.check(doc["expect"], "table", "expect"), with_actors)
        return Scenario(
            name,
            description,
            kernel,
            machine,
            maps,
            actors,
            expect,
            self.path,
            commits,
            changes,
            fix,
        )

    def fix(self, doc: dict, kernel: str, commits: frozenset[str]) -> str | None:
        """`fix = "ID"`: the scenario shows a bug this modelled commit fixed; its [expect]
        holds with the commit and fails with it reverted (scenarios/bugs/)."""
        if "fix" not in doc:
            return None
        text = self.get(doc, "fix", "str", "fix")
        commit = lookup(text) if re.fullmatch(r"[0-9a-fA-F]{7,40}", text) else None
        if commit is None:
            self.fail("fix", f"{_q(text)} is not a modelled commit (modelled: {modelled_list()})")
        if commit.short not in commits:
            self.fail(
                "fix",
                f"commit {commit.short} is not in kernel {kernel!r} with this scenario's "
                f"`commits`: add '+{commit.short}' to them",
            )
        return commit.short

    # commits = ["+ID", "-ID"] ----------------------------------------------------------
    def commits(
        self, kernel: str, changes: tuple, key: str, start: frozenset[str] | None = None
    ) -> frozenset[str]:
        try:
            return resolve(kernel, list(changes), start)
        except CommitError as e:
            self.fail(f"{key}[{e.index}]", e.message)

    # [machine] -----------------------------------------------------------------------
    def machine(self, table: dict, kernel: str, commits: frozenset[str]) -> MachineConfig:
        self.check_keys(table, MACHINE_KEYS, "machine")
        hafdbs = self.get(table, "hafdbs", "int", "machine.hafdbs", bits.HAFDBS_AF)
        if hafdbs not in (bits.HAFDBS_NONE, bits.HAFDBS_AF, bits.HAFDBS_AF_DBM):
            self.fail("machine.hafdbs", f"must be 0, 1 or 2, got {_q(hafdbs)}")
        # The seed (06485053, s2-setup.c) and the kvm_pgtable code (kvm_get_vtcr) program
        # VTCR_EL2.HA when the CPU has it; v4.6 never does.
        sets_ha = SEED in commits or GENERATIONS[kernel].base == PGTABLE
        ha_default = sets_ha and hafdbs >= bits.HAFDBS_AF
        ha = self.get(table, "ha", "bool", "machine.ha", ha_default)
        if ha and hafdbs < bits.HAFDBS_AF:
            self.fail("machine.ha", "ha = true needs hafdbs >= 1 (no hardware Access flag)")
        hd = self.get(table, "hd", "bool", "machine.hd", False)
        if hd and hafdbs != bits.HAFDBS_AF_DBM:
            self.fail("machine.hd", f"hd = true needs hafdbs = 2 (got hafdbs = {hafdbs})")
        ipa_bits = self.get(table, "ipa_bits", "int", "machine.ipa_bits", 40)
        if not IPA_BITS_MIN <= ipa_bits <= IPA_BITS_MAX:
            self.fail(
                "machine.ipa_bits",
                f"must be in {IPA_BITS_MIN}..{IPA_BITS_MAX}, got {_q(ipa_bits)}",
            )
        granule = self.get(table, "granule", "str", "machine.granule", "4K")
        if granule not in GRANULES:
            self.fail("machine.granule", f"only the 4K granule is modelled, got {_q(granule)}")
        tlb = self.get(table, "tlb", "bool", "machine.tlb", True)
        what_if = {k: self.get(table, k, "bool", f"machine.{k}", False) for k in WHAT_IF_KEYS}
        needs = {
            "af_on_permission_fault": (ha, "ha = true (the walker sets AF only with HA)"),
            "af_dirty_separate": (hd, "hd = true (no dirty-state update without HD)"),
            "tlb_evict": (tlb, "tlb = true (nothing to evict)"),
            "tlbi_vmalle1": (tlb, "tlb = true (nothing to invalidate)"),
        }
        for key, (ok, need) in needs.items():
            if what_if[key] and not ok:
                self.fail(f"machine.{key}", f"{key} = true needs {need}")
        return MachineConfig(hafdbs, ha, hd, ipa_bits, granule, tlb, **what_if)

    # [[map]] -------------------------------------------------------------------------
    def maps(self, items: list) -> tuple[Mapping, ...]:
        maps: list[Mapping] = []
        total = 0
        for i, table in enumerate(items):
            w = f"map[{i}]"
            self.check(table, "table", w)
            self.check_keys(table, MAP_KEYS, w)
            m = self.mapping(table, w)
            total += m.count
            if total > MAX_LEAVES:
                self.fail(
                    f"{w}.count",
                    f"too many leaves: {_num(total)} in map[0..{i}], the model's limit is "
                    f"{MAX_LEAVES} (2**22) leaves in all",
                )
            maps.append(m)
        # No two maps may cover the same IPA, whatever their sizes.
        order = sorted(range(len(maps)), key=lambda k: maps[k].ipa)
        for a, b in pairwise(order):
            if maps[b].ipa < maps[a].end:
                first, second = sorted((a, b))
                self.fail(
                    f"map[{second}].ipa",
                    f"IPA range {self.span(maps[second])} overlaps map[{first}] "
                    f"({self.span(maps[first])})",
                )
        return tuple(maps)

    @staticmethod
    def span(m: Mapping) -> str:
        return f"{_hx(m.ipa)}..{_hx(m.end - 1)}"

    def mapping(self, table: dict, w: str) -> Mapping:
        ipa = self.get(table, "ipa", "int", f"{w}.ipa")
        pa = self.get(table, "pa", "int", f"{w}.pa")
        size_text = self.get(table, "size", "str", f"{w}.size", "4K")
        if size_text not in MAP_SIZES:
            self.fail(f"{w}.size", f"must be one of {', '.join(MAP_SIZES)}, got {_q(size_text)}")
        size = MAP_SIZES[size_text]
        count = self.get(table, "count", "int", f"{w}.count", 1)
        if count < 1:
            self.fail(f"{w}.count", f"must be >= 1, got {_num(count)}")
        for key, value, space in (("ipa", ipa, self.ipa_bits), ("pa", pa, bits.OA_BITS)):
            if value < 0:
                self.fail(f"{w}.{key}", f"must be >= 0, got {_num(value)}")
            if value % size:
                self.fail(f"{w}.{key}", f"{_hx(value)} is not aligned to size {size_text}")
            end = value + size * count
            if end > 1 << space:
                what = self.space() if key == "ipa" else "48-bit physical addresses"
                leaves = (
                    f"{_num(count)} x {size_text} from {_hx(value)}" if count > 1 else _hx(value)
                )
                self.fail(f"{w}.{key}", f"{leaves} ends at {_hx(end)}, beyond {what}")
        s2ap = self.get(table, "s2ap", "str", f"{w}.s2ap", "rw")
        self.choice(s2ap, S2AP_NAMES, f"{w}.s2ap", "s2ap")
        af = self.get(table, "af", "bool", f"{w}.af", True)
        dbm = self.get(table, "dbm", "bool", f"{w}.dbm", False)
        return Mapping(ipa=ipa, pa=pa, size=size, s2ap=s2ap, af=af, dbm=dbm, count=count)

    # [[actor]] -----------------------------------------------------------------------
    def actors(self, items: list, sc: Scenario) -> tuple[Actor, ...]:
        if not items:
            self.fail("actor", "at least one [[actor]] is required")
        actors: list[Actor] = []
        seen: dict[str, int] = {}
        for i, table in enumerate(items):
            w = f"actor[{i}]"
            self.check(table, "table", w)
            self.check_keys(table, ACTOR_KEYS, w)
            name = self.get(table, "name", "str", f"{w}.name")
            if not name or any(c.isspace() or c == "," for c in name):
                self.fail(
                    f"{w}.name",
                    f"{_q(name)} must be non-empty, without spaces or commas "
                    "(schedules are comma-separated actor names)",
                )
            if name in seen:
                self.fail(
                    f"{w}.name", f"duplicate actor name {_q(name)} (also actor[{seen[name]}])"
                )
            if name == EVICT_ACTOR and sc.machine.tlb_evict:
                self.fail(
                    f"{w}.name",
                    f"{name!r} names the hardware actor of machine.tlb_evict: pick another name",
                )
            seen[name] = i
            kind = self.get(table, "kind", "str", f"{w}.kind")
            self.choice(kind, ACTOR_KINDS, f"{w}.kind", "actor kind")
            do = self.get(table, "do", "list", f"{w}.do")
            if not do:
                self.fail(f"{w}.do", "must list at least one operation")
            ops = tuple(self.op(text, kind, f"{w}.do[{j}]") for j, text in enumerate(do))
            tlb = self.tlb(table, kind, w, sc)
            actors.append(Actor(name=name, kind=kind, ops=ops, tlb=tlb))
        return tuple(actors)

    def tlb(self, table: dict, kind: str, w: str, sc: Scenario) -> tuple[int, ...]:
        if "tlb" not in table:
            return ()
        if kind != "vcpu":
            self.fail(f"{w}.tlb", "only a vcpu actor has a TLB to preload")
        if not sc.machine.tlb:
            self.fail(f"{w}.tlb", "a TLB preload needs machine.tlb = true")
        entries = self.check(table["tlb"], "list", f"{w}.tlb")
        if len(entries) > TLB_ENTRIES:
            self.fail(
                f"{w}.tlb", f"{len(entries)} entries: the modelled TLB holds at most {TLB_ENTRIES}"
            )
        for j, ipa in enumerate(entries):
            self.check(ipa, "int", f"{w}.tlb[{j}]")
            if sc.leaf_at(ipa) is None:
                self.fail(f"{w}.tlb[{j}]", f"{_hx(ipa)} is not inside any [[map]] leaf")
        return tuple(entries)

    def op(self, text: Any, kind: str, where: str) -> Op:
        if not isinstance(text, str):
            self.fail(where, f"must be an operation string, got {_type_name(text)} {_q(text)}")
        tokens = text.split()
        if not tokens:
            self.fail(where, "empty operation")
        name, args = tokens[0], tokens[1:]
        if name not in OP_ARGS:
            self.fail(
                where,
                f"unknown operation {_q(name)} (vcpu: {', '.join(VCPU_OPS)}; "
                f"host: {', '.join(HOST_OPS)})",
            )
        own = VCPU_OPS if kind == "vcpu" else HOST_OPS
        if name not in own:
            other = "host" if kind == "vcpu" else "vcpu"
            self.fail(
                where,
                f"{name!r} is a {other} operation; a {kind} actor can do: {', '.join(own)}",
            )
        spec = OP_ARGS[name]
        required = sum(1 for a in spec if not a.endswith("?"))
        if not required <= len(args) <= len(spec):
            usage = op_usage(name)
            self.fail(where, f"{_q(text.strip())}: wrong number of arguments (usage: {usage})")
        ipa = size = None
        limit = 1 << self.ipa_bits
        for arg, token in zip(spec, args, strict=False):  # optional args may be absent
            if arg in ("ipa", "ipa4k"):
                try:
                    ipa = parse_int(token)
                except ValueError as e:
                    self.fail(where, f"{name}: bad IPA: {e}")
                if ipa >= limit:
                    self.fail(where, f"{name}: IPA {_hx(ipa)} is beyond {self.space()}")
                if arg == "ipa4k" and ipa % bits.PAGE_SIZE:
                    self.fail(where, f"{name}: IPA {_hx(ipa)} is not 4K aligned")
            else:
                try:
                    size = parse_size(token)
                except ValueError as e:
                    self.fail(where, f"{name}: bad SIZE: {e}")
                if size <= 0 or size % bits.PAGE_SIZE:
                    self.fail(where, f"{name}: SIZE {_q(token)} must be a positive multiple of 4K")
                assert ipa is not None
                if ipa + size > limit:
                    self.fail(
                        where,
                        f"{name}: {_hx(ipa)} + {size_name(size)} ends at {_hx(ipa + size)}, "
                        f"beyond {self.space()}",
                    )
        return Op(name=name, ipa=ipa, size=size, text=text.strip())

    # [expect] ------------------------------------------------------------------------
    def expect(self, table: dict, sc: Scenario) -> Expect:
        self.check_keys(table, EXPECT_KEYS, "expect")
        lists: dict[str, tuple[Predicate, ...]] = {}
        for key in ("always", "sometimes", "never"):
            items = self.get(table, key, "list", f"expect.{key}", [])
            preds = []
            for j, text in enumerate(items):
                w = f"expect.{key}[{j}]"
                actors = {a.name: a.kind for a in sc.actors}
                pred = parse_predicate(text, self.path, w, actors)
                if pred.actor is not None:
                    preds.append(pred)
                    continue
                where = f"predicate {_q(text)}: IPA {_hx(pred.ipa)}"
                if pred.ipa >= 1 << self.ipa_bits:
                    self.fail(w, f"{where} is beyond {self.space()}")
                if sc.leaf_at(pred.ipa) is None:
                    self.fail(w, f"{where} is not inside any [[map]] leaf")
                preds.append(pred)
            lists[key] = tuple(preds)
        violations = None
        if "violations" in table:
            items = self.check(table["violations"], "list", "expect.violations")
            for j, check in enumerate(items):
                w = f"expect.violations[{j}]"
                self.check(check, "str", w)
                self.choice(check, CHECKS, w, "check")
                if check in items[:j]:
                    self.fail(w, f"check {check!r} listed twice")
            violations = tuple(items)
        cycles = None
        if "cycles" in table:
            cycles = self.check(table["cycles"], "int", "expect.cycles")
            if cycles < 0:
                self.fail("expect.cycles", f"{cycles} is negative: a number of schedules")
        return Expect(lists["always"], lists["sometimes"], lists["never"], violations, cycles)


# --- entry points -----------------------------------------------------------------------


def parse_op(text: str, kind: str, ipa_bits: int, path: str = "<input>", where: str = "op") -> Op:
    """One operation string for an actor of `kind` (a live session's injected operation)."""
    parser = _Parser(path)
    parser.ipa_bits = ipa_bits
    if kind not in ACTOR_KINDS:
        parser.fail(where, f"the {kind} actor runs no operations but its own")
    return parser.op(text, kind, where)


def parse_scenario(text: str, path: str = "<string>", commits: tuple[str, ...] = ()) -> Scenario:
    """Parse and validate scenario TOML text; `path` names it in error messages. `commits`
    ("+ID"/"-ID", the CLI's --commits) apply on top of the file's own `commits` key."""
    return _Parser(str(path), commits).scenario(text)


def load_scenario(path: str | PathLike, commits: tuple[str, ...] = ()) -> Scenario:
    """Read and parse a scenario file (UTF-8; a leading BOM is ignored)."""
    name = str(path)
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise ScenarioError(name, "file", f"cannot read: {e.strerror or e}") from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise ScenarioError(name, f"line {line}", "not valid UTF-8") from None
    return parse_scenario(text, name, commits)


__all__ = [
    "ACTOR_KINDS",
    "CHECKS",
    "HOST_OPS",
    "KERNELS",
    "LOGGING_OPS",
    "MAP_SIZES",
    "OP_ARGS",
    "VCPU_OPS",
    "Actor",
    "Expect",
    "MachineConfig",
    "Mapping",
    "Op",
    "Predicate",
    "Scenario",
    "ScenarioError",
    "load_scenario",
    "parse_predicate",
    "parse_scenario",
    "parse_size",
]
