"""Fuzzing the scenario parser: whatever the text, the only exception that may leave
parse_scenario is a ScenarioError whose text is one line starting with the file's path,
and whatever it accepts satisfies the contract's invariants."""

import datetime
import json
import math

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.scenario import (
    CHECKS,
    HOST_OPS,
    KERNELS,
    MAX_LEAVES,
    OP_ARGS,
    PREDICATE_FIELDS,
    S2AP_NAMES,
    VCPU_OPS,
    Scenario,
    ScenarioError,
    parse_scenario,
)

PATH = "fuzz/case.toml"
FUZZ = settings(
    max_examples=250,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

VALID_TEXT = """\
name = "fuzz"
description = "a valid scenario the fuzzer mutates"
kernel = "seed"

[machine]
hafdbs = 2
ha = true
hd = true
ipa_bits = 40
granule = "4K"
tlb = true

[[map]]
ipa = 0x8000_0000
pa = 0x4000_0000
size = "4K"
s2ap = "rw"
af = false
dbm = true
count = 4

[[map]]
ipa = 0x8020_0000
pa = 0x4020_0000
size = "2M"

[[actor]]
name = "vcpu0"
kind = "vcpu"
do = ["read 0x8000_0000", "write 0x8000_1008"]
tlb = [0x8000_0000]

[[actor]]
name = "host0"
kind = "host"
do = ["set_readonly 0x8000_0000", "wp 0x8000_0000 16K", "age 0x8020_0000 2M", "flush_tlb"]

[expect]
always = ["0x8000_0000: valid=1 pa=0x4000_0000"]
sometimes = ["0x8000_0000: af=1 s2ap=ro", "0x8020_0000: af=1 dbm=0"]
never = ["0x8000_0000: raw=0x0"]
violations = ["no_lost_update"]
"""

VALID_DOC = {
    "name": "fuzz",
    "description": "a valid scenario the fuzzer mutates",
    "kernel": "seed",
    "machine": {"hafdbs": 2, "ha": True, "hd": True, "ipa_bits": 40, "granule": "4K", "tlb": True},
    "map": [
        {
            "ipa": 0x8000_0000,
            "pa": 0x4000_0000,
            "size": "4K",
            "s2ap": "rw",
            "af": False,
            "dbm": True,
            "count": 4,
        },
        {"ipa": 0x8020_0000, "pa": 0x4020_0000, "size": "2M"},
    ],
    "actor": [
        {
            "name": "vcpu0",
            "kind": "vcpu",
            "do": ["read 0x8000_0000", "write 0x8000_1008"],
            "tlb": [0x8000_0000],
        },
        {
            "name": "host0",
            "kind": "host",
            "do": ["set_readonly 0x8000_0000", "wp 0x8000_0000 16K", "age 0x8020_0000 2M"],
        },
    ],
    "expect": {
        "always": ["0x8000_0000: valid=1 pa=0x4000_0000"],
        "sometimes": ["0x8000_0000: af=1 s2ap=ro"],
        "never": ["0x8000_0000: raw=0x0"],
        "violations": ["no_lost_update"],
    },
}


# --- a tiny TOML writer (inline tables for everything nested) ---------------------------


def toml_string(s: str) -> str:
    out = []
    for c in s:
        if c == '"':
            out.append('\\"')
        elif c == "\\":
            out.append("\\\\")
        elif ord(c) < 0x20 or ord(c) == 0x7F:
            out.append(f"\\u{ord(c):04x}")
        else:
            out.append(c)
    return '"' + "".join(out) + '"'


def toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, Huge):
        return v.literal
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        return repr(v)
    if isinstance(v, str):
        return toml_string(v)
    if isinstance(v, (datetime.date, datetime.time)):
        return v.isoformat()
    if isinstance(v, list):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{toml_string(k)} = {toml_value(x)}" for k, x in v.items()) + "}"
    raise TypeError(type(v))


def toml_document(doc: dict) -> str:
    return "".join(f"{toml_string(k)} = {toml_value(v)}\n" for k, v in doc.items())


def test_writer_round_trips_the_valid_document():
    sc = parse_scenario(toml_document(VALID_DOC), PATH)
    assert sc.machine.hd and sc.maps[0].count == 4
    assert parse_scenario(VALID_TEXT, PATH).actors[1].ops[-1].name == "flush_tlb"


# --- strategies -------------------------------------------------------------------------

INTERESTING_INTS = [
    0,
    1,
    -1,
    2,
    3,
    31,
    32,
    40,
    48,
    49,
    4095,
    4096,
    0x1000,
    0x20_0000,
    0x4000_0000,
    0x8000_0000,
    0x8000_0800,
    0x8000_1000,
    (1 << 40) - 4096,
    1 << 40,
    1 << 48,
    1 << 63,
    1 << 64,
    MAX_LEAVES,
    MAX_LEAVES + 1,
]


