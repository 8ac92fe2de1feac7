"""Submitted masks kept after scoring (serve --keep-submissions), so that the organiser can look at them.

A kept submission is a folder `<submissions dir>/<submission id>/` holding the masks under server-made names
(`0.mha`, `1.nii.gz`, ...) and `cases.json` mapping each case to its file; it is written under a temporary
name and renamed, so it is there whole or not at all.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

from app.service.uploads import StoredFile
from petct.jsonio import read_json, write_json_atomic

CASES_JSON = "cases.json"


def keep_masks(files: dict[str, StoredFile], *, folder: Path) -> Path:
    """Move the submission's masks (case -> stored upload) into `folder`, whole or not at all."""
    partial = folder.with_name(f".{folder.name}.partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    try:
        names = {}
        for index, (case, stored) in enumerate(sorted(files.items())):
            name = f"{index}{_suffix(stored.path)}"
            shutil.move(stored.path, partial / name)
            names[case] = name
        write_json_atomic(names, partial / CASES_JSON)
        partial.rename(folder)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    return folder


def kept_mask(folder: Path, case: str) -> Path | None:
    """The kept mask of `case` in a kept submission's folder (None: not kept, or no such case)."""
    if not (folder / CASES_JSON).is_file():
        return None
    name = read_json(folder / CASES_JSON, what=CASES_JSON).get(case)
    return folder / name if isinstance(name, str) and "/" not in name and (folder / name).is_file() else None


def kept_cases(folder: Path) -> set[str]:
    if not (folder / CASES_JSON).is_file():
        return set()
    return set(json.loads((folder / CASES_JSON).read_text(encoding="utf-8")))


def _suffix(path: Path) -> str:
    name = path.name.lower()
    return ".nii.gz" if name.endswith(".nii.gz") else path.suffix.lower()
