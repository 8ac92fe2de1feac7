"""The command line of `python -m algorithm`, and how its arguments become engine options."""
from __future__ import annotations

import argparse
from pathlib import Path

from algorithm.engine_choice import BAKED_MODEL, ENGINE_CHOICES
from algorithm.engine_contract import EngineOptions
from petct import environment
from petct.argtypes import positive_number
from petct.editions import CHALLENGE_CHOICES, default_challenge
from petct.layout import DEFAULT_INPUT, DEFAULT_MODEL, DEFAULT_OUTPUT

CHANNELS = ("pet", "ct")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m algorithm",
        description="Segment the FDG-avid lesions of one PET/CT study laid out as grand-challenge does "
                    "(with autopet-2025-interactive, also reading <input>/lesion-clicks.json; with "
                    "autopet-2026-interactive, the scribbles in it).",
        epilog="Batch mode, the model loaded once for a folder of studies: python -m algorithm predict-folder IN OUT "
               "(see its --help). The autoPET V loop on one study in one process: python -m algorithm loop "
               "(see its --help).")
    parser.add_argument("--input", type=Path, default=DEFAULT_INPUT,
                        help="folder with images/pet/<one image> and images/ct/<one image> (default %(default)s)")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT,
                        help="folder to write images/<slug>/<name>.mha into; the slug is "
                             "automated-petct-lesion-segmentation, tumor-lesion-segmentation for "
                             "autopet-2025-interactive (default %(default)s)")
    add_model_arguments(parser)
    parser.add_argument("--time-budget", type=positive_number, default=None, metavar="SECONDS",
                        help="finish the whole run (start-up to written mask) within this: the engine drops "
                             "mirroring passes, then folds, when its running estimate says they would not fit")
    parser.add_argument("--save-probabilities", type=Path, default=None, metavar="PATH",
                        help="also write the lesion probability map here (.mha, .nii.gz, .nii or .nrrd), outside both the "
                             "input and the output folder; checked before any work")
    parser.add_argument("--challenge", choices=CHALLENGE_CHOICES, default=default_challenge(),
                        help=f"the autoPET edition's contract (README, Editions; or set {environment.CHALLENGE.name}; "
                             "default %(default)s)")
    parser.add_argument("--data-centric", action=argparse.BooleanOptionalAction, default=None,
                        help="autopet-2024: the answer written to /output/data-centric-model.json (default: "
                             "PETCT_KIT_DATA_CENTRIC, else data-centric-model.json in the model folder)")
    parser.add_argument("--debug", action="store_true", default=environment.DEBUG.get("") not in ("", "0"),
                        help=f"print the traceback on failure (or set {environment.DEBUG.name}=1)")
    args = parser.parse_args(argv)
    check_engine_choice(parser, args)
    return args


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """Which model runs and how: shared by the single-study job and predict-folder."""
    parser.add_argument("--model", type=Path, default=None,
                        help=f"nnU-Net results folder (default: {DEFAULT_MODEL}, then {BAKED_MODEL}; the first that "
                             "exists and is not empty must hold a usable model; only when none does, the "
                             "weight-free baseline runs)")
    parser.add_argument("--engine", default=environment.ENGINE.get("auto"),
                        help=f"one of {', '.join(ENGINE_CHOICES)}; auto: nnU-Net when a model location is not "
                             "empty, else the baseline (default %(default)s, from PETCT_KIT_ENGINE when set)")
    parser.add_argument("--device", choices=("auto", "cuda", "cpu"), default=environment.DEVICE.get("auto"))
    parser.add_argument("--folds", type=_folds, default=None,
                        help="comma-separated folds, e.g. 0,1,2, or all for fold_all (default: every numbered "
                             "fold in the model), as nnUNetv2_predict -f")
    parser.add_argument("--checkpoint", default=None, metavar="NAME",
                        help="checkpoint file in each fold folder, e.g. checkpoint_best.pth (default: "
                             "checkpoint_final.pth, else checkpoint_best.pth), as nnUNetv2_predict -chk")
    parser.add_argument("--trainer", default=None,
                        help="trainer of the trainer folder to run (<trainer>__<plans>__<configuration>), "
                             "as nnUNetv2_predict -tr; needed only when the model holds several")
    parser.add_argument("--plans", default=None, help="plans of the trainer folder to run, as nnUNetv2_predict -p")
    parser.add_argument("--configuration", type=_configurations, default=None, metavar="NAME[,NAME...]",
                        help="configuration(s) to run, as nnUNetv2_predict -c; several, comma-separated, are "
                             "ensembled (mean of their probabilities, as nnUNetv2_ensemble)")
    parser.add_argument("--step-size", type=_step_size, default=0.5,
                        help="sliding-window step as a fraction of the patch (default %(default)s)")
    parser.add_argument("--tta", action=argparse.BooleanOptionalAction, default=True,
                        help="mirroring test-time augmentation (default on; --no-tta turns it off)")
    parser.add_argument("--channel-order", type=_channel_order, default=None,
                        help="which image feeds each network channel, e.g. ct,pet (default: from the model)")
    parser.add_argument("--compile", action="store_true", help="torch.compile the network (GPU)")


