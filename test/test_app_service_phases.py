"""Organiser mode against a real server: participants, ownership, phases, budgets, leaderboard, no ground truth leaks."""
from __future__ import annotations

import io
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest

from app.service.phases import BudgetSpent, Phase, PhaseStore, Rank, next_utc_midnight
from app_helpers import REPO, Server, files_of, wait_for_job, write_mask, write_phantom
from evaluation.aggregates import aggregate
from evaluation.scoring import score_files

ORGANISER = "organiser-token-for-phase-tests-0123"
SHAPE = (6, 6, 6)
MAX_UPLOAD = 8 * 1024 * 1024


def app_cli(*args: str, data: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "app", *args, "--data-dir", str(data)], cwd=REPO, text=True,
                          capture_output=True, timeout=60, env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO)})


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("phases")
    gt = root / "gt"
    rng = np.random.default_rng(11)
    truth = {}
    for name in ("CASE_A", "CASE_B"):
        truth[name] = (rng.uniform(size=SHAPE) < 0.2).astype(np.uint8)
    sparse = np.zeros(SHAPE, np.uint8)
    sparse[1, 2, 3] = sparse[4, 4, 0] = sparse[5, 0, 5] = 1  # three voxels: cheap to bisect
    truth["SPARSE"] = sparse
    for name, array in truth.items():
        write_mask(array, gt / f"{name}_SEG.mha")
    data = root / "data"
    tokens = {}
    for who in ("alice", "bob", "mallory"):
        added = app_cli("participants", "add", who, data=data)
        assert added.returncode == 0, added.stderr
        tokens[who] = added.stdout.strip()
    (root / "hidden.txt").write_text("# the test set\nCASE_A\nCASE_B\n\nSPARSE\n")
    (root / "open.txt").write_text("CASE_A\nCASE_B\n")
    for args in (["final", "--cases", str(root / "hidden.txt"), "--per-day", "3", "--total", "4"],
                 ["practice", "--cases", str(root / "open.txt"), "--per-day", "50", "--total", "100",
                  "--show-cases", "--rank", "latest"]):
        created = app_cli("phases", "create", *args, data=data)
        assert created.returncode == 0, created.stderr
    with Server(data_dir=data, args=["--ground-truth", str(gt), "--max-upload", str(MAX_UPLOAD)], env={"PETCT_KIT_TOKEN": ORGANISER},
                token=ORGANISER) as server:
        yield server, tokens, truth, root


