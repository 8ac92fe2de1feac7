"""The organisers' NIfTI releases in nnU-Net's raw layout as dry-run cases, and the 2026 loop run on them."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import SimpleITK as sitk

from app.__main__ import main as app_main
from app.dryrun.cases import folder_cases
from petct.errors import InputError
from petct.phantom import make_study


def raw_layout(root: Path, names=("psma_0a1b_2019-01-01", "fdg_2c3d_2018-05-06"), images="imagesTr",
               labels="labelsTr") -> Path:
    for seed, name in zip((11, 13), names):
        study = make_study(seed, size=(32, 32, 24))
        (root / images).mkdir(parents=True, exist_ok=True)
        (root / labels).mkdir(parents=True, exist_ok=True)
        sitk.WriteImage(study.ctres, str(root / images / f"{name}_0000.nii.gz"))
        sitk.WriteImage(study.suv, str(root / images / f"{name}_0001.nii.gz"))
        sitk.WriteImage(study.seg, str(root / labels / f"{name}.nii.gz"))
    return root


@pytest.mark.parametrize("images, labels", [("imagesTr", "labelsTr"), ("images", "labels")])
def test_nnunet_raw_layout_gives_ct_pet_and_label_per_case(tmp_path, images, labels):
    root = raw_layout(tmp_path / "raw", images=images, labels=labels)
    cases = {c.name: c for c in folder_cases(root)}
    assert set(cases) == {"psma_0a1b_2019-01-01", "fdg_2c3d_2018-05-06"}
    case = cases["psma_0a1b_2019-01-01"]
    assert case.ctres.name.endswith("_0000.nii.gz") and case.suv.name.endswith("_0001.nii.gz")
    assert case.seg.parent.name == labels


def test_a_case_missing_a_channel_is_named(tmp_path):
    root = raw_layout(tmp_path / "raw")
    (root / "imagesTr" / "fdg_2c3d_2018-05-06_0001.nii.gz").unlink()
    with pytest.raises(InputError, match=r"fdg_2c3d_2018-05-06 \(missing imagesTr/fdg_2c3d_2018-05-06_0001\)"):
        folder_cases(root)


def test_closed_loop_dry_run_on_the_raw_layout(tmp_path):
    root = raw_layout(tmp_path / "raw")
    assert app_main(["dry-run", "--challenge", "autopet-2026-interactive", "--cases", str(root), "--steps", "2",
                     "--output", str(tmp_path / "out")]) == 0
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert {r["study"] for r in metrics["case"].values()} == {"psma_0a1b_2019-01-01", "fdg_2c3d_2018-05-06"}
    report = (tmp_path / "out" / "report.html").read_text()
    assert "tracer FDG: 1" in report and "tracer PSMA: 1" in report  # the areas of each tracer apart
