"""Choosing the engine: a trained nnU-Net model when one is found, else the weight-free baseline.

Where a model is looked for when none is named (first hit wins):
  1. /opt/ml/model   - where grand-challenge unpacks the model tarball the organiser uploads;
  2. /opt/app/model  - a model baked into the container image (BAKED_MODEL).
Each may be the nnU-Net results folder itself or hold exactly one, up to two levels down (the usual
Dataset*/Trainer__Plans__config/ layout of a tarball). Falling back to the baseline is logged as a
warning with the reason; a model that is named explicitly and cannot be used is an error instead.
"""
from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from algorithm.baseline import BaselineEngine
from algorithm.engine import Engine, EngineOptions
from petct.errors import InputError
from petct.layout import DEFAULT_MODEL

log = logging.getLogger(__name__)

BAKED_MODEL = Path("/opt/app/model")
MODEL_SEARCH_PATH = (DEFAULT_MODEL, BAKED_MODEL)
ENGINE_CHOICES = ("auto", "nnunet", "baseline")


def load_engine(*, model: Path | None, options: EngineOptions, engine: str = "auto",
                search: Sequence[Path] = MODEL_SEARCH_PATH) -> Engine:
    """The engine to run: `engine` is auto | nnunet | baseline; `model` None means search `search`."""
    if engine not in ENGINE_CHOICES:
        raise ValueError(f"engine must be one of {ENGINE_CHOICES}, not {engine!r}")
    if engine == "baseline":
        if model is not None:
            log.warning("--engine baseline: ignoring the model %s", model)
        return _baseline(options, reason="asked for (--engine baseline)")
    if model is not None:
        return _nnunet(_require_model(Path(model)), options)

    looked = []
    for folder in search:
        found, why = _probe(Path(folder))
        if found:
            log.info("model found in %s", folder)
            return _nnunet(Path(folder), options)
        looked.append(f"{folder} ({why})")
    if engine == "nnunet":
        raise InputError("--engine nnunet but no nnU-Net model found: " + "; ".join(looked))
    reason = "no nnU-Net model found: " + "; ".join(looked)
    log.warning("falling back to the weight-free baseline engine, %s", reason)
    return _baseline(options, reason=reason)


def _baseline(options: EngineOptions, *, reason: str) -> Engine:
    if options.device == "cuda":
        log.info("the baseline engine runs on the CPU; --device cuda does not apply to it")
    return BaselineEngine(options=options, reason=reason)


def _require_model(model: Path) -> Path:
    """An explicitly named model folder, or InputError: naming a model that cannot be used is no fallback."""
    if not model.exists():
        raise InputError("model folder does not exist", path=model)
    if not model.is_dir():
        raise InputError("model must be a folder (an nnU-Net results folder), not a file", path=model)
    if not _nnunet_module().is_results_folder(model):
        raise InputError("not an nnU-Net results folder (needs plans.json, dataset.json and "
                         "fold_K/checkpoint_final.pth, in it or up to two levels down)", path=model)
    return model


def _probe(folder: Path) -> tuple[bool, str]:
    """Whether a default location holds a results folder, and if not, why (for the fallback log)."""
    try:
        if not folder.is_dir():
            return False, "absent"
        if not any(folder.iterdir()):
            return False, "empty"
    except OSError as exc:
        return False, f"unreadable: {exc.strerror or exc}"
    # Only now is nnU-Net needed; an image without it still runs the baseline.
    if _nnunet_module().is_results_folder(folder):
        return True, "results folder"
    return False, "holds no nnU-Net results folder"


def _nnunet(folder: Path, options: EngineOptions) -> Engine:
    return _nnunet_module().NnUNetEngine.from_folder(folder, options=options)


def _nnunet_module():
    """algorithm.nnunet, imported on first use (it pulls in torch)."""
    try:
        import algorithm.nnunet as nnunet
    except ImportError as exc:
        raise RuntimeError(f"the nnU-Net engine cannot be imported: {exc}") from exc
    return nnunet
