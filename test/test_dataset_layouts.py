"""Converted studies in the kit's other places: nnU-Net's layout through the kit's nnU-Net engine, the
grand-challenge layout through the algorithm and scoring containers, and the same run on a Dask cluster."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import SimpleITK as sitk

from dataset.convert import ConvertOptions
from dataset.run import convert_tree
from dataset_helpers import convert, synth
from nnunet_helpers import require_nnunetv2
from petct.editions import EDITIONS


@pytest.fixture(scope="module")
def dicom(tmp_path_factory):
    root = tmp_path_factory.mktemp("dicom")
    studies = [synth(root, seed=21, n_lesions=3), synth(root, seed=22, n_lesions=2)]
    return root, studies


@pytest.mark.slow
def test_nnunet_layout_loads_with_the_kits_nnunet_engine(dicom, tmp_path):
    require_nnunetv2()
    from algorithm.engine_contract import EngineOptions
    from algorithm.nnunet import NnUNetEngine
    from nnunet_helpers import make_plans, plain_architecture, write_results_folder

    root, studies = dicom
    records = convert(root, tmp_path / "nnunet", layout="nnunet")
    out = tmp_path / "nnunet"
    dataset = json.loads((out / "dataset.json").read_text())
    assert dataset["numTraining"] == 2 and dataset["file_ending"] == ".nii.gz"
    key = sorted(records)[0]
    ct = sitk.ReadImage(str(out / "imagesTr" / f"{key}_0000.nii.gz"))
    pet = sitk.ReadImage(str(out / "imagesTr" / f"{key}_0001.nii.gz"))
    label = sitk.ReadImage(str(out / "labelsTr" / f"{key}.nii.gz"))
    assert ct.GetSize() == pet.GetSize() == label.GetSize()
    spacing_zyx = tuple(reversed(pet.GetSpacing()))
    plans = make_plans(plain_architecture(), patch_size=(16, 16, 16), spacing=list(spacing_zyx))
    model = write_results_folder(tmp_path / "model", plans=plans, dataset=dataset, folds=(0,))
    engine = NnUNetEngine.from_folder(model, options=EngineOptions(device="cpu", use_mirroring=False))
    assert engine.channel_roles == ("ct", "pet")  # from the converted dataset.json's channel names
    prediction = engine.predict(pet=sitk.GetArrayFromImage(pet), ct=sitk.GetArrayFromImage(ct),
                                spacing_zyx=spacing_zyx)
    assert prediction.mask.shape == sitk.GetArrayFromImage(label).shape


@pytest.mark.slow
def test_grand_challenge_layout_runs_through_the_algorithm_and_scoring(dicom, tmp_path):
    root, studies = dicom
    records = convert(root, tmp_path / "gc", layout="grand-challenge", fmt="mha")
    key = sorted(records)[0]
    job = tmp_path / "gc" / key
    assert (job / "images" / "pet" / f"{key}.mha").is_file() and (job / "images" / "ct" / f"{key}.mha").is_file()
    run = subprocess.run([sys.executable, "-m", "algorithm", "--input", str(job), "--output", str(tmp_path / "pred"),
                          "--engine", "baseline"], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    (mask,) = (tmp_path / "pred" / EDITIONS["autopet-2022"].output_relative_path).glob("*.mha")
    ground_truth = tmp_path / "gc" / "ground_truth" / f"{key}.mha"
    score = subprocess.run([sys.executable, "-m", "evaluation", "score-pair", str(ground_truth), str(mask)],
                           capture_output=True, text=True)
    assert score.returncode == 0, score.stderr
    assert "dice" in score.stdout.lower()
    # The same pair by folder: the prediction carries the PET input's name, which is the ground truth's.
    assert mask.name == ground_truth.name
    folders = subprocess.run([sys.executable, "-m", "evaluation", "score-folders", "--ground-truth",
                              str(ground_truth.parent), "--predictions", str(mask.parent), "--output",
                              str(tmp_path / "metrics.json"), "--allow-partial"], capture_output=True, text=True)
    assert folders.returncode == 0, folders.stderr
    assert key in (tmp_path / "metrics.json").read_text()


@pytest.mark.slow
def test_dask_local_cluster_run_equals_the_process_pool_run(dicom, tmp_path):
    from distributed import LocalCluster

    root, _ = dicom
    pool = convert_tree(root, tmp_path / "pool", ConvertOptions(), workers=2)
    with LocalCluster(n_workers=1, threads_per_worker=2, processes=False, dashboard_address=None) as cluster:
        dask = convert_tree(root, tmp_path / "dask", ConvertOptions(), scheduler=cluster.scheduler_address)
    assert [r.status for r in pool.records] == [r.status for r in dask.records] == ["converted", "converted"]
    for a, b in zip(pool.records, dask.records):
        assert a.key == b.key and a.suv == b.suv and a.checksum == b.checksum and a.outputs == b.outputs
        for relative in a.outputs.values():
            x = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "pool" / relative)))
            y = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "dask" / relative)))
            np.testing.assert_array_equal(x, y)
