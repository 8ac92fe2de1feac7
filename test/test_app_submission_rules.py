"""Phase submissions in process: what is refused before it counts, and how many may run at once."""
from __future__ import annotations

import numpy as np
import pytest
from fastapi.testclient import TestClient

from app.service.api import create_app
from app.service.participants import ParticipantStore
from app.service.phases import Phase, PhaseStore, Rank
from app.service.settings import ServiceSettings
from app_helpers import write_mask

TOKEN = "organiser-token-for-submission-rules-01"
SHAPE = (5, 5, 5)


class IdleEngine:
    def describe(self) -> dict:
        return {"engine": "idle"}


class Organiser:
    """An organiser-mode service on a one-case ground truth, with participants alice and bob."""

    def __init__(self, tmp_path, **settings):
        truth = np.zeros(SHAPE, np.uint8)
        truth[1:4, 1:4, 1:4] = 1
        self.truth = truth
        write_mask(truth, tmp_path / "gt" / "CASE_A_SEG.mha")
        self.settings = ServiceSettings(data_dir=tmp_path / "data", token=TOKEN, ground_truth=tmp_path / "gt",
                                        **settings)
        self.settings.data_dir.mkdir()
        self.tokens = {who: ParticipantStore(self.settings.database).add(who) for who in ("alice", "bob")}
        for name, show in (("open", True), ("hidden", False)):
            PhaseStore(self.settings.database).create(Phase(name=name, cases=("CASE_A",), per_day=50, total=50,
                                                            show_cases=show, rank=Rank.best))
        self.good = write_mask(truth, tmp_path / "good.mha").read_bytes()
        self.client = TestClient(create_app(settings=self.settings, engine=IdleEngine()))

    def __enter__(self) -> "Organiser":
        self.client.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self.client.__exit__(*exc)

    @property
    def service(self):
        return self.client.app.state.service

    def submit(self, who: str, files: dict, phase: str = "open", **kwargs):
        return self.client.post(f"/v1/phases/{phase}/submissions", files=files,
                                headers={"Authorization": f"Bearer {self.tokens[who]}"}, **kwargs)

    def used(self, who: str, phase: str = "open") -> int:
        return self.client.get(f"/v1/phases/{phase}", headers={"Authorization": f"Bearer {self.tokens[who]}"}
                               ).json()["used_total"]


@pytest.fixture
def organiser(tmp_path):
    with Organiser(tmp_path, max_concurrent_submissions=2) as server:
        yield server


def test_a_participant_has_at_most_the_limit_of_submissions_in_flight(organiser):
    held = [organiser.service.submitting.slot("alice") for _ in range(2)]
    for slot in held:
        slot.__enter__()
    refused = organiser.submit("alice", {"CASE_A": ("a.mha", organiser.good)})
    assert refused.status_code == 429 and "2 of your submissions are being received or scored" in refused.text
    assert refused.headers["retry-after"]
    assert organiser.used("alice") == 0  # refused before anything counted
    assert organiser.submit("bob", {"CASE_A": ("a.mha", organiser.good)}).status_code == 201  # per participant
    held[0].__exit__(None, None, None)
    assert organiser.submit("alice", {"CASE_A": ("a.mha", organiser.good)}).status_code == 201
    held[1].__exit__(None, None, None)
    assert organiser.service.submitting.count("alice") == 0  # every slot given back, refused or answered
    assert organiser.submit("alice", {"CASE_A": ("a.mha", b"not an image")}).status_code in (415, 422)
    assert organiser.service.submitting.count("alice") == 0
