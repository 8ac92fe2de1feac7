"""Body-weight SUV factor of a PET series, following the vendor-neutral QIBA algorithm.

SUVbw = (stored value x RescaleSlope + RescaleIntercept) x factor. The rules, in the order applied:

- Units BQML: factor = weight [g] / injected dose decayed to the scan start [Bq]. CorrectedImage must hold
  ATTN and DECY. DecayCorrection START decays the dose over the injection-to-scan interval; ADMIN means the
  images are already corrected to the injection, so the dose is used as given; anything else is refused.
- Scan start: the series date and time, unless it is later than the earliest acquisition date and time
  of the series' slices (a post-processed series); then GE's private scan date-time (0009,100D) where
  present, else that earliest acquisition.
- Injection: RadiopharmaceuticalStartDateTime, else the scan date with RadiopharmaceuticalStartTime; an
  injection time of day later than the scan's is the day before (injection before midnight). Anonymisers
  shift some dates and not others: when the full date-time lies on another date and gives an impossible
  interval, its time of day on the scan's date (the day before when later than the scan) is used if that
  gives a possible one, with a warning — as Z-Rad and the ACR's vendor-neutral code do.
- Units CNTS (Philips): the private SUV scale factor (7053,1000) when present and positive, else the
  private activity-concentration scale factor (7053,1009) times the BQML factor; with neither, refused.
- Units GML: the values are SUV already (factor 1).

Anything missing or absurd (weight 0 or over 500 kg, dose 0, negative or over-a-day interval) raises
SuvError naming the DICOM tag: a wrong SUV is worse than none.
"""
from __future__ import annotations

import datetime as dt
import math
import struct
from collections.abc import Sequence
from dataclasses import asdict, dataclass

from pydicom.dataset import Dataset
from pydicom.tag import Tag

from petct.errors import InputError

MAX_WEIGHT_KG = 500.0
MAX_DECAY_INTERVAL_S = 24 * 3600.0
GE_SCAN_DATETIME = Tag(0x0009, 0x100D)
PHILIPS_SUV_SCALE = Tag(0x7053, 0x1000)
PHILIPS_ACTIVITY_SCALE = Tag(0x7053, 0x1009)


class SuvError(InputError):
    """The headers do not allow a safe SUV factor; the message names the tag."""


@dataclass(frozen=True)
class SuvFactor:
    """The SUVbw factor (SUV per rescaled stored unit) and every input the formula used."""

    factor: float
    units: str
    manufacturer: str
    decay_correction: str | None = None
    weight_kg: float | None = None
    injected_dose_bq: float | None = None
    half_life_s: float | None = None
    injection_datetime: str | None = None
    scan_datetime: str | None = None
    scan_time_source: str | None = None
    decay_interval_s: float | None = None
    decayed_dose_bq: float | None = None
    philips_suv_scale_factor: float | None = None
    philips_activity_scale_factor: float | None = None
    warnings: tuple[str, ...] = ()  # inputs used in a way that needs a human look (the injection's date)

    def to_json(self) -> dict:
        return {**asdict(self), "warnings": list(self.warnings)}


def _value(ds: Dataset, keyword: str):
    try:
        value = ds.get(keyword)
    except ValueError:  # pydicom converts on access; a malformed DS/IS value raises here
        element = ds.get_item(keyword)
        return element.value if element is not None else None
    return None if value is None or value == "" else value


def _number(ds: Dataset, keyword: str, *, where: str) -> float:
    value = _value(ds, keyword)
    if value is None:
        raise SuvError(f"{keyword} is missing{where}: cannot compute SUV")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise SuvError(f"{keyword} is not a number ({value!r}){where}") from None
    if not math.isfinite(number):
        raise SuvError(f"{keyword} is not finite ({value!r}){where}")
    return number


def _private_number(ds: Dataset, tag: Tag) -> float | None:
    element = ds.get(tag)
    if element is None or element.value in (None, "", b""):
        return None
    value = element.value
    if isinstance(value, bytes):  # implicit-VR files keep unknown private elements as raw bytes
        if len(value) == 8:
            value = struct.unpack("<d", value)[0]
        else:
            value = value.decode("ascii", "replace").strip("\0 ")
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def parse_date(text: str) -> dt.date:
    return dt.datetime.strptime(str(text).strip()[:8], "%Y%m%d").date()


