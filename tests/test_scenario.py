"""Scenario files, as SCENARIOS.md defines them: what parses, its defaults, and every way a
file can be wrong (one line naming the file and the key, value or line at fault)."""

from pathlib import Path

import pytest

from engine.scenario import (
    CHECKS,
    HOST_OPS,
    KERNELS,
    VCPU_OPS,
    Expect,
    MachineConfig,
    Mapping,
    Op,
    ScenarioError,
    load_scenario,
    parse_predicate,
    parse_scenario,
    parse_size,
)

SHARED_SCENARIOS = Path(__file__).resolve().parents[1].parent / "shared" / "scenarios"

HEAD = 'name = "test"\nkernel = "seed"\n'
MAP = "[[map]]\nipa = 0x8000_0000\npa = 0x4000_0000\n"
VCPU = '[[actor]]\nname = "vcpu0"\nkind = "vcpu"\ndo = ["read 0x8000_0000"]\n'
HOST = '[[actor]]\nname = "host0"\nkind = "host"\ndo = ["set_readonly 0x8000_0000"]\n'
MINIMAL = HEAD + MAP + VCPU + HOST


def host(*ops: str, extra: str = "") -> str:
    """A host actor running `ops`."""
    listed = ", ".join(f'"{op}"' for op in ops)
    return f'[[actor]]\nname = "h"\nkind = "host"\ndo = [{listed}]\n{extra}'


def vcpu(*ops: str, extra: str = "") -> str:
    listed = ", ".join(f'"{op}"' for op in ops)
    return f'[[actor]]\nname = "v"\nkind = "vcpu"\ndo = [{listed}]\n{extra}'


def load(tmp_path: Path, text: str):
    path = tmp_path / "case.toml"
    path.write_text(text, encoding="utf-8")
    return load_scenario(path)


def error(tmp_path: Path, text: str) -> ScenarioError:
    """The ScenarioError loading `text` raises; checks it is one line naming the file."""
    path = tmp_path / "case.toml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ScenarioError) as info:
        load_scenario(path)
    e = info.value
    assert str(e).startswith(f"{path}: {e.where}: ")
    assert len(str(e).splitlines()) == 1
    assert e.path == str(path)
    return e


# --- the shared scenarios ---------------------------------------------------------------


def shared_files() -> list[Path]:
    if not SHARED_SCENARIOS.is_dir():
        return []
    return sorted(SHARED_SCENARIOS.glob("*.toml"))


@pytest.mark.skipif(
    not SHARED_SCENARIOS.is_dir(), reason=f"shared scenarios not present at {SHARED_SCENARIOS}"
)
@pytest.mark.parametrize("path", shared_files(), ids=lambda p: p.name)
def test_shared_scenarios_parse(path):
    sc = load_scenario(path)
    assert sc.path == str(path)
    assert sc.kernel in KERNELS
    assert sc.actors


@pytest.mark.skipif(
    not (SHARED_SCENARIOS / "seed_race_v4.6.toml").is_file(), reason="seed_race_v4.6.toml absent"
)
def test_shared_v46_race_is_the_what_if_with_ha_forced_on():
    sc = load_scenario(SHARED_SCENARIOS / "seed_race_v4.6.toml")
    assert sc.kernel == "v4.6"
    assert sc.machine == MachineConfig(
        hafdbs=1, ha=True, hd=False, ipa_bits=40, granule="4K", tlb=True
    )
    assert sc.maps == (
        Mapping(
            ipa=0x8000_0000, pa=0x4000_0000, size=4096, s2ap="rw", af=False, dbm=False, count=1
        ),
    )
    assert [(a.name, a.kind) for a in sc.actors] == [("vcpu0", "vcpu"), ("host0", "host")]
    assert sc.actors[1].ops == (Op("set_readonly", 0x8000_0000, None, "set_readonly 0x8000_0000"),)
    assert sc.expect.violations == ("no_lost_update",)
    assert [p.text for p in sc.expect.sometimes] == ["0x8000_0000: af=0", "0x8000_0000: af=1"]


