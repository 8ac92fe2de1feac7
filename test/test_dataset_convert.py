"""`python -m dataset convert`: synthetic DICOM back to the phantom, every vendor variant, every broken input."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk

from dataset_helpers import check_against_phantom, convert, copy_study, rewrite, synth


@pytest.fixture(scope="module")
def siemens(tmp_path_factory):
    """One Siemens-like study with lesions, written once for the module."""
    return synth(tmp_path_factory.mktemp("siemens"), seed=11, n_lesions=4)


def _only(records: dict):
    assert len(records) == 1
    return next(iter(records.values()))


def _study_folder(out: Path, record) -> Path:
    return out / Path(record.outputs["SUV"]).parent


def test_siemens_study_converts_back_to_the_phantom(siemens, tmp_path):
    record = _only(convert(siemens.pet_dir.parents[1].parent, tmp_path))
    assert record.status == "converted", record.reason
    check_against_phantom(siemens, _study_folder(tmp_path, record))
    assert record.suv["factor"] == pytest.approx(siemens.suv_factor, rel=1e-9)
    assert record.suv["weight_kg"] == 74.0 and record.suv["decay_correction"] == "START"
    assert record.warnings == []
    # The SEG omits empty frames: fewer frames than PET slices, placed by geometry all the same.
    assert record.seg_frames < siemens.phantom.suv.GetSize()[2]


@pytest.mark.parametrize("options", [
    dict(vendor="ge"), dict(vendor="philips-bqml"), dict(vendor="philips-cnts"), dict(decay_correction="ADMIN"),
    dict(series_after_acquisition=True),
], ids=["ge-private-scan-time", "philips-bqml", "philips-cnts", "decay-admin", "series-after-acquisition"])
@pytest.mark.slow
def test_vendor_variant_converts_back_to_the_phantom(options, tmp_path):
    study = synth(tmp_path / "dicom", seed=5, n_lesions=2, **options)
    record = _only(convert(tmp_path / "dicom", tmp_path / "out"))
    assert record.status == "converted", record.reason
    check_against_phantom(study, _study_folder(tmp_path / "out", record))


def test_injection_before_midnight_time_only(tmp_path):
    # Injected 23:20, scanned 00:24 the next day, the injection given as a time of day only: the organisers'
    # steps would take a negative interval here.
    import datetime as dt
    study = synth(tmp_path / "dicom", seed=6, n_lesions=2, injection=dt.datetime(2019, 3, 13, 23, 20),
                  injection_time_only=True)
    record = _only(convert(tmp_path / "dicom", tmp_path / "out"))
    assert record.status == "converted", record.reason
    assert record.suv["decay_interval_s"] == 3840.0
    check_against_phantom(study, _study_folder(tmp_path / "out", record))


def test_segments_merge_into_one_mask_or_stay_a_label_map(tmp_path):
    study = synth(tmp_path / "dicom", seed=7, n_lesions=5, segments=2)
    merged = _only(convert(tmp_path / "dicom", tmp_path / "merged"))
    check_against_phantom(study, _study_folder(tmp_path / "merged", merged))
    kept = _only(convert(tmp_path / "dicom", tmp_path / "kept", keep_segments=True))
    labels = sitk.GetArrayFromImage(sitk.ReadImage(str(_study_folder(tmp_path / "kept", kept) / "SEG.nii.gz")))
    assert set(np.unique(labels)) == {0, 1, 2}
    np.testing.assert_array_equal(labels > 0, sitk.GetArrayFromImage(study.phantom.seg) > 0)
    assert len(kept.segments) == 2


def test_dangling_seg_references_still_place_frames_by_geometry(siemens, tmp_path):
    study_dir = copy_study(siemens, tmp_path / "dicom")

    def dangle(ds):
        for ref in ds.ReferencedSeriesSequence[0].ReferencedInstanceSequence:
            ref.ReferencedSOPInstanceUID = "1.2.3.999." + ref.ReferencedSOPInstanceUID[-20:].lstrip("0.")
        for frame in ds.PerFrameFunctionalGroupsSequence:
            for item in frame.get("DerivationImageSequence", []):
                for source in item.SourceImageSequence:
                    source.ReferencedSOPInstanceUID = "1.2.3.999." + source.ReferencedSOPInstanceUID[-20:].lstrip("0.")
    rewrite([study_dir / "SEG" / "1-1.dcm"], dangle)
    record = _only(convert(tmp_path / "dicom", tmp_path / "out"))
    assert record.status == "converted", record.reason
    check_against_phantom(siemens, _study_folder(tmp_path / "out", record))


def test_empty_seg_is_a_negative_study_with_a_warning(tmp_path):
    study = synth(tmp_path / "dicom", seed=8, n_lesions=0)
    record = _only(convert(tmp_path / "dicom", tmp_path / "out"))
    assert record.status == "converted"
    assert any("SEG is empty" in w for w in record.warnings)
    check_against_phantom(study, _study_folder(tmp_path / "out", record))


def test_missing_pet_slice_is_an_error_naming_the_gap(siemens, tmp_path):
    study_dir = copy_study(siemens, tmp_path / "dicom")
    (study_dir / "PET" / "PT_0020.dcm").unlink()
    record = _only(convert(tmp_path / "dicom", tmp_path / "out"))
    assert record.status == "failed"
    assert "PET series: 1 missing slice(s): gap of" in record.reason and "PET" in record.reason
    assert not any((tmp_path / "out").rglob("*.nii.gz"))


def test_missing_weight_is_an_error_naming_the_tag(siemens, tmp_path):
    study_dir = copy_study(siemens, tmp_path / "dicom")
    rewrite(sorted((study_dir / "PET").glob("*.dcm")), lambda ds: delattr(ds, "PatientWeight"))
    record = _only(convert(tmp_path / "dicom", tmp_path / "out"))
    assert record.status == "failed" and "PatientWeight is missing" in record.reason


def test_mixed_series_are_reported_not_guessed(siemens, tmp_path):
    study_dir = copy_study(siemens, tmp_path / "dicom")
    second = study_dir / "PET2"
    second.mkdir()
    for path in sorted((study_dir / "PET").glob("*.dcm"))[:10]:
        ds = pydicom.dcmread(path)
        ds.SeriesInstanceUID = ds.SeriesInstanceUID[:-3] + "222"
        ds.SeriesDescription = "PET WB NAC"
        ds.save_as(second / path.name)
    record = _only(convert(tmp_path / "dicom", tmp_path / "out"))
    assert record.status == "failed"
    assert "2 PET series, cannot choose" in record.reason and "PET WB NAC" in record.reason


def test_seg_of_another_frame_of_reference_is_refused(siemens, tmp_path):
    study_dir = copy_study(siemens, tmp_path / "dicom")
    rewrite([study_dir / "SEG" / "1-1.dcm"], lambda ds: setattr(ds, "FrameOfReferenceUID", "1.2.3.4.5"))
    record = _only(convert(tmp_path / "dicom", tmp_path / "out"))
    assert record.status == "failed" and "frame of reference" in record.reason


def test_ct_short_of_the_pet_warns_with_the_covered_fraction(siemens, tmp_path):
    study_dir = copy_study(siemens, tmp_path / "dicom")
    ct_files = sorted((study_dir / "CT").glob("*.dcm"))
    for path in ct_files[: len(ct_files) // 4]:
        path.unlink()
    record = _only(convert(tmp_path / "dicom", tmp_path / "out"))
    assert record.status == "converted"
    assert any("the CT covers 7" in w for w in record.warnings), record.warnings


@pytest.mark.slow
def test_one_failure_never_stops_the_others_and_the_cli_exits_1(siemens, tmp_path):
    good = copy_study(siemens, tmp_path / "dicom")
    bad = synth(tmp_path / "dicom", seed=9, n_lesions=1)
    (bad.pet_dir / "PT_0010.dcm").unlink()
    (tmp_path / "dicom" / "notes.txt").write_text("not DICOM")
    run = subprocess.run([sys.executable, "-m", "dataset", "convert", str(tmp_path / "dicom"), str(tmp_path / "out"),
                          "--workers", "2", "--no-progress"], capture_output=True, text=True)
    assert run.returncode == 1
    assert "1 converted, 0 skipped (already done), 1 failed" in run.stdout
    assert "missing slice" in run.stderr and "Traceback" not in run.stderr
    report = json.loads((tmp_path / "out" / "conversion-report.json").read_text())
    assert report["converted"] == 1 and report["failed"] == 1
    assert report["unreadable_files"] == [str(tmp_path / "dicom" / "notes.txt")]
    assert (tmp_path / "out" / good.parent.name).is_dir()


def test_rerun_skips_done_studies_and_redoes_changed_ones(siemens, tmp_path):
    study_dir = copy_study(siemens, tmp_path / "dicom")
    first = _only(convert(tmp_path / "dicom", tmp_path / "out"))
    assert first.status == "converted"
    assert _only(convert(tmp_path / "dicom", tmp_path / "out")).status == "skipped"
    rewrite([study_dir / "PET" / "PT_0001.dcm"], lambda ds: setattr(ds, "SeriesDescription", "changed"))
    assert _only(convert(tmp_path / "dicom", tmp_path / "out")).status == "converted"
    (_study_folder(tmp_path / "out", first) / "SUV.nii.gz").unlink()
    assert _only(convert(tmp_path / "dicom", tmp_path / "out")).status == "converted"
    assert not list((tmp_path / "out").glob(".staging-*"))


def test_mha_and_hdf5_formats(siemens, tmp_path):
    import h5py
    root = siemens.pet_dir.parents[1].parent
    record = _only(convert(root, tmp_path / "mha", fmt="mha"))
    check_against_phantom(siemens, _study_folder(tmp_path / "mha", record), ext=".mha")
    record = _only(convert(root, tmp_path / "h5", fmt="hdf5"))
    with h5py.File(tmp_path / "h5" / "dataset.h5") as h5:
        group = h5[record.key]
        np.testing.assert_array_equal(group["SEG"][()], sitk.GetArrayFromImage(siemens.phantom.seg))
        np.testing.assert_allclose(group["SUV"].attrs["origin_xyz"], siemens.phantom.suv.GetOrigin(), atol=1e-3)
        assert group["CT"].dtype == np.int16 and group["SUV"].dtype == np.float32
        assert group.attrs["patient"] == record.patient


def test_wrong_layout_and_format_pair_is_one_line(tmp_path):
    run = subprocess.run([sys.executable, "-m", "dataset", "convert", str(tmp_path), str(tmp_path / "o"),
                          "--layout", "nnunet", "--format", "hdf5"], capture_output=True, text=True)
    assert run.returncode == 1 and run.stderr.startswith("error: --format hdf5 goes with --layout tcia")



def test_a_flat_folder_converts_like_the_tcia_tree(siemens, tmp_path):
    flat = tmp_path / "flat"
    flat.mkdir()
    for path in siemens.pet_dir.parent.rglob("*.dcm"):
        shutil.copy(path, flat / f"{path.parent.name}-{path.name}")
    record = _only(convert(flat, tmp_path / "out"))
    assert record.status == "converted", record.reason
    check_against_phantom(siemens, _study_folder(tmp_path / "out", record))
