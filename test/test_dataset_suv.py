"""The body-weight SUV factor (dataset.suv): QIBA DRO and other libraries' published values, each vendor rule,
and each header that must be refused."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian

from dataset.suv import GE_SCAN_DATETIME, PHILIPS_ACTIVITY_SCALE, PHILIPS_SUV_SCALE, SuvError, suv_factor


def pet_slice(*, units="BQML", weight="59.94", dose="370000000", half_life="6586", start="130100.000000",
              start_datetime="20080101130100", series="140100", acquisition="140100", date="20080101",
              decay="START", corrected=("ATTN", "DECY")) -> Dataset:
    """One PET slice header; the defaults are the QIBA FDG-PET digital reference object's PET."""
    ds = Dataset()
    ds.Modality = "PT"
    ds.Units = units
    ds.CorrectedImage = list(corrected)
    ds.DecayCorrection = decay
    ds.SeriesDate, ds.SeriesTime = date, series
    ds.AcquisitionDate, ds.AcquisitionTime = date, acquisition
    if weight is not None:
        ds.add_new("PatientWeight", "LO", weight)  # LO keeps a malformed value as a reader would meet it
    item = Dataset()
    if dose is not None:
        item.RadionuclideTotalDose = dose
    if half_life is not None:
        item.RadionuclideHalfLife = half_life
    if start is not None:
        item.RadiopharmaceuticalStartTime = start
    if start_datetime is not None:
        item.RadiopharmaceuticalStartDateTime = start_datetime
    ds.RadiopharmaceuticalInformationSequence = Sequence([item])
    return ds


def reference_factor(weight_kg, dose_bq, interval_s, half_life_s):
    """The SUVbw formula written out by hand, independently of dataset.suv."""
    return weight_kg * 1000.0 / (dose_bq * 2.0 ** (-interval_s / half_life_s))


def test_qiba_dro_factor_and_reference_suvs():
    result = suv_factor([pet_slice()])
    # 59.94 kg / (370 MBq decayed over one hour of a 6586 s half-life), computed by hand: 2.36626e-4 per Bq/ml.
    assert result.factor == pytest.approx(2.36626e-4, rel=1e-5)
    assert result.decay_interval_s == 3600.0
    assert result.scan_time_source == "SeriesDate/SeriesTime"
    # The DRO's published SUVbw at the hot, cold and background voxels come from these activity concentrations.
    for suv in (4.11, -0.11, 1.00):
        assert suv / result.factor * result.factor == pytest.approx(suv)
    assert 1.0 / result.factor == pytest.approx(4226.08, abs=0.01)


def test_decay_correction_admin_uses_the_injected_dose():
    # cornerstonejs/calculate-suv's published case: 100 kg, 100 Bq, ADMIN -> 1000.
    ds = pet_slice(weight="100", dose="100", half_life="10", start_datetime="20201023095417", date="20201023",
                   series="095417", acquisition="095417", decay="ADMIN")
    assert suv_factor([ds]).factor == pytest.approx(1000.0)


def test_units_gml_is_suv_already():
    assert suv_factor([pet_slice(units="GML")]).factor == 1.0


def test_philips_cnts_with_suv_scale_factor():
    ds = pet_slice(units="CNTS")
    ds.add_new(PHILIPS_SUV_SCALE, "DS", "0.000551")
    ds.add_new(PHILIPS_ACTIVITY_SCALE, "DS", "1.602563")
    assert suv_factor([ds]).factor == pytest.approx(0.000551)


def test_philips_cnts_with_activity_scale_factor_only():
    # calculate-suv's published value: 100 kg, 100 Bq, ADMIN, activity scale 1.602563 -> 1602.563.
    ds = pet_slice(units="CNTS", weight="100", dose="100", half_life="10", start_datetime="20201023095417",
                   date="20201023", series="095417", acquisition="095417", decay="ADMIN")
    ds.add_new(PHILIPS_ACTIVITY_SCALE, "DS", "1.602563")
    assert suv_factor([ds]).factor == pytest.approx(1602.563)


def test_philips_cnts_without_scale_factor_is_refused():
    with pytest.raises(SuvError, match=r"CNTS.*\(7053,1000\)"):
        suv_factor([pet_slice(units="CNTS")])


def test_philips_bqml_ignores_the_private_factor_but_records_it():
    ds = pet_slice()
    ds.add_new(PHILIPS_SUV_SCALE, "DS", "0.5")
    result = suv_factor([ds])
    assert result.factor == pytest.approx(2.36626e-4, rel=1e-5)
    assert result.philips_suv_scale_factor == 0.5