@pytest.mark.skipif(
    not (SHARED_SCENARIOS / "seed_race_seed.toml").is_file(), reason="seed_race_seed.toml absent"
)
def test_shared_seed_race_gets_ha_from_the_kernel_default():
    sc = load_scenario(SHARED_SCENARIOS / "seed_race_seed.toml")
    assert sc.machine.ha is True
    assert sc.expect.violations == ()
    assert sc.expect.always[0].fields == (("af", 1), ("s2ap", "ro"))


# --- defaults ---------------------------------------------------------------------------


def test_minimal_scenario_defaults(tmp_path):
    sc = load(tmp_path, MINIMAL)
    assert sc.name == "test"
    assert sc.description == ""
    assert sc.machine == MachineConfig(
        hafdbs=1, ha=True, hd=False, ipa_bits=40, granule="4K", tlb=True
    )
    assert sc.maps == (
        Mapping(ipa=0x8000_0000, pa=0x4000_0000, size=4096, s2ap="rw", af=True, dbm=False, count=1),
    )
    assert sc.actors[0].tlb == ()
    assert sc.expect is None


@pytest.mark.parametrize(
    ("kernel", "hafdbs", "ha"),
    [
        ("v4.6", 0, False),
        ("v4.6", 1, False),  # v4.6 never programs VTCR_EL2.HA
        ("v4.6", 2, False),
        ("seed", 0, False),
        ("seed", 1, True),  # seed programs HA when HAFDBS >= 1
        ("seed", 2, True),
        ("v6.6", 0, False),
        ("v6.6", 1, True),
    ],
)
def test_ha_defaults_to_what_the_kernel_programs(tmp_path, kernel, hafdbs, ha):
    text = f'name = "t"\nkernel = "{kernel}"\n[machine]\nhafdbs = {hafdbs}\n' + MAP + VCPU
    sc = load(tmp_path, text)
    assert sc.machine.ha is ha
    assert sc.machine.hd is False


def test_explicit_what_ifs_are_kept(tmp_path):
    text = HEAD.replace("seed", "v4.6") + "[machine]\nhafdbs = 2\nha = true\nhd = true\n"
    text += "ipa_bits = 48\ntlb = false\n" + MAP + VCPU
    assert load(tmp_path, text).machine == MachineConfig(2, True, True, 48, "4K", False)


def test_ha_can_be_turned_off_explicitly(tmp_path):
    assert not load(tmp_path, HEAD + "[machine]\nha = false\n" + MAP + VCPU).machine.ha


def test_map_is_optional(tmp_path):
    sc = load(tmp_path, HEAD + host("flush_tlb"))
    assert sc.maps == ()


def test_map_sizes_and_count(tmp_path):
    text = HEAD + (
        '[[map]]\nipa = 0x4000_0000\npa = 0x8000_0000\nsize = "1G"\n'
        '[[map]]\nipa = 0x8000_0000\npa = 0x4000_0000\nsize = "2M"\ncount = 3\n'
        's2ap = "ro"\naf = false\ndbm = true\n'
        '[[map]]\nipa = 0x9000_0000\npa = 0x1000\nsize = "4K"\n'
    )
    sc = load(tmp_path, text + VCPU)
    gig, blocks, page = sc.maps
    assert (gig.size, gig.level) == (1 << 30, 1)
    assert (blocks.size, blocks.level, blocks.count) == (2 << 20, 2, 3)
    assert (blocks.s2ap, blocks.af, blocks.dbm) == ("ro", False, True)
    assert blocks.end == 0x8060_0000
    assert list(blocks.leaves()) == [
        (0x8000_0000, 0x4000_0000),
        (0x8020_0000, 0x4020_0000),
        (0x8040_0000, 0x4040_0000),
    ]
    assert (page.size, page.level) == (4096, 3)
    assert blocks.leaf_at(0x8045_6789) == (0x8040_0000, 0x4040_0000)
    assert blocks.leaf_at(0x8060_0000) is None
    assert sc.leaf_at(0x8021_0000) == (0x8020_0000, blocks)
    assert sc.leaf_at(0x9000_0FFF) == (0x9000_0000, page)
    assert sc.leaf_at(0x9000_1000) is None
    assert sc.leaf_count == 5


def test_adjacent_maps_of_different_sizes_do_not_overlap(tmp_path):
    text = HEAD + MAP + '[[map]]\nipa = 0x8020_0000\npa = 0x4020_0000\nsize = "2M"\n'
    text += "[[map]]\nipa = 0x8000_1000\npa = 0x4000_1000\ncount = 511\n"
    assert len(load(tmp_path, text + VCPU).maps) == 3


