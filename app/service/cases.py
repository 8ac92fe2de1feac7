"""Organiser mode: the ground-truth cases a participant may score a prediction against, by name, and the test
set's images (--images) the organiser looks at submissions on."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from evaluation.studies import index_masks
from petct.layout import CTRES_NAME, SUV_NAME, find_image
from petct.studykey import study_folders, study_key

log = logging.getLogger("app.cases")


def index_cases(folder: Path) -> dict[str, Path]:
    """Case name -> ground-truth file, with evaluation's matching rules; ambiguous cases are left out."""
    index = index_masks(folder, what="ground truth")
    for study, paths in index.duplicates.items():
        log.warning("case %s left out: %d ground-truth files (%s)", study, len(paths), ", ".join(map(str, paths)))
    return dict(sorted(index.files.items()))


@dataclass(frozen=True)
class CaseImages:
    """A test case's PET (in SUV) and CT on its grid: what a participant's algorithm was given."""

    pet: Path
    ct: Path


def index_images(folder: Path) -> dict[str, CaseImages]:
    """Case name -> its SUV and CTres images in `folder` (<case>/ or <patient>/<study folder>/, named as the
    study key names them); folders without exactly one of each are left out, with a warning."""
    found = {}
    for entry in study_folders(folder):
        images = {stem: find_image(entry.path, stem) for stem in (SUV_NAME, CTRES_NAME)}
        if all(len(paths) == 1 for paths in images.values()):
            found[study_key(entry.name)] = CaseImages(pet=images[SUV_NAME][0], ct=images[CTRES_NAME][0])
        elif any(images.values()):
            log.warning("images of %s left out: not one %s and one %s image", entry.path, SUV_NAME, CTRES_NAME)
    return dict(sorted(found.items()))
