"""The studies of a folder for predict-folder: nnU-Net's raw layout or the kit's study layouts.

- nnU-Net raw: `<case>_0000.nii.gz`, `<case>_0001.nii.gz`, ... directly in the folder; channel K is the
  model's input channel K (which of PET and CT that is comes from the model: dataset.json, kit.json or
  --channel-order; for the baseline, 0000 is CT and 0001 is SUV as in autoPET's nnU-Net datasets).
- a study per folder: `<study>/SUV.*` and `<study>/CTres.*`, keyed `<study>`;
- the public dataset's two levels: `<patient>/<study folder>/SUV.*` and `CTres.*`, keyed
  `<patient>__<study folder>` (petct.studykey.study_key).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from petct.errors import InputError
from petct.layout import CTRES_NAME, IMAGE_SUFFIXES, SUV_NAME, image_stem, list_images
from petct.studykey import study_key, subfolders

_RAW_NAME = re.compile(r"^(?P<case>.+)_(?P<channel>\d{4})$")
BASELINE_ROLES = ("ct", "pet")  # autoPET's nnU-Net datasets: 0000 CT, 0001 PET (SUV)


@dataclass(frozen=True)
class BatchCase:
    key: str  # output file name without suffix
    pet: Path
    ct: Path


@dataclass
class FoundCases:
    cases: list[BatchCase]
    problems: list[str]  # one line each: the file and what is wrong with it


def find_cases(folder: Path, *, roles: tuple[str, ...]) -> FoundCases:
    """Every study in `folder`; `roles` says which image ("pet"/"ct") each raw-layout channel holds."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError("input folder does not exist", path=folder)
    found = FoundCases([], [])
    _raw_cases(folder, roles, found)
    for child in subfolders(folder):
        _study_cases(child, found)
    _refuse_duplicate_keys(found)
    if not found.cases and not found.problems:
        raise InputError(f"no studies found: expected <case>_0000{IMAGE_SUFFIXES[0]} ... (nnU-Net raw layout), "
                         f"<study>/{SUV_NAME}.* with {CTRES_NAME}.*, or <patient>/<study>/{SUV_NAME}.* with "
                         f"{CTRES_NAME}.*", path=folder)
    return found


def _raw_cases(folder: Path, roles: tuple[str, ...], found: FoundCases) -> None:
    channels: dict[str, dict[int, Path]] = {}
    for path in list_images(folder):
        match = _RAW_NAME.match(image_stem(path.name))
        if match:
            channels.setdefault(match.group("case"), {})[int(match.group("channel"))] = path
    if channels and not {"pet", "ct"} <= set(roles):
        found.problems.append(f"{folder}: nnU-Net raw layout files found, but the model's channels {list(roles)} "
                              "are not one PET and one CT")
        return
    for case, files in sorted(channels.items()):
        expected = set(range(len(roles)))
        if set(files) != expected:
            names = ", ".join(p.name for _, p in sorted(files.items()))
            found.problems.append(f"{folder / case}: has channel file(s) {names}; the model takes channels "
                                  f"{', '.join(f'{i:04d}' for i in sorted(expected))} ({', '.join(roles)})")
            continue
        found.cases.append(BatchCase(key=case, pet=files[roles.index("pet")], ct=files[roles.index("ct")]))


def _study_files(folder: Path) -> dict[str, list[Path]]:
    by_name: dict[str, list[Path]] = {}
    for path in list_images(folder):
        by_name.setdefault(image_stem(path.name), []).append(path)
    return by_name


def _study_cases(folder: Path, found: FoundCases) -> None:
    """`folder` as one study, else its subfolders as the patient's studies."""
    if _add_study(folder, study_key(folder.name), found):
        return
    for child in subfolders(folder):
        _add_study(child, study_key(folder.name, child.name), found)


def _add_study(folder: Path, key: str, found: FoundCases) -> bool:
    """Add the study in `folder` when it holds SUV or CTres; False when it holds neither."""
    files = _study_files(folder)
    suv, ctres = files.get(SUV_NAME, []), files.get(CTRES_NAME, [])
    if not suv and not ctres:
        return False
    if len(suv) == 1 and len(ctres) == 1:
        found.cases.append(BatchCase(key=key, pet=suv[0], ct=ctres[0]))
    else:
        found.problems.append(f"{folder}: expected one {SUV_NAME} and one {CTRES_NAME} image, found "
                              f"{len(suv)} and {len(ctres)}")
    return True


def _refuse_duplicate_keys(found: FoundCases) -> None:
    """Two studies whose keys collide would overwrite each other's mask: keep neither, name both."""
    by_key: dict[str, list[BatchCase]] = {}
    for case in found.cases:
        by_key.setdefault(case.key, []).append(case)
    for key, cases in by_key.items():
        if len(cases) > 1:
            found.problems.append(f"{', '.join(str(c.pet) for c in cases)}: these studies share the output "
                                  f"name {key!r}; rename one")
    found.cases = [c for c in found.cases if len(by_key[c.key]) == 1]
