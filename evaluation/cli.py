"""The command line of `python -m evaluation`: container mode (the default), score-folders, score-pair, rank,
report, mip."""
from __future__ import annotations

import argparse
import os
from pathlib import Path

from petct.argtypes import positive_number, whole_number
from petct.editions import CHALLENGE_CHOICES, EDITIONS, SCRIBBLE_RULES, SCRIBBLE_STRATEGIES, default_challenge
from petct.environment import CHALLENGE
from petct.layout import DEFAULT_GROUND_TRUTH, DEFAULT_INPUT, DEFAULT_OUTPUT

CONTAINER = "container"
COMMANDS = (CONTAINER, "score-folders", "score-pair", "rank", "simulate-clicks", "next-scribbles", "report", "mip")
DEFAULT_TIMEOUT_S = 600.0

EXIT_OK = 0
EXIT_BAD_INPUT = 1  # some study could not be scored, or the input as a whole is unusable
EXIT_USAGE = 2  # bad options (argparse's status), or no input folder at all

DESCRIPTION = """\
Score lesion segmentations with the autoPET metrics (Dice, false positive and false negative volume).

Without a command (or with `container`), score a grand-challenge submission: read
<input>/predictions.json, find each job's mask and its ground truth, write <output>/metrics.json.
Exit status 1 when any study could not be scored (metrics.json still holds every result and the
reasons), unless --allow-partial; 2 for bad options, or when the input folder does not exist
(nothing is written then).

Ground truth and predictions may be flat files (PETCT_x.nii.gz, PETCT_x_SEG.mha), study folders
(PETCT_x/SEG.mha) or the public dataset's two levels (PETCT_x/<study folder>/SEG.nii.gz, study
PETCT_x__<study folder>). docs/metrics.md defines the metrics.

--challenge picks the edition's rules (README, Editions): with autopet-2025-interactive, container
mode groups each study's 11 jobs by their lesion-clicks.json input and scores the curves' areas;
with autopet-2024, `rank` needs the tracer x centre subsets; autopet-2026-interactive's closed loop is
scored by `python -m app dry-run` (container mode refuses it), one step by `score-pair` and
`next-scribbles`."""


def default_workers() -> int:
    """The CPUs this process may use, at most 4: each study needs about half a GB at full size."""
    return max(1, min(4, len(os.sched_getaffinity(0))))


def parse_args(argv: list[str]) -> argparse.Namespace:
    """Parse `argv`; container mode when the first word is not a command."""
    if not argv or (argv[0] not in COMMANDS and argv[0] not in ("-h", "--help")):
        argv = [CONTAINER, *argv]
    return _parser().parse_args(argv)


def _challenge_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--challenge", choices=CHALLENGE_CHOICES, default=default_challenge(),
                        help=f"the autoPET edition's rules (or set {CHALLENGE.name}; default: %(default)s)")


def _batch_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--csv", type=Path, metavar="FILE",
                        help="also write one row per case in the organisers' CSV columns")
    parser.add_argument("--workers", type=whole_number(1), default=default_workers(),
                        help="studies scored at once, each in its own process (default: %(default)s)")
    parser.add_argument("--timeout", type=positive_number, default=DEFAULT_TIMEOUT_S, metavar="SECONDS",
                        help="stop scoring a study after this long and report it (default: %(default)s)")
    parser.add_argument("--allow-partial", action="store_true",
                        help="exit 0 when at least one study was scored, even if others could not be")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m evaluation", description=DESCRIPTION,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    container = commands.add_parser(CONTAINER, help="score a grand-challenge submission (the default)")
    container.add_argument("--input", type=Path, default=DEFAULT_INPUT,
                           help="folder holding predictions.json and <job pk>/output/ (default: %(default)s)")
    container.add_argument("--ground-truth", type=Path, default=DEFAULT_GROUND_TRUTH,
                           help="folder of ground-truth masks (default: %(default)s)")
    container.add_argument("--output", type=Path, default=DEFAULT_OUTPUT,
                           help="folder to write metrics.json into (default: %(default)s)")
    container.add_argument("--prediction-path", default=None,
                           help="interface relative_path of the jobs' mask output (default: the edition's: "
                                + "; ".join(f"{e.name} {e.output_relative_path}" for e in EDITIONS.values()) + ")")
    _challenge_option(container)
    _batch_options(container)

    folders = commands.add_parser("score-folders", help="score a folder of predictions against a folder of ground truth")
    folders.add_argument("--ground-truth", type=Path, required=True, help="folder of ground-truth masks")
    folders.add_argument("--predictions", type=Path, required=True,
                         help="folder of predicted masks, paired with the ground truth by study name")
    folders.add_argument("--prediction-suffix", metavar="SUFFIX",
                         help="what follows the study name in a prediction's path, before the image extension: "
                              "'_pred' reads <study>_pred.nii.gz, '/PRED' reads <study>/PRED.nii.gz (the 2024 "
                              "data-centric baseline's names; default: the ground truth's naming rules)")
    folders.add_argument("--output", type=Path, required=True, help="metrics.json file to write")
    folders.add_argument("--nnunet-summary", type=Path, metavar="FILE",
                         help="also write the metrics in the shape of nnU-Net's summary.json (metric_per_case, "
                              "mean, foreground_mean) for tools that read nnUNetv2_evaluate_folder's output")
    _batch_options(folders)

    pair = commands.add_parser("score-pair", help="print one study's metrics as JSON")
    pair.add_argument("ground_truth", type=Path, metavar="GT")
    pair.add_argument("prediction", type=Path, metavar="PRED")
    pair.add_argument("--study", help="study name to report (default: from the ground truth's file name)")
    _challenge_option(pair)

    rank = commands.add_parser("rank", help="rank several submissions' metrics.json as the autoPET leaderboard does")
    rank.add_argument("submissions", nargs="+", metavar="[NAME=]METRICS_JSON",
                      help="a submission's metrics.json; NAME defaults to the file's folder name")
    rank.add_argument("--subsets", type=Path, metavar="JSON",
                      help='2024 rule: {"<study>": "<subset>"}; metrics are averaged and ranked per subset')
    rank.add_argument("--studies", type=Path, metavar="CSV",
                      help="2024 rule: a studies CSV with study, tracer and centre columns; each tracer x centre "
                           "pair is a subset")
    _challenge_option(rank)
    rank.add_argument("--output", type=Path, help="also write the leaderboard as JSON here")

    simulate = commands.add_parser("simulate-clicks", help="write 2025 lesion-clicks.json files from ground truth "
                                                           "(the organisers' simulation rules, seeded)")
    simulate.add_argument("ground_truth", type=Path, metavar="GT_DIR", help="folder of ground-truth masks")
    simulate.add_argument("output", type=Path, metavar="OUT_DIR",
                          help="folder to write <study>_clicks.json into (grand-challenge's Multiple points form)")
    simulate.add_argument("--pet", type=Path, metavar="PET_DIR",
                          help="folder of SUV images (<study>/SUV.*, <study>_SUV.*); default: the SUV image next "
                               "to each mask, as in the dataset's study folders")
    simulate.add_argument("--seed", type=int, default=42, help="random seed per study (default: %(default)s)")
    _scribble_command(commands)
    _report_commands(commands)
    return parser


