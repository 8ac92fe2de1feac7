"""Lesion clicks of the 2025 interactive track: reading, checking, writing, and encoding them as channels.

A click is a voxel index in (x, y, z) order, ITK's index order, so numpy's (z, y, x) array is indexed
`[z, y, x]`; the official simulation indexes the NIfTI array as nibabel loads it, which is the same order.
Two file forms are read: grand-challenge's "Multiple points" object (what the algorithm gets as
/input/lesion-clicks.json: `{"type": "Multiple points", "points": [{"point": [x, y, z], "name": "tumor"}]}`)
and the plain form of the organisers' simulation (`{"tumor": [[x, y, z], ...], "background": [...]}`).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage

from petct.editions import MAX_CLICKS
from petct.errors import InputError

KINDS = ("tumor", "background")
Point = tuple[int, int, int]
MAX_INDEX = 2**31  # past any image's size; also keeps a 4,000-digit number from reaching float()
NESTED_TOO_DEEPLY = "clicks JSON is nested too deeply; a click is [x, y, z] in a list"


@dataclass(frozen=True)
class Clicks:
    """Tumour and background clicks, each an (x, y, z) voxel index."""

    tumor: tuple[Point, ...] = ()
    background: tuple[Point, ...] = ()

    @property
    def step(self) -> int:
        """The protocol step these clicks belong to: step k gives k clicks of each kind (fewer when a kind runs out)."""
        return max(len(self.tumor), len(self.background))

    def first(self, k: int) -> Clicks:
        """The clicks of protocol step k: the first k of each kind."""
        return Clicks(tumor=self.tumor[:k], background=self.background[:k])

    def to_plain(self) -> dict:
        return {"tumor": [list(p) for p in self.tumor], "background": [list(p) for p in self.background]}

    def to_grand_challenge(self) -> dict:
        """The "Multiple points" value grand-challenge stores and mounts as lesion-clicks.json."""
        points = [{"point": list(p), "name": kind} for kind in KINDS for p in getattr(self, kind)]
        return {"version": {"major": 1, "minor": 0}, "type": "Multiple points", "points": points}


def parse_clicks(value: object, *, source: str, size_xyz: tuple[int, int, int] | None = None,
                 limit: int = MAX_CLICKS, noun: str = "click") -> Clicks:
    """Clicks from a decoded JSON value; InputError naming `source` for any malformed click.

    `size_xyz` (the PET's size in ITK order) checks every click lies in the image; `limit` is the most points
    of each kind and `noun` what the messages call a point (the 2026 scribbles: petct.scribbles).
    """
    def fail(problem: str) -> InputError:
        return InputError(problem, path=source)

    if not isinstance(value, dict):
        raise fail(f"expected a JSON object of {noun}s, found {type(value).__name__}")
    found: dict[str, list[object]] = {kind: [] for kind in KINDS}
    if "points" in value:
        points = value["points"]
        if not isinstance(points, list):
            raise fail(f"'points' must be a list, found {type(points).__name__}")
        for number, item in enumerate(points, start=1):
            if not isinstance(item, dict) or "point" not in item:
                raise fail(f"point {number} must be an object with 'point' and 'name'")
            name = item.get("name")
            if name not in KINDS:
                raise fail(f"point {number} has name {name!r}; expected 'tumor' or 'background'")
            found[name].append(item["point"])
    else:
        unknown = sorted(set(value) - set(KINDS))
        if unknown:
            raise fail(f"unknown keys {unknown}; expected 'tumor' and 'background' (or grand-challenge's 'points')")
        for kind in KINDS:
            points = value.get(kind, [])
            if not isinstance(points, list):
                raise fail(f"'{kind}' must be a list of [x, y, z] {noun}s, found {type(points).__name__}")
            found[kind] = list(points)
    clicks = {}
    for kind in KINDS:
        if len(found[kind]) > limit:
            raise fail(f"{len(found[kind])} {kind} {noun}s; the protocol gives at most {limit} of each kind")
        clicks[kind] = tuple(_point(p, kind=kind, number=n, fail=fail, size_xyz=size_xyz, noun=noun)
                             for n, p in enumerate(found[kind], start=1))
    return Clicks(**clicks)


def _point(value: object, *, kind: str, number: int, fail, size_xyz, noun: str) -> Point:
    if not isinstance(value, (list, tuple)) or len(value) != 3:
        raise fail(f"{kind} {noun} {number} is {json.dumps(value)}; expected [x, y, z]")
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value) or \
            not all(abs(v) < MAX_INDEX and float(v).is_integer() for v in value):  # NaN fails the comparison
        raise fail(f"{kind} {noun} {number} is {json.dumps(value)[:80]}; voxel indices must be integers "
                   f"(of less than {MAX_INDEX})")
    point = tuple(int(v) for v in value)
    if size_xyz is not None and not all(0 <= v < n for v, n in zip(point, size_xyz)):
        raise fail(f"{kind} {noun} {number} {list(point)} lies outside the image of size {list(size_xyz)} (x, y, z)")
    return point  # type: ignore[return-value]


def read_clicks(path: Path, *, size_xyz: tuple[int, int, int] | None = None, limit: int = MAX_CLICKS,
                noun: str = "click") -> Clicks:
    """Clicks from a JSON file; InputError naming the file when it is missing, not JSON, or malformed."""
    path = Path(path)
    try:
        value = json.loads(path.read_text())
    except FileNotFoundError:
        raise InputError(f"{noun}s file does not exist", path=path) from None
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise InputError(f"{noun}s file is not readable JSON: {exc}", path=path) from None
    except RecursionError:
        raise InputError(NESTED_TOO_DEEPLY, path=path) from None
    return parse_clicks(value, source=str(path), size_xyz=size_xyz, limit=limit, noun=noun)


ENCODINGS = ("gaussian", "distance", "impulse")


@dataclass(frozen=True)
class ClickEncoding:
    """How clicks become network input channels; from the model folder, the official baseline's Gaussian by default."""

    kind: str = "gaussian"  # gaussian | distance | impulse (1.0 at each point, nothing else: 2026 scribbles)
    sigma: float = 3.0  # gaussian: voxels, as the official nnU-Net baseline's heatmaps
    max_distance: float = 20.0  # distance: voxels; the encoding is 1 at a click falling to 0 at this distance

    def __post_init__(self):
        if self.kind not in ENCODINGS:
            raise ValueError(f"click encoding must be one of {', '.join(map(repr, ENCODINGS))}, not {self.kind!r}")


def click_channels(clicks: Clicks, shape_zyx: tuple[int, int, int], encoding: ClickEncoding = ClickEncoding()
                   ) -> tuple[np.ndarray, np.ndarray]:
    """(tumour, background) float32 channels on a (z, y, x) grid."""
    return (_channel(clicks.tumor, shape_zyx, encoding), _channel(clicks.background, shape_zyx, encoding))


def _channel(points: tuple[Point, ...], shape_zyx: tuple[int, int, int], encoding: ClickEncoding) -> np.ndarray:
    seeds = np.zeros(shape_zyx, dtype=np.float32)
    if points:
        xyz = np.asarray(points, dtype=np.int64).reshape(-1, 3)
        # points off the grid are dropped, as the organisers' heatmaps drop them
        inside = np.all((xyz >= 0) & (xyz < np.asarray(shape_zyx[::-1])), axis=1)
        x, y, z = xyz[inside].T
        seeds[z, y, x] = 1.0
    if encoding.kind == "impulse":
        return seeds
    if encoding.kind == "gaussian":
        # As the official baseline: unit impulses blurred (the peak is not rescaled to 1).
        return ndimage.gaussian_filter(seeds, sigma=encoding.sigma).astype(np.float32, copy=False)
    if not points:
        return np.zeros(shape_zyx, dtype=np.float32)
    distance = ndimage.distance_transform_edt(seeds == 0)
    return np.clip(1.0 - distance / encoding.max_distance, 0.0, 1.0).astype(np.float32)
