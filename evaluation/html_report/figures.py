"""The report's plots (matplotlib, Agg), each returned as a PNG data URI at twice screen resolution."""
from __future__ import annotations

import base64
import io
import math
import re

import numpy as np

DPI = 200  # 2x of the 100 dpi the figure sizes are laid out for
MARKER = "#0072B2"
REFERENCE = "#555555"


def _figure(width: float, height: float, columns: int = 1):
    from matplotlib.figure import Figure  # the Agg canvas, without pyplot's global state

    figure = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    return figure, figure.subplots(1, columns, squeeze=False)[0]


def png_data_uri(figure) -> str:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def rgb_data_uri(write_png) -> str:
    """A PNG written by `write_png(binary_file)` as a data URI."""
    buffer = io.BytesIO()
    write_png(buffer)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _finite(values) -> np.ndarray:
    array = np.asarray(list(values), dtype=np.float64)
    return array[np.isfinite(array)]


def figure4(**kwargs) -> str:
    """The seed's Figure 4 as a PNG data URI (see figure4_figure)."""
    return png_data_uri(figure4_figure(**kwargs))


def figure4_figure(*, true_mtv: list[float], predicted_mtv: list[float], dice: list[float], fnv: list[float],
                   fpv: list[float], titles: dict[str, str], log_axes: bool = False):
    """The seed's Figure 4: predicted vs true MTV, and the Dice, FNV and FPV distributions (`titles` by panel:
    mtv, dice, fnv, fpv). Study counts on whole numbers; volumes and Dice from 0, never below."""
    from matplotlib.ticker import MaxNLocator

    figure, axes = _figure(13.0, 3.3, columns=4)
    x, y = np.asarray(true_mtv, dtype=float), np.asarray(predicted_mtv, dtype=float)
    keep = np.isfinite(x) & np.isfinite(y) & ((x > 0) & (y > 0) if log_axes else True)
    ax = axes[0]
    ax.scatter(x[keep], y[keep], s=10, color=MARKER, alpha=0.7, linewidths=0)
    if keep.any():
        top = max(float(x[keep].max()), float(y[keep].max()), 1e-3) * 1.05
        low = min(float(x[keep].min()), float(y[keep].min())) if log_axes else 0.0
        ax.plot([low, top], [low, top], color=REFERENCE, linewidth=1, linestyle="--", label="identity")
        ax.legend(fontsize=7, frameon=False, loc="upper left")
    if log_axes:
        ax.set_xscale("log")
        ax.set_yscale("log")
    else:
        ax.set_xlim(left=0.0)
        ax.set_ylim(bottom=0.0)
    ax.set_xlabel("true MTV (ml)")
    ax.set_ylabel("predicted MTV (ml)")
    ax.set_title(titles["mtv"], fontsize=9)
    for ax, values, label, panel in ((axes[1], dice, "Dice (positive studies)", "dice"),
                                     (axes[2], fnv, "FNV ml (positive studies)", "fnv"),
                                     (axes[3], fpv, "FPV ml (all studies)", "fpv")):
        data = _finite(values)
        # From 0 (a lone value would get an axis around it, below 0); Dice up to 1, volumes to the largest
        top = 1.0 if panel == "dice" else max(float(data.max()) if data.size else 0.0, 1.0)
        ax.hist(data, bins=20, range=(0.0, top), color=MARKER, alpha=0.85)
        ax.set_xlim(0.0, top)
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_title(titles[panel], fontsize=9)
        ax.set_xlabel(label)
        ax.set_ylabel("studies")
    return figure


def step_curves(axis, curves: np.ndarray, *, title: str, xlabel: str, unit_interval: bool) -> None:
    """Curves over protocol steps on one panel: each study's (grey), the mean with its standard deviation."""
    steps = np.arange(curves.shape[1])
    for curve in curves:
        axis.plot(steps, curve, color="#999999", linewidth=0.7, alpha=0.6)
    with np.errstate(all="ignore"):  # a step undefined for every study (Dice of lesion-free studies) stays NaN
        mean = np.nanmean(curves, axis=0)
        spread = np.nanstd(curves, axis=0)
    axis.fill_between(steps, mean - spread, mean + spread, color=MARKER, alpha=0.2, label="mean ± SD")
    axis.plot(steps, mean, color=MARKER, linewidth=2, marker="o", label="mean over studies")
    axis.set_title(title)
    axis.set_xlabel(xlabel)
    axis.set_xticks(steps)
    if unit_interval:
        axis.set_ylim(-0.02, 1.02)


