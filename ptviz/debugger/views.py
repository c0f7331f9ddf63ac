"""HTTP pages and endpoints (docs/protocol.md, "HTTP").

Session endpoints are authorized by a share link's token (form/JSON field `token`,
header `X-Ptviz-Token` or query `?token=`). JSON requests (a JSON body or
`Accept: application/json`) get JSON answers (`url`, `session`, `links`) and errors
(`{"code", "message", "where"}`, status 400/403/404); form posts get pages.
"""

from __future__ import annotations

import json
import logging
import re
import unicodedata
from datetime import timedelta
from functools import lru_cache
from pathlib import Path

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.conf import settings
from django.http import Http404, HttpResponse, JsonResponse
from django.middleware.csrf import get_token
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone
from django.utils.html import escape
from django.utils.safestring import mark_safe
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from engine.history import HistoryError, parse_moment
from engine.scenario import parse_scenario
from ptviz import jsbundle
from ptviz import protocol as P
from ptviz.debugger import records, scenarios
from ptviz.debugger.models import ROLE_CONTROL, ROLES, DebugSession, ShareLink
from ptviz.debugger.records import MAX_SCENARIO_BYTES, InputError

log = logging.getLogger("ptviz.web")


# --- helpers ------------------------------------------------------------------------------
def wants_json(request) -> bool:
    return request.content_type == "application/json" or "application/json" in request.headers.get(
        "Accept", ""
    )


def request_data(request) -> dict:
    if request.content_type == "application/json":
        try:
            data = P.loads(request.body or b"{}")
        except ValueError as exc:
            raise InputError(f"the request body is not JSON ({exc})", "bad_request") from None
        except RecursionError:
            raise InputError(
                "the request body's JSON is nested too deeply", "bad_request"
            ) from None
        if not isinstance(data, dict):
            raise InputError("the request body must be a JSON object", "bad_request")
        return data
    return request.POST


def text_field(data, key: str) -> str:
    """A text field of a form or JSON body ("" when absent); InputError naming the key
    when a JSON body gives it another type."""
    value = data.get(key, "")
    if value is None:
        return ""
    if not isinstance(value, str):
        raise InputError(f"'{key}' must be a string", "invalid", key)
    return value


def request_token(request, data=None) -> str:
    data = data if data is not None else {}
    return str(
        request.headers.get("X-Ptviz-Token")
        or (data.get("token") if hasattr(data, "get") else "")
        or request.GET.get("token")
        or ""
    )


def link_for(session_id, token: str) -> ShareLink | None:
    """The share link of this session with this token (revoked or expired: refused)."""
    if not token:
        return None
    link = (
        ShareLink.objects.select_related("session")
        .filter(token=token, session_id=session_id)
        .first()
    )
    if link is not None and link.dead_reason():
        raise PermissionError(f"this share link was {link.dead_reason()}")
    return link


def page_url(request, link: ShareLink, step: int | None = None, h: str | None = None) -> str:
    """A link's page, opening at a moment of the first branch (`?at=N`) if given, with a
    prefix of its state hash for the page to check (`&h=`)."""
    url = request.build_absolute_uri(reverse("session-page", args=[link.token]))
    if step is None:
        return url
    return f"{url}?at={step}" + (f"&h={h}" if h else "")


def created_response(
    request, session, control, view, step: int | None = None, h: str | None = None
):
    url = page_url(request, control, step, h)
    if wants_json(request):
        return JsonResponse(
            {
                "url": url,
                "session": str(session.id),
                "name": session.name,
                "links": {"control": url, "view": page_url(request, view, step, h)},
            },
            status=201,
        )
    return redirect(url)


def json_error(code: str, message: str, status: int = 400, where: str | None = None):
    return JsonResponse({"code": code, "message": message, "where": where}, status=status)


