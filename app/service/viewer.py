"""The slice viewer's volumes: a study's CT, SUV and masks as NIfTI files the browser's Niivue reads.

Made once per job from its stored files and kept in its folder (`viewer/`), whatever format was uploaded,
so the browser reads one format. The masks go as one label volume: the prediction alone (1), or, where the
caller may see the ground truth, each component's class (true positive, false positive, false negative),
the classes the metrics count (evaluation.metrics.match_components), as the MIPs draw them.
"""
from __future__ import annotations

import gzip
import shutil
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from evaluation.metrics import Labelled, match_components
from evaluation.mip import FALSE_NEGATIVE, FALSE_POSITIVE, PREDICTED, TRUE_POSITIVE
from petct.atomic import atomic_path
from petct.imageio import image_from_array, read_array, read_image, write_image_atomic

FOLDER = "viewer"
HU_RANGE = (-32768, 32767)  # CT goes as int16: half the bytes of float32, and HU need no fraction
GZIP_LEVEL = 1
CHUNK = 1 << 20


class Volume(str, Enum):
    ct = "ct"
    suv = "suv"
    prediction = "prediction"  # 0 background, 1 predicted lesion
    components = "components"  # 0 background, then the Label values below


class Label(int, Enum):
    """Values of the components volume; the viewer's colours and names for them are `LABELS`."""

    true_positive = 1
    false_positive = 2
    false_negative = 3


@dataclass(frozen=True)
class LabelStyle:
    value: int
    name: str
    rgb: tuple[int, int, int]


PREDICTION_LABELS = (LabelStyle(1, "predicted lesion", PREDICTED),)
COMPONENT_LABELS = (LabelStyle(Label.true_positive, "true positive", TRUE_POSITIVE),
                    LabelStyle(Label.false_positive, "false positive", FALSE_POSITIVE),
                    LabelStyle(Label.false_negative, "false negative", FALSE_NEGATIVE))


@dataclass(frozen=True)
class StudyFiles:
    """Where one study's images are: what the viewer's volumes are made from."""

    ct: Path
    pet: Path  # in SUV
    mask: Path  # the prediction
    label: Path | None = None  # the ground truth, where the caller may see it


def viewer_volume(*, cache: Path, files: StudyFiles, volume: Volume) -> Path:
    """The study's `volume` as .nii.gz in the `cache` folder, written the first time it is asked for."""
    path = cache / f"{volume.value}.nii.gz"
    if path.is_file():
        return path
    cache.mkdir(parents=True, exist_ok=True)
    if volume == Volume.ct:
        image = read_image(files.ct)
        array = np.clip(np.rint(sitk.GetArrayViewFromImage(image)), *HU_RANGE).astype(np.int16)
        out = sitk.GetImageFromArray(array)
        out.CopyInformation(image)
    elif volume == Volume.suv:
        out = sitk.Cast(read_image(files.pet), sitk.sitkFloat32)
    else:
        prediction, geometry = read_array(files.mask)
        if volume == Volume.prediction:
            labels = (prediction != 0).astype(np.uint8)
        else:
            ground_truth, _ = read_array(files.label)
            labels = component_labels(ground_truth=ground_truth, prediction=prediction)
        out = image_from_array(labels, geometry)
    _write_fast_gzip(out, path)
    return path


def _write_fast_gzip(image: sitk.Image, path: Path) -> None:
    """`image` as .nii.gz at zlib's fastest level: ITK's own .nii.gz writer takes several times longer for a
    file barely smaller, and the viewer's first opening waits on it (BENCHMARKS.md, slice viewer)."""
    plain = write_image_atomic(image, path.with_name(f".{path.name[:-len('.gz')]}"), compress=False)
    try:
        with atomic_path(path) as tmp, open(plain, "rb") as source, \
                gzip.GzipFile(tmp, mode="wb", compresslevel=GZIP_LEVEL, mtime=0) as target:
            shutil.copyfileobj(source, target, CHUNK)
    finally:
        plain.unlink(missing_ok=True)


def component_labels(*, ground_truth: np.ndarray, prediction: np.ndarray) -> np.ndarray:
    """uint8 volume: each voxel of a component by its class (Label); true positive painted last, on top."""
    gt, pred, _ = match_components(ground_truth=ground_truth, prediction=prediction)
    out = np.zeros(prediction.shape, dtype=np.uint8)
    for labelled, touched, value in ((gt, False, Label.false_negative), (pred, False, Label.false_positive),
                                     (gt, True, Label.true_positive), (pred, True, Label.true_positive)):
        _paint(out, labelled, touched=touched, value=value)
    return out


def _paint(out: np.ndarray, labelled: Labelled, *, touched: bool, value: int) -> None:
    if labelled.box is None:
        return
    keep = np.concatenate([[False], labelled.touched == touched])  # label 0 is background
    out[labelled.box][keep[labelled.labels]] = value
