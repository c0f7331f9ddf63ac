"""Hostile websocket input (issue 9, items 4 and 10): no frame crashes a consumer, every
one gets an answer naming what is wrong, one connection cannot flood the engine, and a
subscribe is answered to its own viewer only. Both deployments."""

from __future__ import annotations

import asyncio
import json

import pytest
from channels.layers import DEFAULT_CHANNEL_LAYER, channel_layers
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from webhelpers import ROOT, Viewer, arun

from ptviz import protocol as P
from ptviz.debugger import records

pytestmark = pytest.mark.django_db(transaction=True)

V46 = (ROOT / "scenarios" / "seed_race_v4.6.toml").read_text()
BIG = 10**400


def make_session():
    return records.create(records.check_scenario(V46, "v46.toml"), "test")


def cmd(id_, name, **fields):
    return {"v": 1, "type": "command", "id": id_, "cmd": name, **fields}


CRASHERS = [
    "[" * 100_000 + "]" * 100_000,
    '{"v": 1, "type": "command", "id": 1, "cmd": "run", "x": ' + "[" * 50_000 + "]" * 50_000 + "}",
    json.dumps(cmd(2, "run", speed=0)).replace("0}", "1" + "0" * 400 + "}"),
    '{"v": 1, "type": "command", "id": 3, "cmd": "run", "speed": 1e400}',
    '{"v": 1, "type": "command", "id": 4, "cmd": "run", "speed": NaN}',
    '{"v": 1, "type": "command", "id": 5, "cmd": "run", "speed": Infinity}',
    json.dumps(cmd(6, "seek", position=2**64)),
    json.dumps(cmd(7, "back", n=10**300)),
    json.dumps(cmd(8, "run", seed=2**64)),
    json.dumps(cmd(9, "explore", max_states=2**70)),
    json.dumps(cmd(2**64, "pause")),
    json.dumps(cmd(10, "step", actor="x" * 100_000)),
    json.dumps(cmd(11, "subscribe", tables=[2**64, "0x" + "f" * 40])),
    # lone surrogates: JSON may escape them, UTF-8 (msgpack, the database) cannot hold them
    json.dumps(cmd(12, "step", actor="\ud800")),
    json.dumps({**cmd(13, "hello"), "name": "a\udfff"}),
    json.dumps(cmd(14, "follow", viewer="\ud800")),
    json.dumps(cmd(15, "seek", moment="\ud800")),
    '{"v": 1, "type": "command", "id": 1' + "0" * 5000 + ', "cmd": "pause"}',
]


@pytest.mark.parametrize("role", ["view", "control"])
def test_frames_that_used_to_crash_a_consumer_get_bad_message(mode, role):
    session, control, view = make_session()
    token = control.token if role == "control" else view.token

    async def body():
        v = await Viewer.open(session.id, token)
        await v.start()
        for raw in CRASHERS:
            await v.comm.send_to(text_data=raw)
            err = await v.type("error")
            assert err["code"] in ("bad_message", "forbidden"), (raw[:80], err)
        # the same connection still works, and so does the session
        await v.ok("resync")
        await v.type("snapshot")
        if role == "control":
            await v.ok("step", actor="vcpu0")
            assert (await v.type("delta"))["decisions"] == 1
        await v.close()

    arun(body(), 120)


async def flood(v, n: int) -> tuple[dict, int]:
    """Send n resync commands at once; their answers by id, and the snapshots that came."""
    for i in range(1, n + 1):
        await v.comm.send_to(text_data=json.dumps(cmd(i, "resync")))
    answers, snapshots = {}, 0
    while len(answers) < n:
        msg = await v.expect(lambda m: m["type"] in ("ack", "error", "snapshot"), 20)
        if msg["type"] == "snapshot":
            snapshots += 1
        else:
            answers[msg["id"]] = msg
    await asyncio.sleep(1.0)
    snapshots += sum(m["type"] == "snapshot" for m in await drain(v))
    return answers, snapshots