def gallery_context(request, **extra) -> dict:
    ctx = {
        "examples": scenarios.examples(),
        "values": scenarios.builder_defaults(),
        "choices": scenarios.CHOICES,
        "error": None,
        "error_where": None,
        "error_field": None,
        "import_error": None,
        "scenario_text": "",
        "tab": "examples",
        "from_example": None,
    }
    ctx.update(extra)
    ctx["builder"] = builder_view(ctx["values"], ctx["error_field"])
    return ctx


MAP_FIELDS = ("ipa", "pa", "size", "s2ap", "af", "dbm", "count")
ACTOR_FIELDS = ("name", "kind", "do", "tlb")
# a row the page adds starts as these (the scenario format's defaults)
NEW_MAP_ROW = {"size": "4K", "s2ap": "rw", "af": "on", "count": "1"}
NEW_ACTOR_ROW = {"kind": "vcpu"}


def builder_view(values: dict, error_field: str | None) -> dict:
    """The form builder's fields with their values, for the template: the rows present in
    `values` (at least one of each), and a blank row of each for the page to add."""

    def field(name: str, default: str = "") -> dict:
        return {"name": name, "value": values.get(name, default), "invalid": name == error_field}

    def row(kind: str, i, names, blank: dict) -> dict:
        out = {k: field(f"{kind}-{i}-{k}", blank.get(k, "") if i == "__i__" else "") for k in names}
        out["i"] = i
        return out

    return {
        "top": {
            k: field(f"b-{k}")
            for k in (
                "name",
                "description",
                "kernel",
                "commits",
                "fix",
                "hafdbs",
                "ha",
                "hd",
                "ipa_bits",
                "tlb",
            )
        },
        "what_ifs": [field(f"b-{k}") | {"key": k} for k in scenarios.WHAT_IF_KEYS],
        "maps": [
            row("map", i, MAP_FIELDS, NEW_MAP_ROW)
            for i in scenarios.row_numbers(values, "map") or [0]
        ],
        "actors": [
            row("actor", i, ACTOR_FIELDS, NEW_ACTOR_ROW)
            for i in scenarios.row_numbers(values, "actor") or [0]
        ],
        "new_map": row("map", "__i__", MAP_FIELDS, NEW_MAP_ROW),
        "new_actor": row("actor", "__i__", ACTOR_FIELDS, NEW_ACTOR_ROW),
        "expect": {k: field(f"x-{k}") for k in scenarios.EXPECT_KINDS},
        "violations": field("x-violations"),
        "cycles": field("x-cycles"),
        "checks": [field(f"x-violation-{c}") | {"check": c} for c in scenarios.CHECKS],
    }


# --- pages --------------------------------------------------------------------------------
@require_GET
def gallery(request):
    """The gallery; `?from=<example>` fills the form builder with that example."""
    slug = request.GET.get("from")
    if slug:
        ex = scenarios.example(slug)
        if ex is None:
            ctx = gallery_context(request, error=f"no example scenario {slug!r}", tab="form")
            return render(request, "ptviz/gallery.html", ctx, status=404)
        ctx = gallery_context(
            request, values=scenarios.form_values(ex.text), tab="form", from_example=slug
        )
        return render(request, "ptviz/gallery.html", ctx)
    return render(request, "ptviz/gallery.html", gallery_context(request))


