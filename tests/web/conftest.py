"""Fixtures for the web tests: both deployments, for real.

- "embedded": the in-memory channel layer and one embedded engine worker process
  (spawned, as `manage.py serve` does), bridged into the test's event loop.
- "redis": the channels_redis core layer on 127.0.0.1:6379 (a prefix of its own per test
  run) and `manage.py engineworker` subprocesses.

Both share the test database (a file: the worker processes open it too). Async test
bodies run with asyncio.run inside sync tests marked django_db(transaction=True).
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from django.db import connections
from webhelpers import (
    LEASE_TIMEOUT,
    PREFIX,
    REDIS_HOST,
    REDIS_PORT,
    REDIS_URL,
    ROOT,
    VIEWER_EXPIRY,
    inmemory_layers,
    redis_layers,
    redis_up,
)

from ptviz.localservices import flush_redis_prefix


def _test_db_url() -> str:
    return "sqlite:///" + connections["default"].settings_dict["NAME"]


@pytest.fixture(scope="session")
def embedded_engine(django_db_setup, django_db_blocker):
    from ptviz.engine_worker import embedded

    db = dict(connections["default"].settings_dict)
    engine = embedded.EmbeddedEngine(1, db=db)
    engine.options.update(viewer_expiry=VIEWER_EXPIRY, heartbeat=0.3)
    engine.options["quotas"]["explorations"] = 1  # (test_leaks: the quota is reached)
    engine.start()
    assert engine.wait_ready(60), "the embedded engine worker process did not start"
    embedded.set_engine(engine)
    yield engine
    engine.stop()
    embedded.set_engine(None)


class Workers:
    """`manage.py engineworker` subprocesses on the test database and Redis prefix. Their
    output goes to files (a pipe nobody reads would fill up and stall them)."""

    def __init__(self, logdir: Path, **extra_env: str):
        self.extra_env = extra_env
        self.logdir = logdir
        self.procs: dict[str, subprocess.Popen] = {}
        self.logs: dict[str, Path] = {}

    def start(self, name: str) -> subprocess.Popen:
        env = dict(os.environ)
        env.update(
            DJANGO_SETTINGS_MODULE="ptviz.settings",
            DATABASE_URL=_test_db_url(),
            REDIS_URL=REDIS_URL,
            PTVIZ_CHANNEL_PREFIX=PREFIX,
            PTVIZ_LEASE_TIMEOUT=str(LEASE_TIMEOUT),
            PTVIZ_HEARTBEAT="0.3",
            PTVIZ_VIEWER_EXPIRY=str(VIEWER_EXPIRY),
            PTVIZ_LOG="INFO",
            **self.extra_env,
        )
        log = self.logdir / f"{name}.log"
        with open(log, "w") as out:
            proc = subprocess.Popen(
                [sys.executable, "manage.py", "engineworker", "--name", name],
                cwd=ROOT,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                text=True,
            )
        self.procs[name] = proc
        self.logs[name] = log
        return proc

    def wait_started(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        for name, proc in self.procs.items():
            while "listening on" not in self.logs[name].read_text():
                assert proc.poll() is None, f"{name} exited: {self.logs[name].read_text()}"
                assert time.monotonic() < deadline, f"{name} did not start"
                time.sleep(0.05)

    def kill(self, name: str) -> None:
        proc = self.procs.pop(name)
        proc.kill()
        proc.wait(10)

    def stop_all(self) -> None:
        for proc in self.procs.values():
            proc.terminate()
        for proc in self.procs.values():
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
        self.procs.clear()


def need_redis():
    if not redis_up():
        if os.environ.get("CI"):
            pytest.fail(f"Redis is not running on {REDIS_HOST}:{REDIS_PORT} (.ci/run starts it)")
        pytest.skip(f"Redis is not running on {REDIS_HOST}:{REDIS_PORT}")


@pytest.fixture(scope="session")
def redis_workers(django_db_setup, tmp_path_factory):
    need_redis()
    workers = Workers(tmp_path_factory.mktemp("engineworkers"))
    workers.start("w-a")
    workers.start("w-b")
    workers.wait_started()
    yield workers
    workers.stop_all()
    flush_redis_prefix(PREFIX)


def _timeouts(settings) -> None:
    settings.PTVIZ_LEASE_TIMEOUT = LEASE_TIMEOUT
    settings.PTVIZ_LEASE_CHECK = 0.3
    settings.PTVIZ_ENGINE_TIMEOUT = 15.0
    settings.PTVIZ_VIEWER_HEARTBEAT = 0.5


@pytest.fixture
def embedded_deployment(settings, embedded_engine):
    """In-memory channel layer, the embedded engine worker process."""
    _timeouts(settings)
    settings.REDIS_URL = ""
    settings.CHANNEL_LAYERS = inmemory_layers()
    return embedded_engine


@pytest.fixture
def redis_deployment(settings, redis_workers):
    """The Redis channel layer, `manage.py engineworker` processes."""
    _timeouts(settings)
    settings.REDIS_URL = REDIS_URL
    settings.CHANNEL_LAYERS = redis_layers()
    return redis_workers


@pytest.fixture(params=["embedded", "redis"])
def mode(request):
    """Each test of the websocket protocol runs on both deployments."""
    request.getfixturevalue(f"{request.param}_deployment")
    return request.param


def pytest_sessionfinish(session, exitstatus):
    """SQLite's WAL files outlive the test database pytest-django removes."""
    from django.conf import settings

    name = settings.DATABASES["default"].get("TEST", {}).get("NAME")
    if name and not os.path.exists(name):
        for suffix in ("-wal", "-shm"):
            with contextlib.suppress(OSError):
                os.remove(name + suffix)
