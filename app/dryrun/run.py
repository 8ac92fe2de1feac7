"""The dry run, top to bottom: studies -> one algorithm job each -> contract checks -> evaluation -> report."""
from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from algorithm.runinfo import parse_ran_line
from app.dryrun import jobstore, platform
from app.dryrun.cases import (
    DryRunCase,
    folder_cases,
    pet_grids,
    phantom_cases,
    phantom_names,
    with_lesion_counts,
)
from app.dryrun.contract import JobCheck, check_data_centric, check_output, check_run, snapshot
from app.dryrun.report import EvaluationReport, StudyReport, aggregates_line, table, write_junit
from app.dryrun.runner import (
    KIT_ROOT,
    Limits,
    RunOutcome,
    check_docker_image,
    command_argv,
    default_command,
    docker_run_argv,
    run_limited,
    tail,
)
from images.container_engine import detect_engine, engine_env
from petct.clicks import Clicks
from petct.editions import CLICKS_JSON, DEFAULT_CHALLENGE, SCRIBBLE_STEPS, Edition
from petct.editions import edition as edition_named
from petct.environment import CHALLENGE
from petct.errors import InputError
from petct.gpus import gpu_count, visible_gpus
from petct.imageio import Geometry
from petct.jsonio import read_json, write_json_atomic
from petct.layout import METRICS_JSON
from petct.sizes import docker_size, format_size

EVALUATION_TIME_LIMIT_S = 600.0
EXIT_OK, EXIT_VIOLATION, EXIT_USAGE = 0, 1, 2


@dataclass(frozen=True)
class DryRunOptions:
    command: str | None = None  # local command with {input} and {output}; None: the kit's algorithm
    image: str | None = None  # Docker image to run instead of a command
    container_engine: str | None = None  # docker or podman; None: detected (images/container_engine.py)
    cases: Path | None = None  # <case>/{SUV,CTres,SEG}.*; None: built-in phantoms
    phantoms: int = 3
    phantom_size: str = "small"
    time_limit_s: float = 300.0
    memory_bytes: int = 16 * 1024**3
    model: Path | None = None  # mounted read-only at /opt/ml/model (Docker); the kit's algorithm: its --model
    gpus: bool | None = None  # None: when nvidia-smi lists a GPU; the job gets CUDA_VISIBLE_DEVICES' GPUs, else all
    workdir: Path | None = None  # kept when given; else a temporary folder, removed at the end
    output: Path = Path("out/dry-run")
    junit: Path | None = None
    report: bool = True  # report.html (figures take seconds); metrics.json and dry-run.json are always written
    challenge: str = DEFAULT_CHALLENGE  # petct.editions profile: outputs checked, clicks protocol, scoring
    # 2026 closed loop (app/dryrun/closed_loop.py)
    strategy: str = "mixed"  # centerline | random | boundary | mixed (a third each, seeded)
    scribbles_dir: Path | None = None  # recorded scribbles replayed: <study>_step<K>.json
    steps: int = SCRIBBLE_STEPS
    scribble_rule: str = "kit"  # petct.editions.SCRIBBLE_RULES
    csv: Path | None = None  # per-study CSV of the loop's areas and final values
    job_store: Path | None = None  # finished jobs kept between runs (app/dryrun/jobstore.py); None: none kept
    # A campaign's task for some studies: run only their jobs (kept in job_store), no evaluation nor results.
    only_studies: tuple[str, ...] | None = None

    @property
    def challenge_scribbles(self) -> bool:
        return edition_named(self.challenge).scribbles


