"""How long a campaign of many teams over a test set takes on G GPUs, from per-job times measured here and one
stated figure, the GPU's effective network throughput (`python benchmarks/estimate_campaign.py`).

Measured on this machine, on a full-size phantom study (400x400x326) and the autoPET-shaped nnU-Net model of
benchmarks/bench_inference.py (6 stages, 32-320 features, patch 112x160x128, 5 folds, random weights):

- a job's start: a fresh interpreter importing the kit's algorithm and nnU-Net engine;
- loading the model's folds (5 by default; the checkpoints read and one network built; onto the CPU: a GPU adds its CUDA
  context and the copy of the weights, not measured);
- the study's work around the network, as the container does it: reading and checking the inputs,
  preprocessing, the sliding window's tiles (counted), post-processing and writing the mask. The network is
  replaced by a stand-in that returns zeros, so these stages are the kit's own and the network's share is left
  out (the stand-in's line also holds the CPU's tile bookkeeping, which a GPU does on the device: not counted);
- the organiser's side per job: scoring one mask (Dice, FPV, FNV; the 2026 step's DMM) and, for 2026, simulating
  the next scribble.

Stated, not measured here: the network's forward passes on the GPU, as tiles x mirrorings x folds x TFLOP per
patch / effective TFLOP/s (`--tflops`, several values give a range; 1.05 TFLOP per patch, as bench_inference.py
counts it for this model with torch's FLOP counter, 1.049), and the
container's own start and stop (`--container-s`, from benchmarks/bench_container_jobs.py). CPU work of the
organiser (scoring, scribbles) runs beside the GPUs when the scoring machine has free cores, except the 2026
scribble, which the next step waits for.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch

from bench_inference import (
    CONFIGS,
    FOLDS,
    TFLOP_PER_AUTOPET_PATCH,
    Config,
    build_workspace,
    kit_end_to_end,
    load_kit,
    progress,
)
from evaluation.closed_loop import score_step
from evaluation.scribble_simulation import next_scribbles
from petct.argtypes import non_negative_number, positive_number, whole_number
from petct.clicks import Clicks
from petct.editions import SCRIBBLE_STEPS, edition
from petct.layout import SEG_NAME
from timing import median_s

MIRRORINGS = 8  # nnU-Net's test-time augmentation: every combination of flips along 3 axes
# Jobs per study, as each edition's protocol runs them (petct.editions): 1, 11 clicked steps, 6 loop steps.
STEPS = {"2022/2024": len(edition("autopet-2022").click_steps),
         "2025 clicks": len(edition("autopet-2025-interactive").click_steps), "2026 loop": SCRIBBLE_STEPS}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--teams", type=whole_number(1), default=30)
    parser.add_argument("--studies", type=whole_number(1), default=200)
    parser.add_argument("--gpus", type=whole_number(1), default=8)
    parser.add_argument("--folds", type=whole_number(1, maximum=FOLDS), default=FOLDS,
                        help="folds ensembled per job, loaded and run (default: %(default)s)")
    parser.add_argument("--tflops", type=positive_number, nargs="+", default=[100.0, 150.0, 300.0],
                        help="effective network TFLOP/s of one GPU (default: 100 150 300)")
    parser.add_argument("--container-s", type=non_negative_number, default=0.18,
                        help="a container's own start and stop, s (default: %(default)s, bench_container_jobs.py)")
    parser.add_argument("--repeats", type=whole_number(1), default=3)
    parser.add_argument("--workspace", type=Path, default=Path(tempfile.gettempdir()) / "petct-estimate-campaign",
                        help="study and model, kept and reused (default: %(default)s)")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    return parser.parse_args(argv)


def job_start_s(repeats: int) -> float:
    """A fresh interpreter importing what a job of the kit's algorithm imports before it reads a study."""
    code = "import algorithm.pipeline, algorithm.nnunet, algorithm.engine_choice"
    return median_s(lambda: subprocess.run([sys.executable, "-c", code], check=True), repeats)


def study_work(workspace, out: Path, repeats: int) -> dict:
    """The kit's stages around the network on the full-size study, 1 fold without mirroring, and its tiles."""
    engine, _ = load_kit(workspace.model_dir, CONFIGS["1"], device="cpu", compile_=False, tile_batch=None)

    def zeros(tiles: torch.Tensor) -> torch.Tensor:  # the network's stand-in: right shape, no work
        return torch.zeros((tiles.shape[0], 2, *tiles.shape[2:]), dtype=tiles.dtype, device=tiles.device)

    engine.network.forward = zeros
    runs = [kit_end_to_end(engine, workspace.study_dir, out / "mask.mha") for _ in range(repeats)]
    best = min(runs, key=lambda r: r.end_to_end_s)
    return {"read_s": best.read_s, "preprocess_s": best.stages.get("preprocess", 0.0),
            "stand_in_network_s": best.stages.get("network", 0.0),
            "postprocess_s": best.stages.get("postprocess", 0.0) + best.stages.get("download", 0.0),
            "write_s": best.write_s, "tiles": int(best.notes["tiles"]), "mask": best.mask}


