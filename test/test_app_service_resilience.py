"""The service under failure, in process with injected faults: full disk, failing database, slow scoring, restarts."""
from __future__ import annotations

import errno
import logging
import sqlite3
import subprocess
import sys
import time
from collections import namedtuple

import pytest
from fastapi.testclient import TestClient

import app.service.deps as deps
import app.service.jobs as jobs_module
import app.service.uploads as uploads
import app.service.worker as worker_module
from app.service.api import create_app
from app.service.errors import ApiError
from app.service.jobs import JobState, JobStore, new_job_id
from app.service.scoring import call_killable, scoring_processes
from app.service.settings import ServiceSettings
from app.service.worker import InferenceWorker
from app_helpers import REPO, files_of, write_phantom
from petct.atomic import IncompleteWriteError
from petct.decoded import DecodedStudy
from petct.errors import InputError


class IdleEngine:
    """An engine no test job reaches: these tests stop before inference."""

    def describe(self) -> dict:
        return {"engine": "idle"}


def service_client(tmp_path, **settings) -> TestClient:
    app = create_app(settings=ServiceSettings(data_dir=tmp_path / "data", **settings), engine=IdleEngine())
    return TestClient(app)


@pytest.fixture
def study(tmp_path):
    return write_phantom(tmp_path / "study", 1)


def test_short_disk_and_a_stopped_worker_refuse_new_studies_with_a_reason(tmp_path, study, monkeypatch):
    with service_client(tmp_path, min_free_bytes=10**6) as client:
        usage = namedtuple("usage", "total used free")
        monkeypatch.setattr(deps.shutil, "disk_usage", lambda _: usage(10**9, 10**9 - 1000, 1000))
        response = client.post("/v1/studies", files=files_of(study))
        assert response.status_code == 503 and "--min-free" in response.json()["error"]["reason"]
        ready = client.get("/readyz")
        assert ready.status_code == 503 and "1000 bytes free" in ready.json()["reason"]
        monkeypatch.undo()
        client.app.state.service.worker.stop()
        response = client.post("/v1/studies", files=files_of(study))
        assert response.status_code == 503 and "worker is not running" in response.json()["error"]["reason"]
    assert not list((tmp_path / "data" / "jobs").iterdir())


def test_deleting_a_queued_job_frees_the_images_held_for_it(tmp_path):
    """The worker keeps one queued study's images; deleting that job must give the place back."""
    with service_client(tmp_path) as client:
        service = client.app.state.service
        service.worker.stop()  # the job stays queued
        job_id = new_job_id()
        (service.settings.jobs_dir / job_id).mkdir(parents=True)
        service.store.add(job_id, {"pet": "pet.mha", "ct": "ct.mha"}, owner=None, study="s")
        assert service.worker.reserve(job_id) and service.worker.hand(job_id, DecodedStudy())
        assert not service.worker.reserve(new_job_id())  # the one place is taken
        assert client.delete(f"/v1/jobs/{job_id}").status_code == 204
        assert service.worker.reserve(new_job_id())


def test_an_upload_that_fills_the_disk_gets_507_and_leaves_nothing(tmp_path, study, monkeypatch):
    real_write = uploads.os.write
    written = {"bytes": 0}

    def filling_write(fd, data):
        written["bytes"] += len(data)
        if written["bytes"] > 1000:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(fd, data)

    with service_client(tmp_path) as client:
        monkeypatch.setattr(uploads.os, "write", filling_write)
        for path in ("/v1/studies", "/v1/score"):
            written["bytes"] = 0
            files = files_of(study) if path == "/v1/studies" else files_of(
                {"prediction": study["label"], "ground_truth": study["label"]})
            response = client.post(path, files=files)
            assert response.status_code == 507, response.text
            assert "disk is full" in response.json()["error"]["reason"]
    left = [p for p in (tmp_path / "data").rglob("*") if p.is_file() and "sqlite3" not in p.name]
    assert left == []


