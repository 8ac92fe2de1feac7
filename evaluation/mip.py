"""Maximum-intensity projections of a study's PET with its lesion components drawn on them.

`overlay_mip` makes the RGB array (the one function the report, the service and the dry-run use);
`mip_png` lays out a coronal and a sagittal view with a legend and saves it (matplotlib, imported
only when called, so the scoring path never loads it).

Components come from evaluation.metrics.match_components (cc3d, 18-connectivity), so a drawn
component's class is exactly the one the metrics count: a predicted component touching the ground
truth and a ground-truth component touching the prediction are true positive; a predicted
component touching none is false positive; a ground-truth component touching none is false negative.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from evaluation.metrics import Labelled, match_components
from petct.errors import InputError
from petct.imageio import grid_mismatches, read_array

# Okabe & Ito's palette, made for readers with colour-vision deficiencies.
TRUE_POSITIVE = (0, 158, 115)  # bluish green
FALSE_POSITIVE = (213, 94, 0)  # vermillion
FALSE_NEGATIVE = (0, 114, 178)  # blue
PREDICTED = (204, 121, 167)  # reddish purple: prediction drawn without a ground truth
LEGEND = {"true positive": TRUE_POSITIVE, "false positive": FALSE_POSITIVE, "false negative": FALSE_NEGATIVE}
LEGEND_WITHOUT_GROUND_TRUTH = {"predicted lesion": PREDICTED}
DEFAULT_WINDOW = (0.0, 10.0)  # SUV shown from white (0) to black (10 and above)
VIEWS = {"coronal": 1, "sagittal": 2}  # the (z, y, x) axis each view projects along
OPACITY = 0.35  # a component's inside: a tint that leaves the uptake under it readable
# ...and its outline (pixels of its projection next to one outside it) in full colour, so that it stays visible.


@dataclass(frozen=True)
class StudyArrays:
    """A study's SUV and masks as (z, y, x) arrays, with the voxel spacing in the same order."""

    suv: np.ndarray
    prediction: np.ndarray
    ground_truth: np.ndarray | None
    spacing_zyx: tuple[float, float, float]


def overlay_mip(study: StudyArrays, *, view: str = "coronal",
                window: tuple[float, float] = DEFAULT_WINDOW) -> np.ndarray:
    """An (rows, columns, 3) uint8 image: inverted-grey SUV MIP, head up, with the components over it.

    Rows are stretched so that a pixel is square in millimetres (the slices are thicker than the
    in-plane spacing), by repeating rows: nearest neighbour, nothing blurred.
    """
    axis = VIEWS[view]
    low, high = window
    mip = study.suv.max(axis=axis).astype(np.float32)  # (z, other)
    grey = 1.0 - np.clip((mip - low) / (high - low), 0.0, 1.0)
    rgb = np.repeat((grey * 255.0 + 0.5).astype(np.uint8)[..., None], 3, axis=2)
    for colour, plane in _component_planes(study, axis=axis).items():
        if plane.any():
            rgb[plane] = (OPACITY * np.asarray(colour) + (1 - OPACITY) * rgb[plane]).astype(np.uint8)
            rgb[outline(plane)] = colour
    rgb = rgb[::-1]  # image z grows towards the head in the dataset: put the head at the top
    in_plane = study.spacing_zyx[1 if axis == 2 else 2]
    return _square_pixels(rgb, row_mm=study.spacing_zyx[0], column_mm=in_plane)


def outline(plane: np.ndarray) -> np.ndarray:
    """Pixels of `plane` with a 4-neighbour outside it (or on the image's border)."""
    from scipy import ndimage

    return plane & ~ndimage.binary_erosion(plane, border_value=0)


