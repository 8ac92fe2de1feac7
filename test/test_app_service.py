"""The HTTP service against a real uvicorn process on loopback: scoring, jobs, limits, hostile input, organiser mode."""
from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import httpx
import numpy as np
import pytest
import SimpleITK as sitk

from app_helpers import (REPO, Server, files_of, files_under, random_mask, reference_metrics, wait_for_job,
                         write_mask, write_phantom)

LIMIT_BYTES = 3 * 1024 * 1024  # the main server's upload limit; tiny phantom studies are < 1 MB


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("app-service")


@pytest.fixture(scope="module")
def ground_truth(workspace) -> Path:
    """Organiser-mode ground truth: two cases in the flat layout."""
    folder = workspace / "gt"
    rng = np.random.default_rng(7)
    for name in ("CASE_A", "CASE_B"):
        write_mask(random_mask(rng, density=0.1), folder / f"{name}_SEG.mha")
    return folder


@pytest.fixture(scope="module")
def server(workspace, ground_truth):
    with Server(data_dir=workspace / "data", args=["--max-upload", str(LIMIT_BYTES),
                                                   "--ground-truth", str(ground_truth)]) as running:
        yield running


@pytest.fixture(scope="module")
def study(workspace) -> dict[str, Path]:
    return write_phantom(workspace / "studies", 3, n_lesions=3)


def test_score_matches_a_slow_reference_on_random_masks(server, tmp_path):
    rng = np.random.default_rng(2024)
    spacing = (2.0, 3.0, 4.0)
    with server.client() as client:
        for i in range(12):
            gt = random_mask(rng, density=0.0 if i == 0 else None)
            pred = random_mask(rng, density=0.0 if i == 1 else None)
            gt_file = write_mask(gt, tmp_path / f"gt{i}.mha", spacing=spacing)
            pred_file = write_mask(pred, tmp_path / f"pred{i}.nii.gz", spacing=spacing)
            response = client.post("/v1/score", params={"study": f"s{i}"},
                                   files=files_of({"prediction": pred_file, "ground_truth": gt_file}))
            assert response.status_code == 200, response.text
            body = response.json()
            expected = reference_metrics(gt, pred, np.prod(spacing) / 1000)
            for key, value in expected.items():
                assert (body[key] is None) == (value is None), (i, key, body)
                if value is not None:
                    assert body[key] == pytest.approx(value, abs=1e-9), (i, key)
            assert body["study"] == f"s{i}"
            assert body["prediction_file"] == f"pred{i}.nii.gz"  # the client's name, not the server's path
    assert files_under(server.data_dir / "scratch") == []  # nothing kept after answering


def test_job_lifecycle_with_label(server, study):
    with server.client() as client:
        response = client.post("/v1/studies", files=files_of(study))
        assert response.status_code == 202, response.text
        job = response.json()
        assert job["state"] in ("queued", "running") and job["has_label"]
        assert response.headers["location"] == f"/v1/jobs/{job['id']}"
        done = wait_for_job(client, job["id"])
        assert done["state"] == "succeeded", done
        assert done["attempts"] == 1 and done["error"] is None
        assert done["timings"]["inference_s"] >= 0 and "scoring_s" in done["timings"]
        assert set(done["metrics"]) >= {"dice", "false_positive_volume", "false_negative_volume"}
        assert done["metrics"]["gt_lesions"] == 3

        mask = client.get(f"/v1/jobs/{job['id']}/mask")
        assert mask.status_code == 200
        path = server.data_dir.parent / "downloaded.mha"
        path.write_bytes(mask.content)
        image = sitk.ReadImage(str(path))
        pet = sitk.ReadImage(str(study["pet"]))
        assert image.GetPixelID() == sitk.sitkUInt8
        assert image.GetSize() == pet.GetSize() and image.GetOrigin() == pytest.approx(pet.GetOrigin())
        assert set(np.unique(sitk.GetArrayViewFromImage(image)).tolist()) <= {0, 1}

        listed = client.get("/v1/jobs", params={"limit": 1}).json()
        assert listed["total"] >= 1 and len(listed["jobs"]) == 1 and listed["limit"] == 1

        assert client.delete(f"/v1/jobs/{job['id']}").status_code == 204
        assert client.get(f"/v1/jobs/{job['id']}").status_code == 404
        assert client.get(f"/v1/jobs/{job['id']}/mask").status_code == 404
        assert not (server.data_dir / "jobs" / job["id"]).exists()