def box_plots(groups: dict[str, dict[str, list[float]]], *, metrics: dict[str, str]) -> str:
    return png_data_uri(box_plots_figure(groups, metrics=metrics))


def natural_key(name: str) -> list[tuple[int, float | str]]:
    """Sort key that orders numbers inside names by value: "2" before "10", "age 9-40" before "age 40-60"."""
    parts = re.split(r"(\d+(?:\.\d+)?)", name)
    return [(0, float(p)) if i % 2 else (1, p.lower()) for i, p in enumerate(parts) if p]


def box_plots_figure(groups: dict[str, dict[str, list[float]]], *, metrics: dict[str, str]):
    """One panel per metric, one box per group (group -> metric -> values), groups in natural order."""
    figure, axes = _figure(4.0 * len(metrics), 3.2, columns=len(metrics))
    names = sorted(groups, key=natural_key)
    for ax, (metric, label) in zip(axes, metrics.items()):
        data = [_finite(groups[g][metric]) for g in names]
        shown = [(n, d) for n, d in zip(names, data) if d.size]
        if shown:
            ax.boxplot([d for _, d in shown], tick_labels=[n for n, _ in shown], showmeans=True)
        ax.set_title(label, fontsize=9)
        ax.tick_params(axis="x", labelrotation=30, labelsize=7)
    return figure


def blob_plot(*, submissions: list[str], rank_counts: np.ndarray, resamples: int) -> str:
    """challengeR's blob plot: a disc per (submission, rank) with area by the share of resamples at that rank."""
    n = len(submissions)
    figure, axes = _figure(max(4.0, 1.1 * n + 2), 3.5)
    ax = axes[0]
    for i in range(n):
        shares = rank_counts[i] / resamples
        ranks = np.arange(1, n + 1)
        ax.scatter(np.full(n, i + 1)[shares > 0], ranks[shares > 0], s=600 * shares[shares > 0], color=MARKER,
                   alpha=0.8, linewidths=0)
        median = int(np.searchsorted(np.cumsum(shares), 0.5) + 1)
        ax.scatter([i + 1], [median], marker="_", s=400, color="black")
    ax.plot([0.5, n + 0.5], [0.5, n + 0.5], color=REFERENCE, linewidth=0.8, linestyle=":")
    ax.set_xticks(range(1, n + 1), submissions, rotation=30, fontsize=7)
    ax.set_yticks(range(1, n + 1))
    ax.set_xlim(0.5, n + 0.5)
    ax.set_ylim(n + 0.5, 0.5)
    ax.set_xlabel("submission (leaderboard order)")
    ax.set_ylabel("rank in resample")
    return png_data_uri(figure)


def paired_differences(differences: dict[str, list[float]]) -> str:
    """Per-study differences (first minus second) per metric, as box plots with a zero line."""
    figure, axes = _figure(4.0 * len(differences), 3.0, columns=len(differences))
    for ax, (label, values) in zip(axes, differences.items()):
        data = _finite(values)
        if data.size:
            ax.boxplot([data], tick_labels=[label], showmeans=True)
        ax.axhline(0.0, color=REFERENCE, linewidth=0.8, linestyle="--")
    return png_data_uri(figure)


def fitted_slope(x: list[float], y: list[float]) -> float:
    """Least-squares slope of y on x (with intercept); NaN for fewer than two pairs or no spread in x."""
    a, b = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    keep = np.isfinite(a) & np.isfinite(b)
    a, b = a[keep], b[keep]
    if a.size < 2 or float(np.ptp(a)) == 0.0:
        return math.nan
    return float(np.polyfit(a, b, 1)[0])