def test_ge_private_scan_time_when_the_series_time_is_later():
    # A post-processed GE series: SeriesTime 14:30, slices acquired from 14:02, true scan start 14:01.
    ds = pet_slice(series="143000", acquisition="140200")
    ds.add_new(GE_SCAN_DATETIME, "DT", "20080101140100")
    result = suv_factor([ds])
    assert result.scan_time_source.startswith("GE private")
    assert result.factor == pytest.approx(reference_factor(59.94, 370e6, 3600, 6586), rel=1e-9)


def test_earliest_acquisition_when_the_series_time_is_later():
    slices = [pet_slice(series="143000", acquisition=t) for t in ("140500", "140100", "140300")]
    result = suv_factor(slices)
    assert result.scan_time_source == "earliest AcquisitionDate/AcquisitionTime"
    assert result.factor == pytest.approx(reference_factor(59.94, 370e6, 3600, 6586), rel=1e-9)


def test_injection_before_midnight_with_time_only():
    # Injected 23:30, scanned 00:30 the next day; the old writer gives only the time of day.
    ds = pet_slice(start="233000", start_datetime=None, date="20080102", series="003000", acquisition="003000")
    result = suv_factor([ds])
    assert result.decay_interval_s == 3600.0
    assert result.injection_datetime == "2008-01-01T23:30:00"


def test_injection_before_midnight_with_full_datetime():
    ds = pet_slice(start_datetime="20080101233000", date="20080102", series="003000", acquisition="003000")
    assert suv_factor([ds]).decay_interval_s == 3600.0


@pytest.mark.parametrize("weight, message", [(None, "PatientWeight is missing"), ("0", "PatientWeight 0 kg"),
                                              ("501", "PatientWeight 501 kg"), ("abc", "PatientWeight is not a number")])
def test_absurd_or_missing_weight_is_refused(weight, message):
    with pytest.raises(SuvError, match=message):
        suv_factor([pet_slice(weight=weight)])


def test_zero_dose_is_refused():
    with pytest.raises(SuvError, match="RadionuclideTotalDose 0"):
        suv_factor([pet_slice(dose="0")])


def test_missing_dose_is_refused():
    with pytest.raises(SuvError, match="RadionuclideTotalDose is missing"):
        suv_factor([pet_slice(dose=None)])


def test_missing_half_life_is_refused():
    with pytest.raises(SuvError, match="RadionuclideHalfLife is missing"):
        suv_factor([pet_slice(half_life=None)])


def test_missing_injection_time_is_refused():
    with pytest.raises(SuvError, match="RadiopharmaceuticalStartDateTime and RadiopharmaceuticalStartTime"):
        suv_factor([pet_slice(start=None, start_datetime=None)])


def test_injection_after_scan_is_refused():
    with pytest.raises(SuvError, match="outside 0 .. 24 h"):
        suv_factor([pet_slice(start_datetime="20080101150000")])


def test_decay_correction_none_is_refused():
    with pytest.raises(SuvError, match="DecayCorrection is 'NONE'"):
        suv_factor([pet_slice(decay="NONE")])


def test_image_not_decay_corrected_is_refused():
    with pytest.raises(SuvError, match="lacks ATTN and DECY"):
        suv_factor([pet_slice(corrected=("ATTN",))])


def test_unknown_units_are_refused():
    with pytest.raises(SuvError, match="Units is 'PROPCNTS'"):
        suv_factor([pet_slice(units="PROPCNTS")])


def test_missing_radiopharmaceutical_sequence_is_refused():
    ds = pet_slice()
    del ds.RadiopharmaceuticalInformationSequence
    with pytest.raises(SuvError, match="RadiopharmaceuticalInformationSequence is missing"):
        suv_factor([ds])


def _save(ds: Dataset, path):
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.128"
    ds.SOPInstanceUID = "1.2.3.4"
    ds.SeriesInstanceUID = "1.2.3"
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.save_as(path, enforce_file_format=True)
    return path


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "dataset", "suv", *map(str, args)], capture_output=True, text=True)


def test_cli_prints_factor_and_inputs_for_one_slice(tmp_path):
    ds = pet_slice()
    path = _save(ds, tmp_path / "slice.dcm")
    run = _cli(path, "--json")
    assert run.returncode == 0, run.stderr
    report = json.loads(run.stdout)
    assert report["factor"] == pytest.approx(2.36626e-4, rel=1e-5)
    assert report["weight_kg"] == 59.94 and report["decay_correction"] == "START" and report["slices"] == 1


