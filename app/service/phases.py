"""Phases (a case set with a submission budget) and the participants' submissions to them, in SQLite."""
from __future__ import annotations

import json
import math
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from enum import Enum
from pathlib import Path

from app.service.db import Database
from app.service.participants import check_name
from evaluation.ranking import RANKED_METRICS
from petct.errors import InputError
from petct.jsonio import strict

# What a participant sees of a phase that hides its cases (submissions and leaderboard, in the API and on the
# pages alike): the ranked metrics' means, each rounded to this many significant digits, and nothing else
# derived from the truth. Rounding narrows what a submission can learn about the hidden truth but cannot close
# it (README, "What a submission's answer can tell").
AGGREGATE_SIGNIFICANT_DIGITS = 3
INTERRUPTED = ("the server stopped while scoring this submission; it does not count against your budget: "
               "send it again")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS phases (
    name TEXT PRIMARY KEY,
    cases TEXT NOT NULL,
    per_day INTEGER NOT NULL,
    total INTEGER NOT NULL,
    show_cases INTEGER NOT NULL,
    rank TEXT NOT NULL,
    created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS submissions (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    phase TEXT NOT NULL,
    participant TEXT NOT NULL,
    created_at REAL NOT NULL,
    state TEXT NOT NULL,
    error TEXT,
    report TEXT
);
CREATE INDEX IF NOT EXISTS submissions_by ON submissions (phase, participant, created_at);
"""


class Rank(str, Enum):
    best = "best"
    latest = "latest"


class SubmissionState(str, Enum):
    scoring = "scoring"
    scored = "scored"
    failed = "failed"
    interrupted = "interrupted"  # the server stopped while scoring it: the server's failure, not counted


@dataclass(frozen=True)
class Phase:
    name: str
    cases: tuple[str, ...]
    per_day: int
    total: int
    show_cases: bool
    rank: Rank


@dataclass(frozen=True)
class Submission:
    id: str
    phase: str
    participant: str
    created_at: float
    state: SubmissionState
    error: str | None
    report: dict | None  # the whole metrics.json; what a participant sees of it depends on the phase


@dataclass
class BudgetSpent(Exception):
    """No submission allowed now; `next_allowed` is when one is (epoch seconds), None: never again."""

    reason: str
    next_allowed: float | None


def rounded(value: float | None) -> float | None:
    """`value` to AGGREGATE_SIGNIFICANT_DIGITS significant digits (None, 0 and non-finite values unchanged)."""
    if value is None or not math.isfinite(value) or value == 0:
        return value
    return float(f"{value:.{AGGREGATE_SIGNIFICANT_DIGITS - 1}e}")


def means_only(aggregates: dict) -> dict:
    """A hidden phase's aggregates: {metric: {"mean": rounded}} for the ranked metrics only."""
    shown = {}
    for metric in RANKED_METRICS:
        stats = aggregates.get(metric)
        if isinstance(stats, dict):
            mean = stats.get("mean")
            shown[metric] = {"mean": rounded(float(mean)) if isinstance(mean, (int, float)) else None}
    return shown


def read_case_list(path: Path) -> list[str]:
    """Case names from a text file, one a line; blank lines and `#` comments skipped."""
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read the case list: {getattr(exc, 'strerror', None) or exc}", path=path) from None
    cases = [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]
    if not cases:
        raise InputError("the case list names no case", path=path)
    if len(set(cases)) != len(cases):
        raise InputError("the case list names a case twice", path=path)
    return cases


def next_utc_midnight(now: float) -> float:
    day = datetime.fromtimestamp(now, tz=timezone.utc).replace(hour=0, minute=0, second=0, microsecond=0)
    return (day + timedelta(days=1)).timestamp()


class PhaseStore(Database):
    schema = _SCHEMA

    def create(self, phase: Phase) -> None:
        check_name(phase.name)
        if phase.per_day < 1 or phase.total < 1:
            raise InputError("--per-day and --total must be at least 1")
        with self._transaction() as db:
            if db.execute("SELECT 1 FROM phases WHERE name = ?", (phase.name,)).fetchone():
                raise InputError(f"phase {phase.name} already exists")
            db.execute("INSERT INTO phases VALUES (?, ?, ?, ?, ?, ?, ?)",
                       (phase.name, json.dumps(list(phase.cases)), phase.per_day, phase.total,
                        int(phase.show_cases), phase.rank.value, time.time()))

    def get(self, name: str) -> Phase | None:
        row = self._one("SELECT name, cases, per_day, total, show_cases, rank FROM phases WHERE name = ?", (name,))
        return self._phase(row) if row else None

    def list(self) -> list[Phase]:
        return [self._phase(r) for r in
                self._all("SELECT name, cases, per_day, total, show_cases, rank FROM phases ORDER BY name")]

    @staticmethod
    def _phase(row) -> Phase:
        name, cases, per_day, total, show, rank = row
        return Phase(name=name, cases=tuple(json.loads(cases)), per_day=per_day, total=total, show_cases=bool(show),
                     rank=Rank(rank))

    def budget_check(self, phase: Phase, participant: str, *, now: float | None = None) -> None:
        """BudgetSpent when `participant` may not submit to `phase` now."""
        with self._lock:
            self._check(self._db, phase, participant, time.time() if now is None else now)

    @staticmethod
    def _check(db, phase: Phase, participant: str, now: float) -> None:
        total, today = db.execute(
            "SELECT COUNT(*), COALESCE(SUM(created_at >= ?), 0) FROM submissions "
            "WHERE phase = ? AND participant = ? AND state != ?",
            (next_utc_midnight(now) - 86400, phase.name, participant, SubmissionState.interrupted.value)).fetchone()
        if total >= phase.total:
            raise BudgetSpent(f"all {phase.total} submissions of phase {phase.name} are used", None)
        if today >= phase.per_day:
            raise BudgetSpent(f"{phase.per_day} submission(s) a day (UTC) in phase {phase.name}; today's are used",
                              next_utc_midnight(now))

    def reserve(self, phase: Phase, participant: str, *, now: float | None = None) -> str:
        """Record a submission being scored (it counts from now on), or BudgetSpent; one check-and-insert."""
        now = time.time() if now is None else now
        submission_id = uuid.uuid4().hex
        with self._transaction() as db:
            self._check(db, phase, participant, now)
            db.execute("INSERT INTO submissions (id, phase, participant, created_at, state) VALUES (?, ?, ?, ?, ?)",
                       (submission_id, phase.name, participant, now, SubmissionState.scoring.value))
        return submission_id

    def finish(self, submission_id: str, *, report: dict | None = None, error: str | None = None) -> Submission:
        state = SubmissionState.failed if error else SubmissionState.scored
        with self._transaction() as db:
            db.execute("UPDATE submissions SET state = ?, error = ?, report = ? WHERE id = ?",
                       (state.value, error, json.dumps(strict(report)) if report is not None else None, submission_id))
        return self.submissions(where="id = ?", args=(submission_id,))[0]

    def submissions(self, *, where: str, args: tuple) -> list[Submission]:
        rows = self._all("SELECT id, phase, participant, created_at, state, error, report FROM submissions "
                         f"WHERE {where} ORDER BY seq", args)
        return [Submission(id=r[0], phase=r[1], participant=r[2], created_at=r[3], state=SubmissionState(r[4]),
                           error=r[5], report=json.loads(r[6]) if r[6] else None) for r in rows]

    def of(self, phase: str, participant: str | None = None) -> list[Submission]:
        """A phase's submissions, oldest first: one participant's, or everyone's."""
        if participant is None:
            return self.submissions(where="phase = ?", args=(phase,))
        return self.submissions(where="phase = ? AND participant = ?", args=(phase, participant))

    def fail_interrupted(self) -> int:
        """After a restart: submissions left scoring are marked interrupted, and count against no budget."""
        with self._transaction() as db:
            return db.execute("UPDATE submissions SET state = ?, error = ? WHERE state = ?",
                              (SubmissionState.interrupted.value, INTERRUPTED,
                               SubmissionState.scoring.value)).rowcount