def run_dry_run(options: DryRunOptions) -> int:
    """Exit status: 0 all studies met the contract and were scored, 1 a violation (named per study)."""
    started = time.monotonic()
    if options.image:
        options = dataclasses.replace(options, container_engine=detect_engine(options.container_engine))
    _check_options(options)
    workdir = options.workdir or Path(tempfile.mkdtemp(prefix="petct-dry-run-"))
    if options.job_store is not None:
        options.job_store.mkdir(parents=True, exist_ok=True)
        if options.only_studies is None:  # else other studies' tasks may be saving theirs now
            jobstore.remove_partial(options.job_store)  # left by a run killed while saving a job
    try:
        _make_folders(options, workdir)
        os.chmod(workdir, 0o755)  # a container's non-root user must reach the mounted folders
        cases = _studies(options, workdir)
        names = [case.name for case in cases]  # all of them: the 2026 loop deals strategies over the whole set
        if options.only_studies is not None:
            cases = [case for case in cases if case.name in options.only_studies]
        grids = pet_grids(cases)
        cases = with_lesion_counts(cases)
        print(f"dry run: {len(cases)} stud{'y' if len(cases) == 1 else 'ies'}, {_runner_description(options)}, "
              f"time limit {options.time_limit_s:g} s, memory {format_size(options.memory_bytes)}", flush=True)
        edition = edition_named(options.challenge)
        studies = [report for case in cases for report in _run_study(case, options, workdir, pet=grids[case.name],
                                                                     edition=edition, names=names)]
        if options.only_studies is not None:  # their jobs are kept in options.job_store; the team's run scores
            return EXIT_OK if all(s.check.passed for s in studies) else EXIT_VIOLATION
        evaluation = _evaluate(studies, cases, workdir, edition=edition)
        _note_late_writes(studies)
        _write_results(options, studies, evaluation)
        if options.report:
            report = _write_html_report(options, cases, evaluation)
        else:  # an earlier run's report would contradict this run's metrics.json
            report = None
            (options.output / "report.html").unlink(missing_ok=True)
    finally:
        platform.make_writable(workdir)
        if options.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    if report is not None:
        print(f"report: {report}")
    return _summarise(studies, evaluation, options, seconds=time.monotonic() - started)


def _check_options(options: DryRunOptions) -> None:
    if options.command and options.image:
        raise InputError("give --command or --image, not both")
    if options.image:
        check_docker_image(options.image, docker=options.container_engine,
                           env=engine_env(options.container_engine))
    if options.command:
        command_argv(options.command, input_dir=Path("in"), output_dir=Path("out"))  # placeholders present
    if options.time_limit_s <= 0:
        raise InputError("--time-limit must be positive")
    if options.model is not None and not options.model.is_dir():
        raise InputError("model folder does not exist", path=options.model)
    if options.model is not None and options.command:
        raise InputError("--model goes to the kit's algorithm or, with --image, to /opt/ml/model; with --command "
                         "put the model in the command itself")
    if options.scribbles_dir is not None and not options.scribbles_dir.is_dir():
        raise InputError("--scribbles-dir does not exist", path=options.scribbles_dir)
    if options.junit is not None and options.junit.is_dir():
        raise InputError("--junit names a folder; give the report's file name", path=options.junit)


def _make_folders(options: DryRunOptions, workdir: Path) -> None:
    """Every folder the run writes to, made before any job runs: a bad path must not waste a whole run."""
    folders = [(workdir, "--workdir")]
    if options.only_studies is None:
        folders.append((options.output, "--output"))
    if options.junit is not None:
        folders.append((options.junit.parent, "--junit"))
    for folder, flag in folders:
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            reason = "is a file, not a folder" if folder.is_file() else exc.strerror
            raise InputError(f"cannot make the {flag} folder: {reason}", path=folder) from None


def _runner_description(options: DryRunOptions) -> str:
    if options.image:
        return f"{options.container_engine or 'docker'} image {options.image}"
    return f"command {options.command!r}" if options.command else "the kit's algorithm (python -m algorithm)"


def study_names(options: DryRunOptions) -> list[str]:
    """The studies a dry run with these options runs, in its order, without writing any."""
    if options.cases is not None:
        return [case.name for case in folder_cases(options.cases)]
    return phantom_names(options.phantoms)


