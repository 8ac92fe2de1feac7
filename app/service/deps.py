"""What every router shares: the service state, and who is calling (auth), as FastAPI dependencies."""
from __future__ import annotations

import asyncio
import hmac
import secrets
import shutil
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from enum import Enum
from http.cookies import CookieError, SimpleCookie
from pathlib import Path

from fastapi import Depends, Request
from fastapi.responses import JSONResponse, RedirectResponse

from app.service.errors import ApiError
from app.service.jobs import JobStore
from app.service.leaderboard import Leaderboards
from app.service.participants import ParticipantStore, token_digest
from app.service.phases import PhaseStore
from app.service.scoring import KillableScoring
from app.service.sessions import SESSION_COOKIE, SessionStore
from app.service.settings import ServiceSettings
from app.service.submissions import InFlight
from app.service.worker import InferenceWorker
from petct.processes import KillableProcesses

OPEN_PATHS = frozenset({"/healthz", "/login", "/logout"})
OPEN_PREFIXES = ("/static/",)  # the pages' script and style files: the login form needs them, and they are public
PAGE_PATHS = ("/", "/report")  # with /jobs/... and /phases/...: a browser without credentials is sent to the login form


class Role(str, Enum):
    organiser = "organiser"
    participant = "participant"
    anonymous = "anonymous"  # only on a loopback server that needs no token at all


@dataclass(frozen=True)
class Caller:
    """Who sent a request: the organiser (PETCT_KIT_TOKEN), a named participant, or anonymous."""

    role: Role
    participant: str | None = None

    @property
    def sees_everything(self) -> bool:
        """Organiser, or anonymous on an open loopback server (where nobody else can call)."""
        return self.role != Role.participant

    @property
    def owner(self) -> str | None:
        """The owner recorded on what this caller creates (None: the organiser's)."""
        return self.participant


@dataclass
class Service:
    """Everything the endpoints share."""

    settings: ServiceSettings
    store: JobStore
    participants: ParticipantStore
    phases: PhaseStore
    worker: InferenceWorker
    scoring: ThreadPoolExecutor
    processes: KillableProcesses
    engine_info: dict
    cases: dict[str, Path] | None
    leaderboards: Leaderboards = field(default_factory=Leaderboards)
    sessions: SessionStore | None = None  # the pages' logins
    images: dict | None = None  # case -> app.service.cases.CaseImages (serve --images), for the slice viewer
    submitting: InFlight = field(init=False)

    def __post_init__(self) -> None:
        self.submitting = InFlight(self.settings.max_concurrent_submissions)

    def scratch(self) -> Path:
        folder = self.settings.scratch_dir / secrets.token_hex(12)
        folder.mkdir(parents=True)
        return folder

    async def in_pool(self, fn, *args, **kwargs):
        """Run blocking image work in the bounded scoring pool (reads, checks, metrics)."""
        return await asyncio.wrap_future(self.scoring.submit(fn, *args, **kwargs))

    async def score(self, function, **kwargs):
        """`function(**kwargs)` in the scoring pool, in a process of its own killed at --score-timeout."""
        return await self.in_pool(KillableScoring(self.processes, self.settings.score_timeout_s), function, **kwargs)

    def tokens_required(self) -> bool:
        """A token on every request: one is configured, cases are being kept secret, or participants exist."""
        return bool(self.settings.token) or self.cases is not None or self.participants.any()

    def refusal(self) -> str | None:
        """Why new work is refused now (worker down, disk short), or None."""
        if not self.worker.alive:
            return "the inference worker is not running; see the server log"
        free = shutil.disk_usage(self.settings.data_dir).free
        if free < self.settings.min_free_bytes:
            return (f"only {free} bytes free in the data folder, under the server's minimum of "
                    f"{self.settings.min_free_bytes} (--min-free)")
        return None

    def admit(self) -> None:
        """ApiError(503) with the reason when no new work is taken now."""
        reason = self.refusal()
        if reason:
            raise ApiError(503, reason)


