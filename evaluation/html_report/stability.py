"""Ranking stability by bootstrap, as the challengeR package does it: resample the test studies with
replacement, rank the submissions on each resample with the leaderboard's own rule, and count how
often each submission lands on each rank."""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from evaluation.html_report.inputs import SubmissionMetrics
from evaluation.ranking import ALL_STUDIES, RANKED_METRICS, Submission, leaderboard

DEFAULT_RESAMPLES = 1000
DEFAULT_SEED = 0  # a fixed seed: the same metrics give the same report


@dataclass(frozen=True)
class Stability:
    submissions: list[str]  # in leaderboard order
    studies: int  # studies every submission scored, the ones resampled
    resamples: int
    rank_counts: np.ndarray  # (submission, rank - 1) -> resamples with that rank
    kept_rank: list[float]  # per submission: fraction of resamples in which it keeps its leaderboard position


def bootstrap_ranks(submissions: list[SubmissionMetrics], *, resamples: int = DEFAULT_RESAMPLES,
                    seed: int = DEFAULT_SEED) -> Stability | None:
    """Rank distributions over bootstrap resamples of the studies all submissions share; None if none are shared."""
    shared = sorted(set.intersection(*(set(s.values("dice")) for s in submissions)))
    if not shared:
        return None
    # values[submission, metric, study]
    values = np.array([[[by_study[study] for study in shared] for by_study in map(s.values, RANKED_METRICS)]
                       for s in submissions])
    names = [s.name for s in submissions]
    order = [row["submission"] for row in leaderboard(_ranked(names, values))]
    rng = np.random.default_rng(seed)
    counts = np.zeros((len(names), len(names)), dtype=np.int64)
    for _ in range(resamples):
        sample = values[:, :, rng.integers(0, len(shared), size=len(shared))]
        for row in leaderboard(_ranked(names, sample)):
            counts[order.index(row["submission"]), row["position"] - 1] += 1
    kept = [float(counts[i, i]) / resamples for i in range(len(names))]
    return Stability(submissions=order, studies=len(shared), resamples=resamples, rank_counts=counts, kept_rank=kept)


def _ranked(names: list[str], values: np.ndarray) -> list[Submission]:
    with warnings.catch_warnings():  # a metric undefined on every resampled study is NaN, which ranks last
        warnings.simplefilter("ignore", RuntimeWarning)
        means = np.nanmean(values, axis=2)
    return [Submission(name=name, path=Path(name), means={ALL_STUDIES: dict(zip(RANKED_METRICS, map(float, row)))})
            for name, row in zip(names, means)]
