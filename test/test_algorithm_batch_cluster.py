"""predict-folder at scale: --num-parts/--part-id, --continue, and Dask workers (2 local worker processes):
the serial run's masks, a worker killed mid-study, a killed run continued."""
from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from algorithm import batch
from algorithm.batch_inputs import BatchCase, find_cases
from algorithm.batch_select import mask_problem, part_of
from algorithm.engine_contract import EngineOptions
from algorithm.loaded_engines import EngineSpec, load_counts
from cluster_helpers import busy_workers, kill_a_busy_worker
from nnunet_helpers import make_dataset_json, make_plans, plain_architecture, study_arrays, write_results_folder
from petct.phantom import make_study

pytest.importorskip("distributed")
from algorithm.batch_cluster import LOCAL_CLUSTER_CONFIG, dask_client, predict_on_cluster  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SMALL = (24, 24, 20)  # a few tiles per study without mirroring: quick
SLOW = (32, 32, 24)  # with mirroring about a second per study on one core: long enough to be killed in


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("cluster")
    calibration = study_arrays(41, SLOW)
    plans = make_plans(plain_architecture(), patch_size=(16, 16, 16), spacing=list(calibration[2]))
    write_results_folder(root / "model" / "nnUNetTrainer__nnUNetPlans__3d_fullres", plans=plans,
                         dataset=make_dataset_json(("CT", "PET")), folds=(0,), calibration_study=calibration)
    for seed in range(41, 45):
        make_study(seed, size=SMALL, n_lesions=3, name=f"PETCT_{seed}").write(root / "small")
    for seed in range(51, 55):
        make_study(seed, size=SLOW, n_lesions=3, name=f"PETCT_{seed}").write(root / "slow")
    for seed in range(61, 65):
        make_study(seed, size="tiny", name=f"PETCT_{seed}").write(root / "tiny")
    return root


@pytest.fixture(scope="module")
def client():
    """Two local worker processes, one thread each, restarted by their nannies when killed."""
    with dask_client(scheduler=None, workers=2) as client:
        client.wait_for_workers(2)
        yield client


def _masks(folder: Path) -> dict[str, np.ndarray]:
    return {p.name: sitk.GetArrayFromImage(sitk.ReadImage(str(p))) for p in sorted(folder.glob("[!.]*.nii.gz"))}


def _model_args(data: Path, *, tta: bool) -> list[str]:
    return ["--model", str(data / "model"), "--device", "cpu", *([] if tta else ["--no-tta"])]


def test_parts_are_disjoint_cover_the_folder_and_ignore_its_order():
    rng = random.Random(7)
    for _ in range(300):
        keys = list({f"S{rng.randrange(10_000)}" for _ in range(rng.randrange(0, 40))})
        cases = [BatchCase(key=k, pet=Path(f"{k}/SUV.mha"), ct=Path(f"{k}/CTres.mha")) for k in keys]
        num_parts = rng.randrange(1, 9)
        parts = [part_of(cases, num_parts=num_parts, part_id=k) for k in range(num_parts)]
        seen = [c.key for part in parts for c in part]
        assert sorted(seen) == sorted(keys)  # every study in exactly one part
        assert max(map(len, parts)) - min(map(len, parts)) <= 1
        shuffled = rng.sample(cases, len(cases))
        assert [part_of(shuffled, num_parts=num_parts, part_id=k) for k in range(num_parts)] == parts


def test_part_runs_write_every_study_once(data, tmp_path):
    for part in range(3):
        code = batch.main([str(data / "tiny"), str(tmp_path / f"part{part}"), "--engine", "baseline",
                           "--num-parts", "3", "--part-id", str(part)])
        assert code == 0
    written = [p.name for part in range(3) for p in (tmp_path / f"part{part}").iterdir()]
    assert sorted(written) == [f"PETCT_{seed}.nii.gz" for seed in range(61, 65)]


def test_the_readmes_cluster_environment_is_the_local_clusters_config(monkeypatch):
    """README's `export DASK_...` for a cluster of one's own sets what --workers sets, no more, no less."""
    import re

    import dask

    block = re.search(r"export (DASK_DISTRIBUTED__.*?)\n```", (REPO / "README.md").read_text(), re.S)
    assert block, "README lost its cluster environment"
    env = dict(word.split("=", 1) for word in block.group(1).replace("\\\n", " ").split())
    assert len(env) == len(LOCAL_CLUSTER_CONFIG)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    try:
        dask.config.refresh()
        for key, value in LOCAL_CLUSTER_CONFIG.items():
            assert dask.config.get(key) == value, key
    finally:
        monkeypatch.undo()
        dask.config.refresh()


