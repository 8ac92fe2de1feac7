"""What every response carries for browsers (Content-Security-Policy, no framing, no sniffing), and the refusal
of cross-site requests that change state with the login cookie.

The pages' allowed sources are declared here and only here: pages load their scripts and styles as files from
the service itself (`app/service/static/`, served at /static/, and Swagger UI's files at /docs-assets/), which
`'self'` covers. A page that cannot do without inline code (the HTML report, a standalone file) sends its own
policy with the hashes of exactly that code (`policy(script_hashes=..., style_hashes=...)`).
"""
from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Iterable
from urllib.parse import urlsplit

from app.service.errors import ApiError

# The single place where allowed sources are declared.
SCRIPT_SOURCES = ("'self'",)
STYLE_SOURCES = ("'self'",)
IMAGE_SOURCES = ("'self'", "data:")  # MIPs in the report are data: URIs
CONNECT_SOURCES = ("'self'",)  # the pages' fetch() calls and Swagger UI's /openapi.json

UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
FORM_PATHS = frozenset({"/login", "/logout"})  # state-changing forms that work without a session, too
_INLINE = {"script": re.compile(r"<script>(.*?)</script>", re.DOTALL),
           "style": re.compile(r"<style>(.*?)</style>", re.DOTALL)}


def policy(*, script_hashes: Iterable[str] = (), style_hashes: Iterable[str] = ()) -> str:
    """The Content-Security-Policy: nothing but the declared sources (and the given inline code's hashes)."""
    scripts = " ".join([*SCRIPT_SOURCES, *(f"'{h}'" for h in script_hashes)])
    styles = " ".join([*STYLE_SOURCES, *(f"'{h}'" for h in style_hashes)])
    return (f"default-src 'none'; script-src {scripts}; style-src {styles}; img-src {' '.join(IMAGE_SOURCES)}; "
            f"connect-src {' '.join(CONNECT_SOURCES)}; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")


def inline_hashes(html: str) -> dict[str, list[str]]:
    """{"script": [...], "style": [...]}: the CSP hashes of a trusted document's inline <script> and <style>."""
    def digest(code: str) -> str:
        return "sha256-" + base64.b64encode(hashlib.sha256(code.encode("utf-8")).digest()).decode("ascii")
    return {kind: [digest(code) for code in pattern.findall(html)] for kind, pattern in _INLINE.items()}


HEADERS = {"x-frame-options": "DENY", "x-content-type-options": "nosniff", "referrer-policy": "same-origin"}


def cross_site_reason(headers: dict[bytes, bytes]) -> str | None:
    """Why a state-changing request looks sent by another site's page, or None.

    Browsers send Origin (and Sec-Fetch-Site) with every POST; a request with neither comes from a program,
    which no other site can make a browser send with the user's cookie.
    """
    origin = headers.get(b"origin")
    if origin is not None:
        allowed = {_host(v) for v in (headers.get(b"host"), headers.get(b"x-forwarded-host")) if v}
        parts = urlsplit(origin.decode("latin-1"))
        if not parts.hostname or _netloc(parts) not in allowed:
            return f"a request from another site ({origin.decode('latin-1')[:100]})"
    site = headers.get(b"sec-fetch-site")
    if site is not None and site not in (b"same-origin", b"none"):
        return f"a request from another site (Sec-Fetch-Site: {site.decode('latin-1')[:40]})"
    return None


def _host(value: bytes) -> str:
    host = value.decode("latin-1").split(",")[0].strip().lower()
    return host.removesuffix(":80").removesuffix(":443")


def _netloc(parts) -> str:
    default = {"http": 80, "https": 443}.get(parts.scheme)
    port = f":{parts.port}" if parts.port and parts.port != default else ""
    host = f"[{parts.hostname}]" if ":" in (parts.hostname or "") else parts.hostname
    return f"{host}{port}".lower()


class BrowserSafety:
    """ASGI middleware: security headers on every response; 403 for cross-site state changes by cookie."""

    def __init__(self, app, *, session_cookie: str):
        self.app = app
        self.cookie = session_cookie.encode("latin-1")

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        if scope["method"] in UNSAFE_METHODS and (scope["path"] in FORM_PATHS
                                                   or self.cookie + b"=" in headers.get(b"cookie", b"")):
            reason = cross_site_reason(headers)
            if reason:
                from fastapi.responses import JSONResponse

                error = ApiError(403, f"refused: {reason} that would act with this site's login")
                await JSONResponse(error.body(), status_code=403)(scope, receive, _with_headers(send))
                return
        await self.app(scope, receive, _with_headers(send))


def _with_headers(send):
    async def sending(message):
        if message["type"] == "http.response.start":
            headers = list(message.get("headers", []))
            present = {name.lower() for name, _ in headers}
            headers += [header for header in _EVERY_ANSWER if header[0] not in present]
            message = {**message, "headers": headers}
        await send(message)
    return sending


# Built once: the headers every answer gets unless it set its own (the report sets its own policy).
_EVERY_ANSWER = [*((name.encode(), value.encode()) for name, value in HEADERS.items()),
                 (b"content-security-policy", policy().encode())]
