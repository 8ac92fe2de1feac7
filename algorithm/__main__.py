"""`python -m algorithm`: one PET/CT study in, one lesion mask out, as a grand-challenge algorithm job.

Story: parse the arguments -> the edition's profile (2024: the data-centric answer, settled before any
work) -> load the engine (nnU-Net model, else the baseline) -> read and check the inputs (2025: the
clicks too) -> predict -> write the mask (2024: and data-centric-model.json) -> end the log with what ran
(engine, model, folds, options). Any failure ends in one line on stderr and a non-zero exit code.

`python -m algorithm predict-folder IN OUT` is the batch mode (algorithm/batch.py): the model loaded
once for a whole folder of studies. `python -m algorithm loop` runs the autoPET V interactive loop on one
study in one process (algorithm/closed_loop.py).
"""
from __future__ import annotations

import logging
import sys
import time

from algorithm.cli import engine_options, parse_args
from algorithm.data_centric import data_centric_answer, write_data_centric
from algorithm.engine_choice import MODEL_SEARCH_PATH, load_engine
from algorithm.failures import report_failure
from algorithm.logs import configure_logging, log_engine, timed
from algorithm.pipeline import check_probabilities_path, run_container
from algorithm.runinfo import ran_line
from petct.editions import edition as edition_named
from petct.jsonio import dumps

log = logging.getLogger("algorithm")


def main(argv: list[str] | None = None) -> int:
    started = time.perf_counter()  # --time-budget covers the whole run, model loading included
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["predict-folder"]:
        from algorithm.batch import main as predict_folder

        return predict_folder(argv[1:])
    if argv[:1] == ["loop"]:
        from algorithm.closed_loop import main as closed_loop

        return closed_loop(argv[1:])
    args = parse_args(argv)
    configure_logging(verbose=args.debug)
    try:
        # Checked before the (slow) model load: a probability map in /output breaks "exactly one output".
        check_probabilities_path(args.save_probabilities, output_dir=args.output, input_dir=args.input)
        edition = edition_named(args.challenge)
        data_centric = None
        if edition.data_centric_output:
            folders = [args.model] if args.model is not None else list(MODEL_SEARCH_PATH)
            data_centric, source = data_centric_answer(option=args.data_centric, model_folders=folders)
            log.info("data-centric model: %s (from %s)", dumps(data_centric), source)
        with timed({}, "load engine", log):
            engine = load_engine(model=args.model, options=engine_options(args, clock_start=started),
                                 engine=args.engine)
        log_engine(engine.describe(), log)
        # Reading, prediction and writing, each logged with its time.
        mask_path = run_container(input_dir=args.input, output_dir=args.output, engine=engine,
                                  probabilities_path=args.save_probabilities, edition=edition)
        if data_centric is not None:
            log.info("wrote %s", write_data_centric(data_centric, args.output))
    except Exception as exc:  # noqa: BLE001 - every failure becomes one line and an exit code
        return report_failure(exc, debug=args.debug)
    log.info("done: %s", mask_path)
    log.info("%s", ran_line(engine.describe()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
