"""An uploaded study's checks: readable images, the label on the PET's grid, the CT resampled as the CLI does."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import SimpleITK as sitk

from app.service.errors import ApiError
from app.service.settings import UploadLimits
from app.service.upload_checks import checked_headers, read_uploads, refusing
from app.service.uploads import ALLOWED_SUFFIXES, StoredFile
from petct.clicks import NESTED_TOO_DEEPLY, parse_clicks
from petct.decoded import DecodedStudy
from petct.editions import CLICKS_JSON
from petct.errors import InputError
from petct.imageio import Geometry, grid_mismatches, read_image
from petct.jsonio import write_json_atomic
from petct.resample import NO_OVERLAP, ResampledCT, ct_overlaps, resample_taken_ct
from petct.scribbles import MAX_SCRIBBLE_POINTS, parse_scribbles


@dataclass
class UploadedStudy:
    """A study's uploads as the checks read them, each image decoded once: the PET and CT for the inference (a CT
    on another grid already resampled onto the PET's, float32 with air outside), the label, and each upload's grid."""

    decoded: DecodedStudy
    label: sitk.Image | None
    grids: dict[str, Geometry]

    @property
    def notes(self) -> dict[str, object]:
        """What the checks did to the images, as the job's notes say it."""
        return self.decoded.notes


def check_study(files: dict[str, StoredFile], *, limits: UploadLimits, resample: bool = True) -> UploadedStudy:
    """Each file a readable image within the limits (the request's total too); the label on the PET's grid;
    a CT on another grid overlapping the PET, resampled onto it as the command line does. Returns what was read.

    Each upload is decoded once. A CT on another grid (often the largest image, on a finer grid) is decoded
    first, resampled and freed before any other image is decoded, so that the resampling's peak holds the CT and
    its resampled copy only; the PET and this CT (as the resampling's array, which the engine gets as it is) are
    handed to the inference (algorithm.pipeline.read_study reads nothing again), and the label to the scoring
    process, which reads nothing from the disk either.
    `resample=False` (a job whose images will not be kept: the job reads and resamples its files itself) checks
    a CT on another grid by its header's overlap alone and decodes it as it is.
    """
    headers = checked_headers(files, limits=limits)
    grids = {name: header.geometry for name, header in headers.items()}
    if "label" in grids:
        mismatches = grid_mismatches(grids["pet"], grids["label"])
        if mismatches:
            raise ApiError(422, f"not on the PET's grid: {'; '.join(mismatches)}", field="label",
                           file=files["label"].client_name)
    resampled: ResampledCT | None = None
    mismatches = grid_mismatches(grids["pet"], grids["ct"])
    if mismatches:
        if not ct_overlaps(grids["ct"], grids["pet"]):
            raise ApiError(422, NO_OVERLAP, field="ct", file=files["ct"].client_name)
        if resample:
            resampled = _ct_on_grid(files["ct"], grid=grids["pet"], mismatches=mismatches)
    to_read = {name: stored for name, stored in files.items() if not (name == "ct" and resampled is not None)}
    images = read_uploads(to_read, headers=headers)
    for name, image in images.items():
        if Geometry.of(image) != grids[name]:
            raise ApiError(422, "the image's voxels came with another grid than its header's", field=name,
                           file=files[name].client_name)
    decoded = DecodedStudy(pet=images["pet"], ct=images["ct"] if resampled is None else resampled)
    return UploadedStudy(decoded=decoded, label=images.get("label"), grids=grids)


def _ct_on_grid(stored: StoredFile, *, grid: Geometry, mismatches: list[str]) -> ResampledCT:
    """The CT decoded, checked finite and resampled onto `grid` (float32, air outside), with its note; the decoded
    CT is freed before the resampled image is copied."""
    with refusing(stored):
        return resample_taken_ct({"ct": read_image(stored.path)}, grid, mismatches=mismatches, path=stored.path)


# The 2025 interactive track's lesion clicks (petct.clicks): at most 10 + 10 points, so a query parameter suffices.
CLICKS_MAX_CHARS = 8000
CLICKS_HELP = ('optional lesion clicks (the 2025 interactive track) as JSON, {"tumor": [[x, y, z], ...], '
               '"background": [...]} or grand-challenge\'s "Multiple points" form; voxel indices of the PET in '
               "(x, y, z) order, at most 10 of each kind")


def store_clicks(text: str, *, folder: Path, size_xyz: tuple[int, int, int]) -> str:
    """Check the clicks against the PET's size and keep them in the job's folder; a 422 naming `clicks` otherwise."""
    try:
        clicks = parse_clicks(json.loads(text), source="clicks", size_xyz=size_xyz)
    except ValueError as exc:
        raise ApiError(422, f"not valid JSON: {exc}", field="clicks") from None
    except RecursionError:
        raise ApiError(422, NESTED_TOO_DEEPLY, field="clicks") from None
    except InputError as exc:
        raise ApiError(422, exc.problem, field="clicks") from None
    write_json_atomic(clicks.to_plain(), folder / CLICKS_JSON)
    return CLICKS_JSON


# The 2026 profile's scribbles (petct.scribbles): a scribble is a line of voxels and they accumulate over the
# loop's steps, so they come as a multipart JSON field, up to MAX_SCRIBBLE_POINTS of each kind as the algorithm
# reads them; the bytes allow grand-challenge's form (about 50 bytes a point) with room for indentation.
SCRIBBLES_FIELD = "scribbles"
SCRIBBLES_MAX_BYTES = 2 * MAX_SCRIBBLE_POINTS * 80
SCRIBBLES_HELP = ('scribbles (autopet-2026-interactive) as a JSON part, {"tumor": [[x, y, z], ...], "background": '
                  '[...]} or grand-challenge\'s "Multiple points" form: voxel indices of the PET in (x, y, z) order, '
                  f"at most {MAX_SCRIBBLE_POINTS} of each kind and {SCRIBBLES_MAX_BYTES} bytes")


def store_scribbles(upload: StoredFile, *, folder: Path, size_xyz: tuple[int, int, int]) -> str:
    """Check the uploaded scribbles against the PET's size and keep them in the job's folder in the plain form
    (the upload removed); a 422 naming the field otherwise."""
    fail = {"field": SCRIBBLES_FIELD, "file": upload.client_name}
    try:
        scribbles = parse_scribbles(json.loads(upload.path.read_bytes()), source=SCRIBBLES_FIELD, size_xyz=size_xyz)
    except ValueError as exc:  # not UTF-8 or not JSON
        raise ApiError(422, f"not valid JSON: {exc}", **fail) from None
    except RecursionError:
        raise ApiError(422, NESTED_TOO_DEEPLY, **fail) from None
    except InputError as exc:
        raise ApiError(422, exc.problem, **fail) from None
    write_json_atomic(scribbles.to_plain(), folder / CLICKS_JSON)
    upload.path.unlink()
    return CLICKS_JSON


def study_name(client_name: str | None, *, default: str) -> str:
    """The study's name in its metrics: the uploaded PET's file name without its image suffix."""
    if not client_name:
        return default
    base = client_name.replace("\\", "/").rsplit("/", 1)[-1]
    for suffix in ALLOWED_SUFFIXES:
        if base.lower().endswith(suffix):
            base = base[: -len(suffix)]
            break
    cleaned = "".join(ch for ch in base if ch.isprintable())[:200]
    return cleaned or default
