"""`dataset convert` refuses a study whose pixel data would decode past a limit, before decoding any of it."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pydicom
import pytest

import dataset.convert as convert_module
from dataset.discover import discover
from dataset_helpers import convert, copy_study, synth


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    return synth(tmp_path_factory.mktemp("limits"), seed=41, n_lesions=1)


def _decoded_by_reading(folder) -> int:
    """The slow reference: decode every file's pixel data and count its bytes."""
    total = 0
    for path in sorted(folder.rglob("*.dcm")):
        ds = pydicom.dcmread(path)
        if ds.Modality == "SEG":
            frames = int(ds.get("NumberOfFrames", 1))
            total += frames * ds.Rows * ds.Columns  # 1-bit frames, one byte each once unpacked
        else:
            total += np.asarray(ds.pixel_array).nbytes
    return total


@pytest.mark.slow
def test_the_limit_is_checked_from_the_headers_before_any_file_is_read(study, tmp_path, monkeypatch):
    folder = copy_study(study, tmp_path / "in")
    expected = _decoded_by_reading(folder)
    (found,) = discover(tmp_path / "in").studies
    assert found.decoded_bytes == expected

    def no_reads(*args, **kwargs):
        raise AssertionError("a study over the limit was read")
    with monkeypatch.context() as patched:
        patched.setattr(convert_module, "read_bytes", no_reads)
        (record,) = convert(tmp_path / "in", tmp_path / "out", max_decoded_bytes=expected - 1).values()
    assert record.status == "failed"
    assert "over the limit of" in record.reason and "--max-decoded-bytes" in record.reason
    assert not any((tmp_path / "out").rglob("*.nii.gz"))
    (record,) = convert(tmp_path / "in", tmp_path / "out", max_decoded_bytes=expected).values()
    assert record.status == "converted", record.reason


def test_a_deflated_study_announcing_large_slices_is_refused_on_the_command_line(study, tmp_path):
    folder = copy_study(study, tmp_path / "in")
    for path in sorted((folder / "PET").glob("*.dcm"))[:4]:  # 2048 x 2048 slices of zeros, deflated: a few KB each
        ds = pydicom.dcmread(path)
        ds.Rows = ds.Columns = 2048
        ds.PixelData = bytes(2048 * 2048 * 2)
        ds.file_meta.TransferSyntaxUID = pydicom.uid.DeflatedExplicitVRLittleEndian
        ds.save_as(path, enforce_file_format=True)
        assert path.stat().st_size < 200_000
    run = subprocess.run([sys.executable, "-m", "dataset", "convert", str(tmp_path / "in"), str(tmp_path / "out"),
                          "--no-progress", "--max-decoded-bytes", "16MiB"], capture_output=True, text=True)
    assert run.returncode == 1, run.stderr
    assert "over the limit of 16.0 MiB (--max-decoded-bytes)" in run.stderr and "Traceback" not in run.stderr


def test_a_deflated_file_inflating_past_the_limit_is_never_inflated_whole(study, tmp_path, monkeypatch):
    import tracemalloc

    import dataset.discover as discover_module

    folder = copy_study(study, tmp_path / "in")
    bomb = sorted((folder / "PET").glob("*.dcm"))[0]
    ds = pydicom.dcmread(bomb)
    ds.PixelData = bytes(64 << 20)  # 64 MiB of zeros behind a header that announces a small slice
    ds.file_meta.TransferSyntaxUID = pydicom.uid.DeflatedExplicitVRLittleEndian
    ds.save_as(bomb, enforce_file_format=True)
    assert bomb.stat().st_size < 200_000
    read = []
    real_dcmread = pydicom.dcmread
    monkeypatch.setattr(discover_module.pydicom, "dcmread", lambda path, **kw: (read.append(path),
                                                                                 real_dcmread(path, **kw))[1])
    tracemalloc.start()
    try:
        found = discover(tmp_path / "in", max_decoded_bytes=16 << 20)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert found.too_large == [bomb] and bomb not in read
    assert peak < 8 << 20, f"discovery took {peak} bytes"
    monkeypatch.undo()
    run = subprocess.run([sys.executable, "-m", "dataset", "convert", str(tmp_path / "in"), str(tmp_path / "out"),
                          "--no-progress", "--max-decoded-bytes", "16MiB"], capture_output=True, text=True)
    assert f"skipped {bomb}: a deflated file that inflates past --max-decoded-bytes" in run.stderr
    assert "Traceback" not in run.stderr
    report = json.loads((tmp_path / "out" / "conversion-report.json").read_text())
    assert report["too_large_files"] == [str(bomb)]  # the rest is converted (here: one edge slice short)


def _deflate(path, *, pixel_bytes: int) -> None:
    ds = pydicom.dcmread(path)
    ds.PixelData = bytes(pixel_bytes)
    ds.file_meta.TransferSyntaxUID = pydicom.uid.DeflatedExplicitVRLittleEndian
    ds.save_as(path, enforce_file_format=True)


def test_a_deflated_file_under_the_limit_has_only_its_header_inflated_for_discovery(study, tmp_path):
    import tracemalloc

    folder = copy_study(study, tmp_path / "in")
    deflated = sorted((folder / "PET").glob("*.dcm"))[0]
    _deflate(deflated, pixel_bytes=64 << 20)  # under the default limit: read, but its pixel data is not needed yet
    tracemalloc.start()
    try:
        (found,) = discover(tmp_path / "in").studies
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert deflated in found.pet
    assert peak < 8 << 20, f"discovery took {peak} bytes"
    whole = pydicom.dcmread(deflated)  # the reference: pydicom inflating the whole file
    assert (found.study_uid, found.patient) == (str(whole.StudyInstanceUID), str(whole.PatientID))


def test_a_deflated_file_cut_off_in_its_pixel_data_is_found_by_its_header(study, tmp_path):
    folder = copy_study(study, tmp_path / "in")
    cut = sorted((folder / "PET").glob("*.dcm"))[0]
    _deflate(cut, pixel_bytes=1 << 20)
    whole = cut.read_bytes()
    cut.write_bytes(whole[: len(whole) - 64])  # the deflate stream ends early, well after the header
    (found,) = discover(tmp_path / "in").studies
    assert cut in found.pet
