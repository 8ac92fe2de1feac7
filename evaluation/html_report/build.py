"""Everything the report shows, gathered from the inputs, then rendered with the Jinja2 template."""
from __future__ import annotations

import math
import subprocess
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from evaluation.html_report import figures
from evaluation.html_report.inputs import (
    SubmissionMetrics,
    find_study_files,
    group_columns,
    number,
    parse_mip,
    read_studies_csv,
    read_submission_metrics,
)
from evaluation.html_report.stability import DEFAULT_RESAMPLES, bootstrap_ranks
from evaluation.ranking import RANKED_METRICS, Submission, leaderboard
from petct.atomic import atomic_path
from petct.errors import InputError
from petct.nnunet_raw import tracer_of
from petct.version import kit_version

KIT_ROOT = Path(__file__).resolve().parents[2]
TABLE_METRICS = {"dice": "Dice", "false_positive_volume": "FPV (ml)", "false_negative_volume": "FNV (ml)",
                 "gt_volume": "true MTV (ml)", "pred_volume": "predicted MTV (ml)", "gt_lesions": "lesions",
                 "detected_lesions": "detected", "fp_components": "FP components"}
SUMMARY_METRICS = {"dice": "Dice", "false_positive_volume": "FPV (ml)", "false_negative_volume": "FNV (ml)"}


@dataclass(frozen=True)
class ReportOptions:
    metrics: list[str]  # [NAME=]PATH of each submission's metrics.json
    output: Path
    studies: Path | None = None
    images: Path | None = None
    mip: str = "worst:20"  # "all" or "worst:N"
    resamples: int = DEFAULT_RESAMPLES
    log_axes: bool = False
    suv_files: dict[str, Path] | None = None  # study -> SUV file, for callers that know where each one is
    links: tuple[tuple[str, str], ...] = ()  # (href, text) shown at the top, e.g. back to the service that made it


@dataclass
class Mip:
    anchor: str
    study: str
    image: str  # data URI
    record: dict


@dataclass
class SubmissionSection:
    name: str
    anchor: str
    metrics: SubmissionMetrics
    figure4: str
    slope: float
    breakdowns: list[dict] = field(default_factory=list)
    mips: dict[str, Mip] = field(default_factory=dict)


def build_report_html(options: ReportOptions) -> tuple[Path, list[str]]:
    """Write the report; returns its path and the problems (one line each) that left something out of it."""
    problems: list[str] = []
    submissions = [read_submission_metrics(argument) for argument in options.metrics]
    if len({s.name for s in submissions}) != len(submissions):
        raise InputError("two submissions share a name; name them NAME=PATH")
    studies = read_studies_csv(options.studies) if options.studies is not None else {}
    columns = group_columns(studies)
    worst = parse_mip(options.mip)
    sections = []
    for index, submission in enumerate(submissions):
        section = _section(submission, anchor=f"s{index}", log_axes=options.log_axes)
        section.breakdowns = [_breakdown(submission, studies, column) for column in columns]
        if not any(column.lower() == "tracer" for column in columns):
            section.breakdowns += _tracer_breakdown(submission)
        if options.images is not None or options.suv_files:
            section.mips = _mips(submission, options.images, worst=worst, anchor=section.anchor, problems=problems,
                                 suv_files=options.suv_files or {})
        sections.append(section)
    context = {
        "title": "autoPET evaluation report",
        "generated": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC"),
        "kit_version": kit_version(),
        "kit_commit": kit_commit(),
        "ranked_metrics": RANKED_METRICS,
        "sections": sections,
        "table_metrics": TABLE_METRICS,
        "summary_metrics": SUMMARY_METRICS,
        "studies_file": options.studies,
        "images": options.images,
        "mip_rule": options.mip if options.images is not None or options.suv_files else None,
        "problems": problems,
        "links": options.links,
        **_ranking(submissions, resamples=options.resamples),
    }
    html = render(context)
    with atomic_path(options.output) as tmp:
        tmp.write_text(html, encoding="utf-8")
    return options.output, problems


