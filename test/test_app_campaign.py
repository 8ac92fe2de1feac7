"""`python -m app campaign`: two teams on 2 local Dask workers score as their serial dry runs do; a rerun
skips the finished teams and redoes a half-written one; a team killed midway (the command, or its Dask worker)
reruns only its unfinished jobs; leaderboard and report."""
from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from app.__main__ import main as app_main
from app.campaign import teams_from
from petct.errors import InputError

pytest.importorskip("distributed")
from algorithm.batch_cluster import LOCAL_CLUSTER_CONFIG  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
PHANTOMS = ("--phantoms", "2", "--phantom-size", "tiny")
THREE = ("--phantoms", "3", "--phantom-size", "tiny")
# Runs that are not about the HTML reports skip their figures (seconds each); the first test checks them.
NO_REPORT = ("--no-report",)
PER_RUN = ("ground_truth_file", "prediction_file", "job")  # temporary paths and job ids, new in every run


def _scores(metrics_json: Path) -> dict:
    cases = json.loads(metrics_json.read_text())["case"]
    return {study: {k: v for k, v in record.items() if k not in PER_RUN} for study, record in cases.items()}


def _command(*extra: str) -> str:
    return f"{sys.executable} -m algorithm --input {{input}} --output {{output}} --engine baseline {' '.join(extra)}"


def _app(*args: str) -> subprocess.CompletedProcess:
    """`python -m app ARGS` in a process of its own: its exit status and output."""
    return subprocess.run([sys.executable, "-m", "app", *args], cwd=REPO, capture_output=True, text=True, timeout=300)


def _app_here(*args: str) -> subprocess.CompletedProcess:
    """The same command run in this process (its jobs still run as processes of their own), without an
    interpreter's start-up and imports: its exit status and what it printed."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = app_main(list(args))
    return subprocess.CompletedProcess(["app", *args], code, out.getvalue(), err.getvalue())


def test_teams_from_options():
    teams = teams_from(commands=["b=run {input} {output}"], images=["a=kit/algo:1"], models=["a=/models/a"])
    assert [(t.name, t.command, t.image, str(t.model)) for t in teams] == [
        ("a", None, "kit/algo:1", "/models/a"), ("b", "run {input} {output}", None, "None")]
    for bad in ({"commands": ["x"]}, {"commands": ["a=x", "a=y"]}, {"commands": ["a/b=x"]},
                {"commands": ["a=x"], "models": ["b=/m"]}, {}):
        with pytest.raises(InputError):
            teams_from(**{"commands": [], "images": [], "models": [], **bad})


def test_a_campaign_takes_the_dry_runs_options_for_running_and_scoring_studies(monkeypatch, tmp_path):
    """Every option of how studies are run and scored (limits, GPUs, edition, the 2026 loop's strategy, steps
    and rule) is declared once for both commands: the campaign's teams run as `dry-run` with the same options."""
    import app.campaign as campaign_module
    from app.__main__ import _parser
    from app.dryrun.run import DryRunOptions

    shared = ("cases", "phantoms", "phantom_size", "time_limit", "memory", "container_engine", "gpus", "report",
              "challenge", "strategy", "scribbles_dir", "steps", "scribble_rule")

    def declared(command: str) -> dict:
        sub = next(a for a in _parser()._actions if a.dest == "command").choices[command]
        return {a.dest: (a.option_strings, a.default, a.help, a.choices) for a in sub._actions if a.dest in shared}

    assert declared("campaign") == declared("dry-run") and len(declared("campaign")) == len(shared)
    given = {}
    monkeypatch.setattr(campaign_module, "run_campaign", lambda teams, base, output, **kw: given.update(
        base=base, output=output) or [])
    options = ["--phantoms", "4", "--phantom-size", "tiny", "--time-limit", "60", "--memory", "2g", "--no-gpus",
               "--no-report", "--challenge", "autopet-2026-interactive", "--strategy", "boundary", "--steps", "3",
               "--scribble-rule", "published", "--scribbles-dir", str(tmp_path / "s"), "--cases", str(tmp_path)]
    assert app_main(["campaign", "--command", "A=x {input} {output}", "--output", str(tmp_path / "c"), *options]) == 0
    assert given["base"] == DryRunOptions(
        cases=tmp_path, phantoms=4, phantom_size="tiny", time_limit_s=60.0, memory_bytes=2 * 1024**3, gpus=False,
        report=False, challenge="autopet-2026-interactive", strategy="boundary", steps=3, scribble_rule="published",
        scribbles_dir=tmp_path / "s")


