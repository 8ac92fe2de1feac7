"""One study key for the whole kit: scorer, dry-run, dataset conversion and statistics, reports.

The public dataset's converted layout is two levels deep (`<patient>/<study folder>/SUV.nii.gz`) and one
patient can have several studies, so a study is named `<patient>__<study folder>`; where a patient folder
holds the files directly, the patient's name alone. Every character other than ASCII letters, digits,
`-` and `_` becomes `_`: keys are safe as file names and as the dotted paths grand-challenge's
leaderboard reads (`case.<key>.dice`).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

SEPARATOR = "__"
_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")
_UNSAFE_IN_FOLDER = re.compile(r"[^A-Za-z0-9 _-]")
# TCIA names a study folder by its date first ("08-12-2001-NA-PET-CT Ganzkoerper-10445"): no name without its patient
_DATED_STUDY_FOLDER = re.compile(r"^\d{2}-\d{2}-\d{4}-")


def is_dated_study_folder(name: str) -> bool:
    """Whether `name` is a study folder as TCIA names them (a date first), which needs its patient to name it."""
    return bool(_DATED_STUDY_FOLDER.match(name))


def safe_key(name: str) -> str:
    """`name` with every character other than letters, digits, `-` and `_` replaced by `_`."""
    return _UNSAFE.sub("_", name)


def safe_folder_name(name: str) -> str:
    """`name` (DICOM text) as one folder name: as `safe_key`, but spaces kept, as TCIA's folder names have them.

    Character for character, so `safe_key(safe_folder_name(n)) == safe_key(n)`: no separator, no `..`, no
    leading dot (a hidden folder), and the study key read back from the folders is the key it was written under.
    """
    return _UNSAFE_IN_FOLDER.sub("_", name)


def study_key(patient: str, study: str | None = None) -> str:
    """The key of a study: `<patient>__<study>` made safe, or `<patient>` alone when there is no study level."""
    if study is None or study == "":
        return safe_key(patient)
    return f"{safe_key(patient)}{SEPARATOR}{safe_key(study)}"


@dataclass(frozen=True)
class StudyFolder:
    """A folder that may hold one study: `<root>/<name>` or the dataset's `<root>/<patient>/<study folder>`."""

    name: str  # the folder's own name one level down; study_key(patient, study folder) two levels down
    path: Path


def subfolders(folder: Path) -> list[Path]:
    """The visible subfolders of `folder`, sorted by name."""
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def study_folders(root: Path) -> list[StudyFolder]:
    """Every folder one level below `root`, each followed by the study folders one level below it."""
    found = []
    for patient in subfolders(root):
        found.append(StudyFolder(name=patient.name, path=patient))
        found += [StudyFolder(name=study_key(patient.name, study.name), path=study) for study in subfolders(patient)]
    return found
