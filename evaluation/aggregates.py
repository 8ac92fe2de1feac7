"""Statistics over studies, in the shape the leaderboard reads (`aggregates.<metric>.<statistic>`).

Undefined values (NaN: Dice and FNV of negative studies) are skipped, so mean Dice and mean FNV
cover positive studies only. The standard deviation is the sample one (ddof=1), as in
grand-challenge's evalutils; it is undefined (null) for fewer than two values.
"""
from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import fields

import numpy as np

from evaluation.metrics import StudyMetrics
from evaluation.scoring import StudyResult

METRICS = tuple(f.name for f in fields(StudyMetrics))
# Key names must not hold dots: the leaderboard addresses values by a dotted path.
PERCENTILES = {"25pc": 25, "50pc": 50, "75pc": 75}


def aggregate(results: Iterable[StudyResult | StudyMetrics]) -> dict:
    """Per metric mean/std/min/max/25pc/50pc/75pc/count, study counts, and the volume correlation.

    Values are NaN where undefined; petct.jsonio.strict (used when writing) turns them into null.
    """
    metrics = [r.metrics if isinstance(r, StudyResult) else r for r in results]
    out = {name: describe([getattr(m, name) for m in metrics]) for name in METRICS}
    positive = [m for m in metrics if m.positive]
    out["studies"] = {"all": len(metrics), "positive": len(positive), "negative": len(metrics) - len(positive)}
    out["volume_correlation"] = {
        "pearson_r": pearson_r([m.gt_volume for m in positive], [m.pred_volume for m in positive]),
        "count": len(positive),
    }
    return out


def describe(values: list[float]) -> dict:
    """Statistics of the defined (finite) values."""
    data = np.array([v for v in values if v is not None and math.isfinite(v)], dtype=np.float64)
    if data.size == 0:
        return {"mean": math.nan, "std": math.nan, "min": math.nan, "max": math.nan,
                **{key: math.nan for key in PERCENTILES}, "count": 0}
    return {
        "mean": float(data.mean()),
        "std": float(data.std(ddof=1)) if data.size > 1 else math.nan,
        "min": float(data.min()),
        "max": float(data.max()),
        **{key: float(np.percentile(data, q)) for key, q in PERCENTILES.items()},
        "count": int(data.size),
    }


def pearson_r(x: list[float], y: list[float]) -> float:
    """Pearson's r; NaN for fewer than two pairs or when either side does not vary."""
    if len(x) < 2:
        return math.nan
    a, b = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    a, b = a - a.mean(), b - b.mean()
    denominator = math.sqrt(float(a @ a) * float(b @ b))
    if denominator == 0:
        return math.nan
    return max(-1.0, min(1.0, float(a @ b) / denominator))  # rounding can step past ±1


SUMMARY_METRICS = (("dice", "mean Dice", ""), ("false_positive_volume", "mean FPV", " ml"),
                   ("false_negative_volume", "mean FNV", " ml"))


def summary_line(aggregates: dict) -> str:
    """One line for people: studies scored and the three leaderboard means with how many studies each covers."""
    counts = aggregates.get("studies") or {}
    parts = [f"{counts['all']} studies ({counts.get('positive', '?')} positive)"] if "all" in counts else []
    for key, label, unit in SUMMARY_METRICS:
        stats = aggregates.get(key) or {}
        if isinstance(stats.get("mean"), (int, float)) and math.isfinite(stats["mean"]):
            parts.append(f"{label} {stats['mean']:.3f}{unit} (n={stats.get('count', '?')})")
    return ", ".join(parts) if parts else "no aggregate metrics"
