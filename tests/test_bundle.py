"""Bundles (docs/bundle.md): one file reproduces one moment exactly; anything altered,
truncated or foreign is refused with one line naming the field or step at fault."""

import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine import bundle as BD
from engine.history import Runs
from engine.session import LiveSession
from engine.twin import EngineError
from tests.scenario_texts import WP_4M

SCENARIOS = sorted((Path(__file__).resolve().parents[1] / "scenarios").glob("*.toml"))
V46 = (Path(__file__).resolve().parents[1] / "scenarios" / "seed_race_v4.6.toml").read_text()
LOST = ["vcpu0"] * 3 + ["host0"] * 4 + ["vcpu0"] + ["host0"] * 2


def lost_update_session(engine="cython") -> LiveSession:
    s = LiveSession(V46, engine=engine)
    for name in LOST:
        s.step(name)
    return s


def test_path_runs_of_one_actor_are_run_length_encoded():
    path = [["step", 1]] * 5 + [["step", 0], ["inject", 0, "read 0x8000_0000"], ["step", 0]]
    encoded = BD.encode_path(path)
    assert encoded == ["1*5 0", ["inject", 0, "read 0x8000_0000"], "0"]
    assert list(BD.decisions(encoded)) == path


@pytest.mark.parametrize("path", SCENARIOS, ids=lambda p: p.name)
def test_every_example_round_trips_through_a_bundle_to_the_same_state(path):
    live = LiveSession(path.read_text())
    live.run(5000)
    data = BD.dumps(BD.from_session(live))
    again = BD.replay(BD.loads(data))
    assert again.position == live.position
    assert again.state_hash() == live.state_hash()
    assert [list(d) for d in again.decisions] == [list(d) for d in live.decisions]


def test_a_bundle_of_an_earlier_position_replays_to_that_moment_and_leaves_the_session():
    live = lost_update_session()
    live.seek(4)
    at4 = live.state_hash()
    live.seek(10)
    b = BD.from_session(live, position=4, moment="4")
    assert live.position == 10
    s = BD.replay(BD.loads(BD.dumps(b)))
    assert (s.position, s.state_hash()) == (4, at4)
    assert b.moment == "4"


def test_injected_operations_travel_in_the_path():
    live = LiveSession(V46)
    live.step("vcpu0")
    live.inject("host0", "age 0x8000_0000")
    live.run(100)
    b = BD.loads(BD.dumps(BD.from_session(live)))
    assert ["inject", 1, "age 0x8000_0000"] in b.path
    assert BD.replay(b).state_hash() == live.state_hash()


def test_a_cython_bundle_replays_on_the_python_twin():
    live = lost_update_session("cython")
    s = BD.replay(BD.loads(BD.dumps(BD.from_session(live))), engine="python")
    assert s.state_hash() == live.state_hash()
    assert [v["check"] for v in s.violations()] == ["no_lost_update"]


def test_replay_to_a_step_stops_there_verified():
    live = lost_update_session()
    live.seek(6)
    at6 = live.state_hash()
    live.seek(10)
    s = BD.replay(BD.loads(BD.dumps(BD.from_session(live))), to=6)
    assert (s.position, s.state_hash()) == (6, at6)


def test_progress_is_reported_up_to_the_end():
    seen = []
    BD.replay(BD.from_session(lost_update_session()), progress=lambda d, t: seen.append((d, t)))
    assert seen[-1] == (10, 10)


def test_the_file_is_readable_json_with_a_version():
    doc = json.loads(BD.dumps(BD.from_session(lost_update_session())))
    assert doc["format"] == "ptviz-bundle/1"
    assert doc["kernel"] == "v4.6" and doc["actors"] == ["vcpu0", "host0"]
    assert doc["path"] == ["0*3 1*4 0 1*2"]
    assert doc["ptviz"]


# --- refusals -----------------------------------------------------------------------------
def good() -> bytes:
    return BD.dumps(BD.from_session(lost_update_session()))


def edit(data: bytes, fn) -> bytes:
    doc = json.loads(data)
    fn(doc)
    return json.dumps(doc).encode()


def refit(doc):
    """A careful tamperer: recompute the digests so only the replay can tell."""
    doc["digests"] = {k: BD._digest(doc[k]) for k in BD.DIGESTED if k in doc}


def refused(data: bytes) -> str:
    with pytest.raises(BD.BundleError) as exc:
        BD.replay(BD.loads(data))
    message = str(exc.value)
    assert "\n" not in message
    return message