def masks(folder: Path, arrays: dict[str, np.ndarray], suffix=".mha") -> dict[str, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    return {case: write_mask(array, folder / f"{case}{suffix}") for case, array in arrays.items()}


def fields(paths: dict[str, Path]) -> dict:
    return {case: (path.name, path.read_bytes()) for case, path in paths.items()}


def bisect_ground_truth(post_score) -> np.ndarray | None:
    """The attack: rebuild a case's mask from per-case scores of box-shaped masks (None once refused).

    `post_score(mask)` answers the JSON record or None. From Dice, the prediction's and the truth's
    volumes, the overlap |G∩R| follows; boxes with overlap are halved until they are single voxels.
    """
    found = np.zeros(SHAPE, np.uint8)

    def overlap(region: np.ndarray) -> float | None:
        record = post_score(region)
        if record is None or record.get("dice") is None or record.get("gt_volume") is None:
            return None
        voxel = record["pred_volume"] / region.sum()
        return record["dice"] * (record["gt_volume"] / voxel + region.sum()) / 2

    stack = [tuple(slice(0, n) for n in SHAPE)]
    while stack:
        box = stack.pop()
        region = np.zeros(SHAPE, np.uint8)
        region[box] = 1
        hits = overlap(region)
        if hits is None:
            return None
        if round(hits) == 0:
            continue
        axis = int(np.argmax([s.stop - s.start for s in box]))
        if box[axis].stop - box[axis].start == 1:
            found[box] = 1
            continue
        middle = (box[axis].start + box[axis].stop) // 2
        for part in (slice(box[axis].start, middle), slice(middle, box[axis].stop)):
            stack.append(box[:axis] + (part,) + box[axis + 1:])
    return found


def per_case_scorer(client, tmp_path: Path):
    def post(region: np.ndarray):
        path = write_mask(region, tmp_path / "probe.mha")
        response = client.post("/v1/cases/SPARSE/score", files={"prediction": ("probe.mha", path.read_bytes())})
        return response.json() if response.status_code == 200 else None
    return post


@pytest.mark.slow
def test_bisection_rebuilds_a_case_for_the_organiser_only(setup, tmp_path):
    server, tokens, truth, _ = setup
    with server.client() as organiser:  # the attack is real: with per-case scores it rebuilds the case
        assert np.array_equal(bisect_ground_truth(per_case_scorer(organiser, tmp_path)), truth["SPARSE"])
    with server.client(token=tokens["mallory"]) as attacker:
        assert bisect_ground_truth(per_case_scorer(attacker, tmp_path)) is None
        probe = write_mask(np.ones(SHAPE, np.uint8), tmp_path / "p.mha").read_bytes()
        for method, path in (("POST", "/v1/cases/SPARSE/score"), ("GET", "/v1/cases")):
            response = attacker.request(method, path, files={"prediction": ("p.mha", probe)} if method == "POST" else None)
            assert response.status_code == 404, response.text  # as if the route did not exist


def test_bisection_through_phase_submissions_gets_aggregates_only_and_hits_the_budget(setup, tmp_path):
    server, tokens, truth, _ = setup
    answers = []

    def post(region: np.ndarray):
        paths = masks(tmp_path / f"try{len(answers)}", {"CASE_A": truth["CASE_A"], "CASE_B": truth["CASE_B"],
                                                         "SPARSE": region})
        response = attacker.post("/v1/phases/final/submissions", files=fields(paths))
        answers.append(response)
        if response.status_code != 201:
            return None
        body = response.json()
        assert body["case"] is None and body["state"] == "scored"
        # The ranked metrics' means over the whole set, nothing else.
        assert set(body["aggregates"]) == {"dice", "false_positive_volume", "false_negative_volume"}
        for metric in body["aggregates"]:
            assert set(body["aggregates"][metric]) == {"mean"}
        return None  # nothing per case to bisect with

    with server.client(token=tokens["mallory"]) as attacker:
        assert bisect_ground_truth(post) is None
        for _ in range(3):
            post(np.ones(SHAPE, np.uint8))
    assert [r.status_code for r in answers[:3]] == [201, 201, 201]
    refused = answers[3]
    assert refused.status_code == 429
    assert "next is allowed from" in refused.json()["error"]["reason"]
    assert 0 < int(refused.headers["retry-after"]) <= 86400
    assert all(r.status_code == 429 for r in answers[3:])
    for response in answers:
        assert "SPARSE_SEG" not in response.text and str(server.data_dir) not in response.text


def test_submission_aggregates_match_the_scorer_and_only_own_submissions_are_listed(setup, tmp_path):
    server, tokens, truth, root = setup
    rng = np.random.default_rng(5)
    preds = {case: (rng.uniform(size=SHAPE) < 0.25).astype(np.uint8) for case in ("CASE_A", "CASE_B")}
    paths = masks(tmp_path / "alice", preds, suffix=".nii.gz")
    with server.client(token=tokens["alice"]) as alice:
        response = alice.post("/v1/phases/practice/submissions", files=fields(paths))
        assert response.status_code == 201, response.text
        body = response.json()
    expected = aggregate([score_files(ground_truth=root / "gt" / f"{c}_SEG.mha", prediction=paths[c], study=c)
                          for c in sorted(preds)])
    assert body["aggregates"]["dice"]["mean"] == pytest.approx(expected["dice"]["mean"])
    assert body["aggregates"]["dice"]["max"] == pytest.approx(expected["dice"]["max"])  # this phase shows cases
    assert set(body["case"]) == {"CASE_A", "CASE_B"}
    with server.client(token=tokens["bob"]) as bob:
        assert bob.get("/v1/phases/practice/submissions").json()["submissions"] == []
    with server.client(token=tokens["alice"]) as alice:
        own = alice.get("/v1/phases/practice/submissions").json()["submissions"]
        assert [s["id"] for s in own] == [body["id"]]
    with server.client() as organiser:
        assert body["id"] in [s["id"] for s in organiser.get("/v1/phases/practice/submissions").json()["submissions"]]


def _archive(kind: str, members: dict[str, bytes], *, links: dict[str, str] | None = None) -> bytes:
    out = io.BytesIO()
    if kind == "zip":
        with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as zf:
            for name, data in members.items():
                zf.writestr(name, data)
    else:
        with tarfile.open(fileobj=out, mode="w:gz") as tf:
            for name, data in members.items():
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tf.addfile(info, io.BytesIO(data))
            for name, target in (links or {}).items():
                info = tarfile.TarInfo(name)
                info.type, info.linkname = tarfile.SYMTYPE, target
                tf.addfile(info)
    return out.getvalue()


@pytest.mark.parametrize("kind", ["zip", "tar"])
def test_archives_are_read_member_by_member_and_hostile_ones_refused(setup, tmp_path, kind):
    server, tokens, truth, _ = setup
    good = {f"{case}.mha": path.read_bytes() for case, path in masks(tmp_path, {
        "CASE_A": truth["CASE_A"], "CASE_B": np.zeros(SHAPE, np.uint8)}).items()}
    name = f"sub.{'zip' if kind == 'zip' else 'tar.gz'}"
    with server.client(token=tokens["bob"]) as bob:
        def send(data: bytes):
            return bob.post("/v1/phases/practice/submissions", files={"archive": (name, data)})

        ok = send(_archive(kind, good))
        assert ok.status_code == 201, ok.text
        assert ok.json()["case"]["CASE_A"]["dice"] == pytest.approx(1.0)
        hostile = {
            "path": {**good, "../CASE_A.mha": good["CASE_A.mha"]},
            "folder": {"x/CASE_A.mha": good["CASE_A.mha"], "CASE_B.mha": good["CASE_B.mha"]},
            "extra": {"CASE_A.mha": good["CASE_A.mha"], "notes.txt": b"hi"},
            "unknown case": {"CASE_A.mha": good["CASE_A.mha"], "CASE_Z.mha": good["CASE_B.mha"]},
            "missing": {"CASE_A.mha": good["CASE_A.mha"]},
        }
        for what, members in hostile.items():
            response = send(_archive(kind, members))
            assert response.status_code == 422, (what, response.text)
        if kind == "tar":
            linked = send(_archive(kind, {"CASE_A.mha": good["CASE_A.mha"]}, links={"CASE_B.mha": "/etc/passwd"}))
            assert linked.status_code == 422 and "plain file" in linked.text
        bomb = _archive(kind, {"CASE_A.mha": b"\0" * (40 * 1024 * 1024), "CASE_B.mha": good["CASE_B.mha"]})
        assert len(bomb) < 1024 * 1024
        assert send(bomb).status_code == 413  # under 1 MB sent, 40 MB decompressed: over the 8 MB limit
        assert bob.post("/v1/phases/practice/submissions", files={"archive": ("a.zip", b"not an archive")}
                        ).status_code == 415
    assert not list((server.data_dir / "scratch").rglob("*.*"))


def test_ownership_tokens_and_leaderboard(setup, tmp_path):
    server, tokens, truth, _ = setup
    with server.client(token="") as anonymous:
        assert anonymous.get("/v1/jobs").status_code == 401  # loopback, but organiser mode: a token is needed
    with server.client(token=tokens["alice"]) as alice, server.client(token=tokens["bob"]) as bob:
        phase = alice.get("/v1/phases/practice").json()
        assert phase["cases"] == ["CASE_A", "CASE_B"] and phase["used_total"] >= 1
        for who, client, quality in (("alice", alice, 0.5), ("bob", bob, 1.0)):
            rng = np.random.default_rng(1)
            preds = {c: np.where(rng.uniform(size=SHAPE) < quality, truth[c], 0).astype(np.uint8)
                     for c in ("CASE_A", "CASE_B")}
            response = client.post("/v1/phases/practice/submissions", files=fields(masks(tmp_path / who, preds)))
            assert response.status_code == 201, response.text
        board = alice.get("/v1/phases/practice/leaderboard").json()
    assert board["rank"] == "latest"
    assert [row["participant"] for row in board["rows"]][:1] == ["bob"]
    assert {row["participant"] for row in board["rows"]} == {"alice", "bob"}
    with server.client() as organiser:
        assert organiser.post("/v1/phases/practice/submissions", files={}).status_code == 403


def test_jobs_belong_to_whoever_created_them(setup, tmp_path):
    server, tokens, _, _ = setup
    study = write_phantom(tmp_path / "study", 2)
    with server.client(token=tokens["alice"]) as alice, server.client(token=tokens["bob"]) as bob, \
            server.client() as organiser:
        created = alice.post("/v1/studies", files=files_of({"pet": study["pet"], "ct": study["ct"]}))
        assert created.status_code == 202, created.text
        job_id = created.json()["id"]
        assert wait_for_job(alice, job_id)["state"] == "succeeded"
        for method, path in (("GET", f"/v1/jobs/{job_id}"), ("GET", f"/v1/jobs/{job_id}/mask"),
                             ("DELETE", f"/v1/jobs/{job_id}")):
            response = bob.request(method, path)
            assert response.status_code == 404 and response.json()["error"]["reason"] == "no such job", path
        assert job_id not in [j["id"] for j in bob.get("/v1/jobs").json()["jobs"]]
        assert job_id in [j["id"] for j in alice.get("/v1/jobs").json()["jobs"]]
        assert job_id in [j["id"] for j in organiser.get("/v1/jobs").json()["jobs"]]
        assert alice.get(f"/v1/jobs/{job_id}/mask").status_code == 200
        assert alice.delete(f"/v1/jobs/{job_id}").status_code == 204


@pytest.mark.slow
def test_revoked_tokens_and_the_cli(setup, tmp_path):
    server, tokens, _, _ = setup
    eve = app_cli("participants", "add", "eve", data=server.data_dir)
    token = eve.stdout.strip()
    with server.client(token=token) as client:
        assert client.get("/v1/phases").status_code == 200
    assert app_cli("participants", "revoke", "eve", data=server.data_dir).returncode == 0
    with server.client(token=token) as client:
        assert client.get("/v1/phases").status_code == 401
    listed = app_cli("participants", "list", data=server.data_dir).stdout
    assert "eve\t" in listed and "revoked" in listed and token not in listed
    again = app_cli("participants", "add", "eve", data=server.data_dir)
    assert again.returncode == 2 and "already exists" in again.stderr and "Traceback" not in again.stderr
    bad = app_cli("participants", "add", "../x", data=server.data_dir)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    phases = app_cli("phases", "list", data=server.data_dir).stdout
    assert "final\t3 cases" in phases and "practice\t2 cases" in phases
    (tmp_path / "empty.txt").write_text("# nothing\n")
    empty = app_cli("phases", "create", "x", "--cases", str(tmp_path / "empty.txt"), "--per-day", "1", "--total", "1",
                    data=server.data_dir)
    assert empty.returncode == 2 and "names no case" in empty.stderr


def test_budget_counts_utc_days_and_the_total(tmp_path):
    store = PhaseStore(tmp_path / "db.sqlite3")
    phase = Phase(name="p", cases=("A",), per_day=2, total=3, show_cases=False, rank=Rank.best)
    store.create(phase)
    day = 1_700_000_000.0
    midnight = next_utc_midnight(day)
    store.reserve(phase, "alice", now=midnight - 10)
    store.reserve(phase, "alice", now=midnight - 5)
    with pytest.raises(BudgetSpent) as spent:
        store.reserve(phase, "alice", now=midnight - 1)
    assert spent.value.next_allowed == midnight
    store.budget_check(phase, "bob", now=midnight - 1)  # budgets are per participant
    store.reserve(phase, "alice", now=midnight + 1)  # a new UTC day
    with pytest.raises(BudgetSpent) as spent:
        store.reserve(phase, "alice", now=midnight + 86400 * 5)
    assert spent.value.next_allowed is None and "all 3" in spent.value.reason


def test_participants_make_tokens_required_on_loopback_without_ground_truth(tmp_path):
    from fastapi.testclient import TestClient

    from app.service.api import create_app
    from app.service.participants import ParticipantStore
    from app.service.settings import ServiceSettings

    class IdleEngine:
        def describe(self) -> dict:
            return {"engine": "idle"}

    settings = ServiceSettings(data_dir=tmp_path / "data")
    app = create_app(settings=settings, engine=IdleEngine())
    with TestClient(app) as client:
        assert client.get("/v1/jobs").status_code == 200  # no participants, no token: open on loopback
        token = ParticipantStore(settings.database).add("carol")  # added while the server runs
        assert client.get("/v1/jobs").status_code == 401
        assert client.get("/healthz").status_code == 200
        assert client.get("/v1/jobs", headers={"Authorization": f"Bearer {token}"}).status_code == 200
        assert client.get("/v1/jobs", headers={"Authorization": f"Bearer {token} "}).status_code == 200
        assert client.get("/v1/jobs", headers={"Authorization": f"Basic {token}"}).status_code == 401


def test_a_mask_off_its_cases_grid_is_refused_with_both_grids(setup, tmp_path):
    from petct.imageio import Geometry, image_from_array, write_image_atomic

    server, tokens, truth, _ = setup
    identity = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)
    right = Geometry(size=SHAPE[::-1], spacing=(2.0, 3.0, 4.0), origin=(0.0, 0.0, 0.0), direction=identity)
    wrong_grids = {  # the case's grid (write_mask's) is 6×6×6 at 2.0×3.0×4.0 mm
        "CASE_B: mask is 6×6×4 at 2.0×3.0×4.0 mm, the case is 6×6×6 at 2.0×3.0×4.0 mm":
            Geometry(size=(6, 6, 4), spacing=right.spacing, origin=right.origin, direction=identity),
        "CASE_B: mask is 6×6×6 at 2.04×3.0×4.0 mm, the case is 6×6×6 at 2.0×3.0×4.0 mm":
            Geometry(size=right.size, spacing=(2.04, 3.0, 4.0), origin=right.origin, direction=identity),
        "CASE_B: mask is 6×6×6 at 2.0×3.0×4.0 mm, origin (0.0, 1.5, 0.0) mm, direction (1.0, 0.0, 0.0, 0.0, 1.0, "
        "0.0, 0.0, 0.0, 1.0), the case is 6×6×6 at 2.0×3.0×4.0 mm, origin (0.0, 0.0, 0.0) mm, direction (1.0, "
        "0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)":
            Geometry(size=right.size, spacing=right.spacing, origin=(0.0, 1.5, 0.0), direction=identity),
    }
    with server.client(token=tokens["bob"]) as bob:  # bob's budget in the hidden phase is untouched elsewhere
        for phase in ("practice", "final"):  # told alike whether or not the phase shows cases
            for expected, grid in wrong_grids.items():
                paths = masks(tmp_path / phase, {case: truth[case] for case in ("CASE_A", "SPARSE")})
                paths["CASE_B"] = write_image_atomic(
                    image_from_array(np.zeros(grid.size[::-1], np.uint8), grid), tmp_path / phase / "CASE_B.mha")
                cases = ("CASE_A", "CASE_B") if phase == "practice" else ("CASE_A", "CASE_B", "SPARSE")
                answer = bob.post(f"/v1/phases/{phase}/submissions", files=fields({c: paths[c] for c in cases}))
                assert answer.status_code == 422, answer.text
                error = answer.json()["error"]
                assert (error["reason"], error["field"], error["file"]) == (expected, "CASE_B", "CASE_B.mha")


