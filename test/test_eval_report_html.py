"""`python -m evaluation report`: every number shown equals metrics.json's; ranking, stability, MIP choice."""
from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
import pytest

from evaluation.html_report.build import ReportOptions, _worst, build_report_html, kit_commit
from evaluation.html_report.inputs import read_submission_metrics
from evaluation.html_report.stability import bootstrap_ranks
from evaluation.ranking import leaderboard, read_submission
from paths import REPO
from petct.version import kit_version
from report_helpers import exact, numbers, random_metrics, write_metrics

pytest.importorskip("matplotlib", reason="matplotlib is in evaluation/report-requirements.txt")
pytest.importorskip("jinja2", reason="Jinja2 is in evaluation/report-requirements.txt")

DIGITS = {"dice": 3, "gt_lesions": 0, "detected_lesions": 0, "fp_components": 0}


def _three_submissions(tmp_path, *, studies=30, seed=0):
    rng = np.random.default_rng(seed)
    names = [f"PETCT_{i:03d}" + (".v2" if i % 7 == 0 else "") for i in range(studies)]
    paths = []
    for k, quality in enumerate((0.7, 0.6, 0.5)):
        paths.append(write_metrics(tmp_path / f"team{k}" / "metrics.json", random_metrics(rng, names, quality=quality)))
    return paths


def test_every_number_shown_equals_metrics_json(tmp_path):
    paths = _three_submissions(tmp_path)
    output, problems = build_report_html(ReportOptions(metrics=[str(p) for p in paths], output=tmp_path / "r.html",
                                                       resamples=50))
    assert problems == []
    parsed = numbers(output.read_text())
    assert parsed.images and all(img["src"].startswith("data:image/png;base64,") and img.get("alt")
                                 for img in parsed.images)
    checked = 0
    for path in paths:
        body = json.loads(path.read_text())
        team = path.parent.name
        by_study = {r["study"]: r for r in body["case"].values()}
        for context, value, text in parsed.found:
            if context.get("data-submission") != team:
                continue
            metric = context.get("data-metric")
            if "data-study" in context and metric:
                expected = by_study[context["data-study"]][metric]
            elif metric and "data-stat" in context:
                expected = body["aggregates"][metric][context["data-stat"]]
            else:
                continue
            checked += 1
            if expected is None:
                assert value == "null" and text == "–", (context, value, text)
                continue
            assert exact(value) == expected, (context, value, expected)  # exact, not rounded
            digits = DIGITS.get(metric, 3 if metric in ("volume_correlation",) else 2)
            if context.get("data-stat") == "count":
                digits = 0
            assert text == f"{expected:.{digits}f}", (context, text, expected)
    # 30 studies x 8 metrics, plus the summary, per submission
    assert checked >= 3 * (30 * 8 + 3 * 4 + 2)
    # The package's version and the checkout's commit, each under its own name.
    assert f"<dt>Kit version</dt><dd>{kit_version()}</dd>" in output.read_text()
    assert f"<dt>Kit commit</dt><dd>{kit_commit()}</dd>" in output.read_text()


def test_leaderboard_is_ranks_and_stability_counts_every_resample(tmp_path):
    paths = _three_submissions(tmp_path, seed=3)
    output, _ = build_report_html(ReportOptions(metrics=[str(p) for p in paths], output=tmp_path / "r.html",
                                                resamples=40))
    rows = leaderboard([read_submission(p, name=p.parent.name, subsets=None) for p in paths])
    parsed = numbers(output.read_text())
    shown = {}
    for context, value, _ in parsed.found:
        if context.get("class") == "leaderboard" and context.get("data-metric"):
            shown[(context["data-submission"], context["data-metric"])] = exact(value)
    for row in rows:
        for metric, mean in row["mean"].items():
            assert shown[(row["submission"], metric)] == mean
    html = output.read_text()
    order = [html.index(f'<tr data-submission="{row["submission"]}">') for row in rows]
    assert order == sorted(order)  # best first


def _reference_positions(values: np.ndarray) -> list[int]:
    """Leaderboard positions the slow way: means, competition ranks per metric, weighted sum, Dice tie-break."""
    n = values.shape[0]
    with np.errstate(all="ignore"):
        means = [[np.nanmean(values[s, m]) if np.isfinite(values[s, m]).any() else math.nan for m in range(3)]
                 for s in range(n)]
    weights, higher = (0.5, 0.25, 0.25), (True, False, False)
    score = [0.0] * n
    for m in range(3):
        for s in range(n):
            mine = means[s][m]
            if not math.isfinite(mine):
                rank = 1 + sum(math.isfinite(means[o][m]) for o in range(n))
            else:
                rank = 1 + sum(math.isfinite(means[o][m]) and
                               (means[o][m] > mine if higher[m] else means[o][m] < mine) for o in range(n))
            score[s] += weights[m] * rank
    dice = [means[s][0] if math.isfinite(means[s][0]) else -math.inf for s in range(n)]
    order = sorted(range(n), key=lambda s: (score[s], -dice[s]))
    return [order.index(s) + 1 for s in range(n)]


