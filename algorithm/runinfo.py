"""The one line every run ends its log with: which kit version, engine, model, folds and options ran.

A participant scored on the wrong model must be able to see it in the job's log; the dry-run reads the
line back (RAN_PREFIX) and shows it per study.
"""
from __future__ import annotations

import json
import re

from petct.jsonio import dumps
from petct.version import kit_version

RAN_PREFIX = "ran: "
_RAN_LINE = re.compile(r"\b" + re.escape(RAN_PREFIX) + r"(\{.*\})\s*$")


def run_summary(description: dict[str, object]) -> dict[str, object]:
    """The kit's version, and engine, model, folds and options from an engine's describe()."""
    if description.get("engine") != "nnunet":
        return {"kit_version": kit_version(), "engine": description.get("engine"), "model": None, "folds": None,
                "options": {"reason": description.get("reason")}}
    members = description.get("members") or [description]
    options = {key: members[0].get(key) for key in ("device", "use_mirroring", "step_size", "checkpoint",
                                                       "time_budget_s", "compile") if key in members[0]}
    return {
        "kit_version": kit_version(),
        "engine": "nnunet",
        "model": [m.get("model_folder") for m in members] if len(members) > 1 else members[0].get("model_folder"),
        "configurations": [m.get("configuration") for m in members],
        "folds": [m.get("folds") for m in members] if len(members) > 1 else members[0].get("folds"),
        "options": options,
    }


def ran_line(description: dict[str, object]) -> str:
    """The log message: RAN_PREFIX and the summary as one-line JSON."""
    return RAN_PREFIX + dumps(run_summary(description), indent=None)


def parse_ran_line(log_text: str) -> dict[str, object] | None:
    """The summary from a job's log (its last such line), or None when the log has none."""
    for line in reversed(log_text.splitlines()):
        match = _RAN_LINE.search(line)
        if match:
            try:
                value = json.loads(match.group(1))
            except ValueError:
                return None
            return value if isinstance(value, dict) else None
    return None


def short(summary: dict[str, object] | None) -> str:
    """One table cell: e.g. `nnunet 3d_fullres f0,1` or `baseline`."""
    if not summary:
        return "-"
    if summary.get("engine") != "nnunet":
        return str(summary.get("engine"))
    folds = summary.get("folds")
    per_member = folds if isinstance(folds, list) and folds and isinstance(folds[0], list) else [folds]
    configurations = summary.get("configurations") or ["?"]
    parts = [f"{c} f{','.join(map(str, f or []))}" for c, f in zip(configurations, per_member)]
    return "nnunet " + " + ".join(parts)
