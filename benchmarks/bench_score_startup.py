"""Benchmark: scoring one full-size study from the command line vs reading its two files, start-up included.

Both sides are fresh Python processes, as a user or CI runs them:
  kit        python -m evaluation score-pair GT PRED   (read, check the grids, score, print JSON)
  reference  python -c "<read both files with SimpleITK into numpy arrays>"
The ratio kit ÷ reference is the cost of everything beyond reading the data (goal ≤ 1.3).

    python benchmarks/bench_score_startup.py [--repeats 7] [--kit DIR]

`--kit DIR` times another checkout of the kit (e.g. an older commit, unpacked with `git archive`).

Prints a Markdown section for BENCHMARKS.md.
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from petct.argtypes import whole_number
from petct.imageio import Geometry, image_from_array, write_image_atomic
from petct.phantom import make_study

ROOT = Path(__file__).resolve().parents[1]

GOAL_RATIO = 1.3
READ_BOTH = ("import sys, SimpleITK as sitk\n"
             "arrays = [sitk.GetArrayFromImage(sitk.ReadImage(path)) for path in sys.argv[1:]]\n"
             "print(sum(int(a.sum()) for a in arrays))")


def timed(argv: list[str], *, cwd: Path = ROOT) -> tuple[float, str]:
    """Wall time of one fresh process started in `cwd`, and its stdout; it must succeed."""
    start = time.perf_counter()
    run = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, check=True)
    return time.perf_counter() - start, run.stdout


def study_files(folder: Path, *, seed: int) -> tuple[Path, Path]:
    """A full-size phantom's mask and a prediction off by one voxel, both compressed .mha as the platform stores them."""
    study = make_study(seed, size="full", n_lesions=6)
    gt = folder / "SEG.mha"
    write_image_atomic(study.seg, gt, compress=True)
    pred_array = np.roll(sitk.GetArrayFromImage(study.seg), 1, axis=2).astype(np.uint8)
    pred = write_image_atomic(image_from_array(pred_array, Geometry.of(study.seg)), folder / "PRED.mha", compress=True)
    return gt, pred


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=whole_number(1), default=7, help="runs per side, alternating")
    parser.add_argument("--seed", type=int, default=3)
    parser.add_argument("--kit", type=Path, default=ROOT, help="checkout of the kit to time (default: this one)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-score-startup-") as tmp:
        gt, pred = study_files(Path(tmp), seed=args.seed)
        kit_argv = [sys.executable, "-m", "evaluation", "score-pair", str(gt), str(pred)]
        reference_argv = [sys.executable, "-c", READ_BOTH, str(gt), str(pred)]
        timed(kit_argv, cwd=args.kit), timed(reference_argv)  # warm the page cache and the bytecode caches
        kit, reference = [], []
        for _ in range(args.repeats):
            seconds, out = timed(kit_argv, cwd=args.kit)
            kit.append(seconds)
            reference.append(timed(reference_argv)[0])
        dice = json.loads(out)["dice"]
    kit_s, reference_s = statistics.median(kit), statistics.median(reference)
    ratio = kit_s / reference_s
    kit_note = "" if args.kit == ROOT else f" --kit {args.kit}"
    print(f"`.venv/bin/python benchmarks/bench_score_startup.py --repeats {args.repeats}{kit_note}` — "
          f"{platform.machine()}, {time.strftime('%Y-%m-%d')}; Python {platform.python_version()}. One full-size phantom "
          f"study (326 × 400 × 400), mask and prediction compressed .mha, Dice {dice:.3f}. Median of {args.repeats} "
          "fresh processes per side, alternating.\n")
    print("| command | median (s) | best (s) |\n|---|---|---|")
    print(f"| `python -m evaluation score-pair GT PRED` | {kit_s:.3f} | {min(kit):.3f} |")
    print(f"| reference: `python -c` reading both files with SimpleITK | {reference_s:.3f} | {min(reference):.3f} |")
    print(f"\n- score-pair ÷ reading: **{ratio:.2f}** (goal ≤ {GOAL_RATIO})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