async def drain(v) -> list[dict]:
    """The messages already waiting (a receive timeout would cancel the application)."""
    out = [*v.unseen]
    v.unseen.clear()
    while not await v.comm.receive_nothing(0.05):
        out.append(await v.comm.receive_json_from())
    return out


def test_a_flood_is_rate_limited(mode, settings):
    settings.PTVIZ_RATE = 20.0
    settings.PTVIZ_RATE_BURST = 40
    session, _control, view = make_session()

    async def body():
        v = await Viewer.open(session.id, view.token)
        await v.start()
        answers, _ = await flood(v, 150)
        limited = [a for a in answers.values() if a.get("code") == P.RATE_LIMITED]
        # the burst was taken (plus what the rate refilled meanwhile), the rest refused
        assert 40 <= 150 - len(limited) < 110 and "per second" in limited[0]["message"]
        await v.close()

    arun(body(), 90)


def test_resyncs_coalesce_into_one_snapshot_in_flight(mode, settings):
    settings.PTVIZ_RATE_BURST = 1000
    session, _control, view = make_session()

    async def body():
        v = await Viewer.open(session.id, view.token)
        await v.start()
        answers, snapshots = await flood(v, 300)
        assert all(a["type"] == "ack" for a in answers.values())
        assert 1 <= snapshots <= 30
        await v.close()

    arun(body(), 90)


def test_a_flood_far_over_the_limit_closes_the_connection(settings, embedded_deployment):
    settings.PTVIZ_RATE = 5.0
    settings.PTVIZ_RATE_BURST = 10
    session, _control, view = make_session()

    async def body():
        v = await Viewer.open(session.id, view.token)
        await v.start()
        for i in range(200):
            await v.comm.send_to(text_data=json.dumps(cmd(i, "resync")))
        out = await v.comm.receive_output(10)
        while out["type"] != "websocket.close":
            out = await v.comm.receive_output(10)
        assert out["code"] == 4008

    arun(body())


def test_a_subscribe_is_answered_to_its_own_viewer_only(mode):
    session, control, view = make_session()

    async def body():
        a = await Viewer.open(session.id, control.token)
        b = await Viewer.open(session.id, view.token)
        _, snap = await a.start()
        await b.start()
        root = snap["machine"]["root"]
        for _ in range(5):
            await b.ok("subscribe", tables=[root])
            assert root in (await b.type("tables"))["tables"]
        await asyncio.sleep(0.5)
        assert not [m for m in await drain(a) if m["type"] in ("delta", "tables")]
        await a.ok("step", actor="vcpu0")
        da, db = await a.type("delta"), await b.type("delta")
        assert da["batch"] == db["batch"] == snap["batch"] + 1  # nobody saw a gap
        assert da["tables"] == {} and set(db["tables"]) <= {root}
        await a.close()
        await b.close()

    arun(body())


# --- fuzz -------------------------------------------------------------------------------
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=20),
    st.sampled_from(["0x1000000000", "vcpu0", "host0", "wp 0x8000_0000 4K", "random"]),
)
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner, max_size=4)
    ),
    max_leaves=10,
)
FIELDS = [
    "actor",
    "op",
    "mode",
    "seed",
    "speed",
    "max_steps",
    "n",
    "position",
    "max_states",
    "tables",
]


@st.composite
def messages(draw):
    obj = {
        "v": draw(st.sampled_from([1, 1, 1, 2, "1", None])),
        "type": draw(st.sampled_from(["command", "command", "command", "resync", "x", None])),
        "id": draw(
            st.one_of(
                st.integers(min_value=-(2**66), max_value=2**66), st.text(max_size=3), st.none()
            )
        ),
        "cmd": draw(st.sampled_from([*P.COMMANDS, "fly", "__class__", None])),
    }
    for key in draw(st.lists(st.sampled_from(FIELDS), max_size=4, unique=True)):
        obj[key] = draw(values)
    for key in draw(st.lists(st.sampled_from(list(obj)), max_size=2, unique=True)):
        del obj[key]
    return obj


