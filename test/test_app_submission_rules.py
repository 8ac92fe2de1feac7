"""Phase submissions in process: what is refused before it counts, and how many may run at once."""
from __future__ import annotations

import numpy as np
import pytest
from fastapi.testclient import TestClient

from app.service.api import create_app
from app.service.participants import ParticipantStore
from app.service.phases import AGGREGATE_SIGNIFICANT_DIGITS, Phase, PhaseStore, Rank
from app.service.settings import ServiceSettings
from app_helpers import write_mask

TOKEN = "organiser-token-for-submission-rules-01"
SHAPE = (5, 5, 5)


class IdleEngine:
    def describe(self) -> dict:
        return {"engine": "idle"}


class Organiser:
    """An organiser-mode service on a one-case ground truth, with participants alice and bob."""

    def __init__(self, tmp_path, truth: np.ndarray | None = None, **settings):
        if truth is None:
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

    def get(self, path: str, who: str | None = None):
        token = self.tokens[who] if who else TOKEN
        return self.client.get(path, headers={"Authorization": f"Bearer {token}"})

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


PROBE_GRID = (48, 48, 48)
VOXEL_ML = 2.0 * 3.0 * 4.0 / 1000  # write_mask's spacing


def _probe_boxes(count: int) -> list[np.ndarray]:
    """`count` disjoint, unconnected boxes of 2^i voxels (raster-filled slabs with an empty plane between)."""
    plane = PROBE_GRID[1] * PROBE_GRID[2]
    boxes, z = [], 0
    for i in range(count):
        flat = np.zeros(int(np.prod(PROBE_GRID)), bool)
        flat[z * plane: z * plane + 2 ** i] = True
        boxes.append(flat.reshape(PROBE_GRID))
        z += -(-2 ** i // plane) + 1
    assert z <= PROBE_GRID[0]
    return boxes


def _decode(fpv_ml: float, count: int) -> list[bool]:
    """Which probe boxes the truth touches, read from the false positive volume (the attack)."""
    untouched = round(fpv_ml / VOXEL_ML)
    return [not (untouched >> i) & 1 for i in range(count)]


def test_hidden_phases_show_rounded_ranked_means_only_and_the_probe_attack_loses_its_low_bits(tmp_path):
    count = 15  # boxes of 1 .. 16384 voxels, as in the attack on the full-size grid
    boxes = _probe_boxes(count)
    touched = [i % 2 == 1 for i in range(count)]
    truth = np.zeros(PROBE_GRID, np.uint8)
    for box, touch in zip(boxes, touched):
        if touch:
            truth[tuple(np.argwhere(box)[0])] = 1
    probe = np.any(boxes, axis=0).astype(np.uint8)
    with Organiser(tmp_path, truth=truth) as server:
        mask = write_mask(probe, tmp_path / "probe.mha").read_bytes()
        answer = server.submit("alice", {"CASE_A": ("probe.mha", mask)}, phase="hidden")
        assert answer.status_code == 201, answer.text
        shown = answer.json()["aggregates"]
        raw = server.get("/v1/phases/hidden/submissions").json()["submissions"][0]["aggregates"]
        board = server.get("/v1/phases/hidden/leaderboard", "bob").json()["rows"]
        page = server.get("/phases/hidden", "alice").text
    # The attack is real: the full-precision mean FPV names every box the hidden truth touches.
    assert _decode(raw["false_positive_volume"]["mean"], count) == touched
    assert {"studies", "volume_correlation", "detected_lesions", "gt_volume"} <= set(raw)
    # A participant sees the three ranked means, rounded; nothing else derived from the truth.
    assert set(shown) == {"dice", "false_positive_volume", "false_negative_volume"}
    for metric, stats in shown.items():
        assert set(stats) == {"mean"}
        value = stats["mean"]
        assert value == float(f"{value:.{AGGREGATE_SIGNIFICANT_DIGITS - 1}e}")
        assert value == pytest.approx(raw[metric]["mean"], rel=10 ** (1 - AGGREGATE_SIGNIFICANT_DIGITS))
    assert _decode(shown["false_positive_volume"]["mean"], count) != touched
    assert board[0]["mean"] == {m: stats["mean"] for m, stats in shown.items()}
    fpv = shown["false_positive_volume"]["mean"]
    assert f"{fpv:.{AGGREGATE_SIGNIFICANT_DIGITS}g}" in page and f"{raw['false_positive_volume']['mean']:.3f}" not in page


def test_a_multipart_boundary_over_256_characters_is_a_400_on_every_upload_route(organiser):
    boundary = "b" * 300
    body = f"--{boundary}\r\nContent-Disposition: form-data; name=\"x\"\r\n\r\n1\r\n--{boundary}--\r\n".encode()
    headers = {"Content-Type": f"multipart/form-data; boundary={boundary}"}
    for path, who in (("/v1/score", None), ("/v1/studies", None), ("/v1/cases/CASE_A/score", None),
                      ("/v1/phases/open/submissions", "alice")):
        token = organiser.tokens[who] if who else TOKEN
        response = organiser.client.post(path, content=body, headers={**headers, "Authorization": f"Bearer {token}"})
        assert response.status_code == 400, (path, response.text)
        assert "Boundary length 300 exceeds maximum of 256" in response.json()["error"]["reason"]
    assert organiser.used("alice") == 0


@pytest.mark.parametrize("values,problem", [
    ("float 0/1", "holds floating-point values (float32)"), ("0.5", "holds floating-point values (float32)"),
    ("NaN", "1 NaN or infinite voxel(s)")])
@pytest.mark.parametrize("phase", ["open", "hidden"])
def test_a_mask_wrong_without_any_ground_truth_is_told_in_full_and_not_charged(organiser, tmp_path, values,
                                                                               problem, phase):
    import SimpleITK as sitk

    array = organiser.truth.astype(np.float32)
    if values == "0.5":
        array *= 0.5
    elif values == "NaN":
        array[0, 0, 0] = np.nan
    path = tmp_path / "float.mha"
    sitk.WriteImage(sitk.GetImageFromArray(array), str(path))
    answer = organiser.submit("alice", {"CASE_A": ("float.mha", path.read_bytes())}, phase=phase)
    assert answer.status_code == 422, answer.text
    error = answer.json()["error"]
    assert problem in error["reason"] and "a mask must hold integer labels 0 and 1" in error["reason"]
    assert (error["field"], error["file"]) == ("CASE_A", "float.mha")
    assert organiser.used("alice", phase) == 0


def test_a_submission_cut_off_by_a_server_crash_is_not_counted(tmp_path):
    with Organiser(tmp_path) as server:
        assert server.submit("alice", {"CASE_A": ("a.mha", server.good)}).status_code == 201
        store = server.service.phases
        # What a kill -9 while scoring leaves: a reserved submission still "scoring".
        store.reserve(store.get("open"), "alice")
        assert server.used("alice") == 2
    with TestClient(create_app(settings=server.settings, engine=IdleEngine())) as client:  # the restart
        headers = {"Authorization": f"Bearer {server.tokens['alice']}"}
        assert client.get("/v1/phases/open", headers=headers).json()["used_total"] == 1
        states = [(s["state"], s["error"]) for s in
                  client.get("/v1/phases/open/submissions", headers=headers).json()["submissions"]]
    assert states[0] == ("scored", None)
    assert states[1][0] == "interrupted" and "does not count against your budget" in states[1][1]
    store = PhaseStore(server.settings.database)
    tight = Phase(name="tight", cases=("CASE_A",), per_day=1, total=1, show_cases=False, rank=Rank.best)
    store.create(tight)
    store.reserve(tight, "bob")
    assert store.fail_interrupted() == 1
    store.reserve(tight, "bob")  # the interrupted one left the budget whole