def test_a_truncated_bundle_is_refused_as_truncated():
    data = good()
    assert refused(data[: len(data) // 2]).startswith("truncated: the file ends at byte")


def test_a_foreign_file_is_refused():
    assert refused(b"\x89PNG\r\n\x1a\n").startswith("not a ptviz bundle")
    assert refused(b"[1, 2]") == "not a ptviz bundle: the JSON is not an object"
    rec = json.dumps(lost_update_session().export()).encode()
    assert refused(rec).startswith("format: 'ptviz-recording/1' is not 'ptviz-bundle/1'")


@pytest.mark.parametrize(
    "field,change",
    [
        (
            "scenario",
            lambda d: d.update(scenario=d["scenario"].replace("0x4000_0000", "0x5000_0000")),
        ),
        ("path", lambda d: d.update(path=["0*3 1*3 0 1*2"])),
        ("hashes", lambda d: d["hashes"]["at"][3].__setitem__(1, "0" * 32)),
    ],
)
def test_an_altered_field_is_named_by_its_digest(field, change):
    assert refused(edit(good(), change)) == (
        f"{field}: altered after the bundle was written (digest differs)"
    )


def test_an_altered_hash_names_the_step_and_what_differs():
    def change(d):
        d["hashes"]["at"][7][1] = "0" * 32
        d["hashes"]["at"][7][2] = d["hashes"]["at"][7][2].replace(
            d["hashes"]["at"][7][2][:8], "0" * 8
        )
        refit(d)

    message = refused(edit(good(), change))
    assert message.startswith("step 7: the state hash differs (differs: tables")
    assert message.endswith("step 6 matched)")


def test_an_altered_path_that_still_replays_names_the_first_step_whose_state_differs():
    def change(d):
        d["path"] = ["0*3 1*3 0 1*3"]  # host0's store moved after the vCPU's update
        refit(d)

    message = refused(edit(good(), change))
    assert message.startswith("step 7: the state hash differs")
    assert "vcpu0 pc/registers/monitor" in message or "host0" in message


def test_a_path_step_that_cannot_be_taken_is_named():
    def change(d):
        d["path"] = ["0*3 1*4 0 1*2 0"]
        d["position"] = 11
        d["hashes"]["at"].append([11, "0" * 32, d["hashes"]["at"][-1][2]])
        refit(d)

    assert refused(edit(good(), change)) == "step 11: vcpu0 has finished its operations"


@pytest.mark.parametrize(
    "change,message",
    [
        (lambda d: d.pop("hashes"), "hashes: missing"),
        (lambda d: d.update(extra=1), "extra: unknown field"),
        (lambda d: d.update(kernel="seed"), "kernel: 'seed' does not match the scenario's 'v4.6'"),
        (lambda d: d.update(position=9), "position: 9 but the path has 10 decisions"),
        (lambda d: d.update(path=["0*3 7"]), "path[0]: token 2 '7' is not ACTOR or ACTOR*COUNT"),
        (lambda d: d.update(path=[["inject", 0]]), 'path[0]: not ["inject", ACTOR, "op text"]'),
        (lambda d: d.update(scenario="name = 1"), "scenario: <bundle>"),
    ],
)
def test_structural_faults_name_the_field(change, message):
    def tamper(d):
        change(d)
        refit(d)

    assert refused(edit(good(), tamper)).startswith(message)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_fuzz_any_corruption_is_refused_with_one_line_or_replays_exactly(data):
    original = good()
    kind = data.draw(st.sampled_from(["flip", "cut", "insert"]))
    at = data.draw(st.integers(0, len(original) - 1))
    if kind == "flip":
        corrupt = (
            original[:at]
            + bytes([original[at] ^ data.draw(st.integers(1, 255))])
            + original[at + 1 :]
        )
    elif kind == "cut":
        corrupt = original[:at]
    else:
        corrupt = original[:at] + data.draw(st.binary(min_size=1, max_size=8)) + original[at:]
    try:
        s = BD.replay(BD.loads(corrupt))
    except BD.BundleError as exc:
        assert str(exc) and "\n" not in str(exc)
    else:  # a change that means nothing (whitespace, an equivalent escape) replays exactly
        assert s.state_hash() == lost_update_session().state_hash()


@settings(max_examples=100, deadline=None)
@given(
    doc=st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(max_size=8),
        lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=8), c, max_size=4),
        max_leaves=20,
    )
)
def test_fuzz_arbitrary_json_is_refused_cleanly(doc):
    with pytest.raises(BD.BundleError):
        BD.loads(json.dumps(doc).encode())


# --- run-length encoded end to end (engine/history.py Runs) ----------------------------------

DECISION = st.one_of(
    st.builds(lambda a: ["step", a], st.integers(0, 2)),
    st.builds(lambda a, t: ["inject", a, t], st.integers(0, 2), st.sampled_from(["read 0x0", "x"])),
)


