"""Small nnU-Net v2 results folders in nnU-Net's exact on-disk format, built with nnunetv2's own classes."""
from __future__ import annotations

import copy
import importlib.util
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

CONFIGURATION = "3d_fullres"
IMPORT_KEYS = ["conv_op", "norm_op", "dropout_op", "nonlin"]


def require_nnunetv2() -> None:
    """nnunetv2 is the reference of the nnU-Net tests: missing, it fails them under CI (CI=true), else skips them."""
    if importlib.util.find_spec("nnunetv2") is not None:
        return
    if os.environ.get("CI") == "true":
        pytest.fail("nnunetv2 is missing, and CI runs the nnU-Net tests: pip install -e '.[dev]'", pytrace=False)
    pytest.skip("needs nnunetv2 (pip install -e '.[dev]')", allow_module_level=True)


def _common_arch(features, strides, kernels) -> dict:
    return {
        "n_stages": len(features),
        "features_per_stage": list(features),
        "conv_op": "torch.nn.modules.conv.Conv3d",
        "kernel_sizes": [list(k) for k in kernels],
        "strides": [list(s) for s in strides],
        "n_conv_per_stage_decoder": [1] * (len(features) - 1),
        "conv_bias": True,
        "norm_op": "torch.nn.modules.instancenorm.InstanceNorm3d",
        "norm_op_kwargs": {"eps": 1e-05, "affine": True},
        "dropout_op": None,
        "dropout_op_kwargs": None,
        "nonlin": "torch.nn.LeakyReLU",
        "nonlin_kwargs": {"inplace": True},
    }


def plain_architecture(features=(8, 16, 32), strides=((1, 1, 1), (2, 2, 2), (2, 2, 2)),
                       kernels=((3, 3, 3),) * 3, n_conv=2) -> dict:
    kwargs = _common_arch(features, strides, kernels)
    kwargs["n_conv_per_stage"] = [n_conv] * len(features)
    return {"network_class_name": "dynamic_network_architectures.architectures.unet.PlainConvUNet",
            "arch_kwargs": kwargs, "_kw_requires_import": list(IMPORT_KEYS)}


def resenc_architecture(features=(8, 16, 32), strides=((1, 1, 1), (2, 2, 2), (1, 2, 2)),
                        kernels=((3, 3, 3),) * 3, n_blocks=(1, 2, 2)) -> dict:
    kwargs = _common_arch(features, strides, kernels)
    kwargs["n_blocks_per_stage"] = list(n_blocks)
    return {"network_class_name": "dynamic_network_architectures.architectures.unet.ResidualEncoderUNet",
            "arch_kwargs": kwargs, "_kw_requires_import": list(IMPORT_KEYS)}


def make_plans(architecture: dict, *, patch_size, spacing,
               normalization=("CTNormalization", "ZScoreNormalization")) -> dict:
    """plans.json as nnUNetv2_plan_experiment writes it (the fields inference reads, and the usual others)."""
    resampling = "resample_data_or_seg_to_shape"
    return {
        "dataset_name": "Dataset999_KitTest",
        "plans_name": "nnUNetPlans",
        "original_median_spacing_after_transp": list(spacing),
        "original_median_shape_after_transp": [40, 56, 56],
        "image_reader_writer": "SimpleITKIO",
        "transpose_forward": [0, 1, 2],
        "transpose_backward": [0, 1, 2],
        "configurations": {
            CONFIGURATION: {
                "data_identifier": "nnUNetPlans_3d_fullres",
                "preprocessor_name": "DefaultPreprocessor",
                "batch_size": 2,
                "patch_size": list(patch_size),
                "median_image_size_in_voxels": [40, 56, 56],
                "spacing": list(spacing),
                "normalization_schemes": list(normalization),
                "use_mask_for_norm": [False] * len(normalization),
                "resampling_fn_data": resampling,
                "resampling_fn_seg": resampling,
                "resampling_fn_data_kwargs": {"is_seg": False, "order": 3, "order_z": 0, "force_separate_z": None},
                "resampling_fn_seg_kwargs": {"is_seg": True, "order": 1, "order_z": 0, "force_separate_z": None},
                "resampling_fn_probabilities": resampling,
                "resampling_fn_probabilities_kwargs": {"is_seg": False, "order": 1, "order_z": 0,
                                                       "force_separate_z": None},
                "architecture": copy.deepcopy(architecture),
                "batch_dice": False,
            },
        },
        "experiment_planner_used": "ExperimentPlanner",
        "label_manager": "LabelManager",
        "foreground_intensity_properties_per_channel": {
            "0": {"max": 1500.0, "mean": 20.0, "median": 35.0, "min": -1000.0, "percentile_00_5": -850.0,
                  "percentile_99_5": 900.0, "std": 250.0},
            "1": {"max": 60.0, "mean": 3.0, "median": 2.0, "min": 0.0, "percentile_00_5": 0.2,
                  "percentile_99_5": 25.0, "std": 4.0},
        },
    }


