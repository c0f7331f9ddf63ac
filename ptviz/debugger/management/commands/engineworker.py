"""`manage.py engineworker`: one distributed engine worker (REDIS_URL must be set)."""

import asyncio

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from ptviz.engine_worker.distributed import serve, worker_name


class Command(BaseCommand):
    help = (
        "Run an engine worker on the Redis channel layer: it owns live debug sessions, "
        "runs the engine and sends deltas to the viewers. Start any number, on any host."
    )

    def add_arguments(self, parser):
        parser.add_argument("--name", help="worker name in leases and logs (default: host-pid)")

    def handle(self, *args, **options):
        if not settings.REDIS_URL:
            raise CommandError(
                "engineworker needs REDIS_URL (the distributed deployment); without it, "
                "`manage.py serve` runs its own embedded engine worker processes"
            )
        name = options.get("name") or worker_name()
        self.stdout.write(f"ptviz engine worker {name} on {settings.REDIS_URL}")
        self.stdout.flush()
        asyncio.run(serve(name))
