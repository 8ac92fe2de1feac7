"""The HTTP service against a real uvicorn process on loopback: scoring, jobs, limits, hostile input, organiser mode."""
from __future__ import annotations

import json
import re
import socket
import sqlite3
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import httpx
import numpy as np
import pytest
import SimpleITK as sitk

from app.service.api import create_app
from app.service.jobs import JobState, JobStore, new_job_id
from app.service.settings import ServiceSettings
from app_helpers import (
    REPO,
    Server,
    files_of,
    files_under,
    random_mask,
    reference_metrics,
    wait_for_job,
    write_mask,
    write_phantom,
)
from petct.errors import InputError

LIMIT_BYTES = 3 * 1024 * 1024  # the main server's upload limit; tiny phantom studies are < 1 MB
ORGANISER = "organiser-token-for-tests-0123456789"


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
                                                   "--ground-truth", str(ground_truth)],
                env={"PETCT_KIT_TOKEN": ORGANISER}, token=ORGANISER) as running:
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
        assert done["metrics"]["study"] == "SUV"  # the uploaded PET's name, not the job id

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

        stored = sorted(p.name for p in (server.data_dir / "jobs" / job["id"]).iterdir())
        assert len(stored) == 4 and all(re.fullmatch(r"(pet|ct|label)-[0-9a-f]{16}\.mha|mask\.mha", n) for n in stored), \
            stored  # server-made names only, whatever the client called its files

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
        done = [wait_for_job(client, job_id) for job_id in ids]
        for job in done:
            assert job["state"] == "succeeded" and job["metrics"] is None and not job["has_label"]
        # One inference at a time: each job ran (start to finish) before the next one started.
        spans = sorted((datetime.fromisoformat(j["started_at"]), datetime.fromisoformat(j["finished_at"])) for j in done)
        assert all(finished <= next_start for (_, finished), (next_start, _) in zip(spans, spans[1:])), spans
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


def test_a_ct_on_another_grid_is_resampled_as_the_command_line_does(server, study, workspace):
    other = write_phantom(workspace / "coarse", 5, size=(40, 40, 30))
    with server.client() as client:
        response = client.post("/v1/studies", files=files_of({"pet": study["pet"], "ct": other["ct"]}))
        assert response.status_code == 202, response.text
        done = wait_for_job(client, response.json()["id"])
    assert done["state"] == "succeeded", done
    assert done["notes"]["ct_resampled"]["coverage"] > 0


def test_bad_studies_are_refused_before_any_work(server, study, workspace):
    other = write_phantom(workspace / "other", 5, size=(40, 40, 30))
    corrupt = workspace / "corrupt.mha"
    corrupt.write_bytes(study["pet"].read_bytes()[:2000])
    before = set(files_under(server.data_dir / "jobs"))
    with server.client() as client:
        far_ct = sitk.ReadImage(str(other["ct"]))
        far_ct.SetOrigin((5000.0, 5000.0, 5000.0))
        sitk.WriteImage(far_ct, str(workspace / "far_ct.mha"))
        no_overlap = _error(client.post("/v1/studies", files=files_of({"pet": study["pet"],
                                                                        "ct": workspace / "far_ct.mha"})), 422)
        assert no_overlap["field"] == "ct" and "overlap" in no_overlap["reason"]
        broken = _error(client.post("/v1/studies", files=files_of({"pet": corrupt, "ct": study["ct"]})), 422)
        assert broken["field"] == "pet" and broken["file"] == "corrupt.mha"
        missing = _error(client.post("/v1/studies", files=files_of({"pet": study["pet"]})), 422)
        assert missing["field"] == "ct"
        extra = _error(client.post("/v1/studies", files=files_of({**study, "notes": study["ct"]})), 422)
        assert extra["field"] == "notes"
        _error(client.post("/v1/studies", content=b"pet=1", headers={"content-type": "text/plain"}), 415)
        label = study["label"].read_bytes()
        gz = write_mask(np.ones((10, 12, 14), np.uint8), workspace / "ones.nii.gz").read_bytes()
        for field, name, data in (("prediction", "cut.mha", label[:-500]), ("ground_truth", "cut.nii.gz", gz[:-40])):
            other = "ground_truth" if field == "prediction" else "prediction"
            response = client.post("/v1/score", files={field: (name, data), other: ("whole.mha", label)})
            cut = _error(response, 422)
            assert (cut["field"], cut["file"]) == (field, name), cut
            assert str(server.data_dir) not in response.text  # the server's own paths stay inside
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
        error = _error(response, 413)
        assert error["field"] == "prediction" and error["file"] == "p.mha"  # the part being received
    assert set(files_under(server.data_dir)) == before


