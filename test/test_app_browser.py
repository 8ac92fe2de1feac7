"""The web pages in a real browser: Debian's headless Chromium driven by selenium through the system chromedriver.

The browser resolves no name but 127.0.0.1, so anything a page tried to fetch from the internet would fail
(and show as a broken image or a console error). Without chromium and chromium-driver the tests are skipped
with a reason; CI sets PETCT_REQUIRE_BROWSER=1 so that there they fail instead.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time

import httpx
import pytest

from app_helpers import REPO, Server, files_of, wait_for_job, write_phantom
from report_helpers import exact, numbers

TOKEN = "browser-token-for-tests-0123456789"
CHROMEDRIVER = "/usr/bin/chromedriver"
WAIT_S = 120.0


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture
def browser(tmp_path):
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is in requirements-dev.txt")
    missing = [name for name, ok in (("chromium", _chromium()), ("chromium-driver", os.path.exists(CHROMEDRIVER)))
               if not ok]
    if missing:
        reason = f"{' and '.join(missing)} not installed (apt-get install chromium chromium-driver)"
        if os.environ.get("PETCT_REQUIRE_BROWSER"):
            pytest.fail(reason)
        pytest.skip(reason)
    options = webdriver.ChromeOptions()
    options.binary_location = _chromium()
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage",
                 f"--user-data-dir={tmp_path / 'chromium-profile'}", "--window-size=1280,1000",
                 "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
                 "--enable-unsafe-swiftshader"):  # WebGL (the slice viewer) on the software renderer
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    # An explicit driver path: Selenium Manager never runs, nothing is downloaded.
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=CHROMEDRIVER))
    driver.set_page_load_timeout(WAIT_S)
    try:
        yield driver
    finally:
        driver.quit()


def _wait(condition, what: str, timeout_s: float = WAIT_S):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def _broken_images(driver) -> list[str]:
    return driver.execute_script(
        "return Array.from(document.images).filter(i => !i.complete || i.naturalWidth === 0).map(i => i.src)")


def _console_errors(driver) -> list[str]:
    return [entry["message"] for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]


def _fits_width(driver) -> bool:
    return driver.execute_script("return document.documentElement.scrollWidth <= window.innerWidth + 1")


@pytest.mark.slow
def test_upload_through_the_form_then_job_page_and_report(browser, tmp_path):
    from selenium.webdriver.common.by import By

    study = write_phantom(tmp_path / "study", 7, n_lesions=3)
    with Server(data_dir=tmp_path / "data", env={"PETCT_KIT_TOKEN": TOKEN}) as server:
        browser.get(f"{server.url}/")
        assert browser.current_url.endswith("/login")
        browser.find_element(By.ID, "token").send_keys(TOKEN)
        browser.find_element(By.CSS_SELECTOR, "#login-form button[type=submit]").click()
        _wait(lambda: browser.find_elements(By.ID, "study-form"), "the service page after logging in")
        browser.save_screenshot(str(tmp_path / "index-1280.png"))
        # scoring from the page: the answer rounded as the pages round, named by the prediction's file
        browser.find_element(By.ID, "prediction").send_keys(str(study["label"]))
        browser.find_element(By.ID, "ground_truth").send_keys(str(study["label"]))
        browser.find_element(By.CSS_SELECTOR, "#score-form button[type=submit]").click()
        _wait(lambda: "Dice" in browser.find_element(By.ID, "score-result").text, "the score")
        assert browser.find_element(By.ID, "score-result").text == "SEG: Dice 1.000, FPV 0.00 ml, FNV 0.00 ml"
        browser.find_element(By.ID, "prediction").send_keys(str(study["pet"].parent / "CTres.mha"))
        browser.find_element(By.CSS_SELECTOR, "#score-form button[type=submit]").click()
        _wait(lambda: "Refused" in browser.find_element(By.ID, "score-result").text, "the refusal")
        assert "(file CTres.mha)" in browser.find_element(By.ID, "score-result").text
        assert all("status of 422" in e for e in _console_errors(browser))  # the refusal itself, nothing else
        for field in ("pet", "ct", "label"):
            browser.find_element(By.ID, field).send_keys(str(study[field]))
        browser.find_element(By.CSS_SELECTOR, "#study-form button[type=submit]").click()
        _wait(lambda: "/jobs/" in browser.current_url, "the job page")
        job_id = browser.current_url.rstrip("/").rsplit("/", 1)[1]
        _wait(lambda: browser.find_elements(By.CSS_SELECTOR, "#job-state[data-state=succeeded]")
              and browser.find_elements(By.ID, "mip")
              and browser.execute_script("const i = document.getElementById('mip'); return i.complete && i.naturalWidth > 0"),
              "the finished job with its MIP")
        assert browser.find_element(By.ID, "mip").get_attribute("alt")
        browser.save_screenshot(str(tmp_path / "job-1280.png"))
        with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {TOKEN}"}) as api:
            metrics = api.get(f"/v1/jobs/{job_id}").json()["metrics"]
        shown = {c["data-metric"]: exact(v) for c, v, _ in numbers(browser.page_source).found if "data-metric" in c}
        for metric in ("dice", "false_positive_volume", "false_negative_volume", "gt_volume", "pred_volume",
                       "gt_lesions", "detected_lesions", "fp_components"):
            assert shown[metric] == metrics[metric], metric
        assert not _broken_images(browser) and not _console_errors(browser)

        browser.get(f"{server.url}/report")
        _wait(lambda: browser.execute_script("return document.readyState") == "complete", "the report")
        assert browser.find_elements(By.CSS_SELECTOR, 'tr[data-study="SUV"]')  # named by the uploaded PET's file
        assert browser.find_elements(By.CSS_SELECTOR, 'a[href="/"]')  # back to the service
        assert len(browser.find_elements(By.TAG_NAME, "img")) >= 2  # Figure 4 and the job's MIP
        assert not _broken_images(browser) and not _console_errors(browser)
        browser.save_screenshot(str(tmp_path / "report-1280.png"))

        browser.set_window_size(390, 844)  # a phone
        for path in ("/", f"/jobs/{job_id}"):
            browser.get(f"{server.url}{path}")
            assert _fits_width(browser), path
        browser.save_screenshot(str(tmp_path / "job-phone.png"))


@pytest.mark.slow
def test_docs_render_their_operations_offline(browser, tmp_path):
    from selenium.webdriver.common.by import By

    with Server(data_dir=tmp_path / "data") as server:
        paths = httpx.get(f"{server.url}/openapi.json").json()["paths"]
        operations = sum(len(methods) for methods in paths.values())
        browser.get(f"{server.url}/docs")
        _wait(lambda: len(browser.find_elements(By.CSS_SELECTOR, ".opblock")) >= operations, "Swagger UI's operations")
        browser.save_screenshot(str(tmp_path / "docs.png"))
        assert not _console_errors(browser)


def _log_in(driver, url: str, token: str) -> None:
    from selenium.webdriver.common.by import By

    driver.get(f"{url}/login")
    driver.find_element(By.ID, "token").send_keys(token)
    driver.find_element(By.CSS_SELECTOR, "#login-form button[type=submit]").click()
    _wait(lambda: not driver.current_url.endswith("/login"), "the page after logging in")


def _add_participant(name: str, data) -> str:
    added = subprocess.run([sys.executable, "-m", "app", "participants", "add", name, "--data-dir", str(data)],
                           cwd=REPO, text=True, capture_output=True, timeout=60)
    assert added.returncode == 0, added.stderr
    return added.stdout.strip()


def _status_of(driver, path: str) -> int:
    """The HTTP status the page's own fetch() gets for `path` (with the browser's login cookie)."""
    return driver.execute_async_script("fetch(arguments[0]).then(r => arguments[1](r.status))", path)


@pytest.mark.slow
def test_slice_viewer_shows_the_owners_study_to_the_owner_alone(browser, tmp_path):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    data = tmp_path / "data"
    tokens = {name: _add_participant(name, data) for name in ("alice", "bob")}
    study = write_phantom(tmp_path / "study", 11, n_lesions=3)
    with Server(data_dir=data, env={"PETCT_KIT_TOKEN": TOKEN}) as server:
        with server.client(tokens["alice"]) as api:
            job = wait_for_job(api, api.post("/v1/studies", files=files_of(study)).json()["id"])
        assert job["state"] == "succeeded"
        volumes = [f"/jobs/{job['id']}/viewer/{name}.nii.gz" for name in ("ct", "suv", "components")]

        _log_in(browser, server.url, tokens["alice"])
        browser.get(f"{server.url}/jobs/{job['id']}")
        _wait(lambda: browser.find_element(By.ID, "viewer").get_attribute("data-ready"), "the viewer")
        assert browser.find_element(By.ID, "viewer").get_attribute("data-ready") == "true", \
            browser.find_element(By.ID, "viewer-status").text
        canvas = browser.find_element(By.ID, "viewer-canvas")
        assert canvas.size["width"] > 300 and canvas.size["height"] > 200
        readout = browser.find_element(By.ID, "viewer-values").text
        assert re.fullmatch(r"SUV -?\d+\.\d\d · CT -?\d+ HU( · .+)?", readout), readout
        before = canvas.screenshot_as_png
        browser.save_screenshot(str(tmp_path / "viewer-1280.png"))
        for _ in range(6):
            browser.find_element(By.ID, "viewer-next").click()
        _wait(lambda: canvas.screenshot_as_png != before, "the canvas to change with the slice", timeout_s=20)
        # the mouse over the image shows the values under it
        ActionChains(browser).move_to_element_with_offset(canvas, -canvas.size["width"] // 3, 0).perform()
        _wait(lambda: browser.find_element(By.ID, "viewer-values").text.startswith("SUV "), "values under the mouse")
        assert not _console_errors(browser) and not _broken_images(browser)
        assert all(_status_of(browser, path) == 200 for path in volumes)
        assert _status_of(browser, f"/jobs/{job['id']}/viewer/prediction.nii.gz") == 404  # she sees the components
        browser.set_window_size(390, 844)  # a phone
        browser.get(f"{server.url}/jobs/{job['id']}")
        _wait(lambda: browser.find_element(By.ID, "viewer").get_attribute("data-ready"), "the viewer on a phone")
        assert _fits_width(browser)
        browser.find_element(By.ID, "viewer").screenshot(str(tmp_path / "viewer-phone.png"))

        browser.delete_all_cookies()
        browser.set_window_size(1280, 1000)
        _log_in(browser, server.url, tokens["bob"])
        browser.get(f"{server.url}/jobs/{job['id']}")
        assert not browser.find_elements(By.ID, "viewer")
        assert [_status_of(browser, path) for path in volumes] == [404, 404, 404]
        browser.delete_all_cookies()
        browser.get(f"{server.url}/healthz")
        assert [_status_of(browser, path) for path in volumes] == [401, 401, 401]


def _one_line(driver, selector: str) -> list[str]:
    """Texts of the elements matching `selector` that wrap onto more than one line."""
    return driver.execute_script(
        "return Array.from(document.querySelectorAll(arguments[0]))"
        ".filter(e => e.getClientRects().length > 1 || e.getBoundingClientRect().height > 1.6 * "
        "parseFloat(getComputedStyle(e).lineHeight || '20')).map(e => e.textContent)", selector)


@pytest.mark.slow
def test_phase_page_budget_upload_submissions_and_leaderboard(browser, tmp_path):
    import zipfile

    import numpy as np
    from selenium.webdriver.common.by import By

    from app_helpers import write_mask

    rng = np.random.default_rng(8)
    cases = ("CASE_A", "CASE_B")
    truth = {case: (rng.uniform(size=(6, 6, 6)) < 0.3).astype(np.uint8) for case in cases}
    for case, array in truth.items():
        write_mask(array, tmp_path / "gt" / f"{case}_SEG.mha")
    data = tmp_path / "data"
    tokens = {name: _add_participant(name, data) for name in ("alice", "bob")}
    (tmp_path / "cases.txt").write_text("\n".join(cases) + "\n")
    created = subprocess.run([sys.executable, "-m", "app", "phases", "create", "open", "--cases",
                              str(tmp_path / "cases.txt"), "--per-day", "3", "--total", "5", "--show-cases",
                              "--data-dir", str(data)], cwd=REPO, text=True, capture_output=True, timeout=60)
    assert created.returncode == 0, created.stderr
    predictions = {case: np.where(rng.uniform(size=(6, 6, 6)) < 0.7, a, 0) for case, a in truth.items()}
    archive = tmp_path / "alice.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for case, array in predictions.items():
            zf.write(write_mask(array, tmp_path / "alice" / f"{case}.mha"), f"{case}.mha")
    off_grid = write_mask(predictions["CASE_B"][:4], tmp_path / "off-grid" / "CASE_B.mha")
    with Server(data_dir=data, args=["--ground-truth", str(tmp_path / "gt")], env={"PETCT_KIT_TOKEN": TOKEN}) as server:
        with server.client(tokens["bob"]) as bob:
            files = {case: (f"{case}.mha", write_mask(truth[case], tmp_path / "bob" / f"{case}.mha").read_bytes())
                     for case in cases}
            assert bob.post("/v1/phases/open/submissions", files=files).status_code == 201

        _log_in(browser, server.url, tokens["alice"])
        browser.get(f"{server.url}/phases/open")
        assert browser.find_element(By.ID, "used-today").text == "0 of 3 used"
        assert browser.find_element(By.ID, "next-allowed").text == "allowed now"
        # one file per case, one of them off its case's grid: refused, with both grids on the page
        browser.find_element(By.TAG_NAME, "summary").click()
        browser.find_element(By.CSS_SELECTOR, "input[name=CASE_A]").send_keys(str(tmp_path / "alice" / "CASE_A.mha"))
        browser.find_element(By.CSS_SELECTOR, "input[name=CASE_B]").send_keys(str(off_grid))
        browser.find_element(By.CSS_SELECTOR, "#submission-form button[type=submit]").click()
        _wait(lambda: browser.find_element(By.ID, "submission-result").text.startswith("Refused"), "the refusal")
        assert browser.find_element(By.ID, "submission-result").text == (
            "Refused (422): CASE_B: mask is 6×6×4 at 2.0×3.0×4.0 mm, the case is 6×6×6 at 2.0×3.0×4.0 mm "
            "(file CASE_B.mha)")
        browser.save_screenshot(str(tmp_path / "phase-refused.png"))
        assert all("status of 422" in e for e in _console_errors(browser))  # the refusal itself, nothing else
        # the archive: scored, the page reloads with the submission and the leaderboard
        browser.get(f"{server.url}/phases/open")
        browser.find_element(By.ID, "archive").send_keys(str(archive))
        browser.find_element(By.CSS_SELECTOR, "#submission-form button[type=submit]").click()
        _wait(lambda: browser.find_elements(By.CSS_SELECTOR, 'tr[data-participant="alice"]'), "alice on the board")
        assert browser.find_element(By.ID, "used-today").text == "2 of 3 used"  # the refused one counted too
        assert len(browser.find_elements(By.CSS_SELECTOR, "article[data-submission]")) == 2
        headers = [th.text for th in browser.find_elements(By.CSS_SELECTOR, "#leaderboard thead th")]
        assert headers == ["Rank", "Participant", "Dice", "Dice rank", "FPV (ml)", "FPV rank", "FNV (ml)", "FNV rank",
                           "Weighted rank", "Submitted"]
        rows = [[td.text for td in tr.find_elements(By.CSS_SELECTOR, "td, th")]
                for tr in browser.find_elements(By.CSS_SELECTOR, "#leaderboard tbody tr")]
        assert [row[1] for row in rows] == ["bob", "alice"]  # bob sent the truth itself
        assert rows[0][2:4] == ["1.000", "1"] and rows[0][8] == "1.00"
        assert all(any(row[i] not in ("", "–") for row in rows) for i in range(len(headers)))  # no empty column
        counts = [td.text for td in browser.find_elements(By.CSS_SELECTOR, 'td[data-stat="count"]')]
        assert counts and all(c.isdigit() for c in counts)
        assert not _console_errors(browser)
        browser.save_screenshot(str(tmp_path / "phase-1280.png"))
        browser.set_window_size(390, 844)  # a phone
        browser.get(f"{server.url}/phases/open")
        assert _fits_width(browser)
        assert not _one_line(browser, ".num") and not _one_line(browser, ".date")
        assert not _one_line(browser, "#leaderboard tbody th")  # participants' names whole
        browser.find_element(By.ID, "leaderboard").screenshot(str(tmp_path / "phase-leaderboard-phone.png"))
        browser.save_screenshot(str(tmp_path / "phase-phone.png"))


@pytest.mark.slow
def test_organiser_views_a_kept_submissions_case(browser, tmp_path):
    import numpy as np
    from selenium.webdriver.common.by import By

    from petct.imageio import image_from_array, read_array, read_geometry, write_image_atomic
    from petct.phantom import make_study

    images, gt, data = tmp_path / "images", tmp_path / "gt", tmp_path / "data"
    folder = make_study(9, size=(48, 48, 32), n_lesions=3, name="CASE_A").write(images)
    (gt / "CASE_A").mkdir(parents=True)
    (folder / "SEG.mha").rename(gt / "CASE_A" / "SEG.mha")
    token = _add_participant("alice", data)
    (tmp_path / "cases.txt").write_text("CASE_A\n")
    created = subprocess.run([sys.executable, "-m", "app", "phases", "create", "p", "--cases", str(tmp_path / "cases.txt"),
                              "--per-day", "5", "--total", "5", "--data-dir", str(data)],
                             cwd=REPO, text=True, capture_output=True, timeout=60)
    assert created.returncode == 0, created.stderr
    truth, _ = read_array(gt / "CASE_A" / "SEG.mha")
    mask = write_image_atomic(image_from_array(np.roll(truth, 3, axis=2).astype(np.uint8),
                                               read_geometry(gt / "CASE_A" / "SEG.mha")), tmp_path / "CASE_A.mha")
    args = ["--ground-truth", str(gt), "--images", str(images), "--keep-submissions"]
    with Server(data_dir=data, args=args, env={"PETCT_KIT_TOKEN": TOKEN}) as server:
        with server.client(token) as alice:
            submitted = alice.post("/v1/phases/p/submissions", files={"CASE_A": ("CASE_A.mha", mask.read_bytes())})
            assert submitted.status_code == 201, submitted.text
        _log_in(browser, server.url, TOKEN)
        browser.get(f"{server.url}/phases/p")
        browser.find_element(By.LINK_TEXT, "CASE_A").click()
        _wait(lambda: browser.find_element(By.ID, "viewer").get_attribute("data-ready"), "the viewer")
        assert browser.find_element(By.ID, "viewer").get_attribute("data-ready") == "true"
        assert browser.find_element(By.TAG_NAME, "h1").text == "CASE_A"
        legend = [s.text for s in browser.find_elements(By.CSS_SELECTOR, "#viewer .swatch")]
        assert legend == ["true positive", "false positive", "false negative"]
        assert not _console_errors(browser)
        browser.save_screenshot(str(tmp_path / "submission-case-1280.png"))
