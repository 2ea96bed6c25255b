"""Storage URLs as codesign shows them: never with a password."""

from __future__ import annotations

import re

# user:password@ in a URL, and password=... in its query string
_PASSWORD = re.compile(r"(?P<head>://[^/:@?#]*:)[^@/?#]*@")
_QUERY_PASSWORD = re.compile(r"(?P<head>[?&]password=)[^&#]*", re.IGNORECASE)


def display_url(url: str) -> str:
    """``url`` with its password (if any) replaced by ``***``: what codesign prints or writes
    of a storage URL."""
    url = _PASSWORD.sub(r"\g<head>***@", url)
    return _QUERY_PASSWORD.sub(r"\g<head>***", url)


def has_password(url: str) -> bool:
    return display_url(url) != url


def without_password(url: str) -> str:
    url = _PASSWORD.sub(lambda m: m.group("head")[:-1] + "@", url)
    return _QUERY_PASSWORD.sub("", url).replace("?&", "?").rstrip("?")
