"""`python -m dataset`: DICOM studies to SUV / CTres / SEG images, SUV factors, statistics, DICOM-SEG export.

Story: parse the arguments -> run the one sub-command -> print its result. Bad input ends in one line on
stderr naming the file or study and exit status 1 (2 for bad arguments, from argparse).
"""
from __future__ import annotations

import logging
import sys
from pathlib import Path

from dataset.cli import parse_args
from dataset.convert import ConvertOptions
from dataset.discover import read_header
from dataset.outputs import check_choice
from dataset.suv import suv_factor
from petct.errors import InputError
from petct.jsonio import dumps

log = logging.getLogger("dataset")


def convert(args) -> int:
    from dataset.run import REPORT, convert_tree

    check_choice(layout=args.layout, fmt=args.fmt, keep_segments=args.keep_segments)
    options = ConvertOptions(layout=args.layout, fmt=args.fmt, keep_segments=args.keep_segments,
                             max_decoded_bytes=args.max_decoded_bytes)
    summary = convert_tree(args.dicom_root, args.out, options, workers=args.workers, scheduler=args.scheduler,
                           progress=not args.no_progress)
    for record in summary.records:
        for warning in record.warnings:
            log.warning("study %s: %s", record.key, warning)
        if record.status == "failed":
            log.error("study %s: %s", record.key, record.reason)
    if not summary.records:
        raise InputError("no DICOM studies found", path=args.dicom_root)
    counts = {s: sum(r.status == s for r in summary.records) for s in ("converted", "skipped", "failed")}
    print(f"{counts['converted']} converted, {counts['skipped']} skipped (already done), {counts['failed']} failed; "
          f"report: {Path(args.out) / REPORT}")
    return 1 if summary.failed else 0


def suv(args) -> int:
    paths = sorted(p for p in args.pet.rglob("*") if p.is_file()) if args.pet.is_dir() else [args.pet]
    slices = []
    for path in paths:
        try:
            ds = read_header(path, tags=None)
        except Exception:  # noqa: BLE001 - a folder may hold other files; one given file must be DICOM
            if not args.pet.is_dir():
                raise InputError("not a readable DICOM file", path=path) from None
            continue
        if str(ds.get("Modality", "")).upper() == "PT":
            slices.append(ds)
    if not slices:
        raise InputError("no PET (Modality PT) DICOM files", path=args.pet)
    if len({str(s.SeriesInstanceUID) for s in slices}) > 1:
        raise InputError("PET slices of more than one series: give one series folder", path=args.pet)
    try:
        result = suv_factor(slices)
    except InputError as exc:
        raise InputError(exc.problem, path=args.pet) from None
    if args.json:
        print(dumps({"slices": len(slices), **result.to_json()}))
    else:
        print(f"SUVbw factor {result.factor:.8g} per {result.units} unit  ({len(slices)} slice(s) of {args.pet})")
        for name, value in result.to_json().items():
            if name not in ("factor", "warnings") and value is not None:
                print(f"  {name:30s} {value}")
    for warning in result.warnings:
        log.warning("%s: %s", args.pet, warning)
    return 0


def stats(args) -> int:
    from dataset.stats import print_summary, write_stats

    summary = write_stats(args.out, metadata=args.metadata)
    print_summary(summary)
    print(f"wrote {Path(args.out) / 'studies.csv'} (one row per study) and {Path(args.out) / 'summary.json'}")
    return 0


def to_seg(args) -> int:
    from dataset.toseg import mask_to_seg

    path = mask_to_seg(args.mask, args.pet_dir, args.output)
    print(f"wrote {path}")
    return 0


def synth_dicom(args) -> int:
    from dataset.synth import SynthOptions, write_study

    options = SynthOptions(vendor=args.vendor, decay_correction=args.decay_correction,
                           injection_time_only=args.injection_time_only, native_ct=args.native_ct,
                           segments=args.segments)
    for seed in range(args.first_seed, args.first_seed + args.count):
        study = write_study(args.out, seed=seed, size=args.size, options=options)
        print(f"{study.pet_dir.parent}  (true SUV factor {study.suv_factor:.8g})")
    return 0


COMMANDS = {"convert": convert, "suv": suv, "stats": stats, "to-seg": to_seg, "synth-dicom": synth_dicom}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s", stream=sys.stderr)
    # Their INFO lines (and highdicom's notes on valid files) would bury the kit's own one-line reports.
    logging.getLogger("distributed").setLevel(logging.WARNING)
    logging.getLogger("highdicom").setLevel(logging.ERROR)
    try:
        return COMMANDS[args.command](args)
    except InputError as exc:
        print(f"error: {exc.describe()}", file=sys.stderr)
        return 1
    except ValueError as exc:  # a combination of options that does not go together
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
