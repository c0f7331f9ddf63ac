"""Hostile files and fields over HTTP (issue 9, "Hostile input"): every importer and every
field a visitor sets, fuzzed through the real views. Whatever comes in: never a 500, a
refusal is one line naming what is wrong, and a refused import stores nothing (no session,
no link, no decision). The parsers themselves are fuzzed harder below the web layer
(test_scenario_fuzz.py, test_bundle.py, test_ptdump.py); these prove the views around
them keep those promises."""

from __future__ import annotations

import asyncio
import json
from urllib.parse import quote

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from webhelpers import ROOT

from engine import bundle as BD
from engine.session import LiveSession
from ptviz.debugger import records
from ptviz.debugger.models import Checkpoint, DebugSession, Decision, ShareLink

pytestmark = pytest.mark.django_db

V46 = (ROOT / "scenarios" / "seed_race_v4.6.toml").read_text()
DUMP = (ROOT / "scenarios" / "dumps" / "small.stage2_page_tables").read_text()
LOST = ["vcpu0"] * 3 + ["host0"] * 4 + ["vcpu0"] + ["host0"] * 2
XSS = '<img src=x onerror="alert(1)"><script>alert(2)</script>'
FUZZ = settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)

hostile_text = st.one_of(
    st.text(max_size=20),
    st.sampled_from([XSS, "", "\x00", "\ud800", "a\udfffb", "\u202e", "x" * 300, "1e999"]),
)
# (a form field or a query string is bytes: a lone surrogate reaches the server only in JSON)
wire_text = hostile_text.filter(
    lambda t: "\x00" not in t and t.encode(errors="ignore").decode() == t
)
hostile_scalar = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.sampled_from([2**64, -1, 0, 10**400]),
    st.floats(allow_nan=False, allow_infinity=False),
    hostile_text,
)
hostile_json = st.recursive(
    hostile_scalar,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(hostile_text, inner, max_size=3),
    max_leaves=6,
)


def lost_recording() -> dict:
    live = LiveSession(V46)
    for name in LOST:
        live.step(name)
    return live.export()


def lost_bundle() -> dict:
    live = LiveSession(V46)
    for name in LOST:
        live.step(name)
    return json.loads(BD.dumps(BD.from_session(live, len(LOST), moment=str(len(LOST)))))


RECORDING, BUNDLE = lost_recording(), lost_bundle()


def paths(doc, at=()):
    """Every (path, value) inside a JSON document."""
    yield at, doc
    if isinstance(doc, dict):
        for key, value in doc.items():
            yield from paths(value, (*at, key))
    elif isinstance(doc, list):
        for n, value in enumerate(doc):
            yield from paths(value, (*at, n))


@st.composite
def mutated_json(draw, original: dict) -> bytes:
    """A JSON file with one to three places replaced by a hostile value or removed, or its
    bytes flipped, cut or extended."""
    doc = json.loads(json.dumps(original))
    if draw(st.integers(0, 4)) == 0:
        raw = bytearray(json.dumps(doc).encode())
        at = draw(st.integers(0, len(raw) - 1))
        kind = draw(st.sampled_from(["flip", "cut", "insert"]))
        if kind == "flip":
            raw[at] ^= draw(st.integers(1, 255))
        elif kind == "cut":
            del raw[at:]
        else:
            raw[at:at] = draw(st.binary(min_size=1, max_size=6))
        return bytes(raw)
    every = [p for p, _ in paths(doc) if p]
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(every))
        parent = doc
        try:
            for key in path[:-1]:
                parent = parent[key]
            if draw(st.booleans()) and isinstance(parent, dict):
                parent.pop(path[-1], None)
            else:
                parent[path[-1]] = draw(hostile_json)
        except (KeyError, IndexError, TypeError):
            continue  # (an earlier change removed it)
    return json.dumps(doc).encode()


@st.composite
def mutated_text(draw, original: str) -> str:
    """A text file with a few characters replaced, removed or inserted (hostile ones too)."""
    text = original
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, len(text)))
        ch = draw(
            st.one_of(st.sampled_from(list("0123456789abcdefxKMG RWAF[]=\"'#\n")), hostile_text)
        )
        kind = draw(st.sampled_from(["replace", "delete", "insert"]))
        if kind == "replace":
            text = text[:at] + ch + text[at + 1 :]
        elif kind == "delete":
            text = text[:at] + text[at + 1 :]
        else:
            text = text[:at] + ch + text[at:]
    return text