@settings(max_examples=500, deadline=None)
@given(messages())
def test_parsing_never_raises_anything_but_a_protocol_error(obj):
    try:
        out = P.parse_client_message(json.dumps(obj))
    except P.ProtocolError as exc:
        assert exc.code == P.BAD_MESSAGE and exc.text
        return
    assert out["cmd"] in P.COMMANDS
    for value in out.values():  # what goes on to the engine fits its 64-bit slots
        if isinstance(value, int):
            assert P.INT_MIN <= value <= P.INT_MAX


@settings(
    max_examples=4,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(st.lists(messages(), min_size=15, max_size=15))
def test_fuzzed_messages_over_a_live_connection(redis_deployment, batch):
    """Every message type with fuzzed fields, on a control link in the distributed
    deployment (msgpack between consumer and worker): every command is answered, and the
    connection and the session live on."""
    channel_layers.backends.pop(DEFAULT_CHANNEL_LAYER, None)  # (see below)
    session, control, _view = make_session()

    async def body():
        v = await Viewer.open(session.id, control.token)
        await v.start()
        for obj in batch:
            obj = {**obj, "id": None} if obj.get("cmd") in ("run", "explore") else obj
            await v.comm.send_json_to(obj)
        await v.ok("pause")
        reply = await v.answer(await v.command("seek", position=0))
        assert reply["type"] in ("ack", "error")
        await v.ok("resync")
        await v.close()

    arun(body(), 120)


# --- every message type, field by field --------------------------------------------------
# Each client message type and each command has a strategy of its own fields, mixing the
# values it takes with hostile ones (script and markup, huge, lone surrogates, numbers past
# 64 bits). COMMAND_FIELDS and VALID are checked against protocol.py below, so a command
# added there without a strategy here fails the suite.
XSS = '<img src=x onerror="alert(1)"><script>alert(2)</script>'
hostile_text = st.one_of(
    st.text(max_size=30),
    st.sampled_from(
        [XSS, "", "   ", "\x00", "\ud800", "\u202e", "x" * 5000, "0x" + "f" * 40, "../../etc"]
    ),
)
hostile_int = st.one_of(
    st.integers(min_value=-3, max_value=100),
    st.sampled_from([-(2**63) - 1, 2**63 - 1, 2**63, 2**64, 10**400, -(10**30)]),
)
hostile = st.one_of(hostile_text, hostile_int, values)
table_addr = st.one_of(
    st.sampled_from(["0x1000000000", "0x40000000", 0x1000000000, "0x_1000", "1e9", -1]),
    hostile_int,
    hostile_text,
)
OTHER, MOMENT = "$other-viewer", "$a-moment"  # (filled in from the live session)

COMMAND_FIELDS = {
    "step": {"actor": hostile_text | st.sampled_from(["vcpu0", "host0"]), "branch": hostile},
    "inject": {
        "actor": hostile_text | st.just("host0"),
        "op": hostile_text | st.sampled_from(["wp 0x8000_0000 4K", "unmap 0x8000_0000 2M"]),
        "branch": hostile,
    },
    "run": {
        "mode": hostile_text | st.sampled_from(P.RUN_MODES),
        "seed": hostile_int,
        "speed": st.one_of(hostile_int, st.floats(allow_nan=False), st.sampled_from([1e9, 1e10])),
        "max_steps": hostile_int,
        "until": hostile_text | st.sampled_from(P.RUN_UNTIL),
        "branch": hostile,
    },
    "pause": {},
    "explore": {"max_states": hostile_int},
    "explore_cancel": {},
    "subscribe": {"tables": st.lists(table_addr, max_size=5) | hostile},
    "unsubscribe": {"tables": st.lists(table_addr, max_size=5) | hostile},
    "resync": {},
    "seek": {
        "position": hostile_int,
        "branch": hostile_int | hostile,
        "moment": hostile_text | st.just(MOMENT),
    },
    "back": {"n": hostile_int},
    "live": {},
    "moment": {},
    "follow": {"viewer": st.one_of(st.none(), hostile_text, st.just(OTHER), hostile_int)},
    "focus": {"addr": st.one_of(st.none(), table_addr)},
    "hello": {"name": hostile_text},
    "history": {"addr": table_addr},
}
# What each command looks like when it is well formed: these must parse.
VALID = {
    "step": st.fixed_dictionaries({"actor": st.sampled_from(["vcpu0", "host0", "nobody"])}),
    "inject": st.fixed_dictionaries(
        {"actor": st.just("host0"), "op": st.sampled_from(["wp 0x8000_0000 4K", "bogus op"])}
    ),
    "run": st.fixed_dictionaries(
        {
            "mode": st.sampled_from(P.RUN_MODES),
            "seed": st.integers(-5, 5),
            "speed": st.sampled_from([0, 50, 1e9]),
            "max_steps": st.integers(1, 20),
        }
    ),
    "pause": st.just({}),
    "explore": st.fixed_dictionaries({"max_states": st.integers(1, 500)}),
    "explore_cancel": st.just({}),
    "subscribe": st.fixed_dictionaries({"tables": st.lists(st.just("0x1000000000"), max_size=2)}),
    "unsubscribe": st.fixed_dictionaries({"tables": st.just(["0x1000000000"])}),
    "resync": st.just({}),
    "seek": st.one_of(
        st.fixed_dictionaries({"position": st.integers(0, 200)}),
        st.fixed_dictionaries({"moment": st.sampled_from([MOMENT, "nowhere"])}),
    ),
    "back": st.fixed_dictionaries({"n": st.integers(1, 5)}),
    "live": st.just({}),
    "moment": st.just({}),
    "follow": st.fixed_dictionaries({"viewer": st.sampled_from([None, OTHER, "nobody"])}),
    "focus": st.fixed_dictionaries({"addr": st.sampled_from([None, "0x1000000000"])}),
    "hello": st.fixed_dictionaries({"name": st.sampled_from(["Ada", XSS, "x" * 100])}),
    "history": st.fixed_dictionaries({"addr": st.sampled_from(["0x1000000000", 0x40000000])}),
}
# The other client message types (docs/protocol.md): their strategies of extra fields.
TYPE_FIELDS = {"command": None, "resync": {"id": st.one_of(st.none(), hostile_int, hostile_text)}}


def test_every_message_type_and_command_has_a_fuzz_strategy():
    assert set(COMMAND_FIELDS) == set(VALID) == set(P.COMMANDS)
    assert set(TYPE_FIELDS) == set(P.CLIENT_TYPES)


@st.composite
def hostile_command(draw, name: str):
    fields = COMMAND_FIELDS[name]
    obj = {"v": 1, "type": "command", "cmd": name}
    for key in draw(st.lists(st.sampled_from(sorted(fields) or ["x"]), unique=True)):
        obj[key] = draw(fields.get(key, hostile))
    if draw(st.booleans()):  # a field of another command
        obj[draw(st.sampled_from(FIELDS))] = draw(hostile)
    return obj


@st.composite
def valid_command(draw, name: str):
    return {"v": 1, "type": "command", "cmd": name, **draw(VALID[name])}


def every_command(kind):
    """One message of every command, in a drawn order."""
    return st.tuples(*(kind(name) for name in P.COMMANDS)).flatmap(st.permutations)


def strict_json(obj) -> bool:
    """JSON as a browser writes it (Python also writes Infinity, which JSON is not)."""
    try:
        json.dumps(obj, allow_nan=False)
    except ValueError:
        return False
    return True


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(P.COMMANDS).flatmap(hostile_command), hostile_int)
def test_each_command_parses_or_is_refused_naming_it(obj, id_):
    obj["id"] = id_
    try:
        out = P.parse_client_message(json.dumps(obj))
    except P.ProtocolError as exc:
        assert exc.code == P.BAD_MESSAGE and exc.text and "\n" not in exc.text
        if P.INT_MIN <= id_ <= P.INT_MAX and strict_json(obj):
            assert exc.id == id_  # the browser can tell which command was refused
        return
    assert out["cmd"] == obj["cmd"] and out["id"] == id_
    for value in out.values():
        if isinstance(value, int):
            assert P.INT_MIN <= value <= P.INT_MAX
        if isinstance(value, str):
            assert len(value) <= P.MAX_STR


