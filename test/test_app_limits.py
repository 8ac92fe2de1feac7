"""Decoded-size and compression-ratio limits on uploads, checked from the headers."""
from __future__ import annotations

import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest

from app.service import upload_checks
from app.service.errors import ApiError
from app.service.settings import ServiceSettings, UploadLimits
from app.service.upload_checks import check_upload, check_uploads
from app.service.uploads import StoredFile
from app_helpers import REPO, Server, files_of, write_mask, write_phantom


def _mha(path: Path, *, size=(1024, 1024, 256), element="MET_DOUBLE", data: bytes | None = None) -> Path:
    """A MetaImage whose header announces `size` voxels of `element`; compressed zeros follow unless `data`."""
    payload = zlib.compress(bytes(1 << 20), 9) if data is None else data
    header = ["ObjectType = Image", "NDims = 3", f"DimSize = {' '.join(map(str, size))}",
              f"ElementType = {element}", "ElementSpacing = 1 1 1"]
    if data is None:
        header += ["CompressedData = True", f"CompressedDataSize = {len(payload)}"]
    path.write_bytes(("\n".join(header) + "\nElementDataFile = LOCAL\n").encode() + payload)
    return path


def _stored(path: Path, field="prediction") -> StoredFile:
    return StoredFile(field=field, client_name=path.name, path=path, size=path.stat().st_size)


@pytest.fixture
def no_voxel_reads(monkeypatch):
    """Fail the test if any voxel is read: the limits must be applied from the headers alone."""
    def refuse(path):
        raise AssertionError(f"voxels of {path} were read")
    monkeypatch.setattr(upload_checks, "read_image", refuse)


def test_a_small_upload_announcing_gigabytes_is_refused_from_its_header(tmp_path, no_voxel_reads):
    bomb = _mha(tmp_path / "gt.mha")  # 2 GiB of float64 in a 1 KiB file: within --max-voxels
    assert bomb.stat().st_size < 10_000
    limits = UploadLimits()
    assert 1024 * 1024 * 256 <= limits.max_voxels
    with pytest.raises(ApiError) as caught:
        check_upload(_stored(bomb), limits=limits)
    assert caught.value.status == 422
    assert "decodes to 2.0 GiB (268435456 voxels x 8 bytes), over the server's limit of 1.0 GiB" in str(
        caught.value.body())
    assert caught.value.file == "gt.mha"


def test_a_header_announcing_more_than_the_file_can_hold_is_refused(tmp_path, no_voxel_reads):
    liar = _mha(tmp_path / "liar.mha", size=(256, 256, 256), element="MET_UCHAR", data=bytes(1024))
    with pytest.raises(ApiError, match="times its"):
        check_upload(_stored(liar), limits=UploadLimits())


