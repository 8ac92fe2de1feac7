"""Benchmark of the slice viewer's volumes and of the outlined MIP, on a full-size phantom study.

1. The first opening of a job's slice viewer makes its three volumes (app.service.viewer.viewer_volume: CT as
   int16, SUV as float32 and the TP/FP/FN components, each .nii.gz): wall seconds and bytes sent to the browser,
   against reading the study's four files (CT, SUV, ground truth, prediction) in the same run. Best of 3.
2. The overlay MIP with outlined components (evaluation.mip.overlay_mip, coronal and sagittal) against the same
   without outlines (tints alone) and the read time, and the MIP PNG at full resolution (mip_png). Best of 3.

3. Writing the full-size CT (int16) as .nii.gz: ITK's writer against the viewer's (plain NIfTI, then zlib at
   level 1). Best of 3. `--gzip-only` runs this step alone.

    python benchmarks/bench_viewer.py [--gzip-only]

Prints a Markdown section for BENCHMARKS.md.
"""
from __future__ import annotations

import os
import platform
import shutil
import sys
import tempfile
from datetime import date
from pathlib import Path

import numpy as np

import evaluation.mip as mip_module
from app.service.viewer import StudyFiles, Volume, viewer_volume
from evaluation.mip import VIEWS, mip_png, overlay_mip, read_study
from petct.imageio import image_from_array, read_array, write_image_atomic
from petct.phantom import make_study
from timing import best_of

ROOT = Path(__file__).resolve().parents[1]

REPEATS = 3


def best(fn) -> float:
    return best_of(REPEATS, fn)[0]


def gzip_comparison() -> None:
    """The full-size CT as int16: ITK's own .nii.gz writer against the viewer's (plain NIfTI, zlib level 1)."""
    import SimpleITK as sitk

    from app.service.viewer import _write_fast_gzip

    ct = sitk.Cast(make_study(3, size="full", n_lesions=6).ctres, sitk.sitkInt16)
    with tempfile.TemporaryDirectory(prefix="bench-viewer-gz-") as tmp:
        itk, fast = Path(tmp) / "itk.nii.gz", Path(tmp) / "fast.nii.gz"
        itk_s = best(lambda: write_image_atomic(ct, itk))
        fast_s = best(lambda: _write_fast_gzip(ct, fast))
        mib = 1024 * 1024
        print(f"| CT int16 as .nii.gz, ITK's writer (reference) | {itk_s * 1000:.0f} ms | {itk.stat().st_size / mib:.1f} MiB |")
        print(f"| CT int16 as .nii.gz, the viewer's (plain, then zlib level 1) | {fast_s * 1000:.0f} ms | "
              f"{fast.stat().st_size / mib:.1f} MiB |")
        print(f"\nviewer ÷ ITK: {fast_s / itk_s:.2f} of the time, {fast.stat().st_size / itk.stat().st_size:.2f} of "
              f"the bytes.")


def main() -> int:
    if "--gzip-only" in sys.argv:
        gzip_comparison()
        return 0
    with tempfile.TemporaryDirectory(prefix="bench-viewer-") as tmp:
        folder = Path(tmp)
        study = make_study(3, size="full", n_lesions=6)
        out = study.write(folder / "full")
        truth, geometry = read_array(out / "SEG.mha")
        rng = np.random.default_rng(0)
        pred = np.roll(truth, 2, axis=2)
        pred[tuple(rng.integers(0, n, 300) for n in truth.shape)] = 1  # scattered false positives
        write_image_atomic(image_from_array(pred.astype(np.uint8), geometry), out / "PRED.mha")
        files = StudyFiles(ct=out / "CTres.mha", pet=out / "SUV.mha", mask=out / "PRED.mha", label=out / "SEG.mha")
        cache = folder / "viewer"

        def read_all():
            for path in (files.ct, files.pet, files.label, files.mask):
                read_array(path)

        def build():
            shutil.rmtree(cache, ignore_errors=True)
            for volume in (Volume.ct, Volume.suv, Volume.components):
                viewer_volume(cache=cache, files=files, volume=volume)

        read_s = best(read_all)
        build_s = best(build)
        sent = {v: (cache / f"{v.value}.nii.gz").stat().st_size for v in (Volume.ct, Volume.suv, Volume.components)}
        uploaded = sum(p.stat().st_size for p in (files.ct, files.pet, files.mask))
        arrays = read_study(suv=files.pet, prediction=files.mask, ground_truth=files.label)
        mip_s = best(lambda: [overlay_mip(arrays, view=v) for v in VIEWS])
        outline = mip_module.outline
        mip_module.outline = lambda plane: np.zeros_like(plane)  # the reference: tints alone, no outlines
        tint_s = best(lambda: [overlay_mip(arrays, view=v) for v in VIEWS])
        mip_module.outline = outline
        png_s = best(lambda: mip_png(arrays, folder / "mip.png"))
    mib = 1024 * 1024
    print(f"## Slice viewer and outlined MIP\n\n`.venv/bin/python benchmarks/bench_viewer.py` — {os.cpu_count()}-core "
          f"{platform.machine()} CPU, shared, no GPU, {date.today():%Y-%m-%d}.\n")
    print(f"| step (full-size phantom study, {' × '.join(map(str, truth.shape))}, 6 lesions, a shifted prediction "
          f"with 300 scattered false positives) | best of {REPEATS} | ÷ read |\n|---|---|---|")
    print(f"| reference: read CT, SUV, ground truth and prediction (compressed .mha) | {read_s * 1000:.0f} ms | 1 |")
    print(f"| the viewer's three volumes, first opening (CT int16, SUV float32, components; .nii.gz) | "
          f"{build_s * 1000:.0f} ms | {build_s / read_s:.2f} |")
    print(f"| coronal + sagittal overlay MIP with outlines (`overlay_mip`) | {mip_s * 1000:.0f} ms | {mip_s / read_s:.2f} |")
    print(f"| the same without outlines (tints alone) | {tint_s * 1000:.0f} ms | {tint_s / read_s:.2f} |")
    print(f"| the MIP PNG at full resolution (`mip_png`) | {png_s * 1000:.0f} ms | {png_s / read_s:.2f} |")
    print(f"\nOutlines ÷ tints alone: {mip_s / tint_s:.2f}. Load average at the end: "
          f"{os.getloadavg()[0]:.1f} (the box is shared; absolute times vary with it, ratios less).")
    print(f"\nSent to the browser: CT {sent[Volume.ct] / mib:.1f} MiB, SUV {sent[Volume.suv] / mib:.1f} MiB, "
          f"components {sent[Volume.components] / mib:.2f} MiB, in all {sum(sent.values()) / mib:.1f} MiB, against "
          f"{uploaded / mib:.1f} MiB uploaded (PET, CT, mask).\n")
    print("| writing | best of 3 | size |\n|---|---|---|")
    gzip_comparison()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
