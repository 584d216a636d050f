"""Masking passwords in store URLs and libpq ``key=value`` strings before they are shown.

Pure Python, so `open_store` can mask a URL it cannot parse (only the PostgreSQL module
imports psycopg). The rules follow libpq's own parsing, so that what it would read as a
password is what is masked; anything unclear is masked too (a shown URL is for people,
``***`` too many costs nothing).
"""

from __future__ import annotations

import re
from typing import Final

__all__ = ["MASK", "looks_like_conninfo", "mask_secrets"]

MASK: Final = "***"

# libpq's URI parser reads the user info up to the first '@' before any '/': the password
# is what follows the first ':' in it (as SQLAlchemy's URL repr masks it).
_USERINFO: Final = re.compile(r"^(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)(?P<info>[^@/]*)@")
# A password (or another libpq secret) as a query parameter: ?password=..., &sslpassword=...
_SECRET_KEYS: Final = r"(?:(?:ssl)?password|oauth_client_secret|scram_client_key|scram_server_key)"
_QUERY: Final = re.compile(rf"(?P<key>[?&]{_SECRET_KEYS}=)[^&#]*", re.IGNORECASE)
# key=value conninfo: the value is single-quoted (backslash escapes) or runs to the next
# space (backslash escapes too); an unterminated quote runs to the end.
_KEYWORD: Final = re.compile(
    rf"(?P<key>(?:^|(?<=\s)){_SECRET_KEYS}\s*=\s*)"
    r"(?:'(?:[^'\\]|\\.)*(?:'|\\?$)|(?:[^\s\\]|\\.)+)",
    re.IGNORECASE,
)
_CONNINFO: Final = re.compile(r"^\s*[A-Za-z_]+\s*=")


def looks_like_conninfo(text: str) -> bool:
    """Whether ``text`` is a libpq ``key=value`` string (``host=db dbname=app``)."""
    return "://" not in text and _CONNINFO.match(text) is not None


def mask_secrets(text: str) -> str:
    """``text`` with every password replaced by ``***``: URL user info, ``password=`` query
    parameters, and ``password=`` keywords of a libpq ``key=value`` string."""
    m = _USERINFO.match(text)
    if m is not None:
        user, colon, _password = m["info"].partition(":")
        if colon:
            text = f"{m['scheme']}{user}:{MASK}@{text[m.end() :]}"
    text = _QUERY.sub(lambda q: q["key"] + MASK, text)
    return _KEYWORD.sub(lambda k: k["key"] + MASK, text)
