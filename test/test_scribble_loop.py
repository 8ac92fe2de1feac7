"""autoPET V (2026) closed loop: scribble simulation, the loop's Dice, the DMM, against the organisers' reference.

test/data/autopet-v/ holds the organisers' reference run (README.md there): the label, the baseline's masks of
five steps, the scribbles each step got (strategy random) and the Dice values their loop stored.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import cc3d
import numpy as np
import pytest
import SimpleITK as sitk

from evaluation.closed_loop import StepMetrics, loop_dice, pooled_dmm_curve, score_step, study_summary
from evaluation.detection import Detection, detect, pooled_f1, subset_of, subset_pooled_f1
from evaluation.interactive import area_under_curve
from evaluation.scribble_simulation import _DRAW, SimulationFailed, next_scribbles, simulate_scribble
from petct.clicks import Clicks

REFERENCE = Path(__file__).parent / "data" / "autopet-v"
STEPS = range(5)

# The organisers' metrics.py (autoPETV bf665e2, MetricEvaluator() with its defaults: IoU 0.1, 18-connectivity)
# run in a separate environment (numpy, cc3d, nibabel) on: the reference run's masks against its label
# (case "case1", as their loop calls it), their tutorial's four cases (metrics.py all_cases(), ground truth
# clipped to 0/1 as the tutorial does), and four random cases built as `random_case` below builds them.
# Values copied from that run's output.
ORGANISER_DMM = {
    "reference_run": [(7, 3, 1, 0.7777777777777778), (7, 2, 1, 0.8235294117647058), (7, 2, 1, 0.8235294117647058),
                      (7, 2, 1, 0.8235294117647058), (7, 2, 1, 0.8235294117647058)],
    "tutorial": {"fdg_ukt_001": (2, 1, 1, 0.6666666666666666), "fdg_ukt_002": (2, 1, 1, 0.6666666666666666),
                 "psma_lmu_001": (0, 1, 0, math.nan), "psma_lmu_002": (2, 0, 0, 1.0)},
    "tutorial_f1_aggregated": 0.7058823529411765,
    "tutorial_f1_aggregated_weighted": 0.7333333333333334,
    "random": [(83, 661, 679, 0.1102257636122178), (74, 691, 695, 0.09647979139504563),
               (83, 691, 632, 0.11148421759570182), (77, 660, 672, 0.10363391655450875)],
    "random_f1_aggregated": 0.10540315876974231,
    "random_f1_aggregated_weighted": 0.10542570951585978,
}


def read_zyx(path: Path) -> np.ndarray:
    return sitk.GetArrayFromImage(sitk.ReadImage(str(path)))


def reference_scribbles(k: int) -> Clicks:
    value = json.loads((REFERENCE / f"iter_{k}_scribbles.json").read_text())
    return Clicks(tumor=tuple(map(tuple, value["tumor"])), background=tuple(map(tuple, value["background"])))


@pytest.fixture(scope="module")
def run():
    return {"label": read_zyx(REFERENCE / "label.nii.gz"), "masks": [read_zyx(REFERENCE / f"iter_{k}.nii.gz")
                                                                   for k in STEPS]}


# --- scribbles against the organisers' reference run ---------------------------------------------------------

@pytest.mark.parametrize("k", range(4))
def test_mask_and_label_give_exactly_the_next_steps_scribbles(run, k):
    step = next_scribbles(ground_truth_zyx=run["label"], prediction_zyx=run["masks"][k],
                          previous=reference_scribbles(k), strategy="random")
    assert step.scribbles.to_plain() == json.loads((REFERENCE / f"iter_{k + 1}_scribbles.json").read_text())


@pytest.mark.parametrize("strategy", ["centerline", "random", "boundary"])
def test_every_strategy_equals_the_organisers_simulation_point_for_point(run, strategy):
    recorded = json.loads((REFERENCE / "organiser_strategies.json").read_text())["scribbles"][strategy]
    label = run["label"] != 0
    for k in STEPS:
        mask = run["masks"][k] != 0
        for kind, region in (("background", mask & ~label), ("tumor", label & ~mask)):
            scribble = simulate_scribble(region, strategy=strategy)
            assert [list(p) for p in scribble.points] == recorded[str(k)][kind], (k, kind)


def test_loop_dice_and_its_area_equal_the_reference_runs(run):
    stored = json.loads((REFERENCE / "dice_scores.json").read_text())
    (curve,) = stored.values()
    dice = [loop_dice(ground_truth=run["label"], prediction=run["masks"][k]) for k in STEPS]
    assert dice == [item["dice"] for item in curve]
    (area,) = json.loads((REFERENCE / "dice_scores_AUC.json").read_text()).values()
    assert area_under_curve(dice) == area["auc"]


def test_dmm_of_the_reference_masks_equals_the_organisers_metrics_py(run):
    for k in STEPS:
        counts = detect(ground_truth=run["label"], prediction=run["masks"][k])
        tp, fp, fn, f1 = ORGANISER_DMM["reference_run"][k]
        assert (counts.tp, counts.fp, counts.fn, counts.f1) == (tp, fp, fn, f1)


# --- the simulation against a slow reference on random regions -----------------------------------------------

def slow_scribble(region_xyz: np.ndarray, strategy: str) -> list[list[int]]:
    """The published procedure as written: every slice of the whole (x, y, z) volume, the scribble on a full slice."""
    best_area, best = 0, None
    for z in range(region_xyz.shape[2]):
        plane = region_xyz[:, :, z]
        if plane.sum() == 0:
            continue
        labels = cc3d.connected_components(plane, connectivity=8)
        values, counts = np.unique(labels[labels != 0], return_counts=True)
        label = values[np.argmax(counts)]
        if counts.max() > best_area:
            best_area, best = counts.max(), (z, (labels == label).astype(np.uint8))
    if best is None:
        return []
    z, component = best
    drawn = _DRAW[strategy](component, 42)
    return [[int(x), int(y), z] for x, y in np.argwhere(drawn)]


def random_region(rng: np.random.Generator, shape_zyx) -> np.ndarray:
    """Blobs and specks: a thresholded smoothed noise field, some of it touching the image's edges."""
    from scipy import ndimage
    field = ndimage.gaussian_filter(rng.random(shape_zyx), sigma=rng.uniform(0.8, 2.0))
    return field > np.quantile(field, rng.uniform(0.85, 0.99))


