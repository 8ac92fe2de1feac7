"""Benchmark: `python -m algorithm predict-folder` against `nnUNetv2_predict_from_modelfolder`, end to end.

Both are run as the user runs them, as fresh processes on the same folder and model, so start-up, imports and
model loading count on both sides: the folder is in nnU-Net's raw layout (`study_K_0000.mha` CT,
`study_K_0001.mha` SUV), the model is bench_inference.py's random-weight `small` PlainConvUNet (3 stages,
8-32 features, patch 32x48x48) in nnU-Net's on-disk format, and the studies are phantoms of size `small`
(96x128x128). nnU-Net runs with its defaults (3 preprocessing and 3 export processes). The masks of the two
sides are compared voxel by voxel.

    python benchmarks/bench_batch.py                      # 10 studies, fold 0, no mirroring, CPU
    python benchmarks/bench_batch.py --studies 3 --tta    # with mirroring (both sides)
    python benchmarks/bench_batch.py --device cuda        # on a GPU
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch

from bench_inference import machine, write_model
from petct.argtypes import whole_number
from petct.imageio import write_image_atomic
from petct.jsonio import dumps
from petct.phantom import make_study

REPO = Path(__file__).resolve().parents[1]

GOAL = 2.0  # end-to-end speed-up over nnUNetv2_predict


def build(root: Path, *, studies: int, size: str) -> tuple[Path, Path]:
    """The raw-layout input folder and the model folder under `root` (reused when already built alike)."""
    key = {"studies": studies, "size": size, "version": 1}
    marker = root / "build.json"
    if marker.is_file() and json.loads(marker.read_text()) == key:
        return root / "input", root / "model"
    shutil.rmtree(root, ignore_errors=True)
    for seed in range(studies):
        study = make_study(seed, size=size, n_lesions=4, name=f"study_{seed}")
        # Channel order of bench_inference's dataset.json: 0000 CT, 0001 PET.
        write_image_atomic(study.ctres, root / "input" / f"{study.name}_0000.mha")
        write_image_atomic(study.suv, root / "input" / f"{study.name}_0001.mha")
        if seed == 0:
            study.write(root / "calibration")
            spacing_zyx = tuple(reversed(study.suv.GetSpacing()))
    write_model(root / "model", model="small", spacing_zyx=spacing_zyx, study_dir=root / "calibration" / "study_0",
                device=torch.device("cpu"))
    marker.write_text(json.dumps(key))
    return root / "input", root / "model"


def kit_command(inp: Path, out: Path, model: Path, *, fold: int, tta: bool, device: str) -> list[str]:
    return [sys.executable, "-m", "algorithm", "predict-folder", str(inp), str(out), "--model", str(model),
            "--folds", str(fold), "--device", device, "--suffix", ".mha", "--tta" if tta else "--no-tta"]


def nnunet_command(inp: Path, out: Path, model: Path, *, fold: int, tta: bool, device: str) -> list[str]:
    tool = shutil.which("nnUNetv2_predict_from_modelfolder", path=str(Path(sys.executable).parent)) \
        or shutil.which("nnUNetv2_predict_from_modelfolder")
    if tool is None:
        raise SystemExit("nnUNetv2_predict_from_modelfolder not found: pip install nnunetv2")
    return [tool, "-i", str(inp), "-o", str(out), "-m", str(model), "-f", str(fold), "-device", device,
            "--disable_progress_bar", *([] if tta else ["--disable_tta"])]


def timed_run(argv: list[str], out: Path, names: list[str]) -> tuple[float, float]:
    """Wall-clock and CPU seconds (user + system, the process and its children) of one run of `argv`.

    `argv` must write OUT/<name>.mha for every study. CPU seconds are the steadier figure on a shared machine,
    where wall-clock time depends on what else runs.
    """
    shutil.rmtree(out, ignore_errors=True)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run(argv, cwd=REPO, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    missing = [n for n in names if not (out / f"{n}.mha").is_file()]
    if done.returncode != 0 or missing:
        raise SystemExit(f"{' '.join(argv[:4])} ... exit {done.returncode}, masks missing: {missing}\n"
                         f"{(done.stdout + done.stderr)[-3000:]}")
    return elapsed, cpu


def compare(kit_out: Path, nnunet_out: Path, names: list[str]) -> dict:
    differing, total, lesion = 0, 0, 0
    for name in names:
        a = sitk.GetArrayFromImage(sitk.ReadImage(str(kit_out / f"{name}.mha")))
        b = sitk.GetArrayFromImage(sitk.ReadImage(str(nnunet_out / f"{name}.mha")))
        if a.shape != b.shape:
            raise SystemExit(f"{name}: mask shapes differ {a.shape} vs {b.shape}")
        differing += int(np.count_nonzero(a != b))
        total += a.size
        lesion += int(np.count_nonzero(b))
    return {"voxels_differing": differing, "voxels": total, "nnunet_lesion_voxels": lesion,
            "identical": differing == 0}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--studies", type=whole_number(1), default=10)
    parser.add_argument("--size", default="small", help="phantom size (default %(default)s)")
    parser.add_argument("--tta", action="store_true", help="mirroring on both sides (default off)")
    parser.add_argument("--repeats", type=whole_number(1), default=1, help="runs per side, alternating; best counts")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--workdir", type=Path, default=None, help="kept and reused (default: a temporary folder)")
    parser.add_argument("--json", type=Path, default=None, help="also write the report here")
    args = parser.parse_args(argv)

    root = args.workdir or Path(tempfile.mkdtemp(prefix="bench-batch-"))
    try:
        inp, model = build(root / "data", studies=args.studies, size=args.size)
        names = sorted(p.name[: -len("_0000.mha")] for p in inp.glob("*_0000.mha"))
        kit_out, nnunet_out = root / "kit_out", root / "nnunet_out"
        settings = dict(fold=0, tta=args.tta, device=args.device)
        kit, nnunet = [], []
        load_before = os.getloadavg()[0]
        for _ in range(args.repeats):
            nnunet.append(timed_run(nnunet_command(inp, nnunet_out, model, **settings), nnunet_out, names))
            kit.append(timed_run(kit_command(inp, kit_out, model, **settings), kit_out, names))
        report = {
            "machine": machine(), "studies": len(names), "size": args.size, "fold": 0, "tta": args.tta,
            "device": args.device, "load_average_before": load_before, "load_average_after": os.getloadavg()[0],
            "kit_s": [round(t, 2) for t, _ in kit], "nnunet_s": [round(t, 2) for t, _ in nnunet],
            "kit_cpu_s": [round(c, 2) for _, c in kit], "nnunet_cpu_s": [round(c, 2) for _, c in nnunet],
            "speedup": round(min(nnunet)[0] / min(kit)[0], 2),
            "cpu_ratio": round(min(c for _, c in nnunet) / min(c for _, c in kit), 2), "goal": GOAL,
            "masks": compare(kit_out, nnunet_out, names),
        }
    finally:
        if args.workdir is None:
            shutil.rmtree(root, ignore_errors=True)
    print(dumps(report))
    print(f"\npredict-folder {min(kit)[0]:.1f} s vs nnUNetv2_predict_from_modelfolder {min(nnunet)[0]:.1f} s for "
          f"{len(names)} studies: {report['speedup']}x (goal >= {GOAL}x), CPU time {report['cpu_ratio']}x; masks "
          f"{'identical' if report['masks']['identical'] else 'differ in %d voxels' % report['masks']['voxels_differing']}")
    if args.json:
        args.json.write_text(dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
