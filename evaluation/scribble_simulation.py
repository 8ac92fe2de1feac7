"""Scribbles simulated from an algorithm's errors, one step of the autoPET V (2026) closed loop.

The rules follow the organisers' `interactive/simulate_scribbles.py` and `interactive_loop.py` (read and
re-written here; docs/editions.md):
- an error region (over-segmentation: mask 1 and truth 0; under-segmentation: mask 0 and truth 1) is cut
  into slices along the third array axis (z of the ITK index (x, y, z)); the scribble goes on the slice
  holding the largest 8-connected 2D component of the region, the first such slice on a tie, and stays
  inside that component;
- strategies: `centerline` (the longest shortest path along the component's skeleton between its two
  farthest skeleton pixels, a tenth cut off each end), `random` (a straight line between two of its pixels
  drawn with a seeded generator), `boundary` (a walk along its inner border from a seeded start, a fifth
  of the border long); the seed is 42 at every call, as the organisers' loop calls it;
- one step adds the tumour scribble when its pixel count is at least the background scribble's, else the
  background scribble, to the scribbles of the previous steps.
The organisers' simulation scans every slice of the whole volume; here the region is cut to the bounding
box of the two masks and its slices are labelled in one pass, which gives the same scribbles point for
point (test/test_scribble_simulation.py) in a fraction of the time (BENCHMARKS.md).
Points are ITK indices (x, y, z), so numpy's (z, y, x) arrays are indexed `[z, y, x]`.
"""
from __future__ import annotations

import random
from dataclasses import dataclass

import cc3d
import networkx
import numpy as np
from scipy import ndimage
from scipy.spatial.distance import cdist
from skimage.draw import line
from skimage.morphology import skeletonize
from skimage.segmentation import find_boundaries

from petct.boxes import bounding_box
from petct.clicks import Clicks, Point
from petct.editions import SCRIBBLE_RULES as RULES
from petct.editions import SCRIBBLE_STRATEGIES as STRATEGIES

SEED = 42
CENTERLINE_TRIM = 0.1  # fraction of the centre line dropped at each end, when it is longer than 10 pixels
BOUNDARY_FRACTION = 0.2  # the border walk's length, as a fraction of the border's pixels
_IN_PLANE_8 = np.zeros((3, 3, 3), dtype=bool)
_IN_PLANE_8[1] = True  # 8-connected within a z slice, never across slices


class SimulationFailed(Exception):
    """The published rule cannot simulate this step (a mask with no false positive or no false negative voxel)."""


@dataclass(frozen=True)
class Scribble:
    """One simulated scribble: (x, y, z) points on one z slice, in (x, y) order."""

    points: tuple[Point, ...]

    @property
    def size(self) -> int:
        return len(self.points)


