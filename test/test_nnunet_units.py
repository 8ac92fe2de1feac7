"""Pieces of the nnU-Net engine against nnunetv2's and dynamic_network_architectures' own functions."""
from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from algorithm.nnunet.network import build_network
from algorithm.nnunet.plans import ChannelNorm
from algorithm.nnunet.preprocessing import nonzero_bbox, normalize_channel, pad_to_patch
from algorithm.nnunet.resampling import new_shape_for_spacing, resample_to_shape
from algorithm.nnunet.sliding_window import compute_steps, gaussian_importance, mirror_passes
from nnunet_helpers import make_dataset_json, make_plans, plain_architecture, require_nnunetv2, resenc_architecture

require_nnunetv2()
torch.set_num_threads(2)


def test_tile_steps_match_nnunet_on_many_sizes():
    from nnunetv2.inference.sliding_window_prediction import compute_steps_for_sliding_window

    rng = np.random.default_rng(0)
    for _ in range(300):
        tile = tuple(int(v) for v in rng.integers(4, 64, size=3))
        image = tuple(int(t + rng.integers(0, 200)) for t in tile)
        step = float(rng.choice([0.25, 0.5, 0.7, 1.0]))
        assert compute_steps(image, tile, step) == compute_steps_for_sliding_window(image, tile, step)


@pytest.mark.parametrize("tile", [(24, 32, 32), (112, 160, 128), (5, 7, 9)])
def test_gaussian_is_nnunets_float16_map(tile):
    from nnunetv2.inference.sliding_window_prediction import compute_gaussian

    ref = compute_gaussian(tile, sigma_scale=1.0 / 8, value_scaling_factor=10, dtype=torch.float16,
                           device=torch.device("cpu"))
    ours = gaussian_importance(tile)
    assert ours.dtype == np.float16
    assert np.array_equal(ours, ref.numpy())
    assert ours.min() > 0


def test_mirror_passes_are_nnunets_combinations():
    for axes in [(), (0,), (1, 2), (0, 1, 2)]:
        expected = [c for i in range(len(axes)) for c in itertools.combinations(axes, i + 1)]
        assert mirror_passes(axes) == [()] + expected


def test_padding_matches_acvl_pad_nd_image():
    from acvl_utils.cropping_and_padding.padding import pad_nd_image

    rng = np.random.default_rng(1)
    for _ in range(30):
        shape = tuple(int(v) for v in rng.integers(3, 20, size=3))
        patch = tuple(int(v) for v in rng.integers(3, 20, size=3))
        data = torch.from_numpy(rng.normal(size=(2, *shape)).astype(np.float32))
        ref, ref_slicer = pad_nd_image(data, patch, "constant", {"value": 0}, True, None)
        ours, unpad = pad_to_patch(data, patch)
        assert torch.equal(ours, ref)
        assert torch.equal(ours[(slice(None), *unpad)], data)


def test_nonzero_bbox_matches_nnunet_crop():
    from nnunetv2.preprocessing.cropping.cropping import crop_to_nonzero

    rng = np.random.default_rng(2)
    for _ in range(30):
        data = np.zeros((2, 12, 14, 10), dtype=np.float32)
        lo = rng.integers(0, 6, size=3)
        hi = lo + rng.integers(1, 6, size=3)
        data[int(rng.integers(0, 2)), lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]] = rng.normal(size=tuple(hi - lo))
        _, _, bbox = crop_to_nonzero(data.copy())
        assert [list(b) for b in nonzero_bbox(torch.from_numpy(data))] == [list(map(int, b)) for b in bbox]
    assert nonzero_bbox(torch.zeros(1, 3, 4, 5)) == ((0, 3), (0, 4), (0, 5))


