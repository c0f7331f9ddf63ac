"""The ASGI application: HTTP (with the static files) and the session websockets.

    daphne ptviz.asgi:application        (what `manage.py serve` runs, with its settings)

Static files are served by this application in every mode (ASGIStaticFilesHandler),
so one daphne process is the whole web server. In the embedded mode (no REDIS_URL) the
first websocket makes sure the engine worker processes and their bridge are running in
this process (`manage.py serve` starts the processes before it listens).
"""

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "ptviz.settings")

from django.core.asgi import get_asgi_application  # noqa: E402

django_asgi_app = get_asgi_application()  # sets Django up before the consumers import

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from channels.security.websocket import AllowedHostsOriginValidator  # noqa: E402
from django.conf import settings  # noqa: E402
from django.contrib.staticfiles import finders  # noqa: E402
from django.contrib.staticfiles.handlers import ASGIStaticFilesHandler  # noqa: E402
from django.core.exceptions import SuspiciousOperation  # noqa: E402
from django.http import Http404  # noqa: E402

from ptviz.debugger.routing import websocket_urlpatterns  # noqa: E402
from ptviz.engine_worker.embedded import embedded_mode, ensure_engine, get_engine  # noqa: E402


class BodyLimit:
    """Refuses an HTTP request body over PTVIZ_MAX_BODY_MB with 413 before anything reads
    it: by its Content-Length, or (chunked) as soon as the bytes received pass the limit."""

    def __init__(self, app, limit: int):
        self.app = app
        self.limit = limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                try:
                    too_big = int(value) > self.limit
                except ValueError:
                    too_big = True
                if too_big:
                    return await self.refuse(send)
        state = {"received": 0, "over": False, "started": False}

        async def counted_receive():
            message = await receive()
            if message["type"] == "http.request":
                state["received"] += len(message.get("body", b""))
                if state["received"] > self.limit:
                    state["over"] = True
                    return {"type": "http.disconnect"}  # Django stops reading
            return message

        async def tracked_send(message):
            if message["type"] == "http.response.start":
                state["started"] = True
            await send(message)

        await self.app(scope, counted_receive, tracked_send)
        if state["over"] and not state["started"]:
            await self.refuse(send)

    async def refuse(self, send):
        body = (
            f'{{"code": "too_big", "message": "the request body is larger than '
            f'{self.limit >> 20} MiB", "where": null}}'
        ).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [(b"content-type", b"application/json"), (b"connection", b"close")],
            }
        )
        await send({"type": "http.response.body", "body": body})


class StaticFiles(ASGIStaticFilesHandler):
    """A path that leaves the static directory (`/static/../x`) is a 404, not a 500.

    A file once served whole is kept in memory (while its mtime stays the same) and
    answered from here, without Django: a session page's 20 modules otherwise pass
    through Django's one thread for synchronous work three times each, behind whatever
    the page's own websocket is waiting for there (its first render took 0.3 s longer)."""

    MAX_CACHED = 1 << 20
    cache: dict[str, tuple[str, int, list, bytes]] = {}  # path -> file, mtime, headers, body

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and self._should_handle(scope["path"]):
            hit = self.cache.get(scope["path"])
            if hit is not None and scope["method"] == "GET" and self._fresh(hit, scope):
                await send({"type": "http.response.start", "status": 200, "headers": hit[2]})
                await send({"type": "http.response.body", "body": hit[3]})
                return
            return await super().__call__(scope, receive, self._keeper(scope, send))
        return await super().__call__(scope, receive, send)

    @staticmethod
    def _fresh(hit, scope) -> bool:
        if any(name.startswith(b"if-") or name == b"range" for name, _ in scope["headers"]):
            return False  # (conditional and partial requests: Django answers them)
        try:
            return os.stat(hit[0]).st_mtime_ns == hit[1]
        except OSError:
            return False

    def _keeper(self, scope, send):
        """`send`, keeping a whole 200 answer to an unconditional GET."""
        path = scope["path"]
        state: dict = {}

        async def keeping(message):
            if message["type"] == "http.response.start":
                state["ok"] = message["status"] == 200 and scope["method"] == "GET"
                state["headers"] = list(message.get("headers", []))
                state["body"] = []
            elif message["type"] == "http.response.body" and state.get("ok"):
                state["body"].append(message.get("body", b""))
                size = sum(map(len, state["body"]))
                if size > self.MAX_CACHED:
                    state["ok"] = False
                elif not message.get("more_body", False):
                    self._keep(path, scope, state["headers"], b"".join(state["body"]))
            await send(message)

        return keeping

    def _keep(self, path: str, scope, headers: list, body: bytes) -> None:
        if any(name.startswith(b"if-") or name == b"range" for name, _ in scope["headers"]):
            return
        try:
            found = finders.find(self.file_path(path))
            mtime = os.stat(found).st_mtime_ns if found else None
        except (OSError, SuspiciousOperation):
            return
        if mtime is None:
            return
        self.cache[path] = (found, mtime, headers, body)

    def serve(self, request):
        try:
            return super().serve(request)
        except SuspiciousOperation:
            raise Http404("no such static file") from None


class EmbeddedEngineMiddleware:
    """Starts the embedded engine's bridge in the server's event loop (embedded mode)."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] == "websocket" and embedded_mode():
            await ensure_engine().ensure_bridge()
        elif scope["type"] == "http" and embedded_mode() and get_engine() is not None:
            # (a session page asks the engine to preload its session: the engine `serve`
            # started takes it before the page's websocket starts the bridge)
            await get_engine().ensure_bridge()
        return await self.app(scope, receive, send)


application = EmbeddedEngineMiddleware(
    ProtocolTypeRouter(
        {
            "http": BodyLimit(StaticFiles(django_asgi_app), settings.PTVIZ_MAX_BODY_MB << 20),
            # (no AuthMiddlewareStack: a websocket is authorized by its share link's
            # token, never by a Django user; the stack wrapped every frame sent)
            "websocket": AllowedHostsOriginValidator(URLRouter(websocket_urlpatterns)),
        }
    )
)
