"""The service's SQLite file (stdlib sqlite3): one connection per store, shared by threads under a lock."""
from __future__ import annotations

import sqlite3
import threading
from contextlib import contextmanager
from pathlib import Path

from petct.errors import InputError


class Database:
    """A connection to the service's database with `schema` applied; subclasses add the queries."""

    schema = ""

    def __init__(self, path: Path):
        self._lock = threading.Lock()
        try:
            self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=30)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")  # what was acknowledged survives a power cut
            self._db.executescript(self.schema)
            self._migrate()
        except sqlite3.Error as exc:
            raise InputError(f"cannot open the job database: {exc}", path=path) from None

    def _migrate(self) -> None:
        """Bring a database made by an older version up to `schema` (no-op by default)."""

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _columns(self, table: str) -> set[str]:
        return {row[1] for row in self._db.execute(f"PRAGMA table_info({table})")}

    @contextmanager
    def _transaction(self):
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def _all(self, sql: str, args=()) -> list[tuple]:
        with self._lock:
            return self._db.execute(sql, args).fetchall()

    def _one(self, sql: str, args=()) -> tuple | None:
        with self._lock:
            return self._db.execute(sql, args).fetchone()
