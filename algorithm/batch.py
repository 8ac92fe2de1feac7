"""`python -m algorithm predict-folder IN OUT`: a whole folder of studies with the model loaded once.

Story: parse the arguments -> load the engine (as the single-study job does) -> find the studies in IN ->
read the next study and write the last mask in threads while the engine works on the current one ->
one line per study that failed (the others are still written) -> end the log with what ran.
The masks are those of single-study runs: the same reading, engine and checks (algorithm.pipeline).
"""
from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from algorithm.batch_inputs import BASELINE_ROLES, BatchCase, find_cases
from algorithm.cli import add_model_arguments, check_engine_choice, engine_options
from algorithm.engine import Engine
from algorithm.engines import load_engine
from algorithm.failures import EXIT_INPUT, describe_failure, report_failure
from algorithm.logs import configure_logging, log_engine, timed
from algorithm.pipeline import StudyArrays, read_study, segment_arrays
from algorithm.runinfo import ran_line
from petct.errors import InputError
from petct.imageio import write_image_atomic

log = logging.getLogger("algorithm")

MASK_SUFFIXES = (".nii.gz", ".mha", ".nrrd", ".nii")
READ_AHEAD = 1  # studies read while one is predicted: each costs a study's host memory


@dataclass
class BatchReport:
    written: list[Path] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)  # case key or file -> one-line reason
    exit_code: int = 0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m algorithm predict-folder",
        description="Segment every study of a folder with the model loaded once: nnU-Net's raw layout "
                    "(<case>_0000.nii.gz, <case>_0001.nii.gz; channel order from the model, 0000 CT and 0001 "
                    "SUV for the baseline), <study>/SUV.* with CTres.*, or <patient>/<study>/SUV.* with CTres.* "
                    "(keyed <patient>__<study>). Writes OUT/<case or study key><suffix>.")
    parser.add_argument("input", type=Path, metavar="IN", help="folder of studies")
    parser.add_argument("output", type=Path, metavar="OUT", help="folder to write one mask per study into")
    parser.add_argument("--suffix", choices=MASK_SUFFIXES, default=MASK_SUFFIXES[0],
                        help="mask file type (default %(default)s)")
    add_model_arguments(parser)
    parser.add_argument("--debug", action="store_true", help="print tracebacks on failure")
    args = parser.parse_args(argv)
    check_engine_choice(parser, args)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    configure_logging(verbose=args.debug)
    try:
        if Path(args.output).resolve() == Path(args.input).resolve():
            raise InputError("OUT must differ from IN", path=args.output)
        with timed({}, "load engine", log):
            engine = load_engine(model=args.model, options=engine_options(args), engine=args.engine)
        log_engine(engine.describe(), log)
        found = find_cases(args.input, roles=input_roles(engine))
        Path(args.output).mkdir(parents=True, exist_ok=True)
    except Exception as exc:  # noqa: BLE001 - every failure becomes one line and an exit code
        return report_failure(exc, debug=args.debug)
    started = time.perf_counter()
    report = predict_cases(found.cases, output_dir=args.output, engine=engine, suffix=args.suffix)
    for problem in found.problems:
        log.error("error: %s", problem)
        report.exit_code = report.exit_code or EXIT_INPUT
    total = len(found.cases) + len(found.problems)
    log.info("predict-folder: %d of %d studies written to %s in %.1f s%s", len(report.written), total, args.output,
             time.perf_counter() - started, f"; {total - len(report.written)} failed" if report.exit_code else "")
    log.info("%s", ran_line(engine.describe()))
    return report.exit_code


def input_roles(engine: Engine) -> tuple[str, ...]:
    """Which image ("pet"/"ct") each raw-layout channel holds, for this engine."""
    members = getattr(engine, "members", None) or [engine]
    roles = {tuple(getattr(m, "channel_roles", BASELINE_ROLES)) for m in members}
    if len(roles) > 1:
        raise InputError(f"the ensembled configurations take their channels in different orders {sorted(roles)}; "
                         "the nnU-Net raw layout cannot feed both (use the study layouts)")
    return roles.pop()


def predict_cases(cases: list[BatchCase], *, output_dir: Path, engine: Engine, suffix: str) -> BatchReport:
    """Each case through the engine in turn; reading ahead and writing run in threads alongside it."""
    report = BatchReport()
    writes: list[tuple[BatchCase, Future]] = []
    with ThreadPoolExecutor(1, thread_name_prefix="read") as reader, \
            ThreadPoolExecutor(1, thread_name_prefix="write") as writer:
        for case, study in _read_ahead(cases, reader):
            try:
                log.info("study %s: PET %s, CT %s", case.key, case.pet, case.ct)
                result = segment_arrays(study.result(), engine=engine)
            except Exception as exc:  # noqa: BLE001 - one study's failure must not lose the others
                _fail(report, case, exc)
                continue
            del study
            target = Path(output_dir) / f"{case.key}{suffix}"
            writes.append((case, writer.submit(write_image_atomic, result.mask, target, compress=True)))
    for case, done in writes:
        try:
            report.written.append(done.result())
        except Exception as exc:  # noqa: BLE001
            _fail(report, case, exc)
    return report


def _read_ahead(cases: list[BatchCase], reader: ThreadPoolExecutor) -> Iterator[tuple[BatchCase, Future]]:
    """(case, future of its StudyArrays), with up to READ_AHEAD later studies already being read."""
    pending: list[tuple[BatchCase, Future[StudyArrays]]] = []
    queue = iter(cases)
    for case in queue:
        pending.append((case, reader.submit(read_study, pet_path=case.pet, ct_path=case.ct)))
        if len(pending) > READ_AHEAD:
            yield pending.pop(0)
    while pending:
        yield pending.pop(0)


def _fail(report: BatchReport, case: BatchCase, exc: BaseException) -> None:
    code, message = describe_failure(exc)
    report.failed[case.key] = message
    report.exit_code = max(report.exit_code, code)
    log.error("study %s: %s", case.key, message)


if __name__ == "__main__":
    sys.exit(main())
