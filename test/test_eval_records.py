"""The one schema of a study's record and of metrics.json, and its builder, as the scorer and the service use them."""
from __future__ import annotations

import math
from typing import get_type_hints

import numpy as np
import pytest
import SimpleITK as sitk

from app.service.models import ScoreRecord
from evaluation.metrics import StudyMetrics
from evaluation.records import MetricsJson, StudyRecord, metrics_json, study_record
from evaluation.scoring import score_files


def _write(array: np.ndarray, path):
    image = sitk.GetImageFromArray(array)
    image.SetSpacing((2.0, 2.0, 3.0))
    sitk.WriteImage(image, str(path))
    return path


@pytest.mark.parametrize("seed", range(6))
def test_a_scored_study_record_holds_the_schemas_fields_and_the_scorers_values(tmp_path, seed):
    rng = np.random.default_rng(seed)
    shape = tuple(int(n) for n in rng.integers(5, 14, 3))
    gt = (rng.random(shape) < (0 if seed == 0 else 0.1)).astype(np.uint8)  # seed 0: a negative study
    pred = (rng.random(shape) < 0.1).astype(np.uint8)
    result = score_files(ground_truth=_write(gt, tmp_path / "gt.mha"), prediction=_write(pred, tmp_path / "p.mha"))
    record = study_record(result.metrics, study="s", files=result.files(), warnings=["w"], job="j", with_job=True)
    assert set(record) == set(get_type_hints(StudyRecord))
    assert record["study"] == "s" and record["job"] == "j" and record["warnings"] == ["w"]
    assert {k: record[k] for k in StudyMetrics.__dataclass_fields__} == result.metrics.to_json()
    if seed == 0:
        assert record["dice"] is None and record["false_negative_volume"] is None  # null, never NaN
    back = StudyMetrics.from_json(record)
    for name in StudyMetrics.__dataclass_fields__:
        a, b = getattr(back, name), getattr(result.metrics, name)
        assert (math.isnan(a) and math.isnan(b)) or a == b, name


def test_left_out_files_stay_out_and_unknown_ones_are_refused():
    metrics = StudyMetrics(dice=1.0, false_positive_volume=0.0, false_negative_volume=0.0, gt_volume=1.0,
                           pred_volume=1.0, gt_lesions=1, detected_lesions=1, fp_components=0)
    record = study_record(metrics, study="s", files={"prediction_file": "mask.mha"})
    assert "ground_truth_file" not in record and "job" not in record and record["prediction_file"] == "mask.mha"
    with pytest.raises(ValueError, match="secret_file"):
        study_record(metrics, study="s", files={"secret_file": "x"})


def test_metrics_json_and_the_services_record_follow_the_schema():
    assert set(metrics_json({}, aggregates={})) == set(get_type_hints(MetricsJson))
    assert set(ScoreRecord.model_fields) == set(get_type_hints(StudyRecord)) - {"job"}
    assert ScoreRecord.model_fields["study"].is_required()
