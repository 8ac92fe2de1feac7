"""nnU-Net's default resampling (resample_data_or_seg_to_shape), reproduced with scipy on the CPU.

Only needed when a study's spacing gives a different shape at the plan's spacing; autoPET data is already
at the plan's spacing, so the device path never comes here. Behaviour copied from nnU-Net 2.x:
- anisotropic grids (max/min spacing > 3, of the input or else of the target) resample in-plane slice by
  slice with spline order `order`, then along the low-resolution axis with `order_z` (0 = nearest);
- otherwise one 3D spline of order `order`;
- each in-plane/3D step is skimage.transform.resize(mode="edge", anti_aliasing=False): scipy's zoom with
  grid_mode=True and nearest-edge extension, then clipped to the input's value range.
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage

ANISO_THRESHOLD = 3.0


def new_shape_for_spacing(shape, old_spacing, new_spacing) -> tuple[int, ...]:
    """nnU-Net's compute_new_shape: round(old_spacing / new_spacing * shape) per axis."""
    return tuple(int(round(o / n * s)) for o, n, s in zip(old_spacing, new_spacing, shape))


def _lowres_axes(spacing) -> np.ndarray:
    spacing = np.asarray(spacing, dtype=float)
    return np.where(max(spacing) / spacing == 1)[0]


def separate_z_axis(current_spacing, new_spacing, force_separate_z: bool | None) -> int | None:
    """The axis resampled on its own (nnU-Net's determine_do_sep_z_and_axis), or None."""
    if force_separate_z is not None:
        axes = _lowres_axes(current_spacing) if force_separate_z else None
    elif max(current_spacing) / min(current_spacing) > ANISO_THRESHOLD:
        axes = _lowres_axes(current_spacing)
    elif max(new_spacing) / min(new_spacing) > ANISO_THRESHOLD:
        axes = _lowres_axes(new_spacing)
    else:
        axes = None
    # Two or three equally coarse axes: nnU-Net does not treat that as one anisotropic axis.
    if axes is None or len(axes) != 1:
        return None
    return int(axes[0])


def _resize(image: np.ndarray, shape, order: int) -> np.ndarray:
    """skimage.transform.resize(image, shape, order, mode='edge', anti_aliasing=False) for float64 input."""
    zoom = [n / o for n, o in zip(shape, image.shape)]
    out = ndimage.zoom(image, zoom, order=order, mode="nearest", grid_mode=True)
    if order > 0:
        np.clip(out, image.min(), image.max(), out=out)
    return out


def _resample_axis(volume: np.ndarray, axis: int, size: int, order: int) -> np.ndarray:
    """Resample one axis with align-corners=False coordinates and edge extension (nnU-Net's map_coordinates step)."""
    scale = volume.shape[axis] / size
    matrix = np.ones(3)
    matrix[axis] = scale
    offset = np.zeros(3)
    offset[axis] = 0.5 * scale - 0.5
    out_shape = list(volume.shape)
    out_shape[axis] = size
    return ndimage.affine_transform(volume, matrix, offset=offset, output_shape=tuple(out_shape), order=order,
                                    mode="nearest")


def resample_to_shape(data: np.ndarray, new_shape, *, current_spacing, new_spacing, order: int, order_z: int,
                      force_separate_z: bool | None, out_dtype=np.float32) -> np.ndarray:
    """Resample (c, z, y, x) `data` to `new_shape` like nnU-Net's resample_data_or_seg_to_shape (not for labels)."""
    new_shape = tuple(int(v) for v in new_shape)
    if tuple(data.shape[1:]) == new_shape:
        return data.astype(out_dtype, copy=False)
    axis = separate_z_axis(current_spacing, new_spacing, force_separate_z)
    out = np.empty((data.shape[0], *new_shape), dtype=out_dtype)
    for c in range(data.shape[0]):
        channel = data[c].astype(np.float64, copy=False)
        if axis is None:
            out[c] = _resize(channel, new_shape, order)
            continue
        in_plane = [s for a, s in enumerate(new_shape) if a != axis]
        slices = [_resize(np.take(channel, i, axis=axis), in_plane, order) for i in range(channel.shape[axis])]
        stacked = np.stack(slices, axis=axis)
        if stacked.shape[axis] != new_shape[axis]:
            stacked = _resample_axis(stacked, axis, new_shape[axis], order_z)
        out[c] = stacked
    return out
