"""Engines kept loaded in a long-lived process (a Dask worker), so that a model is loaded once, not per study.

A worker runs study after study, possibly for several models (a campaign): each model and set of options is
loaded on first use and kept; the least recently used is dropped beyond MAX_LOADED, so that a worker
serving many models does not hold them all in (GPU) memory.
"""
from __future__ import annotations

import threading
from collections import Counter, OrderedDict
from dataclasses import dataclass
from pathlib import Path

from algorithm.engine_choice import load_engine
from algorithm.engine_contract import Engine, EngineOptions

MAX_LOADED = 2


@dataclass(frozen=True)
class EngineSpec:
    """Everything load_engine needs: hashable, picklable, so it can travel to a worker and key its cache."""

    model: Path | None
    engine: str
    options: EngineOptions

    def load(self) -> Engine:
        return load_engine(model=self.model, options=self.options, engine=self.engine)


_lock = threading.Lock()  # a worker with several threads must not load the same model twice at once
_loaded: OrderedDict[EngineSpec, Engine] = OrderedDict()
_loads: Counter[EngineSpec] = Counter()


def loaded_engine(spec: EngineSpec) -> Engine:
    """The engine for `spec`, loaded in this process on first use and kept for the next studies."""
    with _lock:
        engine = _loaded.get(spec)
        if engine is None:
            engine = spec.load()
            _loads[spec] += 1
            _loaded[spec] = engine
        _loaded.move_to_end(spec)
        while len(_loaded) > MAX_LOADED:
            _loaded.popitem(last=False)
        return engine


def load_counts() -> dict[EngineSpec, int]:
    """How often each spec was loaded in this process (what a worker reports about itself)."""
    with _lock:
        return dict(_loads)
