"""`python -m evaluation score-pair --challenge autopet-2026-interactive` and `next-scribbles`, on the organisers'
reference run (test/data/autopet-v)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from evaluation.__main__ import main
from petct.scribbles import read_scribbles

REFERENCE = Path(__file__).parent / "data" / "autopet-v"
LABEL = REFERENCE / "label.nii.gz"
CHALLENGE = ("--challenge", "autopet-2026-interactive")


def test_score_pair_prints_the_loops_dice_and_the_dmm(capsys):
    assert main(["score-pair", str(LABEL), str(REFERENCE / "iter_0.nii.gz"), *CHALLENGE]) == 0
    record = json.loads(capsys.readouterr().out)
    stored = json.loads((REFERENCE / "dice_scores.json").read_text())
    assert record["dice"] == next(iter(stored.values()))[0]["dice"]
    assert (record["dmm"], record["tp"], record["fp"], record["fn"]) == (0.7777777777777778, 7, 3, 1)
    assert record["false_positive_volume"] >= 0 and record["failed"] is False


def test_score_pair_of_other_profiles_is_unchanged(capsys):
    assert main(["score-pair", str(LABEL), str(REFERENCE / "iter_0.nii.gz")]) == 0
    record = json.loads(capsys.readouterr().out)
    assert "dmm" not in record and record["gt_lesions"] == 8


@pytest.mark.parametrize("k", [0, 3])
@pytest.mark.parametrize("gc", [False, True])
def test_next_scribbles_writes_the_next_steps_scribbles(tmp_path, capsys, k, gc):
    out = tmp_path / "next.json"
    argv = ["next-scribbles", "--ground-truth", str(LABEL), "--prediction", str(REFERENCE / f"iter_{k}.nii.gz"),
            "--strategy", "random", "--output", str(out), *(["--gc"] if gc else [])]
    if k:
        argv += ["--scribbles", str(REFERENCE / f"iter_{k}_scribbles.json")]
    assert main(argv) == 0
    expected = json.loads((REFERENCE / f"iter_{k + 1}_scribbles.json").read_text())
    written = json.loads(out.read_text())
    if gc:
        assert written["type"] == "Multiple points"
        assert written["points"] == [{"point": p, "name": kind} for kind in ("tumor", "background")
                                     for p in expected[kind]]
        assert read_scribbles(out).to_plain() == expected
    else:
        assert written == expected
    assert "scribble" in capsys.readouterr().err


def test_malformed_previous_scribbles_are_one_line_naming_the_file(tmp_path, capsys):
    out = tmp_path / "next.json"
    for name, value in (("outside.json", {"tumor": [[9999, 0, 0]]}), ("float.json", {"tumor": [[1.5, 2, 3]]}),
                        ("name.json", {"points": [{"point": [1, 2, 3], "name": "lesion"}]}),
                        ("keys.json", {"tumour": []})):
        bad = tmp_path / name
        bad.write_text(json.dumps(value))
        assert main(["next-scribbles", "--ground-truth", str(LABEL), "--prediction", str(REFERENCE / "iter_1.nii.gz"),
                     "--scribbles", str(bad), "--strategy", "random", "--output", str(out)]) == 1
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and str(bad) in err and "Traceback" not in err
    assert not out.exists()


def test_published_rule_fails_on_a_mask_without_false_positives(tmp_path, capsys):
    out = tmp_path / "next.json"
    assert main(["next-scribbles", "--ground-truth", str(LABEL), "--prediction", str(LABEL), "--strategy", "boundary",
                 "--output", str(out), "--rule", "published"]) == 1
    assert "no false positive voxel" in capsys.readouterr().err and not out.exists()
    assert main(["next-scribbles", "--ground-truth", str(LABEL), "--prediction", str(LABEL), "--strategy", "boundary",
                 "--output", str(out)]) == 0
    assert json.loads(out.read_text()) == {"tumor": [], "background": []}


def test_container_mode_refuses_the_closed_loop_in_one_line(tmp_path, capsys):
    (tmp_path / "in").mkdir()
    assert main(["--input", str(tmp_path / "in"), "--output", str(tmp_path / "out"), *CHALLENGE]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "dry-run" in err
    assert not (tmp_path / "out").exists()
