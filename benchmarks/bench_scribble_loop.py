"""The autoPET V closed loop: the kit's one-process loop against a fresh algorithm run per step, and the
weight-free baseline's curve over the steps.

Part 1 (loop): one `small` phantom study, a small random-weight 4-channel nnU-Net model (CT, PET, FG, BG as
the organisers' baseline), fold 0, --no-tta, on the CPU. `python -m algorithm loop` runs the 6 steps (model
loaded and CT/PET preprocessed once); then each step's scribbles are given to a fresh `python -m algorithm`,
as the organisers' loop starts a job per step. Prints both wall times, their ratio and whether every
step's masks are identical.
Part 2 (--curve): the baseline engine over the loop on phantoms with a hot lesion-free blob (bench_clicks'
variant) and on plain phantoms, each strategy on every study: mean Dice, DMM and FPV per step.

    python benchmarks/bench_scribble_loop.py [--steps 6] [--curve --seeds 6 --size small]
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from petct.argtypes import whole_number
from petct.phantom import SIZES, make_study

ROOT = Path(__file__).resolve().parents[1]

OUTPUT = Path("images/tumor-lesion-segmentation/study.mha")


def build(root: Path) -> tuple[Path, Path, Path]:
    """The study in the platform's layout, its label, and the model folder."""
    import torch

    from suite_helpers import test_helpers

    write_scribble_model = test_helpers("nnunet_helpers").write_scribble_model

    torch.set_num_threads(2)
    study = make_study(11, size="small", n_lesions=3)
    inp = root / "in"
    for sub, image in (("pet", study.suv), ("ct", study.ctres)):
        (inp / "images" / sub).mkdir(parents=True)
        sitk.WriteImage(image, str(inp / "images" / sub / "study.mha"))
    sitk.WriteImage(study.seg, str(root / "SEG.mha"))
    spacing = [float(s) for s in reversed(study.suv.GetSpacing())]
    model = write_scribble_model(root / "model", spacing=spacing, patch_size=(48, 64, 64))
    return inp, root / "SEG.mha", model


def run(argv: list[str]) -> float:
    start = time.perf_counter()
    result = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True,
                            env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "2"})
    if result.returncode != 0:
        raise SystemExit(result.stderr[-3000:])
    return time.perf_counter() - start


def loop_against_fresh_runs(steps: int) -> None:
    model_args = ["--folds", "0", "--no-tta", "--device", "cpu"]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        inp, seg, model = build(root)
        loop = run([sys.executable, "-m", "algorithm", "loop", "--input", str(inp), "--ground-truth", str(seg),
                    "--output", str(root / "loop"), "--strategy", "centerline", "--steps", str(steps),
                    "--model", str(model), *model_args])
        fresh, same = 0.0, True
        for step in range(steps):
            given = root / "loop" / f"step_{step}" / "lesion-clicks.json"
            (inp / "lesion-clicks.json").write_bytes(given.read_bytes())
            out = root / f"fresh_{step}"
            fresh += run([sys.executable, "-m", "algorithm", "--challenge", "autopet-2026-interactive", "--input",
                          str(inp), "--output", str(out), "--model", str(model), *model_args])
            a = sitk.GetArrayFromImage(sitk.ReadImage(str(root / "loop" / f"step_{step}" / OUTPUT)))
            b = sitk.GetArrayFromImage(sitk.ReadImage(str(out / OUTPUT)))
            same &= bool(np.array_equal(a, b))
        print(f"{steps} steps, small phantom {SIZES['small']} (x, y, z), 4-channel model, fold 0, --no-tta, CPU")
        print("| run | wall s |\n|---|---|")
        print(f"| `python -m algorithm loop` ({steps} steps, one process) | {loop:.1f} |")
        print(f"| a fresh `python -m algorithm` per step | {fresh:.1f} |")
        print(f"ratio {fresh / loop:.2f}x; masks identical at every step: {'yes' if same else 'NO'}")


def baseline_curve(*, seeds: int, size: str, steps: int) -> None:
    from algorithm.baseline import BaselineEngine
    from bench_clicks import hot_blob
    from evaluation.closed_loop import score_step
    from evaluation.scribble_simulation import next_scribbles
    from petct.clicks import Clicks
    from petct.editions import SCRIBBLE_STRATEGIES

    engine = BaselineEngine()
    print(f"\nbaseline engine over the loop: {seeds} phantoms ({size}), each with every strategy, {steps} steps")
    print("| phantoms | step | mean Dice | mean DMM | mean FPV ml |\n|---|---|---|---|---|")
    for distractor in (True, False):
        curves = []
        for seed in range(seeds):
            study = make_study(seed, size=size)
            truth = sitk.GetArrayFromImage(study.seg)
            pet = sitk.GetArrayFromImage(study.suv).astype(np.float32)
            pet = hot_blob(pet, truth) if distractor else pet
            ct = sitk.GetArrayFromImage(study.ctres).astype(np.float32)
            spacing = study.suv.GetSpacing()[::-1]
            voxel_ml = float(np.prod(spacing)) / 1000
            for strategy in SCRIBBLE_STRATEGIES:
                scribbles, curve, mask = Clicks(), [], None  # step 0 has no mask to scribble on
                for step in range(steps):
                    if step:
                        scribbles = next_scribbles(ground_truth_zyx=truth, prediction_zyx=mask, previous=scribbles,
                                                   strategy=strategy).scribbles
                    mask = engine.predict(pet=pet, ct=ct, spacing_zyx=spacing, clicks=scribbles).mask
                    m = score_step(ground_truth=truth, prediction=mask, voxel_volume_ml=voxel_ml)
                    curve.append((m.dice, m.dmm, m.false_positive_volume))
                curves.append(curve)
        data = np.array(curves, dtype=float)  # study x step x metric
        label = "with a hot lesion-free blob" if distractor else "plain"
        for step in range(steps):
            dice, dmm, fpv = (np.nanmean(data[:, step, i]) for i in range(3))
            print(f"| {label} | {step} | {dice:.3f} | {dmm:.3f} | {fpv:.2f} |")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=whole_number(2), default=6)
    parser.add_argument("--curve", action="store_true", help="also the baseline's curve over the loop")
    parser.add_argument("--no-loop", action="store_true", help="skip part 1")
    parser.add_argument("--seeds", type=whole_number(1), default=6)
    parser.add_argument("--size", choices=sorted(SIZES), default="small")
    args = parser.parse_args()
    if not args.no_loop:
        loop_against_fresh_runs(args.steps)
    if args.curve:
        baseline_curve(seeds=args.seeds, size=args.size, steps=args.steps)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