@require_POST
def session_new(request):
    try:
        data = request_data(request)  # a form post, or a JSON body with the same fields
    except InputError as exc:
        return json_error(exc.code, exc.message, 400, exc.where)
    uploaded = None  # an uploaded file's text: shown for fixing when it is refused
    built = None
    form_fields = None
    try:
        source = text_field(data, "source")
        example = text_field(data, "example")
        pasted = text_field(data, "scenario")
        if example:
            ex = scenarios.example(example)
            if ex is None:
                raise InputError(f"no example scenario {example!r}", "not_found")
            text, label, origin = ex.text, f"{ex.slug}.toml", f"example:{ex.slug}"
        elif request.FILES.get("scenario_file") and pasted.strip():
            raise InputError(
                "both a pasted scenario and a file were given: clear the text box or the file "
                "field, so that it is clear which one to use",
                "scenario",
            )
        elif request.FILES.get("scenario_file"):
            upload = request.FILES["scenario_file"]
            if upload.size > MAX_SCENARIO_BYTES:
                raise InputError(f"{upload.name}: larger than 4 MiB", "scenario")
            try:
                text = upload.read().decode("utf-8-sig")
            except UnicodeDecodeError as exc:
                raise InputError(
                    f"{upload.name}: not UTF-8 text ({exc.reason})", "scenario"
                ) from None
            label, origin = upload.name, "upload"
            uploaded = text
        elif source == "form" or data.get("builder"):
            form_fields = {}
            try:
                built = scenarios.build_from_form(data)
            except scenarios.ScenarioError as exc:
                form_fields = getattr(exc, "fields", {})
                raise InputError(str(exc), "scenario", exc.where) from None
            form_fields = built.fields
            text, label, origin = built.text, "form", "form"
        elif pasted.strip():
            if len(pasted.encode()) > MAX_SCENARIO_BYTES:
                raise InputError("the pasted scenario is larger than 4 MiB", "scenario")
            text, label, origin = pasted, "pasted scenario", "paste"
        else:
            raise InputError(
                "nothing to create: pick an example, paste or upload a scenario, or fill in "
                "the form",
                "scenario",
            )
        live = records.check_scenario(text, label)
        session, control, view = records.create(live, origin)
    except InputError as exc:
        if wants_json(request):
            return json_error(exc.code, exc.message, 400, exc.where)
        ctx = gallery_context(request, error=exc.message, error_where=exc.where)
        if form_fields is not None:
            # exactly what was posted (an unchecked box is absent: off; a removed row is gone)
            values = {k: str(v) for k, v in data.items() if k != "csrfmiddlewaretoken"}
            ctx.update(
                values=values,
                tab="form",
                scenario_text=built.text if built is not None else "",
                error_field=scenarios.form_field(exc.where or "", form_fields),
            )
        elif isinstance(data.get("scenario"), str) or request.FILES.get("scenario_file"):
            text = uploaded if uploaded is not None else data.get("scenario") or ""
            ctx.update(tab="paste", scenario_text=text)
        ctx["builder"] = builder_view(ctx["values"], ctx["error_field"])
        return render(request, "ptviz/gallery.html", ctx, status=400)
    return created_response(request, session, control, view)


DEAD_LINK = {
    "revoked": "The session's owner revoked this share link. Ask them for a new one.",
    "expired": "This share link expired. Ask the session's owner for a new one.",
}


def share_token(link: ShareLink) -> str:
    """The token a "copy link to this moment" uses: a view link (a control link is not
    handed on by copying a moment)."""
    if link.role != ROLE_CONTROL:
        return link.token
    plain = (
        ShareLink.objects.filter(
            session=link.session, role="view", label="", revoked=None, expires=None
        )
        .order_by("created")
        .first()
    )
    if plain is None:
        plain = ShareLink.objects.create(session=link.session, role="view")
    return plain.token


def moment_query(request) -> tuple[dict, str | None]:
    """The moment a page URL names: `at` (a moment id; `step=N` is the older spelling of
    `at=N`), `h` (a prefix of its state hash) and `d` (a descriptor to focus). Returns
    the fields for the page and a notice for a malformed one."""
    at = request.GET.get("at")
    if at in (None, "") and request.GET.get("step") not in (None, ""):
        at = request.GET["step"]
    out: dict = {"at": None, "h": None, "focus": None}
    notice = None
    if at not in (None, ""):
        try:
            parse_moment(at)
            out["at"] = at.strip()
        except HistoryError as exc:
            notice = f"this link names no moment of the session: {exc}"
    h = request.GET.get("h") or ""
    if h:
        if re.fullmatch(r"[0-9a-f]{6,64}", h):
            out["h"] = h
        else:
            notice = notice or f"the link's state hash {h[:70]!r} is not hexadecimal"
    d = request.GET.get("d") or ""
    if d:
        try:
            out["focus"] = hex(P.parse_table_address(d))
        except ValueError:
            notice = notice or f"the link's descriptor {d[:70]!r} is not an address"
    return out, notice


