"""HTTP pages and endpoints (docs/protocol.md, "HTTP"): gallery, creation from an example,
a paste, an upload or the form builder (errors inline, naming the key or line), the
session page, forks, share links, recordings, the protocol page, static files."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import tomllib

import pytest
from asgiref.testing import ApplicationCommunicator
from django.core.files.uploadedfile import SimpleUploadedFile
from webhelpers import ORIGIN, ROOT, Viewer, arun

from engine.scenario import parse_scenario
from engine.session import LiveSession
from ptviz.debugger import records, scenarios
from ptviz.debugger.models import Checkpoint, DebugSession, Decision, ShareLink

pytestmark = pytest.mark.django_db

EXAMPLES = sorted((ROOT / "scenarios").glob("*.toml"))
V46 = (ROOT / "scenarios" / "seed_race_v4.6.toml").read_text()
LOST = ["vcpu0"] * 3 + ["host0"] * 4 + ["vcpu0"] + ["host0"] * 2
JSON = {"HTTP_ACCEPT": "application/json"}


def bootstrap(html: str) -> dict:
    m = re.search(r'<script id="bootstrap" type="application/json">(.*?)</script>', html, re.S)
    assert m, "no bootstrap JSON on the page"
    return json.loads(m[1])


def token_of(url: str) -> str:
    return re.search(r"/s/([^/]+)/", url)[1]


def recorded_session(steps=LOST[:5]):
    live = records.check_scenario(V46, "seed_race_v4.6.toml")
    for name in steps:
        live.step(name)
    return records.create(live, "test")


def test_gallery_lists_the_examples(client):
    html = client.get("/").content.decode()
    assert len(EXAMPLES) > 5
    for path in EXAMPLES:
        sc = parse_scenario(path.read_text(), path.name)
        assert f'value="{path.stem}"' in html
        assert sc.name.replace('"', "&quot;") in html
    assert 'name="scenario"' in html and 'name="scenario_file"' in html
    assert 'name="actor-0-do"' in html and 'name="b-kernel"' in html


def test_create_from_an_example_and_open_the_session_page(client):
    response = client.post("/sessions/new", {"example": "seed_race_seed"})
    assert response.status_code == 302
    session = DebugSession.objects.get()
    assert session.kernel == "seed" and session.origin == "example:seed_race_seed"
    assert sorted(session.links.values_list("role", flat=True)) == ["control", "view"]
    control = session.links.get(role="control")
    assert response["Location"].endswith(f"/s/{control.token}/")
    page = client.get(f"/s/{control.token}/?at=3")
    html = page.content.decode()
    # app.js and every module it imports in one script (ptviz/jsbundle.py)
    assert '<script type="module" src="/static/js/app.bundle.js"></script>' in html
    assert 'href="/static/css/app.css"' in html and 'id="app"' in html
    assert "modulepreload" not in html and "/static/js/builder.js" not in html
    boot = bootstrap(html)
    assert boot["session"] == str(session.id) and boot["token"] == control.token
    assert boot["role"] == "control" and boot["protocol"] == 1 and boot["at"] == "3"
    assert boot["ws"] == f"/ws/sessions/{session.id}/?token={control.token}&at=3"
    linked = bootstrap(client.get(f"/s/{control.token}/?d=0x1000003008").content.decode())
    assert linked["ws"].endswith("&d=0x1000003008") and linked["focus"] == "0x1000003008"
    assert boot["kernel"] == "seed" and boot["name"] == session.name
    assert boot["actors"] == [{"name": "vcpu0", "kind": "vcpu"}, {"name": "host0", "kind": "host"}]
    assert boot["csrf"]
    view = session.links.get(role="view")
    assert bootstrap(client.get(f"/s/{view.token}/").content.decode())["role"] == "view"
    assert client.get("/s/no-such-token/").status_code == 404


def test_create_from_a_paste_an_upload_and_json(client):
    assert client.post("/sessions/new", {"scenario": V46}).status_code == 302
    upload = SimpleUploadedFile("mine.toml", V46.encode(), content_type="text/plain")
    assert client.post("/sessions/new", {"scenario_file": upload}).status_code == 302
    response = client.post("/sessions/new", {"scenario": V46}, **JSON)
    assert response.status_code == 201
    body = response.json()
    assert set(body["links"]) == {"control", "view"} and body["url"] == body["links"]["control"]
    as_json = client.post(
        "/sessions/new", data=json.dumps({"scenario": V46}), content_type="application/json"
    )
    assert as_json.status_code == 201 and "/s/" in as_json.json()["url"]
    assert DebugSession.objects.count() == 4
    assert set(DebugSession.objects.values_list("origin", flat=True)) == {"paste", "upload"}


def test_a_paste_and_a_file_together_are_refused_and_a_bad_file_is_shown_for_fixing(client):
    upload = SimpleUploadedFile("mine.toml", V46.encode(), content_type="text/plain")
    both = client.post("/sessions/new", {"scenario": "name = 'x'", "scenario_file": upload})
    assert both.status_code == 400
    html = both.content.decode()
    assert "both a pasted scenario and a file were given" in html
    assert "name = &#x27;x&#x27;" in html  # the pasted text is kept
    bad = V46.replace('do = ["read 0x8000_0000"]', 'do = ["fly 0x8000_0000"]')
    upload = SimpleUploadedFile("bad.toml", bad.encode(), content_type="text/plain")
    refused = client.post("/sessions/new", {"scenario": "", "scenario_file": upload})
    assert refused.status_code == 400
    html = refused.content.decode()
    assert "bad.toml: actor[0].do[0]" in html
    textarea = re.search(r'<textarea name="scenario"[^>]*>(.*?)</textarea>', html, re.S)[1]
    assert "fly 0x8000_0000" in textarea and "[[actor]]" in textarea
    assert not DebugSession.objects.exists()


@pytest.mark.parametrize(
    "change, named",
    [
        (("ipa = 0x8000_0000", "ipa = 0x8000_0800"), "map[0].ipa"),
        (('kernel = "v4.6"', 'kernel = "v9"'), "kernel"),
        (('do = ["read 0x8000_0000"]', 'do = ["fly 0x8000_0000"]'), "actor[0].do[0]"),
        (("[machine]", "[machine\n"), "line "),
    ],
)
def test_scenario_errors_are_shown_inline_naming_the_key(client, change, named):
    text = V46.replace(*change)
    assert text != V46
    response = client.post("/sessions/new", {"scenario": text})
    assert response.status_code == 400
    html = response.content.decode()
    error = re.search(
        r'<div class="error" role="alert" id="scenario-error">(.*?)</div>', html, re.S
    )
    assert error and f"pasted scenario: {named}" in error[1]
    assert "aria-invalid" in html  # the textarea is marked
    assert not DebugSession.objects.exists()
    body = client.post("/sessions/new", {"scenario": text}, **JSON).json()
    assert body["code"] == "scenario" and named.strip() in body["message"]


def form(**changes) -> dict:
    data = {
        "source": "form",
        "b-name": "built",
        "b-kernel": "v4.6",
        "b-hafdbs": "1",
        "b-ha": "on",
        "b-ipa_bits": "40",
        "b-tlb": "on",
        "map-0-ipa": "0x8000_0000",
        "map-0-pa": "0x4000_0000",
        "map-0-size": "4K",
        "map-0-s2ap": "rw",
        "map-0-count": "2",
        "map-2-ipa": "0x8020_0000",
        "map-2-pa": "0x4020_0000",
        "map-2-size": "2M",
        "map-2-s2ap": "ro",
        "map-2-af": "on",
        "map-2-count": "1",
        "actor-0-name": "vcpu0",
        "actor-0-kind": "vcpu",
        "actor-0-do": "read 0x8000_0000\nwrite 0x8000_1000",
        "actor-1-name": "host0",
        "actor-1-kind": "host",
        "actor-1-do": "set_readonly 0x8000_0000; age 0x8020_0000 2M",
    }
    data.update(changes)
    return data


def test_the_form_builder_makes_a_scenario(client):
    response = client.post("/sessions/new", form())
    assert response.status_code == 302, response.content.decode()[:2000]
    session = DebugSession.objects.get()
    assert session.origin == "form"
    sc = parse_scenario(session.scenario_text)
    assert sc.kernel == "v4.6" and sc.machine.ha is True and sc.machine.tlb is True
    assert [(m.ipa, m.size, m.count, m.af, m.s2ap) for m in sc.maps] == [
        (0x8000_0000, 4096, 2, False, "rw"),
        (0x8020_0000, 2 << 20, 1, True, "ro"),
    ]
    assert [[op.text for op in a.ops] for a in sc.actors] == [
        ["read 0x8000_0000", "write 0x8000_1000"],
        ["set_readonly 0x8000_0000", "age 0x8020_0000 2M"],
    ]


@pytest.mark.parametrize(
    "changes, named, field",
    [
        ({"actor-1-do": "set_readonly 0x8000_0000; explode"}, "form: actor[1].do[1]", "actor-1-do"),
        ({"map-2-ipa": "0x8020_1000"}, "form: map[1].ipa", "map-2-ipa"),
        ({"map-0-pa": "zz"}, "form: map[0].pa", "map-0-pa"),
        ({"actor-1-name": "vcpu0"}, "form: actor[1].name", "actor-1-name"),
        ({"b-hafdbs": "0"}, "form: machine.ha", "b-ha"),
    ],
)
def test_form_builder_errors_name_the_key_and_mark_the_field(client, changes, named, field):
    response = client.post("/sessions/new", form(**changes))
    assert response.status_code == 400
    html = response.content.decode()
    error = re.search(r'id="scenario-error">(.*?)</div>', html, re.S)[1]
    assert named in error, error
    marked = re.search(rf'<[^>]*name="{field}"[^>]*>', html)[0]
    assert 'aria-invalid="true"' in marked
    if "zz" not in changes.values():  # (a number that is not one stops the form earlier)
        assert 'id="built-scenario"' in html  # the TOML the form produced is shown
    assert not DebugSession.objects.exists()


def test_the_form_builder_takes_any_number_of_rows_an_expect_block_and_tlb_preloads(client):
    data = form(
        **{
            f"map-{i}-{k}": v
            for i in (7, 11, 30, 31, 40)
            for k, v in (
                ("ipa", f"0x{0x8100_0000 + i * 0x1000:x}"),
                ("pa", f"0x{0x4100_0000 + i * 0x1000:x}"),
            )
        },
        **{"actor-5-name": "vcpu1", "actor-5-kind": "vcpu", "actor-5-do": "read 0x8000_1000"},
        **{"actor-9-name": "host1", "actor-9-kind": "host", "actor-9-do": "flush_tlb"},
        **{"actor-0-tlb": "0x8000_0000, 0x8000_1000"},
        **{
            "x-always": "0x8000_0000: s2ap=ro",
            "x-sometimes": "0x8000_0000: af=0\n0x8000_0000: af=1",
        },
        **{"x-violations": "exactly", "x-violation-no_lost_update": "on"},
    )
    response = client.post("/sessions/new", data)
    assert response.status_code == 302, response.content.decode()[:3000]
    sc = parse_scenario(DebugSession.objects.get().scenario_text)
    assert len(sc.maps) == 7 and sc.maps[-1].ipa == 0x8100_0000 + 40 * 0x1000
    assert [a.name for a in sc.actors] == ["vcpu0", "host0", "vcpu1", "host1"]
    assert sc.actors[0].tlb == (0x8000_0000, 0x8000_1000)
    assert [p.text for p in sc.expect.always] == ["0x8000_0000: s2ap=ro"]
    assert len(sc.expect.sometimes) == 2 and sc.expect.never == ()
    assert sc.expect.violations == ("no_lost_update",)


def test_form_builder_errors_in_the_expect_block_and_preloads_mark_their_field(client):
    for changes, field in (
        ({"x-never": "0x8000_0000: colour=blue"}, "x-never"),
        ({"actor-0-tlb": "0x9999_0000"}, "actor-0-tlb"),
    ):
        response = client.post("/sessions/new", form(**changes))
        assert response.status_code == 400
        html = response.content.decode()
        marked = re.search(rf'<[^>]*name="{field}"[^>]*>', html)[0]
        assert 'aria-invalid="true"' in marked, (
            field,
            re.search(r'id="scenario-error">(.*?)</div>', html, re.S)[1],
        )
        # what was posted is kept, rows and all
        assert 'name="map-2-ipa" value="0x8020_0000"' in html


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_every_example_fills_the_form_and_the_form_rebuilds_it(client, path):
    html = client.get(f"/?from={path.stem}").content.decode()
    values = {}
    for m in re.finditer(r'<(input|textarea|select)[^>]*name="([^"]+)"[^>]*>', html):
        name = m[2]
        if "__i__" in name or name in ("csrfmiddlewaretoken", "from", "source"):
            continue
        if name.startswith(("b-", "map-", "actor-", "x-")):
            values[name] = _field_value(html, m)
    built = parse_scenario(scenarios.build_from_form(values).text)
    original = parse_scenario(path.read_text())
    # (the form's description is one line)
    one_line = dataclasses.replace(original, description=" ".join(original.description.split()))
    assert built == one_line, path.name


@pytest.mark.parametrize(
    "path", sorted((ROOT / "scenarios" / "bugs").glob("*.toml")), ids=lambda p: p.stem
)
def test_every_bug_of_the_catalogue_round_trips_through_the_form(path):
    """Commits, fixes and every [expect] key (cycles included) survive the builder."""
    built = parse_scenario(scenarios.build_from_form(scenarios.form_values(path.read_text())).text)
    original = parse_scenario(path.read_text())
    one_line = dataclasses.replace(original, description=" ".join(original.description.split()))
    assert built == one_line, path.name


def _field_value(html: str, m) -> str:
    tag, start = m[1], m.end()
    if tag == "textarea":
        import html as html_lib

        return html_lib.unescape(html[start : html.index("</textarea>", start)])
    if tag == "select":
        body = html[start : html.index("</select>", start)]
        chosen = re.search(r'<option(?: value="([^"]*)")?[^>]*selected[^>]*>([^<]*)', body)
        return chosen[1] if chosen[1] is not None else chosen[2]
    if 'type="checkbox"' in m[0]:
        return "on" if " checked" in m[0] else ""
    value = re.search(r'value="([^"]*)"', m[0])
    import html as html_lib

    return html_lib.unescape(value[1]) if value else ""


def test_fork_at_a_position(client):
    session, control, view = recorded_session()
    response = client.post(
        f"/sessions/{session.id}/fork",
        data=json.dumps({"token": view.token, "position": 3}),
        content_type="application/json",
    )
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["url"].endswith("?at=3")
    fork = DebugSession.objects.get(pk=body["session"])
    assert fork.parent == session
    assert Decision.recorded(fork) == Decision.recorded(session)[:3]
    bad = client.post(
        f"/sessions/{session.id}/fork",
        data=json.dumps({"token": control.token, "position": 99}),
        content_type="application/json",
    )
    assert bad.status_code == 400 and "position 99" in bad.json()["message"]


def test_fork_with_another_kernel_and_ha(client):
    session, control, _view = recorded_session()
    response = client.post(
        f"/sessions/{session.id}/fork",
        data=json.dumps({"kernel": "seed", "ha": True, "hd": False}),
        content_type="application/json",
        HTTP_X_PTVIZ_TOKEN=control.token,
    )
    assert response.status_code == 201, response.content
    fork = DebugSession.objects.get(pk=response.json()["session"])
    sc = parse_scenario(fork.scenario_text)
    assert fork.kernel == "seed" and sc.machine.ha is True and sc.machine.hd is False
    assert not fork.decisions.exists()
    old = parse_scenario(session.scenario_text)
    assert [a.ops for a in sc.actors] == [a.ops for a in old.actors] and sc.maps == old.maps
    bad = client.post(
        f"/sessions/{session.id}/fork",
        data=json.dumps({"hd": True}),
        content_type="application/json",
        HTTP_X_PTVIZ_TOKEN=control.token,
    )
    assert bad.status_code == 400 and "machine.hd" in bad.json()["message"]


def test_a_what_if_fork_is_titled_and_described_as_the_what_if(client):
    session, control, _view = recorded_session()
    response = client.post(
        f"/sessions/{session.id}/fork",
        data=json.dumps({"kernel": "seed", "ha": False}),
        content_type="application/json",
        HTTP_X_PTVIZ_TOKEN=control.token,
    )
    fork = DebugSession.objects.get(pk=response.json()["session"])
    sc = parse_scenario(fork.scenario_text)
    old = parse_scenario(session.scenario_text)
    assert sc.name == f"what-if kernel seed, HA off: {old.name}" == fork.name
    assert sc.description.startswith(
        f'What-if copy of "{old.name}" with kernel seed, HA off (the original: kernel v4.6, HA on).'
    )
    page = bootstrap(client.get(response.json()["url"]).content.decode())
    assert page["name"] == sc.name and page["description"] == sc.description


def test_an_edited_scenario_is_re_run_as_a_fork_and_a_bad_edit_names_the_key(client):
    session, control, _view = recorded_session()
    page = bootstrap(client.get(f"/s/{control.token}/").content.decode())
    assert page["scenario"] == session.scenario_text
    edited = session.scenario_text.replace(
        'do = ["read 0x8000_0000"]', 'do = ["write 0x8000_0000"]'
    )

    def post(text):
        return client.post(
            f"/sessions/{session.id}/fork",
            data=json.dumps({"scenario": text}),
            content_type="application/json",
            HTTP_X_PTVIZ_TOKEN=control.token,
        )

    bad = post(edited.replace("write 0x8000_0000", "explode 0x8000_0000"))
    assert bad.status_code == 400
    assert bad.json()["where"] == "actor[0].do[0]" and "unknown operation" in bad.json()["message"]
    toml = post(edited.replace("[[map]]", "[[map]"))
    assert toml.status_code == 400 and toml.json()["where"].startswith("line ")
    assert DebugSession.objects.count() == 1
    good = post(edited)
    assert good.status_code == 201
    fork = DebugSession.objects.get(pk=good.json()["session"])
    assert fork.parent == session and fork.scenario_text == edited
    assert not fork.decisions.exists()


def test_fork_a_counterexample_schedule(client):
    from engine.report import explore_json
    from engine.spec import build_spec

    session, control, _view = recorded_session([])
    result = explore_json(build_spec(parse_scenario(V46)), "cython", 100_000)
    schedule = result["violations"][0]["schedule"]
    response = client.post(
        f"/sessions/{session.id}/fork",
        {"token": control.token, "schedule": ",".join(schedule)},
    )
    assert response.status_code == 302 and response["Location"].endswith("?at=0")
    fork = DebugSession.objects.exclude(pk=session.pk).get()
    names = ["vcpu0", "host0"]
    assert [names[d[1]] for d in Decision.recorded(fork)] == schedule
    bad = client.post(
        f"/sessions/{session.id}/fork",
        data=json.dumps({"token": control.token, "schedule": ["vcpu0", "ghost"]}),
        content_type="application/json",
    )
    assert bad.status_code == 400 and "schedule entry 2 ('ghost')" in bad.json()["message"]


def test_endpoints_need_a_token_of_the_session(client):
    session, control, view = recorded_session()
    other, other_control, _ = recorded_session([])
    url = f"/sessions/{session.id}/fork"
    assert client.post(url, {"position": 1}, **JSON).status_code == 403
    assert (
        client.post(url, {"position": 1, "token": other_control.token}, **JSON).status_code == 403
    )
    assert (
        client.post(
            "/sessions/00000000-0000-0000-0000-000000000000/fork", {"token": "x"}, **JSON
        ).status_code
        == 404
    )
    assert client.get(f"/sessions/{session.id}/recording.json").status_code == 403
    assert (
        client.get(f"/sessions/{session.id}/recording.json?token={view.token}").status_code == 200
    )


def test_share_links(client):
    session, control, view = recorded_session()
    url = f"/sessions/{session.id}/links"
    made = client.post(url, {"token": control.token, "role": "control"}, **JSON)
    assert made.status_code == 201
    link = ShareLink.objects.get(token=made.json()["token"])
    assert link.role == "control" and link.session == session
    assert made.json()["url"].endswith(f"/s/{link.token}/")
    assert client.post(url, {"token": view.token, "role": "view"}, **JSON).status_code == 201
    refused = client.post(url, {"token": view.token, "role": "control"}, **JSON)
    assert refused.status_code == 403 and refused.json()["code"] == "forbidden"
    assert client.post(url, {"token": control.token, "role": "admin"}, **JSON).status_code == 400


def test_recording_export_and_import(client):
    session, _control, view = recorded_session(LOST)
    response = client.get(f"/sessions/{session.id}/recording.json?token={view.token}")
    assert "attachment" in response["Content-Disposition"]
    rec = response.json()
    live = LiveSession(V46)
    for name in LOST:
        live.step(name)
    assert rec["decisions"] == live.decisions and rec["final_hash"] == live.state_hash()
    upload = SimpleUploadedFile("rec.json", json.dumps(rec).encode(), "application/json")
    imported = client.post("/recordings/import", {"recording": upload})
    assert imported.status_code == 302
    new = DebugSession.objects.get(origin="import:rec.json")
    assert Decision.recorded(new) == rec["decisions"]


@pytest.mark.parametrize(
    "tamper, message",
    [
        (lambda rec: rec.update(final_hash="0" * 32), "final state hash differs"),
        (lambda rec: rec["decisions"].append(["step", 7]), "decision 10"),
        (lambda rec: rec.update(scenario=rec["scenario"].replace("v4.6", "v5")), "kernel"),
        (lambda rec: rec.update(format="nope"), "not a ptviz-recording/1 recording"),
        (lambda rec: rec.update(decisions=[["step"]]), "malformed"),
    ],
)
def test_a_bad_recording_is_refused_and_nothing_is_created(client, tamper, message):
    session, _control, view = recorded_session(LOST)
    rec = client.get(f"/sessions/{session.id}/recording.json?token={view.token}").json()
    tamper(rec)
    before = (DebugSession.objects.count(), Decision.objects.count(), Checkpoint.objects.count())
    response = client.post(
        "/recordings/import", data=json.dumps(rec), content_type="application/json"
    )
    assert response.status_code == 400 and message in response.json()["message"]
    upload = SimpleUploadedFile("bad.json", json.dumps(rec).encode(), "application/json")
    page = client.post("/recordings/import", {"recording": upload})
    assert page.status_code == 400 and message in page.content.decode().replace("&#x27;", "'")
    after = (DebugSession.objects.count(), Decision.objects.count(), Checkpoint.objects.count())
    assert before == after
    assert (
        client.post(
            "/recordings/import", data=b"{not json", content_type="application/json"
        ).status_code
        == 400
    )


def test_a_long_recording_keeps_checkpoints_and_resumes_from_them(client):
    from ptviz.engine_worker import store

    text = (ROOT / "scenarios" / "wp_range_seed.toml").read_text()
    live = records.check_scenario(text, "wp")
    live.run(10_000)
    for _ in range(150):
        live.inject("vcpu0", "read 0x8000_0000")
        live.run(10_000)
    assert len(live.decisions) > 300
    session, control, _ = records.create(live, "test")
    assert list(session.checkpoints.values_list("position", flat=True)) == [256]
    _row, again, stored = store.load(str(session.id))
    assert stored == {(0, 256)} and again.state_hash() == live.state_hash()
    rec = client.get(f"/sessions/{session.id}/recording.json?token={control.token}").json()
    assert [c["position"] for c in rec["checkpoints"]] == [0, 256]


def test_the_protocol_page(client):
    html = client.get("/docs/protocol").content.decode()
    assert "<h2" in html and "Browser to server" in html and "<table>" in html
    assert "<code>resync</code>" in html


def test_the_fork_changes_the_scenario_text_faithfully():
    from ptviz.debugger.scenarios import with_machine

    for path in EXAMPLES:
        text = path.read_text()
        doc = tomllib.loads(text)
        again = tomllib.loads(with_machine(text))
        assert {k: v for k, v in again.items() if k != "machine"} == {
            k: v for k, v in doc.items() if k != "machine"
        }
        assert parse_scenario(with_machine(text)) == parse_scenario(text)


def test_static_files_are_served_by_the_asgi_app(settings, tmp_path):
    from ptviz.asgi import application

    (tmp_path / "js").mkdir()
    (tmp_path / "js" / "probe.js").write_text("export const probe = 1;\n")
    settings.STATICFILES_DIRS = [tmp_path]

    async def get(path):
        comm = ApplicationCommunicator(
            application,
            {
                "type": "http",
                "http_version": "1.1",
                "method": "GET",
                "path": path,
                "raw_path": path.encode(),
                "query_string": b"",
                "headers": [(b"host", b"localhost")],
                "client": ("127.0.0.1", 1),
                "server": ("127.0.0.1", 8000),
            },
        )
        await comm.send_input({"type": "http.request", "body": b""})
        start = await comm.receive_output(10)
        body = b""
        while True:
            chunk = await comm.receive_output(10)
            body += chunk.get("body", b"")
            if not chunk.get("more_body"):
                break
        return start["status"], body

    status, body = arun(get("/static/js/probe.js"))
    assert status == 200 and body == b"export const probe = 1;\n"
    # again (from memory), then edited: served as it is now
    assert arun(get("/static/js/probe.js")) == (200, b"export const probe = 1;\n")
    probe = tmp_path / "js" / "probe.js"
    probe.write_text("export const probe = 22;\n")
    os.utime(probe, ns=(probe.stat().st_atime_ns, probe.stat().st_mtime_ns + 10**9))
    assert arun(get("/static/js/probe.js")) == (200, b"export const probe = 22;\n")
    assert arun(get("/static/js/nope.js"))[0] == 404
    # the session page's bundle: app.js and what it imports, as they are now
    (tmp_path / "js" / "app.js").write_text(
        'import { probe as p } from "./probe.js";\nexport const app = p;\n'
    )
    status, body = arun(get("/static/js/app.bundle.js"))
    assert status == 200 and b"export" not in body
    assert body.index(b"const probe = 22;") < body.index(b"const { probe: p } = __module_probe;")
    (tmp_path / "js" / "app.js").write_text("export default 1;\n")  # (not bundlable)
    assert arun(get("/static/js/app.bundle.js"))[0] == 404
    status, body = arun(get("/"))
    assert status == 200 and b"Start a debug session" in body


@pytest.mark.django_db(transaction=True)
def test_websocket_refuses_bad_links_and_foreign_origins(embedded_deployment):
    session, control, _view = recorded_session([])
    _other, other_control, _ = recorded_session([])

    async def body():
        from channels.testing import WebsocketCommunicator

        from ptviz.asgi import application

        v = await Viewer.open(session.id, other_control.token)
        err = await v.type("error")
        assert err["code"] == "forbidden"
        closed = await v.comm.receive_output(5)
        assert closed == {"type": "websocket.close", "code": 4003}
        comm = WebsocketCommunicator(
            application,
            f"/ws/sessions/{session.id}/?token={control.token}",
            headers=[(b"origin", b"http://evil.example")],
        )
        connected, _ = await comm.connect(timeout=5)
        assert not connected
        ok = WebsocketCommunicator(
            application, f"/ws/sessions/{session.id}/?token={control.token}", headers=ORIGIN
        )
        assert (await ok.connect(timeout=5))[0]
        await ok.disconnect()

    arun(body())
