"""Choosing the engine: a trained nnU-Net model when one is found, else the weight-free baseline.

Where a model is looked for when none is named (first location that is not empty wins):
  1. /opt/ml/model   - where grand-challenge unpacks the model weights the participant uploads on the
                       algorithm's Models page;
  2. /opt/app/model  - a model baked into the container image (BAKED_MODEL).
Each may be an nnU-Net trainer folder or hold trainer folders up to two levels down (the usual
Dataset*/Trainer__Plans__config/ layout). A location that exists and is not empty must be usable: if it
is not (fold_all only without --folds all, two trainer folders, a fold folder, no checkpoints, ...) the run
fails naming what was found and what to pass. The baseline runs only when every location is absent or
empty (or when asked for), and says so on stderr.
"""
from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from algorithm.baseline import BaselineEngine
from algorithm.engine_contract import Engine, EngineOptions
from petct.errors import InputError
from petct.layout import DEFAULT_MODEL

log = logging.getLogger(__name__)

BAKED_MODEL = Path("/opt/app/model")
MODEL_SEARCH_PATH = (DEFAULT_MODEL, BAKED_MODEL)
ENGINE_CHOICES = ("auto", "nnunet", "baseline")


def load_engine(*, model: Path | None, options: EngineOptions, engine: str = "auto",
                search: Sequence[Path] | None = None) -> Engine:
    """The engine to run: `engine` is auto | nnunet | baseline; `model` None: search `search` (MODEL_SEARCH_PATH)."""
    if engine not in ENGINE_CHOICES:
        raise ValueError(f"engine must be one of {ENGINE_CHOICES}, not {engine!r}")
    if engine == "baseline":
        if model is not None:
            log.warning("--engine baseline: ignoring the model %s", model)
        return _baseline(options, reason="asked for (--engine baseline)")
    if model is not None:
        return _nnunet(Path(model), options)

    looked = []
    for folder in MODEL_SEARCH_PATH if search is None else search:
        state = _probe(Path(folder))
        if state == "model":
            log.info("model location %s", folder)
            return _nnunet(Path(folder), options)
        looked.append(f"{folder} ({state})")
    if engine == "nnunet":
        raise InputError("--engine nnunet but no nnU-Net model found: " + "; ".join(looked))
    reason = "no nnU-Net model found: " + "; ".join(looked)
    log.warning("falling back to the weight-free baseline engine (no trained model runs), %s", reason)
    return _baseline(options, reason=reason)


def _baseline(options: EngineOptions, *, reason: str) -> Engine:
    if options.device == "cuda":
        log.info("the baseline engine runs on the CPU; --device cuda does not apply to it")
    return BaselineEngine(options=options, reason=reason)


def _probe(folder: Path) -> str:
    """absent | empty | model: a location that exists and holds anything is the model (checked when loaded)."""
    try:
        if not folder.exists():
            return "absent"
        if folder.is_dir() and is_empty(folder):
            return "empty"
    except OSError as exc:
        raise InputError(f"model location cannot be read: {exc.strerror or exc}", path=folder) from None
    return "model"


def is_empty(folder: Path) -> bool:
    """No entries but hidden ones (a tarball packed on macOS may carry ._* files and .DS_Store)."""
    return not any(not p.name.startswith(".") for p in folder.iterdir())


def _nnunet(folder: Path, options: EngineOptions) -> Engine:
    return _nnunet_module().load_model(folder, options=options)


def _nnunet_module():
    """algorithm.nnunet, imported on first use (it pulls in torch)."""
    try:
        import algorithm.nnunet as nnunet
    except ImportError as exc:
        raise RuntimeError(f"the nnU-Net engine cannot be imported: {exc}") from exc
    return nnunet