@require_GET
def session_page(request, token: str):
    link = ShareLink.objects.select_related("session").filter(token=token).first()
    if link is None:
        return render(
            request,
            "ptviz/message.html",
            {"title": "Unknown link", "message": "This share link does not exist."},
            status=404,
        )
    dead = link.dead_reason()
    if dead:
        return render(
            request,
            "ptviz/message.html",
            {"title": f"Link {dead}", "message": DEAD_LINK[dead]},
            status=410,
        )
    session = link.session
    moment, notice = moment_query(request)
    ws = f"/ws/sessions/{session.id}/?token={link.token}"
    if moment["at"]:
        ws += f"&at={moment['at']}" + (f"&h={moment['h']}" if moment["h"] else "")
    if moment["focus"]:
        ws += f"&d={moment['focus']}"  # (the engine sends the tables down to it)
    preload(session.id)
    actors, description = scenario_outline(session.id, session.scenario_text, session.name)
    boot = {
        "session": str(session.id),
        "token": link.token,
        "role": link.role,
        "ws": ws,
        "name": session.name,
        "kernel": session.kernel,
        "protocol": P.VERSION,
        "actors": actors,
        "at": moment["at"],
        "focus": moment["focus"],
        "notice": notice,
        "share": share_token(link),
        "owner": link.owner,
        "label": link.label,
        "csrf": get_token(request),
        "description": description,
        "recording": f"{reverse('recording', args=[session.id])}?token={link.token}",
        "parent": str(session.parent_id) if session.parent_id else None,
        "scenario": session.scenario_text,
    }
    return render(
        request,
        "ptviz/session.html",
        {
            "boot": boot,
            "session": session,
            "link": link,
            # one script when the modules bundle (ptviz/jsbundle.py), else the modules
            "bundle": jsbundle.PATH if jsbundle.app_bundle() is not None else None,
            "modules": app_modules(),
        },
    )


@lru_cache(maxsize=1)
def app_modules() -> list[str]:
    """The modules app.js imports, directly or not (static paths): the page preloads
    them all at once instead of discovering them one import level at a time."""
    root = jsbundle.js_root()
    seen: list[str] = []
    todo = ["app.js"]
    while todo:
        name = todo.pop()
        for dep in re.findall(
            r'^import\b[^;]*?from "\./([\w-]+\.js)"', (root / name).read_text(), re.M
        ):
            if dep not in seen:
                seen.append(dep)
                todo.append(dep)
    return [f"js/{name}" for name in sorted(seen)]


def preload(session_id) -> None:
    """Have an engine worker load the session while the browser loads the page: its
    websocket joins a few hundred ms later, and a 1M-leaf session takes about as long to
    load. Best effort: the join loads it anyway."""
    try:
        async_to_sync(get_channel_layer().send)(
            P.ENGINE_CHANNEL, {"type": P.PRELOAD, "session": str(session_id)}
        )
    except Exception as exc:  # (a full or unreachable channel layer)
        log.info("preload of session %s not sent: %s", session_id, exc)


@lru_cache(maxsize=256)
def scenario_outline(_session_id, text: str, name: str) -> tuple[list, str]:
    """The actors and description a page shows, parsed once per session (a session's
    scenario never changes; parsing a large one takes seconds)."""
    try:
        sc = parse_scenario(text, name)
    except Exception:
        return [], ""
    return [{"name": a.name, "kind": a.kind} for a in sc.actors], sc.description


