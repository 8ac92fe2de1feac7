"""The weight-free baseline with lesion clicks (2025 interactive track) on phantom studies, and the dry run's cost.

Part 1: for each phantom study, the organisers' simulated clicks (petct.click_simulation), the baseline at
every step 0..10, scored with the leaderboard metrics; prints mean Dice, FPV and FNV at 0, 5 and 10 clicks
and the mean areas under the curves (trapezoid over the 11 steps), on plain phantoms and on phantoms with a
hot lesion-free blob added (plain phantoms give the baseline no false positives for clicks to remove).
The reference is the same baseline at step 0 (no clicks), measured in the same run.
Part 2 (--dry-run): wall time of `python -m app dry-run` on one study, the 11-step interactive profile
against the single-job 2022 profile, as the ratio to 11 x the single run.

    python benchmarks/bench_clicks.py [--size small] [--seeds 14] [--dry-run]
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from algorithm.baseline import BaselineEngine
from evaluation.interactive import area_under_curve
from evaluation.metrics import score_arrays
from petct.argtypes import whole_number
from petct.click_simulation import simulate_clicks
from petct.phantom import SIZES, make_study

ROOT = Path(__file__).resolve().parents[1]

METRICS = ("dice", "false_positive_volume", "false_negative_volume")


def hot_blob(pet: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """A lesion-free sphere of SUV 15 in the lower body's soft tissue (radius 2 voxels)."""
    pet = pet.copy()
    z, y, x = np.indices(pet.shape)
    c = (int(pet.shape[0] * 0.3), int(pet.shape[1] * 0.5), int(pet.shape[2] * 0.4))
    pet[((z - c[0]) ** 2 + (y - c[1]) ** 2 + (x - c[2]) ** 2 <= 4) & (mask == 0)] = 15.0
    return pet


def curves(size: str, seeds: int, *, distractor: bool) -> tuple[dict, float]:
    engine = BaselineEngine()
    per_study, seconds, runs = [], 0.0, 0
    for seed in range(seeds):
        study = make_study(seed, size=size)
        mask = sitk.GetArrayFromImage(study.seg)
        pet = sitk.GetArrayFromImage(study.suv).astype(np.float32)
        if distractor:
            pet = hot_blob(pet, mask)
        ct = sitk.GetArrayFromImage(study.ctres).astype(np.float32)
        spacing = study.suv.GetSpacing()[::-1]
        clicks = simulate_clicks(mask_zyx=mask, pet_zyx=pet)
        steps = []
        for k in range(11):
            t = time.perf_counter()
            prediction = engine.predict(pet=pet, ct=ct, spacing_zyx=spacing, clicks=clicks.first(k))
            seconds += time.perf_counter() - t
            runs += 1
            m = score_arrays(ground_truth=mask, prediction=prediction.mask, voxel_volume_ml=np.prod(spacing) / 1000)
            steps.append([float(getattr(m, name)) for name in METRICS])
        per_study.append(np.array(steps))
    data = np.stack(per_study)  # study x step x metric
    summary = {f"{name} @{k}": float(np.nanmean(data[:, k, i])) for k in (0, 5, 10) for i, name in enumerate(METRICS)}
    for i, name in enumerate(METRICS):
        summary[f"{name} AUC"] = float(np.nanmean([area_under_curve(s[:, i]) for s in per_study]))
    return summary, seconds / runs


def dry_run_seconds(challenge: str, size: str) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "PYTHONPATH": str(ROOT), "PETCT_KIT_DATA_CENTRIC": "false"}
        t = time.perf_counter()
        result = subprocess.run([sys.executable, "-m", "app", "dry-run", "--phantoms", "1", "--phantom-size", size,
                                 "--challenge", challenge, "--output", tmp], cwd=ROOT, env=env, capture_output=True,
                                text=True)
        seconds = time.perf_counter() - t
    if result.returncode != 0:
        raise SystemExit(result.stdout + result.stderr)
    return seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", choices=sorted(SIZES), default="small")
    parser.add_argument("--seeds", type=whole_number(1), default=14, help="studies with seeds 0..N-1")
    parser.add_argument("--dry-run", action="store_true", help="also time the 11-step dry run against one job")
    args = parser.parse_args()
    print(f"| phantoms ({args.size}, seeds 0..{args.seeds - 1}) | clicks | mean Dice | mean FPV ml | mean FNV ml |")
    print("|---|---|---|---|---|")
    for distractor in (False, True):
        summary, per_run = curves(args.size, args.seeds, distractor=distractor)
        label = "with a hot lesion-free blob" if distractor else "plain"
        for k in (0, 5, 10):
            print(f"| {label} | {k} | {summary[f'dice @{k}']:.3f} | {summary[f'false_positive_volume @{k}']:.2f} | "
                  f"{summary[f'false_negative_volume @{k}']:.2f} |")
        print(f"| {label} | AUC 0..10 | {summary['dice AUC']:.2f} | {summary['false_positive_volume AUC']:.2f} | "
              f"{summary['false_negative_volume AUC']:.2f} |")
        print(f"<!-- {label}: {per_run:.3f} s per baseline run -->")
    if args.dry_run:
        single = dry_run_seconds("autopet-2022", args.size)
        eleven = dry_run_seconds("autopet-2025-interactive", args.size)
        print(f"\ndry run, one study: 2022 profile (1 job + scoring) {single:.1f} s; 2025 interactive (11 jobs + "
              f"scoring) {eleven:.1f} s; ratio to 11 x single: {eleven / (11 * single):.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
