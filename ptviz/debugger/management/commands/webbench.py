"""`manage.py webbench`: the web debugger's benchmarks (ptviz/bench.py; `make bench-web`).

Starts its own deployments (temporary SQLite files, free ports, a Redis prefix of their
own) and never touches the project's database. Not part of the test run.
"""

import argparse
import json
import os

from django.core.management.base import BaseCommand, CommandError

from ptviz import bench


class Command(BaseCommand):
    help = (
        "Benchmark the web debugger on real deployments: step latency over the websocket, "
        "sustained descriptor changes per second delivered to a client, first render of a "
        "1M-leaf session in headless Chromium; each next to a baseline."
    )
    requires_system_checks = []

    def add_arguments(self, parser):
        parser.add_argument("--json", action="store_true", help="one JSON object on stdout")
        parser.add_argument("--quick", action="store_true", help="tiny workloads (a smoke run)")
        parser.add_argument("--no-redis", action="store_true", help="embedded deployment only")
        parser.add_argument(
            "--no-browser", action="store_true", help="skip the first render in Chromium"
        )
        # internal: the worker profile runs in a child process on a temporary database
        parser.add_argument("--worker-profile", type=int, default=0, help=argparse.SUPPRESS)
        parser.add_argument("--seconds", type=float, default=2.0, help=argparse.SUPPRESS)

    def handle(self, *args, **options):
        if options["worker_profile"]:
            if "DATABASE_URL" not in os.environ:
                raise CommandError("--worker-profile writes to DATABASE_URL: set a temporary one")
            profile = bench.worker_profile(options["worker_profile"], options["seconds"])
            self.stdout.write(json.dumps(profile.as_json()))
            return
        cfg = bench.QUICK if options["quick"] else bench.Config()
        results = bench.run(cfg, redis=not options["no_redis"], browser=not options["no_browser"])
        if options["json"]:
            self.stdout.write(json.dumps(results.to_json(), indent=1))
        else:
            self.stdout.write(bench.render_report(results))
