"""Sliding-window inference as nnU-Net does it, batched and kept on one device.

Tile positions (compute_steps), the Gaussian importance map and the mirroring passes follow nnU-Net 2.x;
the differences are for speed: several tiles per forward pass, mirror passes summed in float32 (on CUDA
nnU-Net sums them in float16), and CUDA out-of-memory handled by smaller tile batches, then by
accumulating on the host (algorithm/nnunet/oom.py). For a compiled network every batch is padded to the
full tile batch, so that the compiler meets one shape.
"""
from __future__ import annotations

import itertools
import time
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np
import torch
from scipy.ndimage import gaussian_filter

from algorithm.nnunet.oom import attempt, release_cached_memory, retry_out_of_memory


def compute_steps(image_size, tile_size, step_size: float) -> list[list[int]]:
    """Tile starts per axis, first and last tile at the borders (nnU-Net's compute_steps_for_sliding_window)."""
    if not 0 < step_size <= 1:
        raise ValueError("step_size must be in (0, 1]")
    steps = []
    for size, tile in zip(image_size, tile_size):
        if size < tile:
            raise ValueError("image must be at least as large as the tile")
        n = int(np.ceil((size - tile) / (tile * step_size))) + 1
        last = size - tile
        stride = last / (n - 1) if n > 1 else 0.0
        steps.append([int(np.round(stride * i)) for i in range(n)])
    return steps


def tile_slices(image_size, tile_size, step_size: float) -> list[tuple[slice, slice, slice]]:
    """(z, y, x) slices of every tile, in nnU-Net's order (last axis fastest)."""
    steps = compute_steps(image_size, tile_size, step_size)
    return [tuple(slice(s, s + t) for s, t in zip(start, tile_size)) for start in itertools.product(*steps)]


