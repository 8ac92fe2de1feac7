"""Scoring many studies in parallel, each in its own process; a failing study is reported, never fatal."""
from __future__ import annotations

import sys

from evaluation.pairing import Case
from evaluation.problems import Problem
from evaluation.scoring import StudyResult, score_files
from petct.errors import InputError
from petct.processes import Outcome, run_isolated

# Imported once by the fork server, so each study's process starts with the scorer loaded.
PRELOAD = ["evaluation.scoring"]


def score_case(case: Case) -> StudyResult | Problem:
    """Score one case; bad input comes back as a Problem (exceptions do not cross processes intact)."""
    try:
        result = score_files(ground_truth=case.ground_truth, prediction=case.prediction, study=case.study)
    except InputError as exc:
        return Problem.of(exc, study=case.study, job=case.job)
    result.warnings[:0] = case.warnings
    return result


def score_cases(cases: list[Case], *, workers: int, timeout_s: float | None = None,
                progress: bool = True) -> tuple[list[tuple[Case, StudyResult]], list[Problem]]:
    """Score every case; (case, result) pairs and problems, both in case order."""
    total = len(cases)
    done = 0

    def report(outcome: Outcome) -> None:
        nonlocal done
        done += 1
        if progress:
            status = "scored" if isinstance(outcome.value, StudyResult) else "FAILED"
            print(f"[{done}/{total}] {status} {outcome.item.study}", file=sys.stderr, flush=True)

    results, problems = [], []
    for outcome in run_isolated(score_case, cases, workers=workers, preload=PRELOAD, what="scoring", timeout_s=timeout_s,
                                on_done=report):
        case = outcome.item
        if isinstance(outcome.value, StudyResult):
            results.append((case, outcome.value))
        elif isinstance(outcome.value, Problem):
            problems.append(outcome.value)
        else:
            problems.append(Problem(study=case.study, job=case.job, file=str(case.prediction),
                                    reason=outcome.failure or "no result"))
    return results, problems