def _studies(options: DryRunOptions, workdir: Path) -> list[DryRunCase]:
    if options.cases is not None:
        return folder_cases(options.cases)
    return phantom_cases(workdir / "phantoms", count=options.phantoms, size=options.phantom_size)


def _run_study(case: DryRunCase, options: DryRunOptions, workdir: Path, *, pet: Geometry,
               edition: Edition, names: list[str]) -> list[StudyReport]:
    """The jobs of one study: one, or with the interactive track one per click step (0..10), as the platform runs them."""
    if edition.scribbles:
        from app.dryrun.closed_loop import run_study_loop, strategy_for
        loop = None
        if options.command is None and not options.image and options.scribbles_dir is None:
            loop = _run_loop_in_process(case, options, workdir, edition=edition,
                                        strategy=strategy_for(case.name, names, options.strategy))
        return run_study_loop(case, options, workdir, pet=pet, edition=edition, run_job=_run_job, studies=names,
                              loop=loop)
    if not edition.clicks:
        return [_run_job(case, options, workdir, pet=pet, edition=edition)]
    import SimpleITK as sitk

    from petct.click_simulation import simulate_clicks
    from petct.imageio import read_image
    clicks = simulate_clicks(mask_zyx=sitk.GetArrayFromImage(read_image(case.seg)),
                             pet_zyx=sitk.GetArrayFromImage(read_image(case.suv)))
    return [_run_job(case, options, workdir, pet=pet, edition=edition, clicks=clicks.first(step), step=step)
            for step in edition.click_steps]


@dataclass(frozen=True)
class LoopRun:
    """One study's whole closed loop run by `python -m algorithm loop` (the model loaded once), and its steps."""

    output: Path  # step_K/ per step: the job's output and the scribbles it was given
    outcome: RunOutcome
    steps: int  # the steps it wrote

    def step_output(self, step: int) -> Path:
        return self.output / f"step_{step}"

    def step_outcome(self) -> RunOutcome:
        """What each step's job reports: the loop's exit, its time shared among its steps."""
        return dataclasses.replace(self.outcome, seconds=self.outcome.seconds / max(self.steps, 1))


def _run_loop_in_process(case: DryRunCase, options: DryRunOptions, workdir: Path, *, edition: Edition,
                         strategy: str) -> LoopRun:
    """The kit's algorithm on one study's whole loop in one process, under the steps' time limits together."""
    job = platform.lay_out_job(case, workdir / "loops", edition=edition, step=0)
    argv = [sys.executable, "-m", "algorithm", "loop", "--input", str(job.input_dir), "--ground-truth",
            str(case.seg.resolve()), "--output", str(job.output_dir), "--strategy", strategy,
            "--steps", str(options.steps), "--scribble-rule", options.scribble_rule]
    if options.model is not None:
        argv += ["--model", str(options.model.resolve())]
    env = {**os.environ, "TMPDIR": str(job.tmp_dir), CHALLENGE.name: edition.name,
           "PYTHONPATH": os.pathsep.join(filter(None, [str(KIT_ROOT), os.environ.get("PYTHONPATH")]))}
    limits = Limits(time_s=options.time_limit_s * options.steps, memory_bytes=options.memory_bytes)
    outcome = run_limited(argv, limits=limits, log=job.input_dir.parent / "log.txt", env=env)
    steps = sum(1 for step in range(options.steps) if (job.output_dir / f"step_{step}").is_dir())
    print(f"  {case.name}: the loop in one process (python -m algorithm loop): exit {outcome.exit_code}, "
          f"{steps} step(s) in {outcome.seconds:.1f} s", flush=True)
    return LoopRun(output=job.output_dir, outcome=outcome, steps=steps)


