"""A weight-free baseline: FDG-avid lesions from SUV and CT by thresholds and anatomical rules.

Used when no trained model is present, so the container still gives a sensible answer. No training,
no random numbers: the same study always gives the same mask. Every size is in millimetres,
millilitres, HU or SUV, never in voxels, so the rules mean the same at any resolution.

The method, step by step (the arrays are (z, y, x), z being the scanner's long axis, as in any axial
whole-body scan):

1. Body. CT above -500 HU, holes filled slice by slice (lungs and bowel gas lie inside the body),
   largest 3D component kept (drops the table and stray objects).
2. Lungs and orientation. Air-like voxels (CT below -400 HU) inside the filled body that are not body
   tissue, in components of at least 150 ml; the two largest are the lungs. A whole-body scan runs
   from the head to the thighs and the lungs sit in its upper part, so the end of the z axis nearer
   the lungs is "up". Heights below are in mm above the lung bases (the lowest lung slice); lateral
   offsets are in mm from the body's midline measured at lung level. Without lungs, the dataset's
   convention (z grows towards the head) is assumed and the lung levels are guessed from the body.
3. Liver reference (PERCIST). The liver lies under the right hemidiaphragm: in the slab from 60 mm
   below to 10 mm above the lung bases, soft-tissue voxels (-50..200 HU) with a lightly smoothed SUV
   between 1.0 and 4.0 form components; the largest is taken as liver. Its median SUV and robust
   standard deviation (1.4826 x MAD) are the reference (a fixed 2.0 +- 0.3 when none is found).
4. Candidates. Threshold T = max(3.0, 1.5 x liver + 2 x SD), the PERCIST limit for measurable
   disease. Voxels of the filled body (so lung nodules count) with SUV >= T are grown (hysteresis) into neighbours above
   max(2.5, 0.8 T) so that a lesion's noisy rim is kept; components use 18-connectivity, as the
   challenge's metrics do.
5. Physiological uptake. Each component is described by its volume, its centroid's height and
   lateral offset, and its peak SUV; components matching an organ with normally high FDG uptake are
   dropped:
   - brain: centroid at least 100 mm above the lung apices and at least 10 ml;
   - heart: centroid between the lung bases and apices, within 60 mm of the midline, at least 60 ml;
   - kidneys: centroid 0-250 mm below the lung bases and 30-130 mm off the midline, at least 20 ml,
     and either paired (a second such component on the other side within 60 mm in height) or at
     least 60 ml;
   - bladder: centroid more than 200 mm below the lung bases, within 40 mm of the midline, at
     least 20 ml.
   What is left is the lesion mask.

Known limits (real data): brown fat, bowel, muscle and inflammation are not suppressed; lesions that
touch an organ with physiological uptake are lost with it; head-and-neck tumours above the lung
apices may be taken for brain.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass

import cc3d
import numpy as np
from scipy import ndimage

from algorithm.click_refinement import refine_with_clicks
from algorithm.engine_contract import EngineOptions, Prediction
from petct.boxes import bounding_box
from petct.clicks import Clicks
from petct.lesions import LESION_CONNECTIVITY


@dataclass(frozen=True)
class BaselineSettings:
    """The method's constants, in physical units (see the module docstring)."""

    body_hu: float = -500.0
    lung_hu: float = -400.0
    min_lung_ml: float = 150.0
    soft_tissue_hu: tuple[float, float] = (-50.0, 200.0)
    liver_slab_mm: tuple[float, float] = (-60.0, 10.0)  # heights relative to the lung bases
    liver_suv_window: tuple[float, float] = (1.0, 4.0)
    liver_smoothing_mm: float = 6.0
    default_liver: tuple[float, float] = (2.0, 0.3)  # median, SD when no liver is found
    min_threshold_suv: float = 3.0
    grow_fraction: float = 0.8  # hysteresis: grow into voxels above this fraction of T ...
    min_grow_suv: float = 2.5  # ... and above this SUV
    brain_above_apex_mm: float = 100.0
    brain_min_ml: float = 10.0
    heart_max_offset_mm: float = 60.0
    heart_min_ml: float = 60.0
    kidney_below_base_mm: tuple[float, float] = (0.0, 250.0)
    kidney_offset_mm: tuple[float, float] = (30.0, 130.0)
    kidney_min_ml: float = 20.0
    kidney_pair_height_mm: float = 60.0
    kidney_single_min_ml: float = 60.0
    bladder_below_base_mm: float = 200.0
    bladder_max_offset_mm: float = 40.0
    bladder_min_ml: float = 20.0