class Authenticator:
    """ASGI middleware: resolves the bearer token (or the login cookie) to a Caller before any body is read.

    Without a valid token: 401, or for a web page's GET a redirect to the login form. The Caller goes into
    the request's state, where `get_caller` (the dependency) picks it up.
    """

    def __init__(self, app, *, service: Service):
        self.app = app
        self.service = service

    def identify(self, scope) -> Caller | None:
        if not self.service.tokens_required():
            return Caller(Role.anonymous)
        headers = dict(scope["headers"])
        scheme, _, given = headers.get(b"authorization", b"").partition(b" ")
        by_header = caller_for(self.service, given.strip()) if scheme.lower() == b"bearer" else None
        return by_header or caller_for_session(self.service, session_cookie(headers.get(b"cookie", b"")))

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http":
            caller = self.identify(scope)
            if caller is None and scope["path"] not in OPEN_PATHS and not scope["path"].startswith(OPEN_PREFIXES):
                if scope["method"] == "GET" and (is_page(scope["path"]) or is_browser_docs(scope)):
                    await RedirectResponse("/login", status_code=303)(scope, receive, send)
                    return
                error = ApiError(401, "missing or wrong bearer token (Authorization: Bearer <token>)")
                response = JSONResponse(error.body(), status_code=401, headers={"WWW-Authenticate": "Bearer"})
                await response(scope, receive, send)
                return
            scope.setdefault("state", {})["caller"] = caller or Caller(Role.anonymous)
        await self.app(scope, receive, send)


def caller_for(service: Service, token: bytes) -> Caller | None:
    """The caller whose token this is (the organiser's or a live participant's), or None."""
    organiser = (service.settings.token or "").encode()
    # compare_digest even with no organiser token: timing tells nothing about it
    if hmac.compare_digest(token, organiser) and organiser:
        return Caller(Role.organiser)
    name = service.participants.name_for(token.decode("latin-1")) if token else None
    return Caller(Role.participant, participant=name) if name else None


def is_page(path: str) -> bool:
    """Whether `path` is a web page (a browser without credentials goes to the login form, not a JSON 401)."""
    if path.endswith((".png", ".nii.gz")):  # the MIP and the viewer's images answer 401
        return False
    if path.startswith("/jobs/"):
        return True
    return path in PAGE_PATHS or path.startswith(("/phases/", "/report/"))


def is_browser_docs(scope) -> bool:
    """/docs opened by a browser (it accepts text/html): sent to the login form; API clients keep the JSON 401."""
    accept = dict(scope["headers"]).get(b"accept", b"")
    return scope["path"] == "/docs" and b"text/html" in accept


def caller_for_session(service: Service, session_id: str) -> Caller | None:
    """The caller a login session belongs to while its token is still live, or None."""
    digest = service.sessions.token_digest(session_id) if service.sessions is not None else None
    if digest is None:
        return None
    organiser = token_digest(service.settings.token) if service.settings.token else ""
    if organiser and hmac.compare_digest(digest, organiser):
        return Caller(Role.organiser)
    name = service.participants.name_for_digest(digest)
    return Caller(Role.participant, participant=name) if name else None


def session_cookie(header: bytes) -> str:
    """The session cookie's value from a Cookie header (empty when absent or unreadable)."""
    cookies = SimpleCookie()
    try:
        cookies.load(header.decode("latin-1"))
    except CookieError:
        return ""
    morsel = cookies.get(SESSION_COOKIE)
    return morsel.value if morsel else ""


def get_service(request: Request) -> Service:
    return request.app.state.service


def get_caller(request: Request) -> Caller:
    return request.state.caller


def organiser_only(caller: Caller = Depends(get_caller)) -> Caller:
    """The organiser (or anonymous on an open server); anyone else gets 404, as if the route did not exist."""
    if not caller.sees_everything:
        raise ApiError(404, "Not Found")
    return caller


def participant_only(caller: Caller = Depends(get_caller)) -> Caller:
    if caller.role != Role.participant:
        raise ApiError(403, "submissions are made with a participant's token (python -m app participants add NAME)")
    return caller
