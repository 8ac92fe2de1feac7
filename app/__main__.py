"""`python -m app`: the kit's service (`serve`, `participants`, `phases`), dry run, campaign, model packaging.

  serve          read settings -> load the inference engine -> answer HTTP requests until stopped
  participants   add, list or revoke the service's participants (a new token is printed once)
  phases         create or list the service's phases (case set, submission budget, ranking)
  dry-run        lay out studies as grand-challenge does -> run the algorithm on each -> check the
                 outputs -> score them with the evaluation container -> print a table, write reports
  campaign       each team (--command/--image TEAM=...) as dry-run runs it, on Dask workers if asked, skipping
                 teams finished earlier -> leaderboard.json/.txt -> report.html comparing the teams
  package-model  check an nnU-Net results folder as the algorithm finds it -> write model.tar.gz -> print
                 its size and sha256
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from petct.argtypes import byte_size, positive_number, whole_number
from petct.errors import InputError

EXIT_USAGE = 2


def _parser() -> argparse.ArgumentParser:
    from app.dryrun.run import DryRunOptions
    from app.service.settings import DEFAULT_DATA_DIR, add_options

    parser = argparse.ArgumentParser(prog="python -m app", description=__doc__.split("\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = commands.add_parser("serve", help="run the HTTP API (OpenAPI docs at /docs)")
    add_options(serve)
    serve.add_argument("--engine", choices=("auto", "nnunet", "baseline"), default="auto",
                       help="inference engine (default: %(default)s)")
    serve.add_argument("--log-level", default="info", choices=("debug", "info", "warning", "error"))

    people = commands.add_parser("participants", help="add, list or revoke participants (organiser mode)")
    people.add_argument("action", choices=("add", "list", "revoke"))
    people.add_argument("name", nargs="?", help="participant name (add, revoke): letters, digits, - and _")
    people.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR, help="the service's (default: %(default)s)")

    phases = commands.add_parser("phases", help="create or list phases (organiser mode)")
    phases.add_argument("action", choices=("create", "list"))
    phases.add_argument("name", nargs="?", help="phase name (create)")
    phases.add_argument("--cases", type=Path, metavar="FILE", help="case names, one a line (create)")
    phases.add_argument("--per-day", type=whole_number(1), help="submissions per participant per UTC day (create)")
    phases.add_argument("--total", type=whole_number(1), help="submissions per participant in all (create)")
    phases.add_argument("--show-cases", action="store_true",
                        help="return per-case results (default: aggregates over the case set only)")
    phases.add_argument("--ground-truth", type=Path, metavar="DIR",
                        help="the ground-truth folder the server will be given (create): every case must be in it")
    phases.add_argument("--rank", choices=("best", "latest"), default="best",
                        help="which submission of each participant the leaderboard ranks (default: %(default)s)")
    phases.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR, help="the service's (default: %(default)s)")

    defaults = DryRunOptions()
    dry = commands.add_parser("dry-run", help="check an algorithm as grand-challenge would run and score it")
    runner = dry.add_mutually_exclusive_group()
    runner.add_argument("--command", help='local command run per study, with {input} and {output} placeholders, '
                                          'e.g. "python -m mypkg --in {input} --out {output}" '
                                          "(default: the kit's python -m algorithm)")
    runner.add_argument("--image", metavar="TAG", help="Docker image, run with the platform's flags "
                                                       "(no network, read-only /input, memory and pid limits, ...)")
    dry.add_argument("--model", type=Path, help="nnU-Net results folder: with --image mounted read-only at "
                                                "/opt/ml/model, else passed as --model to the kit's algorithm")
    dry.add_argument("--workdir", type=Path, help="where the jobs' folders go, kept afterwards "
                                                  "(default: a temporary folder, removed)")
    dry.add_argument("--output", type=Path, default=defaults.output,
                     help="where metrics.json, dry-run.json and the job logs go (default: %(default)s)")
    dry.add_argument("--junit", type=Path, metavar="FILE", help="write a JUnit XML report here")
    loop = _add_run_options(dry, defaults)
    loop.add_argument("--csv", type=Path, metavar="FILE", help="also write one row per study (areas, final values)")

    campaign = commands.add_parser("campaign", help="several submissions over one case set, each as dry-run runs "
                                                    "and scores it; leaderboard and report; a rerun continues")
    campaign.add_argument("--command", action="append", default=[], metavar="TEAM=CMD", dest="team_commands",
                          help="a team's local command with {input} and {output}, as dry-run --command (repeat)")
    campaign.add_argument("--image", action="append", default=[], metavar="TEAM=IMAGE",
                          help="a team's container image, as dry-run --image (repeat)")
    campaign.add_argument("--model", action="append", default=[], metavar="TEAM=PATH",
                          help="a team's nnU-Net results folder, as dry-run --model (repeat)")
    campaign.add_argument("--output", type=Path, default=Path("out/campaign"),
                          help="the campaign folder: teams/<team>/, leaderboard.json/.txt, report.html "
                               "(default: %(default)s)")
    _add_run_options(campaign, defaults)
    where = campaign.add_mutually_exclusive_group()
    where.add_argument("--workers", type=whole_number(1), metavar="N", help="run the teams on N local Dask workers")
    where.add_argument("--scheduler", metavar="ADDRESS", help="run the teams on the Dask cluster at ADDRESS")

    package = commands.add_parser("package-model", help="an nnU-Net results folder as the model tarball "
                                                        "grand-challenge unpacks into /opt/ml/model")
    package.add_argument("results", type=Path, metavar="RESULTS_FOLDER",
                         help="the trainer folder (plans.json, dataset.json, fold_K/checkpoint_final.pth) or a "
                              "folder holding exactly one, at most two levels down")
    package.add_argument("output", type=Path, metavar="MODEL_TAR_GZ", help="e.g. model.tar.gz")
    return parser


def _add_run_options(parser: argparse.ArgumentParser, defaults) -> argparse._ArgumentGroup:
    """How studies are run and scored, shared by dry-run and campaign; returns the 2026 loop's group."""
    from petct.editions import (
        CHALLENGE_CHOICES,
        PUBLISHED_CODE_SCRIBBLE_STEPS,
        SCRIBBLE_RULES,
        SCRIBBLE_STRATEGIES,
        default_challenge,
    )

    parser.add_argument("--cases", type=Path, help="folder of <case>/{SUV,CTres,SEG} images, or the dataset's "
                                                   "<patient>/<study folder>/{SUV,CTres,SEG} (study <patient>__<study "
                                                   "folder>) (default: built-in phantom studies)")
    parser.add_argument("--phantoms", type=whole_number(1), default=defaults.phantoms,
                        help="phantom studies (default: %(default)s)")
    parser.add_argument("--phantom-size", choices=("tiny", "small"), default=defaults.phantom_size,
                        help="grid of the phantom studies: tiny 64x64x48 voxels (seconds), small 128x128x96 "
                             "(default: %(default)s)")
    parser.add_argument("--time-limit", type=positive_number, default=defaults.time_limit_s, metavar="SECONDS",
                        help="per study (default: %(default)g; the platform allows 5 min to 24 h)")
    parser.add_argument("--memory", type=byte_size, default=defaults.memory_bytes, metavar="SIZE",
                        help="per study, e.g. 16g (default: 16g); Docker gets half of it as /dev/shm")
    parser.add_argument("--container-engine", choices=("docker", "podman"), default=None,
                        help="--image: run it with this (default: docker when its daemon answers, else podman)")
    parser.add_argument("--gpus", action=argparse.BooleanOptionalAction, default=defaults.gpus,
                        help="--image: give the container the GPUs (those CUDA_VISIBLE_DEVICES names, else all; "
                             "default: when nvidia-smi lists a GPU); a campaign's --workers are pinned one to a GPU "
                             "unless --no-gpus")
    parser.add_argument("--report", action=argparse.BooleanOptionalAction, default=defaults.report,
                        help="write report.html: per-study plots and MIPs, or the 2025/2026 step curves (a "
                             "campaign's compares the teams; default: yes; --no-report saves its figures' seconds "
                             "when only the verdict and metrics.json are needed)")
    parser.add_argument("--challenge", choices=CHALLENGE_CHOICES, default=default_challenge(),
                        help="the autoPET edition's contract: outputs checked, 11 click steps per study for "
                             "autopet-2025-interactive, the closed scribble loop for autopet-2026-interactive, "
                             "scoring (README, Editions; default: %(default)s)")
    loop = parser.add_argument_group("autopet-2026-interactive (the closed scribble loop)")
    loop.add_argument("--strategy", choices=(*SCRIBBLE_STRATEGIES, "mixed"), default=defaults.strategy,
                      help="how scribbles are drawn; mixed: each strategy on a third of the studies, dealt by a "
                           "fixed seeded rule (default: %(default)s)")
    loop.add_argument("--scribbles-dir", type=Path, metavar="DIR",
                      help="replay recorded scribbles instead: DIR/<study>_step<K>.json for K = 1..steps-1")
    loop.add_argument("--steps", type=whole_number(2), default=defaults.steps,
                      help=f"steps per study, the first without scribbles (default: %(default)s, the organisers' "
                           f"web page; their code runs {PUBLISHED_CODE_SCRIBBLE_STEPS})")
    loop.add_argument("--scribble-rule", choices=SCRIBBLE_RULES, default=defaults.scribble_rule,
                      help="a mask without false positives or without false negatives: kit scribbles the side "
                           "with errors, published fails the step as the organisers' loop does "
                           "(default: %(default)s)")
    return loop


