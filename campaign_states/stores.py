"""The store backends, and the protocols a backend implements.

`MemoryStore`, `SQLiteStore` and `PostgresStore` (which needs the ``postgres`` extra and loads
lazily) are the backends; `Store`, `WriteTx`, `Reader` and the row types are what a new
backend implements and what a gate reads.

Deprecated, kept importable: `SetWriteTx` and `GateReader` are aliases of `WriteTx` and
`Reader` (their optional methods, ``move_campaigns`` and ``gate_rows_since``, are part of
those protocols now), and `ChangeBatch` is the batch of the old record read
(``changes_since``), which `Reader` no longer requires.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._store import (
    ChangeBatch,
    GateReader,
    GateRow,
    GateRowBatch,
    Reader,
    SetWriteTx,
    Store,
    WriteTx,
)
from ._stores.memory import MemoryStore
from ._stores.sqlite import SQLiteStore

if TYPE_CHECKING:
    from ._stores.postgres import PostgresStore

__all__ = [
    "ChangeBatch",
    "GateReader",
    "GateRow",
    "GateRowBatch",
    "MemoryStore",
    "PostgresStore",
    "Reader",
    "SQLiteStore",
    "SetWriteTx",
    "Store",
    "WriteTx",
]


def __getattr__(name: str) -> Any:
    # psycopg stays out of the import path until someone asks for PostgreSQL.
    if name == "PostgresStore":
        from ._stores.postgres import PostgresStore

        return PostgresStore
    raise AttributeError(name)