def _run_job(case: DryRunCase, options: DryRunOptions, workdir: Path, *, pet: Geometry, edition: Edition,
             clicks: Clicks | None = None, step: int | None = None, image_pks: tuple[str, str] | None = None,
             previous_output: Path | None = None, loop: LoopRun | None = None) -> StudyReport:
    """One algorithm job on one study, as the platform runs it, and the checks of what it left.

    `previous_output`: an earlier job's output folder, copied into this job's before it runs (the 2026
    loop leaves each step's output in place for the next). `loop`: the study's loop already ran in one
    process; its output of this step becomes the job's, checked as a job's.
    """
    job = platform.lay_out_job(case, workdir / "jobs", edition=edition, clicks=clicks, step=step, image_pks=image_pks)
    if previous_output is not None:
        shutil.copytree(previous_output, job.output_dir, dirs_exist_ok=True)
    limits = Limits(time_s=options.time_limit_s, memory_bytes=options.memory_bytes)
    if loop is not None:
        ended, earlier = _ended_in_loop(loop, step=step, job=job, clicks=clicks), False
    else:
        ended, earlier = _ended_job(job, case, options, limits=limits, edition=edition, step=step,
                                    clicks=clicks is not None)
    outcome = ended.outcome
    job.started_at, job.completed_at = ended.started_at, ended.completed_at
    check = JobCheck()
    # Checked, scored and passed on: the output as the job left it, not what a straggler writes afterwards.
    check.violations += platform.keep_output_at_end(job)
    check_run(outcome, limits=limits, check=check)
    if ended.input_changed:
        check.violations.append("the job changed files in its input folder, which is read-only on the platform")
    if outcome.exit_code == 0:
        check_output(job.output_at_end_dir, pet=pet, check=check, edition=edition)
        if edition.data_centric_output:
            check_data_centric(job.output_at_end_dir, check=check)
    ran = parse_ran_line(outcome.log.read_text(errors="replace")) if outcome.log.is_file() else None
    status = "ok" if check.passed else "FAIL"
    report = StudyReport(case=case.name, lesions=case.lesions, outcome=outcome, check=check,
                         log_tail=tail(outcome.log), job=job, step=step, ran=ran)
    print(f"  {report.label}: {status} in {outcome.seconds:.1f} s{' (finished earlier)' if earlier else ''}",
          flush=True)
    return report


def _ended_job(job: platform.AlgorithmJob, case: DryRunCase, options: DryRunOptions, *, limits: Limits,
               edition: Edition, step: int | None, clicks: bool) -> tuple[jobstore.StoredJob, bool]:
    """The job's outcome, and whether it finished in an earlier run (options.job_store) rather than now."""
    if options.job_store is None:
        return _run_limited_job(job, options, limits=limits, edition=edition), False
    key = jobstore.job_key(study=case.name, step=step, images=[case.suv, case.ctres],
                           clicks_file=job.input_dir / CLICKS_JSON if clicks else None,
                           runner=_runner_identity(options, edition))
    stored = jobstore.restore(options.job_store, key, log=job.input_dir.parent / "log.txt", output_dir=job.output_dir)
    if stored is not None:
        return stored, True
    ended = _run_limited_job(job, options, limits=limits, edition=edition)
    jobstore.save(options.job_store, key, ended, output_dir=job.output_dir)
    return ended, False


def _run_limited_job(job: platform.AlgorithmJob, options: DryRunOptions, *, limits: Limits,
                     edition: Edition) -> jobstore.StoredJob:
    """Run the job under the platform's limits; its outcome and whether it wrote into its input."""
    before = snapshot(job.input_dir)
    argv, env, on_timeout, after = _job_command(job, options)
    if not options.image:  # an image's own settings choose its profile (docs/editions.md)
        env[CHALLENGE.name] = edition.name  # the kit's algorithm (and any command reading it) follows the profile
    started_at = datetime.now(timezone.utc)
    # run_limited returns once the job's whole process tree is gone: only then is its output checked.
    outcome = run_limited(argv, limits=limits, log=job.input_dir.parent / "log.txt", env=env, on_timeout=on_timeout,
                          after=after)
    completed_at = datetime.now(timezone.utc)
    if options.image:
        outcome.peak_rss_bytes = None  # that of the docker client; Docker enforces --memory itself
    return jobstore.StoredJob(outcome=outcome, input_changed=snapshot(job.input_dir) != before,
                              started_at=started_at, completed_at=completed_at)


