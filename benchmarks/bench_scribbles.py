"""The autoPET V scribble step: the kit's simulation against the organisers' own, on a full-size phantom.

A full-size phantom study (400 x 400 x 326 voxels, three lesions) and a mask with errors of both kinds
(one lesion missed, one grown by a voxel, a false-positive blob); each step simulates the scribble of both
error regions and picks one, as the organisers' loop does. The organisers' simulation
(`interactive/simulate_scribbles.py` of their repository, which the kit does not ship) runs in a
subprocess from a checkout given with --organisers-repo, with a Python that has its dependencies (numpy,
cc3d, scikit-image, networkx, nibabel); it gets the same arrays as nibabel would load them ((x, y, z),
Fortran order). The scribbles of both must be equal point for point; the script prints the seconds per
call of each and their ratio.

    python benchmarks/bench_scribbles.py --organisers-repo AUTOPETV_CHECKOUT [--organisers-python PY] [--repeats 5]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from evaluation.scribble_simulation import next_scribbles
from petct.argtypes import whole_number
from petct.clicks import Clicks
from petct.editions import SCRIBBLE_STRATEGIES
from petct.phantom import make_study

ROOT = Path(__file__).resolve().parents[1]

# Run with the organisers' interactive/ folder on sys.path: times one step (both regions, then the
# choice) per strategy and prints the new scribble and the mean seconds.
ORGANISERS_STEP = r"""
import json, sys, time
import numpy as np
from simulate_scribbles import simulate_scribble_from_label
gt = np.asfortranarray(np.load(sys.argv[1]).T)
pred = np.asfortranarray(np.load(sys.argv[2]).T)
repeats = int(sys.argv[3])
out = {}
for strategy in sys.argv[4:]:
    t = time.perf_counter()
    for _ in range(repeats):
        over = (pred == 1) & (gt == 0)
        under = (pred == 0) & (gt == 1)
        bg, _, fp = simulate_scribble_from_label(over, strategy)
        fg, _, fn = simulate_scribble_from_label(under, strategy)
    seconds = (time.perf_counter() - t) / repeats
    out[strategy] = {"seconds": seconds, "kind": "tumor" if fp <= fn else "background",
                     "points": fg if fp <= fn else bg}
print(json.dumps(out))
"""


def phantom_pair(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A full-size phantom's label and a mask with both kinds of error, (z, y, x) uint8."""
    study = make_study(seed, size="full", n_lesions=3)
    gt = sitk.GetArrayFromImage(study.seg).astype(np.uint8)
    labels, count = ndimage.label(gt)
    pred = ndimage.binary_dilation(labels == 1).astype(np.uint8)  # lesion 1 grown by a voxel
    if count > 2:
        pred |= (labels == 3).astype(np.uint8)  # lesion 2 missed, lesion 3 right
    z, y, x = (n // 2 for n in gt.shape)
    pred[z - 3:z + 3, y - 8:y + 8, x - 8:x + 8] = 1  # a false-positive blob
    pred[gt.astype(bool) & (labels == 2)] = 0
    return gt, pred


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--organisers-repo", type=Path, required=True,
                        help="a checkout of the organisers' autoPETV repository (commit bf665e2)")
    parser.add_argument("--organisers-python", default=sys.executable,
                        help="a Python with the organisers' dependencies (default: this one)")
    parser.add_argument("--repeats", type=whole_number(1), default=5)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    gt, pred = phantom_pair(args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        np.save(Path(tmp) / "gt.npy", gt)
        np.save(Path(tmp) / "pred.npy", pred)
        result = subprocess.run([args.organisers_python, "-c", ORGANISERS_STEP, str(Path(tmp) / "gt.npy"),
                                 str(Path(tmp) / "pred.npy"), str(args.repeats), *SCRIBBLE_STRATEGIES],
                                cwd=args.organisers_repo / "interactive", capture_output=True, text=True,
                                env={**os.environ, "PYTHONPATH": str(args.organisers_repo / "interactive")})
    if result.returncode != 0:
        raise SystemExit(result.stderr)
    theirs = json.loads(result.stdout)
    print(f"full-size phantom {gt.shape[::-1]} (x, y, z), seed {args.seed}, {args.repeats} repeats per strategy")
    print("| strategy | organisers' step s | kit step s | ratio | same scribble |")
    print("|---|---|---|---|---|")
    for strategy in SCRIBBLE_STRATEGIES:
        t = time.perf_counter()
        for _ in range(args.repeats):
            step = next_scribbles(ground_truth_zyx=gt, prediction_zyx=pred, previous=Clicks(), strategy=strategy)
        kit = (time.perf_counter() - t) / args.repeats
        mine = [list(p) for p in step.scribble.points]
        same = step.kind == theirs[strategy]["kind"] and mine == theirs[strategy]["points"]
        print(f"| {strategy} | {theirs[strategy]['seconds']:.3f} | {kit:.4f} | "
              f"{theirs[strategy]['seconds'] / kit:.0f}x | {'yes' if same else 'NO'} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