# --- session endpoints --------------------------------------------------------------------
def _owner(request, session_id, data) -> tuple[DebugSession, ShareLink]:
    session, link = _session_and_link(request, session_id, data)
    if not link.owner:
        raise PermissionError("only the session's owner (the creator's link) manages its links")
    return session, link


def _session_and_link(request, session_id, data) -> tuple[DebugSession, ShareLink]:
    link = link_for(session_id, request_token(request, data))
    if link is None:
        if not DebugSession.objects.filter(pk=session_id).exists():
            raise Http404("no such session")
        raise PermissionError("a share link token of this session is needed")
    return link.session, link


def _bool(value) -> bool | None:
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return bool(value)
    text = str(value).strip().lower()
    if text in ("1", "true", "on", "yes"):
        return True
    if text in ("0", "false", "off", "no"):
        return False
    raise InputError(f"{value!r} is not a boolean (true/false)", "invalid")


def _int(value, where: str) -> int | None:
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise InputError(f"{where}: {value!r} is not an integer", "invalid", where)
    try:
        return int(value)
    except (TypeError, ValueError):
        raise InputError(f"{where}: {value!r} is not an integer", "invalid", where) from None


def _endpoint(view):
    """Errors of session endpoints as JSON (or a message page for form posts)."""

    def wrapped(request, session_id, *args, **kwargs):
        try:
            return view(request, session_id, *args, **kwargs)
        except InputError as exc:
            status, code, message, where = 400, exc.code, exc.message, exc.where
        except PermissionError as exc:
            status, code, message, where = 403, "forbidden", str(exc), None
        except Http404 as exc:
            status, code, message, where = 404, "not_found", str(exc), None
        if wants_json(request) or request.method == "GET":
            return json_error(code, message, status, where)
        return render(
            request, "ptviz/message.html", {"title": "Error", "message": message}, status=status
        )

    wrapped.__name__ = view.__name__
    return wrapped


@require_POST
@_endpoint
def session_fork(request, session_id):
    data = request_data(request)
    session, _link = _session_and_link(request, session_id, data)
    edited = data.get("scenario")
    if edited not in (None, ""):
        if not isinstance(edited, str):
            raise InputError("scenario: the scenario's text", "invalid", "scenario")
        if len(edited.encode()) > MAX_SCENARIO_BYTES:
            raise InputError("scenario: larger than 4 MiB", "scenario", "scenario")
        return created_response(request, *records.fork_scenario(session, edited))
    schedule = data.get("schedule")
    if schedule not in (None, "", []):
        if isinstance(schedule, str):
            schedule = [s.strip() for s in schedule.split(",") if s.strip()]
        if not isinstance(schedule, list) or not all(isinstance(s, str) for s in schedule):
            raise InputError("schedule: a list of actor names", "invalid", "schedule")
        position = _int(data.get("position"), "position")
        created = records.fork_schedule(session, schedule, position)
        return created_response(request, *created, step=position or 0)
    kernel = data.get("kernel") or None
    machine = {
        "ha": _bool(data.get("ha")),
        "hd": _bool(data.get("hd")),
        "hafdbs": _int(data.get("hafdbs"), "hafdbs"),
    }
    if kernel is not None or any(v is not None for v in machine.values()):
        if kernel is not None and not isinstance(kernel, str):
            raise InputError("kernel: a kernel name", "invalid", "kernel")
        created = records.fork_machine(session, kernel, **machine)
        return created_response(request, *created)
    position = _int(data.get("position"), "position")
    if position is None:
        raise InputError(
            "fork needs a position, a kernel/ha/hd/hafdbs change or a schedule", "invalid"
        )
    branch = _int(data.get("branch"), "branch") or 0
    created = records.fork_at(session, position, branch)
    return created_response(request, *created, step=position)


def link_json(request, link: ShareLink) -> dict:
    return {
        "token": link.token,
        "url": page_url(request, link),
        "role": link.role,
        "label": link.label,
        "owner": link.owner,
        "created": link.created.isoformat(),
        "expires": link.expires.isoformat() if link.expires else None,
        "revoked": link.revoked.isoformat() if link.revoked else None,
        "state": link.dead_reason() or "valid",
    }


