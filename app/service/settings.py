"""The service's settings: one object whose fields declare their command-line options, help and defaults.

`add_options` puts every field's option on `python -m app serve`; `ServiceSettings.from_options` reads them back,
the token also from petct.environment.TOKEN.
"""
from __future__ import annotations

import argparse
import ipaddress
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from petct import environment
from petct.argtypes import byte_size, positive_number, whole_number
from petct.editions import CHALLENGE_CHOICES, default_challenge
from petct.errors import InputError
from petct.sizes import format_size

TOKEN_ENV = environment.TOKEN.name
DEFAULT_DATA_DIR = Path("service-data")
DEFAULT_MAX_UPLOAD = 2 * 1024**3
# A full-size study is 400 x 400 x 326 = 52 M voxels and the longest scans about 110 M; reading
# a header that claims far more would only exhaust memory.
DEFAULT_MAX_VOXELS = 2**28
DEFAULT_MIN_FREE = 2 * 1024**3
DEFAULT_KEEP_JOBS_FOR_S = 7 * 86400.0
DEFAULT_SCORE_TIMEOUT_S = 120.0
# Decoded bytes (voxels x bytes per voxel): the longest scans in float32 are about 440 MiB, a study's three
# files about 1 GiB; a tiny compressed upload claiming more would only exhaust memory.
DEFAULT_MAX_IMAGE_BYTES = 1024**3
DEFAULT_MAX_REQUEST_IMAGE_BYTES = 2 * 1024**3
# Deflate (gzip, zlib: .nii.gz, compressed .mha/.nrrd) cannot exceed about 1032:1 even on all-zero masks, so
# healthy files stay below this; a header announcing more per stored byte is lying, and ITK would allocate
# the whole buffer before noticing.
DEFAULT_MAX_RATIO = 1100.0
# A participant's submissions being received or scored at once: more only queue for the same scoring pool
# (and fill scratch space) while others wait.
DEFAULT_MAX_CONCURRENT_SUBMISSIONS = 2


@dataclass(frozen=True)
class UploadLimits:
    """What one request's images may decode to, all checked from the headers before any voxel is read."""

    max_voxels: int = DEFAULT_MAX_VOXELS
    max_image_bytes: int = DEFAULT_MAX_IMAGE_BYTES  # voxels x bytes per voxel, per file
    max_request_image_bytes: int = DEFAULT_MAX_REQUEST_IMAGE_BYTES  # the same, summed over a request's files
    max_ratio: float = DEFAULT_MAX_RATIO  # decoded bytes per byte uploaded


def _option(flag: str, default: Any, help: str, *, to_setting: Callable[[Any], Any] | None = None,
            from_setting: Callable[[Any], Any] | None = None, **argparse_options: Any) -> Any:
    """A settings field that is also option `flag`; `{default}` in `help` shows the default as the option takes it.

    `from_setting` turns the field's default into the option's (e.g. seconds into days), `to_setting` back.
    """
    return field(default=default, metadata={"flag": flag, "help": help, "to_setting": to_setting,
                                            "from_setting": from_setting, "argparse": argparse_options})


def _days(seconds: float) -> float:
    return seconds / 86400


def _seconds(days: float) -> float:
    return days * 86400