@dataclass(frozen=True)
class Landmarks:
    """Where the body and lungs are, in mm along the array axes (z index x spacing)."""

    up: int  # +1 when the head is at high z, -1 when at low z
    lung_base_z_mm: float
    lung_apex_z_mm: float
    midline_x_mm: float
    lungs_found: bool

    def height_mm(self, z_mm: np.ndarray | float) -> np.ndarray | float:
        """Height above the lung bases (positive towards the head)."""
        return self.up * (np.asarray(z_mm) - self.lung_base_z_mm)

    @property
    def apex_height_mm(self) -> float:
        return float(self.height_mm(self.lung_apex_z_mm))


@dataclass(frozen=True)
class Component:
    """One candidate region and the features the organ rules look at."""

    label: int
    volume_ml: float
    height_mm: float  # centroid, above the lung bases
    offset_mm: float  # centroid's distance from the midline (unsigned)
    side: int  # -1 / +1: which side of the midline (array x), 0 on it
    suv_max: float


class BaselineEngine:
    """Threshold-and-anatomy lesion finder; needs no model (see the module docstring)."""

    name = "baseline"

    def __init__(self, *, options: EngineOptions | None = None, settings: BaselineSettings | None = None,
                 reason: str | None = None):
        self.options = options or EngineOptions()
        self.settings = settings or BaselineSettings()
        self.reason = reason  # why the baseline runs (no model found, or asked for)

    def describe(self) -> dict[str, object]:
        return {"engine": self.name, "device": "cpu", "model": None, "reason": self.reason,
                "settings": asdict(self.settings)}

    def predict(self, *, pet: np.ndarray, ct: np.ndarray, spacing_zyx: tuple[float, float, float],
                clicks: Clicks | None = None) -> Prediction:
        s = self.settings
        timings: dict[str, float] = {}
        t0 = time.perf_counter()
        pet = np.asarray(pet, dtype=np.float32)
        ct = np.asarray(ct, dtype=np.float32)
        if pet.shape != ct.shape or pet.ndim != 3:
            raise ValueError(f"PET {pet.shape} and CT {ct.shape} must be 3D arrays of one shape")
        spacing = tuple(float(v) for v in spacing_zyx)
        voxel_ml = float(np.prod(spacing)) / 1000.0

        body, filled = body_mask(ct, s.body_hu)
        landmarks = find_landmarks(ct=ct, body=body, filled=filled, spacing=spacing, settings=s)
        timings["anatomy"] = time.perf_counter() - t0

        t1 = time.perf_counter()
        liver_median, liver_sd, liver_ml = liver_reference(pet=pet, ct=ct, body=body, landmarks=landmarks,
                                                           spacing=spacing, settings=s)
        threshold = max(s.min_threshold_suv, 1.5 * liver_median + 2.0 * liver_sd)
        low = max(s.min_grow_suv, s.grow_fraction * threshold)
        del body  # no longer needed: freed before the candidates are labelled
        # Within the filled body: a lung nodule is soft tissue surrounded by air, not part of the body component.
        candidates = hysteresis(pet, high=threshold, low=low, within=filled)
        del filled
        timings["candidates"] = time.perf_counter() - t1

        t2 = time.perf_counter()
        labels = cc3d.connected_components(candidates, connectivity=LESION_CONNECTIVITY, binary_image=True)
        del candidates
        components = describe_components(labels=labels, pet=pet, spacing=spacing, voxel_ml=voxel_ml,
                                         landmarks=landmarks)
        dropped = classify_physiological(components, landmarks=landmarks, settings=s)
        keep = np.ones(len(components) + 1, dtype=np.uint8)
        keep[0] = 0
        for label in dropped:
            keep[label] = 0
        mask = keep[labels]
        timings["organ_rules"] = time.perf_counter() - t2
        click_notes = None
        if clicks is not None:  # 2025 interactive track (algorithm.click_refinement)
            t3 = time.perf_counter()
            mask, click_notes = refine_with_clicks(mask, pet=pet, clicks=clicks, spacing_zyx=spacing)
            timings["clicks"] = time.perf_counter() - t3

        notes = {
            "lungs_found": landmarks.lungs_found,
            "head_towards": "+z" if landmarks.up > 0 else "-z",
            "liver_suv_median": round(liver_median, 3),
            "liver_suv_sd": round(liver_sd, 3),
            "liver_volume_ml": round(liver_ml, 1),
            "threshold_suv": round(threshold, 3),
            "candidate_components": len(components),
            "dropped_as_physiological": {organ: len(labels_) for organ, labels_ in _by_organ(dropped).items()},
            "lesion_components": len(components) - len(dropped),
        }
        if click_notes is not None:
            notes["clicks"] = click_notes
        return Prediction(mask=mask, probabilities=None, timings=timings, notes=notes)


