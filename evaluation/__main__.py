"""`python -m evaluation`: score a submission and write metrics.json (`--help` for the modes).

Container mode, the default, as grand-challenge runs it:
  1. read <input>/predictions.json (one item per successful algorithm job) and index the ground truth;
  2. pair each ground-truth study with exactly one job, by the name of the job's PET (else CT) input;
  3. score every pair in its own process, in parallel;
  4. write <output>/metrics.json (`case`, `aggregates`, `errors`) atomically, report problems on stderr.
With --challenge autopet-2025-interactive, step 2 pairs each study with one job per click step (0..10)
and step 4 writes each study's curves, their areas and final values (evaluation.interactive).
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

from evaluation.cli import EXIT_BAD_INPUT, EXIT_OK, EXIT_USAGE, parse_args
from petct.errors import InputError
from petct.layout import METRICS_JSON, PREDICTIONS_JSON

# Each mode imports what it uses when it runs: `score-pair` on one study must not pay for the worker
# pool, predictions.json or the ranking (start-up is most of a one-study run; BENCHMARKS.md).
if TYPE_CHECKING:
    from evaluation.pairing import Case
    from evaluation.problems import Problem
    from evaluation.scoring import StudyResult


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else list(argv))
    if args.command == "score-pair":
        return score_pair(args)
    if args.command == "score-folders":
        return score_folders(args)
    if args.command == "rank":
        return rank_submissions(args)
    if args.command == "next-scribbles":
        return next_scribbles(args)
    if args.command == "simulate-clicks":
        from evaluation.simulate import simulate_folder
        return simulate_folder(ground_truth=args.ground_truth, output=args.output, pet=args.pet, seed=args.seed)
    if args.command == "report":
        return write_html_report(args)
    if args.command == "mip":
        return write_mip(args)
    return score_submission(args)


def score_submission(args) -> int:
    """Container mode: predictions.json and the ground-truth folder in, metrics.json out."""
    output = args.output / METRICS_JSON
    if not args.input.is_dir():  # not inside the platform's container: writing /output would litter the machine
        print(f"error: input folder {args.input} does not exist; run inside the evaluation container or pass "
              "--input DIR (nothing written)", file=sys.stderr)
        return EXIT_USAGE
    from evaluation.batch import score_cases
    from evaluation.pairing import match_jobs
    from evaluation.predictions import read_jobs
    from evaluation.problems import Problem
    from evaluation.studies import index_masks
    from petct.editions import edition as edition_named
    edition = edition_named(args.challenge)
    if edition.scribbles:  # a job's step is not in anything the platform hands the evaluation
        print(f"error: {edition.name} cannot be scored in container mode: the platform does not tell the "
              "evaluation which loop step each job was; score it with `python -m app dry-run --challenge "
              f"{edition.name}` (docs/editions.md) (nothing written)", file=sys.stderr)
        return EXIT_USAGE
    prediction_path = args.prediction_path or edition.output_relative_path
    try:
        jobs, problems = read_jobs(args.input / PREDICTIONS_JSON)
        ground_truth = index_masks(args.ground_truth, what="ground truth")
    except InputError as exc:  # nothing can be scored
        return finish([], [Problem.of(exc)], output=output, allow_partial=False, csv=args.csv)
    if edition.clicks:
        return score_interactive(args, jobs, ground_truth, problems, output=output, prediction_path=prediction_path)
    cases, unmatched = match_jobs(jobs, ground_truth, input_dir=args.input, prediction_path=prediction_path)
    results, failed = score_cases(cases, workers=args.workers, timeout_s=args.timeout)
    return finish(results, problems + unmatched + failed, output=output, allow_partial=args.allow_partial,
                  csv=args.csv)


def score_interactive(args, jobs, ground_truth, problems, *, output: Path, prediction_path: str) -> int:
    """The 2025 protocol: 11 jobs per study grouped by click count, scored together, summed up per study."""
    from evaluation.batch import score_cases
    from evaluation.case_csv import write_case_csv
    from evaluation.interactive import CSV_COLUMNS, aggregate_interactive, collect, group_by_step
    from evaluation.records import case_key, metrics_json
    from evaluation.report import print_problems, write_report
    studies, cases, steps_of, job_problems, broken = group_by_step(jobs, ground_truth, input_dir=args.input,
                                                         prediction_path=prediction_path)
    results, failed = score_cases(cases, workers=args.workers, timeout_s=args.timeout)
    complete, study_problems = collect(studies, cases, results, failed, broken, steps_of=steps_of)
    problems = problems + job_problems + study_problems
    print_problems(problems)
    keys: dict[str, str] = {}
    for study in complete:
        keys[study.study] = case_key(study.study, taken=set(keys.values()))
    report = metrics_json({keys[s.study]: s.to_json() for s in complete},
                          aggregates=aggregate_interactive(complete), errors=[p.to_json() for p in problems])
    target = output
    try:
        write_report(report, output)
        if args.csv is not None:
            target = args.csv
            write_case_csv(args.csv, columns=CSV_COLUMNS, rows=[s.csv_row() for s in complete])
    except OSError as exc:
        print(f"error: file {target}: cannot write: {exc.strerror or exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    print(f"scored {len(complete)} interactive stud{'y' if len(complete) == 1 else 'ies'} ({len(cases)} jobs), "
          f"{len(problems)} problem(s); wrote {output}", file=sys.stderr)
    if not problems or (args.allow_partial and complete):
        return EXIT_OK
    return EXIT_BAD_INPUT


def score_folders(args) -> int:
    """Predictions paired with ground truth by study name, folder against folder."""
    from evaluation.batch import score_cases
    from evaluation.pairing import match_folders
    from evaluation.problems import Problem
    from evaluation.studies import MaskNaming, index_masks
    try:
        ground_truth = index_masks(args.ground_truth, what="ground truth")
        predictions = index_masks(args.predictions, what="predictions",
                                  naming=MaskNaming(suffix=args.prediction_suffix))
    except InputError as exc:
        return finish([], [Problem.of(exc)], output=args.output, allow_partial=False, csv=args.csv)
    cases, unmatched = match_folders(ground_truth, predictions)
    results, failed = score_cases(cases, workers=args.workers, timeout_s=args.timeout)
    status = finish(results, unmatched + failed, output=args.output, allow_partial=args.allow_partial, summary=True,
                    csv=args.csv)
    if args.nnunet_summary is not None:
        from evaluation.nnunet_summary import write_nnunet_summary
        try:
            write_nnunet_summary([result for _, result in results], args.nnunet_summary)
        except OSError as exc:
            print(f"error: file {args.nnunet_summary}: cannot write: {exc.strerror or exc}", file=sys.stderr)
            return EXIT_BAD_INPUT
        print(f"wrote {args.nnunet_summary} (nnU-Net's summary.json shape)", file=sys.stderr)
    return status


def score_pair(args) -> int:
    """One study: its metrics as JSON on stdout (2026: one loop step's, with the loop's Dice and the DMM)."""
    from petct.editions import edition as edition_named
    from petct.jsonio import dumps
    try:
        if edition_named(args.challenge).scribbles:
            record = _score_step_pair(args)
        else:
            from evaluation.scoring import score_files
            record = score_files(ground_truth=args.ground_truth, prediction=args.prediction,
                                 study=args.study).to_json()
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    print(dumps(record))
    return EXIT_OK


def _score_step_pair(args) -> dict:
    from evaluation.closed_loop import score_step
    from evaluation.scoring import read_pair
    from evaluation.studies import mask_key
    gt, pred = read_pair(ground_truth=args.ground_truth, prediction=args.prediction,
                         study=args.study or mask_key(args.ground_truth))
    step = score_step(ground_truth=gt.array, prediction=pred.array, voxel_volume_ml=gt.geometry.voxel_volume_ml)
    return {**step.to_json(), "ground_truth_file": str(args.ground_truth), "prediction_file": str(args.prediction),
            "warnings": gt.warnings + pred.warnings}


def next_scribbles(args) -> int:
    """One step of the 2026 closed loop: the previous scribbles plus one from the mask's errors, written as JSON."""
    from evaluation.scoring import read_pair
    from evaluation.scribble_simulation import SimulationFailed
    from evaluation.scribble_simulation import next_scribbles as simulate_step
    from evaluation.studies import mask_key
    from petct.clicks import Clicks
    from petct.jsonio import write_json_atomic
    from petct.scribbles import read_scribbles
    try:
        gt, pred = read_pair(ground_truth=args.ground_truth, prediction=args.prediction,
                             study=mask_key(args.ground_truth))
        previous = Clicks() if args.scribbles is None else read_scribbles(args.scribbles,
                                                                          size_xyz=gt.geometry.size)
        step = simulate_step(ground_truth_zyx=gt.array, prediction_zyx=pred.array, previous=previous,
                             strategy=args.strategy, rule=args.rule)
        value = step.scribbles.to_grand_challenge() if args.gc else step.scribbles.to_plain()
        write_json_atomic(value, args.output)
    except SimulationFailed as exc:
        print(f"error: file {args.prediction}: {exc}; the step scores 0 (nothing written)", file=sys.stderr)
        return EXIT_BAD_INPUT
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except OSError as exc:
        print(f"error: file {args.output}: cannot write: {exc.strerror or exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    added = f"a {step.kind} scribble of {step.scribble.size} point(s)" if step.kind else "no scribble (no errors)"
    print(f"{added}; {len(step.scribbles.tumor)} tumour and {len(step.scribbles.background)} background points "
          f"-> {args.output}", file=sys.stderr)
    return EXIT_OK


def rank_submissions(args) -> int:
    """Several submissions' metrics.json in, the leaderboard out (printed, and as JSON with --output)."""
    from evaluation.leaderboards import edition_leaderboard, subsets_refusal
    from evaluation.ranking import read_studies_csv, read_subsets
    from petct.editions import edition as edition_named
    from petct.jsonio import write_json_atomic
    # bad options, exit 2 as every mode's (README): checked before any file is read
    edition = edition_named(args.challenge)
    if args.subsets is not None and args.studies is not None:
        print("error: give --subsets or --studies, not both", file=sys.stderr)
        return EXIT_USAGE
    if args.subsets is None and args.studies is None and edition.rank_needs_subsets:
        print(f"error: {args.challenge} ranks per tracer x centre subset: give --subsets JSON or --studies "
              "CSV (with study, tracer and centre columns); refusing to rank over all studies", file=sys.stderr)
        return EXIT_USAGE
    if (args.subsets is not None or args.studies is not None) and (refusal := subsets_refusal(args.challenge)):
        print(f"error: {refusal}", file=sys.stderr)
        return EXIT_USAGE
    try:
        subsets = read_subsets(args.subsets) if args.subsets is not None else None
        if args.studies is not None:
            subsets = read_studies_csv(args.studies)
        board = edition_leaderboard(args.submissions, challenge=args.challenge, subsets=subsets)
        if args.output is not None:
            write_json_atomic({"leaderboard": board.rows, "subsets": sorted(set(subsets.values())) if subsets else None,
                               "challenge": args.challenge}, args.output)
    except (InputError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    for line in board.warnings:
        print(line, file=sys.stderr)
    print(board.text)
    return EXIT_OK


def write_html_report(args) -> int:
    """metrics.json files (and optionally a studies CSV and images) in, one self-contained HTML file out."""
    # matplotlib and Jinja2 load here only: scoring never pays for them.
    from evaluation.html_report.build import ReportOptions, build_report_html
    from evaluation.html_report.steps import steps_report_builder
    from petct.editions import edition as edition_named
    build = steps_report_builder(edition_named(args.challenge)) if args.challenge is not None else None
    if build is not None:
        try:
            print(build(args.metrics, args.output))
        except (InputError, OSError) as exc:
            print(f"error: {_describe(exc)}", file=sys.stderr)
            return EXIT_BAD_INPUT
        return EXIT_OK

    options = ReportOptions(metrics=args.metrics, output=args.output, studies=args.studies, images=args.images,
                            mip=args.mip, resamples=args.resamples, log_axes=args.log_axes)
    try:
        path, problems = build_report_html(options)
    except (InputError, OSError) as exc:
        print(f"error: {_describe(exc)}", file=sys.stderr)
        return EXIT_BAD_INPUT
    for problem in problems:
        print(f"warning: {problem}", file=sys.stderr)
    print(path)
    return EXIT_OK


def write_mip(args) -> int:
    """One study's overlay MIP as PNG."""
    from evaluation.mip import mip_png, read_study
    from petct.atomic import atomic_path

    ground_truth = None if str(args.ground_truth) == "-" else args.ground_truth
    try:
        study = read_study(suv=args.suv, prediction=args.prediction, ground_truth=ground_truth)
        with atomic_path(args.output) as tmp:
            mip_png(study, tmp, title=args.prediction.name, window=tuple(args.window))
    except (InputError, OSError) as exc:
        print(f"error: {_describe(exc)}", file=sys.stderr)
        return EXIT_BAD_INPUT
    print(args.output)
    return EXIT_OK


def _describe(exc: Exception) -> str:
    if isinstance(exc, OSError):
        return f"file {exc.filename}: {exc.strerror or exc}"
    return str(exc)


def finish(results: list[tuple[Case, StudyResult]], problems: list[Problem], *, output: Path,
           allow_partial: bool, summary: bool = False, csv: Path | None = None) -> int:
    """Write metrics.json (and the per-case CSV) with every result and problem; the exit status says whether to rank it."""
    from evaluation.aggregates import summary_line
    from evaluation.case_csv import SINGLE_COLUMNS, single_rows, write_case_csv
    from evaluation.report import build_report, print_problems, write_report
    print_problems(problems)
    report = build_report(results, problems)
    try:
        write_report(report, output)
    except OSError as exc:
        print(f"error: file {output}: cannot write metrics: {exc.strerror or exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    try:
        if csv is not None:
            write_case_csv(csv, columns=SINGLE_COLUMNS, rows=single_rows(results))
    except OSError as exc:
        print(f"error: file {csv}: cannot write the per-case CSV: {exc.strerror or exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    print(f"scored {len(results)} stud{'y' if len(results) == 1 else 'ies'}, {len(problems)} problem(s); "
          f"wrote {output}", file=sys.stderr)
    if summary:  # an interactive command: the means a user came for, as the dry-run prints them
        print(summary_line(report["aggregates"]))
    if not problems or (allow_partial and results):
        return EXIT_OK
    return EXIT_BAD_INPUT


if __name__ == "__main__":
    raise SystemExit(main())
