"""Command line of `python -m dataset`: one sub-command per step, each argument checked by argparse."""
from __future__ import annotations

import argparse
from pathlib import Path

from dataset.discover import DEFAULT_MAX_DECODED_BYTES
from dataset.outputs import FORMATS, LAYOUTS
from dataset.synth import VENDORS
from petct.argtypes import whole_number
from petct.sizes import parse_size

DESCRIPTION = "The public autoPET dataset (TCIA FDG-PET-CT-Lesions) as DICOM in; SUV, CTres and SEG images out."


def _size(text: str) -> int:
    try:
        return parse_size(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m dataset", description=DESCRIPTION,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True, title="commands")

    convert = commands.add_parser("convert", help="DICOM studies -> CT, PET, SUV, CTres and SEG images (tcia, "
                                                       "nnunet or grand-challenge layout)",
                                  description="Find every study under DICOM_ROOT by content (PT, CT and SEG series) "
                                              "and convert it into OUT. Exit 1 if any study failed; "
                                              "OUT/conversion-report.json says why.")
    convert.add_argument("dicom_root", type=Path, metavar="DICOM_ROOT")
    convert.add_argument("out", type=Path, metavar="OUT")
    convert.add_argument("--format", dest="fmt", choices=FORMATS, default="nifti",
                         help="image format (default nifti; hdf5: one dataset.h5 for the whole set)")
    convert.add_argument("--layout", choices=LAYOUTS, default="tcia",
                         help="tcia: <patient>/<study>/{CT,PET,SEG,SUV,CTres}; nnunet: imagesTr/labelsTr/"
                              "dataset.json; grand-challenge: <key>/images/{pet,ct}/<key>.mha and "
                              "ground_truth/<key>.mha (needs --format mha) (default tcia)")
    convert.add_argument("--keep-segments", action="store_true",
                         help="write SEG as a label map (one value per DICOM segment) instead of one lesion mask")
    convert.add_argument("--workers", type=whole_number(1), default=1,
                         help="studies converted at once in worker processes (default 1)")
    convert.add_argument("--scheduler", metavar="ADDRESS",
                         help="run on an existing Dask distributed cluster, e.g. tcp://HOST:8786")
    convert.add_argument("--max-decoded-bytes", type=_size, default=DEFAULT_MAX_DECODED_BYTES, metavar="SIZE",
                         help="fail a study whose pixel data would decode to more (Rows x Columns x frames x bytes, "
                              "from the headers, before any is decoded; default 2GiB)")
    convert.add_argument("--no-progress", action="store_true", help="no progress bar")

    suv = commands.add_parser("suv", help="the body-weight SUV factor of a PET series or slice, with every "
                                                   "input it used",
                              description="Print the body-weight SUV factor (SUV per rescaled stored unit) of a "
                                          "PET series folder or one slice, and every input it used. Exit 1, "
                                          "naming the tag, when the headers do not allow a safe factor.")
    suv.add_argument("pet", type=Path, metavar="PET_SERIES_DIR_OR_FILE")
    suv.add_argument("--json", action="store_true", help="print JSON")

    stats = commands.add_parser("stats", help="per-study statistics (studies.csv) and a summary per diagnosis",
                                description="Write OUT/studies.csv (one row per study) and OUT/summary.json "
                                            "(per diagnosis), and print the summary table.")
    stats.add_argument("out", type=Path, metavar="OUT",
                       help="a folder `convert --layout tcia` wrote, or one in nnU-Net's raw layout (imagesTr/ "
                            "<case>_0000 CT, <case>_0001 PET, labelsTr/<case>; the tracer from psma_/fdg_ names)")
    stats.add_argument("--metadata", type=Path, metavar="CSV",
                       help="clinical metadata CSV (columns: Subject ID or patient, diagnosis, age, sex)")

    to_seg = commands.add_parser("to-seg", help="an algorithm's mask as a DICOM-SEG referencing the PET series",
                                 description="Write MASK (an image on the PET grid) as a DICOM-SEG referencing "
                                             "the PET series in PET_DICOM_DIR.")
    to_seg.add_argument("mask", type=Path, metavar="MASK")
    to_seg.add_argument("pet_dir", type=Path, metavar="PET_DICOM_DIR")
    to_seg.add_argument("output", type=Path, metavar="OUT.dcm")

    synth = commands.add_parser("synth-dicom", help="phantom studies as scanner-like DICOM (the kit's own test "
                                                           "data)",
                                description="Write phantom studies as DICOM in TCIA's layout "
                                            "(<patient>/<study>/{PET,CT,SEG}/).")
    synth.add_argument("out", type=Path, metavar="OUT")
    synth.add_argument("--count", type=whole_number(1), default=2, help="studies (default 2)")
    synth.add_argument("--size", choices=("tiny", "small", "full"), default="tiny",
                       help="PET grid: tiny 64x64x48, small 128x128x96, full 400x400x326 (default tiny)")
    synth.add_argument("--first-seed", type=whole_number(0), default=0)
    synth.add_argument("--vendor", choices=VENDORS, default="siemens",
                       help="siemens: BQML; ge: series time after the scan with GE's private scan time; "
                            "philips-bqml / philips-cnts: Philips' private SUV and activity scale factors "
                            "(default siemens)")
    synth.add_argument("--decay-correction", choices=("START", "ADMIN"), default="START")
    synth.add_argument("--injection-time-only", action="store_true",
                       help="RadiopharmaceuticalStartTime without StartDateTime, as old writers do")
    synth.add_argument("--native-ct", action="store_true", help="CT series description with 'nativ'")
    synth.add_argument("--segments", type=whole_number(1), default=1,
                       help="spread the lesions over this many SEG segments (default 1)")
    return parser.parse_args(argv)