@require_http_methods(["GET", "POST"])
@_endpoint
def session_links(request, session_id):
    """POST: a new link (`role`, optional `label` and `expires_in` seconds); GET: the
    session's links (the owner only)."""
    if request.method == "GET":
        _session, _link = _owner(request, session_id, {})
        links = ShareLink.objects.filter(session_id=session_id).order_by("created")
        return JsonResponse({"links": [link_json(request, x) for x in links]})
    data = request_data(request)
    session, link = _session_and_link(request, session_id, data)
    role = str(data.get("role") or "view")
    if role not in ROLES:
        raise InputError(f"role must be one of {', '.join(ROLES)}", "invalid", "role")
    if role == ROLE_CONTROL and not link.can_control:
        raise PermissionError("a view-only link cannot make control links")
    label = str(data.get("label") or "").strip()
    if len(label) > 60:
        raise InputError("label: at most 60 characters", "invalid", "label")
    if any(unicodedata.category(c) == "Cc" for c in label):  # (PostgreSQL refuses NUL)
        raise InputError("label: no control characters", "invalid", "label")
    expires_in = _int(data.get("expires_in"), "expires_in")
    if expires_in is not None and not 60 <= expires_in <= 10 * 365 * 86400:
        raise InputError("expires_in: seconds, from 60 to 10 years", "invalid", where="expires_in")
    if (label or expires_in) and not link.owner:
        raise PermissionError("only the session's owner makes named or expiring links")
    new = ShareLink.objects.create(
        session=session,
        role=role,
        label=label,
        expires=timezone.now() + timedelta(seconds=expires_in) if expires_in else None,
    )
    url = page_url(request, new)
    if wants_json(request):
        return JsonResponse({**link_json(request, new), "url": url}, status=201)
    return render(
        request,
        "ptviz/message.html",
        {"title": f"New {role} link", "message": url, "link": url},
        status=201,
    )


@require_POST
@_endpoint
def link_revoke(request, session_id, token: str):
    """The owner revokes a link: its pages say so and its open websockets are closed."""
    data = request_data(request)
    _session, owner = _owner(request, session_id, data)
    target = ShareLink.objects.filter(session_id=session_id, token=token).first()
    if target is None:
        raise Http404("this session has no such link")
    if target.pk == owner.pk:
        raise InputError("the owner's own link cannot be revoked", "invalid", "token")
    if target.revoked is None:
        target.revoked = timezone.now()
        target.save(update_fields=["revoked"])
    async_to_sync(get_channel_layer().group_send)(
        P.group_name(str(session_id)), {"type": "ptviz.revoked", "token": target.token}
    )
    if wants_json(request):
        return JsonResponse(link_json(request, target))
    return redirect(request.META.get("HTTP_REFERER") or "/")


@require_GET
@_endpoint
def recording(request, session_id):
    session, _link = _session_and_link(request, session_id, {})
    rec = records.export(session)
    response = HttpResponse(
        json.dumps(rec, indent=1), content_type="application/json; charset=utf-8"
    )
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", session.name).strip("-")[:60] or "session"
    response["Content-Disposition"] = f'attachment; filename="ptviz-{slug}.json"'
    return response


@require_POST
def recording_import(request):
    try:
        upload = request.FILES.get("recording")
        if upload is not None:
            if upload.size > records.MAX_RECORDING_BYTES:
                raise InputError(
                    f"{upload.name}: larger than {records.MAX_RECORDING_BYTES >> 20} MiB",
                    "recording",
                )
            data, label = upload.read(), upload.name
        elif request.content_type == "application/json":
            data, label = request.body, "recording"
        elif request.POST.get("recording_text", "").strip():
            data, label = request.POST["recording_text"], "pasted recording"
        else:
            raise InputError("no recording: upload a .json recording file", "recording")
        session, control, view = records.import_recording(data, label)
    except InputError as exc:
        if wants_json(request):
            return json_error(exc.code, exc.message, 400, exc.where)
        ctx = gallery_context(request, import_error=exc.message, tab="import")
        return render(request, "ptviz/gallery.html", ctx, status=400)
    return created_response(request, session, control, view)