def test_the_worker_loop_survives_a_failing_database_and_records_once_it_recovers(tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(worker_module, "BACKOFF_S", (0.01,))
    store = JobStore(tmp_path / "jobs.sqlite3")
    job_id = new_job_id()
    store.add(job_id, {"pet": "pet.mha", "ct": "ct.mha"})  # no such files: the job fails, and must be recorded
    real_claim, real_finish = store.claim_next, store.finish
    failures = {"claim": 3, "finish": 3}

    def flaky(name, real):
        def call(*args, **kwargs):
            if failures[name] > 0:
                failures[name] -= 1
                raise sqlite3.OperationalError("disk I/O error")
            return real(*args, **kwargs)
        return call

    monkeypatch.setattr(store, "claim_next", flaky("claim", real_claim))
    monkeypatch.setattr(store, "finish", flaky("finish", real_finish))
    worker = InferenceWorker(store=store, engine=IdleEngine(), jobs_dir=tmp_path / "jobs", scoring=None)
    with caplog.at_level(logging.ERROR, logger="app.worker"):
        worker.start()
        deadline = time.monotonic() + 60
        while store.get(job_id).state != JobState.failed and time.monotonic() < deadline:
            time.sleep(0.02)
        assert worker.alive
        worker.stop()
    assert store.get(job_id).state == JobState.failed
    assert failures == {"claim": 0, "finish": 0}
    assert "retrying" in caplog.text and "disk I/O error" in caplog.text


def test_a_mask_written_short_fails_its_job_as_a_full_disk(tmp_path, monkeypatch):
    import algorithm.pipeline

    store = JobStore(tmp_path / "jobs.sqlite3")
    job_id = new_job_id()
    store.add(job_id, {"pet": "pet.mha", "ct": "ct.mha"})
    (tmp_path / "jobs" / job_id).mkdir(parents=True)
    segmented = namedtuple("segmented", "mask timings")
    monkeypatch.setattr(algorithm.pipeline, "segment_study", lambda **_: segmented(mask=None, timings={}))

    def short_write(image, path):
        raise IncompleteWriteError("12 bytes on disk, 400 expected", path=path)

    monkeypatch.setattr(worker_module, "write_image_atomic", short_write)
    worker = InferenceWorker(store=store, engine=IdleEngine(), jobs_dir=tmp_path / "jobs", scoring=None)
    worker._run(store.claim_next())
    job = store.get(job_id)
    assert job.state == JobState.failed
    assert job.error == ("inference failed: the server's disk is full (the mask came out short: "
                         "12 bytes on disk, 400 expected)")
    assert worker_module.disk_full(IncompleteWriteError("0 bytes on disk", path="x"))


def test_finished_jobs_expire_with_their_files(tmp_path, monkeypatch):
    store = JobStore(tmp_path / "jobs.sqlite3")
    old, recent, queued = new_job_id(), new_job_id(), new_job_id()
    for job_id in (old, recent, queued):
        store.add(job_id, {"pet": "p.mha", "ct": "c.mha"})
        (tmp_path / "jobs" / job_id).mkdir(parents=True)
        (tmp_path / "jobs" / job_id / "p.mha").write_bytes(b"x")
    now = time.time()
    for job_id, age in ((old, 8 * 86400), (recent, 3600)):
        store.claim_next()
        monkeypatch.setattr(jobs_module.time, "time", lambda age=age: now - age)
        store.finish(job_id, state=JobState.succeeded)
        monkeypatch.undo()
    worker = InferenceWorker(store=store, engine=IdleEngine(), jobs_dir=tmp_path / "jobs", scoring=None,
                             keep_jobs_for_s=7 * 86400)
    worker._expire_old_jobs()
    assert store.get(old) is None and not (tmp_path / "jobs" / old).exists()
    assert store.get(recent) is not None and (tmp_path / "jobs" / recent / "p.mha").exists()
    assert store.get(queued) is not None


def test_queued_time_after_a_restart_excludes_the_interrupted_run(tmp_path, monkeypatch):
    clock = {"now": 1000.0}
    monkeypatch.setattr(jobs_module.time, "time", lambda: clock["now"])
    store = JobStore(tmp_path / "jobs.sqlite3")
    job_id = new_job_id()
    store.add(job_id, {"pet": "p.mha", "ct": "c.mha"})
    clock["now"] += 5  # queued 5 s
    store.claim_next()
    clock["now"] += 300  # ran 300 s, then the server died
    store.close()
    restarted = JobStore(tmp_path / "jobs.sqlite3")
    assert restarted.recover() == ([job_id], [])
    clock["now"] += 7  # queued 7 s more
    job = restarted.claim_next()
    assert job.queued_s == pytest.approx(12.0)


def _sleepy(seconds: float) -> str:
    time.sleep(seconds)
    return "done"


def test_a_scoring_request_past_its_deadline_is_killed_and_answered_504():
    processes = scoring_processes(1)
    try:
        assert call_killable(processes, _sleepy, timeout_s=30, seconds=0.01) == "done"
        first = next(iter(processes._all)).process
        started = time.monotonic()
        with pytest.raises(ApiError) as refused:
            call_killable(processes, _sleepy, timeout_s=0.5, seconds=60)
        assert time.monotonic() - started < 20
        assert refused.value.status == 504 and "--score-timeout" in refused.value.reason
        assert not first.is_alive()  # killed, not left running in the background
        assert call_killable(processes, _sleepy, timeout_s=30, seconds=0.01) == "done"  # a fresh one took its slot
    finally:
        processes.close()


@pytest.mark.parametrize("token", [" leading-space-token-0123456789", "trailing-space-token-0123456789 ",
                                   "tab\tinside-is-fine-but-newline-end\n", " " * 20])
@pytest.mark.slow
def test_tokens_with_outer_white_space_are_refused_at_start_up(tmp_path, token):
    with pytest.raises(InputError, match="white space"):
        ServiceSettings(data_dir=tmp_path, token=token).check()
    result = subprocess.run([sys.executable, "-m", "app", "serve", "--data-dir", str(tmp_path)], cwd=REPO,
                            capture_output=True, text=True, timeout=60,
                            env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO), "PETCT_KIT_TOKEN": token})
    assert result.returncode == 2 and "white space" in result.stderr and "Traceback" not in result.stderr


