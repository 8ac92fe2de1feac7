"""The autoPET V (2026) interactive loop in one process: `python -m algorithm loop`.

The organisers' loop starts the algorithm as a new job at every step, which reads and preprocesses CT and
PET again and loads the model again. Here the model is loaded once (the engine given), the study read once,
and its CT and PET preprocessed once where the engine can (NnUNetEngine.keep_study); each step recomputes
the scribble channels and runs the network. Each step's mask is the one a separate `python -m algorithm` run
with the same scribbles writes (test/test_scribble_loop_algorithm.py).

`ReadyStudy` is the reusable part: one study kept ready for any number of predictions with different
scribbles; `run_loop` drives it through the closed loop (the scribbles simulated from each step's mask and
the ground truth, evaluation.scribble_simulation) and writes each step's mask and scribbles.
"""
from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from algorithm.engine_contract import Engine
from algorithm.pipeline import SegmentationResult, StudyArrays, mask_path_for, read_study, segment_arrays
from petct.clicks import Clicks
from petct.editions import CLICKS_JSON, Edition
from petct.imageio import write_image_atomic
from petct.jsonio import write_json_atomic

log = logging.getLogger(__name__)


class ReadyStudy:
    """One study kept ready for predictions that differ only in their scribbles (or clicks)."""

    def __init__(self, engine: Engine, *, pet_path: Path, ct_path: Path):
        self.engine = engine
        self.pet_path = Path(pet_path)
        self.study: StudyArrays = read_study(pet_path=self.pet_path, ct_path=Path(ct_path))
        keep = getattr(engine, "keep_study", None)
        self.preprocessed_once = bool(keep) and keep(pet=self.study.pet, ct=self.study.ct,
                                                     spacing_zyx=self.study.geometry.spacing[::-1])

    def predict(self, scribbles: Clicks | None) -> SegmentationResult:
        """The mask for these scribbles, as a separate run of the algorithm with them gives it."""
        # segment_arrays drops the arrays from the study it is given: hand it a copy of the record
        return segment_arrays(dataclasses.replace(self.study, notes=dict(self.study.notes)), engine=self.engine,
                              clicks=scribbles)

    def close(self) -> None:
        release = getattr(self.engine, "release_study", None)
        if release is not None:
            release()

    def __enter__(self) -> ReadyStudy:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


@dataclass(frozen=True)
class LoopStep:
    step: int
    kind: str | None  # the scribble added before this step: tumor, background or None
    mask_path: Path
    scribbles_path: Path


def run_loop(ready: ReadyStudy, *, ground_truth_zyx: np.ndarray, output: Path, edition: Edition,
             steps: int, strategy: str, rule: str = "kit") -> list[LoopStep]:
    """The closed loop on one study: OUT/step_K/<the edition's output folder>/<PET name>.mha and
    OUT/step_K/lesion-clicks.json (the scribbles step K was given, grand-challenge's form) for K = 0..steps-1.

    Under the published rule a failed simulation ends the loop early: the organisers' loop scores every
    later step 0 without running the algorithm.
    """
    from evaluation.scribble_simulation import SimulationFailed, next_scribbles

    scribbles, kind, done = Clicks(), None, []
    mask: np.ndarray | None = None
    for step in range(steps):
        if step:
            try:
                new = next_scribbles(ground_truth_zyx=ground_truth_zyx, prediction_zyx=mask, previous=scribbles,
                                     strategy=strategy, rule=rule)
            except SimulationFailed as exc:
                log.warning("step %d: %s; the published loop scores it and every later step 0", step, exc)
                break
            scribbles, kind = new.scribbles, new.kind
        result = ready.predict(scribbles)
        folder = Path(output) / f"step_{step}"
        target = mask_path_for(output_dir=folder, pet_path=ready.pet_path, edition=edition)
        write_image_atomic(result.mask, target, compress=True)
        clicks_path = write_json_atomic(scribbles.to_grand_challenge(), folder / CLICKS_JSON)
        mask = sitk.GetArrayFromImage(result.mask)
        log.info("step %d: %s scribble added, %d tumour and %d background points, %d lesion voxels -> %s", step,
                 kind or "no", len(scribbles.tumor), len(scribbles.background), int(np.count_nonzero(mask)), target)
        done.append(LoopStep(step=step, kind=kind, mask_path=target, scribbles_path=clicks_path))
    return done


