"""The autoPET leaderboard ranking over several submissions' metrics.json (docs/metrics.md, "Ranking").

2022–2023 rule: rank the submissions per metric by its mean over studies (Dice: higher is better; false positive
and false negative volume: lower is better), then order by the weighted mean rank — Dice 0.5, FPV 0.25,
FNV 0.25 — with ties broken by mean Dice. 2024 rule (`subsets`): the studies are split into subsets (centre ×
tracer); each metric is averaged and ranked per subset, and a metric's rank is the mean of its subset ranks.

Equal values share the best rank of their group (competition ranking: 1, 2, 2, 4). A submission whose mean is
undefined (no study it could be computed on) ranks last for that metric.
"""
from __future__ import annotations

import bisect
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from petct.errors import InputError
from petct.jsonio import read_json

# metric -> (weight, higher is better)
RANKED_METRICS = {"dice": (0.5, True), "false_positive_volume": (0.25, False), "false_negative_volume": (0.25, False)}
ALL_STUDIES = "all"


@dataclass(frozen=True)
class Submission:
    name: str
    path: Path
    # subset -> metric -> mean over that subset's studies (NaN when undefined)
    means: dict[str, dict[str, float]]
    studies: frozenset[str] | None = None  # the studies its `case` records cover; None when it has none


def study_set_warnings(studies: dict[str, frozenset[str] | None]) -> list[str]:
    """One line per submission (name -> the studies it was scored on; None: not known) that lacks studies another
    one has: their means are over different studies."""
    known = {name: names for name, names in studies.items() if names is not None}
    union = frozenset().union(*known.values()) if known else frozenset()
    lines = []
    for name, names in known.items():
        missing = sorted(union - names)
        if missing:
            shown = ", ".join(missing[:5]) + (f", ... ({len(missing)} in all)" if len(missing) > 5 else "")
            lines.append(f"warning: submission {name} covers {len(names)} of the {len(union)} studies the "
                         f"submissions cover together; missing: {shown}. Its means are over other studies.")
    return lines


def competition_ranks(values: list[float], *, higher_is_better: bool) -> list[float]:
    """Rank 1 is best; ties share the best rank of their group; undefined values rank after all others.

    One sort, then a binary search per value: a leaderboard of thousands ranks in milliseconds.
    """
    keyed = [(-v if higher_is_better else v) if math.isfinite(v) else math.inf for v in values]
    defined = sorted(key for key in keyed if math.isfinite(key))
    return [float(1 + bisect.bisect_left(defined, key)) if math.isfinite(key) else float(1 + len(defined))
            for key in keyed]


def read_submission(path: Path, *, name: str, subsets: dict[str, str] | None, suffix: str = "") -> Submission:
    """Means per subset from one metrics.json: its aggregates, or its per-study records when split in subsets.

    `suffix` names the ranked values after the metric: "_auc" ranks the 2025 track's areas under the curves.
    """
    return submission_of(read_json(path, what="metrics.json"), name=name, path=path, subsets=subsets, suffix=suffix)


def submission_of(report: object, *, name: str, path: Path, subsets: dict[str, str] | None,
                  suffix: str = "") -> Submission:
    """read_submission's Submission from a metrics.json already read (`path` names it in messages)."""
    if not isinstance(report, dict):
        raise InputError("metrics.json must hold a JSON object", path=path)
    cases = report.get("case")
    studies = (frozenset(_study_name(key, record) for key, record in cases.items())
               if isinstance(cases, dict) and cases else None)
    if subsets is None:
        aggregates = report.get("aggregates")
        if not isinstance(aggregates, dict):
            raise InputError("metrics.json has no 'aggregates'", path=path)
        return Submission(name=name, path=Path(path), studies=studies, means={ALL_STUDIES: {
            metric: _aggregate_mean(aggregates, metric + suffix, path=path) for metric in RANKED_METRICS}})
    if not isinstance(cases, dict):
        raise InputError("metrics.json has no 'case' records to split into subsets", path=path)
    values: dict[str, dict[str, list[float]]] = {s: {m: [] for m in RANKED_METRICS} for s in set(subsets.values())}
    for key, record in cases.items():
        if not isinstance(record, dict):
            raise InputError(f"metrics.json case {key!r} must be an object, found {type(record).__name__}", path=path)
        study = record.get("study", key)
        if not isinstance(study, str) or study not in subsets:
            raise InputError(f"study {study!r} is in no subset of the subsets file", path=path)
        for metric in RANKED_METRICS:
            values[subsets[study]][metric].append(
                _metric_value(record.get(metric + suffix), where=f"case {key!r} '{metric + suffix}'", path=path))
    means = {subset: {metric: _mean(v) for metric, v in by_metric.items()} for subset, by_metric in values.items()}
    return Submission(name=name, path=Path(path), means=means, studies=studies)


def _study_name(key: str, record: object) -> str:
    study = record.get("study", key) if isinstance(record, dict) else key
    return study if isinstance(study, str) else key


