"""The service's settings, from the command line and the environment."""
from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from petct.errors import InputError

# Not GRAND_CHALLENGE_*: the platform strips those from the user process.
TOKEN_ENV = "PETCT_KIT_TOKEN"
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


@dataclass(frozen=True)
class UploadLimits:
    """What one request's images may decode to, all checked from the headers before any voxel is read."""

    max_voxels: int = DEFAULT_MAX_VOXELS
    max_image_bytes: int = DEFAULT_MAX_IMAGE_BYTES  # voxels x bytes per voxel, per file
    max_request_image_bytes: int = DEFAULT_MAX_REQUEST_IMAGE_BYTES  # the same, summed over a request's files
    max_ratio: float = DEFAULT_MAX_RATIO  # decoded bytes per byte uploaded


@dataclass(frozen=True)
class ServiceSettings:
    data_dir: Path
    host: str = "127.0.0.1"
    port: int = 8000
    token: str | None = None
    max_upload_bytes: int = DEFAULT_MAX_UPLOAD
    max_voxels: int = DEFAULT_MAX_VOXELS
    max_image_bytes: int = DEFAULT_MAX_IMAGE_BYTES
    max_request_image_bytes: int = DEFAULT_MAX_REQUEST_IMAGE_BYTES
    max_ratio: float = DEFAULT_MAX_RATIO
    ground_truth: Path | None = None
    model: Path | None = None
    device: str = "auto"
    scoring_workers: int = 2
    min_free_bytes: int = DEFAULT_MIN_FREE
    keep_jobs_for_s: float | None = DEFAULT_KEEP_JOBS_FOR_S
    score_timeout_s: float = DEFAULT_SCORE_TIMEOUT_S
    keep_submissions: bool = False  # organiser mode: keep scored submissions' masks (for the slice viewer)
    images: Path | None = None  # organiser mode: the test set's PET and CT, <case>/{SUV,CTres}.* (for the viewer)

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
    value = cli_value if cli_value is not None else os.environ.get(TOKEN_ENV)
    return value if value else None