def _component_planes(study: StudyArrays, *, axis: int) -> dict[tuple[int, int, int], np.ndarray]:
    """Colour -> the projection of that class's voxels, painted in this order (later ones on top)."""
    plane_shape = tuple(n for i, n in enumerate(study.suv.shape) if i != axis)
    if study.ground_truth is None:
        return {PREDICTED: (study.prediction != 0).max(axis=axis)}
    gt, pred, _ = match_components(ground_truth=study.ground_truth, prediction=study.prediction)
    true_positive = _projection(gt, plane_shape, axis=axis, touched=True)
    true_positive |= _projection(pred, plane_shape, axis=axis, touched=True)
    return {FALSE_NEGATIVE: _projection(gt, plane_shape, axis=axis, touched=False),
            FALSE_POSITIVE: _projection(pred, plane_shape, axis=axis, touched=False), TRUE_POSITIVE: true_positive}


def _projection(labelled: Labelled, plane_shape: tuple[int, ...], *, axis: int, touched: bool) -> np.ndarray:
    """The projection of the components that do (or do not) touch the other mask; only their box is visited."""
    plane = np.zeros(plane_shape, dtype=bool)
    if labelled.box is not None:
        keep = np.concatenate([[False], labelled.touched == touched])  # label 0 is background
        window = tuple(s for i, s in enumerate(labelled.box) if i != axis)
        plane[window] = keep[labelled.labels].any(axis=axis)
    return plane


def _square_pixels(rgb: np.ndarray, *, row_mm: float, column_mm: float) -> np.ndarray:
    rows = max(1, round(rgb.shape[0] * row_mm / column_mm))
    if rows == rgb.shape[0]:
        return rgb
    source = np.minimum((np.arange(rows) * rgb.shape[0] / rows).astype(np.intp), rgb.shape[0] - 1)
    return rgb[source]


def read_study(*, suv: Path, prediction: Path, ground_truth: Path | None = None) -> StudyArrays:
    """Read the three files (the ground truth is optional); InputError naming the file when one does not fit."""
    suv_array, geometry = read_array(suv)
    arrays = {}
    for name, path in (("prediction", prediction), ("ground truth", ground_truth)):
        if path is None:
            continue
        array, other = read_array(path)
        mismatches = grid_mismatches(geometry, other)
        if mismatches:
            raise InputError(f"{name} is not on the SUV's grid: {'; '.join(mismatches)}", path=path)
        arrays[name] = array
    return StudyArrays(suv=suv_array, prediction=arrays["prediction"], ground_truth=arrays.get("ground truth"),
                       spacing_zyx=tuple(float(s) for s in reversed(geometry.spacing)))


def mip_png(study: StudyArrays, output, *, title: str | None = None,
            window: tuple[float, float] = DEFAULT_WINDOW, dpi: int = 100) -> None:
    """Coronal and sagittal overlay MIPs side by side with a legend, as PNG to a path or a binary file."""
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    views = [overlay_mip(study, view=view, window=window) for view in VIEWS]
    height = max(v.shape[0] for v in views)
    width = sum(v.shape[1] for v in views)
    # 3.6 inches of image height; at least as wide as the legend's one line. At least one pixel of the PNG per
    # pixel of the views (a full-size study's ~490 rows need ~140 dpi), so nothing of the study is lost.
    size = (max(4.2, 3.6 * width / height + 0.3), 4.6)
    dpi = max(dpi, math.ceil(max(height / 3.6, width / (size[0] - 0.3))))
    figure = Figure(figsize=size, dpi=dpi)
    axes = figure.subplots(1, 2, gridspec_kw={"width_ratios": [v.shape[1] for v in views]})
    for ax, view, image in zip(axes, VIEWS, views):
        ax.imshow(image, interpolation="nearest")
        ax.set_title(view, fontsize=10)
        ax.set_axis_off()
    legend = LEGEND if study.ground_truth is not None else LEGEND_WITHOUT_GROUND_TRUTH
    figure.legend(handles=[Patch(color=np.asarray(c) / 255, label=label) for label, c in legend.items()],
                  loc="lower center", ncol=len(legend), fontsize=9, frameon=False)
    if title:
        figure.suptitle(title, fontsize=11)
    figure.subplots_adjust(left=0.01, right=0.99, top=0.9, bottom=0.1, wspace=0.03)
    figure.savefig(output, format="png", dpi=dpi)
