"""`python -m algorithm predict-folder IN OUT`: a whole folder of studies with the model loaded once.

Story: parse the arguments -> load the engine (as the single-study job does; with a Dask cluster, only to check
the model here) -> find the studies in IN -> keep this run's part of them (--num-parts/--part-id) -> with
--continue, drop those whose mask is complete -> segment the rest: in this process, reading the next study and
writing the last mask in threads while the engine works on the current one, or on Dask workers that each keep
the engine loaded (algorithm/batch_cluster.py, --workers/--scheduler) -> one line per study that failed (the
others are still written) -> one summary line -> end the log with what ran.
The masks are those of single-study runs: the same reading, engine and checks (algorithm.pipeline).
"""
from __future__ import annotations

import argparse
import contextlib
import logging
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from algorithm.batch_inputs import BASELINE_ROLES, BatchCase, FoundCases, find_cases
from algorithm.batch_job import StudyOutcome
from algorithm.batch_select import mask_path, part_of, without_finished
from algorithm.cli import add_model_arguments, check_engine_choice, engine_options
from algorithm.engine_contract import Engine
from algorithm.failures import EXIT_INPUT, EXIT_INTERNAL, describe_failure, report_failure
from algorithm.loaded_engines import EngineSpec
from algorithm.logs import configure_logging, log_engine, timed
from algorithm.pipeline import StudyArrays, read_study, segment_arrays
from algorithm.runinfo import ran_line
from petct.argtypes import whole_number
from petct.errors import InputError
from petct.imageio import write_image_atomic

log = logging.getLogger("algorithm")

MASK_SUFFIXES = (".nii.gz", ".mha", ".nrrd", ".nii")
READ_AHEAD = 1  # studies read while one is predicted: each costs a study's host memory


