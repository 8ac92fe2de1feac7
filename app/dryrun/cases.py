"""The studies a dry run feeds the algorithm: built-in phantoms, or a folder of cases."""
from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from petct.errors import InputError
from petct.imageio import Geometry, grid_mismatches, read_image
from petct.layout import CTRES_NAME, SEG_NAME, SUV_NAME, find_image
from petct.nnunet_raw import raw_cases
from petct.phantom import make_study
from petct.studykey import is_dated_study_folder, study_folders, study_key

# (seed, lesions): two positive studies and a negative one, so an empty ground truth is exercised.
PHANTOMS = ((11, 3), (12, 0), (13, 2))


@dataclass(frozen=True)
class DryRunCase:
    """One study: SUV, CT on the PET grid, and the ground-truth mask."""

    name: str
    suv: Path
    ctres: Path
    seg: Path
    lesions: int | None = None  # known for phantoms


def _phantoms(count: int) -> list[tuple[str, int, int]]:
    """(name, seed, lesions) of the first `count` phantoms: PHANTOMS, repeated with new seeds beyond."""
    seeds = [(PHANTOMS[i % len(PHANTOMS)][0] + 100 * (i // len(PHANTOMS)), PHANTOMS[i % len(PHANTOMS)][1])
             for i in range(count)]
    return [(f"PHANTOM_{seed:04d}", seed, lesions) for seed, lesions in seeds]


def phantom_names(count: int) -> list[str]:
    """The names phantom_cases gives, without writing them."""
    return [name for name, _, _ in _phantoms(count)]


def phantom_cases(folder: Path, *, count: int = len(PHANTOMS), size: str = "small") -> list[DryRunCase]:
    """Write `count` phantom studies (the first `count` of PHANTOMS, repeated with new seeds beyond)."""
    cases = []
    for name, seed, lesions in _phantoms(count):
        study = make_study(seed, size=size, n_lesions=lesions, name=name)
        out = study.write(folder)
        cases.append(DryRunCase(name=study.name, suv=out / f"{SUV_NAME}.mha", ctres=out / f"{CTRES_NAME}.mha",
                                seg=out / f"{SEG_NAME}.mha", lesions=len(study.lesions)))
    return cases


def folder_cases(folder: Path) -> list[DryRunCase]:
    """Every study of `folder` holding SUV, CTres and SEG images (any image suffix).

    A study is `<case>/` (named as the folder, as the scorer names it) or, in the public dataset's converted
    layout, `<patient>/<study folder>/` (named petct.studykey.study_key(patient, study folder), i.e.
    `<patient>__<study folder>` made safe; one patient may have several), also where `folder` is one patient's
    folder and its study folders are dated as TCIA dates them. Names must differ as keys.
    """
    if not folder.is_dir():
        raise InputError("cases folder does not exist or is not a folder", path=folder)
    raw = nnunet_raw_cases(folder)
    if raw is not None:
        return raw
    cases, incomplete, seen = [], [], {}
    for entry in study_folders(folder):
        name, sub = entry.name, entry.path
        if sub.parent == folder and is_dated_study_folder(name):  # `--cases <patient>`: the patient names it too
            name = study_key(folder.resolve().name, name)
        found = {stem: _image(sub, stem) for stem in (SUV_NAME, CTRES_NAME, SEG_NAME)}
        if all(found.values()):
            key = study_key(name)
            if key in seen:
                raise InputError(f"folders {seen[key]} and {sub.relative_to(folder)} have the same study key "
                                 f"{key}; rename one", path=folder)
            seen[key] = sub.relative_to(folder)
            cases.append(DryRunCase(name=name, suv=found[SUV_NAME], ctres=found[CTRES_NAME],
                                    seg=found[SEG_NAME]))
        elif any(found.values()):
            incomplete.append(f"{sub.relative_to(folder)} (missing {', '.join(k for k, v in found.items() if not v)})")
    if incomplete:
        raise InputError(f"incomplete case folder(s): {'; '.join(incomplete)}", path=folder)
    if not cases:
        raise InputError(f"no case folders with {SUV_NAME}, {CTRES_NAME} and {SEG_NAME} images "
                         "(<case>/ or <patient>/<study folder>/)", path=folder)
    return cases


def with_lesion_counts(cases: list[DryRunCase]) -> list[DryRunCase]:
    """The cases with their ground truth's lesion count (the metrics' components) where it is not known yet."""
    from evaluation.metrics import Labelled
    from petct.imageio import read_array

    return [case if case.lesions is not None else
            replace(case, lesions=Labelled.of((read_array(case.seg)[0] != 0).astype("uint8")).count)
            for case in cases]


def nnunet_raw_cases(folder: Path) -> list[DryRunCase] | None:
    """The cases of nnU-Net's raw layout in `folder` (petct.nnunet_raw); None when `folder` is not in it."""
    cases = raw_cases(folder)
    return None if cases is None else [DryRunCase(name=c.name, suv=c.pet, ctres=c.ct, seg=c.label) for c in cases]


def _image(folder: Path, stem: str) -> Path | None:
    hits = find_image(folder, stem)
    if len(hits) > 1:
        raise InputError(f"more than one {stem} image: {', '.join(p.name for p in hits)}", path=folder)
    return hits[0] if hits else None


def pet_grids(cases: list[DryRunCase]) -> dict[str, Geometry]:
    """Each case's PET grid, once all three of its images read and its mask lies on that grid.

    Checked before any job runs, so a broken case is a usage error, not a job the algorithm is blamed for.
    """
    grids = {}
    for case in cases:
        pet = Geometry.of(read_image(case.suv))
        read_image(case.ctres)
        mismatches = grid_mismatches(pet, Geometry.of(read_image(case.seg)))
        if mismatches:
            raise InputError(f"the mask is not on the grid of {case.suv.name}: {'; '.join(mismatches)}",
                             path=case.seg, study=case.name)
        grids[case.name] = pet
    return grids
