"""Django settings for ptviz, read from the environment (README.md, "Settings").

SECRET_KEY      required to serve on anything but loopback; unset, a random key kept in
                PTVIZ_SECRET_KEY_FILE (default .ptviz-secret-key in the checkout)
DEBUG           1/true/yes to turn Django's debug pages on (default off)
ALLOWED_HOSTS   comma-separated (default: localhost, 127.0.0.1, [::1])
DATABASE_URL    sqlite:///db.sqlite3 (default, next to manage.py) or postgres://...
REDIS_URL       set: the distributed deployment (channels_redis core layer, engine
                workers started with `manage.py engineworker`); unset: the embedded
                default (in-process channel layer, engine worker processes started by
                `manage.py serve`)
PTVIZ_WORKERS   embedded engine worker processes (default 2)
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from ptviz.dburl import parse_database_url, sqlite_database
from ptviz.layers import inmemory_layers, redis_layers
from ptviz.secretkey import local_secret_key

BASE_DIR = Path(__file__).resolve().parent.parent


def env_bool(name: str, default: bool = False) -> bool:
    value = os.environ.get(name)
    if value is None or value.strip() == "":
        return default
    return value.strip().lower() in ("1", "true", "yes", "on")


def env_int(name: str, default: int) -> int:
    value = os.environ.get(name, "").strip()
    return int(value) if value else default


def env_float(name: str, default: float) -> float:
    value = os.environ.get(name, "").strip()
    return float(value) if value else default


DEBUG = env_bool("DEBUG", False)
# Unset: a random key generated once for this checkout (ptviz/secretkey.py); `serve`
# refuses a non-loopback address without SECRET_KEY.
SECRET_KEY = os.environ.get("SECRET_KEY") or local_secret_key(
    Path(os.environ.get("PTVIZ_SECRET_KEY_FILE") or BASE_DIR / ".ptviz-secret-key")
)
# The debug page must not show the Redis password (it sits in REDIS_URL and the layer).
DEFAULT_EXCEPTION_REPORTER_FILTER = "ptviz.secretkey.RedactingFilter"
ALLOWED_HOSTS = [
    h.strip()
    for h in os.environ.get("ALLOWED_HOSTS", "localhost,127.0.0.1,[::1]").split(",")
    if h.strip()
]
CSRF_TRUSTED_ORIGINS = [
    o.strip() for o in os.environ.get("CSRF_TRUSTED_ORIGINS", "").split(",") if o.strip()
]

INSTALLED_APPS = [
    "django.contrib.contenttypes",
    "django.contrib.auth",
    "django.contrib.staticfiles",
    "channels",
    "ptviz.debugger",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "ptviz.urls"
ASGI_APPLICATION = "ptviz.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "ptviz" / "templates"],
        "APP_DIRS": False,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.template.context_processors.csrf",
            ],
        },
    }
]

# --- database -------------------------------------------------------------------------
_db_url = os.environ.get("DATABASE_URL", "").strip()
DATABASES = {
    "default": parse_database_url(_db_url, BASE_DIR)
    if _db_url
    else sqlite_database(BASE_DIR / "db.sqlite3")
}
if DATABASES["default"]["ENGINE"].endswith("sqlite3"):
    # Tests: a file, not Django's default in-memory test database, because the engine
    # worker processes the web tests start must open the same database.
    DATABASES["default"]["TEST"] = {
        "NAME": os.environ.get("PTVIZ_TEST_DB")
        or os.path.join(tempfile.gettempdir(), f"ptviz-test-{os.getpid()}.sqlite3")
    }
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- static files (served by the ASGI app itself: ptviz/asgi.py) ------------------------
STATIC_URL = "/static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = BASE_DIR / "build" / "static"

USE_TZ = True
TIME_ZONE = "UTC"
LANGUAGE_CODE = "en"
USE_I18N = False

# Uploaded scenarios and recordings are read into memory and parsed; cap them. Every
# request body is refused past PTVIZ_MAX_BODY_MB before it is read (ptviz/asgi.py);
# scenarios (pasted or uploaded) are held to 4 MiB (views.MAX_SCENARIO_BYTES).
PTVIZ_MAX_BODY_MB = env_int("PTVIZ_MAX_BODY_MB", 32)
DATA_UPLOAD_MAX_MEMORY_SIZE = PTVIZ_MAX_BODY_MB * 1024 * 1024
FILE_UPLOAD_MAX_MEMORY_SIZE = 4 * 1024 * 1024  # (larger uploads spool to a temporary file)

# --- channel layer ----------------------------------------------------------------------
REDIS_URL = os.environ.get("REDIS_URL", "").strip()
# Channel names and groups live under this prefix in Redis (tests use a unique one).
PTVIZ_CHANNEL_PREFIX = os.environ.get("PTVIZ_CHANNEL_PREFIX", "ptviz:")

# Capacity, expiry and group expiry are chosen in ptviz/layers.py (the reasons are there).
CHANNEL_LAYERS = redis_layers(REDIS_URL, PTVIZ_CHANNEL_PREFIX) if REDIS_URL else inmemory_layers()

# --- engine workers ---------------------------------------------------------------------
PTVIZ_WORKERS = env_int("PTVIZ_WORKERS", 2)
PTVIZ_ENGINE = os.environ.get("PTVIZ_ENGINE", "cython")  # "cython" | "python" (the twin)
# A worker renews its leases every PTVIZ_HEARTBEAT seconds; a lease not renewed for
# PTVIZ_LEASE_TIMEOUT seconds is stale and another worker may take the session over.
PTVIZ_HEARTBEAT = env_float("PTVIZ_HEARTBEAT", 1.0)
PTVIZ_LEASE_TIMEOUT = env_float("PTVIZ_LEASE_TIMEOUT", 6.0)
# A command not acknowledged by an engine worker within this many seconds gets an
# `unavailable` error (loading a session from the database counts against it).
PTVIZ_ENGINE_TIMEOUT = env_float("PTVIZ_ENGINE_TIMEOUT", 20.0)
# How often a consumer checks that its session's engine worker is alive.
PTVIZ_LEASE_CHECK = env_float("PTVIZ_LEASE_CHECK", 2.0)
PTVIZ_EXPLORE_MAX_STATES = env_int("PTVIZ_EXPLORE_MAX_STATES", 2_000_000)
# Per engine worker (ptviz/engine_worker/quotas.py): explorations at once, and the
# sessions kept loaded.
PTVIZ_EXPLORATIONS = env_int("PTVIZ_EXPLORATIONS", 2)
PTVIZ_WORKER_MEMORY_MB = env_int("PTVIZ_WORKER_MEMORY_MB", 4096)
# A viewer with more than this many delta batches queued gets one fresh snapshot instead.
PTVIZ_VIEWER_BACKLOG = env_int("PTVIZ_VIEWER_BACKLOG", 200)
# Per websocket: PTVIZ_RATE messages per second on average, bursts of PTVIZ_RATE_BURST;
# more get `rate_limited` (docs/protocol.md).
PTVIZ_RATE = env_float("PTVIZ_RATE", 50.0)
PTVIZ_RATE_BURST = env_int("PTVIZ_RATE_BURST", 200)
# A viewer tells its engine worker it is alive every PTVIZ_VIEWER_HEARTBEAT seconds; the
# worker forgets a viewer not heard from for PTVIZ_VIEWER_EXPIRY seconds (its server died).
PTVIZ_VIEWER_HEARTBEAT = env_float("PTVIZ_VIEWER_HEARTBEAT", 5.0)
PTVIZ_VIEWER_EXPIRY = env_float("PTVIZ_VIEWER_EXPIRY", 30.0)

# --- daphne (manage.py serve) -----------------------------------------------------------
# Debugging sessions last: the default 24 h websocket timeout would cut them. Pings keep
# idle connections alive through proxies and find dead peers.
PTVIZ_WEBSOCKET_TIMEOUT = env_int("PTVIZ_WEBSOCKET_TIMEOUT", 7 * 24 * 3600)
PTVIZ_PING_INTERVAL = env_int("PTVIZ_PING_INTERVAL", 20)
PTVIZ_PING_TIMEOUT = env_int("PTVIZ_PING_TIMEOUT", 30)

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(name)s %(levelname)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "loggers": {
        "ptviz": {"handlers": ["console"], "level": os.environ.get("PTVIZ_LOG", "INFO")},
        # Server errors (500) and refused requests (SuspiciousOperation) reach the log
        # (by default they only go to mail_admins, which is not configured).
        "django.request": {"handlers": ["console"], "level": "ERROR", "propagate": False},
        "django.security": {"handlers": ["console"], "level": "WARNING", "propagate": False},
    },
}