def test_openapi_lists_only_the_responses_each_endpoint_can_return(tmp_path):
    with service_client(tmp_path) as client:
        paths = client.get("/openapi.json").json()["paths"]
    for path, methods in paths.items():
        for method, operation in methods.items():
            for code, response in operation["responses"].items():
                assert response.get("description"), (method, path, code)
    job = paths["/v1/jobs/{job_id}"]["get"]["responses"]
    assert set(job) == {"200", "401", "404"}
    assert "413" in paths["/v1/studies"]["post"]["responses"] and "409" not in paths["/v1/studies"]["post"]["responses"]
    assert "507" in paths["/v1/score"]["post"]["responses"]


def test_a_request_past_the_score_timeout_is_answered_504_over_http(tmp_path, study):
    with service_client(tmp_path, score_timeout_s=0.0001) as client:
        files = files_of({"prediction": study["label"], "ground_truth": study["label"]})
        response = client.post("/v1/score", files=files)
        assert response.status_code == 504, response.text
        assert "--score-timeout" in response.json()["error"]["reason"]
        assert client.get("/healthz").status_code == 200
    assert not [p for p in (tmp_path / "data" / "scratch").rglob("*") if p.is_file()]


@pytest.mark.parametrize("itk_message", [
    "Exception thrown in SimpleITK ImageFileWriter_Execute: {path}: No space left on device",
    "Exception thrown in SimpleITK ImageFileWriter_Execute: Could not write {path}"])