def body_mask(ct: np.ndarray, body_hu: float) -> tuple[np.ndarray, np.ndarray]:
    """The body (largest component of CT > body_hu) and the same with holes filled slice by slice."""
    tissue = ct > body_hu
    if not tissue.any():
        return tissue, tissue
    body = largest_component(tissue)
    del tissue
    filled = np.empty_like(body)
    for z in range(body.shape[0]):
        filled[z] = fill_holes_2d(body[z])
    return body, filled


def largest_component(mask: np.ndarray) -> np.ndarray:
    """The largest 6-connected component of a non-empty boolean mask (the first in scan order on a tie).

    Labelled within the mask's bounding box, and counted by cc3d rather than by np.bincount (which would
    copy the labels as 64-bit integers): a full-size study's body is one 50 MB mask, not 600 MB of labels.
    """
    box = bounding_box(mask)
    labels = cc3d.connected_components(mask[box], connectivity=6, binary_image=True)
    counts = np.asarray(cc3d.statistics(labels, no_slice_conversion=True)["voxel_counts"], dtype=np.int64)
    counts[0] = 0
    largest = np.zeros(mask.shape, dtype=bool)
    np.equal(labels, int(np.argmax(counts)), out=largest[box])
    return largest


def fill_holes_2d(mask: np.ndarray) -> np.ndarray:
    """`mask` plus the background regions (4-connected) that do not reach the slice's border."""
    if not mask.any():
        return mask.copy()
    background = cc3d.connected_components((~mask).astype(np.uint8), connectivity=4)
    border = np.unique(np.concatenate([background[0], background[-1], background[:, 0], background[:, -1]]))
    return ~np.isin(background, border[border != 0])