EMPTY_MASK_WRITER = """\
import sys
from pathlib import Path
import SimpleITK as sitk
inp, out = Path(sys.argv[1]), Path(sys.argv[2])
pet = sitk.ReadImage(str(next((inp / "images" / "pet").iterdir())))
mask = sitk.Image(pet.GetSize(), sitk.sitkUInt8)
mask.CopyInformation(pet)
(out / sys.argv[3]).mkdir(parents=True, exist_ok=True)  # the loop's later steps: the last step's output
sitk.WriteImage(mask, str(out / sys.argv[3] / "mask.mha"))
"""


@pytest.mark.slow
def test_a_2026_campaign_runs_each_teams_closed_loop_as_its_dry_run_and_ranks_on_the_loops_areas(tmp_path):
    from petct.editions import edition

    loop = ("--challenge", "autopet-2026-interactive", "--strategy", "boundary", "--steps", "3", *PHANTOMS)
    writer = tmp_path / "empty.py"
    writer.write_text(EMPTY_MASK_WRITER)
    empty = f"{sys.executable} {writer} {{input}} {{output}} {edition('autopet-2026-interactive').output_relative_path}"
    campaign = tmp_path / "campaign"
    run = _app_here("campaign", "--command", f"kit={_command()}", "--command", f"empty={empty}", *loop,
                    "--output", str(campaign))
    assert run.returncode == 0, run.stdout + run.stderr
    alone = _app_here("dry-run", "--command", _command(), *loop, "--no-report", "--output", str(tmp_path / "alone"))
    assert alone.returncode == 0, alone.stdout + alone.stderr
    assert _scores(campaign / "teams" / "kit" / "metrics.json") == _scores(tmp_path / "alone" / "metrics.json")

    def reference(team: str) -> tuple[float, float]:
        """Mean AUC-Dice over the studies, and the trapezoid area of the F1 of the counts pooled per step."""
        cases = json.loads((campaign / "teams" / team / "metrics.json").read_text())["case"].values()
        assert {case["strategy"] for case in cases} == {"boundary"} and {len(c["steps"]) for c in cases} == {3}
        pooled = []
        for step in ("0", "1", "2"):
            tp, fp, fn = (sum(case["steps"][step][k] for case in cases) for k in ("tp", "fp", "fn"))
            pooled.append(2 * tp / (2 * tp + fp + fn))
        return (sum(case["dice_auc"] for case in cases) / len(cases),
                sum((a + b) / 2 for a, b in zip(pooled, pooled[1:])))

    rows = json.loads((campaign / "leaderboard.json").read_text())["leaderboard"]
    assert [row["submission"] for row in rows] == ["kit", "empty"]
    for row in rows:
        assert (row["dice_auc"], row["pooled_dmm_auc"]) == pytest.approx(reference(row["submission"]))
    kit, empty = reference("kit"), reference("empty")  # an empty mask finds no lesion (a lesion-free study's Dice is 1)
    assert empty[1] == 0.0 and kit[0] > empty[0] and kit[1] > 0.0
    assert (campaign / "leaderboard.txt").read_text().splitlines()[1].split()[:2] == ["1", "kit"]
    assert "autoPET V closed-loop report" in (campaign / "report.html").read_text()


