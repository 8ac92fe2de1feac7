"""Which studies of a folder a predict-folder run does: one part of a split (--num-parts/--part-id) and, with
--continue, only those without a complete mask.

A mask is complete when it reads back whole as a {0, 1} image on its PET's grid. Masks are written under a
temporary name and renamed (petct.atomic), so a run killed mid-write leaves a `.tmp-*` file, never a
half-written mask under the final name; the read-back also catches a mask put there by other means (a copy
cut short, another tool) or for another study of the same name.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import SimpleITK as sitk

from algorithm.batch_inputs import BatchCase
from petct.errors import InputError
from petct.imageio import Geometry, grid_mismatches, read_image

log = logging.getLogger("algorithm")


def mask_path(case: BatchCase, *, output_dir: Path, suffix: str) -> Path:
    """Where predict-folder writes `case`'s mask."""
    return Path(output_dir) / f"{case.key}{suffix}"


def part_of(cases: list[BatchCase], *, num_parts: int, part_id: int) -> list[BatchCase]:
    """Part `part_id` of `num_parts`: every num_parts-th study by key, so the parts of one folder are disjoint,
    cover it, and do not depend on the order the folder was listed in."""
    if not 0 <= part_id < num_parts:
        raise ValueError(f"part_id must be in 0..{num_parts - 1}, got {part_id}")
    return sorted(cases, key=lambda c: c.key)[part_id::num_parts]


@dataclass
class Remaining:
    todo: list[BatchCase]
    done: list[Path]  # complete masks left as they are


def without_finished(cases: list[BatchCase], *, output_dir: Path, suffix: str) -> Remaining:
    """The cases whose mask is missing or incomplete (an incomplete one is logged and will be replaced)."""
    remaining = Remaining([], [])
    for case in cases:
        target = mask_path(case, output_dir=output_dir, suffix=suffix)
        if not target.exists():
            remaining.todo.append(case)
            continue
        problem = mask_problem(target, pet_path=case.pet)
        if problem is None:
            remaining.done.append(target)
        else:
            log.warning("study %s: %s is incomplete (%s): predicting it again", case.key, target, problem)
            remaining.todo.append(case)
    return remaining


def mask_problem(path: Path, *, pet_path: Path) -> str | None:
    """Why the mask at `path` is not a finished mask for the PET image at `pet_path`; None when it is one."""
    try:
        mask = read_image(path)
    except InputError as exc:
        return exc.describe()
    if mask.GetPixelID() != sitk.sitkUInt8:
        return f"pixel type {mask.GetPixelIDTypeAsString()}, not 8-bit unsigned"
    if sitk.GetArrayViewFromImage(mask).max(initial=0) > 1:
        return "values other than 0 and 1"
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(pet_path))
    try:
        reader.ReadImageInformation()
    except RuntimeError:
        return "its PET image does not read (the study is redone, so that its failure is reported)"
    mismatches = grid_mismatches(Geometry.of(reader), Geometry.of(mask))
    return f"not on its PET image's grid: {'; '.join(mismatches)}" if mismatches else None