def test_job_without_label_has_no_metrics_and_pages_cover_every_job(server, study):
    with server.client() as client:
        ids = []
        for _ in range(3):
            response = client.post("/v1/studies", files=files_of({"pet": study["pet"], "ct": study["ct"]}))
            assert response.status_code == 202, response.text
            ids.append(response.json()["id"])
        for job_id in ids:
            done = wait_for_job(client, job_id)
            assert done["state"] == "succeeded" and done["metrics"] is None and not done["has_label"]
        seen, offset = [], 0
        while offset is not None:
            page = client.get("/v1/jobs", params={"limit": 2, "offset": offset}).json()
            seen += [j["id"] for j in page["jobs"]]
            offset = page["next_offset"]
        assert len(seen) == len(set(seen)) == page["total"]
        assert set(ids) <= set(seen)
        assert seen.index(ids[2]) < seen.index(ids[0])  # newest first


def _error(response: httpx.Response, status: int) -> dict:
    assert response.status_code == status, response.text
    return response.json()["error"]


def test_bad_studies_are_refused_before_any_work(server, study, workspace):
    other = write_phantom(workspace / "other", 5, size=(40, 40, 30))
    corrupt = workspace / "corrupt.mha"
    corrupt.write_bytes(study["pet"].read_bytes()[:2000])
    before = set(files_under(server.data_dir / "jobs"))
    with server.client() as client:
        wrong_grid = _error(client.post("/v1/studies", files=files_of({"pet": study["pet"], "ct": other["ct"]})), 422)
        assert wrong_grid["field"] == "ct" and "grid" in wrong_grid["reason"]
        broken = _error(client.post("/v1/studies", files=files_of({"pet": corrupt, "ct": study["ct"]})), 422)
        assert broken["field"] == "pet" and broken["file"] == "corrupt.mha"
        missing = _error(client.post("/v1/studies", files=files_of({"pet": study["pet"]})), 422)
        assert missing["field"] == "ct"
        extra = _error(client.post("/v1/studies", files=files_of({**study, "notes": study["ct"]})), 422)
        assert extra["field"] == "notes"
        _error(client.post("/v1/studies", content=b"pet=1", headers={"content-type": "text/plain"}), 415)
        junk = _error(client.post("/v1/score", files={"prediction": ("x.bin", b"\x00garbage" * 100),
                                                      "ground_truth": ("y.bin", b"junk")}), 415)
        assert junk["field"] == "prediction"
    assert set(files_under(server.data_dir / "jobs")) == before
    assert files_under(server.data_dir / "scratch") == []


def test_oversize_upload_is_refused_while_streaming_and_leaves_nothing(server, study):
    big = np.random.default_rng(0).bytes(5 * 1024 * 1024)
    before = set(files_under(server.data_dir))
    with server.client() as client:
        # Content-Length announced: refused before a byte is stored.
        error = _error(client.post("/v1/studies", files={"pet": ("big.mha", big), "ct": ("ct.mha", b"x")}), 413)
        assert "limit" in error["reason"]

        # No Content-Length (chunked): counted while streaming, refused at the limit.
        boundary = "b0undary"
        head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"prediction\"; filename=\"p.mha\"\r\n\r\n"
                ).encode()

        def body():
            yield head
            for start in range(0, len(big), 256 * 1024):
                yield big[start:start + 256 * 1024]
            yield f"\r\n--{boundary}--\r\n".encode()

        response = client.post("/v1/score", content=body(),
                               headers={"content-type": f"multipart/form-data; boundary={boundary}"})
        _error(response, 413)
    assert set(files_under(server.data_dir)) == before


def test_hostile_file_names_and_headers(server, study, workspace):
    with server.client() as client:
        for name in ("../../etc/passwd", "..\\..\\boot.ini", "a\x00b.mha", "лёгкие ✓ 🫁.mha", "/abs/x.mha", ""):
            response = client.post("/v1/score", files={"prediction": (name, study["label"].read_bytes()),
                                                       "ground_truth": ("gt.mha", study["label"].read_bytes())})
            assert response.status_code == 200, (name, response.text)
            assert "\x00" not in (response.json()["prediction_file"] or "")
        # A MetaImage header that would make the reader open another file on the server.
        header = study["label"].read_bytes().split(b"ElementDataFile")[0] + b"ElementDataFile = /etc/passwd\n"
        error = _error(client.post("/v1/score", files={"prediction": ("p.mha", header),
                                                       "ground_truth": ("g.mha", study["label"].read_bytes())}), 422)
        assert error["field"] == "prediction" and "separate data file" in error["reason"]
    assert not (workspace / "etc").exists() and not (server.data_dir.parent / "etc").exists()
    assert files_under(server.data_dir / "scratch") == []