def test_ops_parse_into_name_ipa_size(tmp_path):
    text = HEAD + MAP + vcpu("read 0x8000_0123", "write 2147483648")
    text += host(
        "set_readonly 0x8000_0000",
        "wp 0x8000_0000 4G",
        "age 0x8000_0000",
        "age   0x8000_0000   2M ",
        "test_age 0x8000_0000",
        "unmap 0x8000_0000 0x2000",
        "flush_tlb",
    ).replace('name = "h"', 'name = "h0"')
    v, h = load(tmp_path, text).actors
    assert v.ops == (
        Op("read", 0x8000_0123, None, "read 0x8000_0123"),
        Op("write", 0x8000_0000, None, "write 2147483648"),
    )
    assert [(o.name, o.ipa, o.size) for o in h.ops] == [
        ("set_readonly", 0x8000_0000, None),
        ("wp", 0x8000_0000, 4 << 30),
        ("age", 0x8000_0000, None),
        ("age", 0x8000_0000, 2 << 20),
        ("test_age", 0x8000_0000, None),
        ("unmap", 0x8000_0000, 0x2000),
        ("flush_tlb", None, None),
    ]
    assert h.ops[3].text == "age   0x8000_0000   2M"


def test_vcpu_tlb_preload(tmp_path):
    text = HEAD + MAP + vcpu("read 0x8000_0000", extra="tlb = [0x8000_0000, 0x8000_0fff]\n")
    assert load(tmp_path, text).actors[0].tlb == (0x8000_0000, 0x8000_0FFF)


def test_expect_lists_default_empty_and_violations_absent_is_none(tmp_path):
    sc = load(tmp_path, MINIMAL + '[expect]\nnever = ["0x8000_0000: valid=0"]\n')
    assert sc.expect == Expect(always=(), sometimes=(), never=sc.expect.never, violations=None)
    assert sc.expect.never[0].fields == (("valid", 0),)


def test_expect_violations_listed(tmp_path):
    text = MINIMAL + '[expect]\nviolations = ["break_before_make", "no_lost_update"]\n'
    assert load(tmp_path, text).expect.violations == ("break_before_make", "no_lost_update")
    assert set(CHECKS) == {"no_lost_update", "break_before_make", "no_lost_dirty"}


def test_parse_scenario_names_the_string_by_default():
    with pytest.raises(ScenarioError) as info:
        parse_scenario("name = 1")
    assert str(info.value).startswith("<string>: name: ")


def test_bom_is_ignored(tmp_path):
    path = tmp_path / "bom.toml"
    path.write_bytes(b"\xef\xbb\xbf" + MINIMAL.encode())
    assert load_scenario(path).name == "test"


def test_scenario_error_fields():
    e = ScenarioError("f.toml", "machine.hd", "hd = true needs hafdbs = 2")
    assert (e.path, e.where, e.message) == ("f.toml", "machine.hd", "hd = true needs hafdbs = 2")
    assert str(e) == "f.toml: machine.hd: hd = true needs hafdbs = 2"


def test_scenario_error_never_spans_lines():
    assert str(ScenarioError("f", "w", "a\nb\u2028c")).count("\n") == 0


# --- parse_size and predicates ------------------------------------------------------------


@pytest.mark.parametrize(
    ("token", "size"),
    [
        ("4K", 4096),
        ("2M", 2 << 20),
        ("1G", 1 << 30),
        ("4G", 4 << 30),
        ("0x2000", 0x2000),
        ("0x20_0000", 2 << 20),
        ("8192", 8192),
        ("1_048_576", 1 << 20),
    ],
)
def test_parse_size(token, size):
    assert parse_size(token) == size


@pytest.mark.parametrize("token", ["", "4KB", "K", "-4K", "0x", "1__0", "_1", "4.0K", "0x4G", "٤K"])
def test_parse_size_rejects(token):
    with pytest.raises(ValueError):
        parse_size(token)


