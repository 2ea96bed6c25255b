"""Storage URLs as codesign shows them: never with a password.

A URL's user information is everything between ``://`` and the *last* ``@`` before the
query: a password may hold ``/``, ``?``, ``#`` or an unescaped ``@`` (SQLAlchemy reads it
so), and masking too much is safe where masking too little is not. Query parameters that
carry a password (``password``, ``passwd``, ``sslpassword``, ...) are masked too.
"""

from __future__ import annotations

import re

_SECRET_KEY = re.compile(r"^(ssl)?pass(word|wd)?$", re.IGNORECASE)
MASK = "***"


def _split(url: str) -> tuple[str, str | None, str, str | None]:
    """``(scheme://, user information or None, host and path, query or None)``."""
    head, sep, rest = url.partition("://")
    if not sep:
        return url, None, "", None
    user, at, after = rest.rpartition("@")
    hostpath, q, query = (after if at else rest).partition("?")
    return head + sep, (user if at else None), hostpath, (query if q else None)


def _query(query: str | None, keep_secrets: bool) -> str:
    if query is None:
        return ""
    parts = []
    for item in query.split("&"):
        key, eq, _ = item.partition("=")
        if _SECRET_KEY.match(key):
            if keep_secrets:
                parts.append(f"{key}={MASK}" if eq else item)
            continue
        parts.append(item)
    return "?" + "&".join(parts) if parts else ""


def display_url(url: str) -> str:
    """``url`` with every password replaced by ``***``: what codesign prints or writes of a
    storage URL."""
    head, user, hostpath, query = _split(url)
    if user is not None and ":" in user:
        user = user.split(":", 1)[0] + ":" + MASK
    return head + (f"{user}@" if user is not None else "") + hostpath + _query(query, True)


def has_password(url: str) -> bool:
    return display_url(url) != url


def without_password(url: str) -> str:
    """``url`` without its password (the user name stays): a URL to print in a command that
    the database client completes from ``PGPASSWORD`` / ``~/.pgpass``."""
    head, user, hostpath, query = _split(url)
    if user is not None:
        user = user.split(":", 1)[0]
    return head + (f"{user}@" if user is not None else "") + hostpath + _query(query, False)
