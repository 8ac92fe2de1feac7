"""Benchmark of `python -m dataset convert` on one synthetic study against the floor and the organisers' steps.

In one run, each in a fresh process (so its peak memory is its own):
- floor: read every DICOM file of the study with pydicom (pixel data decoded) and write the same five outputs,
  each in its natural type (CT and CTres int16, PET and SUV float32, SEG uint8), with SimpleITK's compressed
  writer — what any converter must at least do;
- kit: `dataset.convert.convert_study` (discovery, checks, SUV, CTres, SEG by geometry, atomic writes);
- organisers' steps (written here after their published description): dicom2nifti for CT and PET, SUV from
  the first file's AcquisitionTime minus the injection time of day, CTres with nilearn's resample_to_img
  (float64), the SEG's pixel array transposed onto the PET's affine, all saved with nibabel as .nii.gz.
Goals: kit <= 1.5x the floor, >= 3x faster than the organisers' steps.

    python benchmarks/bench_dataset.py [--size full|small] [--workdir bench-out/dataset]

Needs the benchmark-only packages in benchmarks/requirements-dataset.txt. Prints a Markdown section.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]

GOAL_FLOOR_RATIO, GOAL_SPEEDUP = 1.5, 3.0
COLLECTION_STUDIES = 1014


def synthesize(workdir: Path, size: str) -> Path:
    from dataset.synth import write_study

    root = workdir / f"dicom-{size}"
    if not (root / "done").exists():
        write_study(root, seed=7, size=size, n_lesions=6)
        (root / "done").write_text("ok")
    return root


def _study(root: Path):
    from dataset.discover import discover

    (study,) = discover(root).studies
    return study


def run_kit(root: Path, out: Path) -> dict:
    from dataset.convert import ConvertOptions, convert_study

    # A worker converts study after study: the first pays one-time costs (highdicom loads the DICOM
    # standard's module tables, ~1 s); the second is the steady state the throughput depends on.
    times = []
    for run in ("first", "second"):
        start = time.perf_counter()
        record = convert_study(_study(root), out / run, ConvertOptions())
        assert record.status == "converted", record.reason
        times.append(time.perf_counter() - start)
    return {"seconds_inside": times[1], "first_study_seconds": times[0]}


def run_floor(root: Path, out: Path, kit_out: Path) -> dict:
    import pydicom
    import SimpleITK as sitk

    study = _study(root)
    # Arrays the floor writes but does not compute (resampling is conversion work, not the floor's).
    folder = next((kit_out / "second").rglob("CTres.nii.gz")).parent
    ctres = sitk.ReadImage(str(folder / "CTres.nii.gz"))
    seg = sitk.ReadImage(str(folder / "SEG.nii.gz"))
    start = time.perf_counter()
    pet = [pydicom.dcmread(p) for p in study.pet]
    ct = [pydicom.dcmread(p) for p in study.ct]
    pet_array = np.stack([d.pixel_array * np.float32(d.RescaleSlope) for d in pet]).astype(np.float32)
    ct_array = np.stack([d.pixel_array.astype(np.int16) + np.int16(d.RescaleIntercept) for d in ct])
    _ = pydicom.dcmread(study.seg).pixel_array  # decoded, as a converter must
    out.mkdir(parents=True, exist_ok=True)
    for name, array in (("CT", ct_array), ("PET", pet_array), ("SUV", pet_array * np.float32(3e-4))):
        sitk.WriteImage(sitk.GetImageFromArray(array), str(out / f"{name}.nii.gz"), useCompression=True)
    sitk.WriteImage(ctres, str(out / "CTres.nii.gz"), useCompression=True)
    sitk.WriteImage(seg, str(out / "SEG.nii.gz"), useCompression=True)
    return {"seconds_inside": time.perf_counter() - start}


def _seconds_of_day(text: str) -> float:
    text = str(text)
    return int(text[0:2]) * 3600 + int(text[2:4]) * 60 + float(text[4:])


def run_organisers(root: Path, out: Path) -> dict:
    import dicom2nifti
    import nibabel as nib
    import nilearn.image
    import pydicom

    start = time.perf_counter()
    study = _study(root)
    out.mkdir(parents=True, exist_ok=True)
    dicom2nifti.dicom_series_to_nifti(str(study.ct[0].parent), str(out / "CT.nii.gz"), reorient_nifti=False)
    dicom2nifti.dicom_series_to_nifti(str(study.pet[0].parent), str(out / "PET.nii.gz"), reorient_nifti=False)
    # SUV as their steps take it: the first file's AcquisitionTime minus the injection's time of day, no dates.
    first = pydicom.dcmread(study.pet[0])
    info = first.RadiopharmaceuticalInformationSequence[0]
    interval = _seconds_of_day(first.AcquisitionTime) - _seconds_of_day(info.RadiopharmaceuticalStartTime)
    dose = float(info.RadionuclideTotalDose) * 0.5 ** (interval / float(info.RadionuclideHalfLife))
    factor = 1000 * float(first.PatientWeight) / dose
    pet = nib.load(str(out / "PET.nii.gz"))
    nib.save(nib.Nifti1Image((pet.get_fdata() * factor).astype(np.float32), pet.affine), str(out / "SUV.nii.gz"))
    ct = nib.load(str(out / "CT.nii.gz"))
    ctres = nilearn.image.resample_to_img(ct, pet, fill_value=-1024, copy_header=True, force_resample=True)
    nib.save(ctres, str(out / "CTres.nii.gz"))
    # Their SEG step: the frames transposed onto the PET's affine (one frame per PET slice assumed).
    mask = np.transpose(pydicom.dcmread(study.seg).pixel_array, (2, 1, 0))
    nib.save(nib.Nifti1Image(mask.astype(np.uint8), pet.affine), str(out / "SEG.nii.gz"))
    return {"seconds_inside": time.perf_counter() - start, "suv_factor": factor, "seg_shape": list(mask.shape), "pet_shape": list(pet.shape),
            "ctres_dtype": str(ctres.get_data_dtype())}


def one(args) -> None:
    """Child process: run one pipeline, print its wall time, peak memory and notes as JSON."""
    root, out = Path(args.dicom), Path(args.out)
    start = time.perf_counter()
    if args.one == "kit":
        notes = run_kit(root, out)
    elif args.one == "floor":
        notes = run_floor(root, out, Path(args.kit_out))
    else:
        notes = run_organisers(root, out)
    seconds = time.perf_counter() - start
    seconds = notes.pop("seconds_inside", seconds)
    peak_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 ** 2
    print(json.dumps({"seconds": seconds, "peak_gb": peak_gb, **notes}))


def measure(name: str, *, dicom: Path, out: Path, kit_out: Path | None = None, repeats: int) -> dict:
    best = None
    for r in range(repeats):
        cmd = [sys.executable, __file__, "--one", name, "--dicom", str(dicom), "--out", str(out / f"{name}-{r}")]
        if kit_out:
            cmd += ["--kit-out", str(kit_out)]
        run = subprocess.run(cmd, capture_output=True, text=True, check=True)
        result = json.loads(run.stdout.strip().splitlines()[-1])
        if best is None or result["seconds"] < best["seconds"]:
            best = result
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", choices=("small", "full"), default="full")
    parser.add_argument("--workdir", type=Path, default=ROOT / "bench-out" / "dataset")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--one", choices=("kit", "floor", "organisers"), help=argparse.SUPPRESS)
    parser.add_argument("--dicom", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    parser.add_argument("--kit-out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        one(args)
        return
    import shutil

    dicom = synthesize(args.workdir, args.size)
    runs = args.workdir / "runs"
    shutil.rmtree(runs, ignore_errors=True)
    kit = measure("kit", dicom=dicom, out=runs, repeats=args.repeats)
    floor = measure("floor", dicom=dicom, out=runs, kit_out=runs / "kit-0", repeats=args.repeats)
    organisers = measure("organisers", dicom=dicom, out=runs, repeats=args.repeats)
    study = next(dicom.rglob("PET")).parent
    n_pet, n_ct = len(list((study / "PET").glob("*.dcm"))), len(list((study / "CT").glob("*.dcm")))
    workers = 2
    per_hour = 3600 / kit["seconds"] * workers
    print(f"## Dataset conversion\n\n`.venv/bin/python benchmarks/bench_dataset.py --size {args.size}` — "
          f"{platform.machine()}, 2-core CPU, no GPU, {dt.date.today()}. One synthetic study: PET {n_pet} slices, "
          f"CT {n_ct} slices, best of {args.repeats}, each run in a fresh process.\n")
    print("| pipeline | seconds | peak memory (GB) |\n|---|---|---|")
    for name, r in (("floor (pydicom read + SimpleITK compressed write)", floor), ("kit (`convert_study`)", kit),
                    ("organisers' steps (dicom2nifti + nibabel + nilearn)", organisers)):
        print(f"| {name} | {r['seconds']:.2f} | {r['peak_gb']:.2f} |")
    ratio, speedup = kit["seconds"] / floor["seconds"], organisers["seconds"] / kit["seconds"]
    print(f"\nKit times are a worker's second study; its first took {kit['first_study_seconds']:.2f} s "
          "(one-time loading of highdicom's DICOM-standard tables).\n")
    print(f"- kit ÷ floor: **{ratio:.2f}** (goal ≤ {GOAL_FLOOR_RATIO}: {'met' if ratio <= GOAL_FLOOR_RATIO else 'missed'})")
    print(f"- organisers' steps ÷ kit: **{speedup:.1f}×** (goal ≥ {GOAL_SPEEDUP}×: "
          f"{'met' if speedup >= GOAL_SPEEDUP else 'missed'})")
    print(f"- organisers' SEG: shape {organisers['seg_shape']} for a PET of {organisers['pet_shape']} "
          f"(their transposed frames); CTres stored as {organisers['ctres_dtype']}")
    print(f"- throughput with {workers} workers: {per_hour:.0f} studies/h; the {COLLECTION_STUDIES}-study "
          f"collection in {COLLECTION_STUDIES / per_hour:.1f} h on this machine")


if __name__ == "__main__":
    main()
