"""Inference jobs kept in SQLite (stdlib sqlite3), so that a restart loses none of them."""
from __future__ import annotations

import json
import sqlite3
import threading
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path

from petct.errors import InputError

# A job that was running when the server stopped is run once more; a second interruption fails it.
MAX_ATTEMPTS = 2


class JobState(str, Enum):
    queued = "queued"
    running = "running"
    succeeded = "succeeded"
    failed = "failed"


@dataclass
class Job:
    id: str
    state: JobState
    created_at: float
    files: dict[str, str]  # field -> file name inside the job's folder (server-made)
    started_at: float | None = None
    finished_at: float | None = None
    attempts: int = 0
    error: str | None = None
    timings: dict[str, float] = field(default_factory=dict)
    metrics: dict | None = None
    notes: dict = field(default_factory=dict)

    @property
    def has_label(self) -> bool:
        return "label" in self.files


_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    state TEXT NOT NULL,
    created_at REAL NOT NULL,
    started_at REAL,
    finished_at REAL,
    attempts INTEGER NOT NULL DEFAULT 0,
    files TEXT NOT NULL,
    error TEXT,
    timings TEXT NOT NULL DEFAULT '{}',
    metrics TEXT,
    notes TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX IF NOT EXISTS jobs_state ON jobs (state, seq);
"""
_COLUMNS = "id, state, created_at, files, started_at, finished_at, attempts, error, timings, metrics, notes"


def new_job_id() -> str:
    return uuid.uuid4().hex


def is_job_id(text: str) -> bool:
    """Whether `text` could be a job id (32 lowercase hex digits); anything else never touches the disk."""
    return len(text) == 32 and all(c in "0123456789abcdef" for c in text)


class JobStore:
    """All job records; one connection shared by threads under a lock (jobs are few, writes are tiny)."""

    def __init__(self, path: Path):
        self._lock = threading.Lock()
        try:
            self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=30)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")  # a job acknowledged with 202 survives a power cut
            self._db.executescript(_SCHEMA)
        except sqlite3.Error as exc:
            raise InputError(f"cannot open the job database: {exc}", path=path) from None

    def close(self) -> None:
        with self._lock:
            self._db.close()

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

    @staticmethod
    def _job(row) -> Job:
        (id_, state, created, files, started, finished, attempts, error, timings, metrics, notes) = row
        return Job(id=id_, state=JobState(state), created_at=created, files=json.loads(files), started_at=started,
                   finished_at=finished, attempts=attempts, error=error, timings=json.loads(timings),
                   metrics=json.loads(metrics) if metrics else None, notes=json.loads(notes))

    def add(self, job_id: str, files: dict[str, str]) -> Job:
        with self._transaction() as db:
            db.execute("INSERT INTO jobs (id, state, created_at, files) VALUES (?, ?, ?, ?)",
                       (job_id, JobState.queued.value, time.time(), json.dumps(files)))
        return self.get(job_id)

    def get(self, job_id: str) -> Job | None:
        with self._lock:
            row = self._db.execute(f"SELECT {_COLUMNS} FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return self._job(row) if row else None

    def page(self, *, limit: int, offset: int, state: JobState | None = None) -> tuple[list[Job], int]:
        """Jobs newest first, and how many there are in all."""
        where, args = ("WHERE state = ?", [state.value]) if state else ("", [])
        with self._lock:
            rows = self._db.execute(f"SELECT {_COLUMNS} FROM jobs {where} ORDER BY seq DESC LIMIT ? OFFSET ?",
                                    (*args, limit, offset)).fetchall()
            total = self._db.execute(f"SELECT COUNT(*) FROM jobs {where}", args).fetchone()[0]
        return [self._job(r) for r in rows], total

    def ids(self) -> set[str]:
        with self._lock:
            return {r[0] for r in self._db.execute("SELECT id FROM jobs")}

    def count(self, state: JobState) -> int:
        with self._lock:
            return self._db.execute("SELECT COUNT(*) FROM jobs WHERE state = ?", (state.value,)).fetchone()[0]

    def claim_next(self) -> Job | None:
        """The oldest queued job, now marked running (one more attempt), or None."""
        with self._transaction() as db:
            row = db.execute("SELECT id FROM jobs WHERE state = ? ORDER BY seq LIMIT 1",
                             (JobState.queued.value,)).fetchone()
            if row is None:
                return None
            db.execute("UPDATE jobs SET state = ?, started_at = ?, attempts = attempts + 1 WHERE id = ?",
                       (JobState.running.value, time.time(), row[0]))
        return self.get(row[0])

    def finish(self, job_id: str, *, state: JobState, error: str | None = None, timings: dict | None = None,
               metrics: dict | None = None, notes: dict | None = None) -> None:
        with self._transaction() as db:
            db.execute("UPDATE jobs SET state = ?, finished_at = ?, error = ?, timings = ?, metrics = ?, notes = ? "
                       "WHERE id = ?",
                       (state.value, time.time(), error, json.dumps(timings or {}),
                        json.dumps(metrics) if metrics is not None else None, json.dumps(notes or {}), job_id))

    def delete(self, job_id: str) -> JobState | None:
        """Remove a job unless it is running; returns the state it had (None: no such job)."""
        with self._transaction() as db:
            row = db.execute("SELECT state FROM jobs WHERE id = ?", (job_id,)).fetchone()
            if row is None:
                return None
            if row[0] != JobState.running.value:
                db.execute("DELETE FROM jobs WHERE id = ?", (job_id,))
            return JobState(row[0])

    def recover(self) -> tuple[list[str], list[str]]:
        """After a restart: jobs left running are queued again once, or failed. Returns (requeued, failed)."""
        with self._transaction() as db:
            rows = db.execute("SELECT id, attempts FROM jobs WHERE state = ?", (JobState.running.value,)).fetchall()
            requeued = [id_ for id_, attempts in rows if attempts < MAX_ATTEMPTS]
            failed = [id_ for id_, attempts in rows if attempts >= MAX_ATTEMPTS]
            for id_ in requeued:
                db.execute("UPDATE jobs SET state = ?, started_at = NULL WHERE id = ?", (JobState.queued.value, id_))
            for id_ in failed:
                db.execute("UPDATE jobs SET state = ?, finished_at = ?, error = ? WHERE id = ?",
                           (JobState.failed.value, time.time(),
                            f"the server stopped while this job was running, {MAX_ATTEMPTS} times; not retried again",
                            id_))
        return requeued, failed
