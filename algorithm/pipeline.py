"""One study through an engine: find and check the inputs, put CT on the PET grid, predict, write the mask."""
from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from algorithm.engine_contract import Engine
from algorithm.logs import timed
from petct.clicks import Clicks, read_clicks
from petct.decoded import DecodedStudy
from petct.editions import CLICKS_JSON, Edition
from petct.errors import InputError
from petct.imageio import (
    Geometry,
    grid_mismatches,
    image_from_array,
    read_geometry,
    read_image,
    require_finite,
    write_image_atomic,
)
from petct.jsonio import dumps
from petct.layout import INPUTS_JSON, image_stem, list_images
from petct.resample import ResampledCT, resample_taken_ct
from petct.scribbles import read_scribbles

log = logging.getLogger(__name__)

PROBABILITY_SUFFIXES = (".mha", ".nii.gz", ".nii", ".nrrd")  # what --save-probabilities may write


@dataclass(frozen=True)
class StudyInputs:
    pet_path: Path
    ct_path: Path


@dataclass
class StudyArrays:
    """A study as read_study returns it: the PET grid, SUV and CT float32 (z, y, x) on it, and notes."""

    geometry: Geometry
    pet: np.ndarray | None
    ct: np.ndarray | None
    notes: dict[str, object] = field(default_factory=dict)


@dataclass
class SegmentationResult:
    """The mask on the PET grid, with what the engine said about how it got there."""

    mask: sitk.Image  # uint8 {0, 1}, PET size, spacing, origin and direction
    probabilities: sitk.Image | None = None  # float32 lesion probability on the PET grid
    timings: dict[str, float] = field(default_factory=dict)  # seconds per stage
    notes: dict[str, object] = field(default_factory=dict)


def find_study_inputs(input_dir: Path, *, edition: Edition) -> StudyInputs:
    """The one PET and one CT image of the edition's layout, or InputError saying what was found."""
    input_dir = Path(input_dir)
    if not input_dir.is_dir():
        raise InputError("input folder does not exist", path=input_dir)
    return StudyInputs(pet_path=_single_image(input_dir / edition.pet_relative_path, "PET"),
                       ct_path=_single_image(input_dir / edition.ct_relative_path, "CT"))


def _single_image(folder: Path, what: str) -> Path:
    if not folder.is_dir():
        raise InputError(f"{what} folder does not exist (expected exactly one image in it)", path=folder)
    images = list_images(folder)
    if len(images) == 1:
        return images[0]
    others = sorted(p.name for p in folder.iterdir() if p not in images)
    found = ", ".join(p.name for p in images) if images else "none"
    extra = f" (other entries: {', '.join(others)})" if others else ""
    raise InputError(f"expected exactly one {what} image, found {len(images)}: {found}{extra}", path=folder)


def read_study(*, pet_path: Path, ct_path: Path, decoded: DecodedStudy | None = None) -> StudyArrays:
    """The PET grid, the SUV and the CT as float32 (z, y, x) arrays on it, and notes on what was done.

    Host memory matters at 660x400x400 voxels: each image becomes one array (one copy, straight to float32) and
    its image is dropped, and a CT on another grid (often the largest image, on a finer grid) is resampled from its
    stored type straight to float32 on the PET grid, then freed, before the PET is decoded. `decoded` holds the
    images already in memory (the service's upload checks decode them, a CT on another grid already resampled
    onto the PET's, whose array is taken as it is): they are taken out of it, so that each is freed once used,
    and only the others are read from their paths.
    """
    decoded = DecodedStudy() if decoded is None else decoded
    pet_image = decoded.take_pet()
    geometry = read_geometry(pet_path) if pet_image is None else Geometry.of(pet_image)
    ct = _ct_on_grid(decoded.take_ct(), geometry, path=ct_path)
    notes: dict[str, object] = {}
    if isinstance(ct, ResampledCT):
        ct, notes["ct_resampled"] = ct.array, ct.note
    pet_image = read_image(pet_path) if pet_image is None else pet_image
    if Geometry.of(pet_image) != geometry:
        raise InputError("the PET image changed while the study was read", path=pet_path)
    pet = _float32_copy(pet_image)
    del pet_image
    require_finite(pet, path=pet_path, what="SUV image")
    return StudyArrays(geometry, pet, ct, notes)