def render(context: dict, *, template: str = "report.html.j2") -> str:
    """One of the package's templates rendered (autoescaped; an undefined name is an error, never blank)."""
    import jinja2

    environment = jinja2.Environment(loader=jinja2.PackageLoader("evaluation.html_report", "templates"),
                                     autoescape=True, undefined=jinja2.StrictUndefined)
    environment.globals["num"] = number_cell
    return environment.get_template(template).render(**context)


def number_cell(value, digits: int, *, tag: str = "span") -> str:
    """A number shown rounded, with its exact value in data-value ('–' and null where undefined)."""
    from markupsafe import Markup

    value = number(value)
    if not math.isfinite(value):
        return Markup(f'<{tag} class="num" data-value="null">–</{tag}>')
    exact = repr(int(value)) if value.is_integer() and digits == 0 else repr(value)
    return Markup(f'<{tag} class="num" data-value="{exact}">{value:.{digits}f}</{tag}>')


def kit_commit() -> str:
    """The kit's git commit (with -dirty for local changes) where it is a checkout; 'unknown' elsewhere."""
    try:
        result = subprocess.run(["git", "-C", str(KIT_ROOT), "describe", "--always", "--dirty"], capture_output=True,
                                text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    return result.stdout.strip() if result.returncode == 0 and result.stdout.strip() else "unknown"


def _section(submission: SubmissionMetrics, *, anchor: str, log_axes: bool) -> SubmissionSection:
    positive = [c for c in submission.cases if number(c.get("gt_lesions")) > 0]
    true_mtv = [number(c.get("gt_volume")) for c in positive]
    predicted_mtv = [number(c.get("pred_volume")) for c in positive]
    slope = figures.fitted_slope(true_mtv, predicted_mtv)
    image = figures.figure4(true_mtv=true_mtv, predicted_mtv=predicted_mtv,
                            titles=_figure4_titles(submission.aggregates, slope=slope),
                            dice=[number(c.get("dice")) for c in positive],
                            fnv=[number(c.get("false_negative_volume")) for c in positive],
                            fpv=[number(c.get("false_positive_volume")) for c in submission.cases], log_axes=log_axes)
    return SubmissionSection(name=submission.name, anchor=anchor, metrics=submission, figure4=image, slope=slope)


def _figure4_titles(aggregates: dict, *, slope: float) -> dict[str, str]:
    """Panel titles with the statistics the seed reports: mean ± SD, and r and slope for the volumes."""
    def text(value, digits: int) -> str:
        value = number(value)
        return f"{value:.{digits}f}" if math.isfinite(value) else "–"

    def spread(metric: str, digits: int) -> str:
        stats = aggregates.get(metric) or {}
        return f"{text(stats.get('mean'), digits)} ± {text(stats.get('std'), digits)}"

    r = (aggregates.get("volume_correlation") or {}).get("pearson_r")
    return {"mtv": f"MTV: r = {text(r, 3)}, slope {text(slope, 3)}", "dice": f"Dice {spread('dice', 3)}",
            "fnv": f"FNV {spread('false_negative_volume', 2)} ml", "fpv": f"FPV {spread('false_positive_volume', 2)} ml"}


def _breakdown(submission: SubmissionMetrics, studies: dict[str, dict[str, str]], column: str) -> dict:
    groups: dict[str, dict[str, list[float]]] = {}
    for case in submission.cases:
        group = studies.get(case["study"], {}).get(column) or "(not in the CSV)"
        values = groups.setdefault(group, {m: [] for m in SUMMARY_METRICS})
        for metric in SUMMARY_METRICS:
            values[metric].append(number(case.get(metric)))
    rows = [{"group": g, "studies": len(v["false_positive_volume"]),
             **{m: _stats(v[m]) for m in SUMMARY_METRICS}}
            for g, v in sorted(groups.items(), key=lambda item: figures.natural_key(item[0]))]  # as the box plots
    return {"column": column, "rows": rows, "image": figures.box_plots(groups, metrics=SUMMARY_METRICS)}


def _tracer_breakdown(submission: SubmissionMetrics) -> list[dict]:
    """By the tracer the study names carry (`psma_...`, `fdg_...`: the organisers' releases); none without."""
    tracers = {c["study"]: tracer_of(c["study"]) for c in submission.cases}
    if not any(tracers.values()):
        return []
    column = "tracer (from the study names)"
    return [_breakdown(submission, {study: {column: tracer or "(none in the name)"} for study, tracer in tracers.items()},
                       column)]


def _stats(values: list[float]) -> dict:
    data = np.array([v for v in values if math.isfinite(v)])
    return {"mean": float(data.mean()) if data.size else math.nan,
            "std": float(data.std(ddof=1)) if data.size > 1 else math.nan, "count": int(data.size)}


def _mips(submission: SubmissionMetrics, images: Path | None, *, worst: int | None, anchor: str,
          problems: list[str], suv_files: dict[str, Path]) -> dict[str, Mip]:
    from evaluation.mip import mip_png, read_study

    chosen = submission.cases if worst is None else _worst(submission.cases, worst)
    mips = {}
    for case in chosen:
        study = case["study"]
        files = find_study_files(images, case, suv=suv_files.get(study))
        if files is None or files.prediction is None:
            missing = "SUV" if files is None else "prediction"
            problems.append(f"study {study} ({submission.name}): no {missing} file found; no MIP")
            continue
        try:
            arrays = read_study(suv=files.suv, prediction=files.prediction, ground_truth=files.ground_truth)
        except InputError as exc:
            problems.append(f"study {study} ({submission.name}): {exc}; no MIP")
            continue
        image = figures.rgb_data_uri(lambda out, arrays=arrays: mip_png(arrays, out, dpi=figures.DPI))  # named by its caption
        mips[study] = Mip(anchor=f"{anchor}-mip-{len(mips)}", study=study, image=image, record=case)
    return mips


def _worst(cases: list[dict], count: int) -> list[dict]:
    """The `count` worst by FPV, by FNV and by Dice (undefined values are never worst), in study order."""
    def top(metric: str, sign: float) -> list[str]:
        defined = [c for c in cases if math.isfinite(number(c.get(metric)))]
        return [c["study"] for c in sorted(defined, key=lambda c: (sign * number(c.get(metric)), c["study"]))[:count]]
    chosen = set(top("false_positive_volume", -1) + top("false_negative_volume", -1) + top("dice", 1))
    return [c for c in cases if c["study"] in chosen]


def _ranking(submissions: list[SubmissionMetrics], *, resamples: int) -> dict:
    """Leaderboard, bootstrap stability and paired differences of the top two; empty for one submission."""
    if len(submissions) < 2:
        return {"leaderboard": None, "stability": None, "stability_image": None, "paired": None}
    ranked = [Submission(name=s.name, path=s.path, means={"all": {
        m: number((s.aggregates.get(m) or {}).get("mean")) for m in RANKED_METRICS}}) for s in submissions]
    rows = leaderboard(ranked)
    stability = bootstrap_ranks(submissions, resamples=resamples) if resamples > 0 else None
    image = None if stability is None else figures.blob_plot(
        submissions=stability.submissions, rank_counts=stability.rank_counts, resamples=stability.resamples)
    by_name = {s.name: s for s in submissions}
    return {"leaderboard": rows, "stability": stability, "stability_image": image,
            "paired": _paired(by_name[rows[0]["submission"]], by_name[rows[1]["submission"]])}


def _paired(first: SubmissionMetrics, second: SubmissionMetrics) -> dict:
    """Per-study differences (first minus second) over the studies both scored where both values are defined."""
    metrics, differences = {}, {}
    for metric, label in SUMMARY_METRICS.items():
        a, b = first.values(metric), second.values(metric)
        diff = [a[s] - b[s] for s in sorted(set(a) & set(b)) if math.isfinite(a[s]) and math.isfinite(b[s])]
        differences[label] = diff
        data = np.array(diff)
        metrics[label] = {"count": len(diff), "mean": float(data.mean()) if diff else math.nan,
                          "median": float(np.median(data)) if diff else math.nan,
                          "std": float(data.std(ddof=1)) if len(diff) > 1 else math.nan}
    return {"first": first.name, "second": second.name, "metrics": metrics,
            "image": figures.paired_differences(differences)}