def organiser_work(workspace, mask: np.ndarray, repeats: int) -> dict:
    """Scoring one full-size mask, and simulating the next scribble from it (a mask with a few lesion errors)."""
    truth = sitk.GetArrayFromImage(sitk.ReadImage(str(workspace.study_dir / f"{SEG_NAME}.mha"))) != 0
    prediction = truth.copy()
    prediction[:, :, : prediction.shape[2] // 2] = False  # misses the lesions of one half
    prediction[mask != 0] = True
    voxel_ml = float(np.prod(workspace.spacing_zyx)) / 1000.0
    score = median_s(lambda: score_step(ground_truth=truth, prediction=prediction, voxel_volume_ml=voxel_ml), repeats)
    scribble = median_s(lambda: next_scribbles(ground_truth_zyx=truth, prediction_zyx=prediction, previous=Clicks(),
                                               strategy="centerline"), repeats)
    return {"score_s": score, "scribble_s": scribble}


def estimate(figures: dict, args: argparse.Namespace, tflops: float) -> dict:
    """Per protocol: GPU-occupied seconds per job, jobs, and the campaign's wall time on args.gpus GPUs."""
    network_s = figures["tiles"] * MIRRORINGS * args.folds * figures["tflop_per_patch"] / tflops
    fixed_s = args.container_s + figures["job_start_s"] + figures["model_load_s"]
    around_s = figures["read_s"] + figures["preprocess_s"] + figures["postprocess_s"] + figures["write_s"]
    rows = {}
    for protocol, steps in STEPS.items():
        per_job = fixed_s + around_s + network_s + (figures["scribble_s"] if protocol == "2026 loop" else 0.0)
        jobs = args.teams * args.studies * steps
        rows[protocol] = {"per_job_s": per_job, "jobs": jobs, "wall_h": jobs * per_job / args.gpus / 3600,
                          "network_share": network_s / per_job, "fixed_share": fixed_s / per_job}
    # The 2026 loop in one process per study (the kit's `python -m algorithm loop`): start, model load, reading
    # and preprocessing once; each step runs the network, post-processes, writes and waits for its scribble.
    steps = STEPS["2026 loop"]
    once_s = fixed_s + figures["read_s"] + figures["preprocess_s"]
    per_step_s = network_s + figures["postprocess_s"] + figures["write_s"] + figures["scribble_s"]
    per_study = once_s + steps * per_step_s
    rows["2026 loop, one process per study"] = {
        "per_job_s": per_study / steps, "jobs": args.teams * args.studies * steps,
        "wall_h": args.teams * args.studies * per_study / args.gpus / 3600,
        "network_share": steps * network_s / per_study, "fixed_share": fixed_s / per_study}
    return {"tflops": tflops, "network_s": network_s, "protocols": rows}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    progress("workspace: full-size study and the autoPET-shaped model (built once, then reused)")
    workspace, _ = build_workspace(args.workspace, model="autoPET", size="full", seed=0, long_slices=0,
                                   device=torch.device("cpu"))
    progress("a job's start: interpreter and imports")
    figures = {"job_start_s": job_start_s(args.repeats)}
    progress(f"loading the {args.folds}-fold model")
    folds = Config(f"{args.folds}tta", tuple(range(args.folds)), mirroring=True)
    figures["model_load_s"] = median_s(lambda: load_kit(workspace.model_dir, folds, device="cpu", compile_=False,
                                                         tile_batch=None), args.repeats)
    progress("the study's stages around the network")
    with tempfile.TemporaryDirectory() as out:
        work = study_work(workspace, Path(out), args.repeats)
    mask = work.pop("mask")
    figures.update(work)
    progress("the organiser's scoring and scribble per job")
    figures.update(organiser_work(workspace, mask, args.repeats))
    figures["tflop_per_patch"] = TFLOP_PER_AUTOPET_PATCH
    estimates = [estimate(figures, args, tflops) for tflops in args.tflops]
    print_report(figures, estimates, args)
    if args.json is not None:
        args.json.write_text(json.dumps({"figures": figures, "estimates": estimates, "args": {
            k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}}, indent=1))
    return 0


def print_report(figures: dict, estimates: list[dict], args: argparse.Namespace) -> None:
    print("\nMeasured per job on this machine (s):")
    for key in ("job_start_s", "model_load_s", "read_s", "preprocess_s", "postprocess_s", "write_s", "score_s",
                "scribble_s", "stand_in_network_s"):
        print(f"  {key:<22} {figures[key]:8.2f}")
    print(f"  tiles per study: {figures['tiles']}; forward passes per job: {figures['tiles']} x {MIRRORINGS} "
          f"mirrorings x {args.folds} folds = {figures['tiles'] * MIRRORINGS * args.folds}, "
          f"{figures['tflop_per_patch']} TFLOP each")
    print(f"\n{args.teams} teams x {args.studies} studies on {args.gpus} GPUs, container start {args.container_s} s:")
    print("| protocol | GPU TFLOP/s | network s/job | GPU-occupied s/job | jobs | wall h | network share |")
    print("|---|---|---|---|---|---|---|")
    for e in estimates:
        for protocol, row in e["protocols"].items():
            print(f"| {protocol} | {e['tflops']:g} | {e['network_s']:.1f} | {row['per_job_s']:.1f} | {row['jobs']} | "
                  f"{row['wall_h']:.1f} | {100 * row['network_share']:.0f} % |")


if __name__ == "__main__":
    raise SystemExit(main())
