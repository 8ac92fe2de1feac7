"""The shared study key: one rule for every place that names a study."""
from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from petct.studykey import safe_key, study_key


@pytest.mark.parametrize("patient, study, expected", [
    ("PETCT_0af7ffe12a", None, "PETCT_0af7ffe12a"),
    ("PETCT_0af7ffe12a", "08-12-2005-NA-PET-CT Ganzkoerper  primaer mit KM-96698",
     "PETCT_0af7ffe12a__08-12-2005-NA-PET-CT_Ganzkoerper__primaer_mit_KM-96698"),
    ("1.2.840.1", None, "1_2_840_1"),
    ("a/b", "c\\d", "a_b__c_d"),
    ("Müller", "", "M_ller"),
])
def test_study_key_examples(patient, study, expected):
    assert study_key(patient, study) == expected


@given(st.text(min_size=1, max_size=40))
def test_safe_key_keeps_only_safe_characters_and_length(name):
    key = safe_key(name)
    assert len(key) == len(name)
    assert re.fullmatch(r"[A-Za-z0-9_-]+", key)
    # Characters that were already safe stay where they were.
    for a, b in zip(name, key):
        assert b == a or b == "_"


def test_study_folders_lists_both_levels_and_skips_hidden(tmp_path):
    from petct.studykey import study_folders
    for folder in ("PETCT_a/08-12-2005 PET", "PETCT_a/.cache", "PETCT_b", ".hidden/x"):
        (tmp_path / folder).mkdir(parents=True)
    (tmp_path / "file.mha").write_text("")
    assert [(e.name, e.path.relative_to(tmp_path).as_posix()) for e in study_folders(tmp_path)] == [
        ("PETCT_a", "PETCT_a"), ("PETCT_a__08-12-2005_PET", "PETCT_a/08-12-2005 PET"), ("PETCT_b", "PETCT_b")]