@pytest.mark.parametrize("strategy", ["centerline", "random", "boundary"])
def test_cropped_simulation_equals_the_whole_volume_procedure_on_random_regions(strategy):
    rng = np.random.default_rng(7)
    for _ in range(25):
        shape = tuple(int(n) for n in rng.integers(6, 30, size=3))
        region = random_region(rng, shape)
        # the organisers' arrays are nibabel's: (x, y, z), Fortran-ordered, as this transpose is
        expected = slow_scribble(region.T.view(np.uint8), strategy)
        scribble = simulate_scribble(region, strategy=strategy)
        assert [list(p) for p in scribble.points] == expected if expected else scribble is None


def test_equal_components_are_told_apart_as_the_organisers_numbering_does():
    # two equal squares on one slice: the first in memory order of the (x, y) slice wins, i.e. the lower y
    region = np.zeros((3, 12, 12), dtype=bool)
    region[1, 8:11, 1:4] = True  # x 1..3, y 8..10
    region[1, 1:4, 7:10] = True  # x 7..9, y 1..3: first in Fortran order of (x, y)
    expected = slow_scribble(region.T.view(np.uint8), "random")
    assert all(p[1] <= 3 for p in expected)
    assert [list(p) for p in simulate_scribble(region, strategy="random").points] == expected


# --- one step's rule ------------------------------------------------------------------------------------------

def test_step_adds_the_tumour_scribble_when_it_is_at_least_the_background_one():
    gt = np.zeros((4, 20, 20), np.uint8)
    gt[1, 2:10, 2:10] = 1
    pred = np.zeros_like(gt)
    pred[1, 2:10, 2:6] = 1  # misses half the lesion
    pred[2, 15:17, 15:17] = 1  # a small false positive
    step = next_scribbles(ground_truth_zyx=gt, prediction_zyx=pred, previous=Clicks(), strategy="centerline")
    assert step.kind == "tumor" and not step.scribbles.background
    assert all(gt[z, y, x] and not pred[z, y, x] for x, y, z in step.scribbles.tumor)
    pred = gt.copy()
    pred[1, 5, 5] = 0  # one voxel missed: a one-point tumour scribble
    pred[2, 10:19, 10:19] = 1  # a large false positive: a longer background scribble
    first = step.scribbles
    step = next_scribbles(ground_truth_zyx=gt, prediction_zyx=pred, previous=first, strategy="random")
    assert step.kind == "background" and step.scribble.size > 1
    assert step.scribbles.tumor == first.tumor and step.scribbles.background == step.scribble.points
    assert all(pred[z, y, x] and not gt[z, y, x] for x, y, z in step.scribbles.background)


