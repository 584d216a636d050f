"""The PostgreSQL store: the only package that imports psycopg and psycopg_pool.

A ruff banned-api rule (TID251) holds that line for everything outside this folder, so this
folder also owns the seam where every psycopg error becomes a typed `StoreError`.
"""

from .reader import PostgresReader
from .store import PostgresStore

__all__ = ["PostgresReader", "PostgresStore"]
