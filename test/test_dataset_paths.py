"""`dataset convert` writes only inside OUT, one folder per study, whatever the DICOM text says."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from dataset.discover import StudyFiles, _make_unique
from dataset_helpers import check_against_phantom, convert, copy_study, rewrite, synth
from petct.studykey import safe_folder_name, safe_key, study_key

# Hostile values are longer than DICOM allows; pydicom warns on writing them, as it should.
pytestmark = pytest.mark.filterwarnings("ignore:The value length")


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    return synth(tmp_path_factory.mktemp("paths"), seed=21, n_lesions=2)


def _files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file())


def _outside_files(root: Path, *inside: Path) -> list[Path]:
    """Files under `root` that are in none of the `inside` folders."""
    return [p for p in _files(root) if not any(folder in p.parents for folder in inside)]


@pytest.mark.parametrize("tag,value", [
    ("PatientID", "../../escaped_patient"),
    ("PatientID", "/ABSOLUTE/escaped_absolute"),
    ("PatientID", ".."),
    ("StudyDescription", "x/../../../../escaped_desc"),
    ("StudyDescription", "..\\..\\escaped_backslash"),
])
@pytest.mark.parametrize("layout,fmt", [("tcia", "nifti"), ("grand-challenge", "mha")])
def test_hostile_dicom_text_never_puts_an_output_outside_out(study, tmp_path, tag, value, layout, fmt):
    dicom = tmp_path / "in"
    folder = copy_study(study, dicom)
    value = value.replace("/ABSOLUTE", str(tmp_path))
    rewrite(sorted(folder.rglob("*.dcm")), lambda ds: setattr(ds, tag, value))
    out = tmp_path / "deep" / "er" / "out"
    (record,) = convert(dicom, out, layout=layout, fmt=fmt).values()
    assert record.status == "converted", record.reason
    assert _outside_files(tmp_path, dicom, out) == []
    for relative in record.outputs.values():
        assert out.resolve() in (out / relative).resolve().parents
    if layout == "tcia":
        check_against_phantom(study, out / Path(record.outputs["SUV"]).parent)
        patient, study_folder = Path(record.outputs["SUV"]).parent.parts
        # The key read back from the folders (as the scorer and the report do) is the key the study has.
        assert study_key(patient, study_folder) == record.key


def test_a_link_inside_out_that_leads_outside_is_refused_naming_the_tag(study, tmp_path):
    dicom = tmp_path / "in"
    folder = copy_study(study, dicom)
    rewrite(sorted(folder.rglob("*.dcm")), lambda ds: setattr(ds, "PatientID", "LINKED"))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    out = tmp_path / "out"
    out.mkdir()
    os.symlink(elsewhere, out / "LINKED")
    (record,) = convert(dicom, out).values()
    assert record.status == "failed"
    assert "PatientID 'LINKED'" in record.reason and "outside OUT" in record.reason
    assert _files(elsewhere) == []


def test_studies_whose_folder_names_coincide_get_one_folder_each(tmp_path):
    """One patient, one day, one description, StudyInstanceUIDs with the same last five digits."""
    dicom = tmp_path / "in"
    studies = [synth(tmp_path / f"s{seed}", seed=seed, n_lesions=n) for seed, n in ((31, 1), (32, 3))]
    for i, one in enumerate(studies):
        folder = copy_study(one, dicom / f"s{i}")

        def same_names(ds, i=i):
            ds.PatientID = "PATIENT"
            ds.StudyDate = "20200101"
            ds.StudyDescription = "PET-CT"
            ds.StudyInstanceUID = f"1.2.826.0.1.3680043.{i + 1}.12345"
        rewrite(sorted(folder.rglob("*.dcm")), same_names)
    records = sorted(convert(dicom, tmp_path / "out").values(), key=lambda r: r.key)
    assert [r.status for r in records] == ["converted", "converted"]
    folders = [Path(r.outputs["SUV"]).parent for r in records]
    assert folders[0] != folders[1]
    assert [study_key(*f.parts) for f in folders] == [r.key for r in records]
    by_uid = {one.pet_dir.parent.name: one for one in studies}
    assert len(by_uid) == 2
    # The first study's UID sorts first: each folder holds its own study's images.
    for one, folder in zip(studies, folders):
        check_against_phantom(one, tmp_path / "out" / folder)


def test_unique_keys_skip_a_key_another_study_already_has():
    def files(patient: str, name: str, uid: str) -> StudyFiles:
        return StudyFiles(key=study_key(patient, name), patient=patient, study_name=name, study_uid=uid,
                          folder=f"{safe_folder_name(patient)}/{safe_folder_name(name)}")
    studies = [files("P", "X", "1"), files("P", "X", "2"), files("P", "X-2", "3"), files("P", "X", "4"),
               files("a__b", "c", "5"), files("a", "b__c", "6"), files("P Q", "X", "7"), files("P_Q", "X", "8")]
    studies.sort(key=lambda s: (s.key, s.study_uid))
    _make_unique(studies)
    keys = [s.key for s in studies]
    assert len(set(keys)) == len(keys)
    assert len({s.folder for s in studies}) == len(studies)
    assert next(s.key for s in studies if s.study_uid == "3") == "P__X-2"  # a study's own name keeps its key
    for s in studies:
        assert study_key(*s.folder.split("/")) == s.key


def test_folder_names_are_safe_and_keep_the_study_key():
    for name in ["../..", "/etc/passwd", "a\\b", ".hidden", "x\x00y", "Ganzkoerper  primaer mit KM", "ä/ö", ""]:
        folder = safe_folder_name(name)
        assert "/" not in folder and "\\" not in folder and not folder.startswith(".") and "\x00" not in folder
        assert safe_key(folder) == safe_key(name) and len(folder) == len(name)
