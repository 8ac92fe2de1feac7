"""`python -m app dry-run`: the platform's layout, the contract checks (one failing study per rule), Docker's argv."""
from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import textwrap
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import psutil
import pytest

from app.dryrun.runner import Limits, docker_run_argv, run_limited
from app_helpers import REPO
from evaluation.predictions import read_jobs
from petct.errors import InputError
from petct.phantom import make_study
from petct.sizes import docker_size, parse_size

TINY = (24, 24, 16)


def dry_run(*args: str, env: dict | None = None, timeout: float = 300,
            report: bool = False) -> subprocess.CompletedProcess:
    """`python -m app dry-run ARGS`; without its HTML report (seconds of figures) unless a test looks at it."""
    flag = "--report" if report else "--no-report"
    return subprocess.run([sys.executable, "-m", "app", "dry-run", flag, *args], cwd=REPO, capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, "PYTHONPATH": str(REPO), **(env or {})})


@pytest.mark.slow
def test_default_run_lays_out_jobs_as_the_platform_and_scores_them(tmp_path):
    work, out, junit = tmp_path / "work", tmp_path / "out", tmp_path / "report.xml"
    result = dry_run("--phantom-size", "tiny", "--workdir", str(work), "--output", str(out), "--junit", str(junit),
                     report=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "dry run PASSED: 3/3 studies" in result.stdout

    jobs = sorted((work / "jobs").iterdir())
    assert len(jobs) == 3
    for job in jobs:
        pets = list((job / "input/images/pet").iterdir())
        cts = list((job / "input/images/ct").iterdir())
        assert len(pets) == len(cts) == 1 and pets[0].suffix == ".mha" and pets[0].stem != cts[0].stem
        inputs = json.loads((job / "input/inputs.json").read_text())
        assert {i["interface"]["relative_path"] for i in inputs} == {"images/pet", "images/ct"}
        assert all(i["image"]["name"].endswith(("_SUV.mha", "_CTres.mha")) for i in inputs)
        assert {i["image"]["pk"] for i in inputs} == {pets[0].stem, cts[0].stem}

    evaluation_input = work / "evaluation/input"
    items = json.loads((evaluation_input / "predictions.json").read_text())
    assert len(items) == 3 and all(item["status"] == "Succeeded" for item in items)
    for item in items:
        (output,) = item["outputs"]
        assert output["interface"]["relative_path"] == "images/automated-petct-lesion-segmentation"
        assert output["image"]["name"] == f"{output['image']['pk']}.mha"  # the platform's name, not the algorithm's
        assert (evaluation_input / item["pk"] / "output" / output["interface"]["relative_path"] /
                output["image"]["name"]).is_file()
    parsed, problems = read_jobs(evaluation_input / "predictions.json")
    assert len(parsed) == 3 and problems == []

    metrics = json.loads((out / "metrics.json").read_text())
    assert len(metrics["case"]) == 3 and metrics["errors"] == []
    assert metrics["aggregates"]["false_positive_volume"]["count"] == 3  # the negative study counts for FPV
    suites = ET.parse(junit).getroot()
    assert [s.get("failures") for s in suites] == ["0", "0"] and suites[0].get("tests") == "3"
    verdicts = json.loads((out / "dry-run.json").read_text())
    assert verdicts["passed"] and all(not s["violations"] for s in verdicts["studies"])
    assert f"report: {out / 'report.html'}" in result.stdout  # with a MIP of every study
    assert (out / "report.html").read_text().count('<figure id="s0-mip-') == 3


BAD_ALGORITHM = textwrap.dedent("""
    import json, sys, time
    from pathlib import Path
    import numpy as np, SimpleITK as sitk

    inp, out = Path(sys.argv[1]), Path(sys.argv[2])
    case = next(i["image"]["name"] for i in json.loads((inp / "inputs.json").read_text())
                if i["interface"]["relative_path"] == "images/pet")[: -len("_SUV.mha")]
    pet = sitk.ReadImage(str(next((inp / "images/pet").iterdir())))
    folder = out / "images/automated-petct-lesion-segmentation"
    folder.mkdir(parents=True)

    def mask(dtype=np.uint8, value=0, like=pet):
        image = sitk.GetImageFromArray(np.full(sitk.GetArrayViewFromImage(like).shape, value, dtype))
        image.CopyInformation(like)
        return image

    if case == "crash":  # coloured output and control characters, as some loggers write them
        sys.stderr.write("\\x1b[31mRuntimeError: boom\\x1b[0m \\x00\\x07\\n")
        sys.exit(3)
    if case == "slow":
        time.sleep(60)
    if case == "writes_input":
        try:
            (inp / "images/pet/extra.txt").write_text("x")
        except OSError:
            pass
    written = {
        "float_mask": lambda: sitk.WriteImage(mask(np.float32), str(folder / "m.mha")),
        "values": lambda: sitk.WriteImage(mask(value=2), str(folder / "m.mha")),
        "two_files": lambda: [sitk.WriteImage(mask(), str(folder / n)) for n in ("a.mha", "b.mha")],
        "nifti": lambda: sitk.WriteImage(mask(), str(folder / "m.nii.gz")),
        "wrong_grid": lambda: sitk.WriteImage(mask(like=sitk.Image(5, 5, 5, sitk.sitkUInt8)), str(folder / "m.mha")),
    }.get(case, lambda: sitk.WriteImage(mask(), str(folder / "m.mha")))
    written()
    (out / "debug.txt").write_text("an unexpected extra output")
""")

EXPECTED = {
    "crash": "exit status 3",
    "slow": "time limit",
    "float_mask": "pixel type",
    "values": "outside {0, 1}",
    "two_files": "exactly one file",
    "nifti": "rejects .nii.gz",
    "wrong_grid": "not on the PET's grid",
}


@pytest.mark.slow
def test_each_contract_violation_is_named_per_study(tmp_path):
    cases = tmp_path / "cases"
    for name in [*EXPECTED, "good", "writes_input"]:
        make_study(5, size=TINY, n_lesions=1, name=name).write(cases)
    script = tmp_path / "bad_algorithm.py"
    script.write_text(BAD_ALGORITHM)
    out, junit = tmp_path / "out", tmp_path / "junit.xml"
    result = dry_run("--cases", str(cases), "--command", f"{sys.executable} {script} {{input}} {{output}}",
                     "--time-limit", "4", "--output", str(out), "--junit", str(junit))
    assert result.returncode == 1, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    for case, words in EXPECTED.items():
        assert any(line.strip().startswith(f"{case}: FAIL:") and words in line for line in lines), (case, result.stdout)
    assert not any(line.strip().startswith("good: FAIL") for line in lines)
    assert any(line.strip().startswith("good: warning: unexpected output /output/debug.txt") for line in lines)
    if os.geteuid() == 0:  # root ignores the read-only modes, so the write lands and must be caught
        assert any(line.strip().startswith("writes_input: FAIL:") and "input folder" in line for line in lines)

    failures = {case.get("name"): case.find("failure") for case in ET.parse(junit).getroot().iter("testcase")}
    assert failures["good"] is None and all(failures[c] is not None for c in EXPECTED)
    assert "RuntimeError: boom" in failures["crash"].text  # the log tail, made valid XML
    verdicts = {s["study"]: s for s in json.loads((out / "dry-run.json").read_text())["studies"]}
    assert verdicts["good"]["metrics"]["fp_components"] == 0  # the passing study was scored
    assert verdicts["slow"]["timed_out"] and verdicts["slow"]["seconds"] < 30


FAKE_DOCKER = textwrap.dedent("""\
    #!{python}
    # Stands in for the docker CLI: checks the platform's flags, then runs the kit's algorithm on the mounts.
    import json, os, subprocess, sys
    args = sys.argv[1:]
    if args == ["info"]:
        sys.exit(0)  # "a daemon answers", so the dry-run picks docker over an installed podman
    with open(os.environ["FAKE_DOCKER_LOG"], "a") as log:
        log.write(json.dumps(args) + "\\n")
    if args[0] in ("kill", "rm"):
        sys.exit(0)
    if args[:2] == ["image", "inspect"]:
        image = args[-1]
        if "missing" in image:
            sys.exit("Error response from daemon: No such image: " + image)
        print("linux/arm64" if "arm" in image else "linux/amd64")
        sys.exit(0)
    assert args[0] == "run" and "--rm" in args and "--network" in args
    mounts = dict(reversed(args[i + 1].split(":")[:2]) for i, a in enumerate(args) if a == "-v")
    sys.exit(subprocess.call([sys.executable, "-m", "algorithm", "--input", mounts["/input"],
                              "--output", mounts["/output"]]))
""")


def _fake_docker(tmp_path: Path) -> tuple[dict[str, str], Path]:
    """A `docker` first on PATH that logs each call (one JSON argv per line) to the returned file."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    docker = bin_dir / "docker"
    docker.write_text(FAKE_DOCKER.replace("{python}", sys.executable))
    docker.chmod(0o755)
    calls = tmp_path / "docker-calls.jsonl"
    return {"PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "FAKE_DOCKER_LOG": str(calls)}, calls


@pytest.mark.slow
def test_image_mode_runs_docker_with_the_platform_flags(tmp_path):
    env, calls = _fake_docker(tmp_path)
    result = dry_run("--image", "team/algo:1", "--phantoms", "1", "--phantom-size", "tiny", "--no-gpus",
                     "--memory", "8g", "--output", str(tmp_path / "out"),
                     env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    inspect, argv, remove = [json.loads(line) for line in calls.read_text().splitlines()]
    assert remove == ["rm", "-f", argv[argv.index("--name") + 1]]  # the container goes, whatever it left running
    assert inspect[:2] == ["image", "inspect"] and inspect[-1] == "team/algo:1"  # checked before any job
    assert argv[-1] == "team/algo:1"
    for flag in ("--memory=8g", "--memory-swap=8g", "--shm-size=4g", "--cap-drop=ALL",
                 "--security-opt=no-new-privileges", "--pids-limit=256", "--platform=linux/amd64"):
        assert flag in argv
    assert "--gpus" not in argv


# docs/grand-challenge.md, "Running a container locally", verbatim.
PLATFORM_DOCKER_RUN = r"""docker run --rm --platform=linux/amd64 --network none --gpus all \
  --memory=16g --memory-swap=16g --shm-size=8g --pids-limit=256 \
  --cap-drop=ALL --security-opt=no-new-privileges \
  -v "$IN":/input:ro -v "$OUT":/output -v <scratch volume>:/tmp \
  -v "$MODEL":/opt/ml/model:ro IMAGE"""


def _platform_argv(*, inp: str, out: str, tmp: str, model: str, image: str) -> list[str]:
    text = PLATFORM_DOCKER_RUN.replace("\\\n", " ")  # the shell's line continuations
    return shlex.split(text.replace('"$IN"', inp).replace('"$OUT"', out).replace("<scratch volume>", tmp)
                       .replace('"$MODEL"', model).replace("IMAGE", image))


def test_docker_argv_is_the_platforms_flag_for_flag():
    argv = docker_run_argv(image="img:tag", input_dir=Path("/w/in"), output_dir=Path("/w/out"), tmp_dir=Path("/w/tmp"),
                           memory="16g", shm_size="8g", gpus=True, model_dir=Path("/w/model"), name="job1")
    name_at = argv.index("--name")
    assert argv[name_at + 1] == "job1"
    assert argv[:name_at] + argv[name_at + 2:] == _platform_argv(inp="/w/in", out="/w/out", tmp="/w/tmp",
                                                                 model="/w/model", image="img:tag")

    plain = docker_run_argv(image="i", input_dir=Path("/a"), output_dir=Path("/b"), tmp_dir=Path("/c"), memory="4g",
                            shm_size="2g", gpus=False)
    expected = _platform_argv(inp="/a", out="/b", tmp="/c", model="/m", image="i")
    expected.remove("--gpus")
    expected.remove("all")
    del expected[-3:-1]  # no model folder, no model mount
    sizes = {"--memory=16g": "--memory=4g", "--memory-swap=16g": "--memory-swap=4g", "--shm-size=8g": "--shm-size=2g"}
    assert plain == [sizes.get(a, a) for a in expected]


def _argv(**gpu) -> list[str]:
    return docker_run_argv(image="i", input_dir=Path("/a"), output_dir=Path("/b"), tmp_dir=Path("/c"), memory="4g",
                           shm_size="2g", **gpu)


def test_a_container_gets_the_gpus_it_is_given_in_each_engines_words():
    assert _argv(gpus=True, docker="docker")[6:8] == ["--gpus", "all"]
    assert _argv(gpus=True, gpu_devices=["1"], docker="/usr/bin/docker")[6:8] == ["--gpus", '"device=1"']
    # Docker reads the value as CSV: the device list is one quoted field.
    assert _argv(gpus=True, gpu_devices=["0", "GPU-8f3a"])[6:8] == ["--gpus", '"device=0,GPU-8f3a"']
    # podman has no --gpus before 5.0: the NVIDIA toolkit's CDI device names.
    assert _argv(gpus=True, docker="podman")[6:8] == ["--device", "nvidia.com/gpu=all"]
    assert _argv(gpus=True, gpu_devices=["2", "3"], docker="podman")[6:10] == [
        "--device", "nvidia.com/gpu=2", "--device", "nvidia.com/gpu=3"]
    for engine in ("docker", "podman"):
        assert not {"--gpus", "--device"} & set(_argv(gpus=False, gpu_devices=["1"], docker=engine))
        # CUDA_VISIBLE_DEVICES="" (or -1) gave this process no GPU: a forced --gpus gives the container none either.
        assert not {"--gpus", "--device"} & set(_argv(gpus=True, gpu_devices=[], docker=engine))


def _image_job_argv(tmp_path: Path, **options) -> list[str]:
    from types import SimpleNamespace

    from app.dryrun.run import DryRunOptions, _job_command

    job = SimpleNamespace(pk="0123456789abcdef", input_dir=tmp_path / "in", output_dir=tmp_path / "out",
                          tmp_dir=tmp_path / "tmp")
    argv, _, _, _ = _job_command(job, DryRunOptions(image="team/algo:1", container_engine="docker", **options))
    return argv


def test_an_image_job_on_a_gpu_worker_gets_that_workers_gpu_not_all(monkeypatch, tmp_path):
    distributed = pytest.importorskip("distributed")
    assert distributed
    from types import SimpleNamespace

    import app.dryrun.run as dry
    from algorithm.batch_cluster import PinGpu
    from petct.gpus import local_gpu_ids

    monkeypatch.setattr(dry, "gpu_count", lambda: 4)  # nvidia-smi -L lists the machine's four GPUs
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    PinGpu(local_gpu_ids(4)).setup(SimpleNamespace(name=6))  # local worker 6 of a 4-GPU machine: pinned to GPU 2
    argv = _image_job_argv(tmp_path)
    assert argv[argv.index("--gpus") + 1] == '"device=2"'
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,3")  # the command was given the machine's GPUs 2 and 3 ...
    devices = local_gpu_ids(2)  # ... which CUDA, in it, numbers 0 and 1
    assert devices == ["2", "3"]
    PinGpu(devices).setup(SimpleNamespace(name=1))  # local worker 1: the machine's GPU 3, not GPU 1
    argv = _image_job_argv(tmp_path)
    assert argv[argv.index("--gpus") + 1] == '"device=3"'
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "GPU-8f3a")  # `CUDA_VISIBLE_DEVICES=GPU-8f3a dask worker ...`
    argv = _image_job_argv(tmp_path)
    assert argv[argv.index("--gpus") + 1] == '"device=GPU-8f3a"'
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")  # no pinning: every GPU, as the platform gives
    argv = _image_job_argv(tmp_path)
    assert argv[argv.index("--gpus") + 1] == "all"
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")  # a worker given no GPU runs its containers without one
    assert "--gpus" not in _image_job_argv(tmp_path)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")
    assert "--gpus" not in _image_job_argv(tmp_path, gpus=False)
    monkeypatch.setattr(dry, "gpu_count", lambda: 0)
    assert "--gpus" not in _image_job_argv(tmp_path)


def test_docker_mounts_refuse_a_colon_in_a_path():
    with pytest.raises(InputError, match="':'"):
        docker_run_argv(image="i", input_dir=Path("/w/a:b/in"), output_dir=Path("/b"), tmp_dir=Path("/c"),
                        memory="4g", shm_size="2g", gpus=False)


def _wait_gone(pid: int) -> bool:
    """Whether `pid` ends within 5 s (SIGKILL is delivered asynchronously; an orphan may linger as a zombie)."""
    for _ in range(100):
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        time.sleep(0.05)
    return False


@pytest.mark.parametrize("new_session", [False, True])
@pytest.mark.slow
def test_time_limit_kills_the_whole_process_tree(tmp_path, new_session):
    """A job's children die with it at the time limit, a `setsid` grandchild outside its group included."""
    pid_file = tmp_path / "grandchild.pid"
    script = ("import subprocess, sys, time\n"
              "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)'], "
              f"start_new_session={new_session})\n"
              f"open({str(pid_file)!r}, 'w').write(str(child.pid))\n"
              "time.sleep(120)\n")
    outcome = run_limited([sys.executable, "-c", script], limits=Limits(time_s=3, memory_bytes=2**40),
                          log=tmp_path / "log.txt")
    assert outcome.timed_out and outcome.exit_code is None
    grandchild = int(pid_file.read_text())
    if not _wait_gone(grandchild):
        psutil.Process(grandchild).kill()
        raise AssertionError("the job's child process outlived the time limit")


def test_a_broken_case_is_a_usage_error_before_any_job_runs(tmp_path):
    cases = tmp_path / "cases"
    make_study(5, size=TINY, n_lesions=1, name="A").write(cases)
    make_study(6, size=(20, 24, 16), n_lesions=1, name="B").write(cases)
    (cases / "B" / "SEG.mha").unlink()
    make_study(6, size=TINY, n_lesions=1, name="C").write(tmp_path / "other")
    (tmp_path / "other" / "C" / "SEG.mha").rename(cases / "B" / "SEG.mha")  # a mask on another grid
    marker = tmp_path / "ran"
    result = dry_run("--cases", str(cases), "--command", f"touch {marker} {{input}} {{output}}",
                     "--output", str(tmp_path / "out"))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "SEG.mha" in result.stderr and "grid" in result.stderr
    assert not marker.exists()  # not even the good case ran


@pytest.mark.parametrize("args", [
    ["--command", "python -m algo"],  # no placeholders
    ["--cases", "/nonexistent/cases"],
    ["--time-limit", "-1"],
    ["--memory", "lots"],
    ["--image", "x", "--command", "a {input} {output}"],
    ["--time-limit", "nan"],
    ["--time-limit", "inf"],
    ["--phantoms", "0"],
    ["--output", "/dev/null/out"],
    ["--junit", "/dev/null/report.xml"],
    ["--junit", "/tmp"],
])
@pytest.mark.slow
def test_usage_errors_exit_2(args):
    result = dry_run(*args)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr


def test_image_mode_without_docker_is_a_usage_error(tmp_path):
    result = dry_run("--image", "x", env={"PATH": str(tmp_path)})
    assert result.returncode == 2 and "docker" in result.stderr


@pytest.mark.parametrize("text,expected", [("2GiB", 2 * 1024**3), ("1MB", 10**6), ("16g", 16 * 1024**3),
                                           ("512m", 512 * 1024**2), ("1048576", 1048576), ("1.5k", 1536)])
def test_sizes(text, expected):
    assert parse_size(text) == expected


def test_docker_sizes_round_trip():
    for n in (16 * 1024**3, 512 * 1024**2, 12345):
        assert parse_size(docker_size(n)) == n
    for bad in ("", "ten", "5 parsecs", "0"):
        with pytest.raises(ValueError):
            parse_size(bad)


@pytest.mark.slow
def test_case_names_with_dots_get_their_metrics(tmp_path):
    # metrics.json keys replace dots (the leaderboard reads dotted paths); the dry-run must still find each study.
    cases = tmp_path / "cases"
    make_study(2, size=TINY, n_lesions=2, name="PETCT_1.2.840").write(cases)
    result = dry_run("--cases", str(cases), "--output", str(tmp_path / "out"))
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads((tmp_path / "out" / "dry-run.json").read_text())
    [study] = report["studies"]
    assert study["study"] == "PETCT_1.2.840"
    assert study["metrics"] is not None and study["metrics"]["dice"] is not None
    assert not (tmp_path / "out" / "report.html").exists() and "report:" not in result.stdout  # --no-report


@pytest.mark.parametrize("image,reason", [("team/missing:1", "No such image"), ("team/arm:1", "linux/arm64")])
def test_image_that_docker_lacks_or_that_is_not_amd64_is_a_usage_error(tmp_path, image, reason):
    env, calls = _fake_docker(tmp_path)
    result = dry_run("--image", image, "--phantoms", "1", "--phantom-size", "tiny", "--output", str(tmp_path / "out"),
                     env=env)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert image in result.stderr and reason in result.stderr
    assert all(json.loads(line)[0] != "run" for line in calls.read_text().splitlines())  # no job ran


@pytest.mark.parametrize("how", ["child", "setsid", "double_fork", "env_i_setsid_sh"])
@pytest.mark.slow
def test_a_normal_exit_kills_every_process_the_job_left(tmp_path, how):
    """Background children, setsid daemons and double-forked orphans all die when the job's main process exits."""
    pid_file = tmp_path / "straggler.pid"
    late = tmp_path / "late.txt"
    straggler = f"import time; time.sleep(2); open({str(late)!r}, 'w').write('late')"
    starts = {
        "child": "subprocess.Popen([sys.executable, '-c', STRAGGLER])",
        "setsid": "subprocess.Popen([sys.executable, '-c', STRAGGLER], start_new_session=True)",
        # The middle process exits at once: the straggler is reparented and leaves the job's tree and group.
        "double_fork": "subprocess.Popen([sys.executable, '-c', 'import os, subprocess, sys; "
                       "p = subprocess.Popen([sys.executable, \"-c\", sys.argv[1]], start_new_session=True); "
                       "open(sys.argv[2], \"w\").write(str(p.pid))', STRAGGLER, PID_FILE]).wait()",
        # No environment (so no job mark), its own session, and its shell exits at once.
        "env_i_setsid_sh": "subprocess.Popen(['env', '-i', 'setsid', '/bin/sh', '-c', "
                           "sys.executable + ' -c \"$0\" & echo $! > \"$1\"', STRAGGLER, PID_FILE]).wait()",
    }
    script = (f"import subprocess, sys, time\nSTRAGGLER = {straggler!r}\nPID_FILE = {str(pid_file)!r}\n"
              f"p = {starts[how]}\n"
              "if hasattr(p, 'pid'): open(PID_FILE, 'w').write(str(p.pid))\n"
              "time.sleep(0.3)\n")
    outcome = run_limited([sys.executable, "-c", script], limits=Limits(time_s=60, memory_bytes=2**40),
                          log=tmp_path / "log.txt")
    assert outcome.exit_code == 0 and not outcome.timed_out, (tmp_path / "log.txt").read_text()
    pid = int(pid_file.read_text())
    assert _wait_gone(pid), f"the job's {how} straggler outlived the job"
    assert len(outcome.left_processes) == 1 and f"pid {pid}" in outcome.left_processes[0]
    time.sleep(2.5)
    assert not late.exists()


def test_a_clean_job_leaves_nothing_to_report(tmp_path):
    outcome = run_limited([sys.executable, "-c", "print('ok')"], limits=Limits(time_s=60, memory_bytes=2**40),
                          log=tmp_path / "log.txt")
    assert outcome.exit_code == 0 and outcome.left_processes == []


LATE_WRITER = textwrap.dedent("""\
    import os, subprocess, sys
    import SimpleITK as sitk
    from petct.imageio import read_image
    inp, out = sys.argv[1], sys.argv[2]
    pet = read_image(next(p for p in __import__("pathlib").Path(inp, "images", "pet").iterdir()))
    mask = sitk.Image(pet.GetSize(), sitk.sitkUInt8)
    mask.CopyInformation(pet)
    folder = os.path.join(out, "images", "automated-petct-lesion-segmentation")
    os.makedirs(folder)
    sitk.WriteImage(mask, os.path.join(folder, "mask.mha"))
    subprocess.Popen([sys.executable, "-c", "import time, sys; time.sleep(1.5); open(sys.argv[1], 'w').write('x')",
                      os.path.join(folder, "second.mha")], start_new_session=True)
""")


@pytest.mark.slow
def test_dry_run_kills_a_late_writer_and_reports_it(tmp_path):
    script = tmp_path / "late_writer.py"
    script.write_text(LATE_WRITER.format(repo=str(REPO)))
    out = tmp_path / "out"
    result = dry_run("--phantoms", "1", "--phantom-size", "tiny", "--command",
                     f"{sys.executable} {script} {{input}} {{output}}", "--output", str(out),
                     "--workdir", str(tmp_path / "work"))
    assert "left 1 process(es) running after it exited" in result.stdout, result.stdout + result.stderr
    time.sleep(2)
    assert not list((tmp_path / "work").rglob("second.mha"))


ZERO_WRITER = textwrap.dedent("""\
    import os, sys
    from pathlib import Path
    import SimpleITK as sitk
    inp, out = Path(sys.argv[1]), Path(sys.argv[2])
    pet = sitk.ReadImage(str(next((inp / "images" / "pet").iterdir())))
    mask = sitk.Image(pet.GetSize(), sitk.sitkUInt8)
    mask.CopyInformation(pet)
    folder = out / "images" / "automated-petct-lesion-segmentation"
    folder.mkdir(parents=True)
    sitk.WriteImage(mask, str(folder / "mask.mha"))
""")


@pytest.mark.slow
@pytest.mark.parametrize("moment", ["checking", "scoring"])
def test_a_write_after_the_job_ended_changes_neither_the_check_nor_the_score(tmp_path, monkeypatch, moment):
    """A straggler the dry run cannot find (`env -i setsid sh -c '(...)&'`, started outside the job here, as one
    that slipped out of the job's tree would be) overwrites the job's empty mask with a full one while the dry
    run checks the output, or before it scores it: the mask as the job left it is what counts, with a warning."""
    import SimpleITK as sitk

    from app.dryrun import platform
    from app.dryrun import run as dry_run_module
    from app.dryrun.run import DryRunOptions, run_dry_run

    cases, work, out = tmp_path / "cases", tmp_path / "work", tmp_path / "out"
    make_study(3, size=TINY, n_lesions=2, name="A").write(cases)
    pet = sitk.ReadImage(str(cases / "A" / "SUV.mha"))
    full = sitk.Image(pet.GetSize(), sitk.sitkUInt8) + 1
    full.CopyInformation(pet)
    sitk.WriteImage(full, str(tmp_path / "full.mha"))
    go, done = tmp_path / "go", tmp_path / "done"
    masks = f"{work}/jobs/*/output/images/automated-petct-lesion-segmentation/*.mha"
    # Waits (30 s at most) for its cue, then rewrites each mask in place (same file, new content).
    straggler = (f"(i=0; while [ ! -e {shlex.quote(str(go))} ] && [ $i -lt 600 ]; do sleep 0.05; i=$((i+1)); done; "
                 f"for f in {masks}; do cat {shlex.quote(str(tmp_path / 'full.mha'))} > \"$f\"; done; "
                 f"touch {shlex.quote(str(done))}) &")
    subprocess.run(["env", "-i", "setsid", "sh", "-c", straggler], check=True)

    def cue_the_straggler() -> None:
        go.touch()
        for _ in range(200):
            if done.exists():
                return
            time.sleep(0.05)
        raise AssertionError("the straggler never wrote")

    def cued(original):
        def call(*args, **kwargs):
            cue_the_straggler()
            return original(*args, **kwargs)
        return call

    if moment == "checking":
        monkeypatch.setattr(dry_run_module, "check_output", cued(dry_run_module.check_output))
    else:
        monkeypatch.setattr(platform, "lay_out_evaluation", cued(platform.lay_out_evaluation))
    script = tmp_path / "zero_writer.py"
    script.write_text(ZERO_WRITER)
    status = run_dry_run(DryRunOptions(cases=cases, command=f"{sys.executable} {script} {{input}} {{output}}",
                                       workdir=work, output=out, time_limit_s=120))
    assert done.exists()
    report = json.loads((out / "dry-run.json").read_text())
    [study] = report["studies"]
    assert status == 0 and report["passed"], report
    assert study["metrics"]["dice"] == 0  # the empty mask was scored, not the full one
    assert any("a process outlived the job" in w for w in study["warnings"]), study["warnings"]
