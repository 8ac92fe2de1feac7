"""The kit's three images built and run as the platform runs them (`make image-test`; not part of `make test`).

Builds what is missing on the local Debian bases with a CPU torch (`python -m images base-images`, then
`build --bases local --cpu`; podman's layer cache keeps a warm run short), then runs each image with the
platform's flags plus --read-only and a --tmpfs /tmp, and compares what it writes with the in-process run.
A machine where no container engine runs fails here; it does not skip.
"""
from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
import SimpleITK as sitk

from algorithm_helpers import output_files, run_algorithm, write_platform_input
from app_helpers import REPO, files_of, free_port, wait_for_job, write_phantom
from nnunet_helpers import dice

pytestmark = [pytest.mark.slow, pytest.mark.skipif(os.environ.get("PETCT_IMAGE_TEST") != "1",
                                                   reason="container images: run with `make image-test`")]

BUILD_TIMEOUT_S = 1800
RUN_TIMEOUT_S = 600
ALGORITHM = "petct-kit/algorithm:cpu"
EVALUATION = "petct-kit/evaluation:cpu"
APP = "petct-kit/app:cpu"
# The platform's hardening (app.dryrun.runner.docker_run_argv) plus what it adds for these runs.
HARDENING = ["--read-only", "--tmpfs", "/tmp", "-w", "/tmp", "--network", "none", "--cap-drop=ALL",
             "--security-opt=no-new-privileges", "--pids-limit=256", "--memory=4g", "--memory-swap=4g"]
TOKEN = "image-test-token"


def _images(*args: str) -> None:
    result = subprocess.run([sys.executable, "-m", "images", *args], cwd=REPO, timeout=BUILD_TIMEOUT_S)
    assert result.returncode == 0, f"python -m images {' '.join(args)} failed (its output is above)"


@pytest.fixture(scope="module")
def engine():
    """The detected engine and its environment, after the bases and the CPU images are built (cached)."""
    from images.container_engine import detect_engine, engine_env

    name = detect_engine(os.environ.get("CONTAINER_ENGINE") or None)
    env = engine_env(name)
    _images("--engine", name, "base-images")
    _images("--engine", name, "build", "--bases", "local", "--cpu")
    return name, env


def run_image(engine, *args: str, timeout: float = RUN_TIMEOUT_S) -> subprocess.CompletedProcess:
    name, env = engine
    return subprocess.run([name, "run", "--rm", "--platform=linux/amd64", *args], env=env, capture_output=True,
                          text=True, timeout=timeout)


def test_a_container_runs_as_the_images_non_root_user(engine):
    result = run_image(engine, *HARDENING, "--entrypoint", "python", ALGORITHM, "-c",
                       "import os, algorithm, petct; print(os.getuid(), os.access('/opt/app/petct', os.W_OK))")
    assert result.returncode == 0, result.stderr
    uid, writable = result.stdout.split()
    assert uid != "0" and writable == "False"  # code is root-owned and read-only to the user


def test_evaluation_image_scores_a_dry_run_layout_like_the_in_process_run(engine, tmp_path):
    work, out = tmp_path / "work", tmp_path / "out"
    result = subprocess.run([sys.executable, "-m", "app", "dry-run", "--phantoms", "2", "--phantom-size", "tiny",
                             "--workdir", str(work), "--output", str(out)], cwd=REPO, capture_output=True, text=True,
                            timeout=RUN_TIMEOUT_S)
    assert result.returncode == 0, result.stdout + result.stderr
    image_out = tmp_path / "image-out"
    image_out.mkdir(mode=0o777)
    os.chmod(image_out, 0o777)
    run = run_image(engine, *HARDENING, "-v", f"{work / 'evaluation' / 'input'}:/input:ro",
                    "-v", f"{work / 'evaluation' / 'gt'}:/opt/ml/input/data/ground_truth:ro",
                    "-v", f"{image_out}:/output", EVALUATION)
    assert run.returncode == 0, run.stderr
    assert _without_paths(json.loads((image_out / "metrics.json").read_text())) == \
        _without_paths(json.loads((out / "metrics.json").read_text()))


def _without_paths(value):
    """metrics.json with every string that names a file or folder dropped (the two runs mount different ones)."""
    if isinstance(value, dict):
        return {k: _without_paths(v) for k, v in value.items() if not (isinstance(v, str) and "/" in v)}
    if isinstance(value, list):
        return [_without_paths(v) for v in value if not (isinstance(v, str) and "/" in v)]
    return value


