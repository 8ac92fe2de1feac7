"""aggregate(): statistics that skip undefined values, study counts, volume correlation, strict keys."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

from eval_helpers import all_keys
from evaluation.aggregates import aggregate
from evaluation.metrics import StudyMetrics
from evaluation.scoring import StudyResult
from petct.jsonio import dumps

NAN = math.nan


def metrics(dice, fpv, fnv, gt_vol, pred_vol, lesions=1) -> StudyMetrics:
    return StudyMetrics(dice=dice, false_positive_volume=fpv, false_negative_volume=fnv, gt_volume=gt_vol,
                        pred_volume=pred_vol, gt_lesions=lesions, detected_lesions=lesions, fp_components=0)


STUDIES = [
    metrics(0.8, 1.0, 2.0, 10.0, 9.0),
    metrics(0.5, 0.0, 5.0, 20.0, 14.0, lesions=3),
    metrics(NAN, 4.0, NAN, 0.0, 4.0, lesions=0),  # negative study
    metrics(0.9, 2.0, 0.0, 5.0, 6.0),
    metrics(NAN, 0.0, NAN, 0.0, 0.0, lesions=0),
]


def test_statistics_skip_undefined_values():
    out = aggregate(STUDIES)
    dice = np.array([0.8, 0.5, 0.9])
    assert out["dice"]["count"] == 3
    assert out["dice"]["mean"] == pytest.approx(dice.mean())
    assert out["dice"]["std"] == pytest.approx(dice.std(ddof=1))
    assert out["dice"]["min"] == 0.5 and out["dice"]["max"] == 0.9
    assert out["dice"]["25pc"] == pytest.approx(np.percentile(dice, 25))
    assert out["dice"]["50pc"] == pytest.approx(0.8)
    assert out["dice"]["75pc"] == pytest.approx(np.percentile(dice, 75))
    # FPV is defined on every study, FNV on positive ones only.
    assert out["false_positive_volume"]["count"] == 5
    assert out["false_positive_volume"]["mean"] == pytest.approx(7.0 / 5)
    assert out["false_negative_volume"]["count"] == 3
    assert out["false_negative_volume"]["mean"] == pytest.approx(7.0 / 3)
    assert out["gt_lesions"]["mean"] == pytest.approx(5 / 5)


def test_study_counts_and_volume_correlation_over_positive_studies():
    out = aggregate(STUDIES)
    assert out["studies"] == {"all": 5, "positive": 3, "negative": 2}
    expected = np.corrcoef([10.0, 20.0, 5.0], [9.0, 14.0, 6.0])[0, 1]
    assert out["volume_correlation"]["pearson_r"] == pytest.approx(expected)
    assert out["volume_correlation"]["count"] == 3


def test_accepts_study_results():
    results = [StudyResult(study=f"s{i}", metrics=m) for i, m in enumerate(STUDIES)]
    assert dumps(aggregate(results)) == dumps(aggregate(STUDIES))


def test_undefined_statistics_are_null_in_json_and_keys_have_no_dots():
    out = aggregate([STUDIES[2]])  # one negative study: no Dice at all, one FPV (no std)
    text = dumps(out)
    parsed = json.loads(text)
    assert parsed["dice"] == {"mean": None, "std": None, "min": None, "max": None, "25pc": None,
                              "50pc": None, "75pc": None, "count": 0}
    assert parsed["false_positive_volume"]["mean"] == 4.0 and parsed["false_positive_volume"]["std"] is None
    assert parsed["volume_correlation"]["pearson_r"] is None
    assert all("." not in key for key in all_keys(parsed))


def test_no_studies_at_all():
    parsed = json.loads(dumps(aggregate([])))
    assert parsed["studies"] == {"all": 0, "positive": 0, "negative": 0}
    assert parsed["dice"]["count"] == 0 and parsed["dice"]["mean"] is None


def test_correlation_of_constant_volumes_is_undefined():
    same = [metrics(0.5, 0.0, 0.0, 3.0, 3.0), metrics(0.5, 0.0, 0.0, 3.0, 4.0)]
    assert math.isnan(aggregate(same)["volume_correlation"]["pearson_r"])
