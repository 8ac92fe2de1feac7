"""Lesion labels as a BINARY DICOM-SEG over the PET slices they were drawn on (highdicom writes it)."""
from __future__ import annotations

from pathlib import Path

import highdicom as hd
import numpy as np
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes

from dataset.uids import uid
from petct.atomic import atomic_path


def segment_description(number: int, label: str = "lesion") -> hd.seg.SegmentDescription:
    return hd.seg.SegmentDescription(
        segment_number=number, segment_label=f"{label} {number}" if number > 1 else label,
        segmented_property_category=codes.SCT.MorphologicallyAbnormalStructure,
        segmented_property_type=codes.SCT.Neoplasm,
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.MANUAL)


def write_seg(labels: np.ndarray, pet: list[Dataset], path: Path, *, series_uid: str, segments: int,
              algorithm: bool = False) -> Path:
    """A BINARY DICOM-SEG of `labels` (z, y, x on the PET grid) over the PET slices; empty frames omitted."""
    if segments > 1 or labels.max() > 1:
        count = max(segments, int(labels.max()))
        pixels = np.stack([labels == s for s in range(1, count + 1)], axis=-1).astype(np.uint8)
        descriptions = [segment_description(s) for s in range(1, count + 1)]
    else:
        pixels = (labels > 0).astype(np.uint8)
        descriptions = [segment_description(1)]
    if algorithm:
        descriptions = [hd.seg.SegmentDescription(
            segment_number=d.SegmentNumber, segment_label=d.SegmentLabel,
            segmented_property_category=codes.SCT.MorphologicallyAbnormalStructure,
            segmented_property_type=codes.SCT.Neoplasm, algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
            algorithm_identification=hd.AlgorithmIdentificationSequence(
                name="petct-kit", version="1", family=codes.DCM.ArtificialIntelligence)) for d in descriptions]
    seg = hd.seg.Segmentation(
        source_images=pet, pixel_array=pixels, segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=descriptions, series_instance_uid=series_uid, series_number=300,
        series_description="lesions (petct-kit)" if algorithm else "lesions",  # what viewers name the series by
        sop_instance_uid=uid(series_uid, "seg"), instance_number=1, manufacturer="petct-kit",
        manufacturer_model_name="petct-kit dataset", software_versions="1", device_serial_number="0",
        omit_empty_frames=True)
    with atomic_path(path) as tmp:
        seg.save_as(tmp)
    return path