@pytest.mark.slow
def test_a_phase_naming_cases_without_ground_truth_stays_closed(tmp_path):
    gt = tmp_path / "gt"
    write_mask(np.ones(SHAPE, np.uint8), gt / "CASE_A_SEG.mha")
    data = tmp_path / "data"
    token = app_cli("participants", "add", "alice", data=data).stdout.strip()
    (tmp_path / "cases.txt").write_text("CASE_A\nCASE_GONE\nCASE_LOST\n")
    create = ("phases", "create", "final", "--cases", str(tmp_path / "cases.txt"), "--per-day", "2", "--total", "2")
    refused = app_cli(*create, "--ground-truth", str(gt), data=data)
    assert refused.returncode == 2 and refused.stderr.strip().splitlines() == [
        f"error: file {gt}: 2 of the 3 cases have no ground truth there: CASE_GONE, CASE_LOST"]
    assert app_cli("phases", "list", data=data).stdout == ""  # nothing created
    assert app_cli(*create, data=data).returncode == 0  # without --ground-truth: not checked until the server starts
    with Server(data_dir=data, args=["--ground-truth", str(gt)], env={"PETCT_KIT_TOKEN": ORGANISER},
                token=ORGANISER) as server:
        with server.client(token=token) as alice:
            for _ in range(3):  # more than the budget: a closed phase charges nothing
                answer = alice.post("/v1/phases/final/submissions",
                                    files=fields(masks(tmp_path / "alice", {"CASE_A": np.ones(SHAPE, np.uint8)})))
                assert answer.status_code == 409, answer.text
                assert answer.json()["error"]["reason"] == (
                    "phase final is not open: the server lacks the ground truth of some of its cases; "
                    "the organiser has been told")
            assert alice.get("/v1/phases/final").json()["used_total"] == 0
            page = alice.get("/phases/final")
            assert page.status_code == 200 and 'id="phase-closed"' in page.text and "submission-form" not in page.text
            assert "CASE_GONE" not in page.text.split('id="phase-closed"')[1].split("</p>")[0]
        with server.client() as organiser:
            closed = organiser.get("/phases/final").text.split('id="phase-closed"')[1].split("</p>")[0]
            assert "CASE_GONE, CASE_LOST" in closed
    told = [line for line in server.log.read_text().splitlines() if "stays closed" in line]
    assert [line.split("stays closed: ")[1] for line in told] == [
        f"case CASE_GONE has no ground truth in {gt}", f"case CASE_LOST has no ground truth in {gt}"]