def leaderboard(submissions: list[Submission]) -> list[dict]:
    """Rows best first: name, weighted mean rank, per-metric ranks and means (over all subsets)."""
    if len({s.name for s in submissions}) != len(submissions):
        raise InputError("two submissions share a name; name them NAME=PATH")
    subsets = sorted({subset for s in submissions for subset in s.means})
    ranks = {s.name: {} for s in submissions}
    for metric, (_, higher) in RANKED_METRICS.items():
        per_subset = [competition_ranks([s.means.get(subset, {}).get(metric, math.nan) for s in submissions],
                                        higher_is_better=higher) for subset in subsets]
        for i, s in enumerate(submissions):
            ranks[s.name][metric] = float(np.mean([r[i] for r in per_subset]))
    rows = []
    for s in submissions:
        score = sum(weight * ranks[s.name][m] for m, (weight, _) in RANKED_METRICS.items())
        rows.append({"submission": s.name, "file": str(s.path), "weighted_rank": score,
                     "rank": {m: ranks[s.name][m] for m in RANKED_METRICS},
                     "mean": {m: _mean([s.means[sub][m] for sub in s.means]) for m in RANKED_METRICS}})
    # Ties in the weighted rank go to the better (higher) mean Dice; undefined Dice sorts last; ties beyond that
    # keep the order the submissions were given in (a stable sort).
    rows.sort(key=lambda r: (r["weighted_rank"], -_finite_or(r["mean"]["dice"], -math.inf)))
    for position, row in enumerate(rows, start=1):
        row["position"] = position
    return rows


def read_subsets(path: Path) -> dict[str, str]:
    """A JSON object {study name: subset name}."""
    mapping = read_json(path, what="subsets file")
    if not isinstance(mapping, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in mapping.items()):
        raise InputError('expected a JSON object {"<study>": "<subset>", ...}', path=path)
    return mapping


STUDY_COLUMNS = ("study", "study_key", "case", "gt_name", "name")


def read_studies_csv(path: Path) -> dict[str, str]:
    """{study: "<tracer>/<centre>"} from a CSV with a study column and tracer and centre columns (any case)."""
    import csv
    path = Path(path)
    try:
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f))
            header = [h.strip().lower() for h in (rows[0].keys() if rows else [])]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise InputError(f"studies CSV is not readable: {getattr(exc, 'strerror', None) or exc}", path=path) from None
    columns = {h.strip().lower(): h for h in (rows[0].keys() if rows else [])}
    study = next((columns[c] for c in STUDY_COLUMNS if c in columns), None)
    missing = [name for name, found in (("study", study), ("tracer", columns.get("tracer")),
                                          ("centre", columns.get("centre") or columns.get("center"))) if not found]
    if missing:
        raise InputError(f"studies CSV needs {', '.join(missing)} column(s); found {header or 'no rows'}", path=path)
    centre = columns.get("centre") or columns.get("center")
    subsets = {}
    for number, row in enumerate(rows, start=2):
        values = [(row.get(c) or "").strip() for c in (study, columns["tracer"], centre)]
        if not all(values):
            raise InputError(f"line {number} has an empty study, tracer or centre", path=path)
        subsets[values[0]] = f"{values[1]}/{values[2]}"
    return subsets



def _aggregate_mean(aggregates: dict, metric: str, *, path: Path) -> float:
    """aggregates[metric]["mean"]: a number, or null when undefined; InputError naming the file otherwise."""
    summary = aggregates.get(metric)
    if not isinstance(summary, dict) or "mean" not in summary:
        raise InputError(f"metrics.json 'aggregates' has no '{metric}' object with a 'mean'", path=path)
    return _metric_value(summary["mean"], where=f"aggregates '{metric}' mean", path=path)


def _metric_value(value, *, where: str, path: Path) -> float:
    """A metric as written by the scorer: a number, or null (NaN) when undefined; anything else is refused."""
    if value is None:
        return math.nan
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    raise InputError(f"metrics.json {where} must be a number or null, found {value!r:.40}", path=path)


def _mean(values: list[float]) -> float:
    defined = [v for v in values if math.isfinite(v)]
    return float(np.mean(defined)) if defined else math.nan


def _finite_or(value: float, default: float) -> float:
    return value if math.isfinite(value) else default


def submission_argument(text: str) -> tuple[str, Path]:
    """'NAME=PATH' or 'PATH' (named after the file's folder, or its stem when it is not metrics.json)."""
    name, sep, path = text.partition("=")
    if sep and name and not Path(text).exists():
        return name, Path(path)
    path = Path(text)
    return (path.parent.name if path.name == "metrics.json" and path.parent.name else path.stem), path


def format_leaderboard(rows: list[dict]) -> str:
    """A plain-text table, best first."""
    lines = [f"{'#':>2}  {'submission':<24} {'score':>6}  {'dice':>6} {'FPV ml':>9} {'FNV ml':>9}  "
             f"{'rank dice/FPV/FNV':>17}"]
    for row in rows:
        mean, rank = row["mean"], row["rank"]
        lines.append(f"{row['position']:>2}  {row['submission'][:24]:<24} {row['weighted_rank']:>6.2f}  "
                     f"{_fmt(mean['dice'], 3):>6} {_fmt(mean['false_positive_volume'], 2):>9} "
                     f"{_fmt(mean['false_negative_volume'], 2):>9}  "
                     f"{rank['dice']:>5.1f}/{rank['false_positive_volume']:.1f}/{rank['false_negative_volume']:.1f}")
    return "\n".join(lines)


def format_subset_means(submissions: list[Submission]) -> str:
    """The per-subset means the 2024 rule ranks on: one block per subset, a line per submission."""
    lines = []
    for subset in sorted({subset for s in submissions for subset in s.means}):
        lines.append(f"subset {subset}:")
        for s in submissions:
            mean = s.means.get(subset, {})
            lines.append(f"    {s.name[:24]:<24} dice {_fmt(mean.get('dice', math.nan), 3):>6}  "
                         f"FPV {_fmt(mean.get('false_positive_volume', math.nan), 2):>9} ml  "
                         f"FNV {_fmt(mean.get('false_negative_volume', math.nan), 2):>9} ml")
    return "\n".join(lines)


def _fmt(value: float, digits: int) -> str:
    return f"{value:.{digits}f}" if math.isfinite(value) else "-"
