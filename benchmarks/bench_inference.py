"""Benchmark: the kit's nnU-Net engine against nnunetv2's nnUNetPredictor on the same model and study.

Builds a random-weight model in nnU-Net's on-disk format (autoPET-shaped PlainConvUNet: 6 stages,
32-320 features, patch 112x160x128; or a small 3-stage one), writes a phantom study, then times
read -> engine.predict -> write, per stage, for 1 fold without mirroring, 1 fold with mirroring and
5 folds with mirroring, and nnU-Net's predictor on the same folder and arrays (when nnunetv2 is installed),
reporting the ratio and the agreement (Dice between masks, largest probability difference).

Needs torch, numpy, SimpleITK (and nnunetv2 for the reference). Examples:
    python benchmarks/bench_inference.py --model small --size tiny --device cpu
    python benchmarks/bench_inference.py --model autoPET --size full --device cuda
"""
from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from algorithm.engine import EngineOptions  # noqa: E402
from algorithm.nnunet import NnUNetEngine  # noqa: E402
from algorithm.nnunet.network import build_network  # noqa: E402
from algorithm.nnunet.plans import read_plan  # noqa: E402
from algorithm.nnunet.preprocessing import preprocess  # noqa: E402
from petct.imageio import image_from_array, read_array, write_image_atomic  # noqa: E402
from petct.layout import CTRES_NAME, SUV_NAME  # noqa: E402
from petct.phantom import SIZES, make_study  # noqa: E402

TFLOP_PER_AUTOPET_PATCH = 1.05
FOLDS = 5
MODELS = {
    # The typical autoPET 3d_fullres plan (../shared/reference/autopet.md).
    "autoPET": dict(features=[32, 64, 128, 256, 320, 320], patch=[112, 160, 128],
                    strides=[[1, 1, 1], [2, 2, 2], [2, 2, 2], [2, 2, 2], [2, 2, 2], [1, 2, 2]]),
    "small": dict(features=[8, 16, 32], patch=[32, 48, 48], strides=[[1, 1, 1], [2, 2, 2], [2, 2, 2]]),
}


def plans_for(model: str, spacing_zyx) -> dict:
    spec = MODELS[model]
    n = len(spec["features"])
    arch = {
        "network_class_name": "dynamic_network_architectures.architectures.unet.PlainConvUNet",
        "arch_kwargs": {
            "n_stages": n, "features_per_stage": spec["features"], "conv_op": "torch.nn.modules.conv.Conv3d",
            "kernel_sizes": [[3, 3, 3]] * n, "strides": spec["strides"], "n_conv_per_stage": [2] * n,
            "n_conv_per_stage_decoder": [2] * (n - 1), "conv_bias": True,
            "norm_op": "torch.nn.modules.instancenorm.InstanceNorm3d", "norm_op_kwargs": {"eps": 1e-05, "affine": True},
            "dropout_op": None, "dropout_op_kwargs": None, "nonlin": "torch.nn.LeakyReLU",
            "nonlin_kwargs": {"inplace": True}},
        "_kw_requires_import": ["conv_op", "norm_op", "dropout_op", "nonlin"],
    }
    resampling = "resample_data_or_seg_to_shape"
    return {
        "dataset_name": "Dataset999_Bench", "plans_name": "nnUNetPlans", "image_reader_writer": "SimpleITKIO",
        "transpose_forward": [0, 1, 2], "transpose_backward": [0, 1, 2],
        "original_median_spacing_after_transp": list(spacing_zyx),
        "original_median_shape_after_transp": [326, 400, 400],
        "configurations": {"3d_fullres": {
            "data_identifier": "nnUNetPlans_3d_fullres", "preprocessor_name": "DefaultPreprocessor",
            "batch_size": 2, "patch_size": spec["patch"], "median_image_size_in_voxels": [326, 400, 400],
            "spacing": list(spacing_zyx), "normalization_schemes": ["CTNormalization", "ZScoreNormalization"],
            "use_mask_for_norm": [False, False],
            "resampling_fn_data": resampling, "resampling_fn_seg": resampling,
            "resampling_fn_probabilities": resampling,
            "resampling_fn_data_kwargs": {"is_seg": False, "order": 3, "order_z": 0, "force_separate_z": None},
            "resampling_fn_seg_kwargs": {"is_seg": True, "order": 1, "order_z": 0, "force_separate_z": None},
            "resampling_fn_probabilities_kwargs": {"is_seg": False, "order": 1, "order_z": 0,
                                                   "force_separate_z": None},
            "architecture": arch, "batch_dice": False}},
        "experiment_planner_used": "ExperimentPlanner", "label_manager": "LabelManager",
        "foreground_intensity_properties_per_channel": {
            "0": {"max": 3000.0, "mean": 40.0, "median": 40.0, "min": -1024.0, "percentile_00_5": -900.0,
                  "percentile_99_5": 1200.0, "std": 300.0},
            "1": {"max": 60.0, "mean": 3.0, "median": 2.0, "min": 0.0, "percentile_00_5": 0.2,
                  "percentile_99_5": 25.0, "std": 4.0}},
    }