@pytest.mark.slow
def test_two_teams_on_dask_score_as_their_serial_dry_runs_and_a_rerun_continues(tmp_path, three_phantoms_reference):
    campaign = tmp_path / "campaign"
    teams = ("--command", f"A={_command()}", "--command", f"B={_command('--device', 'cpu')}")
    run = _app("campaign", *teams, *PHANTOMS, "--output", str(campaign), "--workers", "2")
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    # The phantoms are the same first ones whatever their number: the serial run's first two.
    reference = dict(list(three_phantoms_reference.items())[:2])
    assert len(reference) == 2 and all("dice" in record for record in reference.values())
    assert (campaign / "teams" / "A" / "report.html").is_file()
    for team in ("A", "B"):
        assert _scores(campaign / "teams" / team / "metrics.json") == reference
    board = json.loads((campaign / "leaderboard.json").read_text())["leaderboard"]
    assert sorted(row["submission"] for row in board) == ["A", "B"]
    assert (campaign / "report.html").is_file() and "A" in (campaign / "leaderboard.txt").read_text()

    finished_a = (campaign / "teams" / "A" / "team.json").stat().st_mtime_ns
    (campaign / "teams" / "B" / "team.json").unlink()  # B as a run killed before its folder was complete
    again = _app_here("campaign", *teams, *PHANTOMS, "--output", str(campaign), "--no-report")
    assert again.returncode == 0, again.stdout[-3000:]
    assert not (campaign / "report.html").exists() and not (campaign / "teams" / "B" / "report.html").exists()
    assert "team A: finished earlier" in again.stdout and "team B: finished earlier" not in again.stdout
    assert (campaign / "teams" / "A" / "team.json").stat().st_mtime_ns == finished_a
    assert _scores(campaign / "teams" / "B" / "metrics.json") == reference
    assert not [p for p in (campaign / "teams").iterdir() if p.name.startswith(".partial")]


WRAPPER = '''import json, os, sys
inputs, output, log = sys.argv[1:4]
names = [item["image"]["name"] for item in json.load(open(os.path.join(inputs, "inputs.json"))) if item.get("image")]
with open(log, "a") as f:
    f.write(next(n for n in names if n.endswith("_SUV.mha"))[:-len("_SUV.mha")] + "\\n")
os.execv(sys.executable, [sys.executable, "-m", "algorithm", "--input", inputs, "--output", output,
                          "--engine", "baseline"])
'''


def _counting_command(tmp_path: Path) -> tuple[str, Path]:
    """The baseline algorithm behind a wrapper that writes each job's study into a log: which jobs ran."""
    (tmp_path / "wrapper.py").write_text(WRAPPER)
    log = tmp_path / "ran.txt"
    return f"{sys.executable} {tmp_path / 'wrapper.py'} {{input}} {{output}} {log}", log


def _kill_leftovers(wrapper: Path) -> None:
    """Kill every process whose command line runs `wrapper` (then the algorithm it became), and wait for them."""
    import psutil

    leftovers = []
    for process in psutil.process_iter(["cmdline"]):
        if any(str(wrapper) in part or str(wrapper.parent) in part for part in process.info["cmdline"] or ()):
            leftovers.append(process)
    for process in leftovers:
        try:
            process.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(leftovers, timeout=30)


def _ran(log: Path) -> list[str]:
    return log.read_text().split() if log.is_file() else []


def _finished_jobs(store: Path) -> set[str]:
    """The studies of the jobs a team's store holds as finished (a folder with job.json)."""
    return {p.parent.name.rsplit("-", 1)[0] for p in store.glob("*/job.json") if not p.parent.name.startswith(".")}


@pytest.fixture(scope="module")
def three_phantoms_reference(tmp_path_factory) -> dict:
    """The scores of an uninterrupted dry run of the baseline on three tiny phantoms."""
    folder = tmp_path_factory.mktemp("reference")
    serial = _app_here("dry-run", "--command", _command(), *THREE, *NO_REPORT, "--output", str(folder))
    assert serial.returncode == 0, serial.stdout[-3000:]
    return _scores(folder / "metrics.json")