def _runner_identity(options: DryRunOptions, edition: Edition) -> dict:
    """What a job's result depends on besides its inputs: a stored job run otherwise is run again."""
    return {"command": options.command, "image": options.image, "model": str(options.model) if options.model else None,
            "time_limit_s": options.time_limit_s, "memory_bytes": options.memory_bytes, "edition": edition.name,
            "gpus": options.gpus}


def _note_late_writes(studies: list[StudyReport]) -> None:
    """Warn of each job whose output changed after it ended: some process of it outlived the job."""
    for s in studies:
        if s.job is not None and platform.output_changed_since_end(s.job):
            s.check.warnings.append("its /output changed after the job ended: a process outlived the job (the "
                                    "platform stops the container with its main process); the output as the job "
                                    "left it was checked and scored")


def _ended_in_loop(loop: LoopRun, *, step: int, job: platform.AlgorithmJob,
                   clicks: Clicks | None) -> jobstore.StoredJob:
    """The study's one-process loop already ran: this step's part of it as the job's outcome."""
    started_at = datetime.now(timezone.utc)
    outcome = _from_loop(loop, step=step, job=job, clicks=clicks)
    return jobstore.StoredJob(outcome=outcome, input_changed=False, started_at=started_at,
                              completed_at=datetime.now(timezone.utc))


def _from_loop(loop: LoopRun, *, step: int, job: platform.AlgorithmJob, clicks: Clicks | None) -> RunOutcome:
    """The loop's output of `step` as the job's; a failed outcome when it has none or its scribbles differ."""
    from petct.scribbles import read_scribbles

    folder = loop.step_output(step)
    outcome = loop.step_outcome()
    if not folder.is_dir():
        return dataclasses.replace(outcome, exit_code=outcome.exit_code or 1)
    given = read_scribbles(folder / CLICKS_JSON)
    if given.tumor != (clicks or Clicks()).tumor or given.background != (clicks or Clicks()).background:
        raise InputError(f"the in-process loop gave step {step} other scribbles than the dry run simulates",
                         path=folder / CLICKS_JSON)
    shutil.copytree(folder, job.output_dir, dirs_exist_ok=True, ignore=shutil.ignore_patterns(CLICKS_JSON))
    return dataclasses.replace(outcome, exit_code=0)


def _job_command(job: platform.AlgorithmJob, options: DryRunOptions):
    """argv, environment, timeout hook and clean-up hook of one job."""
    if options.image:
        name = f"petct-dry-run-{job.pk[:12]}"
        # Read where the job runs: on a Dask GPU worker, CUDA_VISIBLE_DEVICES names that worker's GPU (and an
        # empty list, no GPU: images.container_engine.gpu_flags gives none).
        devices = visible_gpus()
        gpus = gpu_count() > 0 if options.gpus is None else options.gpus
        argv = docker_run_argv(image=options.image, input_dir=job.input_dir, output_dir=job.output_dir,
                               tmp_dir=job.tmp_dir, memory=docker_size(options.memory_bytes),
                               shm_size=docker_size(options.memory_bytes // 2), gpus=gpus, gpu_devices=devices,
                               model_dir=options.model, name=name, docker=options.container_engine)
        env = engine_env(options.container_engine)
        return (argv, env, lambda: _docker_quietly(options.container_engine, "kill", name, env=env),
                lambda: _docker_quietly(options.container_engine, "rm", "-f", name, env=env))
    template = options.command or default_command()
    if options.command is None and options.model is not None:
        template = [*template, "--model", str(options.model.resolve())]
    argv = command_argv(template, input_dir=job.input_dir, output_dir=job.output_dir)
    env = {**os.environ, "TMPDIR": str(job.tmp_dir)}  # the platform gives every job an empty /tmp
    if options.command is None:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(KIT_ROOT), os.environ.get("PYTHONPATH")]))
    return argv, env, None, None


