"""The weight-free baseline engine against a plain SUV >= 4 threshold on phantom studies.

Scores each study with the evaluation container's scorer (leaderboard metrics: Dice over positive
studies, false positive volume over all, false negative volume over positive ones) and prints a
Markdown table, the FPV ratio, and seconds per study.

    python benchmarks/bench_baseline.py [--size small] [--seeds 20]
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import SimpleITK as sitk

from algorithm.baseline import BaselineEngine
from evaluation.metrics import score_arrays
from petct.argtypes import whole_number
from petct.phantom import SIZES, make_study

PLAIN_THRESHOLD_SUV = 4.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", choices=sorted(SIZES), default="small")
    parser.add_argument("--seeds", type=whole_number(1), default=20, help="studies with seeds 0..N-1")
    args = parser.parse_args()

    engine = BaselineEngine()
    scores = {"SUV >= 4 threshold": [], "baseline engine": []}
    seconds = {name: 0.0 for name in scores}
    positives = 0
    for seed in range(args.seeds):
        study = make_study(seed, size=args.size)
        pet, ct = sitk.GetArrayFromImage(study.suv), sitk.GetArrayFromImage(study.ctres)
        seg = sitk.GetArrayFromImage(study.seg)
        spacing = study.suv.GetSpacing()[::-1]
        voxel_ml = float(np.prod(spacing)) / 1000
        positives += bool(seg.any())

        start = time.perf_counter()
        plain = pet >= PLAIN_THRESHOLD_SUV
        seconds["SUV >= 4 threshold"] += time.perf_counter() - start
        start = time.perf_counter()
        mask = engine.predict(pet=pet, ct=ct, spacing_zyx=spacing).mask
        seconds["baseline engine"] += time.perf_counter() - start
        for name, prediction in (("SUV >= 4 threshold", plain), ("baseline engine", mask)):
            scores[name].append(score_arrays(ground_truth=seg, prediction=prediction, voxel_volume_ml=voxel_ml))

    def mean(name, metric):
        return float(np.nanmean([getattr(s, metric) for s in scores[name]]))

    size = "x".join(map(str, SIZES[args.size]))
    print(f"{args.seeds} phantom studies, size {args.size} ({size} voxels), {positives} positive\n")
    print("| method | mean Dice | mean FPV (ml) | mean FNV (ml) | lesions found | s / study |")
    print("|---|---|---|---|---|---|")
    for name in scores:
        found = sum(s.detected_lesions for s in scores[name])
        total = sum(s.gt_lesions for s in scores[name])
        print(f"| {name} | {mean(name, 'dice'):.3f} | {mean(name, 'false_positive_volume'):.1f} | "
              f"{mean(name, 'false_negative_volume'):.1f} | {found}/{total} | {seconds[name] / args.seeds:.3f} |")
    plain_fpv, base_fpv = mean("SUV >= 4 threshold", "false_positive_volume"), mean("baseline engine", "false_positive_volume")
    ratio = "inf (baseline FPV 0)" if base_fpv == 0 else f"{plain_fpv / base_fpv:.1f}x"
    print(f"\nFPV ratio (threshold / baseline): {ratio}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
