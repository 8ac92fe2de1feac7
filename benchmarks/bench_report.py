"""Benchmark of the organiser's report and of the overlay MIP.

1. `python -m evaluation report` over 3 submissions x 1000 studies (phantom-derived metrics: a full-size-like
   spread of volumes; one metrics.json per submission) with 1000 bootstrap resamples, no images: wall seconds
   and peak memory of the process; the reference in the same run is `python -m evaluation rank` on the same
   files (the leaderboard alone).
2. The overlay MIP (coronal and sagittal RGB arrays, `evaluation.mip.overlay_mip`) of a full-size phantom study
   (400 x 400 x 326) with a noisy prediction, against reading its three files (SUV, ground truth, prediction);
   goal <= 0.5 x the read time. Best of 3 each.

    python benchmarks/bench_report.py [--studies 1000] [--resamples 1000]

Prints a Markdown section for BENCHMARKS.md.
"""
from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

import numpy as np

from evaluation.mip import VIEWS, overlay_mip, read_study
from petct.imageio import image_from_array, read_array, write_image_atomic
from petct.phantom import make_study
from suite_helpers import test_helpers
from timing import best_of

ROOT = Path(__file__).resolve().parents[1]

random_metrics = test_helpers("report_helpers").random_metrics
write_metrics = test_helpers("report_helpers").write_metrics

GOAL_MIP_RATIO = 0.5
PEAK = ("import resource, subprocess, sys; r = subprocess.run(sys.argv[1:], capture_output=True); "
        "print(r.returncode, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)")


def timed_command(argv: list[str]) -> tuple[float, float]:
    """(wall seconds, peak resident MiB) of a command, measured from a parent that runs only it."""
    start = time.perf_counter()
    run = subprocess.run([sys.executable, "-c", PEAK, *argv], capture_output=True, text=True, cwd=ROOT,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    seconds = time.perf_counter() - start
    code, peak_kib = run.stdout.split()
    if code != "0":
        raise SystemExit(f"{argv} failed: {run.stderr}")
    return seconds, int(peak_kib) / 1024


def bench_report(folder: Path, *, studies: int, resamples: int) -> list[str]:
    rng = np.random.default_rng(0)
    names = [f"PETCT_{i:05d}" for i in range(studies)]
    paths = [str(write_metrics(folder / f"team{k}" / "metrics.json", random_metrics(rng, names, quality=q)))
             for k, q in enumerate((0.70, 0.65, 0.60))]
    report_s, report_mib = timed_command([sys.executable, "-m", "evaluation", "report", *paths, "--output",
                                          str(folder / "report.html"), "--resamples", str(resamples)])
    rank_s, rank_mib = timed_command([sys.executable, "-m", "evaluation", "rank", *paths])
    size_mib = (folder / "report.html").stat().st_size / 2**20
    return [f"| report, {len(paths)} submissions x {studies} studies, {resamples} resamples | {report_s:.1f} s | "
            f"{report_mib:.0f} MiB | {size_mib:.1f} MiB HTML |",
            f"| reference: `rank` on the same files | {rank_s:.1f} s | {rank_mib:.0f} MiB | ratio {report_s / rank_s:.1f}x |"]


def bench_mip(folder: Path) -> list[str]:
    study = make_study(3, size="full", n_lesions=6)
    out = study.write(folder / "full")
    gt, geometry = read_array(out / "SEG.mha")
    rng = np.random.default_rng(1)
    pred = np.roll(gt, 1, axis=2)
    body = np.flatnonzero(read_array(out / "SUV.mha")[0].ravel() > 0.5)
    pred.ravel()[rng.choice(body, size=300, replace=False)] = 1  # scattered false positives
    write_image_atomic(image_from_array(pred.astype(np.uint8), geometry), folder / "full" / "PRED.mha")
    files = {"suv": out / "SUV.mha", "ground_truth": out / "SEG.mha", "prediction": folder / "full" / "PRED.mha"}
    read_s, _ = best_of(3, lambda: read_study(**files))
    arrays = read_study(**files)
    mip_s, _ = best_of(3, lambda: [overlay_mip(arrays, view=view) for view in VIEWS])
    ratio = mip_s / read_s
    shape = "x".join(map(str, arrays.suv.shape))
    return [f"| read SUV + ground truth + prediction ({shape}, compressed .mha) | {read_s * 1000:.0f} ms |",
            f"| coronal + sagittal overlay MIP (RGB arrays) | {mip_s * 1000:.0f} ms |",
            "",
            f"- MIP / read: **{ratio:.2f}** (goal <= {GOAL_MIP_RATIO})"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--studies", type=int, default=1000)
    parser.add_argument("--resamples", type=int, default=1000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        report = bench_report(Path(tmp), studies=args.studies, resamples=args.resamples)
        mip = bench_mip(Path(tmp))
    print(f"## Report and MIP\n\n`.venv/bin/python benchmarks/bench_report.py` — {platform.machine()}, "
          f"{os.cpu_count()} CPUs, no GPU, {date.today()}.\n")
    print("| run | wall | peak memory | note |\n|---|---|---|---|")
    print("\n".join(report))
    print("\n| step | best of 3 |\n|---|---|")
    print("\n".join(mip))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
