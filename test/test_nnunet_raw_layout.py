"""nnU-Net's raw layout (the organisers' PSMA and FDG–PSMA releases) read by score-folders, report --images and
dataset stats, and the tracer its case names carry."""
from __future__ import annotations

import csv
import json
import re
import subprocess
import sys

import numpy as np
import pytest
import SimpleITK as sitk

from evaluation.__main__ import main as evaluation_main
from petct.imageio import Geometry
from petct.nnunet_raw import tracer_of
from petct.phantom import make_study

NAMES = ("psma_0a1b_2019-01-01", "fdg_2c3d_2018-05-06", "psma_9e8f_2020-02-02")


def raw_layout(root, names=NAMES):
    """Phantom studies written as nnU-Net's raw layout: imagesTr/<case>_0000 CT, _0001 PET, labelsTr/<case>."""
    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir(parents=True)
    for seed, name in enumerate(names, start=11):
        study = make_study(seed, size=(32, 32, 24), n_lesions=2)
        sitk.WriteImage(study.ctres, str(root / "imagesTr" / f"{name}_0000.nii.gz"))
        sitk.WriteImage(study.suv, str(root / "imagesTr" / f"{name}_0001.nii.gz"))
        sitk.WriteImage(study.seg, str(root / "labelsTr" / f"{name}.nii.gz"))
    return root


@pytest.mark.parametrize("name, tracer", [("psma_0a1b_2019-01-01", "PSMA"), ("fdg_2c3d_2018-05-06", "FDG"),
                                          ("PSMA_x", "PSMA"), ("FDG_x_y", "FDG"), ("psma", None), ("psmax_1", None),
                                          ("PETCT_0af7ffe12a", None), ("fdgpsma_1_2", None), ("", None)])
def test_tracer_of_reads_the_prefix_before_the_first_underscore(name, tracer):
    assert tracer_of(name) == tracer


def predictions_of(root, out, *, shrink: set[str]):
    """Flat `<case>.nii.gz` predictions as nnU-Net writes them: each label, with half its slices cleared in `shrink`."""
    out.mkdir(parents=True)
    for label in sorted((root / "labelsTr").iterdir()):
        image = sitk.ReadImage(str(label))
        array = sitk.GetArrayFromImage(image)
        if label.name.split(".")[0] in shrink:
            slices = np.flatnonzero(array.any(axis=(1, 2)))
            array[slices[: (len(slices) + 1) // 2]] = 0
        prediction = sitk.GetImageFromArray(array)
        prediction.CopyInformation(image)
        sitk.WriteImage(prediction, str(out / label.name))
    return out


def test_score_folders_reads_the_raw_layout_as_its_labels_folder(tmp_path):
    root = raw_layout(tmp_path / "raw", names=NAMES)
    predictions = predictions_of(root, tmp_path / "pred", shrink={NAMES[1]})
    for gt, out in ((root, tmp_path / "from_root"), (root / "labelsTr", tmp_path / "from_labels")):
        assert evaluation_main(["score-folders", "--ground-truth", str(gt), "--predictions", str(predictions),
                                "--output", str(out), "--workers", "1"]) == 0
    from_root = json.loads((tmp_path / "from_root").read_text())
    from_labels = json.loads((tmp_path / "from_labels").read_text())
    assert set(from_root["case"]) == set(NAMES) and from_root["case"] == from_labels["case"]
    assert from_root["case"][NAMES[0]]["dice"] == 1.0 and from_root["case"][NAMES[1]]["dice"] < 1.0


def test_report_images_in_the_raw_layout_and_the_tracer_breakdown(tmp_path, capsys):
    root = raw_layout(tmp_path / "raw", names=NAMES)
    predictions = predictions_of(root, tmp_path / "pred", shrink={NAMES[1], NAMES[2]})
    assert evaluation_main(["score-folders", "--ground-truth", str(root), "--predictions", str(predictions),
                            "--output", str(tmp_path / "scored.json"), "--workers", "1"]) == 0
    out = tmp_path / "report.html"
    assert evaluation_main(["report", str(tmp_path / "scored.json"), "--images", str(root),
                            "--mip", "all", "--resamples", "0", "--output", str(out)]) == 0
    assert "warning" not in capsys.readouterr().err  # every study's PET found: no MIP left out
    html = out.read_text()
    assert html.count("<figure id=\"s0-mip-") == len(NAMES)  # a MIP of every study, its PET found in imagesTr
    table = html.split('data-column="tracer (from the study names)"', 1)[1].split("</table>", 1)[0]
    rows = re.findall(r'<tr><th scope="row">([^<]*)</th><td><span class="num" data-value="(\d+)"', table)
    assert rows == [("FDG", "1"), ("PSMA", "2")]


def test_dataset_stats_on_the_raw_layout_has_the_tracer_column(tmp_path):
    root = raw_layout(tmp_path / "raw", names=NAMES)
    run = subprocess.run([sys.executable, "-m", "dataset", "stats", str(root)], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    rows = {r["key"]: r for r in csv.DictReader(open(root / "studies.csv"))}
    assert {k: r["tracer"] for k, r in rows.items()} == {NAMES[0]: "PSMA", NAMES[1]: "FDG", NAMES[2]: "PSMA"}
    assert rows[NAMES[1]]["patient"] == "2c3d"
    for name in NAMES:  # the lesion figures of the label on the PET, computed here without the kit
        label = sitk.ReadImage(str(root / "labelsTr" / f"{name}.nii.gz"))
        pet = sitk.GetArrayFromImage(sitk.ReadImage(str(root / "imagesTr" / f"{name}_0001.nii.gz")))
        seg = sitk.GetArrayFromImage(label) > 0
        assert float(rows[name]["mtv_ml"]) == pytest.approx(seg.sum() * Geometry.of(label).voxel_volume_ml)
        if seg.any():
            assert float(rows[name]["suv_max"]) == pytest.approx(float(np.max(pet[seg])))


def test_dataset_stats_names_a_label_off_the_pet_grid(tmp_path):
    root = raw_layout(tmp_path / "raw", names=NAMES[:1])
    label = root / "labelsTr" / f"{NAMES[0]}.nii.gz"
    sitk.WriteImage(sitk.Image(5, 5, 5, sitk.sitkUInt8), str(label))
    run = subprocess.run([sys.executable, "-m", "dataset", "stats", str(root)], capture_output=True, text=True)
    assert run.returncode == 1 and len(run.stderr.strip().splitlines()) == 1, run.stderr
    assert str(label) in run.stderr and "grid" in run.stderr
