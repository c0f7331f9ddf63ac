"""DATABASE_URL parsing (no dj-database-url)."""

from pathlib import Path

import pytest

from ptviz.dburl import DatabaseUrlError, parse_database_url

BASE = Path("/srv/ptviz")


def test_sqlite_urls():
    assert parse_database_url("sqlite:///db.sqlite3", BASE)["NAME"] == "/srv/ptviz/db.sqlite3"
    assert parse_database_url("sqlite:///data/x.db", BASE)["NAME"] == "/srv/ptviz/data/x.db"
    db = parse_database_url("sqlite:////var/lib/ptviz.db", BASE)
    assert db["NAME"] == "/var/lib/ptviz.db" and db["ENGINE"].endswith("sqlite3")
    assert db["OPTIONS"]["transaction_mode"] == "IMMEDIATE"


def test_postgres_urls():
    db = parse_database_url("postgres://u%40x:p%2Fw@db.example:5433/ptviz?sslmode=require", BASE)
    assert db == {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": "ptviz",
        "USER": "u@x",
        "PASSWORD": "p/w",
        "HOST": "db.example",
        "PORT": "5433",
        "CONN_MAX_AGE": 60,
        "OPTIONS": {"sslmode": "require"},
    }
    assert parse_database_url("postgresql://localhost/ptviz", BASE)["PORT"] == ""


@pytest.mark.parametrize(
    "url", ["sqlite://:memory:", "sqlite:///:memory:", "mysql://h/db", "postgres://h/"]
)
def test_unusable_urls_are_refused(url):
    with pytest.raises(DatabaseUrlError, match="DATABASE_URL"):
        parse_database_url(url, BASE)
