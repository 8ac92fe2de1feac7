"""The service under autopet-2026-interactive takes scribbles as a multipart JSON field of POST /v1/studies."""
from __future__ import annotations

import json

import numpy as np
import SimpleITK as sitk

from algorithm.baseline import BaselineEngine
from algorithm.pipeline import segment_study
from app.service.studies import SCRIBBLES_MAX_BYTES
from app_helpers import Server, files_of, wait_for_job, write_phantom
from evaluation.scribble_simulation import next_scribbles
from petct.clicks import Clicks
from petct.scribbles import MAX_SCRIBBLE_POINTS

ORGANISER = "organiser-token-for-scribble-tests"


def array_of(content: bytes, path) -> np.ndarray:
    path.write_bytes(content)
    return sitk.GetArrayFromImage(sitk.ReadImage(str(path)))


def scribbles_after(paths, mask_bytes: bytes, folder) -> Clicks:
    """Step 1's scribbles, simulated as the loop does from the label and the mask the service gave at step 0."""
    mask = array_of(mask_bytes, folder / "step0.mha")
    truth = sitk.GetArrayFromImage(sitk.ReadImage(str(paths["label"])))
    return next_scribbles(ground_truth_zyx=truth, prediction_zyx=mask, previous=Clicks(),
                          strategy="centerline").scribbles


def post(client, paths, *, scribbles=None, params=None, name="scribbles.json"):
    files = files_of(paths)
    if scribbles is not None:
        files["scribbles"] = (name, scribbles if isinstance(scribbles, bytes) else json.dumps(scribbles).encode(),
                              "application/json")
    return client.post("/v1/studies", files=files, params=params or {})


def test_scribbles_reach_the_engine_and_bad_ones_are_refused_naming_the_field(tmp_path):
    paths = write_phantom(tmp_path / "study", 9, size="tiny", n_lesions=2)
    with Server(data_dir=tmp_path / "data", env={"PETCT_KIT_TOKEN": ORGANISER}, token=ORGANISER,
                args=["--challenge", "autopet-2026-interactive"]) as server, server.client() as client:
        created = post(client, paths)
        assert created.status_code == 202, created.text
        answers = {"none": wait_for_job(client, created.json()["id"])}
        scribbles = scribbles_after(paths, client.get(f"/v1/jobs/{created.json()['id']}/mask").content, tmp_path)
        assert len(scribbles.tumor) + len(scribbles.background) > 1  # a line of voxels, not one click
        for name, value in (("plain", scribbles.to_plain()), ("gc", scribbles.to_grand_challenge())):
            created = post(client, paths, scribbles=value)
            assert created.status_code == 202, created.text
            answers[name] = wait_for_job(client, created.json()["id"])
        assert {a["state"] for a in answers.values()} == {"succeeded"}
        assert "clicks" in answers["plain"]["notes"] and "clicks" not in answers["none"]["notes"]
        # the mask of each form is the one the algorithm gives with these scribbles, and it is another mask
        (tmp_path / "scribbles.json").write_text(json.dumps(scribbles.to_plain()))
        expected = sitk.GetArrayFromImage(segment_study(
            pet_path=paths["pet"], ct_path=paths["ct"], engine=BaselineEngine(),
            clicks_path=tmp_path / "scribbles.json", scribbles=True).mask)
        masks = {name: array_of(client.get(f"/v1/jobs/{answer['id']}/mask").content, tmp_path / f"{name}.mha")
                 for name, answer in answers.items()}
        assert np.array_equal(masks["plain"], expected) and np.array_equal(masks["gc"], expected)
        assert not np.array_equal(masks["none"], expected)

        size = sitk.ReadImage(str(paths["pet"])).GetSize()
        refusals = {
            "outside the image": {"tumor": [[size[0], 0, 0]]},
            "not valid JSON": b"{",
            "unknown keys": {"tumour": [[1, 1, 1]]},
            f"at most {MAX_SCRIBBLE_POINTS}": {"tumor": [[1, 1, 1]] * (MAX_SCRIBBLE_POINTS + 1)},
            f"limit of {SCRIBBLES_MAX_BYTES} bytes": b" " * (SCRIBBLES_MAX_BYTES + 1),
        }
        for reason, value in refusals.items():
            refused = post(client, paths, scribbles=value)
            assert refused.status_code == 422, (reason, refused.text)
            error = refused.json()["error"]
            assert error["field"] == "scribbles" and reason in error["reason"], (reason, error)
        clicks = client.post("/v1/studies", params={"clicks": json.dumps({"tumor": [[1, 1, 1]]})},
                             files=files_of(paths))
        assert clicks.status_code == 422 and clicks.json()["error"]["field"] == "clicks"
        assert "scribbles" in clicks.json()["error"]["reason"]
        assert client.get("/v1/jobs").json()["total"] == 3  # the refused ones left no job behind
        assert sorted(p.name for p in (tmp_path / "data" / "jobs").iterdir()) == sorted(
            j["id"] for j in client.get("/v1/jobs").json()["jobs"])

        body = client.get("/openapi.json").json()["paths"]["/v1/studies"]["post"]["requestBody"]
        field = body["content"]["multipart/form-data"]["schema"]["properties"]["scribbles"]
        assert str(MAX_SCRIBBLE_POINTS) in field["description"]


def test_other_profiles_refuse_a_scribbles_field(tmp_path):
    paths = write_phantom(tmp_path / "study", 9, size="tiny", n_lesions=2)
    with Server(data_dir=tmp_path / "data", env={"PETCT_KIT_TOKEN": ORGANISER}, token=ORGANISER,
                args=["--challenge", "autopet-2025-interactive"]) as server, server.client() as client:
        refused = post(client, paths, scribbles={"tumor": [[1, 1, 1]]})
        assert refused.status_code == 422 and refused.json()["error"]["field"] == "scribbles"
        assert client.get("/v1/jobs").json()["total"] == 0


def test_the_readme_states_the_limits_the_service_applies():
    from app_helpers import REPO
    text = " ".join((REPO / "README.md").read_text().split())
    assert f"at most {MAX_SCRIBBLE_POINTS} points of each kind and {SCRIBBLES_MAX_BYTES} bytes" in text