@pytest.mark.parametrize("seed", range(8))
def test_bootstrap_ranks_match_a_slow_reference(tmp_path, seed):
    rng = np.random.default_rng(seed)
    count = int(rng.integers(3, 12))
    names = sorted(f"S{i}" for i in range(count))  # the order the studies are resampled in
    paths = [write_metrics(tmp_path / f"t{k}" / "metrics.json", random_metrics(rng, names, quality=rng.uniform(.3, .8)))
             for k in range(int(rng.integers(2, 5)))]
    submissions = [read_submission_metrics(str(p)) for p in paths]
    stability = bootstrap_ranks(submissions, resamples=25, seed=seed)
    values = np.array([[[s.values(m)[n] for n in names] for m in ("dice", "false_positive_volume",
                                                                  "false_negative_volume")] for s in submissions])
    original = _reference_positions(values)
    draw = np.random.default_rng(seed)
    expected = np.zeros((len(paths), len(paths)), dtype=int)
    order = [submissions[s].name for s in sorted(range(len(paths)), key=lambda s: original[s])]
    for _ in range(25):
        positions = _reference_positions(values[:, :, draw.integers(0, count, size=count)])
        for s, position in enumerate(positions):
            expected[order.index(submissions[s].name), position - 1] += 1
    assert stability.submissions == order
    assert (stability.rank_counts == expected).all()
    assert stability.kept_rank == [expected[i, i] / 25 for i in range(len(paths))]


@pytest.mark.parametrize("seed", range(5))
def test_worst_studies_are_the_worst_by_each_metric(seed):
    rng = np.random.default_rng(seed)
    cases = [{"study": f"S{i}", **r} for i, r in enumerate(
        random_metrics(rng, [f"S{i}" for i in range(40)])["case"].values())]
    chosen = {c["study"] for c in _worst(cases, 5)}
    expected = set()
    for metric, worst_first in (("false_positive_volume", True), ("false_negative_volume", True), ("dice", False)):
        defined = [c for c in cases if c[metric] is not None]
        defined.sort(key=lambda c: c["study"])
        defined.sort(key=lambda c: c[metric], reverse=worst_first)
        expected |= {c["study"] for c in defined[:5]}
    assert chosen == expected


def test_studies_csv_breaks_metrics_down_by_its_columns(tmp_path):
    paths = _three_submissions(tmp_path, studies=12)
    body = json.loads(paths[0].read_text())
    studies = sorted(r["study"] for r in body["case"].values())
    csv = tmp_path / "studies.csv"
    csv.write_text("study,diagnosis,age\n" + "".join(
        f"{s},{('LYMPHOMA', 'MELANOMA', 'NEGATIVE')[i % 3]},{40 + i}\n" for i, s in enumerate(studies)))
    output, _ = build_report_html(ReportOptions(metrics=[str(paths[0])], output=tmp_path / "r.html", studies=csv))
    html = output.read_text()
    assert 'data-column="diagnosis"' in html and 'data-column="age"' not in html  # age: one group per study
    for group in ("LYMPHOMA", "MELANOMA", "NEGATIVE"):
        assert f'<th scope="row">{group}</th>' in html


def test_studies_csv_of_dataset_stats_is_matched_by_its_key_column(tmp_path):
    """`dataset stats` writes key (the study key the scorer uses), patient and study (the TCIA study folder)."""
    paths = _three_submissions(tmp_path, studies=12)
    body = json.loads(paths[0].read_text())
    studies = sorted(r["study"] for r in body["case"].values())
    csv = tmp_path / "studies.csv"
    csv.write_text("key,patient,study,diagnosis\n" + "".join(
        f"{s},P{i},01-01-2000-NA-PET-CT {i},{('LYMPHOMA', 'MELANOMA', 'NEGATIVE')[i % 3]}\n"
        for i, s in enumerate(studies)))
    output, _ = build_report_html(ReportOptions(metrics=[str(paths[0])], output=tmp_path / "r.html", studies=csv))
    html = output.read_text()
    assert "(not in the CSV)" not in html
    for group in ("LYMPHOMA", "MELANOMA", "NEGATIVE"):
        assert f'<th scope="row">{group}</th>' in html


