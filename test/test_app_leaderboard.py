"""Leaderboards kept up to date as submissions are scored: a slow reference, ties, restarts, and cheap reads."""
from __future__ import annotations

import math

import numpy as np
import pytest
from fastapi.testclient import TestClient

from app.service.api import create_app
from app.service.leaderboard import Leaderboards
from app.service.participants import ParticipantStore
from app.service.phases import Phase, PhaseStore, Rank, Submission, SubmissionState
from app.service.settings import ServiceSettings
from app_helpers import write_mask

METRICS = {"dice": (0.5, True), "false_positive_volume": (0.25, False), "false_negative_volume": (0.25, False)}


def _report(dice: float, fpv: float, fnv: float) -> dict:
    return {"aggregates": {"dice": {"mean": dice}, "false_positive_volume": {"mean": fpv},
                           "false_negative_volume": {"mean": fnv}}}


def _slow_order(entries: list[tuple[str, float, dict]]) -> list[str]:
    """Names best first: competition ranks counted pair by pair, weighted; then Dice; then the earlier."""
    def rank(i: int, metric: str) -> float:
        value = entries[i][2][metric]
        if value is None or math.isnan(value):
            return 1 + sum(e[2][metric] is not None and not math.isnan(e[2][metric]) for e in entries)
        higher = METRICS[metric][1]
        return 1 + sum(e[2][metric] is not None and not math.isnan(e[2][metric])
                       and (e[2][metric] > value if higher else e[2][metric] < value) for e in entries)

    keys = []
    for i, (name, received, means) in enumerate(entries):
        weighted = sum(weight * rank(i, metric) for metric, (weight, _) in METRICS.items())
        dice = means["dice"] if means["dice"] is not None and not math.isnan(means["dice"]) else -math.inf
        keys.append((weighted, -dice, received, name))
    return [k[3] for k in sorted(keys)]


@pytest.mark.parametrize("rank", [Rank.best, Rank.latest])
@pytest.mark.parametrize("seed", range(6))
def test_rows_match_a_slow_reference_whatever_order_submissions_are_scored_in(rank, seed):
    rng = np.random.default_rng(seed)
    phase = Phase(name="p", cases=("A",), per_day=99, total=99, show_cases=False, rank=rank)
    levels = [0.1, 0.5, 0.5, 0.9, None]  # few distinct values: many ties
    submissions = []
    for i in range(int(rng.integers(1, 40))):
        means = {m: levels[int(rng.integers(0, len(levels)))] for m in METRICS}
        submissions.append(Submission(id=f"s{i:03d}", phase="p", participant=f"p{int(rng.integers(0, 8))}",
                                      created_at=1000.0 + i, state=SubmissionState.scored, error=None,
                                      report=_report(*(math.nan if means[m] is None else means[m] for m in METRICS))))
    boards = Leaderboards()
    for index in rng.permutation(len(submissions)):  # scoring finishes in any order
        boards._add(phase, submissions[index], rank=True)
    by_participant: dict[str, list[Submission]] = {}
    for s in submissions:
        by_participant.setdefault(s.participant, []).append(s)

    def means_of(s: Submission) -> dict:
        return {m: s.report["aggregates"][m]["mean"] for m in METRICS}

    chosen = {}
    for participant, own in by_participant.items():
        if rank == Rank.latest:
            chosen[participant] = own[-1]
        else:
            best = _slow_order([(s.id, s.created_at, means_of(s)) for s in own])[0]
            chosen[participant] = next(s for s in own if s.id == best)
    expected = _slow_order([(p, s.created_at, means_of(s)) for p, s in chosen.items()])
    rows = boards.rows("p")
    assert [r["participant"] for r in rows] == expected
    assert [r["submission"] for r in rows] == [chosen[p].id for p in expected]
    assert [r["position"] for r in rows] == list(range(1, len(expected) + 1))


class IdleEngine:
    def describe(self) -> dict:
        return {"engine": "idle"}


TOKEN = "organiser-token-for-leaderboard-0123"
SHAPE = (5, 5, 5)


def test_reads_cost_no_database_work_ties_go_to_the_earlier_submission_and_a_restart_keeps_the_rows(tmp_path,
                                                                                                     monkeypatch):
    truth = np.zeros(SHAPE, np.uint8)
    truth[1:4, 1:4, 1:4] = 1
    write_mask(truth, tmp_path / "gt" / "CASE_A_SEG.mha")
    settings = ServiceSettings(data_dir=tmp_path / "data", token=TOKEN, ground_truth=tmp_path / "gt")
    settings.data_dir.mkdir()
    tokens = {who: ParticipantStore(settings.database).add(who) for who in ("alice", "bob", "carol")}
    PhaseStore(settings.database).create(Phase(name="open", cases=("CASE_A",), per_day=9, total=9, show_cases=True,
                                               rank=Rank.latest))
    half = truth.copy()
    half[1] = 0
    masks = {"good": write_mask(truth, tmp_path / "good.mha").read_bytes(),
             "half": write_mask(half, tmp_path / "half.mha").read_bytes()}

    def submit(client: TestClient, who: str, mask: str) -> None:
        response = client.post("/v1/phases/open/submissions", files={"CASE_A": ("a.mha", masks[mask])},
                               headers={"Authorization": f"Bearer {tokens[who]}"})
        assert response.status_code == 201, response.text

    def board(client: TestClient) -> list[tuple[str, float]]:
        response = client.get("/v1/phases/open/leaderboard", headers={"Authorization": f"Bearer {tokens['carol']}"})
        assert response.status_code == 200, response.text
        return [(row["participant"], row["mean"]["dice"]) for row in response.json()["rows"]]

    with TestClient(create_app(settings=settings, engine=IdleEngine())) as client:
        submit(client, "alice", "half")
        submit(client, "bob", "good")
        submit(client, "alice", "good")  # alice's latest now ties bob's, received after it
        submit(client, "carol", "half")

        def no_reads(*args, **kwargs):
            raise AssertionError("a leaderboard read went to the database")
        with monkeypatch.context() as patched:
            patched.setattr(PhaseStore, "submissions", no_reads)
            rows = board(client)
    assert rows == [("bob", 1.0), ("alice", 1.0), ("carol", pytest.approx(rows[2][1]))]
    assert rows[2][1] < 1.0
    with TestClient(create_app(settings=settings, engine=IdleEngine())) as client:  # a restart builds the same rows
        assert board(client) == rows
