"""Benchmark of the scoring container on a full-size phantom study with a noisy prediction.

Measures, in one run: the time to score ÷ the time to read the two files (goal ≤ 1.5), the speed-up
over a per-component loop reference written below (goal ≥ 20×), the peak memory of a process that
scores one study (goal ≤ 1.5 GB), and studies per second through the worker pool with 1 and 2 workers.

    python benchmarks/bench_evaluation.py [--fp-components 1500] [--reference-components N]

Prints a Markdown section for BENCHMARKS.md.
"""
from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cc3d
import numpy as np
import SimpleITK as sitk

from evaluation.batch import score_cases
from evaluation.metrics import score_arrays
from evaluation.pairing import Case
from evaluation.scoring import score_files
from petct.argtypes import whole_number
from petct.imageio import Geometry, image_from_array, read_array, write_image_atomic
from petct.lesions import LESION_CONNECTIVITY
from petct.phantom import make_study
from timing import best_of

GOAL_RATIO, GOAL_SPEEDUP, GOAL_PEAK_GB = 1.5, 20.0, 1.5


def noisy_prediction(gt: np.ndarray, region: np.ndarray, *, components: int, seed: int) -> np.ndarray:
    """The ground truth shifted by one voxel, its last lesion dropped, plus `components` small false
    positives (1 to 3 voxels) at random voxels of `region`."""
    rng = np.random.default_rng(seed)
    labels, n = cc3d.connected_components(gt, connectivity=LESION_CONNECTIVITY, return_N=True)
    pred = np.roll(np.where(labels == n, 0, gt), 1, axis=2).astype(np.uint8)
    candidates = np.flatnonzero(region.ravel() & (gt.ravel() == 0))
    # Spread out: drawing many more than needed and keeping every 4th in index order avoids blobs merging.
    starts = np.sort(rng.choice(candidates, size=components * 4, replace=False))[::4]
    lengths = rng.integers(1, 4, size=starts.size)
    for start, length in zip(starts, lengths):
        z, y, x = np.unravel_index(start, gt.shape)
        pred[z, y, x: x + length] = 1
    return pred


def reference_loop(gt: np.ndarray, pred: np.ndarray, voxel_ml: float, *, limit: int | None) -> tuple[dict, float]:
    """FPV/FNV the way the published scripts do it: one full-volume comparison per component.

    Returns the metrics and the time; with `limit`, only the first `limit` components per mask are
    looped and the time is extrapolated linearly to all of them (the metrics are then partial).
    """
    start = time.perf_counter()
    gt_labels, n_gt = cc3d.connected_components(gt, connectivity=LESION_CONNECTIVITY, return_N=True)
    pred_labels, n_pred = cc3d.connected_components(pred, connectivity=LESION_CONNECTIVITY, return_N=True)
    setup = time.perf_counter() - start
    gt_bool, pred_bool = gt.astype(bool), pred.astype(bool)
    fp = fn = 0
    looped = 0
    start = time.perf_counter()
    for label in range(1, (n_pred if limit is None else min(limit, n_pred)) + 1):
        component = pred_labels == label
        if not np.logical_and(component, gt_bool).any():
            fp += int(component.sum())
        looped += 1
    for label in range(1, (n_gt if limit is None else min(limit, n_gt)) + 1):
        component = gt_labels == label
        if not np.logical_and(component, pred_bool).any():
            fn += int(component.sum())
        looped += 1
    loop = time.perf_counter() - start
    total = setup + loop * (n_pred + n_gt) / max(looped, 1)
    return {"false_positive_volume": fp * voxel_ml, "false_negative_volume": fn * voxel_ml,
            "components": n_pred + n_gt, "looped": looped}, total


def peak_memory_gb(gt: Path, pred: Path) -> tuple[float, float]:
    """Peak resident memory (GB) of a fresh process that scores one study, and of one that only imports."""
    # VmHWM, not getrusage's ru_maxrss: Linux carries ru_maxrss over exec from the (large) parent.
    def child(code: str) -> float:
        script = ("from evaluation.scoring import score_files\n"
                  f"{code}\n"
                  "print([l for l in open('/proc/self/status') if l.startswith('VmHWM')][0].split()[1])")
        out = subprocess.run([sys.executable, "-c", script], check=True, capture_output=True, text=True).stdout
        return int(out.split()[-1]) / 1024 ** 2  # KiB
    return (child(f"score_files(ground_truth={str(gt)!r}, prediction={str(pred)!r}, study='bench')"),
            child("pass"))


def studies_per_second(gt: Path, pred: Path, *, workers: int, count: int) -> float:
    cases = [Case(study=f"bench_{i}", ground_truth=gt, prediction=pred) for i in range(count)]
    score_cases(cases[:1], workers=1, progress=False)  # start the fork server outside the timing
    start = time.perf_counter()
    results, problems = score_cases(cases, workers=workers, progress=False)
    elapsed = time.perf_counter() - start
    assert not problems and len(results) == count, problems
    return count / elapsed


