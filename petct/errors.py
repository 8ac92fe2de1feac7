"""The one exception type the kit raises for bad input: a message that names the file and the problem."""
from __future__ import annotations

from pathlib import Path


class InputError(Exception):
    """Bad input that a user must fix; printed as one line, never as a traceback."""

    def __init__(self, problem: str, *, path: str | Path | None = None, study: str | None = None):
        self.problem = problem
        self.path = str(path) if path is not None else None
        self.study = study
        super().__init__(self.describe())

    def describe(self) -> str:
        where = []
        if self.study:
            where.append(f"study {self.study}")
        if self.path:
            where.append(f"file {self.path}")
        return f"{', '.join(where)}: {self.problem}" if where else self.problem
