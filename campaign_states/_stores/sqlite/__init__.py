"""The SQLite store: one file shared by processes on one host (see `store`)."""

from .store import SQLiteReader, SQLiteStore

__all__ = ["SQLiteReader", "SQLiteStore"]