def measure(gt_path: Path, pred_path: Path, *, repeats: int) -> dict:
    read_s, ((gt, geometry), (pred, _)) = best_of(repeats, lambda: (read_array(gt_path), read_array(pred_path)))
    voxel_ml = geometry.voxel_volume_ml
    score_s, metrics = best_of(repeats, lambda: score_arrays(ground_truth=gt, prediction=pred,
                                                             voxel_volume_ml=voxel_ml))
    files_s, _ = best_of(repeats, lambda: score_files(ground_truth=gt_path, prediction=pred_path))
    return {"read_s": read_s, "score_s": score_s, "score_files_s": files_s, "ratio": score_s / read_s,
            "metrics": metrics, "gt": gt, "pred": pred, "voxel_ml": voxel_ml}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seed", type=whole_number(0), default=7)
    parser.add_argument("--fp-components", type=whole_number(0), default=1500, help="false positive blobs to add")
    parser.add_argument("--reference-components", type=whole_number(1), default=None,
                        help="loop only this many components per mask in the reference and extrapolate "
                             "its time (default: loop all of them)")
    parser.add_argument("--repeats", type=whole_number(1), default=3)
    parser.add_argument("--studies", type=whole_number(1), default=6, help="studies per throughput run")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()

    print(f"making a full-size phantom study (seed {args.seed}) ...", file=sys.stderr)
    study = make_study(args.seed, size="full", n_lesions=8)
    gt = sitk.GetArrayFromImage(study.seg)
    geometry = Geometry.of(study.seg)
    body = sitk.GetArrayFromImage(study.ctres) > -500
    with tempfile.TemporaryDirectory(prefix="bench-eval-") as tmp:
        tmp = Path(tmp)
        gt_path = write_image_atomic(study.seg, tmp / "gt" / "PETCT_bench_SEG.mha")
        rows = {}
        for name, region in (("noise in the body", body), ("noise anywhere in the field of view",
                                                            np.ones_like(body))):
            pred = noisy_prediction(gt, region, components=args.fp_components, seed=args.seed)
            pred_path = write_image_atomic(image_from_array(pred, geometry), tmp / name.replace(" ", "_") / "p.mha")
            print(f"measuring: {name} ...", file=sys.stderr)
            rows[name] = measure(gt_path, pred_path, repeats=args.repeats)
            rows[name]["pred_path"] = pred_path
        main_row = rows["noise in the body"]
        m = main_row["metrics"]
        assert m.fp_components >= 1000, f"only {m.fp_components} false positive components"

        print("running the per-component reference loop ...", file=sys.stderr)
        ref, ref_s = reference_loop(main_row["gt"], main_row["pred"], main_row["voxel_ml"],
                                    limit=args.reference_components)
        if args.reference_components is None:  # the loop saw everything: its answer must agree
            assert abs(ref["false_positive_volume"] - m.false_positive_volume) < 1e-9
            assert abs(ref["false_negative_volume"] - m.false_negative_volume) < 1e-9
        speedup = ref_s / main_row["score_s"]

        print("measuring peak memory and throughput ...", file=sys.stderr)
        peak_gb, import_gb = peak_memory_gb(gt_path, main_row["pred_path"])
        throughput = {w: studies_per_second(gt_path, main_row["pred_path"], workers=w, count=args.studies)
                      for w in (1, 2)}

    figures = {
        "shape_zyx": list(gt.shape), "fp_components": m.fp_components, "gt_lesions": m.gt_lesions,
        "rows": {name: {k: row[k] for k in ("read_s", "score_s", "score_files_s", "ratio")}
                 for name, row in rows.items()},
        "reference_s": ref_s, "reference_extrapolated": args.reference_components is not None,
        "speedup": speedup, "peak_gb": peak_gb, "import_only_gb": import_gb,
        "studies_per_s": {str(w): v for w, v in throughput.items()},
    }
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))
    print(markdown(figures))
    return 0


def markdown(f: dict) -> str:
    ok = lambda good: "meets goal" if good else "MISSES goal"  # noqa: E731
    lines = [
        "## Evaluation (scoring container)",
        "",
        f"`python benchmarks/bench_evaluation.py` — {platform.machine()}, {platform.python_version()}; "
        f"one full-size phantom study ({' × '.join(map(str, f['shape_zyx']))} voxels, z × y × x), "
        f"{f['gt_lesions']} ground-truth lesions, prediction with {f['fp_components']} false-positive "
        "components; both files compressed .mha. Times are the best of the repeats.",
        "",
        "| prediction | read 2 files | score (in memory) | score ÷ read | score_files (read + check + score) |",
        "|---|---|---|---|---|",
    ]
    for name, row in f["rows"].items():
        lines.append(f"| {name} | {row['read_s'] * 1000:.0f} ms | {row['score_s'] * 1000:.0f} ms | "
                     f"{row['ratio']:.2f} | {row['score_files_s'] * 1000:.0f} ms |")
    main_row = f["rows"]["noise in the body"]
    extrapolated = " (extrapolated)" if f["reference_extrapolated"] else ""
    lines += [
        "",
        f"- score ÷ read (noise in the body): **{main_row['ratio']:.2f}** (goal ≤ {GOAL_RATIO}; "
        f"{ok(main_row['ratio'] <= GOAL_RATIO)})",
        f"- per-component loop reference: {f['reference_s']:.1f} s{extrapolated} vs "
        f"{main_row['score_s'] * 1000:.0f} ms — **{f['speedup']:.0f}×** faster (goal ≥ {GOAL_SPEEDUP:.0f}×; "
        f"{ok(f['speedup'] >= GOAL_SPEEDUP)})",
        f"- peak memory of a process scoring one study: **{f['peak_gb']:.2f} GB** (imports alone "
        f"{f['import_only_gb']:.2f} GB; goal ≤ {GOAL_PEAK_GB} GB; {ok(f['peak_gb'] <= GOAL_PEAK_GB)})",
        f"- throughput through the worker pool (process per study): "
        f"{f['studies_per_s']['1']:.2f} studies/s with 1 worker, {f['studies_per_s']['2']:.2f} with 2",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