@pytest.fixture(scope="module")
def study_and_model(tmp_path_factory, nnunet_case):
    """A phantom study laid out as the platform does, and a small random-weight nnU-Net results folder."""
    root = tmp_path_factory.mktemp("image-algorithm")
    nnunet_case.copy_model(root / "model")  # made read-only for the image's user below
    platform = write_platform_input(root / "input", nnunet_case.study)
    _read_only_for_others(root)
    return root, platform.root, root / "model"


def _read_only_for_others(root: Path) -> None:
    """The image's user (another uid) reads what it is given and writes nothing of it."""
    for path in [root, *root.rglob("*")]:
        os.chmod(path, 0o555 if path.is_dir() else 0o444)


def _algorithm_in_image(engine, tmp_path: Path, input_dir: Path, *extra: str, model: Path | None = None):
    output = tmp_path / "output"
    output.mkdir()
    os.chmod(output, 0o777)
    mounts = ["-v", f"{input_dir}:/input:ro", "-v", f"{output}:/output"]
    if model is not None:
        mounts += ["-v", f"{model}:/opt/ml/model:ro"]
    return run_image(engine, *HARDENING, *mounts, ALGORITHM, *extra), output


def _mask(folder: Path) -> np.ndarray:
    [path] = output_files(folder)
    return sitk.GetArrayFromImage(sitk.ReadImage(str(path)))


def test_algorithm_image_with_a_model_matches_the_in_process_run(engine, study_and_model, tmp_path):
    root, input_dir, model = study_and_model
    local = run_algorithm("--input", input_dir, "--output", tmp_path / "local", "--model", model, "--device", "cpu",
                          "--save-probabilities", tmp_path / "probs.mha")
    assert local.returncode == 0, local.stderr
    expected = _mask(tmp_path / "local")
    probs = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "probs.mha")))
    assert 0.005 < expected.mean() < 0.95  # an all-or-nothing model would prove nothing

    run, output = _algorithm_in_image(engine, tmp_path, input_dir, "--device", "cpu", model=model)
    assert run.returncode == 0, run.stderr
    assert '"engine": "nnunet"' in run.stderr
    [written] = output_files(output)
    assert written.parent.name == "automated-petct-lesion-segmentation"
    mask = _mask(output)
    decided = np.abs(probs - 0.5) >= 0.005  # the image's torch may differ from the venv's in the last bits
    assert np.array_equal(mask[decided], expected[decided])
    assert dice(mask, expected) >= 0.999


def test_algorithm_image_runs_the_baseline_when_asked(engine, study_and_model, tmp_path):
    _, input_dir, _ = study_and_model
    local = run_algorithm("--input", input_dir, "--output", tmp_path / "local", "--engine", "baseline")
    assert local.returncode == 0, local.stderr
    run, output = _algorithm_in_image(engine, tmp_path, input_dir, "--engine", "baseline")
    assert run.returncode == 0, run.stderr
    assert np.array_equal(_mask(output), _mask(tmp_path / "local"))


def test_algorithm_image_without_a_model_fails_instead_of_falling_back(engine, study_and_model, tmp_path):
    _, input_dir, _ = study_and_model
    run, output = _algorithm_in_image(engine, tmp_path, input_dir)
    assert run.returncode != 0
    assert "Traceback" not in run.stderr
    assert "model" in run.stderr.strip().splitlines()[-1]  # one line saying what is missing
    assert output_files(output) == []


def test_app_image_keeps_its_healthcheck_and_data_volume(engine):
    """podman's default OCI format would drop the HEALTHCHECK: the build must use --format docker."""
    name, env = engine
    found = subprocess.run([name, "image", "inspect", APP], env=env, capture_output=True, text=True)
    assert found.returncode == 0, found.stderr
    [info] = json.loads(found.stdout)
    healthcheck = info.get("Healthcheck") or info.get("Config", {}).get("Healthcheck") or {}
    assert "/healthz" in " ".join(healthcheck.get("Test", []))
    assert "/var/lib/petct" in (info.get("Config", {}).get("Volumes") or {})
    assert "PETCT_KIT_ENGINE=auto" in info["Config"]["Env"]