def simulate_scribble(region_zyx: np.ndarray, *, strategy: str, seed: int = SEED,
                      offset_zyx: tuple[int, int, int] = (0, 0, 0),
                      image_size_xy: tuple[int, int] | None = None) -> Scribble | None:
    """The scribble for a binary region; None when the region is empty.

    The region may be a crop of the image: `offset_zyx` is where it starts and `image_size_xy` the full
    image's in-plane size (x, y), so that scribbles near the crop's edge see the image as it is.
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown scribble strategy {strategy!r}; expected one of {', '.join(STRATEGIES)}")
    found = _largest_slice_component(region_zyx)
    if found is None:
        return None
    z, component_xy = found  # component_xy: (x, y) pixel coordinates within the crop
    oz, oy, ox = offset_zyx
    size_x, size_y = image_size_xy if image_size_xy is not None else (region_zyx.shape[2] + ox,
                                                                     region_zyx.shape[1] + oy)
    # The component on a small (x, y) canvas: its box plus one pixel where the image goes on.
    xs, ys = component_xy[:, 0] + ox, component_xy[:, 1] + oy
    x0, y0 = max(int(xs.min()) - 1, 0), max(int(ys.min()) - 1, 0)
    x1, y1 = min(int(xs.max()) + 2, size_x), min(int(ys.max()) + 2, size_y)
    canvas = np.zeros((x1 - x0, y1 - y0), dtype=np.uint8)
    canvas[xs - x0, ys - y0] = 1
    drawn = _DRAW[strategy](canvas, seed)
    hits = np.argwhere(drawn)  # (x, y) order, as the organisers' volume-wide argwhere lists them
    return Scribble(points=tuple((int(x) + x0, int(y) + y0, z + oz) for x, y in hits))


def _largest_slice_component(region_zyx: np.ndarray) -> tuple[int, np.ndarray] | None:
    """(z, (x, y) pixels) of the largest 8-connected component of any z slice; the first slice wins ties."""
    box = bounding_box(region_zyx)
    if box is None:
        return None
    labels, count = ndimage.label(region_zyx[box], structure=_IN_PLANE_8)
    sizes = np.bincount(labels.ravel(), minlength=count + 1)
    sizes[0] = 0
    best = sizes.max()
    boxes = ndimage.find_objects(labels)
    z = box[0].start + min(boxes[label - 1][0].start for label in np.flatnonzero(sizes == best))
    # Within the slice, equal components are told apart as the organisers' code does: by cc3d's numbering,
    # which follows memory order; their (x, y) slice of a NIfTI array is Fortran-ordered, as this view is.
    plane = (region_zyx[z] != 0).view(np.uint8).T
    plane_labels = cc3d.connected_components(plane, connectivity=8)
    plane_sizes = np.bincount(plane_labels.ravel())
    plane_sizes[0] = 0
    winner = int(np.argmax(plane_sizes))  # the lowest label among the largest
    return z, np.argwhere(plane_labels == winner)


def _draw_random(mask_xy: np.ndarray, seed: int) -> np.ndarray:
    """A straight line between two pixels drawn with Python's generator seeded with `seed`, kept inside the mask."""
    pixels = np.argwhere(mask_xy)
    if len(pixels) < 2:
        return mask_xy.copy()
    draw = random.Random(seed)
    a = pixels[draw.randint(0, len(pixels) - 1)]
    b = pixels[draw.randint(0, len(pixels) - 1)]
    rows, cols = line(int(a[0]), int(a[1]), int(b[0]), int(b[1]))
    out = np.zeros_like(mask_xy)
    out[rows, cols] = mask_xy[rows, cols]
    return out


def _draw_boundary(mask_xy: np.ndarray, seed: int) -> np.ndarray:
    """A walk along the inner border from a seeded start, taking the first unvisited border neighbour each time."""
    border = find_boundaries(mask_xy, mode="inner")
    pixels = np.argwhere(border)
    if len(pixels) < 2:
        return mask_xy.copy()
    draw = random.Random(seed)
    here = tuple(int(v) for v in pixels[draw.randint(0, len(pixels) - 1)])
    out = np.zeros_like(mask_xy)
    out[here] = 1
    visited = {here}
    for _ in range(max(2, int(BOUNDARY_FRACTION * len(pixels)))):
        step = next((p for p in _neighbours(here, border.shape) if border[p] and p not in visited), None)
        if step is None:
            break
        here = step
        out[here] = 1
        visited.add(here)
    return out


def _draw_centerline(mask_xy: np.ndarray, seed: int) -> np.ndarray:
    """The skeleton's path between its two farthest pixels, a tenth trimmed at each end (paths over 10 pixels)."""
    skeleton = skeletonize(mask_xy).astype(np.uint8)
    parts = cc3d.connected_components(skeleton, connectivity=8)
    part_sizes = np.bincount(parts.ravel())
    part_sizes[0] = 0
    if part_sizes.max() == 0:
        return mask_xy.copy()
    pixels = np.argwhere(parts == int(np.argmax(part_sizes)))
    if len(pixels) < 2:
        return mask_xy.copy()
    on_path = {tuple(p) for p in pixels.tolist()}
    graph = networkx.Graph()
    # Nodes and edges in the organisers' order: the shortest path found depends on it when several exist.
    for p in pixels.tolist():
        p = tuple(p)
        graph.add_node(p)
        for q in _neighbours(p, mask_xy.shape):
            if q in on_path:
                graph.add_edge(p, q)
    far = np.unravel_index(np.argmax(cdist(pixels, pixels)), (len(pixels), len(pixels)))
    try:
        path = np.array(networkx.shortest_path(graph, source=tuple(pixels[far[0]]), target=tuple(pixels[far[1]])))
    except networkx.NetworkXNoPath:
        return mask_xy.copy()
    if len(path) > 10:
        path = path[int(len(path) * CENTERLINE_TRIM):int(len(path) * (1 - CENTERLINE_TRIM))]
    out = np.zeros_like(mask_xy)
    out[path[:, 0], path[:, 1]] = mask_xy[path[:, 0], path[:, 1]]
    return out