def test_one_sided_or_perfect_masks_fail_under_the_published_rule_and_carry_on_under_the_kits():
    gt = np.zeros((4, 20, 20), np.uint8)
    gt[1, 2:10, 2:10] = 1
    under = gt.copy()
    under[1, 2:10, 2:5] = 0  # no false positive voxel
    for pred in (under, gt):
        with pytest.raises(SimulationFailed):
            next_scribbles(ground_truth_zyx=gt, prediction_zyx=pred, previous=Clicks(), strategy="random",
                           rule="published")
    step = next_scribbles(ground_truth_zyx=gt, prediction_zyx=under, previous=Clicks(), strategy="random")
    assert step.kind == "tumor" and step.scribbles.tumor
    perfect = next_scribbles(ground_truth_zyx=gt, prediction_zyx=gt, previous=step.scribbles, strategy="random")
    assert perfect.kind is None and perfect.scribbles == step.scribbles
    empty = np.zeros_like(gt)  # lesion-free study, empty mask
    assert next_scribbles(ground_truth_zyx=empty, prediction_zyx=empty, previous=Clicks(),
                          strategy="boundary").kind is None


# --- metrics ----------------------------------------------------------------------------------------------------

def disc(shape_xy, centre_xy, radius) -> np.ndarray:
    x, y = np.ogrid[:shape_xy[0], :shape_xy[1]]
    return ((x - centre_xy[1]) ** 2 + (y - centre_xy[0]) ** 2 <= radius ** 2)


def tutorial_cases() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The organisers' metrics tutorial's four cases (their metrics.py describes each), as one-slice volumes."""
    s = (128, 128)
    cases = {
        "fdg_ukt_001": ([((30, 30), 12), ((80, 30), 10), ((55, 90), 14)],
                        [((30, 30), 11), ((80, 30), 9), ((55, 70), 8)]),
        "fdg_ukt_002": ([((40, 40), 12), ((90, 90), 10), ((55, 90), 1)],
                        [((40, 40), 11), ((90, 90), 9), ((20, 100), 8)]),
        "psma_lmu_001": ([], [((64, 64), 10)]),
        "psma_lmu_002": ([((50, 50), 18), ((100, 90), 10)], [((35, 50), 10), ((65, 50), 10), ((100, 90), 9)]),
    }
    out = {}
    for name, (gt_discs, pred_discs) in cases.items():
        gt = np.zeros(s, bool)
        pred = np.zeros(s, bool)
        for centre, r in gt_discs:
            gt |= disc(s, centre, r)
        for centre, r in pred_discs:
            pred |= disc(s, centre, r)
        out[name] = (gt[:, :, None].astype(np.uint8), pred[:, :, None].astype(np.uint8))
    return out


def random_case(seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    gt = (rng.random((30, 30, 30)) < 0.12).astype(np.uint8)
    pred = (rng.random((30, 30, 30)) < 0.12).astype(np.uint8)
    return gt, pred


def same(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or a == b


def test_dmm_equals_the_organisers_metrics_py_per_case_and_pooled():
    counts = {}
    for name, (gt, pred) in tutorial_cases().items():
        counts[name] = detect(ground_truth=gt, prediction=pred)
        tp, fp, fn, f1 = ORGANISER_DMM["tutorial"][name]
        assert (counts[name].tp, counts[name].fp, counts[name].fn) == (tp, fp, fn), name
        assert same(counts[name].f1, f1)
    assert pooled_f1(counts.values()) == ORGANISER_DMM["tutorial_f1_aggregated"]
    by_name = {case: subset_of(case) for case in counts}
    assert subset_pooled_f1(counts, subsets=by_name)[0] == ORGANISER_DMM["tutorial_f1_aggregated_weighted"]
    counts = {}
    for seed in range(4):
        gt, pred = random_case(seed)
        counts[f"psma_c{seed % 2}_{seed}"] = c = detect(ground_truth=gt, prediction=pred)
        assert (c.tp, c.fp, c.fn, c.f1) == ORGANISER_DMM["random"][seed]
    assert pooled_f1(counts.values()) == ORGANISER_DMM["random_f1_aggregated"]
    weighted, per_subset = subset_pooled_f1(counts, subsets={c: subset_of(c) for c in counts})
    assert weighted == ORGANISER_DMM["random_f1_aggregated_weighted"] and set(per_subset) == {"psma_c0", "psma_c1"}


def slow_detection(gt: np.ndarray, pred: np.ndarray) -> Detection:
    """Every (lesion, component) pair's IoU from whole-volume masks."""
    g, ng = cc3d.connected_components(gt, connectivity=18, return_N=True)
    p, npred = cc3d.connected_components(pred, connectivity=18, return_N=True)
    hit_g, hit_p = set(), set()
    for i in range(1, ng + 1):
        for j in range(1, npred + 1):
            a, b = g == i, p == j
            inter = np.count_nonzero(a & b)
            if inter and inter / np.count_nonzero(a | b) >= 0.1:
                hit_g.add(i)
                hit_p.add(j)
    return Detection(tp=len(hit_g), fp=npred - len(hit_p), fn=ng - len(hit_g))


