"""The service's web pages over HTTP: access rules, the login cookie, offline /docs, job page, MIP and report."""
from __future__ import annotations

import re
import subprocess
import sys
from contextlib import closing
from pathlib import Path

import httpx
import pytest

from app.service.access import JobAccess, job_access
from app.service.deps import Caller, Role
from app.service.jobs import Job, JobState
from app.service.sessions import SESSION_COOKIE
from app_helpers import REPO, Server, files_of, wait_for_job, write_phantom
from report_helpers import exact, numbers

TOKEN = "page-token-for-tests-0123456789"


def _job(owner: str | None) -> Job:
    return Job(id="0" * 32, state=JobState.succeeded, created_at=0.0, files={}, owner=owner)


@pytest.mark.parametrize("owner", [None, "alice", "bob"])
def test_access_rules(owner):
    alice = Caller(Role.participant, participant="alice")
    for everyone in (Caller(Role.organiser), Caller(Role.anonymous)):  # anonymous: only on an open loopback server
        assert job_access(everyone, job=_job(owner)) == JobAccess(job=True, ground_truth=True, report=True)
        assert job_access(everyone).report
    own = owner == "alice"
    assert job_access(alice, job=_job(owner)) == JobAccess(job=own, ground_truth=own, report=False)
    assert not job_access(alice).report and not job_access(alice).job


def test_login_cookie_and_pages_behind_it(tmp_path):
    with Server(data_dir=tmp_path / "data", env={"PETCT_KIT_TOKEN": TOKEN}) as server:
        with server.client() as browser:
            first = browser.get("/", follow_redirects=False)
            assert first.status_code == 303 and first.headers["location"] == "/login"
            assert browser.get("/login").status_code == 200
            wrong = browser.post("/login", data={"token": "not-the-token-0123456789"}, follow_redirects=False)
            assert wrong.status_code == 401 and SESSION_COOKIE not in wrong.headers.get("set-cookie", "")
            plain = browser.post("/login", data={"token": TOKEN}, follow_redirects=False)
            cookie = plain.headers["set-cookie"]
            assert plain.status_code == 303 and "HttpOnly" in cookie and "SameSite=strict" in cookie
            assert "Secure" not in cookie
            proxied = browser.post("/login", data={"token": TOKEN}, headers={"X-Forwarded-Proto": "https"},
                                   follow_redirects=False)
            assert "Secure" in proxied.headers["set-cookie"]
        session = plain.cookies[SESSION_COOKIE]
        assert TOKEN not in cookie and session != TOKEN  # the cookie holds a session id, not the token
        with httpx.Client(base_url=server.url) as nobody:
            assert "Log out" not in nobody.get("/login").text  # not logged in: nothing to log out of
            # /docs: a browser is sent to the login form, an API client keeps the JSON 401
            docs = nobody.get("/docs", headers={"Accept": "text/html,*/*"}, follow_redirects=False)
            assert docs.status_code == 303 and docs.headers["location"] == "/login"
            api = nobody.get("/docs", headers={"Accept": "application/json"}, follow_redirects=False)
            assert api.status_code == 401 and api.json()["error"]["status"] == 401
        with httpx.Client(base_url=server.url, cookies={SESSION_COOKIE: session}) as logged_in:
            page = logged_in.get("/")
            assert page.status_code == 200 and 'for="pet"' in page.text and "baseline" in page.text
            assert "Logged in as the organiser" in page.text
            assert "Log out" in page.text and "Log out" in logged_in.get("/login").text
            assert logged_in.get("/v1/jobs").status_code == 200
        for forged_value in ("wrong-cookie-0123456789", TOKEN):  # a bearer token is no session id
            with httpx.Client(base_url=server.url, cookies={SESSION_COOKIE: forged_value}) as forged:
                assert forged.get("/v1/jobs").status_code == 401


def test_docs_load_their_assets_from_the_service(tmp_path):
    with Server(data_dir=tmp_path / "data") as server, server.client() as client:
        docs = client.get("/docs").text
        sources = re.findall(r'(?:src|href)="([^"]+)"', docs)
        assert sources and all(s.startswith(("/docs-assets/", "/static/")) for s in sources), sources
        assert "https://" not in docs and "http://" not in docs
        for source in sources:
            assert client.get(source).status_code == 200, source
        assert client.get("/redoc").status_code == 404  # ReDoc would load from a CDN


