"""Scenario texts for the web pages: the example gallery, the form builder (form -> TOML
text, which then goes through engine.scenario's parser like any pasted file), and TOML
rewrites for forks that change the kernel generation or VTCR_EL2.HA/HD.
"""

from __future__ import annotations

import json
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings

from engine.isa import CHECK_NAMES
from engine.scenario import (
    ACTOR_KINDS,
    KERNELS,
    MAP_SIZES,
    S2AP_NAMES,
    WHAT_IF_KEYS,
    ScenarioError,
)
from engine.scenario import parse_scenario as _parse
from engine.sizes import hexs, parse_int

EXAMPLES_DIR = Path(settings.BASE_DIR) / "scenarios"
HEX_KEYS = {"ipa", "pa"}  # integers written in hex


# --- the gallery --------------------------------------------------------------------------
@dataclass(frozen=True)
class Example:
    slug: str  # file name without .toml
    name: str
    description: str
    kernel: str
    actors: tuple[str, ...]
    leaves: int
    text: str


_cache: dict[str, tuple[float, Example | None]] = {}


def examples() -> list[Example]:
    """The repository's scenarios/*.toml that parse (sorted by file name)."""
    out = []
    for path in sorted(EXAMPLES_DIR.glob("*.toml")):
        mtime = path.stat().st_mtime
        hit = _cache.get(path.name)
        if hit is None or hit[0] != mtime:
            example = None
            try:
                text = path.read_text(encoding="utf-8-sig")
                sc = _parse(text, path.name)
                example = Example(
                    slug=path.stem,
                    name=sc.name,
                    description=" ".join(sc.description.split()),
                    kernel=sc.kernel,
                    actors=tuple(f"{a.name} ({a.kind})" for a in sc.actors),
                    leaves=sc.leaf_count,
                    text=text,
                )
            except (OSError, UnicodeDecodeError, ScenarioError):
                example = None
            hit = (mtime, example)
            _cache[path.name] = hit
        if hit[1] is not None:
            out.append(hit[1])
    return out


def example(slug: str) -> Example | None:
    return next((e for e in examples() if e.slug == slug), None)


# --- writing TOML -------------------------------------------------------------------------
def _toml_string(value: str) -> str:
    # JSON strings are TOML basic strings, except that TOML also forbids a raw DEL.
    return json.dumps(value, ensure_ascii=False).replace("\x7f", "\\u007f")


