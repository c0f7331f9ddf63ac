"""Hostile HTTP input (issue 9, items 1, 7, 11, 12): every body is capped before it is read,
bad input gets a 4xx naming what is wrong (never a 500), server errors reach the log, and
secrets stay secret."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys

import pytest
from asgiref.testing import ApplicationCommunicator
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from webhelpers import ROOT, arun

from engine.session import MAX_VERIFIED_CHECKPOINTS, LiveSession
from ptviz.debugger.models import DebugSession
from ptviz.secretkey import RedactingFilter, local_secret_key, redact_url

pytestmark = pytest.mark.django_db

V46 = (ROOT / "scenarios" / "seed_race_v4.6.toml").read_text()
DEEP = "[" * 100_000 + "]" * 100_000
PASSWORD = "hunter2-redis-pw"  # (up here: the debug page shows the source around a raise)


async def asgi_request(method, path, body=b"", headers=(), chunks=None):
    """One request through the whole ASGI application (as daphne runs it)."""
    from ptviz.asgi import application

    comm = ApplicationCommunicator(
        application,
        {
            "type": "http",
            "http_version": "1.1",
            "method": method,
            "path": path,
            "raw_path": path.encode(),
            "query_string": b"",
            "headers": [(b"host", b"localhost"), *headers],
            "client": ("127.0.0.1", 1),
            "server": ("127.0.0.1", 8000),
        },
    )
    for n, chunk in enumerate(chunks or [body]):
        more = chunks is not None and n < len(chunks) - 1
        await comm.send_input({"type": "http.request", "body": chunk, "more_body": more})
    start = await comm.receive_output(20)
    out = b""
    while True:
        part = await comm.receive_output(20)
        out += part.get("body", b"")
        if not part.get("more_body"):
            break
    await comm.wait(5)
    return start["status"], out


def test_a_body_over_the_limit_is_refused_before_it_is_read(settings):
    limit = settings.PTVIZ_MAX_BODY_MB << 20
    # by its Content-Length: nothing is read
    status, body = arun(
        asgi_request(
            "POST",
            "/recordings/import",
            headers=[(b"content-length", str(limit + 1).encode())],
        )
    )
    assert status == 413 and json.loads(body)["code"] == "too_big"
    # chunked, no length: refused once the bytes received pass the limit
    chunk = b"x" * (1 << 20)
    chunks = [chunk] * (settings.PTVIZ_MAX_BODY_MB + 2)
    status, body = arun(asgi_request("POST", "/recordings/import", chunks=chunks), 120)
    assert status == 413
    assert DebugSession.objects.count() == 0


def test_uploads_and_pastes_are_held_to_their_limits(client):
    big = "#" * (4 * 1024 * 1024 + 1)
    r = client.post("/sessions/new", {"scenario": big}, HTTP_ACCEPT="application/json")
    assert r.status_code == 400 and "4 MiB" in r.json()["message"]
    r = client.post(
        "/sessions/new",
        {"scenario_file": SimpleUploadedFile("big.toml", big.encode())},
        HTTP_ACCEPT="application/json",
    )
    assert r.status_code == 400 and "4 MiB" in r.json()["message"]
    from ptviz.debugger import records

    size = records.MAX_RECORDING_BYTES + 1
    r = client.post(
        "/recordings/import",
        {"recording": SimpleUploadedFile("big.json", b" " * size)},
        HTTP_ACCEPT="application/json",
    )
    assert r.status_code == 400 and "32 MiB" in r.json()["message"]
    assert DebugSession.objects.count() == 0


@pytest.mark.parametrize(
    "body",
    [
        {"scenario": 5},
        {"scenario": ["a"]},
        {"example": {"x": 1}},
        {"source": 3, "scenario": "x"},
        {"scenario": None},
    ],
)
def test_ill_typed_json_fields_are_named(client, body):
    r = client.post("/sessions/new", json.dumps(body), content_type="application/json")
    assert r.status_code == 400, r.content
    assert r.json()["message"]


@pytest.mark.parametrize("path", ["/sessions/new", "/recordings/import"])
def test_deeply_nested_json_is_a_400(client, path):
    r = client.post(path, DEEP, content_type="application/json")
    assert r.status_code == 400 and "nested" in r.json()["message"]
    r = client.post(path, '{"a": ' + DEEP + "}", content_type="application/json")
    assert r.status_code == 400


@pytest.mark.parametrize(
    "path", ["/static/../ptviz/settings.py", "/static/..%2Fptviz%2Fsettings.py", "/static/%2e%2e/x"]
)
def test_paths_out_of_the_static_directory_are_404(path):
    status, body = arun(asgi_request("GET", path))
    assert status == 404, body
    assert b"SECRET_KEY" not in body


def test_server_errors_are_logged(monkeypatch, caplog):
    from ptviz.debugger import views

    def boom(*args, **kwargs):
        raise RuntimeError("an unforeseen bug")

    monkeypatch.setattr(views, "scenario_outline", boom)
    _session_and_link = _make_session()
    c = Client(raise_request_exception=False)
    with caplog.at_level(logging.ERROR, logger="django.request"):
        r = c.get(f"/s/{_session_and_link}/")
    assert r.status_code == 500
    assert "an unforeseen bug" in caplog.text
    handlers = logging.getLogger("django.request").handlers
    assert any(isinstance(h, logging.StreamHandler) for h in handlers)


def _make_session() -> str:
    from ptviz.debugger import records

    _s, control, _v = records.create(records.check_scenario(V46, "v46.toml"), "test")
    return control.token


def test_a_crafted_recording_costs_a_bounded_number_of_hash_checks(client, monkeypatch):
    """Hundreds of listed checkpoints: only MAX_VERIFIED_CHECKPOINTS (and the final hash)
    are recomputed; a wrong hash among the checked ones is still caught."""
    live = LiveSession(V46)
    names = ["vcpu0"] * 3 + ["host0"] * 4
    cps = []
    for name in names * 1:
        live.step(name)
        cps.append({"position": live.position, "hash": live.state_hash()})
    rec = live.export()
    rec["checkpoints"] = cps * 60  # 420 entries for 7 positions
    calls = []
    real = LiveSession.state_hash

    def counted(self):
        calls.append(1)
        return real(self)

    monkeypatch.setattr(LiveSession, "state_hash", counted)
    r = client.post("/recordings/import", json.dumps(rec), content_type="application/json")
    assert r.status_code == 201, r.content
    assert len(calls) <= MAX_VERIFIED_CHECKPOINTS + 1
    rec["final_hash"] = "0" * 64
    r = client.post("/recordings/import", json.dumps(rec), content_type="application/json")
    assert r.status_code == 400 and "final state hash" in r.json()["message"]


def test_the_session_page_parses_its_scenario_once(client, monkeypatch):
    from ptviz.debugger import views

    token = _make_session()
    views.scenario_outline.cache_clear()
    assert client.get(f"/s/{token}/").status_code == 200
    monkeypatch.setattr(views, "parse_scenario", None)  # a second parse would fail
    assert client.get(f"/s/{token}/").status_code == 200


# --- secrets --------------------------------------------------------------------------
def test_the_local_secret_key_is_random_kept_and_private(tmp_path):
    path = tmp_path / "key"
    key = local_secret_key(path)
    assert len(key) >= 50 and local_secret_key(path) == key
    assert os.stat(path).st_mode & 0o077 == 0
    assert local_secret_key(tmp_path / "other") != key


def test_serving_beyond_loopback_needs_a_secret_key(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "SECRET_KEY"}
    env["DATABASE_URL"] = f"sqlite:///{tmp_path}/db.sqlite3"
    out = subprocess.run(
        [sys.executable, "manage.py", "serve", "--host", "0.0.0.0", "--port", "1", "--no-migrate"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode != 0
    assert "SECRET_KEY" in out.stderr and "0.0.0.0" in out.stderr


def test_the_debug_page_never_shows_the_redis_password(settings):
    url = f"redis://:{PASSWORD}@127.0.0.1:6399/0"
    assert redact_url(url) == "redis://:********@127.0.0.1:6399/0"
    assert redact_url("postgres://u:p%40ss@db/x") == "postgres://u:********@db/x"
    assert redact_url("redis://127.0.0.1:6379/0") == "redis://127.0.0.1:6379/0"
    settings.REDIS_URL = url
    settings.CHANNEL_LAYERS = {"default": {"CONFIG": {"hosts": [{"address": url}]}}}
    shown = repr(RedactingFilter().get_safe_settings())
    assert PASSWORD not in shown and "********" in shown
    # and the technical 500 page itself
    from django.test import RequestFactory
    from django.views.debug import technical_500_response

    settings.DEBUG = True
    del url, shown  # (the page lists this frame's locals too)
    try:
        raise ValueError("x")
    except ValueError:
        html = technical_500_response(RequestFactory().get("/"), *sys.exc_info()).content
    assert PASSWORD.encode() not in html and b"127.0.0.1:6399" in html
