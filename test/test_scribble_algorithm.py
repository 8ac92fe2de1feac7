"""The algorithm under the autoPET V (2026) profile: scribbles read in both forms, the baseline using them, and a
4-channel nnU-Net fed the organisers' scribble channels (1.0 at each scribble voxel, no blur), against nnunetv2."""
from __future__ import annotations

import json

import cc3d
import numpy as np
import pytest
import SimpleITK as sitk
import torch
from scipy import ndimage

from algorithm.__main__ import main as algorithm_main
from algorithm.baseline import BaselineEngine
from algorithm.cli import engine_options, parse_args
from nnunet_helpers import study_arrays, write_results_folder, write_scribble_model
from petct.clicks import Clicks
from petct.errors import InputError
from petct.phantom import make_study
from petct.scribbles import SCRIBBLE_ENCODING, read_scribbles, scribble_channels

CHALLENGE = ("--challenge", "autopet-2026-interactive")
TINY = (24, 24, 16)


def write(path, value):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(value))
    return path


def test_both_forms_and_thousands_of_points_read_the_same(tmp_path):
    line = [[x % 200, x // 200, 3] for x in range(1500)]  # a scribble over a thousand voxels long
    plain = write(tmp_path / "plain.json", {"tumor": line, "background": [[1, 2, 3]]})
    gc = write(tmp_path / "gc.json", {"version": {"major": 1, "minor": 0}, "type": "Multiple points", "points":
                                      [{"point": p, "name": "tumor"} for p in line] +
                                      [{"point": [1, 2, 3], "name": "background"}]})
    a, b = read_scribbles(plain, size_xyz=(200, 10, 5)), read_scribbles(gc, size_xyz=(200, 10, 5))
    assert a == b and len(a.tumor) == 1500 and a.background == ((1, 2, 3),)


@pytest.mark.parametrize("value, message", [
    ({"tumor": [[5, 5, 99]]}, "outside the image"),
    ({"tumor": [[5.5, 5, 1]]}, "integers"),
    ({"tumor": [[5, 5]]}, "expected [x, y, z]"),
    ({"points": [{"point": [1, 1, 1], "name": "lesion"}]}, "expected 'tumor' or 'background'"),
    ({"tumour": []}, "unknown keys"),
])
def test_malformed_scribbles_name_the_file(tmp_path, value, message):
    path = write(tmp_path / "lesion-clicks.json", value)
    with pytest.raises(InputError) as caught:
        read_scribbles(path, size_xyz=(10, 10, 10))
    text = str(caught.value)
    assert message in text and str(path) in text and "\n" not in text


def study_input(tmp_path, study, scribbles):
    folder = tmp_path / "in"
    for sub, image in (("pet", study.suv), ("ct", study.ctres)):
        (folder / "images" / sub).mkdir(parents=True, exist_ok=True)
        sitk.WriteImage(image, str(folder / "images" / sub / "x.mha"))
    write(folder / "lesion-clicks.json", scribbles)
    return folder


def test_algorithm_reads_scribbles_beyond_the_2025_click_limit_and_refuses_bad_ones(tmp_path, capsys):
    study = make_study(3, size=TINY, n_lesions=1)
    mask = sitk.GetArrayFromImage(study.seg)
    z, y, x = np.argwhere(mask)[0]
    many = [[int(x), int(y), int(z)]] * 40 + [[0, 0, 0]] * 20  # more than 10 of each kind
    folder = study_input(tmp_path, study, {"tumor": many[:40], "background": many[40:]})
    assert algorithm_main(["--input", str(folder), "--output", str(tmp_path / "out"), "--engine", "baseline",
                           *CHALLENGE]) == 0
    (written,) = (tmp_path / "out/images/tumor-lesion-segmentation").iterdir()
    assert sitk.GetArrayFromImage(sitk.ReadImage(str(written)))[z, y, x] == 1
    write(folder / "lesion-clicks.json", {"tumor": [[0, 0, 999]], "background": []})
    code = algorithm_main(["--input", str(folder), "--output", str(tmp_path / "out2"), "--engine", "baseline",
                           *CHALLENGE])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and "lesion-clicks.json" in err[-1] and "outside the image" in err[-1]
    assert "Traceback" not in "\n".join(err) and not (tmp_path / "out2/images").exists()


def test_baseline_keeps_grows_and_removes_what_scribbles_touch():
    study = make_study(3, size="small", n_lesions=3)
    pet = sitk.GetArrayFromImage(study.suv).astype(np.float32)
    ct = sitk.GetArrayFromImage(study.ctres).astype(np.float32)
    spacing = study.suv.GetSpacing()[::-1]
    engine = BaselineEngine()
    plain = engine.predict(pet=pet, ct=ct, spacing_zyx=spacing).mask
    labels, count = cc3d.connected_components(plain, connectivity=18, return_N=True)  # the baseline's components
    assert count == 2
    # a background scribble across every voxel of component 1's middle slice removes the component
    zs = np.argwhere(labels == 1)
    z = int(np.median(zs[:, 0]))
    scribble = tuple((int(x), int(y), z) for y, x in np.argwhere(labels[z] == 1))
    after = engine.predict(pet=pet, ct=ct, spacing_zyx=spacing, clicks=Clicks(background=scribble)).mask
    assert not after[labels == 1].any() and after[(labels > 1)].all()
    kept = engine.predict(pet=pet, ct=ct, spacing_zyx=spacing,
                          clicks=Clicks(tumor=scribble[:1], background=scribble)).mask
    assert kept[labels == 1].all()


def test_the_2026_profile_feeds_impulses_and_other_profiles_keep_theirs():
    assert engine_options(parse_args(["--input", "/in", *CHALLENGE])).click_encoding == SCRIBBLE_ENCODING
    assert engine_options(parse_args(["--input", "/in", "--challenge", "autopet-2025-interactive"])
                          ).click_encoding is None
    points = Clicks(tumor=((1, 2, 3), (9, 9, 9), (-1, 0, 0)), background=((0, 0, 0),))
    tumour, background = scribble_channels(points, (4, 5, 6))  # (9, 9, 9) and (-1, 0, 0) lie off the grid
    assert tumour.dtype == np.float32 and tumour.sum() == 1.0 and tumour[3, 2, 1] == 1.0
    assert background[0, 0, 0] == 1.0 and background.sum() == 1.0


# --- nnU-Net parity -----------------------------------------------------------------------------------------------

PATCH = (24, 32, 32)


@pytest.fixture(scope="module")
def scribble_model(tmp_path_factory):
    pytest.importorskip("nnunetv2")
    torch.set_num_threads(2)
    study = study_arrays(4, (48, 48, 32))
    # the organisers' Dataset998_AutoPETV: CT, PET, FG, BG, the scribble channels z-score normalised
    folder = write_scribble_model(tmp_path_factory.mktemp("scribbles"), spacing=list(study[2]), patch_size=PATCH)
    return folder, study


def organisers_channel(points, shape_xyz) -> np.ndarray:
    """Their heatmap: 1.0 at each in-range point of an (x, y, z) array, then scipy's Gaussian with sigma 0."""
    heat = np.zeros(shape_xyz, dtype=np.float32)
    for p in points:
        if all(0 <= v < n for v, n in zip(p, shape_xyz)):
            heat[tuple(p)] = 1.0
    return ndimage.gaussian_filter(heat, sigma=0).transpose(2, 1, 0)  # back to (z, y, x)


@pytest.mark.slow
def test_four_channel_model_with_scribbles_matches_nnunet(scribble_model):
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

    from algorithm.engine_contract import EngineOptions
    from algorithm.nnunet import NnUNetEngine

    folder, (pet, ct, spacing) = scribble_model
    shape_xyz = pet.shape[::-1]
    tumour = tuple((x, 20, 12) for x in range(8, 40))  # a scribble along x
    background = tuple((30, y, 5) for y in range(2, 30))
    scribbles = Clicks(tumor=tumour, background=background)
    engine = NnUNetEngine.from_folder(folder, options=EngineOptions(device="cpu", use_mirroring=False,
                                                                    click_encoding=SCRIBBLE_ENCODING))
    assert engine.channel_roles == ("ct", "pet", "tumor_clicks", "background_clicks")
    ours = engine.predict(pet=pet, ct=ct, spacing_zyx=spacing, clicks=scribbles)
    predictor = nnUNetPredictor(tile_step_size=0.5, use_gaussian=True, use_mirroring=False,
                                perform_everything_on_device=False, device=torch.device("cpu"), verbose=False,
                                verbose_preprocessing=False, allow_tqdm=False)
    predictor.initialize_from_trained_model_folder(str(folder), use_folds=(0,), checkpoint_name="checkpoint_final.pth")
    channels = [ct, pet, organisers_channel(tumour, shape_xyz), organisers_channel(background, shape_xyz)]
    seg, probs = predictor.predict_single_npy_array(np.stack(channels).astype(np.float32),
                                                    {"spacing": list(spacing)}, None, None, True)
    assert probs[1].std() > 1e-2
    # z-scored impulse channels hold values near 50 (std of a sparse channel is small), which scales float32
    # rounding in the two normalisations; a few voxels differ by up to ~2e-3, the masks not at all
    diff = np.abs(ours.probabilities - probs[1])
    assert diff.max() <= 5e-3 and np.mean(diff > 1e-4) < 1e-3
    assert np.array_equal(ours.mask, seg.astype(np.uint8))
    # the 2025 Gaussian would feed the network something else
    gaussian = NnUNetEngine.from_folder(folder, options=EngineOptions(device="cpu", use_mirroring=False))
    other = gaussian.predict(pet=pet, ct=ct, spacing_zyx=spacing, clicks=scribbles)
    assert np.abs(other.probabilities - ours.probabilities).max() > 1e-3


def test_the_organisers_dataset998_results_folder_loads_as_it_is(tmp_path):
    """Their baseline's plans.json and dataset.json (random weights in their checkpoint's place), in nnU-Net's
    results layout: the kit finds the trainer folder, maps CT, PET, FG, BG and feeds the scribbles as impulses."""
    pytest.importorskip("nnunetv2")
    import shutil
    from pathlib import Path

    from algorithm.engine_choice import load_engine

    source = Path(__file__).parent / "data" / "autopet-v" / "Dataset998_AutoPETV"
    trainer = tmp_path / "nnUNet_results" / "Dataset998_AutoPETV" / "nnUNetTrainer__nnUNetPlans__3d_fullres"
    plans = json.loads((source / "plans.json").read_text())
    dataset = json.loads((source / "dataset.json").read_text())
    write_results_folder(trainer, plans=plans, dataset=dataset, folds=(0,))
    for name in ("plans.json", "dataset.json"):  # byte for byte theirs
        shutil.copyfile(source / name, trainer / name)
    args = parse_args(["--input", "/in", "--model", str(tmp_path / "nnUNet_results"), "--folds", "0", *CHALLENGE])
    engine = load_engine(model=args.model, options=engine_options(args))
    assert engine.channel_roles == ("ct", "pet", "tumor_clicks", "background_clicks")
    assert engine.click_encoding == SCRIBBLE_ENCODING and engine.plan.patch_size == (112, 160, 128)
    rng = np.random.default_rng(0)  # a small study already at the plans' spacing: nothing to resample
    pet = rng.gamma(2.0, 1.0, (20, 24, 24)).astype(np.float32)
    ct = rng.normal(0.0, 300.0, (20, 24, 24)).astype(np.float32)
    assert engine.keep_study(pet=pet, ct=ct, spacing_zyx=tuple(plans["configurations"]["3d_fullres"]["spacing"]))
    engine.release_study()
