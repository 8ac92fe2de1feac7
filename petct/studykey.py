"""One study key for the whole kit: scorer, dry-run, dataset conversion and statistics, reports.

The public dataset's converted layout is two levels deep (`<patient>/<study folder>/SUV.nii.gz`) and one
patient can have several studies, so a study is named `<patient>__<study folder>`; where a patient folder
holds the files directly, the patient's name alone. Every character other than ASCII letters, digits,
`-` and `_` becomes `_`: keys are safe as file names and as the dotted paths grand-challenge's
leaderboard reads (`case.<key>.dice`).
"""
from __future__ import annotations

import re

SEPARATOR = "__"
_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")


def safe_key(name: str) -> str:
    """`name` with every character other than letters, digits, `-` and `_` replaced by `_`."""
    return _UNSAFE.sub("_", name)


def study_key(patient: str, study: str | None = None) -> str:
    """The key of a study: `<patient>__<study>` made safe, or `<patient>` alone when there is no study level."""
    if study is None or study == "":
        return safe_key(patient)
    return f"{safe_key(patient)}{SEPARATOR}{safe_key(study)}"