@settings(max_examples=100, deadline=None)
@given(st.sampled_from(P.COMMANDS).flatmap(valid_command))
def test_each_well_formed_command_parses(obj):
    obj = {**obj, "id": 7}
    out = P.parse_client_message(json.dumps(obj))
    assert out["cmd"] == obj["cmd"]


@settings(max_examples=100, deadline=None)
@given(
    st.fixed_dictionaries(
        {"v": st.just(1), "type": st.just("resync")}, optional=TYPE_FIELDS["resync"]
    )
)
def test_the_short_resync_parses_whatever_its_id(obj):
    if P.not_unicode(obj):  # (the whole message is refused: its id cannot be sent back)
        with pytest.raises(P.ProtocolError, match="lone surrogate"):
            P.parse_client_message(json.dumps(obj))
        return
    assert P.parse_client_message(json.dumps(obj))["cmd"] == "resync"


def fill(obj: dict, other: str, moment: str) -> dict:
    return {
        k: {OTHER: other, MOMENT: moment}.get(v, v) if isinstance(v, str) else v
        for k, v in obj.items()
    }


@settings(
    max_examples=3,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(hostiles=every_command(hostile_command), valids=every_command(valid_command))
def test_every_command_fuzzed_over_a_live_connection_is_answered(mode, settings, hostiles, valids):
    """One hostile and one well-formed message of every command, on a control link with a
    second viewer watching, in both deployments: each gets its own ack or error (a refused
    one `bad_message`), nobody is disconnected, and the session goes on."""
    settings.PTVIZ_RATE_BURST = 1000
    if mode == "redis":  # a layer of its own per example: each runs in a new event loop
        channel_layers.backends.pop(DEFAULT_CHANNEL_LAYER, None)
    session, control, view = make_session()

    async def body():
        a = await Viewer.open(session.id, control.token)
        b = await Viewer.open(session.id, view.token)
        await a.start()
        await b.start()
        await b.ok("hello", name="watcher")
        presence = await a.expect(
            lambda m: m["type"] == "presence" and any(p["name"] == "watcher" for p in m["viewers"])
        )
        other = next(p["id"] for p in presence["viewers"] if p["name"] == "watcher")
        await a.ok("moment")
        moment = (await a.type("moment"))["moment"]
        sent = {}
        batch = [(obj, False) for obj in hostiles] + [(obj, True) for obj in valids]
        for n, (obj, valid) in enumerate(batch, start=100):
            obj = {**fill(obj, other, moment), "id": n}
            sent[n] = (obj, valid)
            await a.comm.send_to(text_data=json.dumps(obj))
        for n, (obj, valid) in sent.items():
            reply = await a.answer(n, 30)
            if reply["type"] == "error":
                assert reply["message"] and "\n" not in reply["message"], (obj, reply)
                assert not (valid and reply["code"] == P.BAD_MESSAGE), (obj, reply)
                assert reply["code"] != P.UNAVAILABLE, (obj, reply)  # (the engine is up)
        await a.ok("pause")
        await a.ok("resync")
        await a.type("snapshot")
        await b.ok("resync")  # the watcher was not disconnected either
        await b.type("snapshot")
        await a.close()
        await b.close()

    arun(body(), 120)
