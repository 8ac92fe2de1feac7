"""A torch.compile'd network that falls back to eager for good on the first compiler failure, at any call."""
from __future__ import annotations

import torch

from algorithm.failures import is_out_of_memory


class CompiledNetwork:
    """Calls torch.compile(module); when a call fails for any reason but memory, runs that call and every later
    one eagerly.

    The compiler runs again whenever it meets a new input shape (a tile batch halved after running out of
    memory, a study smaller than one batch), in the middle of a prediction: a compiler or Triton failure there
    must cost speed, not the study. Running out of memory is left to the caller's retry (a smaller batch).
    """

    def __init__(self, module: torch.nn.Module, *, notes: list[str]):
        self.module = module
        self.notes = notes  # where the fallback is reported
        self._compiled = None
        try:
            # Static shapes: the batches are padded to one size, and a halved batch is better served by a graph
            # of its own than by one generic over the batch size.
            self._compiled = torch.compile(module, dynamic=False)
        except Exception as exc:  # noqa: BLE001 - e.g. a Python version that dynamo does not support yet
            self._note(exc)

    @property
    def active(self) -> bool:
        """Whether calls still go through the compiled network."""
        return self._compiled is not None

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self._compiled is not None:
            try:
                return self._compiled(x)
            except Exception as exc:  # noqa: BLE001 - any compiler failure means: run eager
                if is_out_of_memory(exc):
                    raise
                self._compiled = None
                self._note(exc)
        return self.module(x)

    def _note(self, exc: Exception) -> None:
        self.notes.append(f"torch.compile failed, running eager: {type(exc).__name__}: {exc}"[:300])
