"""nnU-Net's DefaultPreprocessor on torch tensors: transpose, crop to the non-zero box, normalise, resample.

Everything but the optional resampling and the hole filling for masked z-scoring runs on the tensor's device.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from scipy.ndimage import binary_fill_holes

from algorithm.nnunet.plans import ChannelNorm, Plan
from algorithm.nnunet.resampling import new_shape_for_spacing, resample_to_shape

EPS = 1e-8


@dataclass(frozen=True)
class Geometry3:
    """Where the network input came from, to undo it: shapes are (z, y, x) after transpose_forward."""

    shape_before_crop: tuple[int, int, int]
    bbox: tuple[tuple[int, int], tuple[int, int], tuple[int, int]]  # half-open [start, end) per axis
    shape_after_crop: tuple[int, int, int]
    spacing: tuple[float, float, float]  # the study's, transposed
    shape_resampled: tuple[int, int, int]

    @property
    def resampled(self) -> bool:
        return self.shape_resampled != self.shape_after_crop


def nonzero_bbox(data: torch.Tensor) -> tuple[tuple[int, int], ...]:
    """Half-open bounding box of voxels non-zero in any channel; the whole volume when there are none.

    nnU-Net fills holes in the mask first, which never changes its bounding box, so the box is computed here
    from axis projections on the device.
    """
    nonzero = (data != 0).any(dim=0)
    box = []
    for axis in range(3):
        other = tuple(a for a in range(3) if a != axis)
        hits = torch.nonzero(nonzero.any(dim=other)).flatten()
        if hits.numel() == 0:
            return tuple((0, n) for n in nonzero.shape)
        box.append((int(hits[0]), int(hits[-1]) + 1))
    return tuple(box)


def _filled_nonzero_mask(data: torch.Tensor) -> torch.Tensor:
    mask = (data != 0).any(dim=0).cpu().numpy()
    return torch.from_numpy(binary_fill_holes(mask)).to(data.device)


def normalize_channel(image: torch.Tensor, norm: ChannelNorm, mask: torch.Tensor | None) -> torch.Tensor:
    """One channel, float32, as nnU-Net's normalisation classes do it (masked z-score only inside `mask`)."""
    if norm.scheme == "CTNormalization":
        return (image.clamp(norm.lower, norm.upper) - norm.mean) / max(norm.std, EPS)
    if norm.scheme == "ZScoreNormalization":
        if norm.use_mask and mask is not None:
            inside = image[mask]
            var, mean = torch.var_mean(inside, correction=0)
            out = image.clone()
            out[mask] = (inside - mean) / torch.clamp(var.sqrt(), min=EPS)
            return out
        var, mean = torch.var_mean(image, correction=0)
        return (image - mean) / torch.clamp(var.sqrt(), min=EPS)
    if norm.scheme == "RescaleTo01Normalization":
        shifted = image - image.min()
        return shifted / torch.clamp(shifted.max(), min=EPS)
    return image  # NoNormalization


def preprocess(data: torch.Tensor, spacing_zyx: tuple[float, float, float], plan: Plan,
               bbox: tuple[tuple[int, int], ...] | None = None) -> tuple[torch.Tensor, Geometry3]:
    """(c, z, y, x) float32 channels in network order -> the network's input at the plan's spacing.

    `bbox` (after transpose) replaces the channels' own non-zero box: a subset of a study's channels
    preprocessed apart (algorithm.closed_loop keeps CT and PET) is cropped to the whole study's box.
    """
    data = data.permute(0, *[a + 1 for a in plan.transpose_forward])
    spacing = tuple(float(spacing_zyx[a]) for a in plan.transpose_forward)
    shape_before = tuple(int(s) for s in data.shape[1:])
    bbox = nonzero_bbox(data) if bbox is None else bbox
    data = data[(slice(None), *[slice(a, b) for a, b in bbox])]
    shape_after = tuple(int(s) for s in data.shape[1:])
    mask = _filled_nonzero_mask(data) if any(c.use_mask and c.scheme == "ZScoreNormalization"
                                             for c in plan.channels) else None
    # Normalisation comes before resampling, as in nnU-Net (the non-zero mask must fit the image).
    data = torch.stack([normalize_channel(data[c], norm, mask) for c, norm in enumerate(plan.channels)])
    new_shape = new_shape_for_spacing(shape_after, spacing, plan.spacing)
    if new_shape != shape_after:
        r = plan.data_resampling
        resampled = resample_to_shape(data.cpu().numpy(), new_shape, current_spacing=spacing,
                                      new_spacing=plan.spacing, order=r.order, order_z=r.order_z,
                                      force_separate_z=r.force_separate_z)
        data = torch.from_numpy(resampled).to(data.device)
    geometry = Geometry3(shape_before_crop=shape_before, bbox=bbox, shape_after_crop=shape_after, spacing=spacing,
                         shape_resampled=tuple(new_shape))
    return data.contiguous(), geometry


def resample_logits_back(logits: torch.Tensor, geometry: Geometry3, plan: Plan) -> torch.Tensor:
    """Logits at the plan's spacing -> the cropped study grid (nnU-Net resamples logits, then applies softmax)."""
    if not geometry.resampled:
        return logits
    r = plan.probability_resampling
    host = logits.cpu().numpy()
    # Output in the logits' own dtype (float16), as nnU-Net's resampling returns.
    back = resample_to_shape(host, geometry.shape_after_crop, current_spacing=plan.spacing,
                             new_spacing=geometry.spacing, order=r.order, order_z=r.order_z,
                             force_separate_z=r.force_separate_z, out_dtype=host.dtype)
    return torch.from_numpy(back).to(logits.device)


def pad_to_patch(data: torch.Tensor, patch: tuple[int, int, int]) -> tuple[torch.Tensor, tuple[slice, ...]]:
    """Zero-pad axes shorter than the patch, content centred (extra voxel above), like acvl's pad_nd_image."""
    shape = data.shape[1:]
    if all(s >= p for s, p in zip(shape, patch)):
        return data, tuple(slice(0, s) for s in shape)
    below = [max(p - s, 0) // 2 for s, p in zip(shape, patch)]
    above = [max(p - s, 0) - b for s, p, b in zip(shape, patch, below)]
    # torch pads the last axis first.
    pad = [v for axis in reversed(range(3)) for v in (below[axis], above[axis])]
    padded = torch.nn.functional.pad(data, pad, mode="constant", value=0.0)
    return padded, tuple(slice(b, b + s) for b, s in zip(below, shape))


def uncrop(values: torch.Tensor, geometry: Geometry3, fill: float) -> torch.Tensor:
    """Place a cropped (z, y, x) result back into the transposed full grid, `fill` outside the box."""
    full = torch.full(geometry.shape_before_crop, fill, dtype=values.dtype, device=values.device)
    full[tuple(slice(a, b) for a, b in geometry.bbox)] = values
    return full


def to_numpy_grid(values: torch.Tensor, plan: Plan) -> np.ndarray:
    """Undo transpose_forward and bring a (z, y, x) result to the host."""
    return values.permute(*plan.transpose_backward).contiguous().cpu().numpy()
