"""Multipart uploads streamed straight to disk under server-made names, the size limit enforced as they stream.

Starlette's own form parser spools a whole body to temporary files before an endpoint sees it, so a
limit checked afterwards protects nothing; this reader counts bytes while it writes and stops at the
limit, deleting what it wrote. Client file names are used for one thing only: picking an extension
from the allow-list (SimpleITK chooses its reader by extension). Nothing is ever stored under them.
"""
from __future__ import annotations

import errno
import os
import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import ClientDisconnect, Request

from app.service.errors import ApiError
from petct.atomic import IncompleteWriteError
from petct.studykey import safe_key

ALLOWED_SUFFIXES = (".nii.gz", ".mha", ".nrrd", ".nii")
SNIFF_BYTES = 1024
_METAIO_START = re.compile(rb"^\s*(ObjectType|NDims|ObjectSubType|Comment)\s*=")


@dataclass(frozen=True)
class FileField:
    name: str
    required: bool = True
    archive: bool = False  # a .zip or .tar(.gz) of images instead of one image
    json_max_bytes: int | None = None  # a JSON value of at most this many bytes (2026 scribbles), not an image


@dataclass
class StoredFile:
    field: str
    client_name: str | None  # for messages only
    path: Path
    size: int


def suffix_for(client_name: str | None, head: bytes) -> str | None:
    """The allow-listed extension to store a file under: from the client's name, else from its first bytes."""
    if client_name:
        lower = client_name.lower()
        for suffix in ALLOWED_SUFFIXES:
            if lower.endswith(suffix):
                return suffix
    if head.startswith(b"NRRD"):
        return ".nrrd"
    if head.startswith(b"\x1f\x8b"):
        return ".nii.gz"  # the only gzip-wrapped format on the list
    if len(head) >= 348 and head[344:348] in (b"n+1\x00", b"ni1\x00"):
        return ".nii"
    if _METAIO_START.match(head):
        return ".mha"
    return None


def disk_full(exc: BaseException) -> bool:
    """Whether an error is the disk (or the user's quota) running out of space.

    A file that came out short (IncompleteWriteError) counts: writers such as ITK do not report a failed
    final flush, so the short file is all there is to tell a full disk by.
    """
    if isinstance(exc, IncompleteWriteError):
        return True
    return isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT)


ARCHIVE_SUFFIXES = (".zip", ".tar", ".tar.gz", ".tgz")


def archive_suffix_for(head: bytes) -> str | None:
    """.zip or .tar (gzip-wrapped or not) by the file's first bytes; the client's name is not trusted."""
    if head.startswith(b"PK\x03\x04") or head.startswith(b"PK\x05\x06"):
        return ".zip"
    if head.startswith(b"\x1f\x8b"):
        return ".tar.gz"  # tarfile checks the rest
    if len(head) >= 262 and head[257:262] == b"ustar":
        return ".tar"
    return None