def test_normalization_matches_nnunet_schemes():
    from nnunetv2.preprocessing.normalization.default_normalization_schemes import (
        CTNormalization,
        RescaleTo01Normalization,
        ZScoreNormalization,
    )

    rng = np.random.default_rng(3)
    image = (rng.normal(size=(10, 12, 14)) * 300).astype(np.float32)
    props = {"mean": 20.0, "std": 250.0, "percentile_00_5": -850.0, "percentile_99_5": 900.0}
    cases = [
        (CTNormalization(False, props), ChannelNorm("CTNormalization", False, mean=20.0, std=250.0, lower=-850.0,
                                                    upper=900.0)),
        (ZScoreNormalization(False, {}), ChannelNorm("ZScoreNormalization", False)),
        (RescaleTo01Normalization(False, {}), ChannelNorm("RescaleTo01Normalization", False)),
    ]
    for ref, norm in cases:
        expected = ref.run(image.copy())
        ours = normalize_channel(torch.from_numpy(image.copy()), norm, None).numpy()
        np.testing.assert_allclose(ours, expected, rtol=1e-5, atol=1e-5)
    mask = np.zeros(image.shape, dtype=bool)
    mask[2:8, 3:9, 4:10] = True
    expected = ZScoreNormalization(True, {}).run(image.copy(), np.where(mask, 0, -1))
    ours = normalize_channel(torch.from_numpy(image.copy()), ChannelNorm("ZScoreNormalization", True),
                             torch.from_numpy(mask)).numpy()
    np.testing.assert_allclose(ours, expected, rtol=1e-5, atol=1e-5)


def test_resampling_matches_nnunet_on_random_grids():
    from nnunetv2.preprocessing.resampling.default_resampling import compute_new_shape, resample_data_or_seg_to_shape

    rng = np.random.default_rng(4)
    for _ in range(12):
        shape = tuple(int(v) for v in rng.integers(6, 18, size=3))
        old = tuple(float(v) for v in rng.uniform(0.5, 5.0, size=3))
        new = tuple(float(v) for v in rng.uniform(0.5, 5.0, size=3))
        target = new_shape_for_spacing(shape, old, new)
        assert tuple(compute_new_shape(shape, old, new)) == target
        data = rng.normal(size=(2, *shape)).astype(np.float32)
        for order, force in [(3, None), (1, None), (1, True), (3, False)]:
            expected = resample_data_or_seg_to_shape(data, target, old, new, False, order, 0, force)
            ours = resample_to_shape(data, target, current_spacing=old, new_spacing=new, order=order, order_z=0,
                                     force_separate_z=force)
            np.testing.assert_allclose(ours, expected, rtol=0, atol=1e-6)


NETWORK_VARIANTS = {
    "plain": plain_architecture(),
    "plain_dropout_nonlin_first": plain_architecture(),
    "resenc": resenc_architecture(),
    "resenc_bottleneck": resenc_architecture(features=(16, 16, 32)),
}
NETWORK_VARIANTS["plain_dropout_nonlin_first"]["arch_kwargs"].update(
    dropout_op="torch.nn.Dropout3d", dropout_op_kwargs={"p": 0.2}, nonlin_first=True)
NETWORK_VARIANTS["resenc_bottleneck"]["arch_kwargs"].update(
    block="dynamic_network_architectures.building_blocks.residual.BottleneckD", bottleneck_channels=[4, 4, 8])
NETWORK_VARIANTS["resenc_bottleneck"]["_kw_requires_import"].append("block")


@pytest.mark.parametrize("variant", sorted(NETWORK_VARIANTS))
def test_network_state_dict_and_forward_match_dynamic_network_architectures(variant):
    from nnunet_helpers import build_reference_network

    arch = NETWORK_VARIANTS[variant]
    plans = make_plans(arch, patch_size=(16, 16, 16), spacing=[3.0, 2.0, 2.0])
    dataset = make_dataset_json()
    torch.manual_seed(0)
    ref = build_reference_network(plans, dataset).eval()
    ours = build_network(arch["network_class_name"], arch["arch_kwargs"], input_channels=2, num_classes=2).eval()
    ref_state = ref.state_dict()
    assert list(ours.state_dict()) == list(ref_state)  # same keys, deep-supervision heads and aliases included
    ours.load_state_dict(ref_state, strict=True)
    x = torch.randn(2, 2, 16, 16, 16)
    ref.decoder.deep_supervision = False
    with torch.no_grad():
        torch.testing.assert_close(ours(x), ref(x), rtol=1e-5, atol=1e-5)