def find_landmarks(*, ct: np.ndarray, body: np.ndarray, filled: np.ndarray, spacing: tuple[float, ...],
                   settings: BaselineSettings) -> Landmarks:
    """Lung levels, which z end is the head, and the midline (step 2)."""
    sz, _, sx = spacing
    voxel_ml = float(np.prod(spacing)) / 1000.0
    body_z = np.flatnonzero(filled.any(axis=(1, 2)))
    if body_z.size == 0:
        body_z = np.array([0, ct.shape[0] - 1])
    # Extents run from the first voxel's lower edge to the last one's upper edge, so that flipping
    # the z axis gives the same heights.
    z_lo, z_hi = body_z[0] * sz, (body_z[-1] + 1) * sz

    # filled & ~body & (ct < lung_hu), built in one array
    air = np.less(ct, settings.lung_hu)
    air &= filled
    np.greater(air, body, out=air)
    # Labelled within the body's extent across the slices (air lies in the filled body): the z centroids,
    # the only ones used, are those of the whole volume.
    plane = filled.any(axis=0)
    across = bounding_box(plane) or (slice(None), slice(None))
    labels = cc3d.connected_components(air[(slice(None), *across)], connectivity=6, binary_image=True)
    del air
    stats = cc3d.statistics(labels, no_slice_conversion=True)
    del labels
    counts = np.asarray(stats["voxel_counts"], dtype=np.int64)
    counts[0] = 0
    order = [int(i) for i in np.argsort(counts)[::-1][:2] if counts[i] * voxel_ml >= settings.min_lung_ml]
    if order:
        # bounding_boxes: (z0, z1, y0, y1, x0, x1) per label, ends inclusive
        boxes = np.asarray(stats["bounding_boxes"], dtype=np.int64)[order]
        lung_z = np.array([boxes[:, 0].min(), boxes[:, 1].max()])
        lung_lo, lung_hi = lung_z[0] * sz, (lung_z[-1] + 1) * sz
        weights = counts[order].astype(np.float64)
        centre = (float(np.average(np.asarray(stats["centroids"])[order, 0], weights=weights)) + 0.5) * sz
        # The lungs sit in the upper part of a whole-body scan: the nearer end is the head.
        up = 1 if (z_hi - centre) <= (centre - z_lo) else -1
        base, apex = (lung_lo, lung_hi) if up > 0 else (lung_hi, lung_lo)
        trunk = filled[lung_z[0]:lung_z[-1] + 1]
    else:
        # No lungs (partial scan, or not a CT): the dataset convention, z grows towards the head,
        # with the lungs guessed at 55-75 % of the body's length as in a head-to-thigh scan.
        up = 1
        base, apex = z_lo + 0.55 * (z_hi - z_lo), z_lo + 0.75 * (z_hi - z_lo)
        trunk = filled
    xs = np.flatnonzero(trunk.any(axis=(0, 1)))
    midline = 0.5 * (xs[0] + xs[-1] + 1) * sx if xs.size else 0.5 * ct.shape[2] * sx
    return Landmarks(up=up, lung_base_z_mm=float(base), lung_apex_z_mm=float(apex), midline_x_mm=float(midline),
                     lungs_found=bool(order))


def liver_reference(*, pet: np.ndarray, ct: np.ndarray, body: np.ndarray, landmarks: Landmarks,
                    spacing: tuple[float, ...], settings: BaselineSettings) -> tuple[float, float, float]:
    """Liver median SUV, robust SD and volume (ml) of the region used (step 3)."""
    s = settings
    sz = spacing[0]
    heights = landmarks.height_mm((np.arange(pet.shape[0]) + 0.5) * sz)
    slab = np.flatnonzero((heights >= s.liver_slab_mm[0]) & (heights <= s.liver_slab_mm[1]))
    if slab.size == 0:
        return (*s.default_liver, 0.0)
    zs = slice(int(slab[0]), int(slab[-1]) + 1)
    suv, hu, inside = pet[zs], ct[zs], body[zs]
    sigma = [s.liver_smoothing_mm / v for v in spacing]
    smooth = ndimage.gaussian_filter(suv, sigma=sigma, mode="nearest")
    lo, hi = s.liver_suv_window
    region = inside & (hu >= s.soft_tissue_hu[0]) & (hu <= s.soft_tissue_hu[1]) & (smooth >= lo) & (smooth <= hi)
    if not region.any():
        return (*s.default_liver, 0.0)
    liver = largest_component(region)
    core = ndimage.binary_erosion(liver)
    values = suv[core] if np.count_nonzero(core) >= 20 else suv[liver]
    median = float(np.median(values))
    sd = 1.4826 * float(np.median(np.abs(values - median)))
    return median, sd, float(np.count_nonzero(liver)) * float(np.prod(spacing)) / 1000.0