# --- docs ---------------------------------------------------------------------------------
@require_GET
def protocol_doc(request):
    path = Path(settings.BASE_DIR) / "docs" / "protocol.md"
    try:
        text = path.read_text(encoding="utf-8")
    except OSError:
        raise Http404("docs/protocol.md is missing") from None
    return render(
        request, "ptviz/protocol.html", {"html": render_markdown(text), "title": "Protocol"}
    )


def _inline(text: str) -> str:
    out = escape(text)
    out = re.sub(r"`([^`]+)`", r"<code>\1</code>", out)
    out = re.sub(r"\*\*([^*]+)\*\*", r"<strong>\1</strong>", out)
    return out


def render_markdown(text: str) -> str:
    """Just enough Markdown for docs/protocol.md: headings, paragraphs, lists, tables,
    indented and fenced code blocks, inline code."""
    html: list[str] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("```"):
            block = []
            i += 1
            while i < len(lines) and not lines[i].startswith("```"):
                block.append(lines[i])
                i += 1
            html.append(f"<pre><code>{escape(chr(10).join(block))}</code></pre>")
            i += 1
            continue
        if line.startswith("    ") or (line.startswith("\t")):
            block = []
            while i < len(lines) and (lines[i].startswith(("    ", "\t")) or not lines[i].strip()):
                block.append(lines[i][4:] if lines[i].startswith("    ") else lines[i].lstrip("\t"))
                i += 1
            while block and not block[-1].strip():
                block.pop()
            html.append(f"<pre><code>{escape(chr(10).join(block))}</code></pre>")
            continue
        m = re.match(r"(#{1,6})\s+(.*)", line)
        if m:
            level = len(m[1])
            ident = re.sub(r"[^a-z0-9]+", "-", m[2].lower()).strip("-")
            html.append(f'<h{level} id="{ident}">{_inline(m[2])}</h{level}>')
            i += 1
            continue
        if line.startswith("|"):
            rows = []
            while i < len(lines) and lines[i].startswith("|"):
                cells = [c.strip() for c in lines[i].strip().strip("|").split("|")]
                if not all(re.fullmatch(r":?-+:?", c) for c in cells):
                    rows.append(cells)
                i += 1
            head, body = rows[0], rows[1:]
            parts = ["<table><thead><tr>"]
            parts += [f"<th>{_inline(c)}</th>" for c in head]
            parts.append("</tr></thead><tbody>")
            for row in body:
                parts.append("<tr>" + "".join(f"<td>{_inline(c)}</td>" for c in row) + "</tr>")
            parts.append("</tbody></table>")
            html.append("".join(parts))
            continue
        if re.match(r"\s*[-*]\s+", line):
            items = []
            while i < len(lines) and lines[i].strip():
                if re.match(r"\s*[-*]\s+", lines[i]):
                    items.append(re.sub(r"\s*[-*]\s+", "", lines[i], count=1))
                elif items:
                    items[-1] += " " + lines[i].strip()
                i += 1
            html.append("<ul>" + "".join(f"<li>{_inline(t)}</li>" for t in items) + "</ul>")
            continue
        if not line.strip():
            i += 1
            continue
        para = []
        while (
            i < len(lines)
            and lines[i].strip()
            and not lines[i].startswith(("#", "|", "    ", "```"))
            and not re.match(r"\s*[-*]\s+", lines[i])
        ):
            para.append(lines[i])
            i += 1
        html.append(f"<p>{_inline(' '.join(para))}</p>")
    return mark_safe("\n".join(html))
