"""petct.boxes.bounding_box against np.nonzero's extent, on random masks of one to four axes."""
from __future__ import annotations

import numpy as np
import pytest

from petct.boxes import bounding_box


def _reference(mask: np.ndarray) -> tuple[slice, ...] | None:
    where = np.nonzero(mask)
    if where[0].size == 0:
        return None
    return tuple(slice(int(axis.min()), int(axis.max()) + 1) for axis in where)


@pytest.mark.parametrize("dtype", [np.bool_, np.uint8, np.uint16])
def test_bounding_box_is_the_extent_of_the_nonzero_voxels(dtype):
    rng = np.random.default_rng(5)
    for _ in range(400):
        shape = tuple(int(n) for n in rng.integers(1, 9, size=rng.integers(1, 5)))
        mask = (rng.random(shape) < rng.choice([0.0, 0.005, 0.05, 0.5])).astype(dtype)
        if dtype is np.uint16:
            mask *= rng.integers(1, 1000, size=shape).astype(dtype)
        assert bounding_box(mask) == _reference(mask), (shape, mask.nonzero())


def test_an_empty_or_zero_sized_mask_has_no_box():
    assert bounding_box(np.zeros((3, 4, 5), np.uint8)) is None
    assert bounding_box(np.zeros((0, 4, 5), bool)) is None
    assert bounding_box(np.zeros((3, 0), bool)) is None
