"""dataset convert on a Dask cluster (2 local worker processes): a worker killed mid-study costs that study a
retry, never a lost or duplicated result; losing the scheduler ends the command with one line on what finished."""
from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from cluster_helpers import kill_a_busy_worker
from dataset.convert import STAGING_PREFIX, ConvertOptions
from dataset.run import MANIFEST, convert_tree
from dataset_helpers import synth
from petct.jsonio import read_json

pytest.importorskip("distributed")
import dask  # noqa: E402
from distributed import Client, LocalCluster  # noqa: E402

from algorithm.batch_cluster import LOCAL_CLUSTER_CONFIG  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SEEDS = range(71, 76)
QUICK_RECONNECT = {**os.environ, "DASK_DISTRIBUTED__COMM__TIMEOUTS__CONNECT": "2s"}


@pytest.fixture(scope="module")
def dicom(tmp_path_factory):
    """Five tiny synthetic studies and their conversion in this process (the reference)."""
    root = tmp_path_factory.mktemp("cluster-dicom")
    for seed in SEEDS:
        synth(root / "in", seed=seed, n_lesions=2)
    serial = convert_tree(root / "in", root / "serial", ConvertOptions())
    assert [r.status for r in serial.records] == ["converted"] * len(SEEDS)
    return root


def _outputs(folder: Path) -> dict[str, np.ndarray]:
    return {str(p.relative_to(folder)): sitk.GetArrayFromImage(sitk.ReadImage(str(p)))
            for p in sorted(folder.rglob("*.nii.gz"))}


@pytest.mark.slow
def test_a_worker_killed_mid_study_costs_that_study_a_retry_never_a_result(dicom, tmp_path):
    killed: list[int] = []
    with dask.config.set(LOCAL_CLUSTER_CONFIG), \
            LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0") as cluster, \
            Client(cluster) as client:
        client.wait_for_workers(2)

        def kill_one_once(record) -> None:
            if not killed:
                killed.extend(kill_a_busy_worker(client, timeout_s=30, poll_s=0.01) or ())

        summary = convert_tree(dicom / "in", tmp_path, ConvertOptions(), scheduler=cluster.scheduler_address,
                               on_record=kill_one_once)
    assert killed, "no worker was busy"
    keys = sorted(r.key for r in summary.records)
    assert len(keys) == len(set(keys)) == len(SEEDS)  # every study exactly once
    assert [r.status for r in summary.records] == ["converted"] * len(SEEDS), [r.reason for r in summary.records]
    assert sorted(read_json(tmp_path / MANIFEST, what="manifest")) == keys
    assert not list(tmp_path.glob(f"{STAGING_PREFIX}*"))  # the killed worker's half-written study is gone
    reference, converted = _outputs(dicom / "serial"), _outputs(tmp_path)
    assert list(reference) == list(converted) and len(reference) >= 3 * len(SEEDS)
    for name, array in reference.items():
        assert np.array_equal(array, converted[name]), name


@pytest.mark.slow
def test_losing_the_scheduler_ends_the_command_with_one_line_and_a_rerun_continues(dicom, tmp_path):
    out = tmp_path / "out"
    command = [sys.executable, "-m", "dataset", "convert", str(dicom / "in"), str(out), "--no-progress"]
    with dask.config.set({**LOCAL_CLUSTER_CONFIG, "distributed.comm.timeouts.connect": "2s"}), \
            LocalCluster(n_workers=1, threads_per_worker=1, processes=False, protocol="tcp://",
                         dashboard_address=":0") as cluster:
        def stop_the_scheduler_after_the_first_study() -> None:
            deadline = time.monotonic() + 60
            while not (out / MANIFEST).is_file() and time.monotonic() < deadline:
                time.sleep(0.01)
            cluster.sync(cluster.scheduler.close)

        stopper = threading.Thread(target=stop_the_scheduler_after_the_first_study, daemon=True)
        stopper.start()
        lost = subprocess.run([*command, "--scheduler", cluster.scheduler_address], cwd=REPO, env=QUICK_RECONNECT,
                              capture_output=True, text=True, timeout=120)
        stopper.join(timeout=30)
    assert lost.returncode == 1, lost.stderr
    lines = lost.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in lost.stderr, lost.stderr
    assert lines[0].startswith("error: lost the Dask scheduler tcp://") and "run the same command again" in lines[0]
    finished = int(lines[0].split(" of 5 studies finished")[0].rsplit(" ", 1)[1])
    kept = read_json(out / MANIFEST, what="manifest")
    assert 1 <= finished == len(kept) < len(SEEDS)  # what it says finished is what the manifest keeps

    again = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert again.returncode == 0, again.stderr
    assert again.stdout.startswith(f"{len(SEEDS) - finished} converted, {finished} skipped (already done), 0 failed")
    assert _outputs(out).keys() == _outputs(dicom / "serial").keys()


@pytest.mark.slow
def test_an_unreachable_scheduler_is_one_line(dicom, tmp_path):
    run = subprocess.run([sys.executable, "-m", "dataset", "convert", str(dicom / "in"), str(tmp_path / "out"),
                          "--no-progress", "--scheduler", "tcp://127.0.0.1:9"], cwd=REPO, env=QUICK_RECONNECT,
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 1
    assert run.stderr.startswith("error: lost the Dask scheduler tcp://127.0.0.1:9 (cannot reach it: "), run.stderr
    assert len(run.stderr.strip().splitlines()) == 1 and "0 of 5 studies finished" in run.stderr
