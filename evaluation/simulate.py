"""`python -m evaluation simulate-clicks GT_DIR OUT_DIR`: lesion-clicks files from ground truth (petct.click_simulation)."""
from __future__ import annotations

import sys
from pathlib import Path

import SimpleITK as sitk

from evaluation.studies import MaskNaming, index_masks
from petct.click_simulation import simulate_clicks
from petct.errors import InputError
from petct.imageio import Geometry, grid_mismatches, read_image
from petct.jsonio import write_json_atomic
from petct.layout import SUV_NAME, image_stem, list_images
from petct.studykey import study_key


def simulate_folder(*, ground_truth: Path, output: Path, pet: Path | None, seed: int) -> int:
    """Write <output>/<study>_clicks.json per ground-truth study; one line per study that could not be done."""
    try:
        masks = index_masks(ground_truth, what="ground truth")
        pets = _pet_index(pet) if pet is not None else {}
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    failures = 0
    for study in masks.studies():
        try:
            if study in masks.duplicates:
                raise InputError(f"{len(masks.duplicates[study])} ground-truth files for this study", study=study)
            mask_path = masks.files[study]
            pet_path = pets.get(study) if pet is not None else _suv_beside(mask_path)
            if pet_path is None:
                raise InputError(f"no SUV image for this study in {pet}" if pet is not None else
                                 "no SUV image next to the mask; give --pet PET_DIR", path=mask_path, study=study)
            clicks = _simulate(mask_path, pet_path, study=study, seed=seed)
            target = write_json_atomic(clicks.to_grand_challenge(), Path(output) / f"{study_key(study)}_clicks.json")
            print(f"{study}: {len(clicks.tumor)} tumour, {len(clicks.background)} background clicks -> {target}")
        except InputError as exc:
            failures += 1
            print(f"error: {exc}", file=sys.stderr)
    return 1 if failures else 0


def _simulate(mask_path: Path, pet_path: Path, *, study: str, seed: int):
    mask, suv = read_image(mask_path), read_image(pet_path)
    mismatches = grid_mismatches(Geometry.of(mask), Geometry.of(suv))
    if mismatches:
        raise InputError(f"SUV image is not on the mask's grid: {'; '.join(mismatches)}", path=pet_path, study=study)
    return simulate_clicks(mask_zyx=sitk.GetArrayViewFromImage(mask), pet_zyx=sitk.GetArrayViewFromImage(suv), seed=seed)


def _suv_beside(mask_path: Path) -> Path | None:
    """The dataset's study folder holds SUV.* beside SEG.*; a flat `<study>_SEG.*` may have `<study>_SUV.*` beside it."""
    stem = image_stem(mask_path.name)
    wanted = {SUV_NAME.lower()} if stem.upper() == "SEG" else {f"{stem[:-4] if stem.upper().endswith('_SEG') else stem}_suv".lower()}
    hits = [p for p in list_images(mask_path.parent) if image_stem(p.name).lower() in wanted]
    return hits[0] if len(hits) == 1 else None


def _pet_index(folder: Path) -> dict[str, Path]:
    """SUV images by study: <study>/SUV.*, <patient>/<study>/SUV.* or <study>_SUV.*."""
    index = {}
    for naming in (MaskNaming(suffix="/SUV"), MaskNaming(suffix="_SUV")):
        try:
            index.update(index_masks(folder, what="PET", naming=naming).files)
        except InputError:
            continue
    if not index:
        raise InputError("PET folder holds no SUV images (<study>/SUV.* or <study>_SUV.*)", path=folder)
    return index