@pytest.mark.slow
def test_job_page_report_and_mip_show_the_apis_numbers(tmp_path):
    study = write_phantom(tmp_path / "study", 5, n_lesions=3)
    with Server(data_dir=tmp_path / "data") as server, server.client() as client:
        job = client.post("/v1/studies", files=files_of(study)).json()
        job = wait_for_job(client, job["id"])
        assert job["state"] == "succeeded" and job["metrics"]
        page = client.get(f"/jobs/{job['id']}").text
        shown = {c["data-metric"]: exact(v) for c, v, _ in numbers(page).found if "data-metric" in c}
        for metric in ("dice", "false_positive_volume", "false_negative_volume", "gt_volume", "pred_volume"):
            assert shown[metric] == job["metrics"][metric], metric
        assert 'http-equiv="refresh"' not in page  # finished: no more reloading
        mip = client.get(f"/jobs/{job['id']}/mip.png")
        assert mip.status_code == 200 and mip.content[:4] == b"\x89PNG"
        report = client.get("/report")
        assert report.status_code == 200
        cells = {c["data-metric"]: exact(v) for c, v, _ in numbers(report.text).found
                 if c.get("data-study") == "SUV" and "data-metric" in c}  # the uploaded PET's name
        assert cells["dice"] == job["metrics"]["dice"]
        assert client.get("/report").text == report.text  # cached
        assert client.get("/jobs/not-a-job").status_code == 404
        # anonymous, on a loopback server that needs no token: everything, and no login form
        assert job["id"] in client.get("/").text and 'href="/report"' in client.get("/").text
        assert "without a token" in client.get("/login").text
        assert client.post("/login", data={"token": "anything"}, follow_redirects=False).status_code == 303


def _add_participant(name: str, data: Path) -> str:
    added = subprocess.run([sys.executable, "-m", "app", "participants", "add", name, "--data-dir", str(data)],
                           cwd=REPO, text=True, capture_output=True, timeout=60)
    assert added.returncode == 0, added.stderr
    return added.stdout.strip()


def _logged_in(server: Server, token: str) -> httpx.Client:
    """A browser that logged in through the form: it sends the cookie, never the Authorization header."""
    browser = httpx.Client(base_url=server.url, timeout=120)
    login = browser.post("/login", data={"token": token}, follow_redirects=False)
    assert login.status_code == 303 and SESSION_COOKIE in login.headers["set-cookie"], login.text
    return browser


@pytest.mark.slow
def test_pages_per_caller_organiser_and_participants(tmp_path):
    data = tmp_path / "data"
    tokens = {name: _add_participant(name, data) for name in ("alice", "bob")}
    study = write_phantom(tmp_path / "study", 7, n_lesions=2)
    with Server(data_dir=data, env={"PETCT_KIT_TOKEN": TOKEN}) as server:
        with server.client(tokens["alice"]) as api:
            job = wait_for_job(api, api.post("/v1/studies", files=files_of(study)).json()["id"])
        assert job["state"] == "succeeded" and job["metrics"]
        organiser, alice, bob = (_logged_in(server, t) for t in (TOKEN, tokens["alice"], tokens["bob"]))
        with closing(organiser), closing(alice), closing(bob), httpx.Client(base_url=server.url) as nobody:
            for owner in (organiser, alice):  # the organiser sees everyone's jobs; alice her own, with its metrics
                assert job["id"] in owner.get("/").text
                page = owner.get(f"/jobs/{job['id']}")
                shown = {c["data-metric"]: exact(v) for c, v, _ in numbers(page.text).found if "data-metric" in c}
                assert page.status_code == 200 and shown["dice"] == job["metrics"]["dice"]
                assert owner.get(f"/jobs/{job['id']}/mip.png").content[:4] == b"\x89PNG"
            assert organiser.get("/report").status_code == 200
            assert 'href="/report"' in organiser.get("/").text and 'href="/report"' not in alice.get("/").text
            assert alice.get("/report").status_code == 404
            # bob: not alice's job anywhere, as if it did not exist; no report
            assert job["id"] not in bob.get("/").text
            for path in (f"/jobs/{job['id']}", f"/jobs/{job['id']}/mip.png", "/report"):
                assert bob.get(path).status_code == 404, path
            assert bob.get(f"/v1/jobs/{job['id']}").status_code == 404  # the cookie is a token for the API too
            # nobody: pages go to the login form, the rest is 401
            for path in ("/", f"/jobs/{job['id']}", "/report"):
                answer = nobody.get(path, follow_redirects=False)
                assert answer.status_code == 303 and answer.headers["location"] == "/login", path
            assert nobody.get(f"/jobs/{job['id']}/mip.png").status_code == 401
            assert nobody.post("/login", data={"token": "not-a-token-0123456789"}).status_code == 401
            assert bob.post("/logout", follow_redirects=False).status_code == 303
            assert bob.get("/", follow_redirects=False).status_code == 303



