"""Share links (docs/protocol.md, "Links"): the creator's link owns the session, makes
named and expiring links, lists and revokes them; a revoked or expired link gets a clear
page and its open websockets are closed; a page URL names a moment."""

from __future__ import annotations

import json
import time
from datetime import timedelta

import pytest
from asgiref.sync import sync_to_async
from django.test import Client
from django.utils import timezone
from test_live import make_session
from webhelpers import Viewer, arun

from ptviz.debugger.models import ShareLink

pytestmark = pytest.mark.django_db(transaction=True)


def post(client, url, token, **fields):
    return client.post(url, json.dumps({"token": token, **fields}), content_type="application/json")


def test_the_owner_makes_named_expiring_links_lists_and_revokes_them():
    session, control, view = make_session()
    assert control.owner and not view.owner
    c = Client()
    base = f"/sessions/{session.id}/links"
    made = post(c, base, control.token, role="view", label="for alice", expires_in=3600)
    assert made.status_code == 201
    alice = made.json()
    assert alice["label"] == "for alice" and alice["role"] == "view" and alice["expires"]
    listed = c.get(base, HTTP_X_PTVIZ_TOKEN=control.token).json()["links"]
    assert [x["label"] for x in listed] == ["", "", "for alice"]
    assert [x["owner"] for x in listed] == [True, False, False]
    # Others may neither list, revoke nor make named links.
    assert c.get(base, HTTP_X_PTVIZ_TOKEN=view.token).status_code == 403
    assert post(c, f"{base}/{alice['token']}/revoke", view.token).status_code == 403
    assert post(c, base, view.token, role="view", label="x").status_code == 403
    assert post(c, base, control.token, role="view", expires_in=5).status_code == 400
    revoked = post(c, f"{base}/{alice['token']}/revoke", control.token)
    assert revoked.status_code == 200 and revoked.json()["state"] == "revoked"
    page = c.get(f"/s/{alice['token']}/")
    assert page.status_code == 410 and b"revoked this share link" in page.content
    assert post(c, f"{base}/{control.token}/revoke", control.token).status_code == 400


def test_an_expired_link_gets_a_clear_page_and_no_websocket(mode):
    session, control, _view = make_session()
    old = ShareLink.objects.create(
        session=session, role="view", expires=timezone.now() - timedelta(seconds=1)
    )
    page = Client().get(f"/s/{old.token}/")
    assert page.status_code == 410 and b"expired" in page.content

    async def body():
        v = await Viewer.open(session.id, old.token)
        err = await v.type("error")
        assert err["code"] == "revoked" and "expired" in err["message"]
        closed = await v.comm.receive_output(timeout=5)
        assert closed == {"type": "websocket.close", "code": 4010}
        await v.close()  # (the browser answers the close frame: the consumer ends)

    arun(body())


def test_revoking_a_link_closes_its_open_websockets_within_a_second(mode):
    session, control, view = make_session()
    c = Client()

    async def body():
        v = await Viewer.open(session.id, view.token)
        await v.start()
        owner = await Viewer.open(session.id, control.token)
        await owner.start()
        started = time.monotonic()
        await sync_to_async(post)(
            c, f"/sessions/{session.id}/links/{view.token}/revoke", control.token
        )
        err = await v.type("error", timeout=5)
        while True:
            out = await v.comm.receive_output(timeout=5)
            if out["type"] == "websocket.close":
                break
        took = time.monotonic() - started
        assert err["code"] == "revoked" and out["code"] == 4010
        # The owner's own socket stays open and working.
        await owner.ok("step", actor="vcpu0")
        await owner.close()
        await v.close()
        return took

    took = arun(body())
    assert took < 1.0, f"closed after {took:.2f} s"


def test_a_page_url_names_a_moment_and_a_malformed_one_gets_a_notice():
    session, control, view = make_session()
    c = Client()

    def boot(url):
        html = c.get(url).content.decode()
        start = html.index('<script id="bootstrap" type="application/json">') + 47
        return json.loads(html[start : html.index("</script>", start)])

    b = boot(f"/s/{view.token}/?at=b2-7&h=00ff00ff&d=0x1000003000")
    assert (b["at"], b["focus"], b["notice"]) == ("b2-7", "0x1000003000", None)
    # the socket opens there too, with the descriptor (the engine subscribes the tables
    # down to it)
    assert b["ws"].endswith("&at=b2-7&h=00ff00ff&d=0x1000003000")
    assert boot(f"/s/{view.token}/?step=3")["at"] == "3"  # the older spelling
    for bad in ("abc", "-1", "b-3"):
        b = boot(f"/s/{view.token}/?at={bad}")
        assert b["at"] is None and "names no moment" in b["notice"]
    # A control link's "copy link to this moment" hands on a view link.
    shared = boot(f"/s/{control.token}/")["share"]
    assert ShareLink.objects.get(token=shared).role == "view"