def test_a_client_gone_mid_upload_leaves_no_file_and_no_traceback(server):
    body = (b"--b0\r\nContent-Disposition: form-data; name=\"prediction\"; filename=\"p.mha\"\r\n\r\n" + b"x" * 4096)
    with socket.create_connection(("127.0.0.1", server.port)) as raw:
        raw.sendall(b"POST /v1/score HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=b0\r\n"
                    b"Content-Length: 1000000\r\n\r\n" + body)
        time.sleep(0.3)  # let the server start storing the part
    deadline = time.monotonic() + 30
    while files_under(server.data_dir / "scratch") and time.monotonic() < deadline:
        time.sleep(0.05)
    assert files_under(server.data_dir / "scratch") == []
    with server.client() as client:
        assert client.get("/healthz").status_code == 200
    assert "Traceback" not in server.log.read_text()


def test_hostile_file_names_and_headers(server, study, workspace):
    with server.client() as client:
        for name in ("../../etc/passwd", "..\\..\\boot.ini", "a\x00b.mha", "лёгкие ✓ 🫁.mha", "/abs/x.mha", ""):
            response = client.post("/v1/score", files={"prediction": (name, study["label"].read_bytes()),
                                                       "ground_truth": ("gt.mha", study["label"].read_bytes())})
            assert response.status_code == 200, (name, response.text)
            assert "\x00" not in (response.json()["prediction_file"] or "")
        # Headers that would make the reader open another file on the server (and echo its bytes back).
        for name, header in _detached_headers(study["label"], secret=_secret_file(workspace)).items():
            response = client.post("/v1/score", files={"prediction": (name, header),
                                                       "ground_truth": ("g.mha", study["label"].read_bytes())})
            error = _error(response, 422)
            assert error["field"] == "prediction" and "header" in error["reason"], (name, error)
            assert "values" not in response.text, name
    assert not (workspace / "etc").exists() and not (server.data_dir.parent / "etc").exists()
    assert files_under(server.data_dir / "scratch") == []


def _secret_file(folder: Path) -> Path:
    """A file only the server can read: eight bytes that are a valid 2 x 2 x 2 uint8 volume."""
    path = folder / "secret.raw"
    path.write_bytes(bytes(range(8)))
    return path


def _detached_headers(mask: Path, *, secret: Path) -> dict[str, bytes]:
    """Upload name -> header that points the reader at `secret` (each one SimpleITK would follow)."""
    body = b"NDims = 3\nDimSize = 2 2 2\nElementType = MET_UCHAR\n"
    return {
        "usual-order.mha": mask.read_bytes().split(b"ElementDataFile")[0] + b"ElementDataFile = /etc/passwd\n",
        "type-first.mha": b"ElementType = MET_UCHAR\nNDims = 3\nDimSize = 2 2 2\nElementDataFile = %s\n" % bytes(secret),
        "decoy-comment.mha": b"Comment = ElementDataFile = LOCAL\nObjectType = Image\n" + body
                             + b"ElementDataFile: %s\n" % bytes(secret),
        "long-header.nrrd": b"NRRD0004\n" + b"# padding\n" * 8000 + b"type: uchar\ndimension: 3\nsizes: 2 2 2\n"
                            b"encoding: raw\ndata file: %s\n\n" % bytes(secret),
        "no-data-line.mha": b"ObjectType = Image\n" + body,
    }


