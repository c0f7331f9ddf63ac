"""DATABASE_URL -> Django DATABASES entry (sqlite:///path, postgres://user:pw@host:port/db).

Parsed here so the project needs no dj-database-url.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import parse_qsl, unquote, urlsplit

POSTGRES_SCHEMES = ("postgres", "postgresql", "pgsql", "postgresql+psycopg")


class DatabaseUrlError(ValueError):
    pass


def sqlite_options() -> dict:
    # Several processes share the file (server + engine workers): WAL lets readers run
    # next to the one writer, IMMEDIATE transactions take the write lock up front (no
    # deadlock-prone lock upgrades), and the busy timeout waits instead of failing.
    return {
        "timeout": 20,
        "transaction_mode": "IMMEDIATE",
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
    }


def sqlite_database(path: str | Path) -> dict:
    return {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": str(path),
        "OPTIONS": sqlite_options(),
    }


def parse_database_url(url: str, base_dir: Path) -> dict:
    """One DATABASES entry. Relative SQLite paths are relative to base_dir."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme == "sqlite":
        # sqlite:///relative.sqlite3 (relative to the project) or sqlite:////abs/path.
        rest = unquote(url.split(":", 1)[1].split("?", 1)[0])
        rest = rest[2:] if rest.startswith("//") else rest
        raw = rest[1:] if rest.startswith("/") else rest
        if raw in ("", ":memory:") or "mode=memory" in url:
            raise DatabaseUrlError(
                "DATABASE_URL: in-memory SQLite cannot be shared by the server and its "
                "engine worker processes; give a file (sqlite:///db.sqlite3)"
            )
        path = Path(raw)
        if not path.is_absolute():
            path = base_dir / path
        return sqlite_database(path)
    if scheme in POSTGRES_SCHEMES:
        name = unquote(parts.path.lstrip("/"))
        if not name:
            raise DatabaseUrlError(f"DATABASE_URL: no database name in {url!r}")
        db = {
            "ENGINE": "django.db.backends.postgresql",
            "NAME": name,
            "USER": unquote(parts.username or ""),
            "PASSWORD": unquote(parts.password or ""),
            "HOST": parts.hostname or "",
            "PORT": str(parts.port or ""),
            "CONN_MAX_AGE": 60,
        }
        options = dict(parse_qsl(parts.query))
        if options:
            db["OPTIONS"] = options
        return db
    raise DatabaseUrlError(
        f"DATABASE_URL: unsupported scheme {parts.scheme!r} (use sqlite:///FILE or "
        "postgres://USER:PASSWORD@HOST:PORT/NAME)"
    )
