"""Bug reports in the browser (issue 7; docs/bundle.md, docs/protocol.md "HTTP"):

- GET  /sessions/<id>/bundle?moment=ID   the bundle of the path to a moment (a node of
  the session's tree, on any branch; `?position=N` on the head's path; default its tip)
- GET  /sessions/<id>/report?moment=ID&format=text|markdown   the `python -m engine
  report` text of that path
- POST /bundles/import   a bundle file -> a new session, its page opened at the bundle's
  moment (`?at=N&h=HASH`: the viewer's cursor there, the state hash checked); with
  `Accept: application/x-ndjson` the answer streams `{"progress": done, "total": n}`
  lines while the path replays, then `{"url": ...}` or `{"error": ...}`
- POST /dumps/import     a KVM stage2_page_tables dump -> a new session of it

Everything is verified in full before anything is stored (records.create is one
transaction): a bad file leaves nothing behind.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re

from asgiref.sync import sync_to_async
from django.http import HttpResponse, StreamingHttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET, require_POST

from engine import bundle as BD
from engine.core import new_machine
from engine.history import HistoryError
from engine.mailreport import Report, play
from engine.ptdump import DumpError, scenario_from_dump
from engine.sizes import is_digits
from engine.twin import EngineError
from ptviz.debugger import records
from ptviz.debugger.records import InputError, check_scenario, engine_name
from ptviz.debugger.views import (
    _session_and_link,
    created_response,
    gallery_context,
    json_error,
    page_url,
    wants_json,
)

NDJSON = "application/x-ndjson"
# A dump's leaf line (about 75 bytes, and at most one unmapped line between two) becomes a
# [[map]] of about 84: a dump over 8 MiB makes a scenario over the 4 MiB limit anyway,
# after seconds of parsing.
MAX_DUMP_BYTES = 8 * 1024 * 1024
log = logging.getLogger("django.request")  # (where server errors are logged)


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-")[:60] or "session"


def _path_to(request, session_id):
    """(session, live session, moment) for ?moment=ID (a node of the session's tree, on
    any branch: where the viewer is) or ?position=N (on the head's path); default: the
    head's tip. The live session is moved to no other node."""
    session, _link = _session_and_link(request, session_id, {})
    live = records.load_live(session)
    moment = request.GET.get("moment", "").strip()
    raw = request.GET.get("position", "")
    if moment:
        try:
            branch, position = live.tree.resolve(moment)
        except HistoryError as exc:
            raise InputError(f"moment: {exc}", where="moment") from None
    else:
        branch, position = live.branch, len(live.decisions)
        if raw != "":
            if not is_digits(raw) or int(raw) > len(live.decisions):
                raise InputError(
                    f"position {raw!r} is not in 0..{len(live.decisions)}", where="position"
                )
            position = int(raw)
    return session, live, live.tree.moment(branch, position)


@require_GET
def bundle_export(request, session_id):
    try:
        session, live, moment = _path_to(request, session_id)
    except InputError as exc:
        return json_error(exc.code, exc.message, 400, exc.where)
    except PermissionError as exc:
        return json_error("forbidden", str(exc), 403)
    b = BD.from_session(live, moment=moment)
    response = HttpResponse(BD.dumps(b), content_type="application/json; charset=utf-8")
    name = f"ptviz-{_slug(session.name)}-at-{moment}.bundle.json"
    response["Content-Disposition"] = f'attachment; filename="{name}"'
    return response


@require_GET
def report(request, session_id):
    try:
        session, live, moment = _path_to(request, session_id)
    except InputError as exc:
        return json_error(exc.code, exc.message, 400, exc.where)
    except PermissionError as exc:
        return json_error("forbidden", str(exc), 403)
    machine = new_machine(live.spec, live.engine)
    rows = play(live.spec, machine, live.path_to(moment))
    rep = Report(live.spec, machine, rows)
    text = rep.markdown() if request.GET.get("format") == "markdown" else rep.text()
    return HttpResponse(text, content_type="text/plain; charset=utf-8")


# --- bundle import ------------------------------------------------------------------------------
def _bundle_bytes(request) -> tuple[bytes, str]:
    upload = request.FILES.get("bundle")
    if upload is None:
        raise InputError("no bundle: upload a .bundle.json file", "bundle")
    return upload.read(), upload.name


def _import(data: bytes, label: str, progress=None):
    """(session, control link, view link), bundle: the bundle verified and replayed, then
    stored (its decisions as runs, only the checkpoints worth storing)."""
    try:
        b = BD.loads(data, max_scenario=records.MAX_SCENARIO_BYTES)
        live = BD.replay(b, engine=engine_name(), progress=progress)
    except BD.BundleError as exc:
        raise InputError(f"{label}: {exc}", "bundle") from None
    created = records.create(live, f"bundle:{label}"[:200], checkpoints=records.worth_storing(live))
    return created, b


def _hash_prefix(b: BD.Bundle) -> str:
    """The moment's state hash (verified by the replay), for the page to check."""
    return b.hashes[b.position][0][:12]


def _error_page(request, message: str):
    ctx = gallery_context(request, import_error=message, tab="import")
    return render(request, "ptviz/gallery.html", ctx, status=400)


@require_POST
def bundle_import(request):
    try:
        data, label = _bundle_bytes(request)
    except InputError as exc:
        if wants_json(request) or NDJSON in request.headers.get("Accept", ""):
            return json_error(exc.code, exc.message, 400, exc.where)
        return _error_page(request, exc.message)
    if NDJSON in request.headers.get("Accept", ""):
        return StreamingHttpResponse(_import_stream(request, data, label), content_type=NDJSON)
    try:
        (session, control, view), b = _import(data, label)
    except InputError as exc:
        if wants_json(request):
            return json_error(exc.code, exc.message, 400, exc.where)
        return _error_page(request, exc.message)
    return created_response(request, session, control, view, b.position, _hash_prefix(b))


async def _import_stream(request, data: bytes, label: str):
    """NDJSON: progress lines while the path replays (in a worker thread), then the
    session's URL or the one-line error."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue = asyncio.Queue()

    def progress(done: int, total: int) -> None:
        loop.call_soon_threadsafe(queue.put_nowait, {"progress": done, "total": total})

    def work():
        try:
            (session, control, view), b = _import(data, label, progress)
            return {
                "url": page_url(request, control, b.position, _hash_prefix(b)),
                "session": str(session.id),
                "moment": str(b.position),
            }
        except InputError as exc:
            return {"error": exc.message, "code": exc.code}
        except EngineError as exc:
            return {"error": f"{label}: {exc}", "code": "engine"}
        except Exception as exc:  # (the stream has begun: a 500 is no longer possible)
            log.exception("bundle import of %r failed", label)
            return {"error": f"{label}: internal error ({type(exc).__name__})", "code": "engine"}

    task = asyncio.ensure_future(sync_to_async(work, thread_sensitive=False)())
    while True:
        getter = asyncio.ensure_future(queue.get())
        done, _ = await asyncio.wait({task, getter}, return_when=asyncio.FIRST_COMPLETED)
        if getter in done:
            yield json.dumps(getter.result()) + "\n"
            continue
        getter.cancel()
        while not queue.empty():
            yield json.dumps(queue.get_nowait()) + "\n"
        yield json.dumps(task.result()) + "\n"
        return


# --- ptdump import ------------------------------------------------------------------------------
@require_POST
def dump_import(request):
    try:
        upload = request.FILES.get("dump")
        if upload is None:
            raise InputError("no dump: upload a stage2_page_tables file", "dump")
        if upload.size > MAX_DUMP_BYTES:
            raise InputError(
                f"{upload.name}: {upload.size:,} bytes, larger than "
                f"{MAX_DUMP_BYTES >> 20} MiB (its scenario would pass the "
                f"{records.MAX_SCENARIO_BYTES >> 20} MiB limit of a scenario)",
                "dump",
            )
        try:
            text = upload.read().decode()
        except UnicodeDecodeError as exc:
            raise InputError(f"{upload.name}: byte {exc.start} is not UTF-8", "dump") from None
        ipa_bits = request.POST.get("ipa_bits", "").strip()
        if ipa_bits and not is_digits(ipa_bits):
            raise InputError(f"ipa_bits {ipa_bits!r} is not a number", "dump", "ipa_bits")
        try:
            scenario = scenario_from_dump(text, upload.name, int(ipa_bits) if ipa_bits else None)
        except DumpError as exc:
            raise InputError(str(exc), "dump") from None
        live = check_scenario(scenario, upload.name)
        session, control, view = records.create(live, f"ptdump:{upload.name}"[:200])
    except InputError as exc:
        if wants_json(request):
            return json_error(exc.code, exc.message, 400, exc.where)
        return _error_page(request, exc.message)
    return created_response(request, session, control, view)