def _toml_value(key: str, value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return hexs(value) if key in HEX_KEYS or key == "tlb" else str(value)
    if isinstance(value, str):
        return _toml_string(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(key, v) for v in value) + "]"
    raise TypeError(f"cannot write {type(value).__name__} as TOML")


def _toml_key(key: str) -> str:
    return key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else _toml_string(key)


def dump_scenario(doc: dict) -> str:
    """A scenario document (as tomllib reads it) as TOML text."""
    lines = []
    tables = []
    for key, value in doc.items():
        if isinstance(value, dict):
            tables.append((key, value, False))
        elif isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            tables.append((key, value, True))
        else:
            lines.append(f"{_toml_key(key)} = {_toml_value(key, value)}")
    for key, value, array in tables:
        for item in value if array else [value]:
            lines.append("")
            lines.append(f"[[{_toml_key(key)}]]" if array else f"[{_toml_key(key)}]")
            for k, v in item.items():
                lines.append(f"{_toml_key(k)} = {_toml_value(k, v)}")
    return "\n".join(lines) + "\n"


def with_machine(
    text: str,
    *,
    kernel: str | None = None,
    ha: bool | None = None,
    hd: bool | None = None,
    hafdbs: int | None = None,
) -> str:
    """The scenario with another kernel generation or VTCR_EL2.HA/HD/HAFDBS (a what-if
    copy). Leaving `ha` out after a kernel change lets the kernel's default decide."""
    doc = tomllib.loads(text)
    what = what_if_label(kernel=kernel, ha=ha, hd=hd, hafdbs=hafdbs)
    if what:
        # The copy says what it is: the original's title and description were written
        # for the original kernel and VTCR_EL2 (a v4.6 copy of the seed race is no longer
        # about LDXR/STXR).
        name = str(doc.get("name", "untitled"))
        was = what_if_label(
            kernel=doc.get("kernel") if kernel is not None else None,
            ha=_machine_bool(doc, "ha") if ha is not None else None,
            hd=_machine_bool(doc, "hd") if hd is not None else None,
            hafdbs=doc.get("machine", {}).get("hafdbs") if hafdbs is not None else None,
        )
        doc["name"] = f"what-if {what}: {name}"
        original = " ".join(str(doc.get("description", "")).split())
        doc["description"] = (
            f'What-if copy of "{name}" with {what}'
            + (f" (the original: {was})" if was else "")
            + "."
            + (
                f" The original's description, written for the original: {original}"
                if original
                else ""
            )
        )
    if kernel is not None:
        doc["kernel"] = kernel
        if ha is None and isinstance(doc.get("machine"), dict):
            doc["machine"].pop("ha", None)
        # commits applied or reverted belong to the generation they were written for
        doc.pop("commits", None)
        doc.pop("fix", None)
    machine = doc.setdefault("machine", {})
    if hafdbs is not None:
        machine["hafdbs"] = hafdbs
    if ha is not None:
        machine["ha"] = ha
    if hd is not None:
        machine["hd"] = hd
    # keep the top-level keys first, then [machine], then the arrays of tables
    order = ["name", "description", "kernel", "commits", "fix", "machine", "map", "actor", "expect"]
    out = {k: doc[k] for k in order if k in doc}
    out.update({k: v for k, v in doc.items() if k not in out})
    return dump_scenario(out)


def what_if_label(
    *, kernel: str | None, ha: bool | None, hd: bool | None, hafdbs: int | None
) -> str:
    """ "kernel v4.6, HA on" for the values given (None: not part of the what-if)."""
    parts = []
    if kernel is not None:
        parts.append(f"kernel {kernel}")
    if hafdbs is not None:
        parts.append(f"HAFDBS {hafdbs}")
    for key, value in (("HA", ha), ("HD", hd)):
        if value is not None:
            parts.append(f"{key} {'on' if value else 'off'}")
    return ", ".join(parts)


def _machine_bool(doc: dict, key: str) -> bool | None:
    machine = doc.get("machine")
    value = machine.get(key) if isinstance(machine, dict) else None
    return value if isinstance(value, bool) else None


# --- the form builder ---------------------------------------------------------------------
# Rows are numbered by the page (map-N-*, actor-N-*); the browser adds and removes rows, so
# the numbers need not be consecutive: the form is read in row-number order.
ROW_KEY = re.compile(r"(map|actor)-(\d+)-(\w+)")
EXPECT_KINDS = ("always", "sometimes", "never")
CHECKS = CHECK_NAMES


def builder_defaults() -> dict:
    """Initial values of the form builder: the seed race, ready to run."""
    return {
        "b-name": "my scenario",
        "b-description": "",
        "b-kernel": "seed",
        "b-hafdbs": "1",
        "b-ha": "default",
        "b-ipa_bits": "40",
        "b-tlb": "on",
        "map-0-ipa": "0x8000_0000",
        "map-0-pa": "0x4000_0000",
        "map-0-size": "4K",
        "map-0-s2ap": "rw",
        "map-0-af": "",  # af = false: the race needs an old page
        "map-0-count": "1",
        "actor-0-name": "vcpu0",
        "actor-0-kind": "vcpu",
        "actor-0-do": "read 0x8000_0000",
        "actor-1-name": "host0",
        "actor-1-kind": "host",
        "actor-1-do": "set_readonly 0x8000_0000",
    }


def row_numbers(data, kind: str) -> list[int]:
    """The row numbers of `kind` ("map" or "actor") present in the form data."""
    rows = set()
    for key in data:
        m = ROW_KEY.fullmatch(key)
        if m and m[1] == kind:
            rows.add(int(m[2]))
    return sorted(rows)


def _hex(value: int) -> str:
    """0x8000_0000: hex in groups of four digits, as the examples write IPAs."""
    digits = f"{value:x}"
    groups = []
    while digits:
        groups.insert(0, digits[-4:])
        digits = digits[:-4]
    return "0x" + "_".join(groups or ["0"])


def form_values(text: str) -> dict:
    """A scenario's text as the builder's field values (start from an example). Raises
    ScenarioError for a scenario the builder cannot show (it must parse first)."""
    sc = _parse(text, "example")
    doc = tomllib.loads(text)
    machine = doc.get("machine", {})
    values = {
        "b-commits": " ".join(doc.get("commits", [])),
        "b-fix": doc.get("fix", ""),
        "b-name": sc.name,
        "b-description": " ".join(sc.description.split()),
        "b-kernel": sc.kernel,
        "b-hafdbs": str(sc.machine.hafdbs),
        "b-ha": "default" if "ha" not in machine else ("on" if machine["ha"] else "off"),
        "b-hd": "on" if sc.machine.hd else "",
        "b-ipa_bits": str(sc.machine.ipa_bits),
        "b-tlb": "on" if sc.machine.tlb else "",
    }
    for key in WHAT_IF_KEYS:
        values[f"b-{key}"] = "on" if getattr(sc.machine, key) else ""
    for i, m in enumerate(sc.maps):
        values.update(
            {
                f"map-{i}-ipa": _hex(m.ipa),
                f"map-{i}-pa": _hex(m.pa),
                f"map-{i}-size": next(k for k, v in MAP_SIZES.items() if v == m.size),
                f"map-{i}-s2ap": m.s2ap,
                f"map-{i}-af": "on" if m.af else "",
                f"map-{i}-dbm": "on" if m.dbm else "",
                f"map-{i}-count": str(m.count),
            }
        )
    for i, a in enumerate(sc.actors):
        values.update(
            {
                f"actor-{i}-name": a.name,
                f"actor-{i}-kind": a.kind,
                f"actor-{i}-do": "\n".join(op.text for op in a.ops),
                f"actor-{i}-tlb": " ".join(_hex(ipa) for ipa in a.tlb),
            }
        )
    ex = sc.expect
    if ex is not None:
        for kind in EXPECT_KINDS:
            values[f"x-{kind}"] = "\n".join(p.text for p in getattr(ex, kind))
        if ex.violations is not None:
            values["x-violations"] = "exactly"
            for check in ex.violations:
                values[f"x-violation-{check}"] = "on"
        if ex.cycles is not None:
            values["x-cycles"] = str(ex.cycles)
    return values


@dataclass
class Built:
    text: str
    # scenario key prefix -> form field prefix ("map[0]" -> "map-2", "actor[1]" -> ...)
    fields: dict[str, str]


def build_from_form(data) -> Built:
    """A QueryDict of the builder's fields -> scenario TOML text. Raises ScenarioError
    (path "form") for a value that is not even a number; its `fields` attribute maps the
    rows read so far (see Built.fields)."""
    fields: dict[str, str] = {}
    try:
        return _build(data, fields)
    except ScenarioError as exc:
        exc.fields = fields
        raise


def _lines(text: str) -> list[str]:
    return [line.strip() for line in re.split(r"[;\n]", text) if line.strip()]


def _build(data, fields: dict[str, str]) -> Built:
    def get(key: str, default: str = "") -> str:
        return str(data.get(key, default) or "").strip()

    doc: dict = {"name": get("b-name") or "untitled"}
    if get("b-description"):
        doc["description"] = get("b-description")
    doc["kernel"] = get("b-kernel") or "seed"
    commits = [c for c in re.split(r"[\s,;]+", get("b-commits")) if c]
    if commits:
        doc["commits"] = commits
    if get("b-fix"):
        doc["fix"] = get("b-fix")
    machine: dict = {}
    for key in ("hafdbs", "ipa_bits"):
        if get(f"b-{key}"):
            machine[key] = _form_int(get(f"b-{key}"), f"machine.{key}")
    ha = get("b-ha", "default")
    if ha in ("on", "off"):
        machine["ha"] = ha == "on"
    if get("b-hd") == "on":
        machine["hd"] = True
    machine["tlb"] = get("b-tlb") == "on"
    for key in WHAT_IF_KEYS:  # hardware what-ifs (the Arm ARM's permitted choices)
        if get(f"b-{key}") == "on":
            machine[key] = True
    doc["machine"] = machine
    maps = []
    for i in row_numbers(data, "map"):
        if not get(f"map-{i}-ipa"):
            continue
        where = f"map[{len(maps)}]"
        fields[where] = f"map-{i}"
        row = {
            "ipa": _form_int(get(f"map-{i}-ipa"), f"{where}.ipa", fields),
            "pa": _form_int(get(f"map-{i}-pa") or "0", f"{where}.pa", fields),
            "size": get(f"map-{i}-size") or "4K",
            "s2ap": get(f"map-{i}-s2ap") or "rw",
            "af": get(f"map-{i}-af") == "on",
            "dbm": get(f"map-{i}-dbm") == "on",
        }
        count = get(f"map-{i}-count")
        if count and count != "1":
            row["count"] = _form_int(count, f"{where}.count", fields)
        maps.append(row)
    if maps:
        doc["map"] = maps
    actors = []
    for i in row_numbers(data, "actor"):
        if not get(f"actor-{i}-name"):
            continue
        where = f"actor[{len(actors)}]"
        fields[where] = f"actor-{i}"
        actor = {
            "name": get(f"actor-{i}-name"),
            "kind": get(f"actor-{i}-kind"),
            "do": _lines(get(f"actor-{i}-do")),
        }
        preload = re.split(r"[\s,;]+", get(f"actor-{i}-tlb"))
        if any(preload):
            actor["tlb"] = [_form_int(x, f"{where}.tlb", fields) for x in preload if x]
        actors.append(actor)
    if actors:
        doc["actor"] = actors
    expect: dict = {}
    for kind in EXPECT_KINDS:
        preds = _lines(get(f"x-{kind}").replace(";", "\n"))
        if preds:
            expect[kind] = preds
    if get("x-violations") == "exactly":
        expect["violations"] = [c for c in CHECKS if get(f"x-violation-{c}") == "on"]
    if get("x-cycles"):
        expect["cycles"] = _form_int(get("x-cycles"), "expect.cycles", fields)
    if expect:
        doc["expect"] = expect
    return Built(dump_scenario(doc), fields)


def _form_int(text: str, where: str, fields: dict | None = None) -> int:
    try:
        return parse_int(text)
    except ValueError as exc:
        raise ScenarioError("form", where, str(exc)) from None


def form_field(where: str, fields: dict[str, str]) -> str | None:
    """The builder field a ScenarioError's `where` names (for marking it in the form)."""
    m = re.match(r"(map|actor)\[(\d+)\](?:\.(\w+))?", where)
    if m:
        row = fields.get(f"{m[1]}[{m[2]}]")
        if row is None:
            return None
        return f"{row}-{m[3] or ('ipa' if m[1] == 'map' else 'name')}"
    m = re.match(r"machine\.(\w+)", where)
    if m:
        return f"b-{m[1]}"
    m = re.match(r"expect\.(\w+)", where)
    if m:
        return f"x-{m[1]}"
    if where in ("name", "description", "kernel", "commits", "fix"):
        return f"b-{where}"
    if where == "actor":
        return "actor-0-name"
    return None


CHOICES = {
    "kernels": KERNELS,
    "kinds": ACTOR_KINDS,
    "sizes": tuple(MAP_SIZES),
    "s2ap": S2AP_NAMES,
    "checks": CHECKS,
    "what_ifs": WHAT_IF_KEYS,
}