def _docker_quietly(engine: str, *args: str, env: dict[str, str] | None) -> None:
    """A clean-up docker/podman command; its failure (the container already gone) changes no verdict."""
    try:
        subprocess.run([engine, *args], capture_output=True, env=env, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        pass


def _evaluate(studies: list[StudyReport], cases: list[DryRunCase], workdir: Path, *, edition: Edition
              ) -> EvaluationReport:
    """The kit's evaluation container mode on the outputs of the jobs that passed."""
    if edition.scribbles:  # scored in-process: the platform's evaluation cannot tell a job's step
        from app.dryrun.closed_loop import evaluate_loops
        return evaluate_loops(studies, cases)
    passed = [s for s in studies if s.check.passed]
    if not passed:
        return EvaluationReport(exit_code=None, seconds=0.0, problems=["no study met the contract; nothing to score"])
    by_name = {c.name: c for c in cases}
    eval_in = platform.lay_out_evaluation([(s.job, s.check.mask) for s in passed], workdir / "evaluation" / "input",
                                          edition=edition)
    studies_passed = list(dict.fromkeys(s.case for s in passed))
    ground_truth = platform.lay_out_ground_truth([by_name[name] for name in studies_passed],
                                                 workdir / "evaluation" / "gt")
    eval_out = workdir / "evaluation" / "output"
    argv = [sys.executable, "-m", "evaluation", "--input", str(eval_in), "--ground-truth", str(ground_truth),
            "--output", str(eval_out), "--workers", "2", "--challenge", edition.name]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(KIT_ROOT), os.environ.get("PYTHONPATH")]))}
    outcome = run_limited(argv, limits=Limits(time_s=EVALUATION_TIME_LIMIT_S, memory_bytes=2**62),
                          log=workdir / "evaluation" / "log.txt", env=env)
    report = EvaluationReport(exit_code=outcome.exit_code, seconds=outcome.seconds)
    metrics_path = eval_out / METRICS_JSON
    if not metrics_path.is_file():
        report.problems.append(f"evaluation wrote no metrics.json (exit status {outcome.exit_code}): "
                               f"{tail(outcome.log, 5)}")
        return report
    try:
        metrics = read_json(metrics_path, what="the evaluation's metrics.json")
    except InputError as exc:
        report.problems.append(str(exc))
        return report
    report.metrics = metrics
    report.aggregates = metrics.get("aggregates", {})
    for problem in metrics.get("errors", []):
        report.problems.append(f"study {problem.get('study') or '?'}: {problem.get('reason')}")
    # Keys under `case` have dots replaced (the leaderboard reads dotted paths); each record keeps its study name.
    by_study = {record.get("study", key): record for key, record in metrics.get("case", {}).items()}
    for s in studies:
        record = by_study.get(s.case)
        # Interactive records hold one set of metrics per click step.
        s.metrics = record if s.step is None or record is None else (record.get("steps") or {}).get(str(s.step))
    if outcome.exit_code != 0 and not report.problems:
        report.problems.append(f"evaluation exit status {outcome.exit_code}: {tail(outcome.log, 5)}")
    return report