class _ShrinkingMemoryNetwork(torch.nn.Module):
    """A 1x1x1 convolution that runs out of memory on any batch larger than `max_batch`."""

    def __init__(self, max_batch: int):
        super().__init__()
        torch.manual_seed(3)
        self.conv = torch.nn.Conv3d(2, 2, 1)
        self.max_batch = max_batch
        self.calls: list[int] = []

    def forward(self, x):
        self.calls.append(x.shape[0])
        if x.shape[0] > self.max_batch:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return self.conv(x)


@pytest.mark.parametrize("max_batch", [1, 2])
def test_out_of_memory_halves_the_tile_batch_and_gives_the_same_logits(max_batch):
    from algorithm.nnunet.sliding_window import SlidingWindow, WindowRun

    data = torch.from_numpy(np.random.default_rng(0).normal(size=(2, 20, 24, 28)).astype(np.float32))
    kwargs = dict(patch_size=(8, 8, 8), step_size=0.5, device=torch.device("cpu"), autocast=False)
    reference_run, run = WindowRun(), WindowRun()
    network = _ShrinkingMemoryNetwork(max_batch)
    with torch.no_grad():
        expected = SlidingWindow(tile_batch=1, **kwargs).predict_logits(network, data, [(), (0,)], reference_run,
                                                                          num_classes=2)
        got = SlidingWindow(tile_batch=4, **kwargs).predict_logits(network, data, [(), (0,)], run, num_classes=2)
    # Batches of other sizes may round a float32 differently; the sums are float16 (one ulp near 1 is 1e-3).
    assert torch.allclose(got.float(), expected.float(), rtol=0, atol=4e-3)
    assert run.tile_batch == max_batch and run.tiles == reference_run.tiles
    assert run.events and "out of memory" in run.events[0]
    assert run.forward_passes == reference_run.forward_passes == run.tiles * 2
    # Failing on every batch size is not absorbed: the error reaches the caller.
    with pytest.raises(torch.OutOfMemoryError), torch.no_grad():
        SlidingWindow(tile_batch=2, **kwargs).predict_logits(_ShrinkingMemoryNetwork(0), data, [()], WindowRun(),
                                                             num_classes=2)


def test_sums_that_do_not_fit_on_the_device_are_kept_on_the_host(monkeypatch):
    """The sums' own allocation failing on the device moves them to the host from the start: same logits."""
    from algorithm.nnunet import sliding_window
    from algorithm.nnunet.sliding_window import SlidingWindow, WindowRun

    real_zero_sums = sliding_window._zero_sums

    def zero_sums(num_classes, shape, device):
        if device.type != "cpu":
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")
        return real_zero_sums(num_classes, shape, device)

    monkeypatch.setattr(sliding_window, "_zero_sums", zero_sums)
    data = torch.from_numpy(np.random.default_rng(5).normal(size=(2, 12, 14, 16)).astype(np.float32))
    network = _ShrinkingMemoryNetwork(8)
    kwargs = dict(patch_size=(8, 8, 8), step_size=0.5, tile_batch=2, autocast=False)
    run, reference_run = WindowRun(), WindowRun()
    with torch.no_grad():
        # A device that is not the CPU; the fake network runs on the CPU whatever the window's device.
        got = SlidingWindow(device=torch.device("cuda"), **kwargs).predict_logits(network, data, [()], run,
                                                                                  num_classes=2)
        expected = SlidingWindow(device=torch.device("cpu"), **kwargs).predict_logits(network, data, [()],
                                                                                      reference_run, num_classes=2)
    assert got.device.type == "cpu" and run.accumulated_on == "cpu"
    assert run.events == ["cuda out of memory: accumulating on the host"]
    assert torch.equal(got, expected)
