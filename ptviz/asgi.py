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

from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from channels.security.websocket import AllowedHostsOriginValidator  # noqa: E402
from django.contrib.staticfiles.handlers import ASGIStaticFilesHandler  # noqa: E402

from ptviz.debugger.routing import websocket_urlpatterns  # noqa: E402
from ptviz.engine_worker.embedded import embedded_mode, ensure_engine  # noqa: E402


class EmbeddedEngineMiddleware:
    """Starts the embedded engine's bridge in the server's event loop (embedded mode)."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] == "websocket" and embedded_mode():
            await ensure_engine().ensure_bridge()
        return await self.app(scope, receive, send)


application = EmbeddedEngineMiddleware(
    ProtocolTypeRouter(
        {
            "http": ASGIStaticFilesHandler(django_asgi_app),
            "websocket": AllowedHostsOriginValidator(
                AuthMiddlewareStack(URLRouter(websocket_urlpatterns))
            ),
        }
    )
)