def test_request_total_is_limited(tmp_path, no_voxel_reads):
    a = _mha(tmp_path / "a.mha", size=(64, 64, 64), element="MET_FLOAT")  # 1 MiB each
    b = _mha(tmp_path / "b.mha", size=(64, 64, 64), element="MET_FLOAT")
    limits = UploadLimits(max_image_bytes=1 << 20, max_request_image_bytes=(3 << 20) // 2)
    check_upload(_stored(a), limits=limits, read_voxels=False)
    with pytest.raises(ApiError, match="the images of this request decode to 2.0 MiB"):
        check_uploads({"prediction": _stored(a), "ground_truth": _stored(b, "ground_truth")}, limits=limits,
                      read_voxels=False)


def test_limits_compare_with_a_slow_reference(tmp_path, no_voxel_reads):
    rng = np.random.default_rng(8)
    elements = {"MET_UCHAR": 1, "MET_SHORT": 2, "MET_FLOAT": 4, "MET_DOUBLE": 8}
    for i in range(40):
        element = rng.choice(list(elements))
        size = tuple(int(v) for v in rng.integers(1, 200, 3))
        path = _mha(tmp_path / f"{i}.mha", size=size, element=element)
        limits = UploadLimits(max_voxels=int(rng.integers(1, 8_000_000)), max_image_bytes=int(rng.integers(1, 1 << 25)),
                              max_ratio=float(rng.uniform(1, 20000)))
        voxels = size[0] * size[1] * size[2]
        decoded = voxels * elements[element]
        expected_ok = (voxels <= limits.max_voxels and decoded <= limits.max_image_bytes
                       and decoded / path.stat().st_size <= limits.max_ratio)
        try:
            check_upload(_stored(path), limits=limits, read_voxels=False)
            ok = True
        except ApiError:
            ok = False
        assert ok == expected_ok, (size, element, limits)


def test_empty_file_says_so(tmp_path):
    for name in ("empty.mha", "empty.nii.gz", "empty.nrrd"):
        (tmp_path / name).write_bytes(b"")
        with pytest.raises(ApiError) as caught:
            check_upload(_stored(tmp_path / name), limits=UploadLimits())
        assert caught.value.reason == "file is empty"


def test_healthy_study_passes_the_default_limits(tmp_path):
    study = write_phantom(tmp_path, 3)
    grids = check_uploads({field: _stored(path, field) for field, path in study.items()},
                          limits=ServiceSettings(data_dir=tmp_path).upload_limits)
    assert set(grids) == {"pet", "ct", "label"}
    zeros = write_mask(np.zeros((120, 130, 140), np.uint8), tmp_path / "zeros.mha")  # compresses ~1000:1
    check_upload(_stored(zeros), limits=UploadLimits())


def test_service_refuses_the_bomb_and_an_empty_upload(tmp_path):
    bomb = _mha(tmp_path / "gt.mha")
    empty = tmp_path / "empty.mha"
    empty.write_bytes(b"")
    small = write_mask(np.ones((4, 5, 6), np.uint8), tmp_path / "p.mha")
    with Server(data_dir=tmp_path / "data", args=["--max-image-bytes", "1GiB", "--max-ratio", "1100"]) as server:
        with server.client() as client:
            response = client.post("/v1/score", files=files_of({"prediction": small, "ground_truth": bomb}))
            assert response.status_code == 422, response.text
            assert "decodes to 2.0 GiB" in response.json()["error"]["reason"]
            response = client.post("/v1/score", files=files_of({"prediction": empty, "ground_truth": small}))
            assert response.status_code == 422 and response.json()["error"]["reason"] == "file is empty", response.text


def test_serve_refuses_a_request_limit_below_the_image_limit(tmp_path):
    settings = ServiceSettings(data_dir=tmp_path, max_image_bytes=2 << 20, max_request_image_bytes=1 << 20)
    with pytest.raises(Exception, match="--max-request-image-bytes"):
        settings.check()


def test_every_upload_path_applies_the_limits(tmp_path):
    """/v1/studies, /v1/cases/{case}/score and phase submissions: each file's limits and the request's total."""
    organiser = "organiser-token-for-limit-tests-01"
    gt, data = tmp_path / "gt", tmp_path / "data"
    for case in ("CASE_A", "CASE_B"):
        write_mask(np.ones((6, 6, 6), np.uint8), gt / f"{case}_SEG.mha")
    (tmp_path / "cases.txt").write_text("CASE_A\nCASE_B\n")

    def app_cli(*args: str) -> str:
        done = subprocess.run([sys.executable, "-m", "app", *args, "--data-dir", str(data)], cwd=REPO, text=True,
                              capture_output=True, timeout=60, env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO)})
        assert done.returncode == 0, done.stderr
        return done.stdout.strip()

    alice = app_cli("participants", "add", "alice")
    app_cli("phases", "create", "final", "--cases", str(tmp_path / "cases.txt"), "--per-day", "5", "--total", "5")
    bomb = _mha(tmp_path / "bomb.mha")
    # 6 x 6 x 6 uint8 masks decode to 216 bytes each: one passes, two together do not
    masks = {case: write_mask(np.ones((6, 6, 6), np.uint8), tmp_path / f"{case}.mha") for case in ("CASE_A", "CASE_B")}
    args = ["--ground-truth", str(gt), "--max-image-bytes", "300", "--max-request-image-bytes", "400"]
    with Server(data_dir=data, args=args, env={"PETCT_KIT_TOKEN": organiser}, token=organiser) as server:
        with server.client() as client:
            response = client.post("/v1/studies", files=files_of({"pet": masks["CASE_A"], "ct": bomb}))
            assert response.status_code == 422, response.text
            assert response.json()["error"]["field"] == "ct" and "decodes to" in response.json()["error"]["reason"]
            assert client.get("/v1/jobs").json()["total"] == 0
            response = client.post("/v1/cases/CASE_A/score", files=files_of({"prediction": bomb}))
            assert response.status_code == 422 and "decodes to" in response.text, response.text
            response = client.post("/v1/cases/CASE_A/score", files=files_of({"prediction": masks["CASE_A"]}))
            assert response.status_code == 200, response.text
        with server.client(alice) as client:
            response = client.post("/v1/phases/final/submissions", files=files_of(masks))
            assert response.status_code == 422, response.text
            assert "the images of this request decode to 432 B" in response.json()["error"]["reason"]
            assert client.get("/v1/phases/final").json()["used_total"] == 0  # refused before it counted