@given(st.lists(st.tuples(DECISION, st.integers(1, 6))), st.data())
@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
def test_runs_behave_as_the_list_of_their_decisions(spec, data):
    """Runs is a list of decisions to every reader (indexing, slicing, iterating,
    equality), stored as one entry per run of one actor's steps."""
    flat: list = []
    runs = Runs()
    for d, n in spec:
        n = n if d[0] == "step" else 1
        runs.add(d, n)
        flat += [d] * n
    assert len(runs) == len(flat) and list(runs) == flat and runs == flat
    steps_runs = sum(
        1
        for i, d in enumerate(flat)
        if d[0] == "inject" or i == 0 or flat[i - 1] != d  # a new run starts here
    )
    assert len(runs.items) == steps_runs  # adjacent equal steps are merged, nothing else
    if flat:
        k = data.draw(st.integers(-len(flat), len(flat) - 1))
        assert runs[k] == flat[k]
    lo = data.draw(st.integers(0, len(flat)))
    hi = data.draw(st.integers(lo, len(flat)))
    assert list(runs[lo:hi]) == flat[lo:hi]
    expanded = [d for d, n in runs.runs(lo, hi) for _ in range(n)]
    assert expanded == flat[lo:hi]


def test_a_long_run_of_one_actor_stays_one_run_through_session_bundle_and_replay():
    live = LiveSession(WP_4M)
    live.run(10**6)  # round-robin: the vCPU finishes early, then host0 alone
    own = live.tree.branches[0].decisions
    assert live.position > 3000 and len(own.items) < 20
    b = BD.from_session(live)
    assert len(b.path) == 1 and len(b.path[0].split(" ")) == len(own.items)
    again = BD.replay(BD.loads(BD.dumps(b)))
    assert again.tree.branches[0].decisions == own  # the same runs, never expanded
    assert again.state_hash() == live.state_hash()


@pytest.mark.parametrize("engine", ["cython", "python"])
def test_seeking_through_runs_reaches_the_state_stepping_one_by_one_does(engine):
    live = LiveSession(WP_4M, engine=engine, snapshot_every=4096)
    live.run(10**6)
    one_by_one = LiveSession(WP_4M, engine=engine)  # takes the decisions one at a time
    for k, d in enumerate(live.decisions):
        one_by_one.apply(list(d))
        if k + 1 in (1, 777, 2500, live.position):
            live.seek(k + 1)
            assert live.state_hash() == one_by_one.state_hash(), k + 1
    live.seek(0)
    live.advance(live.tree.branches[0].end)
    assert live.state_hash() == one_by_one.state_hash()


def test_a_recorded_run_that_cannot_be_taken_again_says_why():
    live = LiveSession(V46)
    live.tree.branches[0].decisions.add(["step", 0], 10**6)  # more steps than vcpu0 has
    with pytest.raises(EngineError, match="actor 0 has finished"):
        live.seek(10**6)


def test_a_bundle_of_a_moment_on_another_branch_holds_the_path_to_it():
    live = lost_update_session()
    live.seek(3)
    live.step("host0")  # a new branch at step 3: b1-4
    live.step("host0")
    head = live.state_hash()
    live.goto_moment("b1-5")
    want = live.state_hash()
    live.goto_moment("9")  # the viewer is elsewhere: the bundle does not move it
    b = BD.from_session(live, moment="b1-5")
    assert b.moment == "b1-5" and b.position == 5
    assert list(b.decisions()) == live.path_to("b1-5")
    assert BD.replay(b).state_hash() == want == head
    assert live.moment() == "9"
    assert BD.from_session(live, moment="3").moment == "3"  # shared prefix: canonical name
    with pytest.raises(BD.BundleError, match="moment: this session has no branch 7"):
        BD.from_session(live, moment="b7-1")


def test_a_bundle_asking_for_more_hash_checks_than_the_bound_is_refused():
    """Every listed hash is checked, so a crafted file may list no more than the writer
    would: MAX_HASH_POINTS after step 0 (each check hashes the whole table memory)."""
    live = LiveSession(WP_4M)
    live.run(10**6)
    b = BD.from_session(live)
    assert live.position > 2000 and len(b.hashes) <= BD.MAX_HASH_POINTS + 2
    b.hash_every = 1
    b.hashes = {p: b.hashes[0] for p in range(live.position + 1)}
    message = refused(BD.dumps(b))
    assert message.startswith(f"hashes.every: 1 asks for more than {BD.MAX_HASH_POINTS} checks")


def test_seeking_far_from_a_checkpoint_records_only_the_events_asked_for():
    """seek(replay=N) wants the events of the last N decisions before the moment; the
    decisions before them, re-executed from a checkpoint maybe far back, record none."""
    live = LiveSession(WP_4M)
    live.run(10**6)
    own = live.tree.branches[0].checkpoints
    for p in [p for p in own if p]:
        del own[p]  # only the start is left, as along a long run of an import
    live.machine.clear_events()
    live.seek(2500, replay=40)
    events = live.machine.event_tuples()
    assert len(events) == 40 and events[-1][0] == live.machine.seq - 1
    full = LiveSession(WP_4M)
    for d in live.decisions.between(0, 2500):
        full.apply(list(d))
    assert full.machine.event_tuples()[-40:] == events
    assert live.state_hash() == full.state_hash()