def parse_time(text: str) -> dt.time:
    """DICOM TM (HHMMSS.FFFFFF, also HHMM or HH:MM:SS from old writers)."""
    text = str(text).strip().replace(":", "")
    whole, _, fraction = text.partition(".")
    whole = whole.ljust(6, "0")
    micro = int((fraction + "000000")[:6]) if fraction else 0
    return dt.time(int(whole[0:2]), int(whole[2:4]), min(int(whole[4:6]), 59), micro)


def parse_datetime(text: str) -> dt.datetime:
    """DICOM DT without its UTC offset (all times of one study are in one zone)."""
    text = str(text).strip()
    for sign in "+-":
        if sign in text[8:]:
            text = text[: 8 + text[8:].index(sign)]
    return dt.datetime.combine(parse_date(text[:8]), parse_time(text[8:] or "000000"))


def _date_time(ds: Dataset, date_kw: str, time_kw: str) -> dt.datetime | None:
    date, time = _value(ds, date_kw), _value(ds, time_kw)
    if date is None or time is None:
        return None
    try:
        return dt.datetime.combine(parse_date(date), parse_time(time))
    except ValueError:
        raise SuvError(f"{date_kw}/{time_kw} not a valid date and time ({date!r} {time!r})") from None


def scan_start(slices: Sequence[Dataset]) -> tuple[dt.datetime, str]:
    """The time the decay correction refers to, and where it came from."""
    first = slices[0]
    series = _date_time(first, "SeriesDate", "SeriesTime")
    acquisitions = [a for a in (_date_time(s, "AcquisitionDate", "AcquisitionTime") for s in slices) if a]
    earliest = min(acquisitions) if acquisitions else None
    if series is None and earliest is None:
        raise SuvError("SeriesDate/SeriesTime and AcquisitionDate/AcquisitionTime are missing: no scan time")
    if series is not None and (earliest is None or series <= earliest):
        return series, "SeriesDate/SeriesTime"
    ge = first.get(GE_SCAN_DATETIME)
    if ge is not None and ge.value:
        raw = ge.value.decode("ascii", "replace") if isinstance(ge.value, bytes) else str(ge.value)
        try:
            return parse_datetime(raw.strip("\0 ")), "GE private (0009,100D)"
        except ValueError:
            raise SuvError(f"GE private scan date-time (0009,100D) is not a date-time ({raw!r})") from None
    return earliest, "earliest AcquisitionDate/AcquisitionTime"


def _injection(radiopharm: Dataset, scan: dt.datetime) -> tuple[dt.datetime, bool]:
    """The injection's date and time, and whether it came from the full RadiopharmaceuticalStartDateTime."""
    full = _value(radiopharm, "RadiopharmaceuticalStartDateTime")
    if full is not None:
        try:
            return parse_datetime(full), True
        except ValueError:
            raise SuvError(f"RadiopharmaceuticalStartDateTime is not a date-time ({full!r})") from None
    time = _value(radiopharm, "RadiopharmaceuticalStartTime")
    if time is None:
        raise SuvError("RadiopharmaceuticalStartDateTime and RadiopharmaceuticalStartTime are missing")
    try:
        return _on_scan_day(scan, parse_time(time)), False
    except ValueError:
        raise SuvError(f"RadiopharmaceuticalStartTime is not a time ({time!r})") from None


def _on_scan_day(scan: dt.datetime, time: dt.time) -> dt.datetime:
    """A time of day on the scan's date; the day before when later than the scan (injected before midnight)."""
    injected = dt.datetime.combine(scan.date(), time)
    return injected - dt.timedelta(days=1) if injected > scan else injected


def _possible(interval_s: float) -> bool:
    return 0 <= interval_s <= MAX_DECAY_INTERVAL_S