def stored() -> tuple[int, ...]:
    return tuple(m.objects.count() for m in (DebugSession, ShareLink, Decision, Checkpoint))


def check(response, before: tuple[int, ...]) -> None:
    """No 500; a refusal names what is wrong in one line and leaves nothing behind."""
    assert response.status_code < 500, response.content[:300]
    if response.status_code in (200, 201):
        return
    assert response.status_code in (400, 403, 404, 410, 413), response.status_code
    if response["Content-Type"].startswith("application/json"):
        message = response.json()["message"]
        assert message and "\n" not in message
    assert stored() == before


def streamed(response) -> bytes:
    content = response.streaming_content
    if hasattr(content, "__aiter__"):  # (the view streams asynchronously)

        async def collect():
            return b"".join([chunk async for chunk in content])

        return asyncio.run(collect())
    return b"".join(content)


def post_json(client, path: str, body: bytes):
    return client.post(path, body, content_type="application/json", HTTP_ACCEPT="application/json")


def post_as(client, link, path: str, body: dict):
    """A JSON POST with a share link's token (as the page sends it)."""
    return client.post(
        path,
        json.dumps(body).encode(),
        content_type="application/json",
        HTTP_ACCEPT="application/json",
        HTTP_X_PTVIZ_TOKEN=link.token,
    )


def upload(name: str, data: str | bytes) -> SimpleUploadedFile:
    if isinstance(data, str):
        data = data.encode(errors="surrogatepass")  # (a browser can send any bytes)
    return SimpleUploadedFile(name, data)


# --- importers ----------------------------------------------------------------------------
@FUZZ
@given(data=mutated_json(RECORDING))
def test_a_fuzzed_recording_imports_exactly_or_is_refused_leaving_nothing(data):
    client, before = Client(), stored()
    check(post_json(client, "/recordings/import", data), before)
    r = client.post(
        "/recordings/import", {"recording": upload("r.json", data)}, HTTP_ACCEPT="application/json"
    )
    check(r, before if r.status_code >= 400 else stored())


@FUZZ
@given(data=mutated_json(BUNDLE))
def test_a_fuzzed_bundle_imports_exactly_or_is_refused_leaving_nothing(data):
    client, before = Client(), stored()
    r = client.post(
        "/bundles/import", {"bundle": upload("b.bundle.json", data)}, HTTP_ACCEPT="application/json"
    )
    check(r, before)
    if r.status_code == 201:  # only a change that means nothing replays: the same moment
        session = DebugSession.objects.get(id=r.json()["session"])
        assert records.load_live(session).state_hash() == BD.replay(BD.loads(data)).state_hash()
        return
    # streamed (the page's way): progress lines, then the same one-line refusal
    r = client.post(
        "/bundles/import",
        {"bundle": upload("b.bundle.json", data)},
        HTTP_ACCEPT="application/x-ndjson",
    )
    if not r.streaming:  # (refused before any replay: a plain answer)
        check(r, before)
        return
    lines = streamed(r).decode().splitlines()
    last = json.loads(lines[-1])
    assert set(last) == {"error", "code"} and "\n" not in last["error"], last
    assert stored() == before


@FUZZ
@given(text=mutated_text(DUMP), ipa_bits=st.one_of(st.just(""), wire_text))
def test_a_fuzzed_dump_imports_or_is_refused_leaving_nothing(text, ipa_bits):
    client, before = Client(), stored()
    r = client.post(
        "/dumps/import",
        {"dump": upload("d.stage2_page_tables", text), "ipa_bits": ipa_bits},
        HTTP_ACCEPT="application/json",
    )
    check(r, before)


@FUZZ
@given(text=mutated_text(V46), how=st.sampled_from(["json", "form", "file"]))
def test_a_fuzzed_scenario_makes_a_session_or_is_refused_leaving_nothing(text, how):
    client, before = Client(), stored()
    if how == "json":
        r = post_json(client, "/sessions/new", json.dumps({"scenario": text}).encode())
    elif how == "form":
        r = client.post(
            "/sessions/new",
            {"scenario": text.encode(errors="replace").decode()},
            HTTP_ACCEPT="application/json",
        )
    else:
        r = client.post(
            "/sessions/new",
            {"scenario_file": upload("s.toml", text)},
            HTTP_ACCEPT="application/json",
        )
    check(r, before)