def test_cli_names_the_tag_and_exits_1(tmp_path):
    ds = pet_slice(weight=None)
    path = _save(ds, tmp_path / "slice.dcm")
    run = _cli(path)
    assert run.returncode == 1
    assert "PatientWeight is missing" in run.stderr and str(path) in run.stderr
    assert "Traceback" not in run.stderr


def test_an_injection_date_shifted_alone_falls_back_to_its_time_of_day_with_a_warning():
    # The anonymiser moved RadiopharmaceuticalStartDateTime's date by years, not the series date.
    ds = pet_slice(start_datetime="19000315130100")
    result = suv_factor([ds])
    assert result.decay_interval_s == 3600.0
    assert result.factor == pytest.approx(reference_factor(59.94, 370000000, 3600.0, 6586))
    assert result.factor == pytest.approx(suv_factor([pet_slice()]).factor)  # as if the date were right
    (warning,) = result.warnings
    assert "RadiopharmaceuticalStartDateTime 1900-03-15T13:01:00" in warning and "time of day" in warning
    evening = suv_factor([pet_slice(start_datetime="20071224233000", date="20080102", series="003000",
                                    acquisition="003000")])  # the evening before, by the time of day
    assert evening.decay_interval_s == 3600.0 and evening.injection_datetime == "2008-01-01T23:30:00"


def test_neither_the_date_time_nor_a_time_of_day_alone_makes_a_shifted_date_plausible():
    # The same date as the scan: the time of day is the full date-time, after the scan: refused as before.
    with pytest.raises(SuvError, match="outside 0 .. 24 h"):
        suv_factor([pet_slice(start_datetime="20080101150000")])
    assert suv_factor([pet_slice()]).warnings == ()


def test_cli_reports_the_fallback_in_json_and_as_a_warning(tmp_path):
    path = _save(pet_slice(start_datetime="19000315130100"), tmp_path / "slice.dcm")
    run = _cli(path, "--json")
    assert run.returncode == 0, run.stderr
    report = json.loads(run.stdout)
    assert report["decay_interval_s"] == 3600.0 and len(report["warnings"]) == 1
    plain = _cli(path)
    assert plain.returncode == 0 and "time of day was used" in plain.stderr


def test_convert_records_the_fallback_as_a_warning_of_the_study(tmp_path):
    from dataset_helpers import check_against_phantom, convert, copy_study, rewrite, synth

    study = synth(tmp_path / "synth", seed=61, n_lesions=1)
    folder = copy_study(study, tmp_path / "in")

    def shift_injection_date(ds):
        item = ds.RadiopharmaceuticalInformationSequence[0]
        if "RadiopharmaceuticalStartDateTime" in item:
            item.RadiopharmaceuticalStartDateTime = "1901" + item.RadiopharmaceuticalStartDateTime[4:]
    rewrite(sorted((folder / "PET").glob("*.dcm")), shift_injection_date)
    (record,) = convert(tmp_path / "in", tmp_path / "out").values()
    assert record.status == "converted", record.reason
    assert any(w.startswith("SUV: RadiopharmaceuticalStartDateTime 1901") for w in record.warnings), record.warnings
    assert record.suv["warnings"] and record.suv["factor"] == pytest.approx(study.suv_factor, rel=1e-9)
    check_against_phantom(study, tmp_path / "out" / Path(record.outputs["SUV"]).parent)


def test_a_deflated_slice_gives_its_factor_without_its_pixel_data_being_inflated(tmp_path, capsys):
    import tracemalloc

    from pydicom.uid import DeflatedExplicitVRLittleEndian

    from dataset.__main__ import main

    plain = _save(pet_slice(), tmp_path / "plain.dcm")
    assert main(["suv", str(plain), "--json"]) == 0
    expected = json.loads(capsys.readouterr().out)
    ds = pet_slice()
    ds.Rows, ds.Columns, ds.BitsAllocated, ds.SamplesPerPixel = 4096, 4096, 16, 1
    ds.add_new(0x7FE00010, "OW", bytes(4096 * 4096 * 2))  # 32 MiB of zeros: a few KB once deflated
    deflated = _save(ds, tmp_path / "deflated.dcm")
    ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    ds.save_as(deflated, enforce_file_format=True)
    assert deflated.stat().st_size < 200_000
    tracemalloc.start()
    try:
        status = main(["suv", str(deflated), "--json"])
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert status == 0 and json.loads(capsys.readouterr().out) == expected
    assert peak < 8 << 20, f"reading the header took {peak} bytes"