@pytest.mark.slow
def test_a_team_killed_midway_reruns_only_its_unfinished_jobs(tmp_path, three_phantoms_reference):
    command, log = _counting_command(tmp_path)
    campaign = tmp_path / "campaign"
    argv = [sys.executable, "-m", "app", "campaign", "--command", f"A={command}", *THREE, *NO_REPORT,
            "--output", str(campaign)]
    store = campaign / "jobs" / "A"
    with open(tmp_path / "first.log", "w") as out:
        first = subprocess.Popen(argv, cwd=REPO, stdout=out, stderr=out, start_new_session=True)
        try:
            deadline = time.monotonic() + 120
            while not _finished_jobs(store) and time.monotonic() < deadline and first.poll() is None:
                time.sleep(0.02)
        finally:
            os.killpg(first.pid, signal.SIGKILL)  # the campaign, mid-team
            first.wait()
    # The job it was running lives in a session of its own (as the dry run runs jobs) and may not have written
    # its line yet: end it before the log is read and cleared, so that only the rerun's jobs count there.
    _kill_leftovers(tmp_path / "wrapper.py")
    finished = _finished_jobs(store)
    assert 1 <= len(finished) < 3 and not (campaign / "teams" / "A").exists(), (tmp_path / "first.log").read_text()
    assert set(_ran(log)) >= finished
    # A job saved only in part (no job.json) is not finished: its study runs again.
    half = next(p for p in sorted(store.iterdir()) if p.name.rsplit("-", 1)[0] in finished)
    (half / "job.json").unlink()
    finished.discard(half.name.rsplit("-", 1)[0])
    (store / ".partial-PHANTOM_9999-0123456789abcdef-00000000").mkdir()  # a job killed while being saved

    log.unlink()
    again = _app_here("campaign", "--command", f"A={command}", *THREE, *NO_REPORT, "--output", str(campaign))
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-2000:]
    studies = sorted(three_phantoms_reference)
    assert sorted(_ran(log)) == sorted(set(studies) - finished)  # each unfinished job once, no finished one
    assert again.stdout.count("(finished earlier)") == len(finished)
    assert _scores(campaign / "teams" / "A" / "metrics.json") == three_phantoms_reference
    assert not store.exists()  # a finished team's folder holds its results; its job store is gone


def _busy(dask_worker) -> tuple[int, int, float | None]:
    return os.getpid(), len(dask_worker.state.executing), dask_worker.state.available_resources.get("GPU")


@pytest.mark.slow
def test_on_dask_a_teams_studies_spread_over_the_workers_and_a_dead_worker_costs_a_retry(tmp_path, three_phantoms_reference):
    import dask
    from distributed import Client, LocalCluster

    from app.campaign import Team, run_campaign
    from app.dryrun.run import DryRunOptions

    command, log = _counting_command(tmp_path)
    campaign = tmp_path / "campaign"
    store = campaign / "jobs" / "A"
    killed: dict[str, object] = {}
    with dask.config.set(LOCAL_CLUSTER_CONFIG), \
            LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0",
                         resources={"GPU": 1}) as cluster, \
            Client(cluster) as client:
        client.wait_for_workers(2)

        def kill_the_team_after_its_first_job() -> None:
            deadline = time.monotonic() + 120
            while "both_busy" not in killed and time.monotonic() < deadline:  # one team's studies at once
                states = list(client.run(_busy).values())
                if all(executing for _, executing, _ in states):
                    killed["both_busy"] = True
                    killed["gpus_free"] = [gpus for _, _, gpus in states]  # each study holds its worker's GPU
                time.sleep(0.02)
            while not _finished_jobs(store) and time.monotonic() < deadline:
                time.sleep(0.02)
            killed["finished"] = _finished_jobs(store)
            for pid, executing, _ in client.run(_busy).values():
                if executing:
                    os.kill(pid, signal.SIGKILL)
                    killed["pid"] = pid

        killer = threading.Thread(target=kill_the_team_after_its_first_job, daemon=True)
        killer.start()
        base = DryRunOptions(phantoms=3, phantom_size="tiny", report=False)
        results = run_campaign([Team(name="A", command=command)], base, campaign, scheduler=cluster.scheduler_address)
        killer.join(timeout=30)
    assert killed.get("both_busy"), "the team's studies did not run on both workers at once"
    assert killed["gpus_free"] == [0, 0]
    assert "pid" in killed, "the team's worker was not found busy"
    assert [(r.name, r.exit_code, r.skipped) for r in results] == [("A", 0, False)]
    ran = _ran(log)
    for study in killed["finished"]:
        assert ran.count(study) == 1, ran  # finished before the worker died: not run again
    assert set(ran) == set(three_phantoms_reference)
    assert _scores(campaign / "teams" / "A" / "metrics.json") == three_phantoms_reference