class _PartWriter:
    """Callbacks for python-multipart that write each file part to its own server-named file."""

    def __init__(self, *, fields: Sequence[FileField], folder: Path):
        self.expected = {f.name: f for f in fields}
        self.folder = folder
        self.stored: dict[str, StoredFile] = {}
        self.created: list[Path] = []
        self._headers: dict[bytes, bytes] = {}
        self._header_name = b""
        self._header_value = b""
        self._fd: int | None = None
        self._current: StoredFile | None = None
        self._head = b""

    # -- python-multipart callbacks -------------------------------------------------------------
    def on_part_begin(self) -> None:
        self._headers = {}

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._header_name += data[start:end]

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]

    def on_header_end(self) -> None:
        self._headers[self._header_name.strip().lower()] = self._header_value.strip()
        self._header_name, self._header_value = b"", b""

    def on_headers_finished(self) -> None:
        _, options = parse_options_header(self._headers.get(b"content-disposition", b""))
        raw_name = options.get(b"name")
        if raw_name is None:
            raise ApiError(400, "a multipart part has no name in its Content-Disposition header")
        field = raw_name.decode("utf-8", errors="replace")
        raw_file = options.get(b"filename")
        client_name = raw_file.decode("utf-8", errors="replace") if raw_file is not None else None
        if field not in self.expected:
            raise ApiError(422, f"unexpected field; this endpoint takes {', '.join(self.expected)}",
                           field=field, file=client_name)
        if field in self.stored:
            raise ApiError(422, "field sent more than once", field=field, file=client_name)
        path = self.folder / f".{safe_key(field)}-{secrets.token_hex(8)}.part"
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        self.created.append(path)
        self._current = StoredFile(field=field, client_name=client_name, path=path, size=0)
        self._head = b""

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        assert self._fd is not None and self._current is not None
        chunk = memoryview(data)[start:end]
        if len(self._head) < SNIFF_BYTES:
            self._head += bytes(chunk[: SNIFF_BYTES - len(self._head)])
        while chunk:
            written = os.write(self._fd, chunk)
            chunk = chunk[written:]
        self._current.size += end - start
        limit = self.expected[self._current.field].json_max_bytes
        if limit is not None and self._current.size > limit:
            raise ApiError(422, f"over the limit of {limit} bytes for this JSON field", field=self._current.field,
                           file=self._current.client_name)

    def on_part_end(self) -> None:
        assert self._fd is not None and self._current is not None
        os.close(self._fd)
        self._fd = None
        part = self._current
        if self.expected[part.field].json_max_bytes is not None:
            suffix, allowed = ".json", (".json",)  # its content is checked by the endpoint that asked for it
        elif self.expected[part.field].archive:
            suffix, allowed = archive_suffix_for(self._head), ARCHIVE_SUFFIXES
        else:
            suffix, allowed = suffix_for(part.client_name, self._head), ALLOWED_SUFFIXES
        if suffix is None:
            raise ApiError(415, f"not a recognised {'archive' if allowed is ARCHIVE_SUFFIXES else 'image file'}; "
                           f"send one of {', '.join(allowed)}", field=part.field, file=part.client_name)
        final = self.folder / f"{safe_key(part.field)}-{secrets.token_hex(8)}{suffix}"
        os.replace(part.path, final)
        self.created.append(final)
        part.path = final
        self.stored[part.field] = part

    @property
    def receiving(self) -> StoredFile | None:
        """The file part being received, if the body stopped (or must stop) in the middle of one."""
        return self._current if self._fd is not None else None

    def callbacks(self) -> dict:
        return {name: getattr(self, name) for name in (
            "on_part_begin", "on_header_field", "on_header_value", "on_header_end", "on_headers_finished",
            "on_part_data", "on_part_end")}

    def discard(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        for path in self.created:
            path.unlink(missing_ok=True)


async def receive_files(request: Request, *, fields: Sequence[FileField], folder: Path,
                        max_bytes: int) -> dict[str, StoredFile]:
    """Stream the request's multipart body into `folder`; 413 as soon as it passes `max_bytes`."""
    content_type, params = parse_options_header(request.headers.get("content-type", ""))
    if content_type != b"multipart/form-data" or not params.get(b"boundary"):
        raise ApiError(415, "send the files as multipart/form-data")
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise ApiError(400, "Content-Length is not a number")
        if int(declared) > max_bytes:
            raise ApiError(413, f"upload of {int(declared)} bytes is over the limit of {max_bytes} bytes")
    folder.mkdir(parents=True, exist_ok=True)
    writer = _PartWriter(fields=fields, folder=folder)
    received = 0
    try:
        parser = MultipartParser(params[b"boundary"], writer.callbacks())  # refuses a boundary over 256 bytes
        async for chunk in request.stream():
            received += len(chunk)
            if received > max_bytes:
                part = writer.receiving
                raise ApiError(413, f"upload is over the limit of {max_bytes} bytes",
                               field=part.field if part else None, file=part.client_name if part else None)
            parser.write(chunk)
        parser.finalize()
        if (part := writer.receiving) is not None:
            raise ApiError(400, "multipart body ended in the middle of a file", field=part.field, file=part.client_name)
    except FormParserError as exc:
        writer.discard()
        raise ApiError(400, f"malformed multipart body: {str(exc)[:200]}") from None
    except ClientDisconnect:  # nobody reads the answer; it only keeps the log free of tracebacks
        writer.discard()
        raise ApiError(400, "the client disconnected before the upload was complete") from None
    except BaseException:  # ApiError, disk full, cancellation: leave nothing behind
        writer.discard()
        raise
    for field in fields:
        if field.required and field.name not in writer.stored:
            writer.discard()
            raise ApiError(422, "required file is missing", field=field.name)
    return writer.stored