# --- fields a visitor sets ----------------------------------------------------------------
@FUZZ
@given(
    body=st.dictionaries(
        st.sampled_from(["role", "label", "expires_in", "token"]), hostile_json, max_size=4
    )
)
def test_fuzzed_link_fields_make_a_link_or_are_refused(body):
    session, control, _view = records.create(records.check_scenario(V46, "v46.toml"), "test")
    client, before = Client(), stored()
    r = post_as(client, control, f"/sessions/{session.id}/links", body)
    check(r, before)
    if r.status_code == 201:  # the label shown to others is the one given, as text
        assert r.json()["label"] == str(body.get("label") or "").strip()


@FUZZ
@given(
    query=st.dictionaries(
        st.sampled_from(["at", "h", "d", "step", "name", "position", "format", "from"]),
        wire_text,
        max_size=4,
    )
)
def test_fuzzed_page_queries_render_or_are_refused(query):
    session, control, _view = records.create(records.check_scenario(V46, "v46.toml"), "test")
    client, before = Client(), stored()
    for path in (
        "/",
        f"/s/{control.token}/",
        f"/sessions/{session.id}/report",
        f"/sessions/{session.id}/recording.json",
        "/docs/protocol",
    ):
        r = client.get(path, {**query, "token": control.token})
        check(r, before)
        before = stored()  # (a page may make its view link once)


# --- what used to be a 500 ----------------------------------------------------------------
DEEP = "[" * 100_000 + "]" * 100_000


def with_scenario(doc: dict, text: str) -> bytes:
    return json.dumps({**doc, "scenario": text}).encode()


@pytest.mark.parametrize(
    "path, field, data, says",
    [
        ("/bundles/import", "bundle", DEEP.encode(), "nested too deeply"),
        ("/bundles/import", "bundle", with_scenario(BUNDLE, "\ud800"), "lone surrogate"),
        ("/recordings/import", "recording", with_scenario(RECORDING, "x\udc00"), "surrogate"),
        ("/recordings/import", None, with_scenario(RECORDING, "\ud800"), "surrogate"),
        ("/sessions/new", None, json.dumps({"scenario": "\udfff" + V46}).encode(), "surrogate"),
    ],
)
def test_files_that_used_to_be_a_500_are_refused_naming_why(path, field, data, says):
    client, before = Client(), stored()
    if field is None:
        r = post_json(client, path, data)
    else:
        r = client.post(path, {field: upload("f.json", data)}, HTTP_ACCEPT="application/json")
    check(r, before)
    assert r.status_code == 400 and says in r.json()["message"]


@pytest.mark.parametrize(
    "label, says", [("a\x00b", "label"), ("tab\there", "label"), ("\ud800", "surrogate")]
)
def test_a_link_label_with_control_characters_or_no_unicode_is_refused(label, says):
    session, control, _view = records.create(records.check_scenario(V46, "v46.toml"), "test")
    client, before = Client(), stored()
    r = post_as(client, control, f"/sessions/{session.id}/links", {"label": label})
    check(r, before)
    assert r.status_code == 400 and says in r.json()["message"]


@FUZZ
@given(
    body=st.dictionaries(
        st.sampled_from(["position", "branch", "kernel", "ha", "hd", "hafdbs", "schedule"]),
        st.one_of(
            hostile_json,
            st.lists(st.sampled_from(["vcpu0", "host0", "nobody", XSS]), max_size=12),
            st.sampled_from(["vcpu0,host0,vcpu0", "v4.6", "seed", "true", "2", "-1"]),
        ),
        max_size=3,
    )
)
def test_fuzzed_fork_fields_fork_or_are_refused(body):
    live = records.check_scenario(V46, "v46.toml")
    for name in LOST:
        live.step(name)
    session, control, _view = records.create(live, "test")
    client, before = Client(), stored()
    check(post_as(client, control, f"/sessions/{session.id}/fork", body), before)