def make_dataset_json(channel_names=("CT", "PET")) -> dict:
    return {"channel_names": {str(i): n for i, n in enumerate(channel_names)},
            "labels": {"background": 0, "tumor": 1}, "numTraining": 10, "file_ending": ".nii.gz"}


def build_reference_network(plans: dict, dataset: dict, *, deep_supervision: bool = True) -> torch.nn.Module:
    """The network nnU-Net's trainer builds for these plans (dynamic_network_architectures classes)."""
    from nnunetv2.utilities.get_network_from_plans import get_network_from_plans

    arch = plans["configurations"][CONFIGURATION]["architecture"]
    return get_network_from_plans(arch["network_class_name"], arch["arch_kwargs"], arch["_kw_requires_import"],
                                  len(dataset["channel_names"]), len(dataset["labels"]), allow_init=True,
                                  deep_supervision=deep_supervision)


def _preprocessed(plans: dict, dataset: dict, study) -> torch.Tensor:
    """nnU-Net's own preprocessing of (pet, ct, spacing_zyx), channels in dataset.json order, as a batch of one."""
    from nnunetv2.preprocessing.preprocessors.default_preprocessor import DefaultPreprocessor
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    pet, ct, spacing = study
    images = {"pet": pet, "ct": ct}
    roles = ["pet" if "PET" in n.upper() else "ct" for n in dataset["channel_names"].values()]
    manager = PlansManager(plans)
    data, _, _ = DefaultPreprocessor(verbose=False).run_case_npy(
        np.stack([images[r] for r in roles]).astype(np.float32), None, {"spacing": list(spacing)}, manager,
        manager.get_configuration(CONFIGURATION), dataset)
    patch = plans["configurations"][CONFIGURATION]["patch_size"]
    # One tile's worth, zero-padded where the study is smaller: the network sees tiles, and its strides need
    # sizes that divide.
    data = data[:, :patch[0], :patch[1], :patch[2]]
    data = np.pad(data, [(0, 0)] + [(0, p - s) for p, s in zip(patch, data.shape[1:])])
    return torch.from_numpy(data.astype(np.float32))[None]


def _spread_outputs(network: torch.nn.Module, *, gain: float, lesion_fraction: float,
                    calibration: torch.Tensor | None) -> None:
    """Give the final head a background logit of exactly 0 and a lesion logit of moderate size.

    Random weights give near-constant outputs, so the lesion logit is scaled by `gain` and shifted until about
    `lesion_fraction` of the calibration input comes out as lesion. Background fixed at 0 keeps both logits
    small where p is near 0.5: nnU-Net accumulates tiles in float16, and with two large logits its rounding
    would dominate the 1e-3 comparison.
    """
    head = network.decoder.seg_layers[-1]
    with torch.no_grad():
        head.weight[0].zero_()
        head.weight[1].mul_(gain)
        head.bias.zero_()
        if calibration is not None:
            was_training = network.training
            network.eval()
            out = network(calibration)
            out = out[0] if isinstance(out, (list, tuple)) else out
            network.train(was_training)
            head.bias[1] = -torch.quantile(out[0, 1].flatten().float(), 1.0 - lesion_fraction)


def checkpoint_dict(network: torch.nn.Module, *, plans: dict, dataset: dict, fold: int,
                    mirror_axes=(0, 1, 2), trainer_name: str = "nnUNetTrainer") -> dict:
    """What nnUNetTrainer.save_checkpoint writes, including numpy scalars in the log and a torch.device."""
    optimizer = torch.optim.SGD(network.parameters(), lr=0.01, momentum=0.99, nesterov=True)
    return {
        "network_weights": network.state_dict(),
        "optimizer_state": optimizer.state_dict(),
        "grad_scaler_state": None,
        "logging": {"mean_fg_dice": [np.float64(0.5)], "ema_fg_dice": [np.float64(0.45)],
                    "dice_per_class_or_region": [[np.float64(0.5)]], "train_losses": [np.float32(-0.3)],
                    "val_losses": [-0.2], "lrs": [0.01], "epoch_start_timestamps": [1.0],
                    "epoch_end_timestamps": [2.0]},
        "_best_ema": np.float64(0.45),
        "current_epoch": 1000,
        "init_args": {"plans": plans, "configuration": CONFIGURATION, "fold": fold, "dataset_json": dataset,
                      "device": torch.device("cuda")},
        "trainer_name": trainer_name,
        "inference_allowed_mirroring_axes": tuple(mirror_axes),
    }