def write_model(folder: Path, model: str, spacing_zyx, calibration) -> Path:
    """plans.json, dataset.json and fold_0..4/checkpoint_final.pth with random weights (two classes present)."""
    plans = plans_for(model, spacing_zyx)
    dataset = {"channel_names": {"0": "CT", "1": "PET"}, "labels": {"background": 0, "tumor": 1},
               "numTraining": 10, "file_ending": ".nii.gz"}
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "plans.json").write_text(json.dumps(plans, indent=1))
    (folder / "dataset.json").write_text(json.dumps(dataset, indent=1))
    plan = read_plan(plans, dataset, "3d_fullres", plans_path=folder / "plans.json",
                     dataset_path=folder / "dataset.json")
    pet, ct = calibration
    data, _ = preprocess(torch.from_numpy(np.stack([ct, pet]).astype(np.float32)), spacing_zyx, plan)
    p = plan.patch_size
    # A tile from the middle of the study, zero-padded if the study is smaller than the patch.
    start = [max(0, (s - q) // 2) for s, q in zip(data.shape[1:], p)]
    tile = torch.zeros((1, 2, *p))
    crop = data[:, start[0]:start[0] + p[0], start[1]:start[1] + p[1], start[2]:start[2] + p[2]]
    tile[0, :, :crop.shape[1], :crop.shape[2], :crop.shape[3]] = crop
    for fold in range(FOLDS):
        torch.manual_seed(fold)
        net = build_network(plan.network_class, plan.arch_kwargs, input_channels=2, num_classes=2).eval()
        head = net.decoder.seg_layers[-1]
        with torch.no_grad():
            head.weight[0].zero_()
            head.bias.zero_()
            out = net(tile)[0, 1]
            head.weight[1].div_(out.std() + 1e-6).mul_(2.0)  # lesion logits of a few units
            head.bias[1] = -torch.quantile(net(tile)[0, 1].flatten()[:1_000_000], 0.9)  # ~10% lesion
        (folder / f"fold_{fold}").mkdir(exist_ok=True)
        torch.save({"network_weights": net.state_dict(), "trainer_name": "nnUNetTrainer",
                    "init_args": {"configuration": "3d_fullres", "fold": fold},
                    "inference_allowed_mirroring_axes": (0, 1, 2)},
                   folder / f"fold_{fold}" / "checkpoint_final.pth")
    return folder


def dice(a: np.ndarray, b: np.ndarray) -> float:
    total = int(a.sum()) + int(b.sum())
    return 1.0 if total == 0 else 2.0 * int(np.logical_and(a, b).sum()) / total


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run_engine(model_dir: Path, study_dir: Path, out_dir: Path, *, device: str, folds, mirroring: bool,
               compile_: bool, repeats: int):
    options = EngineOptions(device=device, folds=folds, use_mirroring=mirroring, compile=compile_)
    t = time.perf_counter()
    engine = NnUNetEngine.from_folder(model_dir, options=options)
    load_s = time.perf_counter() - t
    best = None
    for _ in range(repeats + 1):  # the first run warms up (cudnn autotuning, allocator, compile)
        if engine.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(engine.device)
        t0 = time.perf_counter()
        pet, geometry = read_array(study_dir / f"{SUV_NAME}.mha")
        ct, _ = read_array(study_dir / f"{CTRES_NAME}.mha")
        t1 = time.perf_counter()
        spacing = tuple(reversed(geometry.spacing))
        result = engine.predict(pet=pet, ct=ct, spacing_zyx=spacing)
        t2 = time.perf_counter()
        write_image_atomic(image_from_array(result.mask, geometry), out_dir / "mask.mha")
        write_image_atomic(image_from_array(result.probabilities, geometry), out_dir / "probabilities.mha")
        t3 = time.perf_counter()
        record = {"read": t1 - t0, "predict": t2 - t1, "write": t3 - t2, "end_to_end": t3 - t0,
                  "stages": result.timings, "notes": result.notes, "result": result,
                  "peak_gpu_gib": (torch.cuda.max_memory_allocated(engine.device) / 2**30
                                   if engine.device.type == "cuda" else None)}
        if best is None or record["predict"] < best["predict"]:
            best = record
    best["load"] = load_s
    return best, pet, ct, spacing


def run_nnunet(model_dir: Path, pet, ct, spacing, *, device: str, folds, mirroring: bool, repeats: int):
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

    dev = torch.device("cuda" if device in ("auto", "cuda") and torch.cuda.is_available() else "cpu")
    predictor = nnUNetPredictor(tile_step_size=0.5, use_gaussian=True, use_mirroring=mirroring,
                                perform_everything_on_device=dev.type == "cuda", device=dev, verbose=False,
                                verbose_preprocessing=False, allow_tqdm=False)
    predictor.initialize_from_trained_model_folder(str(model_dir), use_folds=tuple(folds),
                                                   checkpoint_name="checkpoint_final.pth")
    data = np.stack([ct, pet]).astype(np.float32)
    best = None
    for _ in range(repeats + 1):
        sync(dev)
        t = time.perf_counter()
        seg, probs = predictor.predict_single_npy_array(data, {"spacing": list(spacing)}, None, None, True)
        sync(dev)
        elapsed = time.perf_counter() - t
        if best is None or elapsed < best[0]:
            best = (elapsed, seg.astype(np.uint8), probs[1].astype(np.float32))
    return best


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", choices=sorted(SIZES), default="full", help="phantom study size")
    parser.add_argument("--model", choices=sorted(MODELS), default="autoPET")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--repeats", type=int, default=1, help="timed runs per configuration (best kept)")
    parser.add_argument("--compile", action="store_true", help="torch.compile the kit engine's network")
    parser.add_argument("--no-reference", action="store_true", help="skip nnunetv2's predictor")
    parser.add_argument("--configs", default="1,1tta,5tta", help="subset of 1,1tta,5tta")
    args = parser.parse_args(argv)
    try:
        import nnunetv2  # noqa: F401
        have_reference = not args.no_reference
    except ImportError:
        have_reference = False

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        study = make_study(7, size=args.size, n_lesions=6)
        study_dir = study.write(tmp / "studies")
        spacing = tuple(reversed(study.suv.GetSpacing()))
        import SimpleITK as sitk
        calibration = (sitk.GetArrayFromImage(study.suv), sitk.GetArrayFromImage(study.ctres))
        model_dir = write_model(tmp / "model", args.model, spacing, calibration)
        configs = {"1": ((0,), False), "1tta": ((0,), True), "5tta": (tuple(range(FOLDS)), True)}
        rows = []
        for key in args.configs.split(","):
            folds, mirroring = configs[key]
            ours, pet, ct, spacing_read = run_engine(model_dir, study_dir, tmp / "out", device=args.device,
                                                     folds=folds, mirroring=mirroring, compile_=args.compile,
                                                     repeats=args.repeats)
            row = {"config": f"{len(folds)} fold{'s' if len(folds) > 1 else ''}, "
                             f"{'mirroring' if mirroring else 'no mirroring'}", "ours": ours}
            if args.model == "autoPET":
                row["tflops"] = (ours["notes"]["forward_passes"] * TFLOP_PER_AUTOPET_PATCH
                                 / ours["stages"]["network"])
            if have_reference:
                ref_s, ref_mask, ref_prob = run_nnunet(model_dir, pet, ct, spacing_read, device=args.device,
                                                       folds=folds, mirroring=mirroring, repeats=args.repeats)
                res = ours["result"]
                row.update(ref_s=ref_s, dice=dice(res.mask, ref_mask),
                           max_prob_diff=float(np.abs(res.probabilities - ref_prob).max()),
                           ref_fraction=float(ref_mask.mean()))
            rows.append(row)
            print(json.dumps({k: (v if k != "ours" else {kk: vv for kk, vv in v.items() if kk != "result"})
                              for k, v in row.items()}, default=str), flush=True)

    peak_host_gib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    shape = tuple(reversed(study.suv.GetSize()))
    device = rows[0]["ours"]["notes"]["device"]
    print(f"\nModel {args.model}, study {args.size} {shape} (z, y, x), device {device}, torch {torch.__version__}, "
          f"best of {args.repeats} after a warm-up run\n")
    print("| configuration | tiles x passes | kit predict (s) | kit read+predict+write (s) | network (s) | "
          "nnU-Net predict (s) | nnU-Net / kit | Dice vs nnU-Net | max prob diff |")
    print("|---|---|---|---|---|---|---|---|---|")
    for row in rows:
        o = row["ours"]
        ref = (f"{row['ref_s']:.2f} | {row['ref_s'] / o['predict']:.2f} | {row['dice']:.4f} | "
               f"{row['max_prob_diff']:.2e}") if "ref_s" in row else "- | - | - | -"
        print(f"| {row['config']} | {o['notes']['tiles']} x {o['notes']['forward_passes'] // o['notes']['tiles']} | "
              f"{o['predict']:.2f} | {o['end_to_end']:.2f} | {o['stages']['network']:.2f} | {ref} |")
    first = rows[0]["ours"]
    print("\nStages of the kit engine, first configuration (s): "
          + ", ".join(f"{k} {v:.3f}" for k, v in first["stages"].items())
          + f"; read {first['read']:.3f}, write {first['write']:.3f}, model load {first['load']:.2f}")
    for row in rows:
        if "tflops" in row:
            print(f"Effective network throughput, {row['config']}: {row['tflops']:.1f} TFLOP/s "
                  f"({TFLOP_PER_AUTOPET_PATCH} TFLOP per patch)")
        if row["ours"]["peak_gpu_gib"] is not None and "no mirroring" in row["config"]:
            print(f"Peak GPU memory, {row['config']}: {row['ours']['peak_gpu_gib']:.2f} GiB")
    print(f"Peak host memory of the whole run (both engines): {peak_host_gib:.2f} GiB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
