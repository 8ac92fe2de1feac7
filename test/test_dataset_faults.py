"""`dataset convert` and `stats` under faults: FIFOs, a full disk, a killed run's leftovers, absurd spacing."""
from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import SimpleITK as sitk

import dataset.run as run_module
from dataset.convert import ConvertOptions
from dataset.run import convert_tree
from dataset_helpers import convert, copy_study, rewrite, synth
from petct.errors import InputError


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    return synth(tmp_path_factory.mktemp("faults"), seed=51, n_lesions=1)


def _cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dataset", *args], capture_output=True, text=True, timeout=timeout)


@pytest.mark.slow
def test_a_fifo_in_the_input_tree_is_skipped_and_named(study, tmp_path):
    folder = copy_study(study, tmp_path / "in")
    fifo = folder / "PET" / "zz-pipe.dcm"
    os.mkfifo(fifo)
    run = _cli("convert", str(tmp_path / "in"), str(tmp_path / "out"), "--no-progress", timeout=60)
    assert run.returncode == 0, run.stderr
    assert f"skipped {fifo}: not a regular file" in run.stderr
    report = json.loads((tmp_path / "out" / "conversion-report.json").read_text())
    assert report["converted"] == 1 and report["not_regular_files"] == [str(fifo)]


def test_a_full_disk_while_writing_the_manifest_is_one_line_not_a_traceback(study, tmp_path, monkeypatch):
    copy_study(study, tmp_path / "in")

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(run_module, "write_json_atomic", full)
    with pytest.raises(InputError) as caught:
        convert_tree(tmp_path / "in", tmp_path / "out", ConvertOptions())
    assert "the disk is full: cannot write the conversion manifest" in caught.value.describe()
    assert "\n" not in caught.value.describe()


@pytest.mark.parametrize("fmt", ["mha", "nifti"])
def test_an_image_itk_writes_short_never_reaches_its_final_place(study, tmp_path, monkeypatch, fmt):
    """What a nearly full disk does to ITK: the write 'succeeds' and leaves an empty file."""
    copy_study(study, tmp_path / "in")
    real_write = sitk.WriteImage

    def empty_for_seg(image, path, *args, **kwargs):
        real_write(image, path, *args, **kwargs)
        if "SEG" in Path(path).name:  # the final name, or the temporary one named after it
            Path(path).write_bytes(b"")
    monkeypatch.setattr(sitk, "WriteImage", empty_for_seg)
    layout = "grand-challenge" if fmt == "mha" else "tcia"
    (record,) = convert(tmp_path / "in", tmp_path / "out", layout=layout, fmt=fmt).values()
    assert record.status == "failed" and record.reason.startswith("the disk is full"), record.reason
    out = tmp_path / "out"
    assert not [p for p in out.rglob("*") if p.is_file() and p.stat().st_size == 0]
    assert not list(out.rglob("*.mha")) and not list(out.rglob("*.nii.gz"))
    assert not list(out.glob(".staging-*"))


def test_a_staging_folder_left_by_a_killed_run_is_removed_by_the_next(study, tmp_path):
    copy_study(study, tmp_path / "in")
    stale = tmp_path / "out" / ".staging-PATIENT__STUDY-abc123"
    stale.mkdir(parents=True)
    (stale / "SUV.nii.gz").write_bytes(b"half a file")
    (record,) = convert(tmp_path / "in", tmp_path / "out").values()
    assert record.status == "converted"
    assert not stale.exists()


@pytest.mark.filterwarnings("ignore:Invalid value for VR DS")  # the NaN is the point
@pytest.mark.parametrize("spacing,shown", [(["0", "2"], "[0.0, 2.0]"), (["-2", "2"], "[-2.0, 2.0]"),
                                          (["NaN", "2"], "[nan, 2.0]")])
def test_absurd_pixel_spacing_is_named(study, tmp_path, spacing, shown):
    folder = copy_study(study, tmp_path / "in")

    def absurd(ds):
        ds.PixelSpacing = spacing
    rewrite(sorted((folder / "PET").glob("*.dcm")), absurd)
    (record,) = convert(tmp_path / "in", tmp_path / "out").values()
    assert record.status == "failed"
    assert f"PixelSpacing is {shown}" in record.reason and "two positive numbers" in record.reason
    assert "slices differ" not in record.reason and "ITK" not in record.reason


def test_stats_refuses_an_empty_metadata_file(study, tmp_path):
    copy_study(study, tmp_path / "in")
    assert _cli("convert", str(tmp_path / "in"), str(tmp_path / "out"), "--no-progress").returncode == 0
    empty = tmp_path / "metadata.csv"
    empty.write_text("")
    run = _cli("stats", str(tmp_path / "out"), "--metadata", str(empty))
    assert run.returncode == 1 and "metadata CSV has no rows" in run.stderr and str(empty) in run.stderr
    assert "Traceback" not in run.stderr
