"""Benchmark: the kit's nnU-Net engine against nnunetv2's nnUNetPredictor, end to end, on one model and study.

Builds a random-weight model in nnU-Net's on-disk format (the autoPET-shaped PlainConvUNet: 6 stages, 32-320
features, patch 112x160x128; or a small 3-stage one) and a phantom study, then for each configuration
(1 fold without mirroring, 1 fold with mirroring, 5 folds with mirroring) times:

- the kit, end to end: read SUV.mha and CTres.mha (the container's algorithm.pipeline.segment_study: petct
  reading and checks) -> NnUNetEngine.predict -> write the compressed mask .mha, no probability map (the
  container's default); per stage from Prediction.timings; effective network TFLOP/s; peak GPU memory;
- nnU-Net, end to end: nnUNetPredictor.predict_from_files on the same files laid out as nnU-Net expects
  (case_0000.mha, case_0001.mha in the model's channel order), 1 preprocessing and 1 export process, no
  probabilities saved; and in memory: predict_single_npy_array on the same arrays (when nnunetv2 is installed);

and prints both ratios and the agreement (Dice between the written masks, fraction of voxels differing; from one
untimed in-memory run per side, which also warms up: largest lesion-probability difference). Peak host memory
(VmHWM) and peak GPU memory come from a fresh subprocess that runs the kit once, 1 fold without mirroring, on the
study and on a long study (e.g. 660 slices at the same spacing, the phantom stacked along z).

Needs torch, numpy, SimpleITK (and nnunetv2 for the reference). Examples:
    python benchmarks/bench_inference.py --quick                                   # CPU smoke test
    python benchmarks/bench_inference.py --model autoPET --size tiny --configs 1 --no-reference
    python benchmarks/bench_inference.py --model autoPET --size full --device cuda --json out.json
benchmarks/gpu_check.sh runs the GPU measurements in one go.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import importlib.metadata
import io
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch

from algorithm.engine_contract import EngineOptions
from algorithm.nnunet import NnUNetEngine
from algorithm.nnunet.engine import resolve_device
from algorithm.nnunet.network import build_network
from algorithm.nnunet.plans import Plan, read_plan
from algorithm.nnunet.preprocessing import preprocess
from algorithm.pipeline import segment_study
from petct.argtypes import whole_number
from petct.errors import InputError
from petct.imageio import Geometry, grid_mismatches, image_from_array, read_array, write_image_atomic
from petct.jsonio import dumps, write_json_atomic
from petct.layout import CTRES_NAME, SUV_NAME
from petct.phantom import SIZES, make_study

GIB = 2**30
TFLOP_PER_AUTOPET_PATCH = 1.05  # per patch of the autoPET model (1.049 counted), the goals' convention
FOLDS = 5
CONFIGURATION = "3d_fullres"
# The model's input channels, in order, and the study file each one is (2024/2025 autoPET order: CT first).
CHANNELS = (("CT", CTRES_NAME), ("PET", SUV_NAME))
NNUNET_CASE = "case"
# nnU-Net's parity bar: masks must agree wherever nnU-Net's probability is this far from 0.5.
NEAR_TIE = 0.005
MODELS = {
    # The typical 3d_fullres plan of the autoPET nnU-Net baselines and winners (about 1.05 TFLOP per patch).
    "autoPET": dict(features=[32, 64, 128, 256, 320, 320], patch=[112, 160, 128],
                    strides=[[1, 1, 1], [2, 2, 2], [2, 2, 2], [2, 2, 2], [2, 2, 2], [1, 2, 2]]),
    "small": dict(features=[8, 16, 32], patch=[32, 48, 48], strides=[[1, 1, 1], [2, 2, 2], [2, 2, 2]]),
}
GOALS = {"end_to_end_speedup": 3.0, "tflops": 150.0, "long_study_gpu_gib": 12.0, "host_gib": 4.0}
STARTED = time.perf_counter()


def progress(message: str) -> None:
    """One line on stderr per stage, so that a run stopped at its time limit shows where it was."""
    print(f"[bench {time.perf_counter() - STARTED:7.1f} s] {message}", file=sys.stderr, flush=True)


@dataclass(frozen=True)
class Config:
    key: str
    folds: tuple[int, ...]
    mirroring: bool

    @property
    def label(self) -> str:
        n = len(self.folds)
        return f"{n} fold{'s' if n > 1 else ''}, {'mirroring' if self.mirroring else 'no mirroring'}"


CONFIGS = {c.key: c for c in (Config("1", (0,), False), Config("1tta", (0,), True),
                              Config("5tta", tuple(range(FOLDS)), True))}


# ---------------------------------------------------------------------------------------------- model and data


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
        "configurations": {CONFIGURATION: {
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


def dataset_for() -> dict:
    # file_ending .mha: nnU-Net finds case_XXXX<file_ending> in its input folder.
    return {"channel_names": {str(i): name for i, (name, _) in enumerate(CHANNELS)},
            "labels": {"background": 0, "tumor": 1}, "numTraining": 10, "file_ending": ".mha"}


def read_model_plan(folder: Path) -> Plan:
    plans_path, dataset_path = folder / "plans.json", folder / "dataset.json"
    return read_plan(json.loads(plans_path.read_text()), json.loads(dataset_path.read_text()), CONFIGURATION,
                     plans_path=plans_path, dataset_path=dataset_path)


def calibration_tile(plan: Plan, study_dir: Path, *, full_patch: bool) -> torch.Tensor:
    """A preprocessed tile from the middle of the study, zero-padded to the tile size.

    On a CPU the tile is about half the patch per axis (a multiple of the network's total stride): one
    forward pass of the full autoPET patch costs a minute there, and the calibration only needs logit statistics.
    """
    pet, geometry = read_array(study_dir / f"{SUV_NAME}.mha")
    ct, _ = read_array(study_dir / f"{CTRES_NAME}.mha")
    images = {SUV_NAME: pet, CTRES_NAME: ct}
    stacked = torch.from_numpy(np.stack([images[f] for _, f in CHANNELS]).astype(np.float32))
    data, _ = preprocess(stacked, tuple(reversed(geometry.spacing)), plan)
    strides = np.prod(np.array(plan.arch_kwargs["strides"]), axis=0)
    size = [p if full_patch else max(int(s), (p // 2) // int(s) * int(s)) for p, s in zip(plan.patch_size, strides)]
    start = [max(0, (n - t) // 2) for n, t in zip(data.shape[1:], size)]
    tile = torch.zeros((1, data.shape[0], *size))
    crop = data[:, start[0]:start[0] + size[0], start[1]:start[1] + size[1], start[2]:start[2] + size[2]]
    tile[0, :, :crop.shape[1], :crop.shape[2], :crop.shape[3]] = crop
    return tile


def write_model(folder: Path, *, model: str, spacing_zyx, study_dir: Path, device: torch.device) -> Path:
    """plans.json, dataset.json and fold_0..4/checkpoint_final.pth: one random network, five checkpoints.

    The folds share the random weights (building five autoPET networks costs minutes on a CPU) and differ in
    the lesion bias, so each is its own file and the ensemble averages different logits. The lesion head is
    scaled to logits of a few units with about 10 % of the calibration tile called lesion; background is 0.
    """
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "plans.json").write_text(json.dumps(plans_for(model, spacing_zyx), indent=1))
    (folder / "dataset.json").write_text(json.dumps(dataset_for(), indent=1))
    plan = read_model_plan(folder)
    torch.manual_seed(0)
    net = build_network(plan.network_class, plan.arch_kwargs, input_channels=len(CHANNELS), num_classes=2)
    net = net.to(device).eval()
    tile = calibration_tile(plan, study_dir, full_patch=device.type == "cuda").to(device)
    head = net.decoder.seg_layers[-1]
    with torch.no_grad():
        head.weight[0].zero_()
        head.bias.zero_()
        lesion = net(tile)[0, 1].flatten().float()  # linear in the head: scale and shift it after one pass
        scale = 2.0 / (lesion.std() + 1e-6)
        head.weight[1].mul_(scale)
        head.bias[1] = -torch.quantile((lesion * scale)[:1_000_000], 0.9)
    weights = {k: v.detach().cpu().clone() for k, v in net.state_dict().items()}
    bias_key = next(k for k in weights if k.endswith(f"seg_layers.{len(net.decoder.seg_layers) - 1}.bias"))
    for fold in range(FOLDS):
        fold_weights = dict(weights)
        fold_weights[bias_key] = weights[bias_key].clone()
        fold_weights[bias_key][1] += 0.1 * (fold - (FOLDS - 1) / 2)
        (folder / f"fold_{fold}").mkdir(exist_ok=True)
        torch.save({"network_weights": fold_weights, "trainer_name": "nnUNetTrainer",
                    "init_args": {"configuration": CONFIGURATION, "fold": fold},
                    "inference_allowed_mirroring_axes": (0, 1, 2)},
                   folder / f"fold_{fold}" / "checkpoint_final.pth")
    return folder


def tflop_per_patch(model_dir: Path) -> float:
    """Floating-point operations of one forward pass of one patch, counted on the meta device (no compute)."""
    from torch.utils.flop_counter import FlopCounterMode

    plan = read_model_plan(model_dir)
    with torch.device("meta"):
        net = build_network(plan.network_class, plan.arch_kwargs, input_channels=len(CHANNELS),
                            num_classes=plan.num_classes).eval()
        x = torch.zeros((1, len(CHANNELS), *plan.patch_size))
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        net(x)
    return counter.get_total_flops() / 1e12


def write_long_study(study_dir: Path, folder: Path, *, slices: int) -> Path:
    """The study stacked head-to-head along z (alternately flipped) to `slices` slices, same spacing.

    Written uncompressed: only its memory is measured, and compressing ~400 MB per image takes a while.
    """
    for _, name in CHANNELS:
        array, geometry = read_array(study_dir / f"{name}.mha")
        reps = -(-slices // array.shape[0])
        stacked = np.concatenate([array if i % 2 == 0 else array[::-1] for i in range(reps)])[:slices]
        long_geometry = Geometry(size=(*geometry.size[:2], slices), spacing=geometry.spacing,
                                 origin=geometry.origin, direction=geometry.direction)
        write_image_atomic(image_from_array(np.ascontiguousarray(stacked), long_geometry),
                           folder / f"{name}.mha", compress=False)
    return folder


def write_nnunet_inputs(study_dir: Path, folder: Path) -> Path:
    """The study as nnU-Net's predictor reads a folder: case_0000.mha, case_0001.mha in channel order."""
    folder.mkdir(parents=True, exist_ok=True)
    for i, (_, name) in enumerate(CHANNELS):
        shutil.copyfile(study_dir / f"{name}.mha", folder / f"{NNUNET_CASE}_{i:04d}.mha")
    return folder


@dataclass(frozen=True)
class Workspace:
    study_dir: Path
    long_study_dir: Path | None
    model_dir: Path
    nnunet_input_dir: Path
    shape_zyx: tuple[int, ...]
    spacing_zyx: tuple[float, ...]


def build_workspace(root: Path, *, model: str, size: str, seed: int, long_slices: int,
                    device: torch.device) -> tuple[Workspace, float]:
    """Study, long study, model and nnU-Net input folder under `root`; reused when built with the same settings."""
    key = {"model": model, "size": size, "seed": seed, "long_slices": long_slices, "version": 2}
    marker = root / "build.json"
    start = time.perf_counter()
    if not (marker.is_file() and json.loads(marker.read_text()) == key):
        if root.exists():
            shutil.rmtree(root)
        study = make_study(seed, size=size, n_lesions=6, name="study")
        study.write(root)
        if long_slices:
            write_long_study(root / "study", root / "long_study", slices=long_slices)
        write_model(root / "model", model=model, spacing_zyx=tuple(reversed(study.suv.GetSpacing())),
                    study_dir=root / "study", device=device)
        write_nnunet_inputs(root / "study", root / "nnunet_input")
        write_json_atomic(key, marker)
    header = sitk.ImageFileReader()
    header.SetFileName(str(root / "study" / f"{SUV_NAME}.mha"))
    header.ReadImageInformation()
    workspace = Workspace(study_dir=root / "study", long_study_dir=(root / "long_study") if long_slices else None,
                          model_dir=root / "model", nnunet_input_dir=root / "nnunet_input",
                          shape_zyx=tuple(reversed(header.GetSize())),
                          spacing_zyx=tuple(reversed(header.GetSpacing())))
    return workspace, time.perf_counter() - start


# ---------------------------------------------------------------------------------------------- measurements


def vmhwm_gib() -> float:
    """This process's peak resident memory. Not getrusage's ru_maxrss: Linux carries that over exec."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024 / GIB
    raise RuntimeError("VmHWM not in /proc/self/status")


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def reset_gpu_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def gpu_peak(device: torch.device) -> dict[str, float] | None:
    if device.type != "cuda":
        return None
    return {"allocated_gib": torch.cuda.max_memory_allocated(device) / GIB,
            "reserved_gib": torch.cuda.max_memory_reserved(device) / GIB}


@dataclass
class KitRun:
    end_to_end_s: float
    read_s: float
    predict_s: float
    write_s: float
    stages: dict[str, float]
    notes: dict[str, object]
    gpu_peak: dict[str, float] | None
    mask: np.ndarray
    probabilities: np.ndarray | None

    def figures(self) -> dict:
        return {"end_to_end_s": self.end_to_end_s, "read_s": self.read_s, "predict_s": self.predict_s,
                "write_s": self.write_s, "stages_s": self.stages, "notes": self.notes, "gpu_peak": self.gpu_peak}


def kit_end_to_end(engine: NnUNetEngine, study_dir: Path, mask_path: Path) -> KitRun:
    """What the container does for one study, model already loaded: read and check, predict, write the mask."""
    reset_gpu_peak(engine.device)
    start = time.perf_counter()
    result = segment_study(pet_path=study_dir / f"{SUV_NAME}.mha", ct_path=study_dir / f"{CTRES_NAME}.mha",
                           engine=engine)
    written = time.perf_counter()
    write_image_atomic(result.mask, mask_path, compress=True)
    end = time.perf_counter()
    stages = {k.split("/", 1)[1]: v for k, v in result.timings.items() if k.startswith("predict/")}
    probabilities = None if result.probabilities is None else sitk.GetArrayFromImage(result.probabilities)
    return KitRun(end_to_end_s=end - start, read_s=result.timings["read inputs"],
                  predict_s=result.timings["predict"], write_s=end - written, stages=stages,
                  notes=dict(result.notes), gpu_peak=gpu_peak(engine.device),
                  mask=sitk.GetArrayFromImage(result.mask), probabilities=probabilities)


def load_kit(model_dir: Path, config: Config, *, device: str, compile_: bool,
             tile_batch: int | None) -> tuple[NnUNetEngine, float]:
    start = time.perf_counter()
    engine = NnUNetEngine.from_folder(model_dir, options=EngineOptions(
        device=device, folds=config.folds, use_mirroring=config.mirroring, compile=compile_), tile_batch=tile_batch)
    return engine, time.perf_counter() - start


def return_probabilities(engine: NnUNetEngine, wanted: bool) -> None:
    """Whether predict also returns the probability map; the container asks for it only with --save-probabilities."""
    if "probabilities" in {f.name for f in dataclasses.fields(EngineOptions)}:
        engine.options = dataclasses.replace(engine.options, probabilities=wanted)


def measure_kit(workspace: Workspace, config: Config, out_dir: Path, *, device: str, compile_: bool,
                untimed_run: bool, repeats: int, tile_batch: int | None) -> tuple[KitRun, KitRun | None, dict]:
    """Best (shortest end to end) of `repeats` runs as the container makes them (no probability map).

    With `untimed_run`, one run first that warms up and returns the probability map for the agreement figures.
    """
    # The engine turns cuDNN autotuning on for CUDA itself, as nnU-Net's predictor does: like for like.
    progress(f"kit, {config.label}: loading{' and compiling' if compile_ else ''}")
    engine, load_s = load_kit(workspace.model_dir, config, device=device, compile_=compile_, tile_batch=tile_batch)
    mask_path = out_dir / "kit_mask.mha"
    first = None
    if untimed_run:
        progress(f"kit, {config.label}: untimed run")
        return_probabilities(engine, True)
        first = kit_end_to_end(engine, workspace.study_dir, mask_path)
    return_probabilities(engine, False)
    progress(f"kit, {config.label}: {repeats} timed run(s)")
    runs = [kit_end_to_end(engine, workspace.study_dir, mask_path) for _ in range(repeats)]
    best = min(runs, key=lambda r: r.end_to_end_s)
    info = {"load_s": load_s, "describe": engine.describe(), "all_end_to_end_s": [r.end_to_end_s for r in runs]}
    if first is not None:
        info["same_mask_as_untimed_run"] = bool(np.array_equal(first.mask, best.mask))
    del engine
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return best, first, info


@contextlib.contextmanager
def quiet():
    """nnU-Net prints progress lines to stdout; keep the benchmark's own output readable."""
    with contextlib.redirect_stdout(io.StringIO()):
        yield


def nnunet_predictor(model_dir: Path, config: Config, device: torch.device):
    """nnUNetPredictor loaded as initialize_from_trained_model_folder loads it, minus the trainer-class search.

    That search imports every trainer module and their dependencies (connected-components-3d among them), which
    the GPU machine lacks and the wheel budget cannot carry; nnUNetTrainer.build_network_architecture is
    get_network_from_plans, called here with the same arguments. Prediction itself is nnU-Net's, unchanged.
    """
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor
    from nnunetv2.utilities.get_network_from_plans import get_network_from_plans
    from nnunetv2.utilities.label_handling.label_handling import determine_num_input_channels
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    dataset = json.loads((model_dir / "dataset.json").read_text())
    plans = PlansManager(json.loads((model_dir / "plans.json").read_text()))
    checkpoints = [torch.load(model_dir / f"fold_{f}" / "checkpoint_final.pth", map_location="cpu",
                              weights_only=False) for f in config.folds]
    first = checkpoints[0]
    if first["trainer_name"] != "nnUNetTrainer":
        raise RuntimeError(f"the benchmark builds nnUNetTrainer's network, not {first['trainer_name']}'s")
    configuration = plans.get_configuration(first["init_args"]["configuration"])
    network = get_network_from_plans(
        configuration.network_arch_class_name, configuration.network_arch_init_kwargs,
        configuration.network_arch_init_kwargs_req_import,
        determine_num_input_channels(plans, configuration, dataset),
        plans.get_label_manager(dataset).num_segmentation_heads, allow_init=True, deep_supervision=False)
    network.load_state_dict(first["network_weights"])
    with quiet():
        predictor = nnUNetPredictor(tile_step_size=0.5, use_gaussian=True, use_mirroring=config.mirroring,
                                    perform_everything_on_device=device.type == "cuda", device=device,
                                    verbose=False, verbose_preprocessing=False, allow_tqdm=False)
    predictor.manual_initialization(network, plans, configuration, [c["network_weights"] for c in checkpoints],
                                    dataset, first["trainer_name"], first.get("inference_allowed_mirroring_axes"))
    return predictor


def nnunet_in_memory(predictor, workspace: Workspace, *, probabilities: bool):
    """predict_single_npy_array on the arrays as nnU-Net's SimpleITKIO gives them: (seconds, mask, lesion prob)."""
    arrays = [read_array(workspace.study_dir / f"{name}.mha")[0] for _, name in CHANNELS]
    data = np.stack(arrays).astype(np.float32)
    device = predictor.device
    sync(device)
    start = time.perf_counter()
    with quiet():
        out = predictor.predict_single_npy_array(data, {"spacing": list(workspace.spacing_zyx)}, None, None,
                                                 probabilities)
    sync(device)
    elapsed = time.perf_counter() - start
    seg, probs = out if probabilities else (out, None)
    return elapsed, np.asarray(seg).astype(np.uint8), None if probs is None else probs[1].astype(np.float32)


def nnunet_from_files(predictor, workspace: Workspace, out_dir: Path) -> tuple[float, Path]:
    """nnU-Net's own file-based path (reading, worker processes, export); returns seconds and the mask's path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    mask = out_dir / f"{NNUNET_CASE}.mha"
    mask.unlink(missing_ok=True)
    start = time.perf_counter()
    with quiet():
        predictor.predict_from_files(str(workspace.nnunet_input_dir), str(out_dir), save_probabilities=False,
                                     overwrite=True, num_processes_preprocessing=1,
                                     num_processes_segmentation_export=1)
    elapsed = time.perf_counter() - start
    if not mask.is_file():
        raise RuntimeError(f"nnU-Net wrote no {mask}")
    return elapsed, mask


def measure_nnunet(workspace: Workspace, config: Config, out_dir: Path, *, device: torch.device,
                   repeats: int) -> dict:
    """One untimed in-memory run that returns probabilities (and warms up), then the timed file and array runs."""
    progress(f"nnU-Net, {config.label}: loading, untimed run")
    predictor = nnunet_predictor(workspace.model_dir, config, device)
    _, seg_first, probs = nnunet_in_memory(predictor, workspace, probabilities=True)
    progress(f"nnU-Net, {config.label}: timed runs from files, then in memory")
    files_s, mask_path = min(nnunet_from_files(predictor, workspace, out_dir / "nnunet") for _ in range(repeats))
    memory_runs = []
    for _ in range(repeats):
        reset_gpu_peak(device)
        seconds, seg, _ = nnunet_in_memory(predictor, workspace, probabilities=False)
        memory_runs.append((seconds, gpu_peak(device)))
    memory_s, peak = min(memory_runs, key=lambda r: r[0])
    del predictor
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return {"files_end_to_end_s": files_s, "in_memory_s": memory_s, "in_memory_gpu_peak": peak,
            "deterministic": bool(np.array_equal(seg, seg_first)), "mask": seg_first, "probabilities": probs,
            "mask_path": mask_path}


def agreement(kit_mask: np.ndarray, ref_mask: np.ndarray, kit_prob: np.ndarray | None = None,
              ref_prob: np.ndarray | None = None) -> dict:
    """Dice, voxels differing, and (with probabilities) the largest difference and disagreements off near-ties."""
    a, b = kit_mask.astype(bool), ref_mask.astype(bool)
    total = int(a.sum()) + int(b.sum())
    differ = a != b
    out = {"dice": 1.0 if total == 0 else 2.0 * int((a & b).sum()) / total,
           "voxels_differing": int(differ.sum()), "fraction_differing": float(differ.mean()),
           "lesion_fraction_kit": float(a.mean()), "lesion_fraction_reference": float(b.mean())}
    if kit_prob is not None and ref_prob is not None:
        out["max_prob_diff"] = float(np.abs(kit_prob - ref_prob).max())
        out["voxels_differing_off_near_ties"] = int((differ & (np.abs(ref_prob - 0.5) >= NEAR_TIE)).sum())
    return out


def memory_probe(model_dir: Path, study_dir: Path, out_dir: Path, *, device: str, compile_: bool,
                 tile_batch: int | None) -> dict:
    """Peak host (VmHWM) and GPU memory of a fresh process running the kit once, 1 fold without mirroring."""
    spec = {"model_dir": str(model_dir), "study_dir": str(study_dir), "out_dir": str(out_dir), "device": device,
            "compile": compile_, "tile_batch": tile_batch}
    proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--probe", json.dumps(spec)],
                          capture_output=True, text=True)
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        return {"error": (proc.stderr.strip().splitlines() or ["no output"])[-1][:300]}
    return json.loads(lines[-1])


def run_probe(spec: dict) -> int:
    """The subprocess side of memory_probe: prints one JSON line."""
    rss_after_imports = vmhwm_gib()
    engine, load_s = load_kit(Path(spec["model_dir"]), CONFIGS["1"], device=spec["device"],
                              compile_=spec["compile"], tile_batch=spec["tile_batch"])
    return_probabilities(engine, False)  # as the container runs by default
    out_dir = Path(spec["out_dir"])
    out_dir.mkdir(parents=True, exist_ok=True)
    run = kit_end_to_end(engine, Path(spec["study_dir"]), out_dir / "probe_mask.mha")
    print(dumps({"vmhwm_gib": vmhwm_gib(), "vmhwm_after_imports_gib": rss_after_imports, "load_s": load_s,
                 "shape_zyx": list(run.mask.shape), "cold_end_to_end_s": run.end_to_end_s,
                 "stages_s": run.stages, "gpu_peak": run.gpu_peak, "device": str(engine.device)}, indent=None))
    return 0


# ---------------------------------------------------------------------------------------------- report


def machine() -> dict:
    info = {"python": platform.python_version(), "torch": torch.__version__, "cpus": os.cpu_count(),
            "date": datetime.date.today().isoformat(), "simpleitk": sitk.Version_VersionString()}
    with contextlib.suppress(OSError):
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        info["cpu"] = next((ln.split(":", 1)[1].strip() for ln in lines if ln.startswith("model name")),
                           platform.machine())
    with contextlib.suppress(importlib.metadata.PackageNotFoundError):
        info["nnunetv2"] = importlib.metadata.version("nnunetv2")
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        info.update(gpu=props.name, gpu_memory_gib=props.total_memory / GIB, cuda=torch.version.cuda)
    return info


def goals(report: dict) -> dict:
    """Each performance goal with the measured value; they apply on a GPU with the full-size autoPET study."""
    rows = report["configs"]
    speedups = [r["ratios"]["end_to_end"] for r in rows if "ratios" in r]
    dices = [r["agreement"]["files"]["dice"] for r in rows if "agreement" in r]
    tflops = [r["kit"]["tflops_effective"] for r in rows]
    long_gpu = (report["memory"].get("long_study") or {}).get("gpu_peak")
    host = [m["vmhwm_gib"] for m in report["memory"].values() if m and "vmhwm_gib" in m]
    out = {}
    if speedups:
        out["end_to_end_speedup_min"] = {"value": min(speedups), "goal": GOALS["end_to_end_speedup"],
                                         "dice_min": min(dices),
                                         "met": min(speedups) >= GOALS["end_to_end_speedup"] and min(dices) >= 0.99}
    if tflops:
        out["tflops_max"] = {"value": max(tflops), "goal": GOALS["tflops"], "met": max(tflops) >= GOALS["tflops"]}
    if long_gpu:
        out["long_study_gpu_reserved_gib"] = {"value": long_gpu["reserved_gib"], "goal": GOALS["long_study_gpu_gib"],
                                              "met": long_gpu["reserved_gib"] <= GOALS["long_study_gpu_gib"]}
    if host:
        out["host_vmhwm_gib_max"] = {"value": max(host), "goal": GOALS["host_gib"],
                                     "met": max(host) <= GOALS["host_gib"]}
    setup = report["setup"]
    applies = report["device"].startswith("cuda") and setup["model"] == "autoPET" and setup["size"] == "full"
    return {"apply": applies, **out}


def print_report(report: dict) -> None:
    m, s = report["machine"], report["setup"]
    device = report["device"]
    print(f"\nModel {s['model']} ({s['tflop_per_patch_counted']:.4g} TFLOP per patch counted), study {s['size']} "
          f"{tuple(s['shape_zyx'])} (z, y, x), device {device} ({m.get('gpu', m.get('cpu', '?'))}), torch "
          f"{m['torch']}, nnunetv2 {m.get('nnunetv2', '-')}; best of {s['repeats']} after an untimed run"
          f"{', torch.compile' if s['compile'] else ''}\n")
    print("| configuration | tiles × passes | kit end to end (s) | kit predict (s) | network (s) | TFLOP/s | "
          "nnU-Net files (s) | nnU-Net ÷ kit, end to end | nnU-Net in memory (s) | nnU-Net ÷ kit, in memory | "
          "Dice | voxels differing | max prob diff |")
    print("|" + "---|" * 13)
    for row in report["configs"]:
        k = row["kit"]
        notes = k["notes"]
        passes = f"{notes.get('tiles', '?')} × {notes.get('forward_passes', 0) // max(1, notes.get('tiles', 1))}"
        ref = "- | - | - | - | - | - | -"
        if "nnunet" in row:
            n, r, a = row["nnunet"], row["ratios"], row["agreement"]
            prob = a["in_memory"].get("max_prob_diff")
            ref = (f"{n['files_end_to_end_s']:.2f} | **{r['end_to_end']:.2f}** | {n['in_memory_s']:.2f} | "
                   f"{r['in_memory']:.2f} | {a['files']['dice']:.4f} | {a['files']['fraction_differing']:.2e} | "
                   f"{'-' if prob is None else f'{prob:.1e}'}")
        print(f"| {row['config']} | {passes} | {k['end_to_end_s']:.2f} | {k['predict_s']:.2f} | "
              f"{k['stages_s']['network']:.2f} | {k['tflops_effective']:.3g} | {ref} |")
    print()
    for row in report["configs"]:
        k = row["kit"]
        stages = ", ".join(f"{name} {v:.3f}" for name, v in k["stages_s"].items() if not name.startswith("network_"))
        gpu = k["gpu_peak"]
        print(f"- kit stages, {row['config']} (s): read {k['read_s']:.3f}, {stages}, write {k['write_s']:.3f}; "
              f"model load {k['load_s']:.2f}" + (f"; peak GPU {gpu['allocated_gib']:.2f} GiB allocated, "
                                                  f"{gpu['reserved_gib']:.2f} GiB reserved" if gpu else ""))
        if "nnunet" in row:
            a, n = row["agreement"], row["nnunet"]
            mem = a["in_memory"]
            gpu = n["in_memory_gpu_peak"]
            print(f"  nnU-Net: in-memory masks Dice {mem['dice']:.4f}, {mem['voxels_differing']} voxels differ "
                  f"({mem.get('voxels_differing_off_near_ties', '-')} where nnU-Net's p is ≥ {NEAR_TIE} from 0.5); "
                  f"written files: grids {'match' if a['files']['same_grid'] else 'DIFFER'}"
                  + (f"; nnU-Net peak GPU {gpu['allocated_gib']:.2f} GiB allocated" if gpu else ""))
    for name, probe in report["memory"].items():
        if not probe:
            continue
        if "error" in probe:
            print(f"- memory probe, {name}: failed: {probe['error']}")
            continue
        gpu = probe["gpu_peak"]
        print(f"- fresh process, kit 1 fold no mirroring, {name} {tuple(probe['shape_zyx'])}: peak host memory "
              f"(VmHWM) {probe['vmhwm_gib']:.2f} GiB ({probe['vmhwm_after_imports_gib']:.2f} after imports)"
              + (f", peak GPU {gpu['allocated_gib']:.2f} GiB allocated / {gpu['reserved_gib']:.2f} GiB reserved"
                 if gpu else "") + f", cold end to end {probe['cold_end_to_end_s']:.2f} s")
    print(f"- whole benchmark process (both engines) VmHWM: {report['process_vmhwm_gib']:.2f} GiB; "
          f"setup (study, model) {s['setup_s']:.1f} s")
    goal_rows = {k: v for k, v in report["goals"].items() if k != "apply"}
    if report["goals"]["apply"]:
        for name, g in goal_rows.items():
            print(f"- goal {name}: {g['value']:.2f} vs {g['goal']} -> {'met' if g['met'] else 'NOT met'}")
    else:
        print("- the goals apply on a GPU with --model autoPET --size full: not judged here")


# ---------------------------------------------------------------------------------------------- main


def measure_config(workspace: Workspace, config: Config, out_dir: Path, *, args: argparse.Namespace,
                   device: torch.device, compared: bool, first: bool, tflop_per_patch_used: float) -> dict:
    """The kit's figures for one configuration and, when `compared`, nnU-Net's, the ratios and the agreement."""
    # Each side gets one untimed run per compared configuration (it returns the probabilities), and the kit
    # one before the first configuration in any case (CUDA context, allocator, kernels).
    kit, kit_first, info = measure_kit(workspace, config, out_dir, device=str(device), compile_=args.compile,
                                       untimed_run=compared or first, repeats=args.repeats,
                                       tile_batch=args.tile_batch)
    row = {"config": config.label, "key": config.key, "kit": {
        **kit.figures(), **info,
        "tflops_effective": kit.notes["forward_passes"] * tflop_per_patch_used / kit.stages["network"]}}
    if not compared:
        return row
    ref = measure_nnunet(workspace, config, out_dir, device=device, repeats=args.repeats)
    ref_file, ref_geometry = read_array(ref.pop("mask_path"))
    kit_file, kit_geometry = read_array(out_dir / "kit_mask.mha")
    row["nnunet"] = {k: v for k, v in ref.items() if k not in ("mask", "probabilities")}
    row["ratios"] = {"end_to_end": ref["files_end_to_end_s"] / kit.end_to_end_s,
                     "in_memory": ref["in_memory_s"] / kit.predict_s}
    row["agreement"] = {
        "in_memory": agreement(kit_first.mask, ref["mask"], kit_first.probabilities, ref["probabilities"]),
        "files": {**agreement(kit_file, ref_file), "same_grid": not grid_mismatches(ref_geometry, kit_geometry)}}
    return row


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="CPU smoke test: small model, tiny study, 1 fold without mirroring (flags given "
                             "explicitly still win)")
    parser.add_argument("--model", choices=sorted(MODELS), default="autoPET")
    parser.add_argument("--size", choices=sorted(SIZES), default="full", help="phantom study size")
    parser.add_argument("--seed", type=whole_number(0), default=7, help="phantom study seed")
    parser.add_argument("--device", default="auto", help="auto, cuda or cpu")
    parser.add_argument("--configs", default="1,1tta,5tta",
                        help="comma-separated subset of 1,1tta,5tta ('' for none: memory probes only)")
    parser.add_argument("--reference-configs", default=None,
                        help="configurations nnU-Net also runs (default: all of --configs)")
    parser.add_argument("--no-reference", action="store_true", help="skip nnunetv2's predictor")
    parser.add_argument("--repeats", type=whole_number(1), default=1, help="timed runs per configuration (best kept)")
    parser.add_argument("--compile", action="store_true", help="torch.compile the kit engine's network")
    parser.add_argument("--tile-batch", type=whole_number(1), default=None,
                        help="tiles per forward pass of the kit (default: the engine's, 4 on CUDA, 1 on CPU)")
    parser.add_argument("--long-slices", type=whole_number(0), default=None,
                        help="also measure memory on a study stacked to this many slices "
                             "(default: 660 with --size full, else none; 0: none)")
    parser.add_argument("--no-memory-probe", action="store_true",
                        help="skip the fresh-process memory measurements")
    parser.add_argument("--memory-probes", default="study,long_study",
                        help="which studies the fresh-process memory measurements run on: study, long_study or both")
    parser.add_argument("--json", type=Path, help="write every figure to this JSON file")
    parser.add_argument("--work-dir", type=Path,
                        help="build the study and model here and reuse them next time (default: a temp folder)")
    parser.add_argument("--probe", help=argparse.SUPPRESS)
    if argv is None:
        argv = sys.argv[1:]
    if "--quick" in argv:
        parser.set_defaults(model="small", size="tiny", configs="1")
    args = parser.parse_args(argv)
    unknown = [c for c in args.configs.split(",") + (args.reference_configs or "").split(",") if c and c not in CONFIGS]
    if unknown:
        parser.error(f"unknown configuration(s) {unknown}; choose from {sorted(CONFIGS)}")
    probes = [p for p in args.memory_probes.split(",") if p]
    if not set(probes) <= {"study", "long_study"}:
        parser.error(f"--memory-probes: choose from study, long_study, not {args.memory_probes!r}")
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")
    return args


def nnunet_available() -> bool:
    try:
        import nnunetv2.inference.predict_from_raw_data  # noqa: F401
    except ImportError as exc:
        print(f"nnunetv2 not usable ({exc}); timing the kit alone", file=sys.stderr)
        return False
    return True


def new_report(args: argparse.Namespace, workspace: Workspace, *, device: torch.device, setup_s: float) -> dict:
    counted = tflop_per_patch(workspace.model_dir)
    return {"machine": machine(), "args": {k: v for k, v in vars(args).items() if k != "probe"},
            "device": str(device),
            "setup": {"model": args.model, "size": args.size, "shape_zyx": list(workspace.shape_zyx),
                      "spacing_zyx": list(workspace.spacing_zyx), "channels": [n for n, _ in CHANNELS],
                      "tflop_per_patch_counted": counted,
                      "tflop_per_patch_used": TFLOP_PER_AUTOPET_PATCH if args.model == "autoPET" else counted,
                      "repeats": args.repeats, "compile": args.compile, "tile_batch": args.tile_batch,
                      "setup_s": setup_s},
            "memory": {}, "configs": []}


def save_report(report: dict, path: Path | None) -> None:
    """Goals and process memory brought up to date, and the JSON written (after every step, so a run stopped at
    its time limit keeps what it measured)."""
    report["process_vmhwm_gib"] = vmhwm_gib()
    report["goals"] = goals(report)
    if path is not None:
        write_json_atomic(report, path)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.probe:
        return run_probe(json.loads(args.probe))
    device = resolve_device(args.device)
    long_slices = args.long_slices if args.long_slices is not None else (660 if args.size == "full" else 0)
    configs = [CONFIGS[c] for c in args.configs.split(",") if c]
    reference_keys = set((args.reference_configs or args.configs).split(","))
    have_reference = not args.no_reference and nnunet_available()

    with contextlib.ExitStack() as stack:
        root = args.work_dir or Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench_inference_")))
        workspace, setup_s = build_workspace(root / "inputs", model=args.model, size=args.size, seed=args.seed,
                                             long_slices=long_slices, device=device)
        progress(f"study and model ready under {root} ({setup_s:.1f} s)")
        out_dir = root / "outputs"
        out_dir.mkdir(parents=True, exist_ok=True)
        report = new_report(args, workspace, device=device, setup_s=setup_s)

        # Memory first: it is cheap, and the figures survive a run stopped later at its time limit.
        studies = {} if args.no_memory_probe else {name: getattr(workspace, f"{name}_dir")
                                                   for name in args.memory_probes.split(",") if name}
        for name, study_dir in studies.items():
            if study_dir is not None:
                progress(f"memory probe, {name}: a fresh process")
                probe = memory_probe(workspace.model_dir, study_dir, out_dir, device=str(device),
                                     compile_=args.compile, tile_batch=args.tile_batch)
                report["memory"][name] = probe
                print(f"memory, {name}: {dumps(probe, indent=None)}", flush=True)
                save_report(report, args.json)
        for i, config in enumerate(configs):
            row = measure_config(workspace, config, out_dir, args=args, device=device,
                                 compared=have_reference and config.key in reference_keys, first=i == 0,
                                 tflop_per_patch_used=report["setup"]["tflop_per_patch_used"])
            report["configs"].append(row)
            summary = {k: v for k, v in row.items() if k != "kit"} | {"kit_end_to_end_s": row["kit"]["end_to_end_s"]}
            print(dumps(summary, indent=None), flush=True)
            save_report(report, args.json)
        save_report(report, args.json)  # also when no configuration ran (setup or memory probes only)
        print_report(report)
    return 0


if __name__ == "__main__":
    try:
        raise SystemExit(main())
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
