"""Leaderboard ranking of several submissions (autopet.md, Ranking), against a slow reference written here."""
from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from evaluation.ranking import competition_ranks, leaderboard, read_submission, read_subsets
from paths import REPO
from petct.errors import InputError

WEIGHTS = {"dice": 0.5, "false_positive_volume": 0.25, "false_negative_volume": 0.25}


def _metrics_json(path: Path, cases: dict[str, dict]) -> Path:
    """A metrics.json with per-study records and the aggregates' means, as the scorer writes them."""
    def mean(metric):
        values = [c[metric] for c in cases.values() if c[metric] is not None]
        return float(np.mean(values)) if values else None
    report = {"case": {name: {"study": name, **record} for name, record in cases.items()},
              "aggregates": {m: {"mean": mean(m)} for m in WEIGHTS}}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report))
    return path


def _slow_rank(means: list[float], higher: bool) -> list[float]:
    """Rank = 1 + number of strictly better defined values; undefined: after every defined value."""
    out = []
    for v in means:
        if v is None or math.isnan(v):
            out.append(1.0 + sum(1 for w in means if w is not None and not math.isnan(w)))
        else:
            better = [w for w in means if w is not None and not math.isnan(w) and (w > v if higher else w < v)]
            out.append(1.0 + len(better))
    return out


def test_competition_ranks_share_ties_and_put_undefined_last():
    assert competition_ranks([0.7, 0.9, 0.7, math.nan], higher_is_better=True) == [2.0, 1.0, 2.0, 4.0]
    assert competition_ranks([5.0, 1.0, 1.0], higher_is_better=False) == [3.0, 1.0, 1.0]


def test_hand_computed_leaderboard(tmp_path):
    # A: best Dice, worst volumes; B: middle; C: worst Dice, best volumes.
    a = _metrics_json(tmp_path / "A" / "metrics.json", {"s1": {"dice": 0.8, "false_positive_volume": 9.0,
                                                               "false_negative_volume": 5.0}})
    b = _metrics_json(tmp_path / "B" / "metrics.json", {"s1": {"dice": 0.7, "false_positive_volume": 3.0,
                                                               "false_negative_volume": 4.0}})
    c = _metrics_json(tmp_path / "C" / "metrics.json", {"s1": {"dice": 0.6, "false_positive_volume": 1.0,
                                                               "false_negative_volume": 1.0}})
    rows = leaderboard([read_submission(p, name=p.parent.name, subsets=None) for p in (a, b, c)])
    # A: 0.5*1 + 0.25*3 + 0.25*3 = 2.0; B: 0.5*2 + 0.25*2 + 0.25*2 = 2.0; C: 0.5*3 + 0.25 + 0.25 = 2.0.
    assert [r["weighted_rank"] for r in rows] == [2.0, 2.0, 2.0]
    # A three-way tie goes to Dice.
    assert [r["submission"] for r in rows] == ["A", "B", "C"]
    assert [r["position"] for r in rows] == [1, 2, 3]


@pytest.mark.parametrize("seed", range(25))
def test_random_leaderboards_match_the_slow_reference(tmp_path, seed):
    rng = np.random.default_rng(seed)
    teams, studies = int(rng.integers(2, 7)), [f"PETCT_{i:03d}.x" for i in range(int(rng.integers(2, 9)))]
    subsets = {s: str(rng.choice(["ucsd_psma", "lmu_fdg", "lmu_psma"])) for s in studies} if seed % 2 else None
    reports = {}
    for t in range(teams):
        cases = {}
        for s in studies:
            negative = rng.uniform() < 0.3
            # Rounded values make ties frequent.
            cases[s] = {"dice": None if negative else round(float(rng.uniform()), 1),
                        "false_positive_volume": round(float(rng.exponential(5)), 0),
                        "false_negative_volume": None if negative else round(float(rng.exponential(5)), 0)}
        reports[f"team{t}"] = cases
        _metrics_json(tmp_path / f"team{t}" / "metrics.json", cases)
    rows = leaderboard([read_submission(tmp_path / name / "metrics.json", name=name, subsets=subsets)
                        for name in reports])

    # Slow reference: per subset means, per subset ranks, mean over subsets, weighted sum, Dice tie-break.
    groups = sorted(set(subsets.values())) if subsets else ["all"]
    expected = {}
    for name, cases in reports.items():
        expected[name] = {"score": 0.0, "dice": []}
    for metric, weight in WEIGHTS.items():
        per_group = []
        for g in groups:
            members = [s for s in studies if subsets is None or subsets[s] == g]
            means = []
            for name, cases in reports.items():
                vals = [cases[s][metric] for s in members if cases[s][metric] is not None]
                means.append(sum(vals) / len(vals) if vals else None)
            per_group.append(_slow_rank(means, metric == "dice"))
        for i, name in enumerate(reports):
            expected[name]["score"] += weight * sum(r[i] for r in per_group) / len(per_group)
    for row in rows:
        assert row["weighted_rank"] == pytest.approx(expected[row["submission"]]["score"])
    scores = [r["weighted_rank"] for r in rows]
    assert scores == sorted(scores)
    for first, second in zip(rows, rows[1:]):
        if first["weighted_rank"] == pytest.approx(second["weighted_rank"]) and not math.isnan(second["mean"]["dice"]):
            assert first["mean"]["dice"] >= second["mean"]["dice"]


def test_bad_files_are_named(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(InputError, match="bad.json: metrics.json is not readable JSON"):
        read_submission(bad, name="x", subsets=None)
    empty = tmp_path / "empty.json"
    empty.write_text("{}")
    with pytest.raises(InputError, match="no 'aggregates'"):
        read_submission(empty, name="x", subsets=None)
    good = _metrics_json(tmp_path / "t" / "metrics.json", {"s1": {"dice": 0.5, "false_positive_volume": 1.0,
                                                                  "false_negative_volume": 1.0}})
    with pytest.raises(InputError, match="'s1' is in no subset"):
        read_submission(good, name="t", subsets={"other": "a"})
    mapping = tmp_path / "subsets.json"
    mapping.write_text("[1, 2]")
    with pytest.raises(InputError, match="subsets.json.*expected a JSON object"):
        read_subsets(mapping)


def test_rank_command_line(tmp_path):
    for team, dice in (("alpha", 0.5), ("beta", 0.9)):
        _metrics_json(tmp_path / team / "metrics.json", {"s1": {"dice": dice, "false_positive_volume": 2.0,
                                                                "false_negative_volume": 2.0}})
    out = tmp_path / "board.json"
    result = subprocess.run([sys.executable, "-m", "evaluation", "rank", str(tmp_path / "alpha" / "metrics.json"),
                             f"renamed={tmp_path / 'beta' / 'metrics.json'}", "--output", str(out)],
                            cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[1].split()[:2] == ["1", "renamed"]
    board = json.loads(out.read_text())
    assert [r["submission"] for r in board["leaderboard"]] == ["renamed", "alpha"]
    missing = subprocess.run([sys.executable, "-m", "evaluation", "rank", str(tmp_path / "nope.json")],
                             cwd=REPO, capture_output=True, text=True, timeout=120)
    assert missing.returncode == 1 and "nope.json" in missing.stderr and "Traceback" not in missing.stderr