def _ct_on_grid(taken: sitk.Image | ResampledCT | None, geometry: Geometry, *,
                path: Path) -> np.ndarray | ResampledCT:
    """The CT as a float32 (z, y, x) array on `geometry`: `taken` (read from `path` when None) as it is when on that
    grid, else resampled onto it (a ResampledCT, with its note); a CT the upload checks resampled, as they did."""
    if isinstance(taken, ResampledCT):
        if taken.grid != geometry:  # a caller's bug, not bad input: the checks resample onto the PET's header grid
            raise ValueError(f"the CT handed over was resampled onto another grid than the PET's: {path}")
        return taken
    held = {"ct": read_image(path) if taken is None else taken}
    del taken  # `held` keeps the only reference, for resample_taken_ct to free the CT before its copy is made
    mismatches = grid_mismatches(geometry, Geometry.of(held["ct"]))
    if mismatches:
        return resample_taken_ct(held, geometry, mismatches=mismatches, path=path)
    require_finite(sitk.GetArrayViewFromImage(held["ct"]), path=path, what="CT image")
    return _float32_copy(held.pop("ct"))


def _float32_copy(image: sitk.Image) -> np.ndarray:
    """The image's voxels as a new float32 (z, y, x) array, copied once from a view of its buffer (GetArrayFromImage
    and then astype would copy twice when the image is not float32)."""
    # The view does not keep `image` alive: the argument holds it until the copy is made.
    return np.array(sitk.GetArrayViewFromImage(image), dtype=np.float32)


def segment_study(*, pet_path: Path, ct_path: Path, engine: Engine, clicks_path: Path | None = None,
                  scribbles: bool = False, decoded: DecodedStudy | None = None) -> SegmentationResult:
    """Read and check one study (and its clicks, when given), run the engine, and return its mask on the PET grid.

    `scribbles`: the clicks file holds the 2026 profile's scribbles (any number of points, petct.scribbles).
    `decoded`: the PET and CT already in memory, handed over (read_study).
    """
    timings: dict[str, float] = {}
    with timed(timings, "read inputs", log):
        study = read_study(pet_path=Path(pet_path), ct_path=Path(ct_path), decoded=decoded)
        read = read_scribbles if scribbles else read_clicks
        clicks = None if clicks_path is None else read(clicks_path, size_xyz=tuple(study.geometry.size))
    log.info("study: PET %s, %s voxels at %s mm", Path(pet_path).name, list(study.geometry.size),
             [round(s, 4) for s in study.geometry.spacing])
    return segment_arrays(study, engine=engine, timings=timings, clicks=clicks)


def segment_arrays(study: StudyArrays, *, engine: Engine, timings: dict[str, float] | None = None,
                   clicks: Clicks | None = None) -> SegmentationResult:
    """Run the engine on a study from read_study (with its clicks, when given) and check its mask; the study's
    arrays are handed over."""
    geometry, pet, ct, notes = study.geometry, study.pet, study.ct, study.notes
    # Dropped from `study` too, so that the caller's reference does not keep them through post-processing.
    study.pet = study.ct = None
    timings = {} if timings is None else timings
    # Only the interactive profile passes clicks, so engines that predate them run the other profiles unchanged.
    extra: dict[str, Clicks] = {}
    if clicks is not None:
        log.info("clicks: %d tumour, %d background (step %d)", len(clicks.tumor), len(clicks.background), clicks.step)
        extra["clicks"] = clicks
    with timed(timings, "predict", log):
        prediction = engine.predict(pet=pet, ct=ct, spacing_zyx=geometry.spacing[::-1], **extra)
    del pet, ct
    for stage, seconds in prediction.timings.items():
        timings[f"predict/{stage}"] = seconds
    notes = {**notes, **prediction.notes}
    if notes:
        log.info("engine notes: %s", dumps(notes, indent=None))
    mask = _checked_mask(prediction.mask, geometry, engine.name)
    probabilities = None
    if prediction.probabilities is not None:
        probabilities = image_from_array(np.asarray(prediction.probabilities, dtype=np.float32), geometry)
    return SegmentationResult(mask=image_from_array(mask, geometry), probabilities=probabilities,
                              timings=timings, notes=notes)


def _checked_mask(mask: np.ndarray, geometry: Geometry, engine_name: str) -> np.ndarray:
    """The engine's mask as uint8 {0, 1}; an engine breaking its contract is a bug, not bad input."""
    mask = np.asarray(mask)
    expected = tuple(geometry.size[::-1])
    if mask.shape != expected:
        raise RuntimeError(f"engine {engine_name} returned a mask of shape {mask.shape}, expected {expected}")
    # For unsigned masks the maximum says it all, without np.unique's sort of the whole volume.
    if mask.dtype.kind in "bu":
        valid = mask.size == 0 or mask.max() <= 1
    else:
        valid = np.isin(np.unique(mask), (0, 1)).all()
    if not valid:
        raise RuntimeError(f"engine {engine_name} returned mask values {np.unique(mask)[:10].tolist()}, "
                           "expected only 0 and 1")
    return mask.astype(np.uint8, copy=False)