def test_detached_headers_are_really_followed_by_simpleitk(study, tmp_path):
    """The headers above are real threats: read outside the service, each one loads the secret's bytes."""
    secret = _secret_file(tmp_path)
    for name, header in _detached_headers(study["label"], secret=secret).items():
        if name in ("usual-order.mha", "no-data-line.mha"):
            continue  # /etc/passwd is not a 2 x 2 x 2 volume; no-data-line is refused by any reader
        path = tmp_path / name
        path.write_bytes(header)
        assert sitk.GetArrayFromImage(sitk.ReadImage(str(path))).ravel().tolist() == list(range(8)), name


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


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "[::]", "192.168.1.20", "10.0.0.7", "fe80::1", "my-laptop.local",
                                  "::ffff:127.0.0.1"])
def test_refuses_any_but_a_loopback_address_without_a_token(host, tmp_path):
    with pytest.raises(InputError, match="PETCT_KIT_TOKEN"):
        ServiceSettings(data_dir=tmp_path, host=host).check()
    ServiceSettings(data_dir=tmp_path, host=host, token="t" * 16).check()  # with a token it may


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.2", "::1", "[::1]", "localhost"])
def test_loopback_needs_no_token_but_a_given_token_must_be_long(host, tmp_path):
    ServiceSettings(data_dir=tmp_path, host=host).check()
    with pytest.raises(InputError, match="16 characters"):
        ServiceSettings(data_dir=tmp_path, host=host, token="secret").check()


def _serve_cli(*args: str) -> subprocess.CompletedProcess:
    """`python -m app serve ARGS` with no token in the environment, for settings it must refuse."""
    return subprocess.run([sys.executable, "-m", "app", "serve", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=60, env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO)})


def test_refuses_a_public_address_without_a_token(tmp_path):
    result = _serve_cli("--host", "0.0.0.0", "--data-dir", str(tmp_path))
    assert result.returncode == 2
    assert "PETCT_KIT_TOKEN" in result.stderr and "Traceback" not in result.stderr


def test_unusable_data_folder_is_one_line_and_exit_2(tmp_path):
    (tmp_path / "jobs.sqlite3").write_bytes(b"not a database, just text" * 100)
    result = _serve_cli("--engine", "baseline", "--data-dir", str(tmp_path))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "jobs.sqlite3" in result.stderr and "job database" in result.stderr
    with pytest.raises(InputError, match="data folder"):
        create_app(settings=ServiceSettings(data_dir=tmp_path / "jobs.sqlite3" / "data"), engine=None)


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
        assert _error(client.get(f"/v1/jobs/{ids[1]}/mask"), 409)["reason"].startswith("job is failed")
        assert client.delete(f"/v1/jobs/{ids[1]}").status_code == 204
        assert not (data / "jobs" / ids[1]).exists()
    assert jobs[ids[0]]["state"] == "succeeded" and jobs[ids[0]]["attempts"] == 2
    assert jobs[ids[1]]["state"] == "failed" and "stopped" in jobs[ids[1]]["error"]
    assert all(jobs[i]["state"] == "succeeded" for i in ids[2:])


def test_a_running_job_is_not_deleted(tmp_path):
    store = JobStore(tmp_path / "jobs.sqlite3")
    queued, running = new_job_id(), new_job_id()
    for job_id in (running, queued):
        store.add(job_id, {"pet": "pet.mha", "ct": "ct.mha"})
    assert store.claim_next().id == running
    assert store.delete(running) == JobState.running and store.get(running).state == JobState.running
    assert store.delete(queued) == JobState.queued and store.get(queued) is None
    assert store.delete(queued) is None
    assert store.claim_next() is None  # the deleted job never runs