@FUZZ
@given(token=wire_text, position=wire_text)
def test_fuzzed_revoke_tokens_and_bundle_positions_are_refused_or_served(token, position):
    session, control, _view = records.create(records.check_scenario(V46, "v46.toml"), "test")
    client, before = Client(), stored()
    path = f"/sessions/{session.id}/links/{quote(token, safe='')}/revoke"
    check(
        client.post(path, b"{}", content_type="application/json", HTTP_X_PTVIZ_TOKEN=control.token),
        before,
    )
    r = client.get(f"/sessions/{session.id}/bundle", {"position": position, "token": control.token})
    check(r, before)


# Every route of ptviz/urls.py, by the test above that fuzzes it: a route added there
# without one here fails this file.
FUZZED_ROUTES = {
    "gallery": test_fuzzed_page_queries_render_or_are_refused,
    "session-new": test_a_fuzzed_scenario_makes_a_session_or_is_refused_leaving_nothing,
    "session-page": test_fuzzed_page_queries_render_or_are_refused,
    "session-fork": test_fuzzed_fork_fields_fork_or_are_refused,
    "session-links": test_fuzzed_link_fields_make_a_link_or_are_refused,
    "link-revoke": test_fuzzed_revoke_tokens_and_bundle_positions_are_refused_or_served,
    "recording": test_fuzzed_page_queries_render_or_are_refused,
    "recording-import": test_a_fuzzed_recording_imports_exactly_or_is_refused_leaving_nothing,
    "bundle": test_fuzzed_revoke_tokens_and_bundle_positions_are_refused_or_served,
    "report": test_fuzzed_page_queries_render_or_are_refused,
    "bundle-import": test_a_fuzzed_bundle_imports_exactly_or_is_refused_leaving_nothing,
    "dump-import": test_a_fuzzed_dump_imports_or_is_refused_leaving_nothing,
    "protocol-doc": test_fuzzed_page_queries_render_or_are_refused,
}


def test_every_route_is_fuzzed():
    from ptviz.urls import urlpatterns

    assert {p.name for p in urlpatterns} == set(FUZZED_ROUTES)


def test_a_superscript_digit_is_not_a_number():
    """ "²".isdigit() is true, and int("²") raises: these were 500s."""
    session, control, _view = records.create(records.check_scenario(V46, "v46.toml"), "test")
    client, before = Client(), stored()
    r = client.post(
        "/dumps/import",
        {"dump": upload("d", DUMP), "ipa_bits": "4²"},
        HTTP_ACCEPT="application/json",
    )
    check(r, before)
    assert r.status_code == 400 and "ipa_bits" in r.json()["message"]
    for path in ("report", "bundle"):
        r = client.get(f"/sessions/{session.id}/{path}", {"position": "²", "token": control.token})
        check(r, before)
        assert r.status_code == 400 and "position" in r.json()["message"]


def many_ranges(n: int) -> bytes:
    """A dump of n mapped 4K pages, each followed by an unmapped one."""
    lines = ["---[ Guest IPA ]---", "0x0000000000000000-0x0000000080000000           2G 1"]
    for i in range(n):
        a = 0x8000_0000 + i * 0x2000
        lines.append(f"0x{a:016x}-0x{a + 0x1000:016x}           4K 3   R W px ux  AF    ")
        lines.append(f"0x{a + 0x1000:016x}-0x{a + 0x2000:016x}           4K 3")
    return ("\n".join(lines) + "\n").encode()


def test_a_scenario_over_4_mib_is_refused_however_it_comes():
    """A recording, a bundle or a dump (each allowed up to the 32 MiB body) carried a
    scenario of any size past the 4 MiB limit of a pasted one."""
    padded = "#" * (4 << 20) + "\n" + V46
    live = LiveSession(padded)
    for name in LOST:
        live.step(name)
    recording = json.dumps(live.export()).encode()
    bundle = BD.dumps(BD.from_session(live, len(LOST), moment=str(len(LOST))))
    client, before = Client(), stored()
    for path, field, data in [
        ("/recordings/import", "recording", recording),
        ("/bundles/import", "bundle", bundle),
        ("/dumps/import", "dump", many_ranges(60_000)),  # 7.3 MiB: a 5.0 MiB scenario
        ("/dumps/import", "dump", many_ranges(70_000)),  # 8.5 MiB: refused unread
    ]:
        r = client.post(path, {field: upload("f", data)}, HTTP_ACCEPT="application/json")
        check(r, before)
        assert r.status_code == 400 and " bytes, larger than " in r.json()["message"], r.json()