def test_job_ids_are_checked_before_touching_the_disk(server):
    with server.client() as client:
        for bad in ("..%2F..%2Fetc", "0" * 31, "Z" * 32, "%00"):
            assert client.get(f"/v1/jobs/{bad}").status_code == 404
            assert client.delete(f"/v1/jobs/{bad}").status_code == 404


def test_organiser_mode_scores_against_hidden_ground_truth(server, ground_truth, tmp_path):
    gt_bytes = (ground_truth / "CASE_A_SEG.mha").read_bytes()
    with server.client() as client:
        assert client.get("/v1/cases").json() == {"cases": ["CASE_A", "CASE_B"]}
        response = client.post("/v1/cases/CASE_A/score", files={"prediction": ("mine.mha", gt_bytes)})
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["dice"] == pytest.approx(1.0) and body["study"] == "CASE_A"
        assert "ground_truth_file" not in body or body["ground_truth_file"] is None
        assert str(ground_truth) not in response.text
        assert _error(client.post("/v1/cases/NOPE/score", files={"prediction": ("p.mha", gt_bytes)}), 404)
        wrong = write_mask(np.zeros((5, 5, 5), np.uint8), tmp_path / "small.mha")
        error = _error(client.post("/v1/cases/CASE_B/score", files={"prediction": ("small.mha", wrong.read_bytes())}),
                       422)
        assert error["field"] == "prediction" and str(ground_truth) not in json.dumps(error)
        schema = client.get("/openapi.json").json()
        assert {"/v1/score", "/v1/studies", "/v1/jobs", "/v1/jobs/{job_id}", "/v1/jobs/{job_id}/mask",
                "/v1/cases", "/v1/cases/{case}/score", "/healthz", "/readyz"} <= set(schema["paths"])
        assert client.get("/docs").status_code == 200
        ready = client.get("/readyz").json()
        assert ready["ready"] and ready["engine"] == "baseline" and ready["organiser_mode"]


def test_token_guards_everything_but_health(tmp_path):
    token = "s3cret-token-for-tests-0123456789"
    with Server(data_dir=tmp_path / "data", env={"PETCT_KIT_TOKEN": token}) as server:
        with server.client() as anonymous:
            assert anonymous.get("/healthz").status_code == 200
            for method, path in (("GET", "/readyz"), ("GET", "/v1/jobs"), ("POST", "/v1/score"),
                                 ("GET", "/openapi.json"), ("GET", "/docs")):
                assert _error(anonymous.request(method, path), 401)
        with server.client(token="wrong-token-0123456789") as wrong:
            assert wrong.get("/v1/jobs").status_code == 401
        with server.client(token=token) as right:
            assert right.get("/v1/jobs").status_code == 200
            assert right.get("/readyz").status_code == 200


def test_refuses_a_public_address_without_a_token(tmp_path):
    result = subprocess.run([sys.executable, "-m", "app", "serve", "--host", "0.0.0.0", "--data-dir",
                             str(tmp_path)], cwd=REPO, capture_output=True, text=True, timeout=60,
                            env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO)})
    assert result.returncode == 2
    assert "PETCT_KIT_TOKEN" in result.stderr and "Traceback" not in result.stderr


def test_restart_loses_no_job(tmp_path):
    study = write_phantom(tmp_path / "studies", 4)
    data = tmp_path / "data"
    server = Server(data_dir=data).start()
    try:
        with server.client() as client:
            ids = [client.post("/v1/studies", files=files_of(study)).json()["id"] for _ in range(4)]
    finally:
        server.kill()  # some queued, perhaps one running: nothing is lost

    # Two more jobs as a crash would leave them: one interrupted once, one interrupted twice.
    with sqlite3.connect(data / "jobs.sqlite3") as db:
        db.execute("UPDATE jobs SET state = 'running', attempts = 1 WHERE id = ?", (ids[0],))
        db.execute("UPDATE jobs SET state = 'running', attempts = 2 WHERE id = ?", (ids[1],))

    with Server(data_dir=data) as restarted, restarted.client() as client:
        jobs = {job_id: wait_for_job(client, job_id) for job_id in ids}
    assert jobs[ids[0]]["state"] == "succeeded" and jobs[ids[0]]["attempts"] == 2
    assert jobs[ids[1]]["state"] == "failed" and "stopped" in jobs[ids[1]]["error"]
    assert all(jobs[i]["state"] == "succeeded" for i in ids[2:])
