"""Each edition's leaderboard over submissions' metrics.json: the one entry point of `evaluation rank` and campaigns.

2022/2024: the mean ranks of Dice, FPV and FNV (evaluation.ranking; 2024 per tracer x centre subset); 2025: the same
on the areas under the click curves; 2026: the closed loops' AUC-Dice and pooled AUC-DMM (evaluation.loop_ranking).
"""
from __future__ import annotations

from dataclasses import dataclass

from evaluation.loop_ranking import format_loop_leaderboard, read_loop_submissions, study_sets
from evaluation.loop_ranking import leaderboard as loop_leaderboard
from evaluation.ranking import (
    format_leaderboard,
    format_subset_means,
    leaderboard,
    read_submission,
    study_set_warnings,
    submission_argument,
)
from petct.editions import edition as edition_named
from petct.errors import InputError


def subsets_refusal(challenge: str) -> str | None:
    """Why `challenge` cannot rank per subset, or None when it can."""
    if edition_named(challenge).scribbles:
        return f"{challenge} ranks over all studies (the pooled DMM pools them): give no --subsets or --studies"
    return None


@dataclass(frozen=True)
class Leaderboard:
    rows: list[dict]  # best first
    text: str  # the plain-text table (2024 with subsets: each subset's means first)
    warnings: list[str]  # e.g. submissions scored on different studies


def edition_leaderboard(metrics: list[str], *, challenge: str, subsets: dict[str, str] | None = None) -> Leaderboard:
    """The leaderboard of [NAME=]PATH metrics.json files under `challenge`'s rule; InputError naming a bad file."""
    edition = edition_named(challenge)
    if subsets is not None and (refusal := subsets_refusal(challenge)):
        raise InputError(refusal)
    if edition.scribbles:
        loops = read_loop_submissions(metrics)
        rows = loop_leaderboard(loops)
        return Leaderboard(rows=rows, text=format_loop_leaderboard(rows), warnings=study_set_warnings(study_sets(loops)))
    suffix = "_auc" if edition.clicks else ""  # 2025: rank the areas under the curves
    submissions = [read_submission(path, name=name, subsets=subsets, suffix=suffix)
                   for name, path in map(submission_argument, metrics)]
    rows = leaderboard(submissions)
    text = format_leaderboard(rows)
    if subsets is not None:
        text = f"{format_subset_means(submissions)}\n\n{text}"
    return Leaderboard(rows=rows, text=text, warnings=study_set_warnings({s.name: s.studies for s in submissions}))