def test_local_gpu_workers_are_pinned_to_the_machines_names_of_the_commands_gpus(monkeypatch):
    """--workers on a GPU machine run as `CUDA_VISIBLE_DEVICES=5,7 ...`: the workers get GPUs 5 and 7, not 0
    and 1; the baseline and --device cpu get none."""
    import torch

    from algorithm.batch_cluster import local_gpus

    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "5,7")
    nnunet = EngineSpec(model=Path("/models/m"), engine="nnunet", options=EngineOptions(device="cuda"))
    assert local_gpus(nnunet) == ["5", "7"]
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    assert local_gpus(nnunet) == ["0", "1"]
    assert local_gpus(EngineSpec(model=None, engine="baseline", options=EngineOptions())) == []
    assert local_gpus(EngineSpec(model=Path("/m"), engine="nnunet", options=EngineOptions(device="cpu"))) == []


def test_serial_run_does_not_import_dask(data, tmp_path):
    code = (f"import sys; from algorithm import batch\n"
            f"assert batch.main([{str(data / 'tiny')!r}, {str(tmp_path)!r}, '--engine', 'baseline']) == 0\n"
            "print(sorted(m for m in ('dask', 'distributed') if m in sys.modules))")
    run = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "[]"


@pytest.mark.slow
def test_workers_give_the_serial_masks_and_load_the_model_once_each(data, client, tmp_path):
    for engine, folder in ((["--engine", "baseline"], "tiny"), (_model_args(data, tta=False), "small")):
        assert batch.main([str(data / folder), str(tmp_path / f"serial-{folder}"), *engine]) == 0
        assert batch.main([str(data / folder), str(tmp_path / f"dask-{folder}"), *engine,
                           "--scheduler", client.scheduler.address]) == 0
        serial, dask = _masks(tmp_path / f"serial-{folder}"), _masks(tmp_path / f"dask-{folder}")
        assert list(serial) == list(dask) and len(serial) >= 4
        for name in serial:
            assert np.array_equal(serial[name], dask[name]), name
    loads = client.run(lambda: {str(spec.model): n for spec, n in load_counts().items()})
    for counts in loads.values():
        assert set(counts.values()) <= {1}  # each worker loaded each model at most once, for all its studies
    assert sum(counts.get(str(data / "model"), 0) for counts in loads.values()) >= 1


@pytest.mark.slow
def test_a_study_that_fails_on_its_own_fails_alone(data, client, tmp_path, capsys):
    shutil.copytree(data / "tiny", tmp_path / "in")
    broken = tmp_path / "in" / "PETCT_62" / "SUV.mha"
    broken.write_bytes(broken.read_bytes()[:400])  # cut short
    code = batch.main([str(tmp_path / "in"), str(tmp_path / "out"), "--engine", "baseline",
                       "--scheduler", client.scheduler.address])
    assert code == 2
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [f"PETCT_{seed}.nii.gz" for seed in (61, 63, 64)]
    errors = [line for line in capsys.readouterr().err.splitlines() if " ERROR " in line]
    assert len(errors) == 1 and "study PETCT_62" in errors[0] and str(broken) in errors[0], errors


@pytest.mark.slow
def test_a_worker_killed_mid_study_costs_that_study_a_retry_never_a_result(data, client, tmp_path):
    cases = find_cases(data / "slow", roles=("ct", "pet")).cases
    # The options the command line gives (no probability map), so that later runs find the model loaded.
    spec = EngineSpec(model=data / "model", engine="nnunet", options=EngineOptions(device="cpu", probabilities=False))
    killed: dict[str, object] = {}

    def kill_one_once(outcome) -> None:
        if not killed:
            killed.update(zip(("pid", "key"), kill_a_busy_worker(client, timeout_s=60) or ()))

    client.wait_for_workers(2)
    run = predict_on_cluster(client, cases, spec=spec, output_dir=tmp_path, suffix=".nii.gz",
                             on_outcome=kill_one_once)
    assert killed, "no worker was busy"
    assert run.lost is None
    assert sorted(o.key for o in run.outcomes) == sorted(c.key for c in cases)  # each study exactly once
    assert all(o.error is None for o in run.outcomes), [o.error for o in run.outcomes]
    victim = next(o for o in run.outcomes if killed["key"].endswith(o.key))
    assert victim.where.rsplit(":", 1)[1] != str(killed["pid"])  # redone by another process
    assert sorted(p.name for p in tmp_path.glob("[!.]*")) == sorted(f"{c.key}.nii.gz" for c in cases)
    for case in cases:
        assert mask_problem(tmp_path / f"{case.key}.nii.gz", pet_path=case.pet) is None