def _run_options(args: argparse.Namespace) -> dict:
    """The DryRunOptions fields _add_run_options' options give."""
    return dict(cases=args.cases, phantoms=args.phantoms, phantom_size=args.phantom_size,
                time_limit_s=args.time_limit, memory_bytes=args.memory, container_engine=args.container_engine,
                gpus=args.gpus, report=args.report, challenge=args.challenge, strategy=args.strategy,
                scribbles_dir=args.scribbles_dir, steps=args.steps, scribble_rule=args.scribble_rule)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "serve":
            return _serve(args)
        if args.command == "participants":
            from app.service.admin import participants_command
            return participants_command(action=args.action, name=args.name, data_dir=args.data_dir)
        if args.command == "phases":
            from app.service.admin import PhaseRequest, phases_command
            return phases_command(action=args.action, data_dir=args.data_dir, request=PhaseRequest(
                name=args.name, cases=args.cases, per_day=args.per_day, total=args.total,
                show_cases=args.show_cases, rank=args.rank, ground_truth=args.ground_truth))
        if args.command == "package-model":
            return _package_model(args)
        if args.command == "campaign":
            return _campaign(args)
        return _dry_run(args)
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE


def serve() -> int:
    """The `petct-serve` command: `python -m app serve`."""
    return main(["serve", *sys.argv[1:]])


