"""An algorithm's lesion mask as a DICOM-SEG referencing the PET series, for any DICOM viewer."""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pydicom

from dataset.segexport import write_seg
from dataset.series import check_and_sort
from dataset.uids import uid
from petct.errors import InputError
from petct.imageio import grid_mismatches, read_array


def mask_to_seg(mask_path: str | Path, pet_dir: str | Path, output: str | Path) -> Path:
    """Write `mask_path` (on the PET grid) as a BINARY DICOM-SEG over the PET slices in `pet_dir`."""
    mask, geometry = read_array(mask_path)
    pet_dir = Path(pet_dir)
    slices = []
    for path in sorted(p for p in pet_dir.rglob("*") if p.is_file()):
        try:
            ds = pydicom.dcmread(path)
        except Exception:  # noqa: BLE001 - other files in the folder are skipped
            continue
        if str(ds.get("Modality", "")).upper() == "PT":
            slices.append(ds)
    if not slices:
        raise InputError("no PET (Modality PT) DICOM files", path=pet_dir)
    try:
        ordered, pet_grid = check_and_sort(slices)
    except InputError as exc:
        raise InputError(f"PET series: {exc.problem}", path=pet_dir) from None
    problems = grid_mismatches(pet_grid, geometry)
    if problems:
        raise InputError(f"mask is not on the PET grid: {'; '.join(problems)}", path=mask_path)
    values = set(np.unique(mask).tolist())
    if not values <= {0, 1}:
        raise InputError(f"mask must hold only 0 and 1, found {sorted(values)[:5]}", path=mask_path)
    series_uid = uid("to-seg", ordered[0].SeriesInstanceUID, Path(mask_path).name)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # highdicom's notes on optional attributes of the source images
        return write_seg(mask.astype(np.uint8), ordered, Path(output), series_uid=series_uid, segments=1,
                         algorithm=True)
