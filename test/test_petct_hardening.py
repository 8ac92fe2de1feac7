"""Attacks on the shared image and file helpers: trailing gzip data, spacing, short writes, suffixes."""
from __future__ import annotations

import gzip
import os
import struct
import subprocess
import zlib
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from algorithm_helpers import run_algorithm, write_platform_input
from petct import imageio, layout
from petct.atomic import IncompleteWriteError, atomic_path
from petct.errors import InputError
from petct.imageio import read_geometry, read_image, write_image_atomic
from petct.jsonio import write_json_atomic
from petct.phantom import make_study


def _image(shape=(4, 5, 6), dtype=np.uint8, spacing=(1.0, 2.0, 3.0)) -> sitk.Image:
    image = sitk.GetImageFromArray(np.arange(np.prod(shape)).reshape(shape).astype(dtype))
    image.SetSpacing(spacing)
    return image


def _gzip_with_padding(raw: bytes, path: Path, *, padding_bytes: int) -> None:
    """A valid NIfTI stream followed by `padding_bytes` of zeros, all in one gzip member (a small bomb)."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, 31)
    chunk = bytes(1 << 20)
    with open(path, "wb") as fh:
        fh.write(compressor.compress(raw))
        for _ in range(padding_bytes // len(chunk)):
            fh.write(compressor.compress(chunk))
        fh.write(compressor.flush())


def test_nifti_with_trailing_gzip_padding_is_refused_without_reading_it(tmp_path, monkeypatch):
    sitk.WriteImage(_image(), str(tmp_path / "ok.nii"))
    raw = (tmp_path / "ok.nii").read_bytes()
    bomb = tmp_path / "trail_bomb.nii.gz"
    _gzip_with_padding(raw, bomb, padding_bytes=64 << 20)
    assert bomb.stat().st_size < 200_000

    # Count what the check decompresses: it must stop just past the size the header announces.
    read = []
    real_read = gzip.GzipFile.read

    def counting_read(self, size=-1):
        data = real_read(self, size)
        read.append(len(data))
        return data

    monkeypatch.setattr(gzip.GzipFile, "read", counting_read)
    with pytest.raises(InputError, match="data after the .* bytes its header announces") as caught:
        read_image(bomb)
    assert str(bomb) in str(caught.value)
    assert sum(read) <= max(len(raw) + 1, 540)  # the header read is 540 bytes (NIfTI-2 size)


def test_plain_nifti_with_trailing_bytes_is_refused_and_exact_files_pass(tmp_path):
    sitk.WriteImage(_image(), str(tmp_path / "ok.nii"))
    sitk.WriteImage(_image(), str(tmp_path / "ok.nii.gz"))
    read_image(tmp_path / "ok.nii")
    read_image(tmp_path / "ok.nii.gz")
    padded = tmp_path / "padded.nii"
    padded.write_bytes((tmp_path / "ok.nii").read_bytes() + b"\0" * 10)
    with pytest.raises(InputError, match="data after"):
        read_image(padded)


def _nifti_with_pixdim(tmp_path: Path, value: float, *, gz: bool) -> Path:
    sitk.WriteImage(_image(), str(tmp_path / "base.nii"))
    data = bytearray((tmp_path / "base.nii").read_bytes())
    data[80:84] = struct.pack("<f", value)  # pixdim[1]: spacing along x
    path = tmp_path / ("bad.nii.gz" if gz else "bad.nii")
    path.write_bytes(gzip.compress(bytes(data)) if gz else bytes(data))
    return path


@pytest.mark.parametrize("value", [float("nan"), float("inf"), 1e-5, 5e3])
@pytest.mark.parametrize("gz", [False, True])
def test_nifti_with_bad_pixdim_is_refused_by_full_and_header_reads(tmp_path, value, gz):
    path = _nifti_with_pixdim(tmp_path, value, gz=gz)
    for read in (read_image, read_geometry):
        with pytest.raises(InputError, match=r"voxel spacing .* is not finite or outside 0.001..1000 mm") as caught:
            read(path)
        assert str(path) in str(caught.value)


@pytest.mark.parametrize("spacing", [(1e308, 1.0, 1.0), (1.0, 1e-4, 1.0), (2000.0, 1.0, 1.0)])
def test_mha_with_absurd_spacing_is_refused(tmp_path, spacing):
    path = tmp_path / "far.mha"
    sitk.WriteImage(_image(spacing=spacing), str(path))
    for read in (read_image, read_geometry):
        with pytest.raises(InputError, match="voxel spacing"):
            read(path)


def test_sane_spacing_limits_pass(tmp_path):
    for spacing in ((1e-3, 1.0, 1.0), (1e3, 4.0, 0.5)):
        path = tmp_path / "ok.mha"
        sitk.WriteImage(_image(spacing=spacing), str(path))
        assert read_geometry(path).spacing == pytest.approx(spacing)


def _short_writer(cut: int):
    """sitk.WriteImage that, like ITK on a full disk, leaves the file `cut` bytes short without a word."""
    real = sitk.WriteImage

    def write(image, name, *args, **kwargs):
        real(image, name, *args, **kwargs)
        size = os.path.getsize(name)
        os.truncate(name, max(size - cut, 0))
    return write


@pytest.mark.parametrize("name", ["mask.mha", "mask.nii.gz", "mask.nii"])
@pytest.mark.parametrize("compress", [True, False])
@pytest.mark.parametrize("cut", [1, 10**9])
def test_short_image_write_fails_and_keeps_the_old_file(tmp_path, monkeypatch, name, compress, cut):
    target = tmp_path / name
    write_image_atomic(_image((20, 30, 40)), target, compress=compress)
    before = target.read_bytes()
    monkeypatch.setattr(imageio.sitk, "WriteImage", _short_writer(cut))
    with pytest.raises(IncompleteWriteError, match="could not be written completely") as caught:
        write_image_atomic(_image((20, 30, 40), dtype=np.float32), target, compress=compress)
    assert str(target) in str(caught.value)
    assert target.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == [name]


def test_healthy_writes_in_every_format_read_back(tmp_path):
    for name in ("a.mha", "b.nii.gz", "c.nii", "d.nrrd"):
        for compress in (True, False):
            for dtype in (np.uint8, np.int16, np.float32, np.float64):
                image = _image((7, 9, 11), dtype=dtype)
                write_image_atomic(image, tmp_path / name, compress=compress)
                assert np.array_equal(sitk.GetArrayFromImage(read_image(tmp_path / name)),
                                      sitk.GetArrayFromImage(image))


def test_short_json_write_fails(tmp_path, monkeypatch):
    target = tmp_path / "metrics.json"
    write_json_atomic({"a": 1}, target)
    real_open = open

    class Short:
        def __init__(self, fh):
            self.fh = fh

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.fh.close()

        def write(self, data):
            return self.fh.write(data[: len(data) // 2])  # a short write nobody reported

    monkeypatch.setattr("builtins.open", lambda *a, **k: Short(real_open(*a, **k)))
    with pytest.raises(IncompleteWriteError, match="bytes on disk"):
        write_json_atomic({"a": 2, "b": list(range(100))}, target)
    monkeypatch.undo()
    assert target.read_text().strip() == '{\n  "a": 1\n}'


def test_atomic_path_refuses_an_empty_result(tmp_path):
    with pytest.raises(IncompleteWriteError, match="0 bytes"):
        with atomic_path(tmp_path / "x.json"):
            pass
    assert list(tmp_path.iterdir()) == []


@pytest.fixture
def full_tmpfs(tmp_path):
    """A 300 KiB tmpfs filled to the last byte (needs root and mount permission; skipped otherwise)."""
    mount = tmp_path / "small"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=300k", "tmpfs", str(mount)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode(errors='replace').strip()}")
    try:
        with open(mount / "filler", "wb") as fh:
            try:
                fh.write(b"x" * (400 << 10))
            except OSError:
                pass
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_full_disk_mask_write_is_refused_not_an_empty_mask(full_tmpfs):
    target = full_tmpfs / "mask.mha"
    with pytest.raises(OSError):
        write_image_atomic(_image((20, 30, 30)), target)
    assert not target.exists()
    assert [p.name for p in full_tmpfs.iterdir()] == ["filler"]


def test_algorithm_container_on_a_full_disk_exits_1_with_one_line(tmp_path, full_tmpfs):
    inputs = write_platform_input(tmp_path / "input", make_study(3))
    result = run_algorithm("--input", inputs.root, "--output", full_tmpfs, "--engine", "baseline")
    assert result.returncode == 1, result.stderr
    errors = [line for line in result.stderr.splitlines() if "error" in line.lower()]
    assert len(errors) == 1 and ("could not be written" in errors[0] or "No space left" in errors[0]), result.stderr
    assert "Traceback" not in result.stderr
    assert not list(full_tmpfs.rglob("*.mha"))


@pytest.mark.parametrize("name", ["S.MHA", "pet.Nii.Gz", "x.NRRD", "y.TIFF"])
def test_image_suffixes_match_in_any_case(tmp_path, name):
    (tmp_path / name).write_bytes(b"x")
    assert layout.is_image_file(tmp_path / name)
    assert layout.image_stem(name) == name.split(".")[0]
    assert layout.image_suffix(name) == name[len(name.split(".")[0]):].lower()


@pytest.mark.parametrize("name", ["S.MHA", "S.Mha", "S.NII.GZ", "S.NII", "S.NRRD"])
def test_upper_case_suffixes_read(tmp_path, name):
    sitk.WriteImage(_image(), str(tmp_path / name.lower()))
    os.rename(tmp_path / name.lower(), tmp_path / name)
    assert read_image(tmp_path / name).GetSize() == (6, 5, 4)
    assert read_geometry(tmp_path / name).size == (6, 5, 4)
    assert layout.find_image(tmp_path, "S") == [tmp_path / name]


def test_algorithm_container_reads_an_upper_case_mha_input(tmp_path):
    inputs = write_platform_input(tmp_path / "input", make_study(4))
    for path in (inputs.pet, inputs.ct):
        path.rename(path.with_name(path.stem + ".MHA"))
    result = run_algorithm("--input", inputs.root, "--output", tmp_path / "out", "--engine", "baseline")
    assert result.returncode == 0, result.stderr
    assert len(list((tmp_path / "out").rglob("*.mha"))) == 1


@pytest.mark.parametrize("text", ["[" * 3000 + "]" * 3000, '{"tumor": [[1' + "0" * 4000 + ', 0, 0]]}',
                                  '{"tumor": [[1e400, 0, 0]]}', '{"tumor": [[NaN, 0, 0]]}'])
def test_hostile_clicks_are_one_line_input_errors(tmp_path, text):
    from app.service.errors import ApiError
    from app.service.studies import store_clicks
    from petct.clicks import read_clicks

    path = tmp_path / "lesion-clicks.json"
    path.write_text(text)
    with pytest.raises(InputError) as caught:
        read_clicks(path)
    assert caught.value.path == str(path) and "\n" not in caught.value.describe()
    with pytest.raises(ApiError) as refused:
        store_clicks(text, folder=tmp_path, size_xyz=(8, 8, 8))
    assert refused.value.status == 422 and refused.value.field == "clicks"


def test_clicks_nested_100000_deep_and_a_10_to_the_400_coordinate(tmp_path):
    from evaluation.interactive import job_step
    from petct.clicks import read_clicks

    deep = tmp_path / "deep.json"
    deep.write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(InputError, match="nested too deeply"):
        read_clicks(deep)

    class Job:
        pk = "job-1"
        values = {"lesion-clicks.json": {"tumor": [[10**400, 0, 0]]}}
    with pytest.raises(InputError, match="voxel indices must be integers"):
        job_step(Job(), input_dir=tmp_path)


def test_an_image_read_from_nifti_is_written_as_mha_without_itk_warnings(tmp_path, capfd):
    import numpy as np
    import SimpleITK as sitk

    from petct.imageio import read_array, read_image, write_image_atomic

    array = np.arange(4 * 5 * 6, dtype=np.float32).reshape(4, 5, 6)
    source = sitk.GetImageFromArray(array)
    source.SetSpacing((2.0, 2.5, 3.0))
    sitk.WriteImage(source, str(tmp_path / "pet.nii.gz"))
    image = read_image(tmp_path / "pet.nii.gz")
    assert "qto_xyz" in image.GetMetaDataKeys()  # what made MetaImageIO warn once per item
    capfd.readouterr()
    write_image_atomic(image, tmp_path / "pet.mha")
    assert "MetaImageIO" not in capfd.readouterr().err
    assert sitk.ProcessObject.GetGlobalWarningDisplay()  # ITK's other warnings still show
    written, geometry = read_array(tmp_path / "pet.mha")
    np.testing.assert_array_equal(written, array)
    assert geometry.spacing == (2.0, 2.5, 3.0)
    sitk.WriteImage(image, str(tmp_path / "plain.mha"))  # without the kit's writer: the warnings it hides
    assert "MetaImageIO" in capfd.readouterr().err

def test_the_algorithm_exits_2_naming_a_clicks_file_nested_100000_deep(tmp_path, capsys):
    from algorithm.__main__ import main as algorithm_main
    from petct.phantom import make_study

    study = make_study(3, size=(24, 24, 16), n_lesions=1)
    folder = tmp_path / "in"
    for sub, image in (("pet", study.suv), ("ct", study.ctres)):
        (folder / "images" / sub).mkdir(parents=True)
        sitk.WriteImage(image, str(folder / "images" / sub / "x.mha"))
    (folder / "lesion-clicks.json").write_text("[" * 100_000 + "]" * 100_000)
    code = algorithm_main(["--input", str(folder), "--output", str(tmp_path / "out"), "--engine", "baseline",
                           "--challenge", "autopet-2025-interactive"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2, err
    assert "lesion-clicks.json" in err[-1] and "nested too deeply" in err[-1]
    assert "Traceback" not in "\n".join(err) and "RecursionError" not in "\n".join(err)
