"""Where a converted study's images go (layout) and how they are stored (format).

Layouts, per study with key <key> (petct.studykey):
- tcia: `<patient>/<study>/{CT,PET,SEG,SUV,CTres}.<ext>` (the organisers' converted dataset), both names made
  safe from their DICOM text (petct.studykey.safe_folder_name);
- nnunet: `imagesTr/<key>_0000.<ext>` (CTres), `imagesTr/<key>_0001.<ext>` (SUV), `labelsTr/<key>.<ext>`,
  plus `dataset.json`;
- grand-challenge: `<key>/images/pet/<key>.mha` (SUV), `<key>/images/ct/<key>.mha` (CTres): an algorithm
  container's input, and `ground_truth/<key>.mha` (SEG), which the scoring container pairs by the PET's name.
Format hdf5 (tcia layout only) puts every study in one `dataset.h5`: one group per study key, one dataset per
image, the geometry as attributes.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from petct.editions import CT_RELATIVE_PATH, PET_RELATIVE_PATH
from petct.imageio import Geometry
from petct.jsonio import write_json_atomic
from petct.layout import CT_NAME, CTRES_NAME, SEG_NAME, SUV_NAME

LAYOUTS = ("tcia", "nnunet", "grand-challenge")
FORMATS = ("nifti", "mha", "hdf5")
EXTENSIONS = {"nifti": ".nii.gz", "mha": ".mha"}
PET_NAME = "PET"
HDF5_NAME = "dataset.h5"
HDF5_STAGING = ".studies-h5"  # one file per study, merged into dataset.h5 at the end of a run
NNUNET_CHANNELS = {"0": "CT", "1": "PET"}  # CTres then SUV, as autoPET's nnU-Net datasets since 2024


@dataclass(frozen=True)
class Images:
    """A converted study's arrays (z, y, x) and grids: CT on its own grid, the rest on the PET's."""

    ct: np.ndarray
    ct_geometry: Geometry
    pet: np.ndarray
    suv: np.ndarray
    ctres: np.ndarray
    seg: np.ndarray
    pet_geometry: Geometry

    def named(self) -> dict[str, tuple[np.ndarray, Geometry]]:
        g = self.pet_geometry
        return {CT_NAME: (self.ct, self.ct_geometry), PET_NAME: (self.pet, g), SEG_NAME: (self.seg, g),
                SUV_NAME: (self.suv, g), CTRES_NAME: (self.ctres, g)}


def check_choice(*, layout: str, fmt: str, keep_segments: bool = False) -> None:
    """ValueError for a layout, format and SEG-kind combination that does not go together."""
    if keep_segments and layout != "tcia":
        raise ValueError("--keep-segments goes with --layout tcia (nnU-Net and grand-challenge take one lesion mask)")
    if layout not in LAYOUTS or fmt not in FORMATS:
        raise ValueError(f"unknown layout {layout!r} or format {fmt!r}")
    if fmt == "hdf5" and layout != "tcia":
        raise ValueError("--format hdf5 goes with --layout tcia (nnU-Net and grand-challenge read image files)")
    if layout == "grand-challenge" and fmt != "mha":
        raise ValueError("--layout grand-challenge writes .mha, as the platform does: use --format mha")


def planned(*, key: str, folder: str, layout: str, fmt: str) -> dict[str, str]:
    """Image name -> path relative to OUT, for one study (`folder`: its `<patient>/<study>`, made safe)."""
    if fmt == "hdf5":
        return {"h5": f"{HDF5_STAGING}/{key}.h5"}
    ext = EXTENSIONS[fmt]
    if layout == "tcia":
        return {name: f"{folder}/{name}{ext}" for name in (CT_NAME, PET_NAME, SEG_NAME, SUV_NAME, CTRES_NAME)}
    if layout == "nnunet":
        return {CTRES_NAME: f"imagesTr/{key}_0000{ext}", SUV_NAME: f"imagesTr/{key}_0001{ext}",
                SEG_NAME: f"labelsTr/{key}{ext}"}
    return {SUV_NAME: f"{key}/{PET_RELATIVE_PATH}/{key}{ext}", CTRES_NAME: f"{key}/{CT_RELATIVE_PATH}/{key}{ext}",
            SEG_NAME: f"ground_truth/{key}{ext}"}


def write_h5(images: Images, path: Path, *, key: str, attributes: dict) -> None:
    import h5py  # only the hdf5 format needs it

    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as h5:
        group = h5.create_group(key)
        for name, value in attributes.items():
            group.attrs[name] = value
        for name, (array, geometry) in images.named().items():
            data = group.create_dataset(name, data=array, compression="gzip", compression_opts=1, chunks=True)
            data.attrs["spacing_xyz"] = geometry.spacing
            data.attrs["origin_xyz"] = geometry.origin
            data.attrs["direction"] = geometry.direction
            data.attrs["axes"] = "zyx"


def merge_h5(out: Path, keys: list[str], target: Path) -> None:
    """Copy each study's group from its staging file into one HDF5 file at `target` (the caller renames)."""
    import h5py

    with h5py.File(target, "w") as merged:
        for key in keys:
            with h5py.File(out / HDF5_STAGING / f"{key}.h5", "r") as part:
                part.copy(part[key], merged, name=key)


def nnunet_dataset_json(out: Path, *, count: int, fmt: str) -> Path:
    """nnU-Net v2's dataset.json for the converted training set."""
    return write_json_atomic({"channel_names": NNUNET_CHANNELS, "labels": {"background": 0, "lesion": 1},
                              "numTraining": count, "file_ending": EXTENSIONS[fmt],
                              "name": "autoPET converted by python -m dataset convert"}, out / "dataset.json")


def outside(out: Path, relative: str) -> str | None:
    """The part of `relative` through which it would resolve outside `out` (a link, say), or None.

    The names are made safe before they are joined; this is checked after joining, on the real folders.
    """
    root = out.resolve()
    parts = Path(relative).parts
    for depth in range(1, len(parts) + 1):
        path = (out.joinpath(*parts[:depth])).resolve()
        if path != root and root not in path.parents:
            return "/".join(parts[:depth])
    return None
