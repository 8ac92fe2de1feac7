"""metrics.json: per-study metrics under `case`, statistics under `aggregates`, every problem, the kit's version."""
from __future__ import annotations

import sys
from pathlib import Path

from evaluation.aggregates import aggregate
from evaluation.pairing import Case
from evaluation.problems import Problem
from evaluation.records import MetricsJson, case_key, metrics_json, study_record
from evaluation.scoring import StudyResult
from petct.jsonio import write_json_atomic
from petct.studykey import safe_key
from petct.version import kit_version


def build_report(results: list[tuple[Case, StudyResult]], problems: list[Problem]) -> MetricsJson:
    """The content of metrics.json (NaN becomes null when written).

    `case` is keyed by the study's key (see case_key); each record holds the name as is.
    """
    keys: dict[str, str] = {}
    # Names that are keys already keep them; a name made safe that collides with one gets a number.
    for study in sorted({item.study for item, _ in results}, key=lambda name: (safe_key(name) != name, name)):
        keys[study] = case_key(study, taken=set(keys.values()))
    case = {keys[item.study]: study_record(result.metrics, study=item.study, files=result.files(),
                                           warnings=result.warnings, job=item.job, with_job=True)
            for item, result in sorted(results, key=lambda pair: pair[0].study)}
    return metrics_json(case, aggregates=aggregate([result for _, result in results]),
                        errors=[problem.to_json() for problem in problems])


def write_report(report: dict, path: Path) -> Path:
    """Write metrics.json atomically (readers never see half a file), with the version of the kit that scored it."""
    return write_json_atomic({**report, "kit_version": kit_version()}, path)


def print_problems(problems: list[Problem]) -> None:
    """One line per problem on stderr, so the platform's log shows why a study is missing."""
    for problem in problems:
        print(f"error: {problem.describe()}", file=sys.stderr)