DISTRIBUTED_EXTRA = "algorithm/requirements-distributed.txt"


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
    parser.add_argument("--continue", dest="resume", action="store_true",
                        help="skip the studies whose mask in OUT is complete (reads back whole, on its PET's "
                             "grid); an incomplete one is predicted again")
    parser.add_argument("--num-parts", type=whole_number(1), default=1, metavar="N",
                        help="split the studies into N parts by name, for N runs side by side (default 1)")
    parser.add_argument("--part-id", type=whole_number(0), default=0, metavar="K",
                        help="the part this run does, 0..N-1; each study is in exactly one part (default 0)")
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--workers", type=whole_number(1), default=None, metavar="N",
                       help="spread the studies over N local Dask worker processes (on a machine with GPUs, "
                            f"worker K uses GPU K mod their number); needs {DISTRIBUTED_EXTRA}")
    where.add_argument("--scheduler", default=None, metavar="ADDRESS",
                       help="spread the studies over the workers of the Dask cluster at ADDRESS, e.g. "
                            "tcp://HOST:8786; the workers must see IN and OUT at the same paths")
    parser.add_argument("--debug", action="store_true", help="print tracebacks on failure")
    args = parser.parse_args(argv)
    check_engine_choice(parser, args)
    if args.part_id >= args.num_parts:
        parser.error(f"--part-id must be below --num-parts ({args.num_parts}), got {args.part_id}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    configure_logging(verbose=args.debug)
    spec = EngineSpec(model=args.model, engine=args.engine, options=engine_options(args))
    on_cluster = args.workers is not None or args.scheduler is not None
    try:
        if Path(args.output).resolve() == Path(args.input).resolve():
            raise InputError("OUT must differ from IN", path=args.output)
        cluster = _cluster_module() if on_cluster else None
        with timed({}, "load engine", log):
            # On a cluster the workers load it; here it is only checked, on the CPU (this machine may have no GPU).
            engine = cluster.checking_spec(spec).load() if cluster else spec.load()
        log_engine(engine.describe(), log)
        found = find_cases(args.input, roles=input_roles(engine))
        cases, problems = _this_part(found, num_parts=args.num_parts, part_id=args.part_id)
        Path(args.output).mkdir(parents=True, exist_ok=True)
        finished: list[Path] = []
        if args.resume:
            remaining = without_finished(cases, output_dir=args.output, suffix=args.suffix)
            cases, finished = remaining.todo, remaining.done
    except Exception as exc:  # noqa: BLE001 - every failure becomes one line and an exit code
        return report_failure(exc, debug=args.debug)
    started = time.perf_counter()
    total = len(cases) + len(problems) + len(finished)
    with _progress(total, done=len(finished)) as advance:
        if cluster:
            report, how, description = _on_cluster(cluster, args, spec, cases, advance)
            if report is None:
                return EXIT_INTERNAL
        else:
            report = predict_cases(cases, output_dir=args.output, engine=engine, suffix=args.suffix, on_done=advance)
            how, description = "", engine.describe()
    for problem in problems:
        log.error("error: %s", problem)
        report.exit_code = report.exit_code or EXIT_INPUT
    failed = total - len(finished) - len(report.written)
    log.info("predict-folder: %d of %d studies written to %s in %.1f s%s%s%s", len(report.written), total,
             args.output, time.perf_counter() - started, how,
             f"; {len(finished)} already complete (--continue)" if finished else "",
             f"; {failed} failed" if failed else "")
    log.info("%s", ran_line(description or engine.describe()))
    return report.exit_code


def _cluster_module():
    """algorithm.batch_cluster, which imports Dask: an optional extra, so its absence is one line, exit 2."""
    try:
        import algorithm.batch_cluster as cluster
    except ImportError as exc:
        raise InputError(f"--workers and --scheduler need Dask distributed ({exc}): "
                         f"pip install -r {DISTRIBUTED_EXTRA}") from None
    return cluster


def _this_part(found: FoundCases, *, num_parts: int, part_id: int) -> tuple[list[BatchCase], list[str]]:
    """This run's studies, and the problems it reports: part 0 reports the folder's problems, once for all parts."""
    if num_parts == 1:
        return found.cases, found.problems
    cases = part_of(found.cases, num_parts=num_parts, part_id=part_id)
    log.info("part %d of %d (0-based): %d of %d studies", part_id, num_parts, len(cases), len(found.cases))
    return cases, found.problems if part_id == 0 else []


def _on_cluster(cluster, args: argparse.Namespace, spec: EngineSpec, cases: list[BatchCase],
                advance: Callable[[], None]) -> tuple[BatchReport | None, str, dict | None]:
    """Run `cases` on Dask workers: the report, the summary's words on where, and an engine's describe().
    A lost scheduler is one line saying what finished and how to go on; the report is then None."""
    report = BatchReport()
    if not cases:
        return report, "", None

    def record(outcome: StudyOutcome) -> None:
        if outcome.mask is not None:
            report.written.append(outcome.mask)
        else:
            report.failed[outcome.key] = outcome.error
            report.exit_code = max(report.exit_code, outcome.exit_code)
            log.error("study %s: %s", outcome.key, outcome.error)
        advance()

    try:
        gpus = [] if args.scheduler else cluster.local_gpus(spec)
        with cluster.dask_client(scheduler=args.scheduler, workers=args.workers, gpus=gpus) as client:
            run = cluster.predict_on_cluster(client, cases, spec=spec, output_dir=args.output, suffix=args.suffix,
                                             on_outcome=record)
    except OSError as exc:  # the scheduler cannot be reached at all
        log.error("error: cannot use the Dask scheduler %s: %s", args.scheduler, str(exc).splitlines()[0])
        return None, "", None
    except InputError as exc:  # a cluster that cannot run the kit
        log.error("error: %s", exc.describe())
        return None, "", None
    if run.lost is not None:
        # What is on disk now, not what was reported back: a worker may have written a mask after the loss.
        left = without_finished(cases, output_dir=args.output, suffix=args.suffix).todo
        names = ", ".join(c.key for c in left[:5]) + (", ..." if len(left) > 5 else "")
        log.error("error: lost the Dask scheduler %s: %d of %d studies finished (masks in %s), %d not (%s); run the "
                  "same command with --continue to do only those", args.scheduler or "(local)",
                  len(cases) - len(left), len(cases), args.output, len(left), names)
        return None, "", None
    description = next((o.engine for o in run.outcomes if o.engine), None)
    return report, f" on {run.workers} Dask worker{'s' if run.workers != 1 else ''}", description


@contextlib.contextmanager
def _progress(total: int, *, done: int) -> Iterator[Callable[[], None]]:
    """A progress bar on stderr when it is a terminal (log lines print above it); else nothing."""
    if not sys.stderr.isatty():
        yield lambda: None
        return
    from tqdm import tqdm
    from tqdm.contrib.logging import logging_redirect_tqdm

    with tqdm(total=total, initial=done, unit="study", file=sys.stderr, dynamic_ncols=True) as bar, \
            logging_redirect_tqdm():
        yield lambda: bar.update(1)


def input_roles(engine: Engine) -> tuple[str, ...]:
    """Which image ("pet"/"ct") each raw-layout channel holds, for this engine."""
    members = getattr(engine, "members", None) or [engine]
    roles = {tuple(getattr(m, "channel_roles", BASELINE_ROLES)) for m in members}
    if len(roles) > 1:
        raise InputError(f"the ensembled configurations take their channels in different orders {sorted(roles)}; "
                         "the nnU-Net raw layout cannot feed both (use the study layouts)")
    return roles.pop()


def predict_cases(cases: list[BatchCase], *, output_dir: Path, engine: Engine, suffix: str,
                  on_done: Callable[[], None] = lambda: None) -> BatchReport:
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
                on_done()
                continue
            del study
            target = mask_path(case, output_dir=output_dir, suffix=suffix)
            written = writer.submit(write_image_atomic, result.mask, target, compress=True)
            written.add_done_callback(lambda _: on_done())
            writes.append((case, written))
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