def hysteresis(pet: np.ndarray, *, high: float, low: float, within: np.ndarray) -> np.ndarray:
    """Voxels above `low` connected (as lesions are) to a voxel above `high`, inside `within`."""
    weak = pet >= low
    weak &= within
    # Components lie within the weak voxels' bounding box: labelled there only.
    box = bounding_box(weak)
    if box is None:
        return weak
    labels = cc3d.connected_components(weak[box], connectivity=LESION_CONNECTIVITY, binary_image=True)
    seeded = np.zeros(int(labels.max()) + 1, dtype=bool)
    seeded[labels[pet[box] >= high]] = True
    seeded[0] = False
    weak[box] = seeded[labels]
    return weak


def describe_components(*, labels: np.ndarray, pet: np.ndarray, spacing: tuple[float, ...], voxel_ml: float,
                        landmarks: Landmarks) -> list[Component]:
    """Volume, centroid height and lateral offset, and peak SUV of each labelled component."""
    n = int(labels.max())
    if n == 0:
        return []
    stats = cc3d.statistics(labels)
    counts = np.asarray(stats["voxel_counts"], dtype=np.int64)
    centroids = np.asarray(stats["centroids"], dtype=np.float64)  # in array-axis order (z, y, x)
    inside = labels > 0  # the components are a small part of the volume: look only there
    peaks = ndimage.maximum(pet[inside], labels=labels[inside], index=np.arange(1, n + 1))
    sz, _, sx = spacing
    components = []
    for label in range(1, n + 1):
        dx = (centroids[label, 2] + 0.5) * sx - landmarks.midline_x_mm
        components.append(Component(
            label=label,
            volume_ml=float(counts[label]) * voxel_ml,
            height_mm=float(landmarks.height_mm((centroids[label, 0] + 0.5) * sz)),
            offset_mm=float(abs(dx)),
            side=int(np.sign(dx)),
            suv_max=float(peaks[label - 1]),
        ))
    return components


def classify_physiological(components: list[Component], *, landmarks: Landmarks,
                           settings: BaselineSettings) -> dict[int, str]:
    """Labels of components taken for physiological uptake, with the organ each is taken for (step 5)."""
    s = settings
    organs: dict[int, str] = {}
    apex = landmarks.apex_height_mm
    kidney_like = []
    for c in components:
        if c.height_mm >= apex + s.brain_above_apex_mm and c.volume_ml >= s.brain_min_ml:
            organs[c.label] = "brain"
        elif 0.0 <= c.height_mm <= apex and c.offset_mm <= s.heart_max_offset_mm and c.volume_ml >= s.heart_min_ml:
            organs[c.label] = "heart"
        elif (c.height_mm < -s.bladder_below_base_mm and c.offset_mm <= s.bladder_max_offset_mm
              and c.volume_ml >= s.bladder_min_ml):
            organs[c.label] = "bladder"
        elif (s.kidney_below_base_mm[0] <= -c.height_mm <= s.kidney_below_base_mm[1]
              and s.kidney_offset_mm[0] <= c.offset_mm <= s.kidney_offset_mm[1] and c.volume_ml >= s.kidney_min_ml):
            kidney_like.append(c)
    for c in kidney_like:
        paired = any(o.side == -c.side and abs(o.height_mm - c.height_mm) <= s.kidney_pair_height_mm
                     for o in kidney_like)
        if paired or c.volume_ml >= s.kidney_single_min_ml:
            organs[c.label] = "kidney"
    return organs


def _by_organ(dropped: dict[int, str]) -> dict[str, list[int]]:
    grouped: dict[str, list[int]] = {}
    for label, organ in sorted(dropped.items()):
        grouped.setdefault(organ, []).append(label)
    return grouped