def test_predicate_fields_are_normalised():
    p = parse_predicate(
        "0x8000_0000: valid=1 af=0 dbm=1 s2ap=wo pa=0x4000_0000 raw=0x400007FF", "f", "w"
    )
    assert p.ipa == 0x8000_0000
    assert p.fields == (
        ("valid", 1),
        ("af", 0),
        ("dbm", 1),
        ("s2ap", "wo"),
        ("pa", 0x4000_0000),
        ("raw", 0x400007FF),
    )


def test_predicate_holds_on_leaf_dicts():
    p = parse_predicate("0x8000_0000: af=1 s2ap=ro pa=0x40000000", "f", "w")
    leaf = {"valid": 1, "af": 1, "dbm": 0, "s2ap": "ro", "pa": 0x4000_0000, "raw": 0x4000_07DF}
    assert p.holds(leaf)
    assert not p.holds({**leaf, "af": 0})
    assert not p.holds({**leaf, "s2ap": "rw"})
    assert p.holds({**leaf, "af": True, "pa": "0x40000000"})  # JSON-style leaves work too


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("0x8000_0000 af=1", "no ':'"),
        ("0x8000_0000:", "no fields"),
        ("0x8000_0000:   ", "no fields"),
        ("zz: af=1", "bad IPA"),
        (": af=1", "bad IPA"),
        ("0x8000_0000: young=1", "unknown field 'young'"),
        ("0x8000_0000: dirty=2", "dirty must be 0 or 1"),
        ("0x8000_0000: size=8K", "size must be one of 4K, 2M, 1G"),
        ("0x8000_0000: af", "expected field=value"),
        ("0x8000_0000: af=", "expected field=value"),
        ("0x8000_0000: =1", "expected field=value"),
        ("0x8000_0000: af=2", "af must be 0 or 1"),
        ("0x8000_0000: valid=yes", "valid must be 0 or 1"),
        ("0x8000_0000: dbm=true", "dbm must be 0 or 1"),
        ("0x8000_0000: s2ap=RW", "s2ap must be one of none, ro, wo, rw"),
        ("0x8000_0000: pa=abc", "pa must be a hex integer"),
        ("0x8000_0000: pa=0x1_0000_0000_0000", "does not fit in 48 bits"),
        ("0x8000_0000: raw=0x1_0000_0000_0000_0000", "does not fit in 64 bits"),
        ("0x8000_0000: af=1 af=0", "given twice"),
    ],
)
def test_bad_predicates(text, fragment):
    with pytest.raises(ScenarioError) as info:
        parse_predicate(text, "case.toml", "expect.always[0]")
    message = str(info.value)
    assert message.startswith("case.toml: expect.always[0]: predicate ")
    assert repr(text) in message
    assert fragment in message


# --- errors -------------------------------------------------------------------------------