def _cell_values(page: str, **context: str) -> list[float | None]:
    """The exact numbers shown in cells whose data-* context includes `context`."""
    return [exact(v) for c, v, _ in numbers(page).found if all(c.get(k) == want for k, want in context.items())]


@pytest.mark.slow
def test_phase_pages_follow_the_phases_rules(tmp_path):
    import numpy as np

    from app_helpers import write_mask

    rng = np.random.default_rng(5)
    gt = {case: (rng.uniform(size=(6, 6, 6)) < 0.3).astype(np.uint8) for case in ("CASE_A", "CASE_B")}
    for case, array in gt.items():
        write_mask(array, tmp_path / "gt" / f"{case}_SEG.mha")
    data = tmp_path / "data"
    tokens = {name: _add_participant(name, data) for name in ("alice", "bob")}
    (tmp_path / "cases.txt").write_text("CASE_A\nCASE_B\n")
    for name, extra in (("hidden", []), ("open", ["--show-cases"])):
        created = subprocess.run([sys.executable, "-m", "app", "phases", "create", name, "--cases",
                                  str(tmp_path / "cases.txt"), "--per-day", "5", "--total", "5", *extra,
                                  "--data-dir", str(data)], cwd=REPO, text=True, capture_output=True, timeout=60)
        assert created.returncode == 0, created.stderr
    with Server(data_dir=data, args=["--ground-truth", str(tmp_path / "gt")], env={"PETCT_KIT_TOKEN": TOKEN}) as server:
        answers = {}
        for who in ("alice", "bob"):
            predictions = {case: (rng.uniform(size=(6, 6, 6)) < 0.3).astype(np.uint8) for case in gt}
            files = {case: (f"{case}.mha", write_mask(a, tmp_path / who / f"{case}.mha").read_bytes())
                     for case, a in predictions.items()}
            with server.client(tokens[who]) as api:
                for phase in ("hidden", "open"):
                    answer = api.post(f"/v1/phases/{phase}/submissions", files=files)
                    assert answer.status_code == 201, answer.text
                    answers[who, phase] = answer.json()
        organiser, alice = _logged_in(server, TOKEN), _logged_in(server, tokens["alice"])
        with closing(organiser), closing(alice):
            assert 'href="/phases/hidden"' in alice.get("/").text
            hidden = alice.get("/phases/hidden").text
            mine, bobs = answers["alice", "hidden"], answers["bob", "hidden"]
            assert mine["id"] in hidden and bobs["id"] not in hidden and mine["case"] is None
            # as the API answered them: the ranked metrics' means, rounded; no single case's min or max
            assert _cell_values(hidden, **{"data-metric": "dice", "data-stat": "mean"}) == \
                [mine["aggregates"]["dice"]["mean"]]
            assert not _cell_values(hidden, **{"data-stat": "max"}) and not _cell_values(hidden, **{"data-case": "CASE_A"})
            shown = alice.get("/phases/open").text
            mine = answers["alice", "open"]
            assert _cell_values(shown, **{"data-case": "CASE_A", "data-metric": "dice"}) == \
                [next(r for r in mine["case"].values() if r["study"] == "CASE_A")["dice"]]
            assert _cell_values(shown, **{"data-metric": "dice", "data-stat": "max"}) == \
                [mine["aggregates"]["dice"]["max"]]
            everyone = organiser.get("/phases/hidden").text  # the organiser: every submission, in full
            assert bobs["id"] in everyone and _cell_values(everyone, **{"data-stat": "max", "data-metric": "dice"})
            assert alice.get("/phases/nope").status_code == 404
            # the phase's report: the organiser's alone, a section per participant from the stored metrics
            report = organiser.get("/report/phases/open")
            assert report.status_code == 200 and 'href="/phases/open"' in report.text and 'href="/"' in report.text
            assert "alice (" in report.text and "bob (" in report.text
            assert 'href="/report/phases/open"' in organiser.get("/phases/open").text
            assert 'href="/report/phases/open"' not in alice.get("/phases/open").text
            assert 'href="/report/phases/hidden"' in organiser.get("/report").text  # no jobs: the phases' reports
            assert alice.get("/report/phases/open").status_code == 404
            assert organiser.get("/report/phases/nope").status_code == 404
        with httpx.Client(base_url=server.url) as nobody:
            assert nobody.get("/phases/hidden", follow_redirects=False).headers["location"] == "/login"
            assert nobody.get("/report/phases/open", follow_redirects=False).headers["location"] == "/login"


