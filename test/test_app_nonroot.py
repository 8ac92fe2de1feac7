"""Each entry point run as the platform runs it: a non-root user (nobody, 65534), a read-only input folder.

The tests run as root here, so each command is started with subprocess's user=/group= (setuid). The
interpreter and its packages must be readable by nobody: the test's own interpreter when it is, else a
system interpreter of the same version given the test environment's site-packages (appended after the
standard library by a sitecustomize shim, so no package there can shadow a standard module).
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path

import pytest

from app.dryrun.cases import phantom_cases
from app.dryrun.platform import lay_out_evaluation, lay_out_ground_truth, lay_out_job, make_writable
from app_helpers import REPO
from petct.editions import EDITIONS

NOBODY = 65534
pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to start processes as another user (nobody)")


def _as_nobody(argv: list[str], env: dict, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(argv, env=env, user=NOBODY, group=NOBODY, extra_groups=[], capture_output=True,
                          text=True, timeout=300, cwd="/", **kwargs)


@pytest.fixture(scope="module")
def sandbox():
    """A folder nobody can enter (pytest's tmp_path sits in a root-only folder)."""
    root = Path(tempfile.mkdtemp(prefix="petct-nonroot-", dir="/tmp"))
    os.chmod(root, 0o755)
    home = root / "home"
    home.mkdir()
    os.chmod(home, 0o777)
    yield root
    make_writable(root)
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def nobody_python(sandbox) -> tuple[str, dict]:
    """An interpreter nobody can run with the kit's packages, and the environment to run it in."""
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    shim = sandbox / "shim"
    shim.mkdir()
    sites = list(dict.fromkeys(sysconfig.get_paths()[k] for k in ("purelib", "platlib")))
    (shim / "sitecustomize.py").write_text("import site\n" + "".join(f"site.addsitedir({s!r})\n" for s in sites))
    os.chmod(shim, 0o755)
    base = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": str(sandbox / "home"), "TMPDIR": str(sandbox / "home")}
    candidates = [(sys.executable, str(REPO))] + [(f"{prefix}/python{version}", f"{REPO}{os.pathsep}{shim}")
                                                  for prefix in ("/usr/local/bin", "/usr/bin")]
    tried = []
    for exe, path in candidates:
        env = {**base, "PYTHONPATH": path}
        try:
            probe = _as_nobody([exe, "-c", "import numpy, scipy, SimpleITK, cc3d, petct, algorithm, evaluation"], env)
        except (OSError, subprocess.SubprocessError) as exc:
            tried.append(f"{exe}: {exc}")
            continue
        if probe.returncode == 0:
            return exe, env
        tried.append(f"{exe}: {probe.stderr.strip().splitlines()[-1] if probe.stderr.strip() else probe.returncode}")
    pytest.skip("no interpreter with the kit's packages is usable by nobody (make the venv world-readable, "
                "e.g. build it from a system python): " + "; ".join(tried))


@pytest.fixture(scope="module")
def phantoms(sandbox):
    folder = sandbox / "cases"
    cases = phantom_cases(folder, count=2, size="tiny")
    return cases


def _writable_by_nobody(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    os.chmod(path, 0o777)
    return path


def test_algorithm_runs_as_nobody_on_a_read_only_input(nobody_python, sandbox, phantoms):
    exe, env = nobody_python
    job = lay_out_job(phantoms[0], sandbox / "algorithm-jobs", edition=EDITIONS["autopet-2022"])
    denied = _as_nobody([exe, "-c", f"open({str(job.input_dir / 'x')!r}, 'w')"], env)
    assert denied.returncode != 0 and "Permission" in denied.stderr  # the input really is read-only

    result = _as_nobody([exe, "-m", "algorithm", "--input", str(job.input_dir), "--output", str(job.output_dir)],
                        {**env, "TMPDIR": str(job.tmp_dir)})
    assert result.returncode == 0, result.stderr
    (mask,) = (job.output_dir / EDITIONS["autopet-2022"].output_relative_path).iterdir()
    assert mask.suffix == ".mha" and mask.stat().st_uid == NOBODY


def test_evaluation_runs_as_nobody_on_a_read_only_input(nobody_python, sandbox, phantoms):
    exe, env = nobody_python
    jobs = []
    for case in phantoms:
        job = lay_out_job(case, sandbox / "eval-jobs", edition=EDITIONS["autopet-2022"])
        mask = _writable_by_nobody(job.output_dir / EDITIONS["autopet-2022"].output_relative_path) / "prediction.mha"
        shutil.copyfile(case.seg, mask)  # a perfect prediction
        jobs.append((job, mask))
    eval_input = lay_out_evaluation(jobs, sandbox / "eval" / "input", edition=EDITIONS["autopet-2022"])
    ground_truth = lay_out_ground_truth(phantoms, sandbox / "eval" / "gt")
    for folder in (eval_input, ground_truth):
        for path in [folder, *folder.rglob("*")]:
            os.chmod(path, 0o555 if path.is_dir() else 0o444)
    output = _writable_by_nobody(sandbox / "eval" / "output")
    result = _as_nobody([exe, "-m", "evaluation", "--input", str(eval_input), "--ground-truth", str(ground_truth),
                         "--output", str(output), "--workers", "1"], env)
    assert result.returncode == 0, result.stderr
    metrics = json.loads((output / "metrics.json").read_text())
    assert set(metrics["case"]) == {c.name for c in phantoms}
    assert all(m["false_positive_volume"] == 0 for m in metrics["case"].values())


@pytest.mark.slow
def test_dry_run_runs_as_nobody(nobody_python, sandbox):
    exe, env = nobody_python
    output = _writable_by_nobody(sandbox / "dry-run-output")
    result = _as_nobody([exe, "-m", "app", "dry-run", "--phantom-size", "tiny", "--phantoms", "2",
                         "--output", str(output), "--junit", str(output / "junit.xml")], env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "dry run PASSED" in result.stdout
    assert (output / "metrics.json").stat().st_uid == NOBODY
