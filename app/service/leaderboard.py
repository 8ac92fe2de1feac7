"""A phase's leaderboard: each participant's best or latest submission, ranked by evaluation.ranking."""
from __future__ import annotations

import tempfile
from pathlib import Path

from app.service.phases import Phase, Rank, Submission, SubmissionState
from evaluation.ranking import leaderboard, read_submission
from petct.jsonio import strict, write_json_atomic


def _ranked(submissions: list[Submission], folder: Path, *, name) -> list[dict]:
    """evaluation.ranking's rows for these submissions, each read back from its metrics.json as `rank` would."""
    entries = []
    for s in submissions:
        path = write_json_atomic(s.report, folder / f"{s.id}.json")
        entries.append(read_submission(path, name=name(s), subsets=None))
    return leaderboard(entries)


def phase_leaderboard(phase: Phase, submissions: list[Submission]) -> list[dict]:
    """Rows best first: position, participant, submission id, weighted rank, per-metric ranks and means."""
    scored: dict[str, list[Submission]] = {}
    for s in submissions:
        if s.state == SubmissionState.scored and s.report is not None:
            scored.setdefault(s.participant, []).append(s)
    if not scored:
        return []
    with tempfile.TemporaryDirectory(prefix="leaderboard-") as tmp:
        folder = Path(tmp)
        chosen = {}
        for participant, own in scored.items():
            if phase.rank == Rank.latest or len(own) == 1:
                chosen[participant] = own[-1]
            else:  # best: the participant's own submissions ranked against each other by the same rule
                best = _ranked(own, folder, name=lambda s: s.id)[0]["submission"]
                chosen[participant] = next(s for s in own if s.id == best)
        rows = _ranked(list(chosen.values()), folder, name=lambda s: s.participant)
    by_participant = {p: s.id for p, s in chosen.items()}
    return [{"position": r["position"], "participant": r["submission"], "submission": by_participant[r["submission"]],
             "weighted_rank": r["weighted_rank"], "rank": r["rank"], "mean": strict(r["mean"])} for r in rows]
