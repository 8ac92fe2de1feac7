"""`python -m evaluation report --challenge autopet-2025-interactive`: the click track's areas, curves and ranking."""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
from scipy import integrate

from evaluation.__main__ import main
from test_editions import interactive_submission

CHALLENGE = ("--challenge", "autopet-2025-interactive")
METRICS = ("dice", "false_positive_volume", "false_negative_volume")


def leaderboard_rows(html: str) -> list[list[str]]:
    """The leaderboard's cells as written (name, then each number's exact data-value)."""
    table = html.split("<h2>Leaderboard</h2>", 1)[1].split("</table>", 1)[0]
    rows = []
    for row in re.findall(r"<tr><td>(.*?)</tr>", table, flags=re.S):
        cells = re.findall(r"<td>(.*?)</td>", "<td>" + row)
        rows.append([re.sub(r'.*data-value="([^"]*)".*', r"\1", c) for c in cells])
    return rows


def click_metrics(path: Path, *, gain: float, studies: int = 3, steps: int = 11) -> Path:
    """A metrics.json as the 2025 scorer writes it, with curves rising by `gain` per step (a slow reference)."""
    rng = np.random.default_rng(int(gain * 1000))
    cases = {}
    for i in range(studies):
        start = rng.uniform(0.2, 0.5)
        dice = [min(1.0, start + gain * k) for k in range(steps)]
        fpv = [float(rng.uniform(0, 5)) / (1 + gain * k) for k in range(steps)]
        fnv = [float(rng.uniform(0, 5)) / (1 + 2 * gain * k) for k in range(steps)]
        curves = {"dice": dice, "false_positive_volume": fpv, "false_negative_volume": fnv}
        record = {"study": f"study_{i}", "steps": {str(k): {m: curves[m][k] for m in METRICS} for k in range(steps)}}
        for m in METRICS:
            record[f"{m}_auc"] = float(integrate.trapezoid(curves[m]))
            record[f"{m}_final"] = curves[m][-1]
        cases[f"study_{i}"] = record
    aggregates = {f"{m}_{kind}": {"mean": float(np.mean([c[f"{m}_{kind}"] for c in cases.values()])),
                                  "std": float(np.std([c[f"{m}_{kind}"] for c in cases.values()], ddof=1)),
                                  "count": studies} for m in METRICS for kind in ("auc", "final")}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"case": cases, "aggregates": aggregates, "errors": []}))
    return path


def test_report_of_a_scored_submission_shows_its_areas_and_the_2025_rule(tmp_path):
    sub, name, negative = interactive_submission(tmp_path)
    assert main(["--challenge", "autopet-2025-interactive", *sub.argv()]) == 0
    metrics = sub.metrics()
    out = tmp_path / "report.html"
    assert main(["report", *CHALLENGE, f"team={sub.output / 'metrics.json'}", "--output", str(out)]) == 0
    html = out.read_text()
    (row,) = leaderboard_rows(html)
    assert row[1] == "team"
    means = [float(row[3]), float(row[5]), float(row[7])]
    assert means == [metrics["aggregates"][f"{m}_auc"]["mean"] for m in METRICS]
    assert "dice_auc weight 0.5" in html and "click steps" in html
    record = metrics["case"][name]
    assert f'data-value="{record["dice_auc"]!r}"' in html  # the study's own row
    assert html.count("data:image/png;base64,") == 1 and "http" not in html.replace("http-equiv", "")


def test_leaderboard_orders_as_rank_does_on_the_areas(tmp_path, capsys):
    paths = {name: click_metrics(tmp_path / name / "metrics.json", gain=gain)
             for name, gain in (("weak", 0.01), ("good", 0.08), ("mid", 0.04))}
    out = tmp_path / "report.html"
    argv = [f"{name}={path}" for name, path in paths.items()]
    assert main(["report", *CHALLENGE, *argv, "--output", str(out)]) == 0
    assert main(["rank", *CHALLENGE, *argv, "--output", str(tmp_path / "board.json")]) == 0
    ranked = json.loads((tmp_path / "board.json").read_text())["leaderboard"]
    rows = leaderboard_rows(out.read_text())
    assert [r[1] for r in rows] == [r["submission"] for r in ranked] == ["good", "mid", "weak"]
    for row, expected in zip(rows, ranked):
        assert float(row[2]) == expected["weighted_rank"]
        assert float(row[3]) == expected["mean"]["dice"]  # the mean AUC-Dice, never a blank


def test_a_metrics_json_without_curves_is_refused_in_one_line(tmp_path, capsys):
    other = tmp_path / "metrics.json"
    other.write_text(json.dumps({"case": {"a": {"dice": 0.5}}, "aggregates": {"dice": {"mean": 0.5}}}))
    assert main(["report", *CHALLENGE, str(other), "--output", str(tmp_path / "r.html")]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(other) in err and not (tmp_path / "r.html").exists()
