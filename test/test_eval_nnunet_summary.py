"""score-folders --nnunet-summary: the kit's metrics in nnU-Net's summary.json shape, read back by nnU-Net itself."""
from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
import pytest

from app_helpers import REPO, write_mask


@pytest.mark.slow
def test_summary_reads_as_nnunets_and_its_dice_is_nnunets(tmp_path):
    evaluate = pytest.importorskip("nnunetv2.evaluation.evaluate_predictions")
    rng = np.random.default_rng(21)
    cases = {}
    for i in range(6):
        gt = (rng.uniform(size=(8, 9, 10)) < 0.15).astype(np.uint8)
        pred = (rng.uniform(size=gt.shape) < 0.15).astype(np.uint8)
        if i == 0:
            gt[:] = 0  # no lesion: the kit's Dice is undefined there, left out of the means as nnU-Net leaves NaN
        cases[f"CASE_{i}"] = (gt, pred)
        write_mask(gt, tmp_path / "gt" / f"CASE_{i}.nii.gz")
        write_mask(pred, tmp_path / "pred" / f"CASE_{i}.nii.gz")
    summary = tmp_path / "summary.json"
    ran = subprocess.run([sys.executable, "-m", "evaluation", "score-folders", "--ground-truth", str(tmp_path / "gt"),
                          "--predictions", str(tmp_path / "pred"), "--output", str(tmp_path / "metrics.json"),
                          "--nnunet-summary", str(summary), "--workers", "1"],
                         cwd=REPO, capture_output=True, text=True, timeout=300)
    assert ran.returncode == 0, ran.stderr
    assert f"wrote {summary}" in ran.stderr
    ours = evaluate.load_summary_json(str(summary))  # nnU-Net's own reader
    assert set(ours) == {"metric_per_case", "mean", "foreground_mean"} and set(ours["mean"]) == {1}
    evaluate.compute_metrics_on_folder_simple(str(tmp_path / "gt"), str(tmp_path / "pred"), labels=[1],
                                              num_processes=1, output_file=str(tmp_path / "theirs.json"))
    theirs = evaluate.load_summary_json(str(tmp_path / "theirs.json"))
    their_dice = {r["prediction_file"].rsplit("/", 1)[1].removesuffix(".nii.gz"): r["metrics"][1]["Dice"]
                  for r in theirs["metric_per_case"]}
    metrics = json.loads((tmp_path / "metrics.json").read_text())["case"]
    assert len(ours["metric_per_case"]) == len(cases)
    for record in ours["metric_per_case"]:
        study = record["prediction_file"].rsplit("/", 1)[1].removesuffix(".nii.gz")
        dice = record["metrics"][1]["Dice"]
        if cases[study][0].any():
            assert dice == pytest.approx(their_dice[study], abs=1e-12)
        else:
            assert dice is None  # nnU-Net says 0 when only the prediction has voxels; the kit: undefined
        assert record["metrics"][1]["false_positive_volume"] == metrics[study]["false_positive_volume"]
        assert record["reference_file"].endswith(f"gt/{study}.nii.gz")
    defined = [d for s, d in their_dice.items() if cases[s][0].any()]
    assert ours["foreground_mean"]["Dice"] == pytest.approx(math.fsum(defined) / len(defined), abs=1e-12)
    assert ours["mean"][1] == ours["foreground_mean"]
    fpv = [metrics[s]["false_positive_volume"] for s in cases]
    assert ours["foreground_mean"]["false_positive_volume"] == pytest.approx(math.fsum(fpv) / len(fpv))
