"""A DICOM-SEG placed on the PET grid by its frames' geometry (highdicom reads it).

Frames are placed by their ImagePositionPatient, not by the instance UIDs they reference: published SEGs
exist whose references point at instances missing from the collection, and a standard SEG omits empty
frames, so "frame i is PET slice i" is wrong in general.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import highdicom as hd
import numpy as np

from petct.errors import InputError
from petct.imageio import Geometry

log = logging.getLogger(__name__)
POSITION_ATOL_MM = 0.05  # how far a frame may sit from a PET voxel plane (writers round positions)


@dataclass(frozen=True)
class SegOnGrid:
    """Segment labels (z, y, x, uint8: 0 background, else the segment number) and the segment names."""

    labels: np.ndarray
    segment_names: dict[int, str]
    frames: int

    def binary(self) -> np.ndarray:
        return (self.labels > 0).astype(np.uint8)


def _orientation(seg: hd.seg.Segmentation) -> np.ndarray:
    shared = seg.SharedFunctionalGroupsSequence[0]
    if "PlaneOrientationSequence" in shared:
        return np.array([float(v) for v in shared.PlaneOrientationSequence[0].ImageOrientationPatient])
    per = seg.PerFrameFunctionalGroupsSequence[0]
    return np.array([float(v) for v in per.PlaneOrientationSequence[0].ImageOrientationPatient])


def read_seg_on_grid(path: str | Path, grid: Geometry, *, frame_of_reference: str | None) -> SegOnGrid:
    """The SEG at `path` as a label map on `grid` (the PET's), or InputError saying why it does not fit."""
    path = Path(path)
    try:
        seg = hd.seg.segread(path)
    except Exception as exc:  # noqa: BLE001 - pydicom/highdicom raise many types for a bad file
        raise InputError(f"not a readable DICOM-SEG: {exc}", path=path) from None
    if frame_of_reference and seg.get("FrameOfReferenceUID") != frame_of_reference:
        raise InputError(f"SEG frame of reference {seg.get('FrameOfReferenceUID')} is not the PET's "
                         f"({frame_of_reference})", path=path)
    d = np.array(grid.direction).reshape(3, 3)
    iop = _orientation(seg)
    if not (np.allclose(iop[:3], d[:, 0], atol=1e-4) and np.allclose(iop[3:], d[:, 1], atol=1e-4)):
        raise InputError(f"SEG orientation {iop.round(5).tolist()} differs from the PET's", path=path)
    if (int(seg.Rows), int(seg.Columns)) != (grid.size[1], grid.size[0]):
        raise InputError(f"SEG frames are {seg.Rows}x{seg.Columns}, PET slices {grid.size[1]}x{grid.size[0]}",
                         path=path)
    names = {int(s.SegmentNumber): str(s.SegmentLabel) for s in seg.SegmentSequence}
    nx, ny, nz = grid.size
    labels = np.zeros((nz, ny, nx), dtype=np.uint8)
    n_frames = int(seg.get("NumberOfFrames", 1))
    pixels = seg.pixel_array.reshape(n_frames, ny, nx)
    fractional = seg.SegmentationType == "FRACTIONAL"
    threshold = 0.5 * float(seg.get("MaximumFractionalValue", 1)) if fractional else 0
    origin = np.array(grid.origin)
    shared = seg.SharedFunctionalGroupsSequence[0]
    for index, frame in enumerate(seg.PerFrameFunctionalGroupsSequence):
        position = np.array([float(v) for v in frame.PlanePositionSequence[0].ImagePositionPatient])
        voxel = d.T @ (position - origin) / np.array(grid.spacing)  # continuous (x, y, z) index
        k = int(round(voxel[2]))
        offset_mm = np.abs(voxel - [0, 0, k]) * np.array(grid.spacing)
        if offset_mm.max() > POSITION_ATOL_MM:
            raise InputError(f"SEG frame {index + 1} at {position.round(2).tolist()} mm is not on a PET slice "
                             f"(off by {offset_mm.max():.2f} mm)", path=path)
        if not 0 <= k < nz:
            raise InputError(f"SEG frame {index + 1} at {position.round(2).tolist()} mm lies outside the PET's "
                             f"{nz} slices", path=path)
        identification = frame.get("SegmentIdentificationSequence") or shared.get("SegmentIdentificationSequence")
        if not identification:
            raise InputError(f"SEG frame {index + 1} names no segment (SegmentIdentificationSequence)", path=path)
        segment = int(identification[0].ReferencedSegmentNumber)
        inside = pixels[index] > threshold
        labels[k][inside] = segment
    if not labels.any():
        log.warning("%s: the SEG is empty: a negative study", path)
    return SegOnGrid(labels=labels, segment_names=names, frames=n_frames)