def test_app_image_serves_a_scored_study(engine, tmp_path):
    name, env = engine
    volume = f"petct-image-test-{os.getpid()}"
    port = free_port()
    container = f"petct-image-test-app-{os.getpid()}"
    started = subprocess.run([name, "run", "-d", "--rm", "--name", container, "--platform=linux/amd64",
                              "--read-only", "--tmpfs", "/tmp", "--cap-drop=ALL", "--security-opt=no-new-privileges",
                              "-e", f"PETCT_KIT_TOKEN={TOKEN}", "-v", f"{volume}:/var/lib/petct",
                              "-p", f"127.0.0.1:{port}:8000", APP], env=env, capture_output=True, text=True,
                             timeout=RUN_TIMEOUT_S)
    assert started.returncode == 0, started.stderr
    try:
        study = write_phantom(tmp_path / "study", 4, n_lesions=2)
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60,
                          headers={"Authorization": f"Bearer {TOKEN}"}) as client:
            _wait_healthy(client)
            scored = client.post("/v1/score", params={"study": "s"},
                                 files=files_of({"prediction": study["label"], "ground_truth": study["label"]}))
            assert scored.status_code == 200, scored.text
            assert scored.json()["dice"] == 1.0
            submitted = client.post("/v1/studies", files=files_of(study))
            assert submitted.status_code == 202, submitted.text
            job = wait_for_job(client, submitted.json()["id"], timeout_s=300)
            assert job["state"] == "succeeded", job
            assert job["metrics"] is not None and job["metrics"]["dice"] is not None
    finally:
        logs = subprocess.run([name, "logs", container], env=env, capture_output=True, text=True)
        subprocess.run([name, "rm", "-f", container], env=env, capture_output=True)
        subprocess.run([name, "volume", "rm", "-f", volume], env=env, capture_output=True)
        print(logs.stdout[-3000:], logs.stderr[-3000:])


def _wait_healthy(client: httpx.Client, timeout_s: float = 120.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if client.get("/healthz").status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    raise AssertionError(f"the app image did not answer /healthz within {timeout_s} s")


def _docker_pointing_at(engine_name: str, folder: Path) -> dict[str, str]:
    """A `docker` first on PATH that is the given engine (how Debian's podman-docker works)."""
    folder.mkdir()
    shim = folder / "docker"
    shim.write_text(f"#!/bin/sh\nexec {engine_name} \"$@\"\n")
    shim.chmod(0o755)
    return {"PATH": f"{folder}{os.pathsep}{os.environ['PATH']}"}


@pytest.mark.parametrize("container_engine", ["podman", "docker"])
def test_dry_run_runs_the_algorithm_image_with_a_model(engine, study_and_model, tmp_path, container_engine):
    name, env = engine
    run_env = dict(env)
    if container_engine != name:
        run_env.update(_docker_pointing_at(name, tmp_path / "bin"))
    _, _, model = study_and_model
    result = subprocess.run([sys.executable, "-m", "app", "dry-run", "--image", ALGORITHM, "--model", str(model),
                             "--container-engine", container_engine, "--phantoms", "1", "--phantom-size", "tiny",
                             "--memory", "4g", "--no-gpus", "--output", str(tmp_path / "out")],
                            cwd=REPO, env=run_env, capture_output=True, text=True, timeout=RUN_TIMEOUT_S)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"{container_engine} image {ALGORITHM}" in result.stdout
    [study] = json.loads((tmp_path / "out" / "dry-run.json").read_text())["studies"]
    assert study["metrics"] is not None


def test_upload_tarball_holds_the_algorithm_image(engine, tmp_path):
    name, _ = engine
    tarball = tmp_path / "algorithm.tar.gz"
    result = subprocess.run([sys.executable, "-m", "images", "--engine", name, "tarball", "--image", ALGORITHM,
                             "--output", str(tarball), "--compress-level", "1"],
                            cwd=REPO, capture_output=True, text=True, timeout=RUN_TIMEOUT_S)
    assert result.returncode == 0, result.stderr
    assert str(tarball) in result.stdout and "sha256" in result.stdout
    with gzip.open(tarball) as raw, tarfile.open(fileobj=raw, mode="r|") as archive:
        manifest = next(json.load(archive.extractfile(m)) for m in archive if m.name == "manifest.json")
    assert any(ALGORITHM in tag for item in manifest for tag in item.get("RepoTags") or [])