def _scribble_command(commands) -> None:
    step = commands.add_parser(
        "next-scribbles", help="one step of the autoPET V closed loop: the next scribbles from a mask's errors")
    step.add_argument("--ground-truth", type=Path, required=True, metavar="GT", help="ground-truth mask")
    step.add_argument("--prediction", type=Path, required=True, metavar="PRED",
                      help="the algorithm's mask of the step just run")
    step.add_argument("--scribbles", type=Path, metavar="PREVIOUS_JSON",
                      help="the scribbles that step was given, either form (default: none, after step 0)")
    step.add_argument("--strategy", choices=SCRIBBLE_STRATEGIES, required=True, help="how a scribble is drawn")
    step.add_argument("--output", type=Path, required=True, metavar="NEXT_JSON",
                      help="file to write the accumulated scribbles to")
    step.add_argument("--gc", action="store_true",
                      help="write grand-challenge's Multiple points value (what the algorithm reads), not the "
                           "organisers' plain {tumor, background} form")
    step.add_argument("--rule", choices=SCRIBBLE_RULES, default="kit",
                      help="a mask with no false positive or no false negative voxel: 'kit' scribbles the side "
                           "with errors, 'published' fails as the organisers' loop does (exit 1) "
                           "(default: %(default)s)")


def _mip_rule(text: str) -> str:
    from evaluation.html_report.inputs import parse_mip

    try:
        parse_mip(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def _report_commands(commands) -> None:
    report = commands.add_parser(
        "report", help="one self-contained HTML report over one or more metrics.json (plots, tables, MIPs, ranking)")
    report.add_argument("metrics", nargs="+", metavar="[NAME=]METRICS_JSON",
                        help="a submission's metrics.json; NAME defaults to the file's folder name")
    report.add_argument("--output", type=Path, required=True, help="HTML file to write")
    report.add_argument("--studies", type=Path, metavar="CSV",
                        help="per-study CSV (a 'study' column, or 'key' as in dataset stats' studies.csv, and e.g. "
                             "diagnosis, tracer, centre) to break metrics down by")
    report.add_argument("--images", type=Path, metavar="DIR",
                        help="folder of studies (<study>/SUV.* or <study>_SUV.*) for the MIPs; masks come from "
                             "metrics.json's file names, else <study>/SEG.* and <study>/PRED.* beside the SUV")
    report.add_argument("--mip", type=_mip_rule, default="worst:20", metavar="worst:N|all",
                        help="MIPs of every study, or of the N worst by FPV, by FNV and by Dice (default: %(default)s)")
    report.add_argument("--resamples", type=whole_number(0), default=1000,
                        help="bootstrap resamples for ranking stability, 0 to skip (default: %(default)s)")
    report.add_argument("--log-axes", action="store_true", help="log axes on the predicted-vs-true volume plot")
    report.add_argument("--challenge", choices=CHALLENGE_CHOICES, default=None,
                        help="autopet-2025-interactive: the click track's curves, areas and leaderboard (on the "
                             "areas); autopet-2026-interactive: the report of closed loops (dry runs' metrics.json): "
                             "interaction curves, areas, categories, leaderboard (default: the per-study report)")

    mip = commands.add_parser("mip", help="one study's coronal and sagittal PET MIP with its lesion components, as PNG")
    mip.add_argument("suv", type=Path, metavar="SUV")
    mip.add_argument("ground_truth", type=Path, metavar="GT", help="ground-truth mask, or '-' for none")
    mip.add_argument("prediction", type=Path, metavar="PRED")
    mip.add_argument("--output", type=Path, required=True, help="PNG file to write")
    mip.add_argument("--window", type=float, nargs=2, default=(0.0, 10.0), metavar=("LOW", "HIGH"),
                     help="SUV window, white to black (default: 0 10)")
