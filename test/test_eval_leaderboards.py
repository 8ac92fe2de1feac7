"""Each edition's leaderboard and report from one entry point: `evaluation rank`, campaigns and the dry run rank
2022/2024 on Dice, FPV and FNV, 2025 on the areas under the click curves, 2026 on the closed loops' AUC-Dice and
pooled AUC-DMM; the reports of the step curves for 2025 and 2026."""
from __future__ import annotations

import json

import numpy as np
import pytest

from app.campaign import Team, rank
from evaluation.html_report.click_report import build_click_report
from evaluation.html_report.loop_report import build_loop_report
from evaluation.html_report.steps import steps_report_builder
from evaluation.leaderboards import edition_leaderboard
from petct.editions import EDITIONS
from petct.errors import InputError
from report_helpers import random_metrics, write_metrics
from test_click_report import click_metrics
from test_scribble_report import loop_metrics


def test_each_edition_gets_its_report():
    builders = {name: steps_report_builder(edition) for name, edition in EDITIONS.items()}
    assert builders == {"autopet-2022": None, "autopet-2024": None,
                        "autopet-2025-interactive": build_click_report,
                        "autopet-2026-interactive": build_loop_report}


def test_2026_leaderboard_ranks_loops_and_warns_of_other_study_sets(tmp_path):
    good = loop_metrics(tmp_path / "good" / "metrics.json", gain=0.2)
    weak = loop_metrics(tmp_path / "weak" / "metrics.json", gain=0.05)
    board = edition_leaderboard([f"weak={weak}", f"good={good}"], challenge="autopet-2026-interactive")
    assert [(r["position"], r["submission"], r["file"]) for r in board.rows] == [(1, "good", str(good)),
                                                                                (2, "weak", str(weak))]
    assert board.warnings == [] and board.text.splitlines()[1].split()[:2] == ["1", "good"]
    cases = json.loads(weak.read_text())
    del cases["case"]["study_2"]
    weak.write_text(json.dumps(cases))
    board = edition_leaderboard([f"weak={weak}", f"good={good}"], challenge="autopet-2026-interactive")
    (warning,) = board.warnings
    assert "submission weak covers 2 of the 3 studies" in warning and "study_2" in warning
    with pytest.raises(InputError, match="ranks over all studies"):
        edition_leaderboard([str(good)], challenge="autopet-2026-interactive", subsets={"study_0": "a"})


def test_2025_leaderboard_ranks_the_areas(tmp_path):
    paths = {name: click_metrics(tmp_path / name / "metrics.json", gain=gain)
             for name, gain in (("weak", 0.01), ("good", 0.08))}
    board = edition_leaderboard([f"{n}={p}" for n, p in paths.items()], challenge="autopet-2025-interactive")
    assert [r["submission"] for r in board.rows] == ["good", "weak"]
    good = json.loads(paths["good"].read_text())["case"].values()
    assert board.rows[0]["mean"]["dice"] == pytest.approx(np.mean([c["dice_auc"] for c in good]))


@pytest.mark.parametrize("challenge, write, title", [
    ("autopet-2022", lambda path, q: write_metrics(path, random_metrics(np.random.default_rng(int(q * 10)),
                                                                        [f"s{i}" for i in range(4)], quality=q)),
     "<h2>Leaderboard</h2>"),
    ("autopet-2025-interactive", lambda path, q: click_metrics(path, gain=q / 10), "autoPET IV interactive-track"),
    ("autopet-2026-interactive", lambda path, q: loop_metrics(path, gain=q / 4), "autoPET V closed-loop report")])
def test_a_campaign_ranks_and_reports_its_teams_as_its_edition_does(tmp_path, challenge, write, title):
    teams = [Team(name=name, command="x {input} {output}") for name in ("low", "high")]
    for team, quality in zip(teams, (0.2, 0.8)):
        write(tmp_path / "teams" / team.name / "metrics.json", quality)
    rank(teams, tmp_path, challenge=challenge, images=None)
    saved = json.loads((tmp_path / "leaderboard.json").read_text())
    expected = edition_leaderboard([f"{t.name}={tmp_path / 'teams' / t.name / 'metrics.json'}" for t in teams],
                                   challenge=challenge)
    assert saved == {"leaderboard": json.loads(json.dumps(expected.rows)), "subsets": None, "challenge": challenge}
    assert (tmp_path / "leaderboard.txt").read_text() == expected.text + "\n"
    assert title in (tmp_path / "report.html").read_text()
    rank(teams, tmp_path, challenge=challenge, images=None, report=False)  # no report: an older one goes
    assert not (tmp_path / "report.html").exists()
