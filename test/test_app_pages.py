"""The service's web pages over HTTP: access rules, the login cookie, offline /docs, job page, MIP and report."""
from __future__ import annotations

import re

import httpx
import pytest

from app.service.pages import ANONYMOUS, ORGANISER, PARTICIPANT, TOKEN_COOKIE, page_access
from app_helpers import Server, files_of, wait_for_job, write_phantom
from report_helpers import exact, numbers

TOKEN = "page-token-for-tests-0123456789"


@pytest.mark.parametrize("own", [False, True])
@pytest.mark.parametrize("phase", [False, True])
def test_access_rules(own, phase):
    organiser = page_access(ORGANISER, own_job=own, per_case_phase=phase)
    assert organiser.job and organiser.ground_truth and organiser.report
    participant = page_access(PARTICIPANT, own_job=own, per_case_phase=phase)
    assert participant.job == own and participant.ground_truth == own and participant.report == phase
    anonymous = page_access(ANONYMOUS, own_job=own, per_case_phase=phase)
    assert not (anonymous.job or anonymous.ground_truth or anonymous.report)


def test_login_cookie_and_pages_behind_it(tmp_path):
    with Server(data_dir=tmp_path / "data", env={"PETCT_KIT_TOKEN": TOKEN}) as server:
        with server.client() as browser:
            first = browser.get("/", follow_redirects=False)
            assert first.status_code == 303 and first.headers["location"] == "/login"
            assert browser.get("/login").status_code == 200
            wrong = browser.post("/login", data={"token": "not-the-token-0123456789"}, follow_redirects=False)
            assert wrong.status_code == 401 and TOKEN_COOKIE not in wrong.headers.get("set-cookie", "")
            plain = browser.post("/login", data={"token": TOKEN}, follow_redirects=False)
            cookie = plain.headers["set-cookie"]
            assert plain.status_code == 303 and "HttpOnly" in cookie and "SameSite=strict" in cookie
            assert "Secure" not in cookie
            proxied = browser.post("/login", data={"token": TOKEN}, headers={"X-Forwarded-Proto": "https"},
                                   follow_redirects=False)
            assert "Secure" in proxied.headers["set-cookie"]
        with httpx.Client(base_url=server.url, cookies={TOKEN_COOKIE: TOKEN}) as logged_in:
            page = logged_in.get("/")
            assert page.status_code == 200 and 'for="pet"' in page.text and "baseline" in page.text
            assert logged_in.get("/v1/jobs").status_code == 200
        with httpx.Client(base_url=server.url, cookies={TOKEN_COOKIE: "wrong-cookie-0123456789"}) as forged:
            assert forged.get("/v1/jobs").status_code == 401


def test_docs_load_their_assets_from_the_service(tmp_path):
    with Server(data_dir=tmp_path / "data") as server, server.client() as client:
        docs = client.get("/docs").text
        sources = re.findall(r'(?:src|href)="([^"]+)"', docs)
        assert sources and all(s.startswith("/docs-assets/") for s in sources), sources
        assert "https://" not in docs and "http://" not in docs
        for source in sources:
            assert client.get(source).status_code == 200, source
        assert client.get("/redoc").status_code == 404  # ReDoc would load from a CDN


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
                 if c.get("data-study") == job["id"] and "data-metric" in c}
        assert cells["dice"] == job["metrics"]["dice"]
        assert client.get("/report").text == report.text  # cached
        assert client.get("/jobs/not-a-job").status_code == 404