def dry_run() -> int:
    """The `petct-dry-run` command: `python -m app dry-run`."""
    return main(["dry-run", *sys.argv[1:]])


def _serve(args: argparse.Namespace) -> int:
    from app.service.serve import serve
    from app.service.settings import ServiceSettings

    return serve(ServiceSettings.from_options(args), engine=args.engine, log_level=args.log_level)


def _package_model(args: argparse.Namespace) -> int:
    from app.package_model import package_model
    from petct.sizes import format_size

    packed = package_model(args.results, args.output)
    print(f"{packed.path}: {format_size(packed.size_bytes)} ({packed.size_bytes} bytes), sha256 {packed.sha256}")
    where = "/opt/ml/model" if packed.trainer_folder == "." else f"/opt/ml/model/{packed.trainer_folder}"
    print(f"  unpacked into /opt/ml/model, the algorithm finds {where}: folds {', '.join(map(str, packed.folds))}")
    return 0


def _campaign(args: argparse.Namespace) -> int:
    from app.campaign import run_campaign, teams_from
    from app.dryrun.run import DryRunOptions

    try:
        teams = teams_from(commands=args.team_commands, images=args.image, models=args.model)
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    base = DryRunOptions(**_run_options(args))
    results = run_campaign(teams, base, args.output, workers=args.workers, scheduler=args.scheduler)
    for r in results:
        print(f"team {r.name}: {'finished earlier' if r.skipped else f'{r.seconds:.1f} s'}, "
              f"dry run {'PASSED' if r.exit_code == 0 else 'FAILED'}")
    print(f"campaign: {len(results)} teams in {args.output}; leaderboard {args.output / 'leaderboard.txt'}")
    return 0 if all(r.exit_code == 0 for r in results) else 1


def _dry_run(args: argparse.Namespace) -> int:
    from app.dryrun.run import DryRunOptions, run_dry_run

    return run_dry_run(DryRunOptions(command=args.command, image=args.image, model=args.model, workdir=args.workdir,
                                     output=args.output, junit=args.junit, csv=args.csv, **_run_options(args)))


if __name__ == "__main__":
    raise SystemExit(main())
