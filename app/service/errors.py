"""Errors the API returns: always JSON naming the field, the file and the reason."""
from __future__ import annotations

from dataclasses import dataclass

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

    def body(self) -> dict:
        return ErrorBody(error=ErrorDetail(status=self.status, reason=self.reason, field=self.field,
                                           file=echo_name(self.file))).model_dump()


def echo_name(name: str | None) -> str | None:
    """A client-given file name made safe to echo: control characters replaced, length capped."""
    if name is None:
        return None
    cleaned = "".join(ch if ch.isprintable() else "\ufffd" for ch in name)
    return cleaned[:MAX_ECHOED_NAME]


# Documented on every endpoint that can answer with an error.
ERROR_RESPONSES = {
    code: {"model": ErrorBody, "description": text}
    for code, text in {
        400: "Malformed request", 401: "Missing or wrong bearer token", 404: "No such resource",
        409: "Not possible in the resource's current state", 413: "Upload larger than the server's limit",
        415: "Not multipart/form-data, or a file type outside the allow-list",
        422: "A field or file is missing or not a usable image",
    }.items()
}
