"""`python -m app campaign`: two teams on 2 local Dask workers score as their serial dry runs do; a rerun
skips the finished teams and redoes a half-written one; leaderboard and report."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from app.campaign import teams_from
from petct.errors import InputError

pytest.importorskip("distributed")

REPO = Path(__file__).resolve().parents[1]
PHANTOMS = ("--phantoms", "2", "--phantom-size", "tiny")
PER_RUN = ("ground_truth_file", "prediction_file", "job")  # temporary paths and job ids, new in every run


def _scores(metrics_json: Path) -> dict:
    cases = json.loads(metrics_json.read_text())["case"]
    return {study: {k: v for k, v in record.items() if k not in PER_RUN} for study, record in cases.items()}


def _command(*extra: str) -> str:
    return f"{sys.executable} -m algorithm --input {{input}} --output {{output}} --engine baseline {' '.join(extra)}"


def _app(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "app", *args], cwd=REPO, capture_output=True, text=True, timeout=300)


def test_teams_from_options():
    teams = teams_from(commands=["b=run {input} {output}"], images=["a=kit/algo:1"], models=["a=/models/a"])
    assert [(t.name, t.command, t.image, str(t.model)) for t in teams] == [
        ("a", None, "kit/algo:1", "/models/a"), ("b", "run {input} {output}", None, "None")]
    for bad in ({"commands": ["x"]}, {"commands": ["a=x", "a=y"]}, {"commands": ["a/b=x"]},
                {"commands": ["a=x"], "models": ["b=/m"]}, {}):
        with pytest.raises(InputError):
            teams_from(**{"commands": [], "images": [], "models": [], **bad})


def test_two_teams_on_dask_score_as_their_serial_dry_runs_and_a_rerun_continues(tmp_path):
    campaign = tmp_path / "campaign"
    teams = ("--command", f"A={_command()}", "--command", f"B={_command('--device', 'cpu')}")
    run = _app("campaign", *teams, *PHANTOMS, "--output", str(campaign), "--workers", "2")
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    serial = _app("dry-run", "--command", _command(), *PHANTOMS, "--output", str(tmp_path / "serial"))
    assert serial.returncode == 0, serial.stdout[-3000:]
    reference = _scores(tmp_path / "serial" / "metrics.json")
    assert reference and all("dice" in record for record in reference.values())
    for team in ("A", "B"):
        assert _scores(campaign / "teams" / team / "metrics.json") == reference
    board = json.loads((campaign / "leaderboard.json").read_text())["leaderboard"]
    assert sorted(row["submission"] for row in board) == ["A", "B"]
    assert (campaign / "report.html").is_file() and "A" in (campaign / "leaderboard.txt").read_text()

    finished_a = (campaign / "teams" / "A" / "team.json").stat().st_mtime_ns
    (campaign / "teams" / "B" / "team.json").unlink()  # B as a run killed before its folder was complete
    again = _app("campaign", *teams, *PHANTOMS, "--output", str(campaign))
    assert again.returncode == 0, again.stdout[-3000:]
    assert "team A: finished earlier" in again.stdout and "team B: finished earlier" not in again.stdout
    assert (campaign / "teams" / "A" / "team.json").stat().st_mtime_ns == finished_a
    assert _scores(campaign / "teams" / "B" / "metrics.json") == reference
    assert not [p for p in (campaign / "teams").iterdir() if p.name.startswith(".partial")]