@pytest.mark.slow
def test_report_command_writes_the_file_and_one_line_per_bad_input(tmp_path):
    paths = _three_submissions(tmp_path, studies=5)
    run = subprocess.run([sys.executable, "-m", "evaluation", "report", *map(str, paths[:2]), "--output",
                          str(tmp_path / "out.html"), "--resamples", "20"], capture_output=True, text=True, cwd=REPO)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == str(tmp_path / "out.html") and (tmp_path / "out.html").is_file()
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    run = subprocess.run([sys.executable, "-m", "evaluation", "report", str(broken), "--output",
                          str(tmp_path / "x.html")], capture_output=True, text=True, cwd=REPO)
    assert run.returncode == 1 and "Traceback" not in run.stderr
    assert len(run.stderr.strip().splitlines()) == 1 and str(broken) in run.stderr
    assert not (tmp_path / "x.html").exists()
    run = subprocess.run([sys.executable, "-m", "evaluation", "report", str(paths[0]), "--output",
                          str(tmp_path / "x.html"), "--mip", "worst:0"], capture_output=True, text=True, cwd=REPO)
    assert run.returncode == 2 and "worst:N" in run.stderr


def test_scoring_never_imports_the_report_libraries():
    code = ("import sys, evaluation.__main__, evaluation.mip; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('matplotlib', 'jinja2', 'markupsafe')))")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "[]"


@pytest.mark.parametrize("layout", ["folder", "flat", "two-level", "two-level-spaces"])
def test_study_files_are_found_in_each_layout_the_kit_reads(tmp_path, layout):
    from evaluation.html_report.inputs import find_study_files

    # two-level-spaces: the TCIA study folder as `dataset convert` names it; its study key reads `_` for the spaces
    study = {"two-level": "P1__2001-01-01_study", "two-level-spaces": "P1__01-01-2001-NA-PET-CT_Ganzkoerper-78672"
             }.get(layout, "PETCT_1")
    where = {"folder": lambda n: tmp_path / study / f"{n}.mha", "flat": lambda n: tmp_path / f"{study}_{n}.mha",
             "two-level": lambda n: tmp_path / "P1" / "2001-01-01_study" / f"{n}.mha",
             "two-level-spaces": lambda n: tmp_path / "P1" / "01-01-2001-NA-PET-CT Ganzkoerper-78672" / f"{n}.mha",
             }[layout]
    for name in ("SUV", "SEG", "PRED"):
        where(name).parent.mkdir(parents=True, exist_ok=True)
        where(name).write_bytes(b"x")
    (tmp_path / "OTHER_SUV.mha").write_bytes(b"x")
    files = find_study_files(tmp_path, {"study": study, "ground_truth_file": "/nonexistent/SEG.mha"})
    assert (files.suv, files.ground_truth, files.prediction) == (where("SUV"), where("SEG"), where("PRED"))
    recorded = tmp_path / "elsewhere.mha"
    recorded.write_bytes(b"x")
    assert find_study_files(tmp_path, {"study": study, "prediction_file": str(recorded)}).prediction == recorded
    assert find_study_files(tmp_path, {"study": "MISSING"}) is None


def test_hostile_study_names_are_text_not_markup(tmp_path):
    rng = np.random.default_rng(1)
    hostile = ['<script>alert(1)</script>', '" onmouseover="x', "a&b"]
    path = write_metrics(tmp_path / "t" / "metrics.json", random_metrics(rng, hostile))
    html = build_report_html(ReportOptions(metrics=[str(path)], output=tmp_path / "r.html"))[0].read_text()
    assert "<script>alert(1)</script>" not in html and '" onmouseover="x' not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    studies = {c["data-study"] for c, _, _ in numbers(html).found if "data-study" in c}
    assert studies == set(hostile)  # the parser reads back exactly the names metrics.json holds


def test_figure4_counts_studies_in_whole_numbers_and_never_goes_below_zero():
    from evaluation.html_report.figures import figure4_figure

    figure = figure4_figure(true_mtv=[42.0], predicted_mtv=[30.0], dice=[0.48], fnv=[12.0], fpv=[0.0],
                            titles={"mtv": "", "dice": "", "fnv": "", "fpv": ""})
    figure.canvas.draw()
    scatter, *histograms = figure.axes
    assert scatter.get_xlim()[0] == 0.0 and scatter.get_ylim()[0] == 0.0
    for ax in histograms:  # one study: counts 0 and 1, no 0.2 steps; a lone FPV of 0 gives no axis below 0
        assert ax.get_xlim()[0] == 0.0
        assert all(float(t).is_integer() for t in ax.get_yticks())
        assert sum(p.get_height() for p in ax.patches) == 1


def test_box_plots_order_numeric_groups_by_value():
    from evaluation.html_report.figures import box_plots_figure, natural_key

    names = ["10", "2", "age 40-60", "age 9-40", "1.5", "b", "A"]
    assert sorted(names, key=natural_key) == ["1.5", "2", "10", "A", "age 9-40", "age 40-60", "b"]
    groups = {name: {"dice": [0.5, 0.6]} for name in ("10", "2", "30")}
    figure = box_plots_figure(groups, metrics={"dice": "Dice"})
    figure.canvas.draw()
    assert [t.get_text() for t in figure.axes[0].get_xticklabels()] == ["2", "10", "30"]
