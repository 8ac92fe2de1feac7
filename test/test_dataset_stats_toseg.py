"""`python -m dataset stats` against figures computed independently from the phantom, and `to-seg` round trips."""
from __future__ import annotations

import csv
import json
import subprocess
import sys

import numpy as np
import pytest
import SimpleITK as sitk
from scipy import ndimage

from dataset.segfile import read_seg_on_grid
from dataset.stats import lesion_figures
from dataset_helpers import convert, synth
from petct.imageio import Geometry


def test_lesion_figures_match_a_slow_reference_on_random_masks():
    rng = np.random.default_rng(0)
    structure = ndimage.generate_binary_structure(3, 2)  # 18-connectivity
    for _ in range(20):
        seg = (rng.random((12, 10, 9)) < rng.uniform(0.02, 0.3)).astype(np.uint8)
        suv = rng.uniform(0, 20, size=seg.shape).astype(np.float32)
        got = lesion_figures(suv, seg, voxel_ml=0.064)
        inside = [float(suv[z, y, x]) for z, y, x in zip(*np.nonzero(seg))]
        assert got["lesion_count"] == ndimage.label(seg, structure=structure)[1]
        assert got["mtv_ml"] == pytest.approx(len(inside) * 0.064)
        if inside:
            assert got["suv_max"] == max(inside)
            assert got["suv_mean"] == pytest.approx(sum(inside) / len(inside), rel=1e-5)
            assert got["tlg"] == pytest.approx(got["mtv_ml"] * got["suv_mean"])


def test_stats_rows_and_summary_per_diagnosis(tmp_path):
    a = synth(tmp_path / "dicom", seed=31, n_lesions=3)
    b = synth(tmp_path / "dicom", seed=32, n_lesions=0, native_ct=True)
    convert(tmp_path / "dicom", tmp_path / "out")
    metadata = tmp_path / "Clinical Metadata.csv"
    metadata.write_text(f"Subject ID,diagnosis,age,sex\n{a.patient},LYMPHOMA,61,M\n{b.patient},NEGATIVE,47,F\n")
    run = subprocess.run([sys.executable, "-m", "dataset", "stats", str(tmp_path / "out"), "--metadata", str(metadata)],
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert "LYMPHOMA" in run.stdout and "NEGATIVE" in run.stdout
    assert run.stdout.strip().splitlines()[-1] == (f"wrote {tmp_path / 'out' / 'studies.csv'} (one row per study) "
                                                   f"and {tmp_path / 'out' / 'summary.json'}")
    lymphoma = next(line for line in run.stdout.splitlines() if line.startswith("LYMPHOMA"))
    assert "61.0" in lymphoma and "±" not in lymphoma  # one study: a mean, no spread
    rows = {r["patient"]: r for r in csv.DictReader(open(tmp_path / "out" / "studies.csv"))}
    geometry = Geometry.of(a.phantom.seg)
    seg = sitk.GetArrayFromImage(a.phantom.seg)
    assert float(rows[a.patient]["mtv_ml"]) == pytest.approx(seg.sum() * geometry.voxel_volume_ml)
    assert int(rows[a.patient]["lesion_count"]) >= 1 and rows[b.patient]["lesion_count"] == "0"
    assert rows[a.patient]["contrast_enhanced_ct"] == "True" and rows[b.patient]["contrast_enhanced_ct"] == "False"
    assert float(rows[a.patient]["uptake_time_min"]) == 64.0 and float(rows[a.patient]["weight_kg"]) == 74.0
    assert float(rows[a.patient]["pet_axial_coverage_mm"]) == pytest.approx(geometry.size[2] * geometry.spacing[2])
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["LYMPHOMA"]["sex"] == {"M": 1} and summary["all"]["studies"] == 2
    assert summary["NEGATIVE"]["positive_studies"] == 0 and summary["all"]["age"]["mean"] == 54.0
    assert summary["LYMPHOMA"]["age"] == {"n": 1, "mean": 61.0, "sd": None}
    assert summary["all"]["age"]["sd"] == pytest.approx(np.std([61, 47], ddof=1))


def test_stats_without_a_conversion_is_one_line(tmp_path):
    run = subprocess.run([sys.executable, "-m", "dataset", "stats", str(tmp_path)], capture_output=True, text=True)
    assert run.returncode == 1 and run.stderr.startswith("error: ") and "conversion report" in run.stderr


def test_to_seg_round_trips_a_mask_through_dicom(tmp_path):
    study = synth(tmp_path / "dicom", seed=33, n_lesions=3)
    mask_path = tmp_path / "mask.mha"
    sitk.WriteImage(study.phantom.seg, str(mask_path))
    run = subprocess.run([sys.executable, "-m", "dataset", "to-seg", str(mask_path), str(study.pet_dir),
                          str(tmp_path / "pred.dcm")], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    import pydicom
    seg = pydicom.dcmread(tmp_path / "pred.dcm")
    assert seg.Modality == "SEG"
    assert seg.SeriesDescription == "lesions (petct-kit)" and seg.SeriesNumber == 300  # how viewers list it
    referenced = {r.ReferencedSOPInstanceUID for r in seg.ReferencedSeriesSequence[0].ReferencedInstanceSequence}
    pet_uids = {pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID for p in study.pet_files}
    assert referenced <= pet_uids and referenced
    back = read_seg_on_grid(tmp_path / "pred.dcm", Geometry.of(study.phantom.seg),
                            frame_of_reference=seg.FrameOfReferenceUID)
    np.testing.assert_array_equal(back.binary(), sitk.GetArrayFromImage(study.phantom.seg))


def test_to_seg_refuses_a_mask_off_the_pet_grid(tmp_path):
    study = synth(tmp_path / "dicom", seed=34, n_lesions=1)
    mask = sitk.GetImageFromArray(np.zeros((4, 4, 4), dtype=np.uint8))
    sitk.WriteImage(mask, str(tmp_path / "mask.mha"))
    run = subprocess.run([sys.executable, "-m", "dataset", "to-seg", str(tmp_path / "mask.mha"), str(study.pet_dir),
                          str(tmp_path / "pred.dcm")], capture_output=True, text=True)
    assert run.returncode == 1 and "mask is not on the PET grid" in run.stderr and "Traceback" not in run.stderr