class Huge:
    """An integer literal too long for str()/repr() once parsed (Python's 4300-digit limit);
    TOML allows it in hex. Kept as text so Hypothesis can print the example."""

    def __init__(self, literal: str):
        self.literal = literal

    def __repr__(self) -> str:
        return f"Huge({self.literal[:12]}...)"


HUGE = [Huge("0x" + "f" * 5000), Huge("0x1" + "0" * 5000)]
WORDS = [
    *KERNELS,
    *VCPU_OPS,
    *HOST_OPS,
    *CHECKS,
    *S2AP_NAMES,
    *PREDICATE_FIELDS,
    "4K",
    "2M",
    "1G",
    "4G",
    "64K",
    "vcpu",
    "host",
    "vcpu0",
    "host0",
    "",
    " ",
    ":",
    "=",
    ",",
    "\n",
]

ints = st.one_of(st.sampled_from(INTERESTING_INTS), st.integers(), st.integers(-(2**70), 2**70))
huge_or_ints = st.one_of(ints, st.sampled_from(HUGE))
number_tokens = st.one_of(
    ints.map(str),
    ints.filter(lambda i: i >= 0).map(hex),
    ints.filter(lambda i: i >= 0).map(lambda i: f"0x{i:_x}"),
    st.sampled_from(["0x", "0x_1", "1__0", "4KB", "-0x10", "0x8000_0000_", "١٢", "1e3", "+4"]),
    st.sampled_from(["0x" + "f" * 5000, "9" * 5000, "1" * 70]),
    st.text(max_size=8),
)
scalars = st.one_of(
    huge_or_ints,
    st.booleans(),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(WORDS),
    st.text(max_size=20),
    st.dates(),
    st.times(),
    st.datetimes(),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=8,
)


@st.composite
def op_strings(draw) -> str:
    """Op strings near the grammar: real or junk names, 0-3 number-ish args, odd spacing."""
    name = draw(st.one_of(st.sampled_from(sorted(OP_ARGS)), st.sampled_from(WORDS)))
    args = draw(st.lists(st.one_of(number_tokens, st.sampled_from(WORDS)), max_size=3))
    sep = draw(st.sampled_from([" ", "  ", "\t", " \n "]))
    return sep.join([name, *args])


@st.composite
def predicate_strings(draw) -> str:
    ipa = draw(number_tokens)
    fields = draw(
        st.lists(
            st.tuples(
                st.one_of(st.sampled_from(PREDICATE_FIELDS), st.sampled_from(WORDS)),
                st.one_of(number_tokens, st.sampled_from(WORDS)),
            ),
            max_size=3,
        )
    )
    colon = draw(st.sampled_from([":", ": ", " ", "::"]))
    return ipa + colon + " ".join(f"{k}={v}" for k, v in fields)


def paths(doc, prefix=()):
    """Every (path, container) inside a nested document."""
    yield prefix
    if isinstance(doc, dict):
        for k, v in doc.items():
            yield from paths(v, (*prefix, k))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            yield from paths(v, (*prefix, i))


def get(doc, path):
    for p in path:
        doc = doc[p]
    return doc


@st.composite
def mutated_documents(draw) -> dict:
    doc = json.loads(json.dumps(VALID_DOC))  # deep copy
    for _ in range(draw(st.integers(1, 4))):
        all_paths = [p for p in paths(doc) if p]
        kind = draw(st.sampled_from(["replace", "delete", "add", "op", "predicate", "number"]))
        if kind == "op":
            actors = doc.get("actor")
            if isinstance(actors, list) and actors and isinstance(actors[0], dict):
                actor = actors[draw(st.integers(0, len(actors) - 1))]
                if isinstance(actor, dict):
                    actor["do"] = draw(st.lists(op_strings(), min_size=1, max_size=4))
            continue
        if kind == "predicate":
            expect = doc.get("expect")
            if isinstance(expect, dict):
                key = draw(st.sampled_from(["always", "sometimes", "never"]))
                expect[key] = draw(st.lists(predicate_strings(), max_size=3))
            continue
        if not all_paths:
            doc = draw(values) if kind == "replace" else doc
            if not isinstance(doc, dict):
                doc = {"value": doc}
            continue
        path = draw(st.sampled_from(all_paths))
        parent = get(doc, path[:-1])
        if kind == "replace":
            parent[path[-1]] = draw(values)
        elif kind == "number":
            parent[path[-1]] = draw(huge_or_ints)
        elif kind == "delete":
            del parent[path[-1]]
        elif isinstance(parent, dict):
            parent[draw(st.one_of(st.sampled_from(WORDS), st.text(max_size=6)))] = draw(values)
        else:
            parent.append(draw(values))
    return doc