@pytest.mark.parametrize("name, words", [
    ("queued_s", "queued"), ("inference_s", "inference, in all"), ("scoring_s", "scoring against the label"),
    ("engine_read inputs", "reading inputs"), ("engine_predict", "predicting"),
    ("engine_predict/organ_rules", "predicting: organ rules"), ("engine_write mask", "writing the mask"),
    ("engine_network", "network"), ("engine_predict/a/b_c", "predicting: a: b c")])
def test_timings_are_named_in_words(name, words):
    from app.service.pages import timing_label

    assert timing_label(name) == words


@pytest.mark.slow
def test_job_pages_and_scores_name_the_study_by_its_file(tmp_path):
    study = write_phantom(tmp_path / "study", 5, n_lesions=2)
    named = {"pet": ("PETCT_0af7ffe12a_SUV.mha", study["pet"].read_bytes()),
             "ct": ("CTres.mha", study["ct"].read_bytes()), "label": ("SEG.mha", study["label"].read_bytes())}
    with Server(data_dir=tmp_path / "data") as server, server.client() as client:
        job = wait_for_job(client, client.post("/v1/studies", files=named).json()["id"])
        page = client.get(f"/jobs/{job['id']}").text
        assert "<h1>PETCT_0af7ffe12a_SUV</h1>" in page and "<title>PETCT_0af7ffe12a_SUV" in page
        timings = re.findall(r'<th scope="row">([^<]+)</th><td><span class="num"', page)
        assert timings[:3] == ["queued", "inference, in all", "reading inputs"] and "scoring against the label" in timings
        assert not [t for t in timings if "_s" in t or "engine_" in t]
        index = client.get("/").text
        assert f'<a href="/jobs/{job["id"]}">PETCT_0af7ffe12a_SUV</a>' in index
        twice = wait_for_job(client, client.post("/v1/studies", files=named).json()["id"])  # the same file again
        report = client.get("/report").text
        for one in (job, twice):  # named by the file, told apart by their job ids
            assert f'data-study="PETCT_0af7ffe12a_SUV (job {one["id"][:8]})"' in report
        assert f'data-study="{job["id"]}"' not in report
        record = client.post("/v1/score", files={"prediction": ("PETCT_0af7ffe12a.mha", study["label"].read_bytes()),
                                                 "ground_truth": ("SEG.mha", study["label"].read_bytes())}).json()
        assert record["study"] == "PETCT_0af7ffe12a"
        chosen = client.post("/v1/score?study=mine", files={"prediction": ("p.mha", study["label"].read_bytes()),
                                                             "ground_truth": ("g.mha", study["label"].read_bytes())})
        assert chosen.json()["study"] == "mine"


