"""`manage.py serve`: the web server (daphne) and, by default, its engine workers.

Embedded (REDIS_URL unset): starts PTVIZ_WORKERS engine worker processes next to daphne,
all stopped together on Ctrl-C. Distributed (REDIS_URL set): daphne only; start
`manage.py engineworker` processes separately.
"""

import os
import sys

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError
from django.db import connections
from django.db.migrations.executor import MigrationExecutor


class Command(BaseCommand):
    help = "Serve ptviz with daphne (HTTP, websockets, static files) and its engine workers."

    def add_arguments(self, parser):
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=8000)
        parser.add_argument(
            "--workers", type=int, default=None, help="embedded engine worker processes"
        )
        parser.add_argument(
            "--no-migrate", action="store_true", help="do not apply pending migrations"
        )

    def handle(self, *args, **options):
        from daphne.endpoints import build_endpoint_description_strings

        from ptviz.secretkey import is_loopback, redact_url

        host, port = options["host"], options["port"]
        if not is_loopback(host) and not os.environ.get("SECRET_KEY"):
            raise CommandError(
                f"serving on {host} (not loopback) needs a SECRET_KEY in the environment, "
                "for example: export SECRET_KEY=$(python3 -c 'import secrets; "
                'print(secrets.token_urlsafe(50))\')  (README.md, "Deployment")'
            )
        if not options["no_migrate"]:
            executor = MigrationExecutor(connections["default"])
            if executor.migration_plan(executor.loader.graph.leaf_nodes()):
                self.stdout.write("applying database migrations…")
                call_command("migrate", interactive=False, verbosity=0)
        connections.close_all()

        from ptviz.asgi import application
        from ptviz.engine_worker import embedded

        engine = None
        workers = options["workers"] if options["workers"] is not None else settings.PTVIZ_WORKERS
        if embedded.embedded_mode():
            engine = embedded.EmbeddedEngine(workers).start()
            embedded.set_engine(engine)
            mode = f"embedded: {engine.workers} engine worker process(es), in-process channel layer"
        else:
            mode = (
                f"distributed: Redis channel layer at {redact_url(settings.REDIS_URL)}; start engine "
                "workers with `python manage.py engineworker`"
            )
        shown = "127.0.0.1" if host in ("0.0.0.0", "::") else host
        if ":" in shown:
            shown = f"[{shown}]"
        db = settings.DATABASES["default"]
        self.stdout.write(
            f"ptviz ({mode})\n"
            f"database: {db['ENGINE'].rsplit('.', 1)[-1]} {db['NAME']}\n"
            f"open http://{shown}:{port}/   (Ctrl-C stops everything)"
        )
        sys.stdout.flush()
        server = _server_class()(
            application=application,
            endpoints=build_endpoint_description_strings(host=host, port=port),
            signal_handlers=True,
            websocket_timeout=settings.PTVIZ_WEBSOCKET_TIMEOUT,
            ping_interval=settings.PTVIZ_PING_INTERVAL,
            ping_timeout=settings.PTVIZ_PING_TIMEOUT,
            websocket_connect_timeout=20,
            application_close_timeout=10,
            verbosity=1,
        )
        try:
            server.run()
        finally:
            if engine is not None:
                self.stdout.write("stopping the engine workers…")
                engine.stop()
            self.stdout.write("ptviz stopped")


def _write_buffer(protocol) -> int:
    """Bytes a Twisted transport still holds (twisted.internet.abstract.FileDescriptor)."""
    t = getattr(protocol, "transport", None)
    if t is None:
        return 0
    return (
        len(getattr(t, "dataBuffer", b"")) - getattr(t, "offset", 0) + getattr(t, "_tempDataLen", 0)
    )


def _server_class():
    # (daphne.server installs Twisted's asyncio reactor when imported: only when serving)
    from daphne.server import Server

    class BackpressureServer(Server):
        """daphne, telling each websocket's consumer how many bytes its socket still has to
        write (scope["ptviz.write_buffer"]): daphne's `send` returns at once, so this is
        the only backpressure a consumer can see (consumers.py, `_sender`)."""

        def create_application(self, protocol, scope):
            if scope.get("type") == "websocket":
                scope["ptviz.write_buffer"] = lambda: _write_buffer(protocol)
            return super().create_application(protocol, scope)

    return BackpressureServer
