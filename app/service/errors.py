"""Errors the API returns: always JSON naming the field, the file and the reason."""
from __future__ import annotations

from dataclasses import dataclass
from dataclasses import field as dataclass_field

from pydantic import BaseModel

# Client-given names are echoed back for orientation only; keep them short.
MAX_ECHOED_NAME = 200


class ErrorDetail(BaseModel):
    status: int
    reason: str
    field: str | None = None
    file: str | None = None


class ErrorBody(BaseModel):
    error: ErrorDetail


@dataclass
class ApiError(Exception):
    """An error answered as `{"error": {"status", "reason", "field", "file"}}`."""

    status: int
    reason: str
    field: str | None = None
    file: str | None = None
    headers: dict[str, str] | None = dataclass_field(default=None, compare=False)

    def body(self) -> dict:
        return ErrorBody(error=ErrorDetail(status=self.status, reason=self.reason, field=self.field,
                                           file=echo_name(self.file))).model_dump()


def echo_name(name: str | None) -> str | None:
    """A client-given file name made safe to echo: length capped, then control characters replaced.

    Cut first: a name may be megabytes long, and cleaning it whole would cost that much on the event loop.
    """
    if name is None:
        return None
    return "".join(ch if ch.isprintable() else "\ufffd" for ch in name[:MAX_ECHOED_NAME])


ERROR_TEXT = {
    400: "Malformed request", 401: "Missing or wrong bearer token", 403: "Not allowed with this token",
    404: "No such resource (or not yours)", 409: "Not possible in the resource's current state",
    413: "Upload larger than the server's limit", 415: "Not multipart/form-data, or a file type outside the allow-list",
    422: "A field or file is missing or not a usable image", 429: "Submission budget spent; says when the next is allowed",
    500: "The server could not read its own data", 503: "Not accepting this now (worker down, disk short, scoring failed)",
    504: "Scoring ran past the server's --score-timeout and was stopped", 507: "The server's disk filled during the upload",
}


def responses(*codes: int) -> dict:
    """OpenAPI `responses` for the error codes an endpoint can return, each with its one-line description."""
    return {code: {"model": ErrorBody, "description": ERROR_TEXT[code]} for code in codes}


# Every upload endpoint can answer these, besides its own.
UPLOAD_ERRORS = (400, 401, 413, 415, 422, 503, 507)
