"""`python -m evaluation report --challenge autopet-2026-interactive`: closed loops' curves, categories, leaderboard."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from evaluation.__main__ import main
from evaluation.loop_ranking import LoopSubmission, leaderboard

CHALLENGE = ("--challenge", "autopet-2026-interactive")


def step(dice: float, tp: int, fp: int, fn: int) -> dict:
    f1 = math.nan if tp + fn == 0 else (0.0 if tp == 0 else 2 * tp / (2 * tp + fp + fn))
    return {"dice": dice, "dmm": None if math.isnan(f1) else f1, "tp": tp, "fp": fp, "fn": fn,
            "false_positive_volume": 0.0, "false_negative_volume": 0.0, "failed": False}


def loop_metrics(path: Path, *, gain: float, recorded: bool = False) -> Path:
    cases = {}
    for i, strategy in enumerate(["random", "centerline", "recorded" if recorded else "boundary"]):
        steps = {str(k): step(min(1.0, 0.5 + gain * k), tp=1 + k // 2, fp=1, fn=2 - k // 2) for k in range(3)}
        dice = [steps[str(k)]["dice"] for k in range(3)]
        dmm = [steps[str(k)]["dmm"] for k in range(3)]
        cases[f"study_{i}"] = {"study": f"study_{i}", "strategy": strategy,
                               "dice_auc": (dice[0] + 2 * dice[1] + dice[2]) / 2,
                               "dmm_auc": (dmm[0] + 2 * dmm[1] + dmm[2]) / 2, "dice_final": dice[-1],
                               "dmm_final": dmm[-1], "false_positive_volume_final": 0.0,
                               "false_negative_volume_final": 0.0, "steps": steps}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"case": cases, "aggregates": {}, "errors": []}))
    return path


def test_report_of_two_loops_with_both_categories(tmp_path, capsys):
    good = loop_metrics(tmp_path / "good" / "metrics.json", gain=0.2, recorded=True)
    weak = loop_metrics(tmp_path / "weak" / "metrics.json", gain=0.05)
    out = tmp_path / "report.html"
    assert main(["report", *CHALLENGE, f"weak={weak}", f"good={good}", "--output", str(out)]) == 0
    html = out.read_text()
    assert html.index("<td>1</td><td>good</td>") < html.index("<td>2</td><td>weak</td>")
    assert "simulated scribbles: 2" in html and "recorded scribbles: 1" in html  # the categories apart
    assert html.count("data:image/png;base64,") == 2 and "http" not in html.replace("http-equiv", "")


def test_a_metrics_json_of_another_profile_is_refused_in_one_line(tmp_path, capsys):
    other = tmp_path / "metrics.json"
    other.write_text(json.dumps({"case": {"a": {"dice": 0.5}}, "aggregates": {}}))
    assert main(["report", *CHALLENGE, str(other), "--output", str(tmp_path / "r.html")]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(other) in err and not (tmp_path / "r.html").exists()


def test_leaderboard_orders_by_the_mean_rank_of_the_two_areas():
    def sub(name, dice, dmm):
        s = LoopSubmission(name=name, path=Path(name), studies=[])
        s.categories["all"] = {"dice_auc": dice, "pooled_dmm_auc": dmm}
        return s
    board = leaderboard([sub("a", 1.0, 1.5), sub("b", 1.5, 1.0), sub("c", 0.5, 0.5), sub("d", 1.2, 1.2)])
    # ranks: a 3+1, b 1+3, d 2+2 (mean 2 each: AUC-Dice decides), c 4+4
    assert [r["submission"] for r in board] == ["b", "d", "a", "c"]
    assert [r["mean_rank"] for r in board] == [2, 2, 2, 4]


def test_rank_orders_closed_loops_as_the_report_does(tmp_path, capsys):
    good = loop_metrics(tmp_path / "good" / "metrics.json", gain=0.2)
    weak = loop_metrics(tmp_path / "weak" / "metrics.json", gain=0.05)
    board = tmp_path / "board.json"
    assert main(["rank", *CHALLENGE, f"weak={weak}", f"good={good}", "--output", str(board)]) == 0
    table = capsys.readouterr().out.splitlines()
    assert [line.split()[:2] for line in table[1:]] == [["1", "good"], ["2", "weak"]]
    rows = json.loads(board.read_text())["leaderboard"]
    # every study's DMM per step: tp = 1 + k // 2, fp = 1, fn = 2 - k // 2 for k = 0, 1, 2 (loop_metrics)
    f1 = [2 * 3 * (1 + k // 2) / (2 * 3 * (1 + k // 2) + 3 + 3 * (2 - k // 2)) for k in range(3)]
    assert rows[0]["pooled_dmm_auc"] == pytest.approx((f1[0] + 2 * f1[1] + f1[2]) / 2)
    assert rows[0]["dice_auc"] == pytest.approx((0.5 + 2 * 0.7 + 0.9) / 2)
    assert main(["report", *CHALLENGE, f"weak={weak}", f"good={good}", "--output", str(tmp_path / "r.html")]) == 0
    html = (tmp_path / "r.html").read_text()
    assert html.index("<td>1</td><td>good</td>") < html.index("<td>2</td><td>weak</td>")


def test_rank_of_closed_loops_refuses_subsets_before_reading_files(tmp_path, capsys):
    assert main(["rank", *CHALLENGE, "--subsets", str(tmp_path / "s.json"), str(tmp_path / "none.json")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "ranks over all studies" in err
