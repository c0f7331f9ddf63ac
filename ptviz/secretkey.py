"""SECRET_KEY and secrets in error pages (issue 9, item 12).

- No SECRET_KEY in the environment: a random key generated once and kept in a file of the
  checkout (mode 0600), so a local server never runs on a predictable key and a restart
  keeps CSRF cookies valid. `manage.py serve` refuses to listen on anything but loopback
  without SECRET_KEY (a public server's key must not depend on a file next to the code).
- Django's debug page hides settings named like secrets, but not the password inside a
  URL (REDIS_URL, the channel layer's address): RedactingFilter masks it.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
from pathlib import Path

from django.views.debug import SafeExceptionReporterFilter

URL_PASSWORD = re.compile(r"(?P<head>[a-z][a-z0-9+.-]*://[^/:@\s]*:)(?P<pw>[^@/\s]+)(?=@)", re.I)
LOOPBACK = ("127.0.0.1", "::1", "localhost")


def redact_url(text: str) -> str:
    """`redis://:pw@host` -> `redis://:********@host` (any URL with a password)."""
    return URL_PASSWORD.sub(lambda m: m["head"] + "********", text)


def local_secret_key(path: Path) -> str:
    """The key kept in `path`, created (atomically, 0600) the first time."""
    for _ in range(50):
        with contextlib.suppress(FileNotFoundError):
            key = path.read_text().strip()
            if key:
                return key
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_urlsafe(50) + "\n")
        try:
            os.link(tmp, path)  # fails if another process made it first: use theirs
        except FileExistsError:
            pass
        finally:
            os.unlink(tmp)
    raise RuntimeError(f"cannot create the secret key file {path}")


def is_loopback(host: str) -> bool:
    return host.strip("[]") in LOOPBACK or host.startswith("127.")


class RedactingFilter(SafeExceptionReporterFilter):
    def cleanse_setting(self, key, value):
        value = super().cleanse_setting(key, value)
        if isinstance(value, str):
            return redact_url(value)
        return value
