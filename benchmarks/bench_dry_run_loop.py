"""The 2026 dry run end to end: its default (each study's loop in one `python -m algorithm loop` process) against
a fresh `python -m algorithm` per step (`--command`, as the platform runs jobs), on the same phantoms in one run.

Prints both wall times, their ratio and whether every step's masks and scores are identical.

    python benchmarks/bench_dry_run_loop.py [--phantoms 2] [--size tiny] [--steps 6] [--model DIR]
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk

ROOT = Path(__file__).resolve().parents[1]


def dry_run(folder: Path, args, *extra: str) -> float:
    argv = [sys.executable, "-m", "app", "dry-run", "--challenge", "autopet-2026-interactive", "--phantoms",
            str(args.phantoms), "--phantom-size", args.size, "--steps", str(args.steps), "--strategy", "mixed",
            "--workdir", str(folder / "work"), "--output", str(folder / "out"), *extra]
    started = time.perf_counter()
    subprocess.run(argv, cwd=ROOT, check=True, capture_output=True)
    return time.perf_counter() - started


def outcome(folder: Path) -> tuple[dict, dict]:
    """Per-study step metrics, and each (study, step)'s mask."""
    metrics = json.loads((folder / "out" / "metrics.json").read_text())
    runs = json.loads((folder / "out" / "dry-run.json").read_text())["studies"]
    masks = {}
    for run in runs:
        if run["job"]:
            (mask,) = (folder / "work" / "jobs" / run["job"] / "output" / "images" / "tumor-lesion-segmentation"
                       ).iterdir()
            masks[(run["study"], run["step"])] = sitk.GetArrayFromImage(sitk.ReadImage(str(mask)))
    return {r["study"]: r["steps"] for r in metrics["case"].values()}, masks


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--phantoms", type=int, default=2)
    parser.add_argument("--size", choices=("tiny", "small"), default="tiny")
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--model", type=Path, help="an nnU-Net results folder (default: the weight-free baseline)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        model = ["--model", str(args.model.resolve())] if args.model else []
        command = f"{sys.executable} -m algorithm --input {{input}} --output {{output}}" + \
            (f" --model {args.model.resolve()}" if args.model else "")
        loop_s = dry_run(root / "loop", args, *model)
        separate_s = dry_run(root / "separate", args, "--command", command)
        loop_steps, loop_masks = outcome(root / "loop")
        separate_steps, separate_masks = outcome(root / "separate")
    same = loop_steps == separate_steps and loop_masks.keys() == separate_masks.keys() and all(
        np.array_equal(loop_masks[k], separate_masks[k]) for k in loop_masks)
    print(f"{args.phantoms} {args.size} phantom(s), {args.steps} steps, "
          f"{'model ' + str(args.model) if args.model else 'baseline engine'}")
    print(f"dry run, one process per study's loop (default): {loop_s:.1f} s")
    print(f"dry run, a fresh python -m algorithm per step (--command): {separate_s:.1f} s")
    print(f"ratio {separate_s / loop_s:.2f}x; masks and scores identical: {'yes' if same else 'NO'}")
    return 0 if same else 1


if __name__ == "__main__":
    raise SystemExit(main())
