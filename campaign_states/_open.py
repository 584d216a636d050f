"""`open_registry`: pick a store from a URL."""

from __future__ import annotations

import inspect
import re
import urllib.parse
from typing import Any, Final

from ._registry import Registry
from ._secrets import looks_like_conninfo, mask_secrets
from ._store import Store
from ._validation import ACTOR_LIMIT, CONTENT_LIMIT, NAME_LIMIT, check_limit
from .exceptions import InvalidSettingsError

__all__ = ["open_registry", "open_store"]

_SCHEME: Final = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*):")


def open_store(url: str, *, create: bool = True, **options: Any) -> Store:
    """Open the store a URL names.

    ``memory://``; ``sqlite:///relative/path.db`` or ``sqlite:////absolute/path.db``
    (``?mode=ro`` for read-only); ``postgresql://user@host/db``, or a libpq ``key=value``
    string (``host=db dbname=app user=app``). Keyword options go to the store's
    constructor (``clock``, ``lease``, ``busy_timeout``...). No error message shows a
    password: URLs are shown with it masked (``postgresql://app:***@db/app``).

    Args:
        url: The store's URL.
        create: Create an SQLite file that does not exist yet (the default). With False,
            a path holding no store raises `StoreNotFoundError` and nothing is created
            (the CLI opens stores this way, except for the commands that create things).
            A memory store is always new; a PostgreSQL store's tables are created on
            first use either way.
        **options: For the store's constructor.
    """
    if type(create) is not bool:
        raise InvalidSettingsError(f"create must be a bool, not {create!r:.40}.")
    if not isinstance(url, str):
        raise InvalidSettingsError(f"A store URL is a str, not {type(url).__name__}.")
    # The scheme without urlsplit, which raises a bare ValueError on a stray '[' (an IPv6
    # host half typed) before anything could be checked.
    found = _SCHEME.match(url)
    scheme = found[1].lower() if found else ("postgresql" if looks_like_conninfo(url) else "")
    shown = mask_secrets(url)
    if scheme == "memory":
        from ._stores.memory import MemoryStore

        _check_options(MemoryStore, options)
        return MemoryStore(**options)
    if scheme == "sqlite":
        from ._stores.sqlite import SQLiteStore

        try:
            parts = urllib.parse.urlsplit(url)
        except ValueError:
            parts = None
        # sqlite:///x.db -> netloc '' and path '/x.db' -> relative 'x.db';
        # sqlite:////abs/x.db -> path '//abs/x.db' -> '/abs/x.db'.
        path = "" if parts is None else parts.path[1:] if parts.path.startswith("/") else parts.path
        if parts is None or parts.netloc or not path:
            raise InvalidSettingsError(
                f"Bad SQLite URL {shown!r}: use sqlite:///relative.db or sqlite:////abs/path.db."
            )
        query = urllib.parse.parse_qs(parts.query, keep_blank_values=True)
        mode = query.pop("mode", ["rw"])
        if query or mode not in (["ro"], ["rw"]):
            raise InvalidSettingsError(
                f"Bad SQLite URL {shown!r}: the only option is ?mode=ro (read-only) or ?mode=rw."
            )
        _check_options(SQLiteStore, options, taken=("path", "readonly", "create"))
        return SQLiteStore(
            urllib.parse.unquote(path), readonly=mode == ["ro"], create=create, **options
        )
    if scheme in ("postgresql", "postgres"):
        try:
            from ._stores.postgres import PostgresStore
        except ImportError as e:  # psycopg is an extra
            raise InvalidSettingsError(
                "PostgreSQL needs the extra: pip install 'campaign-states[postgres]'."
            ) from e
        _check_options(PostgresStore, options, taken=("url",))
        return PostgresStore(url, **options)
    raise InvalidSettingsError(
        f"Unknown store URL {shown!r}: use memory://, sqlite:///path.db, postgresql://... "
        "or a libpq key=value string."
    )


def _check_options(cls: type, options: dict[str, Any], taken: tuple[str, ...] = ()) -> None:
    # An unknown keyword would surface as a bare TypeError from the constructor.
    accepted = [
        name
        for name, p in inspect.signature(cls).parameters.items()
        if p.kind is inspect.Parameter.KEYWORD_ONLY and name not in taken
    ]
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise InvalidSettingsError(
            f"{cls.__name__} does not take {', '.join(unknown)}; it takes {', '.join(accepted)}."
        )


def open_registry(
    url: str = "memory://",
    *,
    bulk_limit: int = 100_000,
    drain_timeout: float = 30.0,
    name_limit: int = NAME_LIMIT,
    content_limit: int = CONTENT_LIMIT,
    actor_limit: int = ACTOR_LIMIT,
    create: bool = True,
    **options: Any,
) -> Registry:
    """Open a registry on the store a URL names (see `open_store`, which takes ``create``).

    ``bulk_limit``, ``drain_timeout`` and the size limits (``name_limit`` characters,
    ``content_limit`` UTF-8 bytes, ``actor_limit`` characters) go to `Registry`; the other
    keyword options to the store.

    Raises:
        StoreNotFoundError: ``create=False`` and the URL's SQLite path holds no store.
    """
    # Checked before the store is opened: a bad limit must not leave a new file behind.
    limits = {
        name: check_limit(name, value)
        for name, value in (
            ("name_limit", name_limit),
            ("content_limit", content_limit),
            ("actor_limit", actor_limit),
        )
    }
    return Registry(
        open_store(url, create=create, **options),
        bulk_limit=bulk_limit,
        drain_timeout=drain_timeout,
        **limits,
    )
