"""What a dry run tells its user: a table on the terminal and a JUnit XML file for CI."""
from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

from algorithm.runinfo import short
from app.dryrun.contract import JobCheck
from app.dryrun.runner import RunOutcome
from evaluation.aggregates import summary_line as aggregates_line  # one summary for dry-run and score-folders
from petct.atomic import atomic_path
from petct.sizes import format_size


@dataclass
class StudyReport:
    case: str
    lesions: int | None
    outcome: RunOutcome | None
    check: JobCheck
    log_tail: str = ""
    metrics: dict | None = None
    job: object = None  # app.dryrun.platform.AlgorithmJob
    ran: dict | None = None  # engine, model, folds and options from the job log's last "ran:" line
    step: int | None = None  # 2025 interactive track: clicks of each kind given to this job

    @property
    def label(self) -> str:
        """The study, with the click step when there is one."""
        return self.case if self.step is None else f"{self.case} @{self.step}"


@dataclass
class EvaluationReport:
    exit_code: int | None
    seconds: float
    problems: list[str] = field(default_factory=list)
    aggregates: dict = field(default_factory=dict)
    metrics: dict | None = None  # metrics.json as the evaluation wrote it

    @property
    def passed(self) -> bool:
        return self.exit_code == 0 and not self.problems


def _number(value, digits: int) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def table(studies: list[StudyReport]) -> str:
    """One row per study; problems listed under the table."""
    header = ("study", "lesions", "exit", "time s", "peak mem", "dice", "FPV ml", "FNV ml", "engine", "result")
    rows = []
    for s in studies:
        m = s.metrics or {}
        o = s.outcome
        rows.append((s.label, "-" if s.lesions is None else str(s.lesions),
                     "-" if o is None else ("timeout" if o.timed_out else str(o.exit_code)),
                     "-" if o is None else f"{o.seconds:.1f}",
                     format_size(o.peak_rss_bytes) if o and o.peak_rss_bytes else "-",
                     _number(m.get("dice"), 3), _number(m.get("false_positive_volume"), 2),
                     _number(m.get("false_negative_volume"), 2), short(s.ran), "ok" if s.check.passed else "FAIL"))
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip()
             for row in (header, tuple("-" * w for w in widths), *rows)]
    for s in studies:
        lines += [f"  {s.label}: FAIL: {v}" for v in s.check.violations]
        lines += [f"  {s.label}: warning: {w}" for w in s.check.warnings]
    return "\n".join(lines)


# Characters XML 1.0 forbids even escaped (ANSI colour codes, NUL, ...): ElementTree would write them
# and CI's JUnit readers would then refuse the whole file.
_XML_ILLEGAL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


def _drop_illegal_characters(root: ET.Element) -> None:
    for element in root.iter():
        if element.text:
            element.text = _XML_ILLEGAL.sub("\ufffd", element.text)
        for key, value in element.attrib.items():
            element.attrib[key] = _XML_ILLEGAL.sub("\ufffd", value)


def write_junit(path: Path, *, studies: list[StudyReport], evaluation: EvaluationReport | None) -> Path:
    """JUnit XML: a test case per study (the contract) and one for the evaluation run."""
    suites = ET.Element("testsuites", name="petct dry-run")
    algo = ET.SubElement(suites, "testsuite", name="algorithm contract", tests=str(len(studies)),
                         failures=str(sum(not s.check.passed for s in studies)), errors="0",
                         time=f"{sum(s.outcome.seconds for s in studies if s.outcome):.3f}")
    for s in studies:
        case = ET.SubElement(algo, "testcase", classname="dry-run.algorithm", name=s.label,
                             time=f"{s.outcome.seconds:.3f}" if s.outcome else "0")
        if not s.check.passed:
            failure = ET.SubElement(case, "failure", message=s.check.violations[0], type="ContractViolation")
            failure.text = "\n".join(s.check.violations) + (f"\n\nlog tail:\n{s.log_tail}" if s.log_tail else "")
        if s.check.warnings:
            ET.SubElement(case, "system-out").text = "\n".join(s.check.warnings)
    if evaluation is not None:
        ev = ET.SubElement(suites, "testsuite", name="evaluation", tests="1",
                           failures="0" if evaluation.passed else "1", errors="0", time=f"{evaluation.seconds:.3f}")
        case = ET.SubElement(ev, "testcase", classname="dry-run.evaluation", name="metrics.json",
                             time=f"{evaluation.seconds:.3f}")
        if not evaluation.passed:
            message = evaluation.problems[0] if evaluation.problems else f"exit status {evaluation.exit_code}"
            ET.SubElement(case, "failure", message=message, type="EvaluationFailed").text = "\n".join(
                evaluation.problems)
        else:
            ET.SubElement(case, "system-out").text = aggregates_line(evaluation.aggregates)
    _drop_illegal_characters(suites)
    ET.indent(suites)
    with atomic_path(path) as tmp:
        ET.ElementTree(suites).write(tmp, encoding="utf-8", xml_declaration=True)
    return Path(path)
