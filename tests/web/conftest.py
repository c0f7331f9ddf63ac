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

import pytest
from django.db import connections
from webhelpers import (
    LEASE_TIMEOUT,
    PREFIX,
    REDIS_HOST,
    REDIS_PORT,
    REDIS_URL,
    VIEWER_EXPIRY,
    Workers,
    inmemory_layers,
    redis_layers,
    redis_up,
)

from ptviz.localservices import flush_redis_prefix


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


@pytest.fixture(scope="session", autouse=True)
def _no_connections_left_at_teardown(django_db_setup, django_db_blocker):
    """PostgreSQL drops the test database only when nobody uses it: the threads of the
    async ORM keep connections open, so end them first (SQLite needs nothing)."""
    yield
    if connections["default"].vendor != "postgresql":
        return
    with django_db_blocker.unblock(), connections["default"].cursor() as cur:
        cur.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )


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