def test_detection_equals_a_pairwise_reference_on_random_masks():
    rng = np.random.default_rng(3)
    for _ in range(30):
        shape = tuple(int(n) for n in rng.integers(4, 16, size=3))
        gt = random_region(rng, shape).astype(np.uint8)
        pred = random_region(rng, shape).astype(np.uint8) if rng.random() < 0.8 else np.zeros(shape, np.uint8)
        assert detect(ground_truth=gt, prediction=pred) == slow_detection(gt, pred)


def test_loop_dice_rule_on_lesion_free_studies_and_a_failed_step():
    empty = np.zeros((3, 4, 5), np.uint8)
    fp = empty.copy()
    fp[1, 1, 1] = 1
    assert loop_dice(ground_truth=empty, prediction=empty) == 1.0
    assert loop_dice(ground_truth=empty, prediction=fp) == 0.0
    step = score_step(ground_truth=empty, prediction=fp, voxel_volume_ml=0.5)
    assert step.dice == 0.0 and math.isnan(step.dmm) and (step.tp, step.fp, step.fn) == (0, 1, 0)
    assert step.false_positive_volume == 0.5
    failed = StepMetrics.failure()
    assert (failed.dice, failed.dmm, failed.detection) == (0.0, 0.0, None)


def test_study_areas_and_the_pooled_curve():
    gt = np.zeros((3, 8, 8), np.uint8)
    gt[1, 1:3, 1:3] = 1
    gt[1, 5:7, 5:7] = 1
    half = gt.copy()
    half[1, 5:7, 5:7] = 0
    steps = [score_step(ground_truth=gt, prediction=m, voxel_volume_ml=1.0) for m in (np.zeros_like(gt), half, gt)]
    summary = study_summary(steps)
    assert [s.dmm for s in steps] == [0.0, 2 / 3, 1.0]
    assert summary["dmm_auc"] == pytest.approx(0.5 * (0 + 2 / 3) + 0.5 * (2 / 3 + 1))
    assert summary["dice_final"] == 1.0 and summary["false_negative_volume_final"] == 0.0
    free = [score_step(ground_truth=np.zeros_like(gt), prediction=half, voxel_volume_ml=1.0)] * 3
    # the lesion-free study's false positive counts in the pool: 2 TP, 1 FP, 0 FN at the last step
    curve = pooled_dmm_curve({"a": steps, "b": free})
    assert curve[-1] == 2 * 2 / (2 * 2 + 1)
    # a failed step has no counts: only b's false positive is left, and F1 is undefined without a lesion
    assert math.isnan(pooled_dmm_curve({"a": [StepMetrics.failure()] + steps[1:], "b": free})[0])


def test_lesion_free_study_gets_nothing_under_the_published_rule_and_its_false_positive_scribbled_under_the_kits():
    empty = np.zeros((4, 20, 20), np.uint8)
    fp = empty.copy()
    fp[2, 5:9, 5:9] = 1
    assert next_scribbles(ground_truth_zyx=empty, prediction_zyx=fp, previous=Clicks(), strategy="random",
                          rule="published").kind is None
    step = next_scribbles(ground_truth_zyx=empty, prediction_zyx=fp, previous=Clicks(), strategy="random")
    assert step.kind == "background" and all(fp[z, y, x] for x, y, z in step.scribbles.background)
