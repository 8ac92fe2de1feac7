"""A reason a study (or a job) could not be scored, as written to metrics.json and stderr."""
from __future__ import annotations

from dataclasses import asdict, dataclass

from petct.errors import InputError


@dataclass(frozen=True)
class Problem:
    """What went wrong, for which study and job, with which file."""

    reason: str
    study: str | None = None
    job: str | None = None
    file: str | None = None

    @classmethod
    def of(cls, error: InputError, *, study: str | None = None, job: str | None = None) -> "Problem":
        return cls(reason=error.problem, study=error.study or study, job=job, file=error.path)

    def describe(self) -> str:
        """One line: study, job, file, then the reason."""
        where = [f"study {self.study}" if self.study else "", f"job {self.job}" if self.job else "",
                 f"file {self.file}" if self.file else ""]
        where = [w for w in where if w]
        return f"{', '.join(where)}: {self.reason}" if where else self.reason

    def to_json(self) -> dict:
        return asdict(self)
