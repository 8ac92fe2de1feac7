"""`python -m app campaign`: several submissions over one case set, each run and scored as the dry run does it
(app/dryrun: the platform's layout, limits, contract checks, the edition's protocol, the evaluation), into one
campaign folder: `teams/<team>/` (the dry run's metrics.json, dry-run.json and logs), `leaderboard.json`,
`leaderboard.txt` and `report.html`.

Teams run one after another here, or on Dask with --workers/--scheduler (imported only then): one task per
team and study runs that team's jobs on that study, then one task per team scores them. A
team's folder is filled under a temporary name and renamed when its dry run has ended, with `team.json` in
it: a rerun skips the teams whose folder exists. Until then its finished jobs are kept in `jobs/<team>/`
(app/dryrun/jobstore.py), so a team killed midway reruns only the jobs that had not finished, and neither a
half-written team folder nor a half-saved job is ever taken for a finished one.

The protocol is the edition's (petct.editions), as the dry run runs it: one job per study, or 2025's clicked
steps; an edition the dry run learns (the closed scribble loop) is a campaign's protocol with no change here.
"""
from __future__ import annotations

import dataclasses
import shutil
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from app.dryrun.jobstore import JOB_JSON
from app.dryrun.run import DryRunOptions, run_dry_run, study_names
from petct.atomic import atomic_path
from petct.editions import edition as edition_named
from petct.errors import InputError
from petct.gpus import gpu_count, local_gpu_ids
from petct.jsonio import read_json, write_json_atomic
from petct.layout import METRICS_JSON
from petct.studykey import safe_key

TEAM_JSON = "team.json"


@dataclass(frozen=True)
class Team:
    name: str
    command: str | None = None  # a local command with {input} and {output}, as dry-run --command
    image: str | None = None  # a container image, as dry-run --image
    model: Path | None = None


@dataclass(frozen=True)
class TeamResult:
    name: str
    exit_code: int  # the dry run's: 0 passed, 1 a contract violation or a failed evaluation
    seconds: float
    skipped: bool = False  # finished by an earlier run


def teams_from(*, commands: list[str], images: list[str], models: list[str]) -> list[Team]:
    """Teams from TEAM=VALUE options; each team has one command or one image, and at most one model."""
    runners: dict[str, dict] = {}
    for option, values in (("command", commands), ("image", images)):
        for name, value in map(_team_value, values):
            if name in runners:
                raise InputError(f"team {name!r} is given twice (--command/--image)")
            runners[name] = {option: value}
    for name, value in map(_team_value, models):
        if name not in runners:
            raise InputError(f"--model {name}=...: no --command or --image names team {name!r}")
        runners[name]["model"] = Path(value)
    if not runners:
        raise InputError("no teams: give --command TEAM=CMD or --image TEAM=IMAGE, once per team")
    return [Team(name=name, **fields) for name, fields in sorted(runners.items())]