@pytest.mark.parametrize("scheduler, gpus_option, pinned", [(None, None, ["0", "1"]), (None, False, []),
                                                             ("tcp://gpu-a:8786", None, [])])
def test_local_campaign_workers_are_pinned_to_the_machines_gpus(monkeypatch, tmp_path, scheduler, gpus_option, pinned):
    """--workers N on a GPU machine: each local worker gets one GPU (and its image jobs that GPU); a cluster's
    workers were pinned when they were started."""
    import contextlib

    import algorithm.batch_cluster
    import app.campaign as campaign_module
    from app.campaign import Team, run_campaign
    from app.dryrun.run import DryRunOptions

    asked = {}

    @contextlib.contextmanager
    def cluster_that_stops_here(**kwargs):
        asked.update(kwargs)
        raise OSError("stopped by the test")
        yield

    monkeypatch.setattr(campaign_module, "gpu_count", lambda: 2)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.setattr(algorithm.batch_cluster, "dask_client", cluster_that_stops_here)
    with pytest.raises(InputError, match="stopped by the test"):
        run_campaign([Team(name="A", command="x {input} {output}")], DryRunOptions(gpus=gpus_option), tmp_path,
                     workers=None if scheduler else 2, scheduler=scheduler)
    assert asked == {"scheduler": scheduler, "workers": None if scheduler else 2, "gpus": pinned}


@pytest.mark.slow
def test_on_dask_a_scheduler_that_cannot_be_reached_is_one_line(tmp_path):
    run = subprocess.run([sys.executable, "-m", "app", "campaign", "--command", f"A={_command()}", *PHANTOMS,
                          "--output", str(tmp_path / "c"), "--scheduler", "tcp://127.0.0.1:9"], cwd=REPO,
                         env={**os.environ, "DASK_DISTRIBUTED__COMM__TIMEOUTS__CONNECT": "2s"},
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 2
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: the Dask scheduler tcp://127.0.0.1:9 went away or "), \
        run.stderr
    assert "0 of 1 teams finished (none), 0 finished jobs of the others kept in " in lines[0]
    assert "run the same command again" in lines[0]


@pytest.mark.slow
def test_losing_the_scheduler_ends_the_campaign_in_one_line_and_a_rerun_keeps_the_finished_jobs(
        tmp_path, three_phantoms_reference):
    import dask
    from distributed import LocalCluster

    command, log = _counting_command(tmp_path)
    campaign = tmp_path / "campaign"
    store = campaign / "jobs" / "A"
    argv = ["campaign", "--command", f"A={command}", *THREE, *NO_REPORT, "--output", str(campaign)]
    with dask.config.set({**LOCAL_CLUSTER_CONFIG, "distributed.comm.timeouts.connect": "2s"}), \
            LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=":0") as cluster:
        def stop_the_scheduler_after_the_first_job() -> None:
            deadline = time.monotonic() + 120
            while not _finished_jobs(store) and time.monotonic() < deadline:
                time.sleep(0.01)
            cluster.sync(cluster.scheduler.close)

        stopper = threading.Thread(target=stop_the_scheduler_after_the_first_job, daemon=True)
        stopper.start()
        lost = subprocess.run([sys.executable, "-m", "app", *argv, "--scheduler", cluster.scheduler_address],
                              cwd=REPO, env={**os.environ, "DASK_DISTRIBUTED__COMM__TIMEOUTS__CONNECT": "2s"},
                              capture_output=True, text=True, timeout=180)
        stopper.join(timeout=30)
    assert lost.returncode == 2, lost.stdout[-2000:] + lost.stderr[-2000:]
    lines = lost.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in lost.stderr, lost.stderr
    assert "went away" in lines[0] and "0 of 1 teams finished (none), " in lines[0]
    reported = int(lines[0].split(" finished job")[0].rsplit(" ", 1)[1])
    finished = _finished_jobs(store)  # the worker may have saved one more after the line was written
    assert 1 <= reported <= len(finished) < 3

    log.unlink()
    again = _app_here(*argv)
    assert again.returncode == 0, again.stdout[-3000:]
    assert sorted(_ran(log)) == sorted(set(three_phantoms_reference) - finished)
    assert _scores(campaign / "teams" / "A" / "metrics.json") == three_phantoms_reference
