"""The engine for a model location: the one trainer folder selected in it, or an ensemble of several."""
from __future__ import annotations

import dataclasses
from pathlib import Path

from algorithm.engine_contract import EngineOptions
from algorithm.nnunet.engine import NnUNetEngine
from algorithm.nnunet.ensemble import EnsembleEngine
from algorithm.nnunet.selection import ModelChoice, resolve


def load_model(location: Path, *, options: EngineOptions) -> NnUNetEngine | EnsembleEngine:
    """Select trainer folders in `location` as options say (selection.py), then load them."""
    folders = resolve(Path(location), ModelChoice.of(options))
    if len(folders) == 1:
        return NnUNetEngine.from_folder(folders[0].path, options=options)
    # Every member must hand back its probabilities: they are what is averaged.
    member_options = dataclasses.replace(options, probabilities=True)
    members = [NnUNetEngine.from_folder(f.path, options=member_options) for f in folders]
    return EnsembleEngine(members=members, options=options)