def _team_value(text: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep or not name or not value:
        raise InputError(f"expected TEAM=VALUE, got {text!r}")
    if safe_key(name) != name:
        raise InputError(f"team name {name!r}: use letters, digits, - and _ only (it names a folder)")
    return name, value


def team_options(team: Team, base: DryRunOptions, campaign: Path, *, output: Path) -> DryRunOptions:
    """The dry run of one team: its runner and model, its job store."""
    return dataclasses.replace(base, command=team.command, image=team.image, model=team.model, output=output,
                               workdir=None, junit=None, job_store=job_store(campaign, team.name))


def run_team_study(team: Team, base: DryRunOptions, campaign: Path, study: str) -> int:
    """One team's jobs on one study (a Dask task), kept in the team's job store for the team's run to score."""
    options = dataclasses.replace(team_options(team, base, campaign, output=campaign / "teams"),
                                  only_studies=(study,))
    try:
        return run_dry_run(options)
    except InputError as exc:  # the team's run meets it again and reports it
        print(f"team {team.name}, study {study}: error: {exc}", flush=True)
        return 2


def run_team(team: Team, base: DryRunOptions, campaign: Path, *, after: object = None) -> TeamResult:
    """One team's dry run into campaign/teams/<team>/, renamed into place when it has ended.

    `after`: on Dask, the team's study tasks, so that this task starts once they have all ended (their jobs
    are then in the job store, and this run scores them).
    """
    final = campaign / "teams" / team.name
    if (final / TEAM_JSON).is_file():
        return TeamResult(team.name, int(read_json(final / TEAM_JSON, what="team record")["exit_code"]), 0.0, True)
    partial = campaign / "teams" / f".partial-{team.name}-{uuid.uuid4().hex[:8]}"
    started = time.monotonic()
    options = team_options(team, base, campaign, output=partial)
    try:
        code = run_dry_run(options)
    except InputError as exc:  # e.g. an image that is not there: this team only, and not finished
        print(f"team {team.name}: error: {exc}", flush=True)
        shutil.rmtree(partial, ignore_errors=True)
        return TeamResult(team.name, 2, round(time.monotonic() - started, 3))
    result = TeamResult(team.name, code, round(time.monotonic() - started, 3))
    write_json_atomic({"team": team.name, "command": team.command, "image": team.image,
                       "model": str(team.model) if team.model else None, "exit_code": code,
                       "seconds": result.seconds}, partial / TEAM_JSON)
    if final.exists():  # a folder without team.json: not finished; replaced
        shutil.rmtree(final)
    partial.rename(final)
    shutil.rmtree(options.job_store, ignore_errors=True)  # the team's folder now holds its results
    return result


def job_store(campaign: Path, team: str) -> Path:
    """Where a team's finished jobs are kept until the team has finished: a killed team reruns only the rest."""
    return campaign / "jobs" / team


def run_campaign(teams: list[Team], base: DryRunOptions, campaign: Path, *, workers: int | None = None,
                 scheduler: str | None = None) -> list[TeamResult]:
    """Every team's dry run (skipping finished ones), then the leaderboard and the report."""
    (campaign / "teams").mkdir(parents=True, exist_ok=True)
    if workers is None and scheduler is None:
        results = [run_team(team, base, campaign) for team in teams]
    else:
        results = _on_dask(teams, base, campaign, workers=workers, scheduler=scheduler)
    rank(teams, campaign, challenge=base.challenge, images=base.cases, report=base.report)
    return results


def _on_dask(teams: list[Team], base: DryRunOptions, campaign: Path, *, workers: int | None,
             scheduler: str | None) -> list[TeamResult]:
    """One task per team; a team whose worker died is retried on another (Dask's allowed-failures), and
    continues from its finished jobs; a team that fails in the task fails alone; a lost scheduler ends the run
    in one line."""
    from distributed import as_completed  # Dask: an optional extra
    from distributed.client import FutureCancelledError
    from distributed.comm.core import CommClosedError

    from algorithm.batch_cluster import GPU, dask_client, gpu_worker_count

    # Local workers on a GPU machine: each pinned to one GPU (CUDA_VISIBLE_DEVICES), which its jobs' containers get.
    gpus = [] if scheduler is not None or base.gpus is False else local_gpu_ids(gpu_count())
    results: dict[str, TeamResult] = {}
    try:
        with dask_client(scheduler=scheduler, workers=workers, gpus=gpus) as client:
            # When workers declare GPUs, each study's jobs take one: one study per GPU at a time.
            resources = {GPU: 1} if gpu_worker_count(client) else None
            futures = {_submit_team(client, team, base, campaign.resolve(), resources=resources): team
                       for team in teams}
            for future in as_completed(futures):
                team = futures[future]
                results[team.name] = _team_result(future, team)
    except (FutureCancelledError, CommClosedError, OSError) as exc:
        done = [t.name for t in teams if (campaign / "teams" / t.name / TEAM_JSON).is_file()]  # on disk now
        kept = sum(len(list(job_store(campaign, t.name).glob(f"*/{JOB_JSON}"))) for t in teams if t.name not in done)
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise InputError(f"the Dask scheduler {scheduler or '(local)'} went away or cannot be reached ({first}): "
                         f"{len(done)} of {len(teams)} teams finished ({', '.join(done) or 'none'}), {kept} finished "
                         f"job{'' if kept == 1 else 's'} of the others kept in {campaign / 'jobs'}; run the same "
                         "command again to continue (finished teams and jobs are not run again)") from None
    return [results[team.name] for team in teams]


def _submit_team(client, team: Team, base: DryRunOptions, campaign: Path, *, resources: dict | None):
    """A task per study (the team's jobs on it), then the team's run, which finds them finished and scores."""
    token = uuid.uuid4().hex[:8]  # a rerun's tasks never meet an earlier run's results on a shared scheduler
    studies = [] if (campaign / "teams" / team.name / TEAM_JSON).is_file() else study_names(base)
    after = [client.submit(run_team_study, team, base, campaign, study, key=f"campaign-{token}-{team.name}-{study}",
                           pure=False, resources=resources) for study in studies]
    return client.submit(run_team, team, base, campaign, after=after, key=f"campaign-{token}-{team.name}", pure=False)


def _team_result(future, team: Team) -> TeamResult:
    from distributed import KilledWorker
    from distributed.client import FutureCancelledError
    from distributed.comm.core import CommClosedError

    try:
        return future.result()
    except (FutureCancelledError, CommClosedError):  # the scheduler went away: not this team's doing
        raise
    except KilledWorker as exc:
        problem = f"a worker running this team's jobs died each time it was tried ({exc})"
    except Exception as exc:  # noqa: BLE001 - this team's failure only
        problem = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
    print(f"team {team.name}: error: {problem}; run the same command again to retry it", flush=True)
    return TeamResult(team.name, 2, 0.0)


def rank(teams: list[Team], campaign: Path, *, challenge: str, images: Path | None, report: bool = True) -> None:
    """leaderboard.json and .txt over the teams that were scored, and (with `report`) report.html comparing them."""
    from evaluation.leaderboards import edition_leaderboard

    edition = edition_named(challenge)
    scored = [f"{t.name}={campaign / 'teams' / t.name / METRICS_JSON}" for t in teams
              if (campaign / "teams" / t.name / METRICS_JSON).is_file()]
    if not scored:
        return
    board = edition_leaderboard(scored, challenge=challenge)
    write_json_atomic({"leaderboard": board.rows, "subsets": None, "challenge": challenge},
                      campaign / "leaderboard.json")
    text = board.text + "\n"
    if edition.rank_needs_subsets:
        text += f"(over all studies: {challenge} ranks per tracer x centre subset; use python -m evaluation rank " \
                "--studies with the teams' metrics.json)\n"
    with atomic_path(campaign / "leaderboard.txt") as tmp:
        tmp.write_text(text)
    if not report:  # an earlier run's report would contradict this leaderboard
        (campaign / "report.html").unlink(missing_ok=True)
        return
    from evaluation.html_report.steps import steps_report_builder

    build = steps_report_builder(edition)
    if build is not None:  # 2025's click curves, 2026's closed loops
        build(scored, campaign / "report.html")
        return
    from evaluation.html_report.build import ReportOptions, build_report_html

    build_report_html(ReportOptions(metrics=scored, output=campaign / "report.html", images=images))