@pytest.mark.slow
def test_continue_after_a_killed_run_redoes_only_the_unfinished(data, client, tmp_path):
    out = tmp_path / "out"
    with open(tmp_path / "log", "w") as log:
        command = subprocess.Popen([sys.executable, "-m", "algorithm", "predict-folder", str(data / "slow"), str(out),
                                    *_model_args(data, tta=True), "--scheduler", client.scheduler.address],
                                   cwd=REPO, stdout=log, stderr=log, start_new_session=True)
        try:
            deadline = time.monotonic() + 120
            while not list(out.glob("[!.]*.nii.gz")) and time.monotonic() < deadline and command.poll() is None:
                time.sleep(0.05)
        finally:
            os.killpg(command.pid, signal.SIGKILL)  # the command, mid-run
            command.wait()
    while any(keys for _, keys in client.run(busy_workers).values()):
        time.sleep(0.05)  # the studies the workers were on when it was killed still end (their masks are whole)
    finished = {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in out.glob("[!.]*.nii.gz")}
    expected = sorted(f"PETCT_{seed}.nii.gz" for seed in range(51, 55))
    assert 1 <= len(finished) <= len(expected), (tmp_path / "log").read_text()[-2000:]
    # A mask cut short under its final name is not finished. Usually it stands in for a study the killed run
    # never reached; on a loaded machine every study may have ended before the kill landed, and then one of
    # them is cut short instead, so that there is always something to redo.
    cut_short = next((name for name in expected if name not in finished), expected[-1])
    finished.pop(cut_short, None)
    (out / cut_short).write_bytes(b"\x1f\x8b\x08")

    assert batch.main([str(data / "slow"), str(out), *_model_args(data, tta=True), "--continue",
                       "--scheduler", client.scheduler.address]) == 0
    assert sorted(p.name for p in out.glob("[!.]*.nii.gz")) == expected
    assert {name: (p.stat().st_ino, p.stat().st_mtime_ns) for name in finished
            for p in [out / name]} == finished  # the finished masks were left as they were
    for name in expected:
        seed = name.split("_")[1].split(".")[0]
        assert mask_problem(out / name, pet_path=data / "slow" / f"PETCT_{seed}" / "SUV.mha") is None


@pytest.mark.slow
def test_losing_the_scheduler_ends_the_run_with_one_line_on_what_finished(data, tmp_path, capsys):
    import dask
    from distributed import LocalCluster

    out = tmp_path / "out"
    # The worker left without a scheduler retries for `connect` before it closes with the cluster.
    with dask.config.set({**LOCAL_CLUSTER_CONFIG, "distributed.comm.timeouts.connect": "2s"}), \
            LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=":0") as cluster:
        def stop_the_scheduler_after_the_first_mask() -> None:
            while not list(out.glob("[!.]*.nii.gz")):
                time.sleep(0.01)
            cluster.sync(cluster.scheduler.close)

        stopper = threading.Thread(target=stop_the_scheduler_after_the_first_mask, daemon=True)
        stopper.start()
        code = batch.main([str(data / "slow"), str(out), *_model_args(data, tta=True),
                           "--scheduler", cluster.scheduler_address])
        stopper.join(timeout=30)
    assert code == 1
    errors = [line for line in capsys.readouterr().err.splitlines() if " ERROR " in line]
    assert len(errors) == 1, errors
    assert "lost the Dask scheduler" in errors[0] and "--continue" in errors[0]
    finished = sorted(p.name for p in out.glob("[!.]*.nii.gz"))
    reported = int(errors[0].split(" of 4 studies finished")[0].rsplit(" ", 1)[1])
    assert 1 <= reported < 4 and reported <= len(finished)  # complete when it was said (a busy worker may add one)