def _bqml_factor(slices: Sequence[Dataset]) -> dict:
    first = slices[0]
    corrected = [str(v).upper() for v in (first.get("CorrectedImage") or [])]
    if "ATTN" not in corrected or "DECY" not in corrected:
        raise SuvError(f"CorrectedImage {corrected} lacks ATTN and DECY: not an attenuation- and "
                       "decay-corrected image")
    decay = str(_value(first, "DecayCorrection") or "").upper()
    if decay not in ("START", "ADMIN"):
        raise SuvError(f"DecayCorrection is {decay or 'missing'!r}; only START and ADMIN give a safe SUV")
    weight = _number(first, "PatientWeight", where="")
    if not 0 < weight <= MAX_WEIGHT_KG:
        raise SuvError(f"PatientWeight {weight:g} kg is absurd (expected 0 < weight <= {MAX_WEIGHT_KG:g})")
    sequence = first.get("RadiopharmaceuticalInformationSequence")
    if not sequence:
        raise SuvError("RadiopharmaceuticalInformationSequence is missing")
    radiopharm = sequence[0]
    where = " in RadiopharmaceuticalInformationSequence"
    dose = _number(radiopharm, "RadionuclideTotalDose", where=where)
    if dose <= 0:
        raise SuvError(f"RadionuclideTotalDose {dose:g} Bq is absurd (must be positive)")
    half_life = _number(radiopharm, "RadionuclideHalfLife", where=where)
    if half_life <= 0:
        raise SuvError(f"RadionuclideHalfLife {half_life:g} s is absurd (must be positive)")
    scan, source = scan_start(slices)
    injected, full = _injection(radiopharm, scan)
    interval = (scan - injected).total_seconds()
    warnings = []
    if not _possible(interval) and full and injected.date() != scan.date():
        by_time = _on_scan_day(scan, injected.time())
        if _possible((scan - by_time).total_seconds()):
            warnings.append(f"RadiopharmaceuticalStartDateTime {injected.isoformat()} is {interval / 3600:.1f} h "
                            f"from the scan ({scan.isoformat()}); its time of day was used on the scan's date, "
                            f"{by_time.isoformat()} (an anonymiser may have shifted that date alone): check it")
            injected, interval = by_time, (scan - by_time).total_seconds()
    if not _possible(interval):
        raise SuvError(f"injection {injected.isoformat()} to scan {scan.isoformat()} is {interval:g} s, "
                       "outside 0 .. 24 h (check RadiopharmaceuticalStartDateTime and the series time)")
    decayed = dose * 2.0 ** (-interval / half_life) if decay == "START" else dose
    return dict(factor=weight * 1000.0 / decayed, decay_correction=decay, weight_kg=weight, injected_dose_bq=dose,
                half_life_s=half_life, injection_datetime=injected.isoformat(), scan_datetime=scan.isoformat(),
                scan_time_source=source, decay_interval_s=interval, decayed_dose_bq=decayed, warnings=tuple(warnings))


def suv_factor(slices: Sequence[Dataset]) -> SuvFactor:
    """The SUVbw factor of a PET series (or of one slice) from its headers, or SuvError naming the tag."""
    if not slices:
        raise SuvError("no PET slices")
    first = slices[0]
    units = str(_value(first, "Units") or "").upper()
    manufacturer = str(_value(first, "Manufacturer") or "")
    if units == "GML":
        return SuvFactor(factor=1.0, units=units, manufacturer=manufacturer)
    if units == "BQML":
        return SuvFactor(units=units, manufacturer=manufacturer, **_bqml_factor(slices),
                         philips_suv_scale_factor=_private_number(first, PHILIPS_SUV_SCALE))
    if units == "CNTS":
        suv_scale = _private_number(first, PHILIPS_SUV_SCALE)
        activity_scale = _private_number(first, PHILIPS_ACTIVITY_SCALE)
        if suv_scale is not None and suv_scale > 0:
            return SuvFactor(factor=suv_scale, units=units, manufacturer=manufacturer,
                             philips_suv_scale_factor=suv_scale, philips_activity_scale_factor=activity_scale)
        if activity_scale is not None and activity_scale > 0:
            inputs = _bqml_factor(slices)
            inputs["factor"] *= activity_scale
            return SuvFactor(units=units, manufacturer=manufacturer, **inputs,
                             philips_suv_scale_factor=suv_scale, philips_activity_scale_factor=activity_scale)
        raise SuvError("Units CNTS without a positive Philips SUV scale factor (7053,1000) or activity "
                       "concentration scale factor (7053,1009)")
    raise SuvError(f"Units is {units or 'missing'!r}; expected BQML, CNTS (Philips) or GML")