@st.composite
def mutated_texts(draw) -> str:
    """Line-level damage to the valid text: delete, duplicate, swap, retoken."""
    lines = VALID_TEXT.splitlines()
    for _ in range(draw(st.integers(1, 4))):
        if not lines:
            break
        i = draw(st.integers(0, len(lines) - 1))
        kind = draw(st.sampled_from(["delete", "duplicate", "swap", "token", "value"]))
        if kind == "delete":
            del lines[i]
        elif kind == "duplicate":
            lines.insert(i, lines[i])
        elif kind == "swap":
            j = draw(st.integers(0, len(lines) - 1))
            lines[i], lines[j] = lines[j], lines[i]
        elif kind == "token":
            words = lines[i].split(" ")
            k = draw(st.integers(0, len(words) - 1))
            words[k] = draw(st.one_of(number_tokens, st.sampled_from(WORDS), st.text(max_size=6)))
            lines[i] = " ".join(words)
        else:
            key = lines[i].partition("=")[0].strip() or "x"
            value = draw(
                st.one_of(
                    values.map(toml_value),
                    op_strings().map(lambda s: toml_value([s])),
                    predicate_strings().map(lambda s: toml_value([s])),
                )
            )
            lines[i] = f"{key} = {value}"
    return "\n".join(lines) + "\n"


# --- properties -------------------------------------------------------------------------


def check_parse(text: str) -> Scenario | None:
    try:
        sc = parse_scenario(text, PATH)
    except ScenarioError as e:
        message = str(e)
        assert message.startswith(PATH + ": "), message
        assert len(message.splitlines()) == 1, message
        assert message == f"{PATH}: {e.where}: {e.message}"
        return None
    check_invariants(sc)
    return sc


def check_invariants(sc: Scenario) -> None:
    """What any accepted scenario guarantees the engine."""
    m = sc.machine
    assert sc.kernel in KERNELS and sc.name.strip()
    assert m.hafdbs in (0, 1, 2) and 32 <= m.ipa_bits <= 48 and m.granule == "4K"
    assert not m.hd or m.hafdbs == 2
    assert not m.ha or m.hafdbs >= 1
    assert sum(mp.count for mp in sc.maps) <= MAX_LEAVES
    spans = sorted((mp.ipa, mp.end) for mp in sc.maps)
    for (_, end), (start, _) in zip(spans, spans[1:], strict=False):
        assert end <= start
    for mp in sc.maps:
        assert mp.size in (1 << 12, 1 << 21, 1 << 30) and mp.count >= 1
        assert mp.ipa % mp.size == 0 and mp.pa % mp.size == 0
        assert mp.end <= 1 << m.ipa_bits and mp.pa + mp.size * mp.count <= 1 << 48
        assert mp.s2ap in S2AP_NAMES
    assert sc.actors
    assert len({a.name for a in sc.actors}) == len(sc.actors)
    for a in sc.actors:
        assert a.ops
        allowed = VCPU_OPS if a.kind == "vcpu" else HOST_OPS
        for op in a.ops:
            assert op.name in allowed
            if op.ipa is not None:
                assert 0 <= op.ipa < 1 << m.ipa_bits
            if op.size is not None:
                assert op.size > 0 and op.size % 4096 == 0 and op.ipa + op.size <= 1 << m.ipa_bits
        assert not a.tlb or a.kind == "vcpu"
        assert all(sc.leaf_at(ipa) is not None for ipa in a.tlb)
    if sc.expect is not None:
        preds = sc.expect.always + sc.expect.sometimes + sc.expect.never
        assert all(sc.leaf_at(p.ipa) is not None and p.fields for p in preds)
        assert all(v in CHECKS for v in sc.expect.violations or ())


@FUZZ
@given(st.text(max_size=400))
def test_arbitrary_text(text):
    check_parse(text)


TOML_ALPHABET = st.sampled_from(list("[]{}=\"'#.,:_-+ \n\t0123456789abcdefxKMGnaeiktu\\"))


@FUZZ
@given(st.lists(st.one_of(TOML_ALPHABET, st.sampled_from(WORDS)), max_size=60).map("".join))
def test_toml_like_text(text):
    check_parse(text)


@FUZZ
@given(mutated_documents())
def test_structured_mutations(doc):
    check_parse(toml_document(doc))


@FUZZ
@given(mutated_texts())
def test_line_mutations(text):
    check_parse(text)


@FUZZ
@given(st.lists(op_strings(), min_size=1, max_size=5), st.sampled_from(["vcpu", "host"]))
def test_random_op_strings(ops, kind):
    doc = json.loads(json.dumps(VALID_DOC))
    doc["actor"] = [{"name": "a", "kind": kind, "do": ops}]
    sc = check_parse(toml_document(doc))
    if sc is not None:
        assert [op.text for op in sc.actors[0].ops] == [op.strip() for op in ops]


@FUZZ
@given(st.lists(predicate_strings(), min_size=1, max_size=3))
def test_random_predicates(preds):
    doc = json.loads(json.dumps(VALID_DOC))
    doc["expect"] = {"always": preds}
    check_parse(toml_document(doc))
