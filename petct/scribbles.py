"""Scribbles of the autoPET V (2026) interactive task: reading them, and encoding them as network channels.

A scribble file has the 2025 clicks' two forms (petct.clicks): grand-challenge's "Multiple points" value,
which the algorithm gets as /input/lesion-clicks.json, and the organisers' plain form
`{"tumor": [[x, y, z], ...], "background": [...]}`. Points are ITK voxel indices (x, y, z). A scribble
is a line of voxels, so a file holds many points: up to MAX_SCRIBBLE_POINTS of each kind are read.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from petct.clicks import ClickEncoding, Clicks, click_channels, parse_clicks, read_clicks

# Scribbles accumulate over the loop's steps, one slice-long line each (a few to a few hundred voxels);
# the limit only keeps a hostile file from filling memory.
MAX_SCRIBBLE_POINTS = 100_000
NOUN = "scribble point"
SCRIBBLE_ENCODING = ClickEncoding(kind="impulse")  # what the 2026 profile feeds a model's click channels


def read_scribbles(path: Path, *, size_xyz: tuple[int, int, int] | None = None) -> Clicks:
    """Scribbles from a JSON file in either form; InputError naming the file for anything malformed."""
    return read_clicks(path, size_xyz=size_xyz, limit=MAX_SCRIBBLE_POINTS, noun=NOUN)


def parse_scribbles(value: object, *, source: str, size_xyz: tuple[int, int, int] | None = None) -> Clicks:
    """Scribbles from a decoded JSON value; InputError naming `source`."""
    return parse_clicks(value, source=source, size_xyz=size_xyz, limit=MAX_SCRIBBLE_POINTS, noun=NOUN)


def scribble_channels(scribbles: Clicks, shape_zyx: tuple[int, int, int]) -> tuple[np.ndarray, np.ndarray]:
    """(tumour, background) float32 channels on a (z, y, x) grid: 1.0 at every scribble voxel, 0 elsewhere.

    As the organisers' baseline builds them (their Gaussian with sigma 0 leaves the impulses as they are);
    points outside the grid are dropped, as theirs are.
    """
    return click_channels(scribbles, shape_zyx, SCRIBBLE_ENCODING)