@dataclass(frozen=True)
class ServiceSettings:
    data_dir: Path = _option("--data-dir", DEFAULT_DATA_DIR, "job database and files (default: {default})", type=Path)
    host: str = _option("--host", "127.0.0.1", "address to listen on (default: {default}; any other than loopback "
                        f"needs {TOKEN_ENV})")
    port: int = _option("--port", 8000, "TCP port (default: {default})", type=whole_number(1, maximum=65535))
    token: str | None = _option("--token", None, "the organiser's bearer token; every endpoint but /healthz and "
                                "/login requires it or a participant's, as a header or the login form's cookie "
                                f"(better: set {TOKEN_ENV}, which other users cannot read from the process list)")
    max_upload_bytes: int = _option("--max-upload", DEFAULT_MAX_UPLOAD, "largest request body, e.g. 2GiB or 500MB "
                                    "(default: {default})", type=byte_size, metavar="SIZE", shown=format_size)
    max_voxels: int = _option("--max-voxels", DEFAULT_MAX_VOXELS, "largest image accepted, in voxels "
                              "(default: {default})", type=whole_number(1))
    max_image_bytes: int = _option("--max-image-bytes", DEFAULT_MAX_IMAGE_BYTES, "largest image accepted, decoded: "
                                   "voxels x bytes per voxel, from the header before any voxel is read "
                                   "(default: {default})", type=byte_size, metavar="SIZE", shown=format_size)
    max_request_image_bytes: int = _option("--max-request-image-bytes", DEFAULT_MAX_REQUEST_IMAGE_BYTES,
                                           "the same, summed over one request's images (default: {default})",
                                           type=byte_size, metavar="SIZE", shown=format_size)
    max_ratio: float = _option("--max-ratio", DEFAULT_MAX_RATIO, "largest decoded size per uploaded byte "
                               "(default: {default}; gzip cannot exceed about 1032)", type=positive_number,
                               metavar="RATIO")
    ground_truth: Path | None = _option("--ground-truth", None, "organiser mode: this folder's cases are the hidden "
                                        "test set that phase submissions are scored against, never sent out (needs "
                                        f"{TOKEN_ENV}; tokens required on loopback too)", type=Path)
    model: Path | None = _option("--model", None, "nnU-Net results folder (default: as the algorithm container "
                                 "finds one)", type=Path)
    device: str = _option("--device", "auto", "where the engine runs (default: {default})",
                          choices=("auto", "cuda", "cpu"))
    scoring_workers: int = _option("--scoring-workers", 2, "scoring requests run at once (default: {default})",
                                   type=whole_number(1))
    min_free_bytes: int = _option("--min-free", DEFAULT_MIN_FREE, "new submissions get 503 while the data folder "
                                  "has less free space (default: {default})", type=byte_size, metavar="SIZE",
                                  shown=format_size)
    keep_jobs_for_s: float | None = _option("--keep-jobs-for", DEFAULT_KEEP_JOBS_FOR_S, "finished jobs and their "
                                            "files are deleted after this long (default: {default})",
                                            type=positive_number, metavar="DAYS", from_setting=_days,
                                            to_setting=_seconds)
    score_timeout_s: float = _option("--score-timeout", DEFAULT_SCORE_TIMEOUT_S, "a scoring request's process is "
                                     "killed after this long, answered 504 (default: {default})",
                                     type=positive_number, metavar="SECONDS")
    max_concurrent_submissions: int = _option("--max-concurrent-submissions", DEFAULT_MAX_CONCURRENT_SUBMISSIONS,
                                              "a participant's phase submissions received or scored at once; one "
                                              "more gets 429, charged to nobody (default: {default})",
                                              type=whole_number(1))
    keep_submissions: bool = _option("--keep-submissions", False, "organiser mode: keep each scored submission's "
                                     "masks in the data folder, so that the organiser can look at them on the test "
                                     "set's images (default: deleted once scored)", action="store_true")
    challenge: str = _option("--challenge", default_challenge(), "the autoPET edition the jobs follow (README, "
                             f"Editions; or set {environment.CHALLENGE.name}): autopet-2026-interactive takes "
                             "scribbles with a study, autopet-2025-interactive clicks (default: {default})",
                             choices=CHALLENGE_CHOICES)
    images: Path | None = _option("--images", None, "organiser mode: the test set's PET and CT, <case>/{{SUV,CTres}}.* "
                                  "or <patient>/<study folder>/{{SUV,CTres}}.*, for the slice viewer of kept "
                                  "submissions", type=Path, metavar="DIR")

    @classmethod
    def from_options(cls, args: argparse.Namespace) -> "ServiceSettings":
        """The settings `add_options`' options parsed into `args` give; the token also from the environment."""
        values = {}
        for f in fields(cls):
            value = getattr(args, _dest(f.metadata["flag"]))
            convert = f.metadata["to_setting"]
            values[f.name] = convert(value) if convert is not None and value is not None else value
        values["token"] = token_from(values["token"])
        return cls(**values)

    @property
    def upload_limits(self) -> UploadLimits:
        return UploadLimits(max_voxels=self.max_voxels, max_image_bytes=self.max_image_bytes,
                            max_request_image_bytes=self.max_request_image_bytes, max_ratio=self.max_ratio)

    @property
    def database(self) -> Path:
        return self.data_dir / "jobs.sqlite3"

    @property
    def jobs_dir(self) -> Path:
        return self.data_dir / "jobs"

    @property
    def submissions_dir(self) -> Path:
        """Kept submissions' masks (--keep-submissions): <submission id>/<case>.<suffix>."""
        return self.data_dir / "submissions"

    @property
    def scratch_dir(self) -> Path:
        return self.data_dir / "scratch"

    def check(self) -> None:
        """InputError for settings the server must not start with."""
        if self.token is not None and self.token.strip() != self.token:
            raise InputError(f"the bearer token starts or ends with white space (or is all spaces), so no request "
                             f"could send it: fix --token or {TOKEN_ENV}")
        if self.token is not None and len(self.token) < 16:
            raise InputError(f"the bearer token must be at least 16 characters (--token or {TOKEN_ENV})")
        if not is_loopback(self.host) and not self.token:
            raise InputError(f"refusing to listen on {self.host}, which is not a loopback address, without a "
                             f"bearer token: set {TOKEN_ENV} (or --token)")
        if self.ground_truth is not None and not self.token:
            raise InputError(f"organiser mode (--ground-truth) needs the organiser's token: set {TOKEN_ENV} (or --token)")
        if self.ground_truth is not None and not self.ground_truth.is_dir():
            raise InputError("ground-truth folder does not exist or is not a folder", path=self.ground_truth)
        if (self.images is not None or self.keep_submissions) and self.ground_truth is None:
            raise InputError("--images and --keep-submissions are for organiser mode: give --ground-truth too")
        if self.images is not None and not self.images.is_dir():
            raise InputError("images folder does not exist or is not a folder", path=self.images)
        if self.scoring_workers < 1:
            raise InputError("--scoring-workers must be at least 1")
        if self.max_request_image_bytes < self.max_image_bytes:
            raise InputError("--max-request-image-bytes must be at least --max-image-bytes")


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # any other name may resolve to a public address


def token_from(cli_value: str | None) -> str | None:
    """--token, else the environment's; an empty value counts as none, anything else is checked as given."""
    value = cli_value if cli_value is not None else environment.TOKEN.get()
    return value if value else None


def add_options(parser: argparse.ArgumentParser) -> None:
    """One option per ServiceSettings field, with its help and its default."""
    for f in fields(ServiceSettings):
        options = dict(f.metadata["argparse"])
        shown = options.pop("shown", None)
        if "choices" not in options and "action" not in options:  # a flag (store_true) takes no value to name
            options.setdefault("metavar", f.metadata["flag"].lstrip("-").replace("-", "_").upper())
        default = f.default
        if f.metadata["from_setting"] is not None and default is not None:
            default = f.metadata["from_setting"](default)
        text = format(shown(default) if shown is not None else default, "g" if isinstance(default, float) else "")
        parser.add_argument(f.metadata["flag"], dest=_dest(f.metadata["flag"]), default=default,
                            help=f.metadata["help"].format(default=text), **options)


def _dest(flag: str) -> str:
    return "setting_" + flag.lstrip("-").replace("-", "_")
