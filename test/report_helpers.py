"""Shared helpers of the report and page tests: synthetic metrics.json files and an HTML number reader."""
from __future__ import annotations

import math
from html.parser import HTMLParser
from pathlib import Path

import numpy as np

from evaluation.aggregates import aggregate
from evaluation.metrics import StudyMetrics
from petct.jsonio import write_json_atomic


def random_metrics(rng: np.random.Generator, studies: list[str], *, quality: float = 0.5) -> dict:
    """A metrics.json body: random but consistent per-study records (negatives have undefined Dice and FNV)."""
    case, results = {}, []
    for study in studies:
        lesions = int(rng.integers(0, 4)) if rng.uniform() > 0.2 else 0
        gt_volume = float(rng.uniform(1, 300)) if lesions else 0.0
        metrics = StudyMetrics(
            dice=float(np.clip(rng.normal(quality, 0.25), 0, 1)) if lesions else math.nan,
            false_positive_volume=float(rng.exponential(10)) if rng.uniform() < 0.6 else 0.0,
            false_negative_volume=float(rng.exponential(10)) if lesions else math.nan,
            gt_volume=gt_volume, pred_volume=float(gt_volume * rng.uniform(0.5, 1.5)), gt_lesions=lesions,
            detected_lesions=int(rng.integers(0, lesions + 1)), fp_components=int(rng.integers(0, 3)))
        results.append(metrics)
        case[study.replace(".", "_")] = {"study": study, **metrics.to_json(), "ground_truth_file": "",
                                         "prediction_file": "", "warnings": [], "job": None}
    return {"case": case, "aggregates": aggregate(results), "errors": []}


def write_metrics(path: Path, body: dict) -> Path:
    return write_json_atomic(body, path)


class Numbers(HTMLParser):
    """Every element with data-value, with the data-* context of the elements around it."""

    def __init__(self):
        super().__init__()
        self.stack: list[tuple[str, dict]] = []
        self.found: list[tuple[dict, str | None, str]] = []  # (merged context, data-value, shown text)
        self._open: list[list] = []
        self.images: list[dict] = []

    VOID = {"img", "meta", "br", "input", "link", "hr"}

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "img":
            self.images.append(attrs)
        if tag in self.VOID:
            return
        self.stack.append((tag, attrs))
        if "data-value" in attrs:
            context = {}
            for _, a in self.stack[:-1]:
                context.update({k: v for k, v in a.items() if k.startswith("data-") or k in ("class", "id")})
            self._open.append([context, attrs["data-value"], "", len(self.stack)])

    def handle_data(self, data):
        for item in self._open:
            item[2] += data

    def handle_endtag(self, tag):
        if not self.stack or tag in self.VOID:
            return
        depth = len(self.stack)
        self.stack.pop()
        while self._open and self._open[-1][3] == depth:
            context, value, text, _ = self._open.pop()
            self.found.append((context, value, text.strip()))


def numbers(html: str) -> Numbers:
    parser = Numbers()
    parser.feed(html)
    return parser


def exact(value) -> float | None:
    """A data-value attribute as the number it stands for (None for null)."""
    return None if value == "null" else float(value)