def _write_results(options: DryRunOptions, studies: list[StudyReport], evaluation: EvaluationReport) -> None:
    """metrics.json as the evaluation wrote it, dry-run.json with every verdict, logs, and JUnit if asked."""
    out = options.output
    out.mkdir(parents=True, exist_ok=True)
    if evaluation.metrics is not None:
        write_json_atomic(evaluation.metrics, out / METRICS_JSON)
    for s in studies:
        name = s.case if s.step is None else f"{s.case}_step{s.step:02d}"
        if s.outcome is not None:  # a 2026 step scored 0 without a job has no log
            shutil.copyfile(s.outcome.log, _fresh(out / "logs" / f"{name}.log"))
    if options.csv is not None and evaluation.metrics is not None and options.challenge_scribbles:
        from app.dryrun.closed_loop import CSV_COLUMNS, csv_rows
        from evaluation.case_csv import write_case_csv
        write_case_csv(options.csv, columns=CSV_COLUMNS, rows=csv_rows(evaluation.metrics))
    write_json_atomic({
        "passed": all(s.check.passed for s in studies) and evaluation.passed,
        "challenge": options.challenge,
        "studies": [{"study": s.case, "lesions": s.lesions, "step": s.step, "job": s.job.pk if s.job else None,
                     "exit_code": s.outcome.exit_code if s.outcome else None,
                     "timed_out": s.outcome.timed_out if s.outcome else None,
                     "seconds": round(s.outcome.seconds, 3) if s.outcome else None,
                     "peak_rss_bytes": s.outcome.peak_rss_bytes if s.outcome else None,
                     "violations": s.check.violations,
                     "warnings": s.check.warnings, "engine": s.ran, "metrics": s.metrics} for s in studies],
        "evaluation": {"exit_code": evaluation.exit_code, "problems": evaluation.problems,
                       "aggregates": evaluation.aggregates},
    }, out / "dry-run.json")
    if options.junit is not None:
        write_junit(options.junit, studies=studies, evaluation=evaluation)


def _write_html_report(options: DryRunOptions, cases: list[DryRunCase], evaluation: EvaluationReport) -> Path | None:
    """report.html beside metrics.json, with the MIP of every study (while the jobs' files still exist)."""
    if evaluation.metrics is None:
        return None
    from evaluation.html_report.steps import steps_report_builder
    build = steps_report_builder(edition_named(options.challenge))
    if build is not None:  # the report of the steps' curves
        try:
            return build([f"dry-run={options.output / METRICS_JSON}"], options.output / "report.html")
        except (InputError, OSError) as exc:
            print(f"  report: not written: {exc}", flush=True)
            return None
    from evaluation.html_report.build import ReportOptions, build_report_html

    report = ReportOptions(metrics=[f"dry-run={options.output / METRICS_JSON}"], output=options.output / "report.html",
                           mip="all", suv_files={c.name: c.suv for c in cases})
    try:
        path, problems = build_report_html(report)
    except (InputError, OSError) as exc:
        print(f"  report: not written: {exc}", flush=True)
        return None
    for problem in problems:
        print(f"  report: {problem}", flush=True)
    return path


def _fresh(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)
    return path


def _summarise(studies: list[StudyReport], evaluation: EvaluationReport, options: DryRunOptions, *,
               seconds: float) -> int:
    print()
    print(table(studies))
    for problem in evaluation.problems:
        print(f"  evaluation: FAIL: {problem}")
    failed = [s.label for s in studies if not s.check.passed]
    ok = not failed and evaluation.passed
    print()
    if evaluation.aggregates and options.challenge_scribbles:
        from app.dryrun.closed_loop import summary_line
        print(f"closed loop: {summary_line(evaluation.aggregates)}")
    elif evaluation.aggregates:
        print(f"evaluation: {aggregates_line(evaluation.aggregates)}")
    verdict = "PASSED" if ok else "FAILED"
    detail = f"{len(studies) - len(failed)}/{len(studies)} {'jobs' if any(s.step is not None for s in studies) else 'studies'} met the contract"
    if failed:
        detail += f" (failed: {', '.join(failed)})"
    detail += ", evaluation " + ("scored them" if evaluation.passed else "failed")
    print(f"dry run {verdict}: {detail}; {seconds:.1f} s. Results in {options.output}"
          + (f", JUnit report {options.junit}" if options.junit else ""))
    return EXIT_OK if ok else EXIT_VIOLATION
