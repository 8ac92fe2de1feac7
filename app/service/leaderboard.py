"""Each phase's leaderboard, kept up to date as submissions are scored, ranked by evaluation.ranking.

A participant's row is their best or latest scored submission (the phase says which). The rows are
recomputed when a submission is scored (in a thread of their own: neither the scoring pool nor the event
loop), from means kept in memory, so reading a leaderboard only copies its rows: O(participants). Start-up
reads every scored submission once to build them.

Order: the weighted mean rank, then the better mean Dice, then the earlier submission (by the time it was
received) — for a participant's own submissions under `best` as for the rows; a restart changes nothing.
"""
from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from app.service.phases import Phase, PhaseStore, Rank, Submission, SubmissionState
from evaluation.ranking import Submission as Ranked
from evaluation.ranking import leaderboard, submission_of
from petct.errors import InputError
from petct.jsonio import strict


@dataclass(frozen=True)
class _Entry:
    submission: str  # id
    participant: str
    received: tuple[float, str]  # (created_at, id): the order ties keep
    means: Ranked  # named by the submission's id


def _entry(submission: Submission) -> _Entry | None:
    """The ranked means of a scored submission; None when it has none to rank."""
    if submission.state != SubmissionState.scored or submission.report is None:
        return None
    try:
        means = submission_of(submission.report, name=submission.id, path=Path(f"submission {submission.id}"),
                              subsets=None)
    except InputError:
        return None
    return _Entry(submission=submission.id, participant=submission.participant,
                  received=(submission.created_at, submission.id), means=means)


def _renamed(entry: _Entry, name: str) -> Ranked:
    return Ranked(name=name, path=entry.means.path, means=entry.means.means, studies=entry.means.studies)


def _best(own: list[_Entry]) -> _Entry:
    """The participant's own submissions ranked against each other by the leaderboard's rule; ties: the earliest."""
    if len(own) == 1:
        return own[0]
    first = leaderboard([e.means for e in own])[0]["submission"]
    return next(e for e in own if e.submission == first)


def rank_rows(chosen: list[_Entry]) -> list[dict]:
    """Rows best first; `chosen` in the order the submissions were received (ties beyond Dice: the earlier)."""
    if not chosen:
        return []
    rows = leaderboard([_renamed(e, e.participant) for e in chosen])
    by_participant = {e.participant: e.submission for e in chosen}
    return [{"position": r["position"], "participant": r["submission"], "submission": by_participant[r["submission"]],
             "weighted_rank": r["weighted_rank"], "rank": r["rank"], "mean": strict(r["mean"])} for r in rows]


class Leaderboards:
    """Every phase's rows, recomputed as submissions are scored."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._own: dict[str, dict[str, list[_Entry]]] = {}  # phase -> participant -> scored entries, oldest first
        self._chosen: dict[str, dict[str, _Entry]] = {}  # phase -> participant -> the entry that is ranked
        self._rows: dict[str, list[dict]] = {}
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="leaderboard")

    def load(self, phases: PhaseStore) -> None:
        """Build every phase's rows from the database (start-up)."""
        for phase in phases.list():
            for submission in phases.of(phase.name):
                self._add(phase, submission, rank=False)
            self._rerank(phase.name)

    def rows(self, phase: str) -> list[dict]:
        """The phase's rows, best first (a copy of the list; the rows themselves are never changed)."""
        return list(self._rows.get(phase, ()))

    async def scored(self, phase: Phase, submission: Submission) -> None:
        """Take a newly scored submission into its phase's leaderboard (before its answer is sent)."""
        await asyncio.wrap_future(self._executor.submit(self._add, phase, submission, rank=True))

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)

    def _add(self, phase: Phase, submission: Submission, *, rank: bool) -> None:
        entry = _entry(submission)
        if entry is None:
            return
        with self._lock:
            own = self._own.setdefault(phase.name, {}).setdefault(entry.participant, [])
            if any(e.submission == entry.submission for e in own):
                return
            own.append(entry)
            own.sort(key=lambda e: e.received)  # one submission may be scored before an earlier one
            chosen = own[-1] if phase.rank == Rank.latest else _best(own)
            self._chosen.setdefault(phase.name, {})[entry.participant] = chosen
            if rank:
                self._rerank(phase.name)

    def _rerank(self, phase: str) -> None:
        chosen = sorted(self._chosen.get(phase, {}).values(), key=lambda e: e.received)
        self._rows[phase] = rank_rows(chosen)
