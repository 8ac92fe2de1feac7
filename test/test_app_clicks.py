"""The service takes the 2025 track's lesion clicks with POST /v1/studies and the engine uses them."""
from __future__ import annotations

import json
import subprocess
import sys

import SimpleITK as sitk

from app_helpers import REPO, Server, files_of, wait_for_job, write_phantom
from petct.click_simulation import simulate_clicks

ORGANISER = "organiser-token-for-click-tests-01"


def test_clicks_reach_the_engine_and_malformed_ones_are_refused(tmp_path):
    paths = write_phantom(tmp_path / "study", 9, size="tiny", n_lesions=None)
    mask = sitk.GetArrayFromImage(sitk.ReadImage(str(paths["label"])))
    clicks = simulate_clicks(mask_zyx=mask, pet_zyx=sitk.GetArrayFromImage(sitk.ReadImage(str(paths["pet"]))))
    data = tmp_path / "data"
    added = subprocess.run([sys.executable, "-m", "app", "participants", "add", "alice", "--data-dir", str(data)],
                           cwd=REPO, text=True, capture_output=True, timeout=60,
                           env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO)})
    assert added.returncode == 0, added.stderr
    alice = added.stdout.strip()
    with Server(data_dir=data, env={"PETCT_KIT_TOKEN": ORGANISER}, token=ORGANISER) as server, \
            server.client() as organiser, server.client(alice) as participant:
        answers = {}
        for name, client, value in (("none", organiser, None), ("ten", participant, clicks.to_plain())):
            params = {} if value is None else {"clicks": json.dumps(value)}
            created = client.post("/v1/studies", params=params, files=files_of(paths))
            assert created.status_code == 202, created.text
            answers[name] = wait_for_job(client, created.json()["id"])
        assert answers["none"]["state"] == answers["ten"]["state"] == "succeeded"
        assert answers["ten"]["notes"]["clicks"]["grown"] + answers["ten"]["notes"]["clicks"]["kept"] == 10
        assert "clicks" not in answers["none"]["notes"]
        assert answers["ten"]["metrics"]["dice"] > answers["none"]["metrics"]["dice"]

        refused = participant.post("/v1/studies", params={"clicks": json.dumps({"tumor": [[999, 0, 0]]})},
                                   files=files_of(paths))
        assert refused.status_code == 422
        error = refused.json()["error"]
        assert error["field"] == "clicks" and "outside the image" in error["reason"]
        not_json = participant.post("/v1/studies", params={"clicks": "{"}, files=files_of(paths))
        assert not_json.status_code == 422 and not_json.json()["error"]["field"] == "clicks"
        too_long = participant.post("/v1/studies", params={"clicks": " " * 9000}, files=files_of(paths))
        assert too_long.status_code == 422 and "clicks" in too_long.text
        assert organiser.get("/v1/jobs").json()["total"] == 2  # the refused ones left no job behind

        parameters = organiser.get("/openapi.json").json()["paths"]["/v1/studies"]["post"]["parameters"]
        assert [p["name"] for p in parameters if p["in"] == "query"] == ["clicks"]