def check_probabilities_path(path: Path | None, *, output_dir: Path, input_dir: Path | None = None) -> None:
    """Refuse, before any work, a probability map path that could not or must not be written.

    Inside the output folder it breaks "exactly one output"; inside the input folder it writes where the
    platform mounts read-only; a suffix SimpleITK cannot write, or a folder, would fail only after inference.
    """
    if path is None:
        return
    path = Path(path)
    resolved = path.resolve()
    if resolved.is_relative_to(Path(output_dir).resolve()):
        raise InputError(f"--save-probabilities must be outside the output folder {output_dir} "
                         "(the platform accepts exactly one output image)", path=path)
    if input_dir is not None and resolved.is_relative_to(Path(input_dir).resolve()):
        raise InputError(f"--save-probabilities must be outside the input folder {input_dir}", path=path)
    if not path.name.lower().endswith(PROBABILITY_SUFFIXES):
        raise InputError(f"--save-probabilities needs an image file name ending in {', '.join(PROBABILITY_SUFFIXES)}",
                         path=path)
    if path.is_dir():
        raise InputError("--save-probabilities names a folder; give a file name like probabilities.mha", path=path)
    existing = next(p for p in resolved.parents if p.exists())
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        raise InputError(f"--save-probabilities cannot be written: {existing} is not a writable folder", path=path)


def mask_path_for(*, output_dir: Path, pet_path: Path, edition: Edition) -> Path:
    """<output>/<the edition's output path>/<PET input's name>.mha"""
    return Path(output_dir) / edition.output_relative_path / f"{image_stem(Path(pet_path).name)}.mha"


def run_container(*, input_dir: Path, output_dir: Path, engine: Engine,
                  edition: Edition, probabilities_path: Path | None = None) -> Path:
    """The algorithm job: one study from `input_dir` to one mask under `output_dir`; returns the mask's path."""
    check_probabilities_path(probabilities_path, output_dir=output_dir, input_dir=input_dir)
    inputs = find_study_inputs(Path(input_dir), edition=edition)
    _log_uploaded_names(Path(input_dir))
    clicks_path = Path(input_dir) / CLICKS_JSON if edition.clicks or edition.scribbles else None
    result = segment_study(pet_path=inputs.pet_path, ct_path=inputs.ct_path, engine=engine, clicks_path=clicks_path,
                           scribbles=edition.scribbles)
    target = mask_path_for(output_dir=output_dir, pet_path=inputs.pet_path, edition=edition)
    _warn_about_other_outputs(target)
    with timed(result.timings, "write mask", log):
        write_image_atomic(result.mask, target, compress=True)
    log.info("wrote %s (%d lesion voxels)", target,
             int(np.count_nonzero(sitk.GetArrayViewFromImage(result.mask))))
    if probabilities_path is not None:
        if result.probabilities is None:
            log.warning("engine %s gives no probabilities: nothing written to %s", engine.name, probabilities_path)
        else:
            write_image_atomic(result.probabilities, probabilities_path, compress=True)
            log.info("wrote probabilities to %s", probabilities_path)
    log.info("timings (s): %s", dumps({k: round(v, 3) for k, v in result.timings.items()}, indent=None))
    return target


def _log_uploaded_names(input_dir: Path) -> None:
    """Log the names the uploader gave (inputs.json), which identify the study; it is optional here."""
    path = input_dir / INPUTS_JSON
    if not path.is_file():
        return
    try:
        items = json.loads(path.read_text())
        names = {item["interface"]["relative_path"]: item["image"]["name"] for item in items
                 if isinstance(item, dict) and isinstance(item.get("image"), dict)}
    except (OSError, ValueError, KeyError, TypeError) as exc:
        log.warning("%s not understood (%s); continuing without it", path, exc)
        return
    log.info("uploaded as: %s", dumps(names, indent=None))


def _warn_about_other_outputs(target: Path) -> None:
    others = [p.name for p in list_images(target.parent) if p != target]
    if others:
        log.warning("the output folder already holds %s: the platform expects exactly one image there",
                    ", ".join(others))
