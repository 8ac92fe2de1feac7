"""Inference jobs kept in SQLite (stdlib sqlite3), so that a restart loses none of them."""
from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass, field
from enum import Enum

from app.service.db import Database

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
    owner: str | None = None  # the participant who submitted it; None: the organiser (or anonymous)
    queued_s: float = 0.0  # time spent waiting in the queue, over every attempt (not the interrupted runs)
    study: str | None = None  # the name its metrics carry: the uploaded PET's

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
    notes TEXT NOT NULL DEFAULT '{}',
    owner TEXT,
    queued_at REAL,
    queued_s REAL NOT NULL DEFAULT 0,
    study TEXT
);
CREATE INDEX IF NOT EXISTS jobs_state ON jobs (state, seq);
"""
_COLUMNS = ("id, state, created_at, files, started_at, finished_at, attempts, error, timings, metrics, notes, owner, "
            "queued_s, study")
# Added after the first release; older databases get them on open.
_LATER_COLUMNS = {"owner": "TEXT", "queued_at": "REAL", "queued_s": "REAL NOT NULL DEFAULT 0",
                  "study": "TEXT"}


def new_job_id() -> str:
    return uuid.uuid4().hex


def is_job_id(text: str) -> bool:
    """Whether `text` could be a job id (32 lowercase hex digits); anything else never touches the disk."""
    return len(text) == 32 and all(c in "0123456789abcdef" for c in text)


class JobStore(Database):
    """All job records (jobs are few, writes are tiny)."""

    schema = _SCHEMA

    def _migrate(self) -> None:
        missing = {name: kind for name, kind in _LATER_COLUMNS.items() if name not in self._columns("jobs")}
        for name, kind in missing.items():
            self._db.execute(f"ALTER TABLE jobs ADD COLUMN {name} {kind}")
        if "queued_at" in missing:
            self._db.execute("UPDATE jobs SET queued_at = created_at")

    @staticmethod
    def _job(row) -> Job:
        (id_, state, created, files, started, finished, attempts, error, timings, metrics, notes, owner,
         queued_s, study) = row
        return Job(id=id_, state=JobState(state), created_at=created, files=json.loads(files), started_at=started,
                   finished_at=finished, attempts=attempts, error=error, timings=json.loads(timings),
                   metrics=json.loads(metrics) if metrics else None, notes=json.loads(notes), owner=owner,
                   queued_s=queued_s, study=study)

    def add(self, job_id: str, files: dict[str, str], *, owner: str | None = None, study: str | None = None) -> Job:
        now = time.time()
        with self._transaction() as db:
            db.execute("INSERT INTO jobs (id, state, created_at, files, owner, queued_at, study) "
                       "VALUES (?, ?, ?, ?, ?, ?, ?)",
                       (job_id, JobState.queued.value, now, json.dumps(files), owner, now, study))
        return self.get(job_id)
    def get(self, job_id: str) -> Job | None:
        with self._lock:
            row = self._db.execute(f"SELECT {_COLUMNS} FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return self._job(row) if row else None

    def page(self, *, limit: int, offset: int, state: JobState | None = None,
             owner: str | None = None, everyone: bool = True) -> tuple[list[Job], int]:
        """Jobs newest first (everyone's, or `owner`'s only), and how many there are in all."""
        conditions, args = [], []
        if state:
            conditions, args = ["state = ?"], [state.value]
        if not everyone:
            conditions.append("owner IS ?")
            args.append(owner)
        where = f"WHERE {' AND '.join(conditions)}" if conditions else ""
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
            now = time.time()
            db.execute("UPDATE jobs SET state = ?, started_at = ?, attempts = attempts + 1, "
                       "queued_s = queued_s + MAX(0, ? - COALESCE(queued_at, created_at)) WHERE id = ?",
                       (JobState.running.value, now, now, row[0]))
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
                # Queued again from now: the interrupted run's time is not queueing time.
                db.execute("UPDATE jobs SET state = ?, started_at = NULL, queued_at = ? WHERE id = ?",
                           (JobState.queued.value, time.time(), id_))
            for id_ in failed:
                db.execute("UPDATE jobs SET state = ?, finished_at = ?, error = ? WHERE id = ?",
                           (JobState.failed.value, time.time(),
                            f"the server stopped while this job was running, {MAX_ATTEMPTS} times; not retried again",
                            id_))
        return requeued, failed

    def expired(self, *, finished_before: float) -> list[str]:
        """Ids of succeeded or failed jobs that finished before `finished_before` (epoch seconds)."""
        return [r[0] for r in self._all("SELECT id FROM jobs WHERE state IN (?, ?) AND finished_at < ?",
                                         (JobState.succeeded.value, JobState.failed.value, finished_before))]