def write_results_folder(folder: Path, *, plans: dict, dataset: dict, folds=(0, 1), seed: int = 0,
                         gain: float = 0.3, lesion_fraction: float = 0.4, calibration_study=None,
                         mirror_axes=(0, 1, 2), checkpoint_name: str = "checkpoint_final.pth") -> Path:
    """`folder`/plans.json, dataset.json, fold_K/checkpoint_final.pth with random weights per fold.

    With `calibration_study` (pet, ct, spacing_zyx) each fold's lesion bias is set so that about
    `lesion_fraction` of that study is segmented as lesion.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "plans.json").write_text(json.dumps(plans, indent=2))
    (folder / "dataset.json").write_text(json.dumps(dataset, indent=2))
    calibration = _preprocessed(plans, dataset, calibration_study) if calibration_study is not None else None
    for fold in folds:
        torch.manual_seed(seed * 100 + fold)
        network = build_reference_network(plans, dataset)
        _spread_outputs(network, gain=gain, lesion_fraction=lesion_fraction, calibration=calibration)
        (folder / f"fold_{fold}").mkdir(exist_ok=True)
        torch.save(checkpoint_dict(network, plans=plans, dataset=dataset, fold=fold, mirror_axes=mirror_axes),
                   folder / f"fold_{fold}" / checkpoint_name)
    return folder


def write_scribble_model(folder: Path, *, spacing, patch_size) -> Path:
    """A random-weight 4-channel model laid out as the organisers' Dataset998_AutoPETV: CT, PET and the tumour and
    background scribble channels, these z-score normalised with the statistics their plans give them."""
    plans = make_plans(plain_architecture(), patch_size=patch_size, spacing=list(spacing),
                       normalization=("CTNormalization", "ZScoreNormalization", "ZScoreNormalization",
                                      "ZScoreNormalization"))
    for channel in ("2", "3"):
        plans["foreground_intensity_properties_per_channel"][channel] = {
            "max": 1.0, "mean": 0.01, "median": 0.0, "min": 0.0, "percentile_00_5": 0.0, "percentile_99_5": 1.0,
            "std": 0.05}
    return write_results_folder(folder, plans=plans, folds=(0,), gain=3.0,
                                dataset=make_dataset_json(("CT", "PET", "FG", "BG")))


def study_arrays(seed: int, size_xyz=(56, 56, 40)) -> tuple[np.ndarray, np.ndarray, tuple[float, float, float]]:
    """A phantom study's SUV and CTres as (z, y, x) float32 arrays and its (z, y, x) spacing."""
    import SimpleITK as sitk

    from petct.phantom import make_study

    study = make_study(seed, size=tuple(size_xyz), n_lesions=4)
    suv = sitk.GetArrayFromImage(study.suv).astype(np.float32)
    ct = sitk.GetArrayFromImage(study.ctres).astype(np.float32)
    return suv, ct, tuple(float(s) for s in reversed(study.suv.GetSpacing()))


def reference_prediction(folder: Path, *, pet: np.ndarray, ct: np.ndarray, spacing_zyx, roles=("ct", "pet"),
                         folds=(0, 1), use_mirroring: bool = True, step_size: float = 0.5):
    """nnU-Net's own mask and lesion probabilities for one study (CPU)."""
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

    predictor = nnUNetPredictor(tile_step_size=step_size, use_gaussian=True, use_mirroring=use_mirroring,
                                perform_everything_on_device=False, device=torch.device("cpu"), verbose=False,
                                verbose_preprocessing=False, allow_tqdm=False)
    predictor.initialize_from_trained_model_folder(str(folder), use_folds=tuple(folds),
                                                   checkpoint_name="checkpoint_final.pth")
    images = {"pet": pet, "ct": ct}
    data = np.stack([images[r] for r in roles]).astype(np.float32)
    seg, probs = predictor.predict_single_npy_array(data, {"spacing": list(spacing_zyx)}, None, None, True)
    return seg.astype(np.uint8), probs[1].astype(np.float32)


def dice(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.astype(bool), b.astype(bool)
    total = a.sum() + b.sum()
    return 1.0 if total == 0 else 2.0 * float((a & b).sum()) / float(total)


def small_model_case(root: Path) -> dict:
    """Phantom study 21 (24x24x20) and a 2-fold random-weight results folder at root/model calibrated on it."""
    import SimpleITK as sitk

    from petct.phantom import make_study

    study = make_study(21, size=(24, 24, 20), n_lesions=3)
    suv = sitk.GetArrayFromImage(study.suv).astype(np.float32)
    ct = sitk.GetArrayFromImage(study.ctres).astype(np.float32)
    spacing_zyx = tuple(float(s) for s in reversed(study.suv.GetSpacing()))
    plans = make_plans(plain_architecture(), patch_size=(16, 16, 16), spacing=list(spacing_zyx))
    write_results_folder(root / "model" / "Dataset999_KitTest" / "nnUNetTrainer__nnUNetPlans__3d_fullres",
                         plans=plans, dataset=make_dataset_json(), folds=(0, 1), calibration_study=(suv, ct, spacing_zyx))
    return {"study": study, "model": root / "model", "suv": suv, "ct": ct, "spacing": spacing_zyx}