def _neighbours(p: tuple[int, int], shape: tuple[int, ...]):
    """The 8 neighbours of a pixel inside `shape`, first axis outer, both from -1 to +1."""
    for dx in (-1, 0, 1):
        for dy in (-1, 0, 1):
            if dx or dy:
                q = (p[0] + dx, p[1] + dy)
                if 0 <= q[0] < shape[0] and 0 <= q[1] < shape[1]:
                    yield q


_DRAW = {"centerline": _draw_centerline, "random": _draw_random, "boundary": _draw_boundary}


@dataclass(frozen=True)
class Step:
    """What one step of the loop adds: the kind and points of the new scribble (none when `kind` is None)."""

    kind: str | None
    scribble: Scribble | None
    scribbles: Clicks  # all scribbles so far, the new one included


def next_scribbles(*, ground_truth_zyx: np.ndarray, prediction_zyx: np.ndarray, previous: Clicks,
                   strategy: str, rule: str = "kit", seed: int = SEED) -> Step:
    """The scribbles of the next step: the previous ones plus one simulated from this mask's errors.

    Raises SimulationFailed under the published rule when the mask of a study with lesions has no false
    positive or no false negative voxel (the organisers' loop then scores the step 0); a lesion-free study
    gets no new scribble under that rule, and a background scribble on its false positives under the kit's.
    """
    if rule not in RULES:
        raise ValueError(f"unknown scribble rule {rule!r}; expected one of {', '.join(RULES)}")
    if ground_truth_zyx.shape != prediction_zyx.shape:
        raise ValueError(f"shapes differ: ground truth {ground_truth_zyx.shape}, prediction {prediction_zyx.shape}")
    box = _union_box(ground_truth_zyx, prediction_zyx)
    if rule == "published" and (box is None or not ground_truth_zyx[box].any()):
        # the organisers' loop simulates nothing for a lesion-free study: the algorithm runs again unchanged
        return Step(kind=None, scribble=None, scribbles=previous)
    over = under = None
    if box is not None:
        gt = ground_truth_zyx[box] != 0
        pred = prediction_zyx[box] != 0
        offset = tuple(s.start for s in box)
        size_xy = (ground_truth_zyx.shape[2], ground_truth_zyx.shape[1])
        over = simulate_scribble(pred & ~gt, strategy=strategy, seed=seed, offset_zyx=offset, image_size_xy=size_xy)
        under = simulate_scribble(gt & ~pred, strategy=strategy, seed=seed, offset_zyx=offset, image_size_xy=size_xy)
    if over is None or under is None:
        if rule == "published":
            missing = "false positive" if over is None else "false negative"
            raise SimulationFailed(f"the mask has no {missing} voxel, where the published loop's simulation fails")
        if over is None and under is None:
            return Step(kind=None, scribble=None, scribbles=previous)
    if over is None or (under is not None and over.size <= under.size):
        return Step(kind="tumor", scribble=under,
                    scribbles=Clicks(tumor=previous.tumor + under.points, background=previous.background))
    return Step(kind="background", scribble=over,
                scribbles=Clicks(tumor=previous.tumor, background=previous.background + over.points))


def _union_box(a: np.ndarray, b: np.ndarray) -> tuple[slice, slice, slice] | None:
    """The smallest (z, y, x) box holding every nonzero voxel of either array; None when both are empty."""
    boxes = [box for box in (bounding_box(a), bounding_box(b)) if box is not None]
    if not boxes:
        return None
    return tuple(slice(min(bx[i].start for bx in boxes), max(bx[i].stop for bx in boxes)) for i in range(3))


