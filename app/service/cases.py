"""Organiser mode: the ground-truth cases a participant may score a prediction against, by name."""
from __future__ import annotations

import logging
from pathlib import Path

from evaluation.studies import index_masks

log = logging.getLogger("app.cases")


def index_cases(folder: Path) -> dict[str, Path]:
    """Case name -> ground-truth file, with evaluation's matching rules; ambiguous cases are left out."""
    index = index_masks(folder, what="ground truth")
    for study, paths in index.duplicates.items():
        log.warning("case %s left out: %d ground-truth files (%s)", study, len(paths), ", ".join(map(str, paths)))
    return dict(sorted(index.files.items()))