@pytest.mark.slow
def test_kept_submissions_are_shown_to_the_organiser_on_the_test_sets_images(tmp_path):
    import numpy as np

    from petct.imageio import read_array
    from petct.phantom import make_study
    from test_app_viewer import _reference_labels

    images, gt, data = tmp_path / "images", tmp_path / "gt", tmp_path / "data"
    for seed, case in ((3, "CASE_A"), (4, "CASE_B")):
        folder = make_study(seed, size=(24, 24, 16), n_lesions=2, name=case).write(images)
        (gt / case).mkdir(parents=True)
        (folder / "SEG.mha").rename(gt / case / "SEG.mha")
    tokens = {name: _add_participant(name, data) for name in ("alice", "bob")}
    (tmp_path / "cases.txt").write_text("CASE_A\nCASE_B\n")
    created = subprocess.run([sys.executable, "-m", "app", "phases", "create", "p", "--cases", str(tmp_path / "cases.txt"),
                              "--per-day", "5", "--total", "5", "--ground-truth", str(gt), "--data-dir", str(data)],
                             cwd=REPO, text=True, capture_output=True, timeout=60)
    assert created.returncode == 0, created.stderr
    predictions = {}
    for case in ("CASE_A", "CASE_B"):
        truth, _ = read_array(gt / case / "SEG.mha")
        predictions[case] = np.roll(truth, 2, axis=2)  # overlapping, missing and extra voxels
        write_mask_like(predictions[case], gt / case / "SEG.mha", tmp_path / "alice" / f"{case}.mha")
    args = ["--ground-truth", str(gt), "--images", str(images), "--keep-submissions"]
    with Server(data_dir=data, args=args, env={"PETCT_KIT_TOKEN": TOKEN}) as server:
        with server.client(tokens["alice"]) as alice:
            files = {case: (f"{case}.mha", (tmp_path / "alice" / f"{case}.mha").read_bytes()) for case in predictions}
            submitted = alice.post("/v1/phases/p/submissions", files=files)
            assert submitted.status_code == 201, submitted.text
        submission = submitted.json()["id"]
        kept = data / "submissions" / submission
        assert sorted(p.name for p in kept.iterdir()) == ["0.mha", "1.mha", "cases.json"]
        page = f"/phases/p/submissions/{submission}/cases/CASE_B"
        with server.client(TOKEN) as organiser:
            assert f'href="{page}"' in organiser.get("/phases/p").text
            shown = organiser.get(page)
            assert shown.status_code == 200 and 'id="viewer"' in shown.text and "alice" in shown.text
            components = organiser.get(f"{page}/viewer/components.nii.gz")
            assert components.status_code == 200
            (tmp_path / "components.nii.gz").write_bytes(components.content)
            truth, _ = read_array(gt / "CASE_B" / "SEG.mha")
            np.testing.assert_array_equal(read_array(tmp_path / "components.nii.gz")[0],
                                          _reference_labels(truth, predictions["CASE_B"]))
            suv = organiser.get(f"{page}/viewer/suv.nii.gz")
            (tmp_path / "suv.nii.gz").write_bytes(suv.content)
            np.testing.assert_array_equal(read_array(tmp_path / "suv.nii.gz")[0],
                                          read_array(images / "CASE_B" / "SUV.mha")[0])
            assert organiser.get(f"/phases/p/submissions/{submission}/cases/CASE_C").status_code == 404
        for who in ("alice", "bob"):  # participants: not even their own submission's case pages
            with server.client(tokens[who]) as participant:
                assert participant.get(page).status_code == 404
                assert participant.get(f"{page}/viewer/ct.nii.gz").status_code == 404
                assert f'href="{page}"' not in participant.get("/phases/p").text
        with httpx.Client(base_url=server.url) as nobody:
            assert nobody.get(f"{page}/viewer/ct.nii.gz").status_code == 401


def write_mask_like(array, reference, path):
    """`array` as a mask on the grid of the image at `reference`."""
    from petct.imageio import image_from_array, read_geometry, write_image_atomic

    return write_image_atomic(image_from_array(array.astype("uint8"), read_geometry(reference)), path)