ERRORS = [
    # (id, text, where, fragment of the message)
    # document
    ("toml-syntax", HEAD + "[[map]]\nipa = = 1\n" + VCPU, "line 4", "invalid TOML"),
    ("toml-end", HEAD + MAP + VCPU + "kind =", "line 10", "invalid TOML"),
    ("toml-redefined", HEAD + 'name = "again"\n' + MAP + VCPU, "line 3", "invalid TOML"),
    ("toml-deep", "a = " + "[" * 5000, "line 1", "nested too deeply"),
    ("toml-huge-int", HEAD + "\nx = 1" + "0" * 5000, "line 4", "too long"),
    ("top-unknown", MINIMAL.replace("kernel", 'colour = "red"\nkernel'), "colour", "unknown key"),
    ("name-missing", 'kernel = "seed"\n' + MAP + VCPU, "name", "required key 'name'"),
    ("name-type", 'name = 1\nkernel = "seed"\n' + MAP + VCPU, "name", "must be a string"),
    ("name-empty", 'name = " "\nkernel = "seed"\n' + MAP + VCPU, "name", "must not be empty"),
    ("description-type", "description = 3\n" + MINIMAL, "description", "must be a string"),
    ("kernel-missing", 'name = "t"\n' + MAP + VCPU, "kernel", "required key 'kernel'"),
    ("kernel-unknown", MINIMAL.replace('"seed"', '"v5.10"'), "kernel", "unknown kernel 'v5.10'"),
    ("machine-type", "machine = 1\n" + MINIMAL, "machine", "must be a table"),
    ("map-type", "map = 1\n" + HEAD + VCPU, "map", "must be an array"),
    ("actor-missing", HEAD + MAP, "actor", "at least one [[actor]]"),
    ("actor-empty", "actor = []\n" + HEAD + MAP, "actor", "at least one [[actor]]"),
    ("actor-type", "actor = 1\n" + HEAD + MAP, "actor", "must be an array"),
    ("expect-type", "expect = 1\n" + MINIMAL, "expect", "must be a table"),
    # [machine]
    ("machine-unknown", HEAD + "[machine]\nvhe = true\n" + MAP + VCPU, "machine.vhe", "unknown key 'vhe'"),
    ("hafdbs-bool", HEAD + "[machine]\nhafdbs = true\n" + MAP + VCPU, "machine.hafdbs", "must be an integer, got a boolean"),
    ("hafdbs-range", HEAD + "[machine]\nhafdbs = 3\n" + MAP + VCPU, "machine.hafdbs", "must be 0, 1 or 2"),
    ("ha-type", HEAD + '[machine]\nha = "yes"\n' + MAP + VCPU, "machine.ha", "must be a boolean"),
    ("ha-without-hafdbs", HEAD + "[machine]\nhafdbs = 0\nha = true\n" + MAP + VCPU, "machine.ha", "ha = true needs hafdbs >= 1"),
    ("hd-without-hafdbs-2", HEAD + "[machine]\nhd = true\n" + MAP + VCPU, "machine.hd", "hd = true needs hafdbs = 2"),
    ("hd-type", HEAD + "[machine]\nhd = 1\n" + MAP + VCPU, "machine.hd", "must be a boolean"),
    ("ipa-bits-low", HEAD + "[machine]\nipa_bits = 31\n" + MAP + VCPU, "machine.ipa_bits", "must be in 32..48"),
    ("ipa-bits-high", HEAD + "[machine]\nipa_bits = 49\n" + MAP + VCPU, "machine.ipa_bits", "must be in 32..48"),
    ("ipa-bits-float", HEAD + "[machine]\nipa_bits = 40.0\n" + MAP + VCPU, "machine.ipa_bits", "must be an integer, got a float"),
    ("granule-64k", HEAD + '[machine]\ngranule = "64K"\n' + MAP + VCPU, "machine.granule", "only the 4K granule is modelled"),
    ("granule-type", HEAD + "[machine]\ngranule = 4096\n" + MAP + VCPU, "machine.granule", "must be a string"),
    ("tlb-type", HEAD + '[machine]\ntlb = "on"\n' + MAP + VCPU, "machine.tlb", "must be a boolean"),
    # [[map]]
    ("map-unknown", HEAD + MAP + "attr = 1\n" + VCPU, "map[0].attr", "unknown key 'attr'"),
    ("map-not-table", "map = [1]\n" + HEAD + VCPU, "map[0]", "must be a table"),
    ("map-ipa-missing", HEAD + "[[map]]\npa = 0\n" + VCPU, "map[0].ipa", "required key 'ipa'"),
    ("map-pa-missing", HEAD + "[[map]]\nipa = 0\n" + VCPU, "map[0].pa", "required key 'pa'"),
    ("map-ipa-string", HEAD + '[[map]]\nipa = "x"\npa = 0\n' + VCPU, "map[0].ipa", "must be an integer, got a string 'x'"),
    ("map-ipa-negative", HEAD + "[[map]]\nipa = -4096\npa = 0\n" + VCPU, "map[0].ipa", "must be >= 0"),
    ("map-size-8k", HEAD + MAP + 'size = "8K"\n' + VCPU, "map[0].size", 'must be one of 4K, 2M, 1G'),
    ("map-size-int", HEAD + MAP + "size = 4096\n" + VCPU, "map[0].size", "must be a string"),
    ("map-ipa-unaligned", HEAD + "[[map]]\nipa = 0x8000_0800\npa = 0\n" + VCPU, "map[0].ipa", "0x80000800 is not aligned to size 4K"),
    ("map-ipa-unaligned-2m", HEAD + "[[map]]\nipa = 0x8010_0000\npa = 0\nsize = \"2M\"\n" + VCPU, "map[0].ipa", "0x80100000 is not aligned to size 2M"),
    ("map-pa-unaligned-1g", HEAD + "[[map]]\nipa = 0\npa = 0x4020_0000\nsize = \"1G\"\n" + VCPU, "map[0].pa", "not aligned to size 1G"),
    ("map-pa-unaligned", HEAD + "[[map]]\nipa = 0\npa = 0x10\n" + VCPU, "map[0].pa", "0x10 is not aligned to size 4K"),
    ("map-ipa-beyond", HEAD + "[machine]\nipa_bits = 32\n" + MAP.replace("0x8000_0000", "0x1_0000_0000") + VCPU, "map[0].ipa", "beyond ipa_bits = 32"),
    ("map-count-beyond", HEAD + "[machine]\nipa_bits = 32\n[[map]]\nipa = 0xffff_f000\npa = 0\ncount = 2\n" + VCPU, "map[0].ipa", "2 x 4K from 0xfffff000 ends at 0x100001000"),
    ("map-pa-beyond", HEAD + "[[map]]\nipa = 0\npa = 0xffff_ffff_f000\ncount = 2\n" + VCPU, "map[0].pa", "beyond 48-bit physical addresses"),
    ("map-count-zero", HEAD + MAP + "count = 0\n" + VCPU, "map[0].count", "must be >= 1"),
    ("map-count-type", HEAD + MAP + 'count = "2"\n' + VCPU, "map[0].count", "must be an integer"),
    ("map-too-many-leaves", HEAD + MAP + "count = 4194305\n" + VCPU, "map[0].count", "limit is 4194304 (2**22) leaves"),
    ("map-too-many-in-all", HEAD + MAP + "count = 4194304\n[[map]]\nipa = 0\npa = 0\n" + VCPU, "map[1].count", "too many leaves"),
    ("map-s2ap", HEAD + MAP + 's2ap = "rwx"\n' + VCPU, "map[0].s2ap", "unknown s2ap 'rwx'"),
    ("map-af-type", HEAD + MAP + "af = 1\n" + VCPU, "map[0].af", "must be a boolean"),
    ("map-dbm-type", HEAD + MAP + 'dbm = "no"\n' + VCPU, "map[0].dbm", "must be a boolean"),
    ("map-overlap-same", HEAD + MAP + MAP.replace("0x4000_0000", "0x5000_0000") + VCPU, "map[1].ipa", "overlaps map[0]"),
    ("map-overlap-block-over-page", HEAD + MAP + MAP.replace("0x4000_0000", "0x4020_0000") + 'size = "2M"\n' + VCPU, "map[1].ipa", "0x80000000..0x801fffff overlaps map[0] (0x80000000..0x80000fff)"),
    ("map-overlap-page-in-block", HEAD + MAP.replace("0x8000_0000", "0x9000_0000") + MAP + 'size = "2M"\n' + "[[map]]\nipa = 0x8010_0000\npa = 0\n" + VCPU, "map[2].ipa", "overlaps map[1]"),
    ("map-overlap-count", HEAD + MAP + "count = 3\n" + "[[map]]\nipa = 0x8000_2000\npa = 0\n" + VCPU, "map[1].ipa", "overlaps map[0] (0x80000000..0x80002fff)"),
    # [[actor]]
    ("actor-unknown", HEAD + MAP + VCPU + "cpu = 1\n", "actor[0].cpu", "unknown key 'cpu'"),
    ("actor-not-table", "actor = [1]\n" + HEAD + MAP, "actor[0]", "must be a table"),
    ("actor-name-missing", HEAD + MAP + '[[actor]]\nkind = "vcpu"\ndo = ["read 0"]\n', "actor[0].name", "required key 'name'"),
    ("actor-name-comma", HEAD + MAP + VCPU.replace("vcpu0", "a,b"), "actor[0].name", "without spaces or commas"),
    ("actor-duplicate", HEAD + MAP + VCPU + HOST.replace("host0", "vcpu0"), "actor[1].name", "duplicate actor name 'vcpu0' (also actor[0])"),
    ("actor-kind", HEAD + MAP + VCPU.replace('"vcpu"\n', '"guest"\n'), "actor[0].kind", "unknown actor kind 'guest'"),
    ("actor-kind-missing", HEAD + MAP + '[[actor]]\nname = "a"\ndo = ["read 0"]\n', "actor[0].kind", "required key 'kind'"),
    ("actor-do-missing", HEAD + MAP + '[[actor]]\nname = "a"\nkind = "vcpu"\n', "actor[0].do", "required key 'do'"),
    ("actor-do-string", HEAD + MAP + '[[actor]]\nname = "a"\nkind = "vcpu"\ndo = "read 0"\n', "actor[0].do", "must be an array"),
    ("actor-do-empty", HEAD + MAP + '[[actor]]\nname = "a"\nkind = "vcpu"\ndo = []\n', "actor[0].do", "at least one operation"),
    ("op-not-string", HEAD + MAP + '[[actor]]\nname = "a"\nkind = "vcpu"\ndo = [1]\n', "actor[0].do[0]", "must be an operation string, got an integer"),
    ("op-empty", HEAD + MAP + vcpu("read 0x8000_0000", "  "), "actor[0].do[1]", "empty operation"),
    ("op-unknown", HEAD + MAP + vcpu("fetch 0x8000_0000"), "actor[0].do[0]", "unknown operation 'fetch'"),
    ("op-host-on-vcpu", HEAD + MAP + vcpu("age 0x8000_0000"), "actor[0].do[0]", "'age' is a host operation; a vcpu actor can do: read, write"),
    ("op-vcpu-on-host", HEAD + MAP + VCPU + host("flush_tlb", "read 0x8000_0000"), "actor[1].do[1]", "'read' is a vcpu operation; a host actor can do: set_readonly"),
    ("op-read-no-ipa", HEAD + MAP + vcpu("read"), "actor[0].do[0]", "wrong number of arguments (usage: read IPA)"),
    ("op-read-extra", HEAD + MAP + vcpu("read 0x8000_0000 4K"), "actor[0].do[0]", "usage: read IPA"),
    ("op-wp-extra", HEAD + MAP + host("wp 0x8000_0000 4K 4K"), "actor[0].do[0]", "usage: wp IPA [SIZE]"),
    ("op-flush-arg", HEAD + MAP + host("flush_tlb 0x8000_0000"), "actor[0].do[0]", "usage: flush_tlb)"),
    ("op-test-age-size", HEAD + MAP + host("test_age 0x8000_0000 4K"), "actor[0].do[0]", "usage: test_age IPA)"),
    ("op-bad-ipa", HEAD + MAP + vcpu("read 0x8000_zz"), "actor[0].do[0]", "read: bad IPA: not an integer: '0x8000_zz'"),
    ("op-negative-ipa", HEAD + MAP + vcpu("read -1"), "actor[0].do[0]", "bad IPA"),
    ("op-ipa-beyond", HEAD + MAP + vcpu("write 0x100_0000_0000"), "actor[0].do[0]", "IPA 0x10000000000 is beyond ipa_bits = 40"),
    ("op-wp-size-not-4k", HEAD + MAP + host("wp 0x8000_0000 0x800"), "actor[0].do[0]", "SIZE '0x800' must be a positive multiple of 4K"),
    ("op-age-size-zero", HEAD + MAP + host("age 0x8000_0000 0"), "actor[0].do[0]", "positive multiple of 4K"),
    ("op-unmap-bad-size", HEAD + MAP + host("unmap 0x8000_0000 lots"), "actor[0].do[0]", "unmap: bad SIZE"),
    ("op-size-beyond", HEAD + MAP + host("wp 0x8000_0000 1024G"), "actor[0].do[0]", "wp: 0x80000000 + 1T ends at 0x10080000000, beyond ipa_bits = 40"),
    ("tlb-on-host", HEAD + MAP + host("flush_tlb", extra="tlb = [0x8000_0000]\n"), "actor[0].tlb", "only a vcpu actor"),
    ("tlb-unmapped", HEAD + MAP + vcpu("read 0x8000_0000", extra="tlb = [0x8000_1000]\n"), "actor[0].tlb[0]", "0x80001000 is not inside any [[map]] leaf"),
    ("tlb-not-int", HEAD + MAP + vcpu("read 0x8000_0000", extra='tlb = ["0x8000_0000"]\n'), "actor[0].tlb[0]", "must be an integer"),
    ("tlb-not-list", HEAD + MAP + vcpu("read 0x8000_0000", extra="tlb = 0x8000_0000\n"), "actor[0].tlb", "must be an array"),
    ("tlb-machine-off", HEAD + "[machine]\ntlb = false\n" + MAP + vcpu("read 0x8000_0000", extra="tlb = [0x8000_0000]\n"), "actor[0].tlb", "needs machine.tlb = true"),
    # [expect]
    ("expect-unknown", MINIMAL + '[expect]\nmaybe = ["0x8000_0000: af=1"]\n', "expect.maybe", "unknown key 'maybe'"),
    ("expect-always-string", MINIMAL + '[expect]\nalways = "0x8000_0000: af=1"\n', "expect.always", "must be an array"),
    ("expect-pred-not-string", MINIMAL + "[expect]\nnever = [1]\n", "expect.never[0]", "must be a string"),
    ("expect-pred-syntax", MINIMAL + '[expect]\nsometimes = ["0x8000_0000: af=1", "0x8000_0000 af=0"]\n', "expect.sometimes[1]", "predicate '0x8000_0000 af=0'"),
    ("expect-pred-field", MINIMAL + '[expect]\nalways = ["0x8000_0000: young=1"]\n', "expect.always[0]", "unknown field 'young'"),
    ("expect-pred-unmapped", MINIMAL + '[expect]\nalways = ["0x8000_1000: af=1"]\n', "expect.always[0]", "IPA 0x80001000 is not inside any [[map]] leaf"),
    ("expect-pred-beyond", MINIMAL + '[expect]\nalways = ["0x1_0000_0000_0000: af=1"]\n', "expect.always[0]", "beyond ipa_bits = 40"),
    ("expect-violation-unknown", MINIMAL + '[expect]\nviolations = ["lost_update"]\n', "expect.violations[0]", "unknown check 'lost_update' (one of: no_lost_update, break_before_make, no_lost_dirty)"),
    ("expect-violation-twice", MINIMAL + '[expect]\nviolations = ["no_lost_update", "no_lost_update"]\n', "expect.violations[1]", "listed twice"),
    ("expect-violations-type", MINIMAL + '[expect]\nviolations = "no_lost_update"\n', "expect.violations", "must be an array"),
    ("expect-violation-type", MINIMAL + "[expect]\nviolations = [true]\n", "expect.violations[0]", "must be a string"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("text", "where", "fragment"), [c[1:] for c in ERRORS], ids=[c[0] for c in ERRORS]
)
def test_errors_name_file_and_key(tmp_path, text, where, fragment):
    e = error(tmp_path, text)
    assert e.where == where, str(e)
    assert fragment in e.message, str(e)


@pytest.mark.parametrize("op", ["set_readonly", "wp", "age", "test_age", "unmap"])
def test_host_ops_need_4k_aligned_ipa(tmp_path, op):
    e = error(tmp_path, HEAD + MAP + host(f"{op} 0x8000_0010"))
    assert e.where == "actor[0].do[0]"
    assert f"{op}: IPA 0x80000010 is not 4K aligned" in e.message


@pytest.mark.parametrize("op", VCPU_OPS)
def test_vcpu_ops_take_any_byte_address(tmp_path, op):
    assert (
        load(tmp_path, HEAD + MAP + vcpu(f"{op} 0x8000_0ffd")).actors[0].ops[0].ipa == 0x8000_0FFD
    )


def test_op_tables_are_the_contract():
    assert VCPU_OPS == ("read", "write")
    assert HOST_OPS == (
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
    assert KERNELS == ("v4.6", "seed", "v6.6", "v6.12")


def test_unknown_keys_are_reported_with_odd_characters_escaped(tmp_path):
    e = error(tmp_path, '"we\\nird" = 1\n' + MINIMAL)
    assert e.where == '"we\\nird"'
    assert "unknown key 'we\\nird'" in e.message


def test_missing_file(tmp_path):
    path = tmp_path / "absent.toml"
    with pytest.raises(ScenarioError) as info:
        load_scenario(path)
    assert str(info.value).startswith(f"{path}: file: cannot read")


def test_not_utf8_names_the_line(tmp_path):
    path = tmp_path / "latin1.toml"
    path.write_bytes(b'name = "t"\nkernel = "seed"\ndescription = "caf\xe9"\n')
    with pytest.raises(ScenarioError) as info:
        load_scenario(path)
    assert str(info.value) == f"{path}: line 3: not valid UTF-8"