def parse_args(argv: list[str]):
    import argparse

    from algorithm.cli import add_model_arguments, check_engine_choice
    from petct.editions import SCRIBBLE_RULES, SCRIBBLE_STEPS, SCRIBBLE_STRATEGIES

    parser = argparse.ArgumentParser(
        prog="python -m algorithm loop",
        description="The autoPET V interactive loop on one study in one process: the model loaded and CT/PET "
                    "preprocessed once, each step's scribbles simulated from the last mask and the ground truth.")
    parser.add_argument("--input", type=Path, required=True,
                        help="the study in the platform's layout (images/pet/, images/ct/)")
    parser.add_argument("--ground-truth", type=Path, required=True, metavar="GT", help="the study's label")
    parser.add_argument("--output", type=Path, required=True,
                        help="writes step_K/images/tumor-lesion-segmentation/<PET name>.mha and "
                             "step_K/lesion-clicks.json per step")
    parser.add_argument("--strategy", choices=SCRIBBLE_STRATEGIES, required=True)
    parser.add_argument("--steps", type=int, default=SCRIBBLE_STEPS, help="(default: %(default)s)")
    parser.add_argument("--scribble-rule", choices=SCRIBBLE_RULES, default="kit", help="(default: %(default)s)")
    add_model_arguments(parser)
    parser.add_argument("--debug", action="store_true", help="print tracebacks on failure")
    args = parser.parse_args(argv)
    check_engine_choice(parser, args)
    if args.steps < 1:
        parser.error("--steps must be at least 1")
    args.challenge = "autopet-2026-interactive"  # the profile whose loop this is (engine_options reads it)
    return args


def main(argv: list[str]) -> int:
    """`python -m algorithm loop`: exit 0, or the single-study job's codes with one line on stderr."""
    from algorithm.cli import engine_options
    from algorithm.engine_choice import load_engine
    from algorithm.failures import report_failure
    from algorithm.logs import configure_logging, timed
    from algorithm.pipeline import find_study_inputs
    from algorithm.runinfo import ran_line
    from petct.editions import edition
    from petct.errors import InputError
    from petct.imageio import grid_mismatches

    args = parse_args(argv)
    configure_logging()
    try:
        try:  # the loop scores nothing, but simulates with the evaluation's code: a checkout, not the image
            from evaluation.masks import read_mask
        except ImportError as exc:
            raise RuntimeError(f"python -m algorithm loop needs the kit's evaluation package ({exc})") from None
        inputs = find_study_inputs(args.input, edition=edition(args.challenge))
        truth = read_mask(args.ground_truth, what="ground truth", float_labels=True)
        with timed({}, "load engine", log):
            engine = load_engine(model=args.model, options=engine_options(args), engine=args.engine)
        with ReadyStudy(engine, pet_path=inputs.pet_path, ct_path=inputs.ct_path) as ready:
            mismatches = grid_mismatches(ready.study.geometry, truth.geometry)
            if mismatches:
                raise InputError(f"ground truth is not on the PET's grid: {'; '.join(mismatches)}",
                                 path=args.ground_truth)
            log.info("CT and PET preprocessed %s", "once for every step" if ready.preprocessed_once else
                     "at every step (this engine or model cannot keep them)")
            steps = run_loop(ready, ground_truth_zyx=truth.array, output=args.output,
                             edition=edition(args.challenge), steps=args.steps, strategy=args.strategy,
                             rule=args.scribble_rule)
    except Exception as exc:  # noqa: BLE001 - every failure becomes one line and an exit code
        return report_failure(exc, debug=args.debug)
    log.info("done: %d step(s) in %s", len(steps), args.output)
    log.info("%s", ran_line(engine.describe()))  # what ran, as a single run logs it (the dry run's table reads it)
    return 0
