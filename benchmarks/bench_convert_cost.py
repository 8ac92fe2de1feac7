"""Cost of a healthy `dataset convert` study against another checkout (`--old DIR`), in interleaved rounds.

`python benchmarks/bench_convert_cost.py --old DIR [--size small|full] [--rounds 5]`

Each round runs bench_dataset.py's kit pipeline (convert_study on one synthetic study, twice in a fresh process:
the second is the steady state) in the old and this checkout, in alternating order, on the same DICOM. Then, in
this process, the changed step alone: the old and the new dataset/outputs.py write_image (the new one reads each
file back before it counts) on the converted study's SUV and SEG, alternating --writes times. Prints the medians
and the new/old ratios; writes bench-out/bench_convert_cost.json.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

from bench_dataset import synthesize
from petct.argtypes import whole_number

REPO = Path(__file__).resolve().parents[1]


def kit_seconds(tree: Path, dicom: Path, out: Path) -> dict:
    shutil.rmtree(out, ignore_errors=True)
    done = subprocess.run([sys.executable, str(tree / "benchmarks" / "bench_dataset.py"), "--one", "kit", "--dicom",
                           str(dicom), "--out", str(out)], cwd=tree, capture_output=True, text=True, check=True,
                          env={**os.environ, "PYTHONPATH": str(tree)})
    return json.loads(done.stdout.strip().splitlines()[-1])


def write_ab(old_tree: Path, converted: Path, folder: Path, *, writes: int) -> dict[str, dict[str, float]]:
    """Median seconds of the old and new write_image on a converted SUV (.nii.gz) and SEG, called alternately."""
    import SimpleITK as sitk

    from dataset import outputs as new
    from petct.imageio import Geometry

    spec = importlib.util.spec_from_file_location("old_outputs", old_tree / "dataset" / "outputs.py")
    old = importlib.util.module_from_spec(spec)
    sys.modules["old_outputs"] = old  # dataclasses look their module up by name
    spec.loader.exec_module(old)
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for name in ("SUV", "SEG"):
        source = next(converted.rglob(f"{name}.nii.gz"))
        image = sitk.ReadImage(str(source))
        array, geometry = sitk.GetArrayFromImage(image), Geometry.of(image)
        times = {"old": [], "new": []}
        for _ in range(writes):
            for tree, module in (("old", old), ("new", new)):
                started = time.perf_counter()
                module.write_image(array, geometry, folder / f"{name}-{tree}.nii.gz")
                times[tree].append(time.perf_counter() - started)
        out[f"write_{name}_s"] = {tree: statistics.median(values) for tree, values in times.items()}
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--old", type=Path, required=True)
    parser.add_argument("--size", choices=("small", "full"), default="small")
    parser.add_argument("--rounds", type=whole_number(1), default=5)
    parser.add_argument("--writes", type=whole_number(1), default=40)
    parser.add_argument("--out", type=Path, default=REPO / "bench-out")
    args = parser.parse_args()
    work = args.out / "bench_convert_cost"
    work.mkdir(parents=True, exist_ok=True)
    dicom = synthesize(work, args.size)
    trees = {"old": args.old.resolve(), "new": REPO}
    figures: dict[str, dict[str, list[float]]] = {name: {} for name in trees}
    for round_ in range(args.rounds):
        for name, tree in sorted(trees.items(), reverse=bool(round_ % 2)):
            result = kit_seconds(tree, dicom, work / f"out-{name}")
            for key in ("seconds", "first_study_seconds", "peak_gb"):
                figures[name].setdefault(key, []).append(result[key])
        print(f"round {round_ + 1}/{args.rounds} done", flush=True)
    medians = {name: {k: statistics.median(v) for k, v in got.items()} for name, got in figures.items()}
    for key, by_tree in write_ab(trees["old"], work / "out-new", work / "writes", writes=args.writes).items():
        for name, value in by_tree.items():
            medians[name][key] = value
    print(f"{args.size} study, medians of {args.rounds} interleaved rounds (old = {trees['old']}):")
    for key in medians["new"]:
        old, new = medians["old"][key], medians["new"][key]
        print(f"  {key:>20}: old {old:.4g}  new {new:.4g}  new/old {new / old:.3f}")
    (args.out / "bench_convert_cost.json").write_text(json.dumps({"medians": medians, "all": figures}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