@lru_cache(maxsize=4)
def gaussian_importance(tile_size: tuple[int, ...], sigma_scale: float = 1.0 / 8) -> np.ndarray:
    """nnU-Net's compute_gaussian, values included: a blurred delta scaled to peak 10, rounded to float16,
    with the zeros that float16 underflow leaves raised to the smallest non-zero value.

    The float16 step matters: far from the centre (the tile corners) the weights underflow, and the clamp then
    gives every tile covering such a voxel the same weight.
    """
    delta = np.zeros(tile_size)
    delta[tuple(t // 2 for t in tile_size)] = 1
    weights = gaussian_filter(delta, [t * sigma_scale for t in tile_size], 0, mode="constant", cval=0)
    weights /= weights.max() / 10
    # torch's float64 -> float16 conversion, not numpy's: they round a few values differently.
    half = torch.from_numpy(weights).to(torch.float16)
    zero = half == 0
    if zero.any():
        half[zero] = half[~zero].min()
    return half.numpy()


def mirror_passes(axes: tuple[int, ...] | None) -> list[tuple[int, ...]]:
    """The flips of one mirroring TTA, identity first, then nnU-Net's combinations (by size, then order)."""
    axes = tuple(axes or ())
    return [()] + [c for k in range(1, len(axes) + 1) for c in itertools.combinations(axes, k)]


@dataclass
class WindowRun:
    """What one sliding-window pass over a volume actually did."""

    tiles: int = 0
    forward_passes: int = 0  # network calls x tiles per call
    tile_batch: int = 0
    accumulated_on: str = ""
    events: list[str] = field(default_factory=list)


class SlidingWindow:
    """Runs one network over all tiles of a (c, z, y, x) volume and adds Gaussian-weighted logits to a sum."""

    def __init__(self, *, patch_size: tuple[int, int, int], step_size: float, device: torch.device,
                 tile_batch: int, autocast: bool, pad_batches: bool = False):
        self.patch_size = tuple(patch_size)
        self.step_size = step_size
        self.device = device
        self.configured_tile_batch = max(1, int(tile_batch))
        self.tile_batch = self.configured_tile_batch  # halved while the device runs out of memory
        self.autocast = autocast
        # A compiled network recompiles for every new batch shape: feed it full batches only.
        self.pad_batches = pad_batches
        self._gaussian: dict[str, torch.Tensor] = {}

    def slices(self, image_size) -> list[tuple[slice, slice, slice]]:
        return tile_slices(image_size, self.patch_size, self.step_size)

    def restore_tile_batch(self) -> None:
        """Back to the configured tile batch: memory short once (a transient peak) need not stay short."""
        self.tile_batch = self.configured_tile_batch

    def shrink_tile_batch(self) -> str | None:
        """Halve the tile batch after running out of memory; None when it is one tile already."""
        if self.tile_batch == 1:
            return None
        self.tile_batch = max(1, self.tile_batch // 2)
        return f"tile batch -> {self.tile_batch}"

    def _forward(self, network: torch.nn.Module, x: torch.Tensor, passes: list[tuple[int, ...]]) -> torch.Tensor:
        """Mirror-averaged logits of a batch of tiles, float32."""
        total = None
        with torch.autocast(self.device.type, dtype=torch.float16, enabled=self.autocast):
            for flips in passes:
                dims = [a + 2 for a in flips]
                xin = torch.flip(x, dims) if dims else x
                out = network(xin)
                out = (torch.flip(out, dims) if dims else out).float()
                total = out if total is None else total.add_(out)
        if len(passes) > 1:
            total /= len(passes)
        return total

    def tile_logits(self, network: torch.nn.Module, data: torch.Tensor, batch: list[tuple[slice, slice, slice]],
                    passes: list[tuple[int, ...]]) -> torch.Tensor:
        """Mirror-averaged float32 logits of the tiles `batch` of `data`, (tiles, classes, z, y, x)."""
        x = torch.stack([data[(slice(None), *s)] for s in batch])
        if self.pad_batches and len(batch) < self.tile_batch:
            x = torch.cat([x, x.new_zeros((self.tile_batch - len(batch), *x.shape[1:]))])
        return self._forward(network, x, passes)[:len(batch)]

    def predict_logits(self, network: torch.nn.Module, data: torch.Tensor, passes: list[tuple[int, ...]],
                       run: WindowRun, *, num_classes: int) -> torch.Tensor:
        """One network's Gaussian-weighted average of tile logits over the whole (c, z, y, x) volume, float16.

        The sums are float16 like nnU-Net's, on purpose: where every covering tile has a weight that underflows
        float16 (the volume's corners), nnU-Net's result is set by that rounding, and matching nnU-Net there
        needs the same arithmetic. They start on the device and move to the host if the device runs out.
        """
        slices = self.slices(data.shape[1:])
        run.tiles = len(slices)
        target = self.device
        sums, error = attempt(lambda: _zero_sums(num_classes, data.shape[1:], target))
        if error is not None:
            if target.type == "cpu":
                raise error
            release_cached_memory(self.device)
            target = torch.device("cpu")
            sums = _zero_sums(num_classes, data.shape[1:], target)
            run.events.append(f"{self.device.type} out of memory: accumulating on the host")
        logits_sum, weight_sum = sums
        i = 0

        def weighted_batch() -> tuple[torch.Tensor, torch.Tensor]:
            pred = self.tile_logits(network, data, slices[i:i + self.tile_batch], passes)
            pred *= self.gaussian(pred.device)
            # Blocking on purpose: an asynchronous copy to the host would be read before it lands.
            return pred.to(target), self.gaussian(target)

        def give_way() -> str | None:
            nonlocal target, logits_sum, weight_sum
            event = self.shrink_tile_batch()
            if event is None and target.type != "cpu":
                target = torch.device("cpu")
                logits_sum, weight_sum = logits_sum.cpu(), weight_sum.cpu()
                release_cached_memory(self.device)
                event = "accumulating on the host"
            return event  # None: one tile per forward pass, sums on the host: nothing left to give up

        while i < len(slices):
            # Nothing of a batch is added before it has all fitted, so a failed batch is simply run again.
            pred, g = retry_out_of_memory(weighted_batch, device=self.device, give_way=give_way, events=run.events)
            # In-place additions into preallocated sums allocate nothing, so they stay outside the retry.
            for k, s in enumerate(slices[i:i + len(pred)]):
                logits_sum[(slice(None), *s)] += pred[k]
                weight_sum[s] += g
            run.forward_passes += len(pred) * len(passes)
            i += len(pred)
        run.tile_batch = self.tile_batch
        run.accumulated_on = target.type
        torch.div(logits_sum, weight_sum, out=logits_sum)
        return logits_sum

    def gaussian(self, device: torch.device) -> torch.Tensor:
        key = str(device)
        if key not in self._gaussian:
            self._gaussian[key] = torch.from_numpy(gaussian_importance(self.patch_size)).to(device)
        return self._gaussian[key]


def _zero_sums(num_classes: int, shape, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """The float16 logit and weight sums of one sliding-window pass, zeroed."""
    return (torch.zeros((num_classes, *shape), dtype=torch.float16, device=device),
            torch.zeros(tuple(shape), dtype=torch.float16, device=device))


def seconds(device: torch.device) -> float:
    """A wall-clock reading that waits for queued device work, so stage timings are honest."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()