def check_engine_choice(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """--engine (or PETCT_KIT_ENGINE) must name an engine."""
    if args.engine not in ENGINE_CHOICES:
        source = environment.ENGINE.name if environment.ENGINE.get() == args.engine else "--engine"
        parser.error(f"{source}: expected one of {', '.join(ENGINE_CHOICES)}, got {args.engine!r}")


def engine_options(args: argparse.Namespace, *, clock_start: float | None = None) -> EngineOptions:
    """The engine's settings; `clock_start` (a time.perf_counter() reading) is when --time-budget began."""
    return EngineOptions(
        device=args.device,
        folds=args.folds,
        checkpoint=args.checkpoint,
        trainer=args.trainer,
        plans=args.plans,
        configurations=args.configuration,
        use_mirroring=args.tta,
        step_size=args.step_size,
        time_budget_s=getattr(args, "time_budget", None),  # predict-folder has none
        clock_start=clock_start,
        channel_order=args.channel_order,
        compile=args.compile,
        probabilities=getattr(args, "save_probabilities", None) is not None,
        click_encoding=click_encoding_for(getattr(args, "challenge", None)),
    )


def click_encoding_for(challenge: str | None):
    """The 2026 profile's scribbles reach a model as impulses (petct.scribbles); other editions keep the default."""
    from petct.editions import edition
    from petct.scribbles import SCRIBBLE_ENCODING
    return SCRIBBLE_ENCODING if edition(challenge).scribbles else None


def _folds(text: str) -> tuple[int | str, ...]:
    if text.strip().lower() == "all":
        return ("all",)
    try:
        folds = tuple(int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated fold numbers like 0,1,2, or all, got {text!r}"
                                         ) from None
    if any(f < 0 for f in folds) or len(set(folds)) != len(folds):
        raise argparse.ArgumentTypeError(f"folds must be distinct non-negative numbers, got {text!r}")
    return folds


def _configurations(text: str) -> tuple[str, ...]:
    names = tuple(v.strip() for v in text.split(","))
    if not all(names) or len(set(names)) != len(names):
        raise argparse.ArgumentTypeError(f"expected distinct configuration names like 3d_fullres,3d_lowres, got {text!r}")
    return names


def _step_size(text: str) -> float:
    value = positive_number(text)
    if value > 1.0:
        raise argparse.ArgumentTypeError(f"step size must be in (0, 1], got {text}")
    return value


def _channel_order(text: str) -> tuple[str, ...]:
    order = tuple(v.strip().lower() for v in text.split(","))
    if any(v not in CHANNELS for v in order) or not order:
        raise argparse.ArgumentTypeError(f"expected channel names from {CHANNELS} like ct,pet, got {text!r}")
    return order