def test_a_mask_itk_could_not_write_on_a_full_disk_fails_as_a_full_disk_without_a_path(tmp_path, monkeypatch,
                                                                                       itk_message):
    import SimpleITK as sitk

    import algorithm.pipeline
    import petct.imageio as imageio
    from petct.phantom import make_study

    store = JobStore(tmp_path / "jobs.sqlite3")
    job_id = new_job_id()
    store.add(job_id, {"pet": "pet.mha", "ct": "ct.mha"})
    (tmp_path / "jobs" / job_id).mkdir(parents=True)
    mask = make_study(seed=1, n_lesions=1).seg
    segmented = namedtuple("segmented", "mask timings")
    monkeypatch.setattr(algorithm.pipeline, "segment_study", lambda **_: segmented(mask=mask, timings={}))

    def full_disk(image, path, **kwargs):
        raise RuntimeError(itk_message.format(path=path))
    monkeypatch.setattr(sitk, "WriteImage", full_disk)
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(imageio.shutil, "disk_usage", lambda _: usage(10**9, 10**9 - 100, 100))
    worker = InferenceWorker(store=store, engine=IdleEngine(), jobs_dir=tmp_path / "jobs", scoring=None)
    worker._run(store.claim_next())
    job = store.get(job_id)
    assert job.state == JobState.failed
    assert job.error == "inference failed: the server's disk is full"
    assert str(tmp_path) not in job.error


def test_an_engine_error_naming_a_server_path_is_told_without_it(tmp_path, monkeypatch):
    import algorithm.pipeline

    store = JobStore(tmp_path / "jobs.sqlite3")
    job_id = new_job_id()
    store.add(job_id, {"pet": "pet.mha", "ct": "ct.mha"})
    (tmp_path / "jobs" / job_id).mkdir(parents=True)

    def broken(**kwargs):
        raise ValueError(f"cannot use {kwargs['pet_path']}\nsecond line")
    monkeypatch.setattr(algorithm.pipeline, "segment_study", broken)
    worker = InferenceWorker(store=store, engine=IdleEngine(), jobs_dir=tmp_path / "jobs", scoring=None)
    worker._run(store.claim_next())
    error = store.get(job_id).error
    assert error == f"inference failed: ValueError: cannot use <jobs>/{job_id}/pet.mha second line"


def test_a_killed_server_leaves_no_temporary_files_outside_its_data_dir(tmp_path, request):
    """multiprocessing's pymp-* folders and every tempfile of the server and its children go to the scratch."""
    import shutil
    import tempfile
    from pathlib import Path

    import numpy as np

    from app_helpers import Server, write_mask

    system_tmp = tmp_path / "system-tmp"
    system_tmp.mkdir()
    short = Path(tempfile.mkdtemp(prefix="kit-", dir="/tmp"))  # a socket's path must stay short
    request.addfinalizer(lambda: shutil.rmtree(short, ignore_errors=True))
    data = short / "data"
    truth = np.zeros((6, 6, 6), np.uint8)
    truth[2:4, 2:4, 2:4] = 1
    write_mask(truth, tmp_path / "gt.mha")
    server = Server(data_dir=data, env={"TMPDIR": str(system_tmp)})
    with server:
        with server.client() as client:  # the scoring processes start: their forkserver makes a pymp-* folder
            files = {"prediction": ("p.mha", (tmp_path / "gt.mha").read_bytes()),
                     "ground_truth": ("g.mha", (tmp_path / "gt.mha").read_bytes())}
            assert client.post("/v1/score", files=files).status_code == 200
        assert list((data / "scratch" / "tmp").glob("pymp-*"))
        server.kill()
    assert list(system_tmp.iterdir()) == []
    leftover = list((data / "scratch" / "tmp").glob("pymp-*"))
    assert leftover  # what kill -9 leaves, in the data dir ...
    with Server(data_dir=data, env={"TMPDIR": str(system_tmp)}):
        assert not any(p.exists() for p in leftover)  # ... which the next start removes
    assert list(system_tmp.iterdir()) == []
