"""What browsers get: a strict CSP every page passes, no framing or sniffing, sessions in the cookie, no login CSRF."""
from __future__ import annotations

import re
from html.parser import HTMLParser

import pytest
from fastapi.testclient import TestClient

from app.service.api import create_app
from app.service.participants import ParticipantStore
from app.service.security import cross_site_reason, inline_hashes, policy
from app.service.sessions import SESSION_COOKIE
from app.service.settings import ServiceSettings

TOKEN = "organiser-token-for-security-tests-01"
SAME = "http://testserver"


class IdleEngine:
    def describe(self) -> dict:
        return {"engine": "idle"}


@pytest.fixture
def service(tmp_path):
    settings = ServiceSettings(data_dir=tmp_path / "data", token=TOKEN)
    settings.data_dir.mkdir()
    alice = ParticipantStore(settings.database).add("alice")
    with TestClient(create_app(settings=settings, engine=IdleEngine())) as client:
        yield client, alice, settings


def _login(client: TestClient, token: str, **headers) -> str | None:
    client.cookies.clear()
    answer = client.post("/login", data={"token": token}, headers=headers, follow_redirects=False)
    return answer.cookies.get(SESSION_COOKIE) if answer.status_code == 303 else None


class _Inline(HTMLParser):
    """Inline scripts, style blocks, style attributes and event-handler attributes of a page."""

    def __init__(self):
        super().__init__()
        self.found: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "script" and "src" not in attrs:
            self.found.append("inline <script>")
        if tag == "style":
            self.found.append("<style> block")
        self.found += [f"{name} attribute on <{tag}>" for name in attrs if name == "style" or name.startswith("on")]


def _inline(html: str) -> list[str]:
    parser = _Inline()
    parser.feed(html)
    return parser.found


def test_a_cross_site_login_is_refused_and_a_same_site_one_opens_a_session(service):
    client, alice, _ = service
    for headers in ({"Origin": "http://evil.example"}, {"Origin": "null"}, {"Sec-Fetch-Site": "cross-site"},
                    {"Origin": "http://testserver.evil.example"}, {"Origin": "https://evil.example:443"}):
        client.cookies.clear()
        answer = client.post("/login", data={"token": alice}, headers=headers, follow_redirects=False)
        assert answer.status_code == 403, headers
        assert SESSION_COOKIE not in answer.headers.get("set-cookie", "")
    for headers in ({"Origin": SAME}, {"Origin": SAME, "Sec-Fetch-Site": "same-origin"}, {}):
        session = _login(client, alice, **headers)
        assert session and session != alice, headers


def test_cookie_requests_that_change_state_must_come_from_the_site(service):
    client, alice, _ = service
    session = _login(client, alice, Origin=SAME)
    client.cookies.set(SESSION_COOKIE, session)
    files = {"prediction": ("p.mha", b"x"), "ground_truth": ("g.mha", b"x")}
    refused = client.post("/v1/score", files=files, headers={"Origin": "http://evil.example"})
    assert refused.status_code == 403 and "another site" in refused.json()["error"]["reason"]
    assert client.post("/logout", headers={"Origin": "http://evil.example"}).status_code == 403
    assert client.get("/v1/jobs").status_code == 200  # the session survived the forged logout
    same = client.post("/v1/score", files=files, headers={"Origin": SAME})
    assert same.status_code not in (401, 403)  # reaches the scorer (and fails there: not images)
    client.cookies.clear()
    bearer = client.post("/v1/score", files=files, headers={"Origin": "http://evil.example",
                                                            "Authorization": f"Bearer {TOKEN}"})
    assert bearer.status_code not in (401, 403)  # a bearer header no other site can send


def test_the_cookie_is_a_session_that_ends_at_logout_and_with_its_token(service):
    client, alice, settings = service
    session = _login(client, alice)
    client.cookies.set(SESSION_COOKIE, session)
    page = client.get("/")
    assert page.status_code == 200 and "Logged in as alice" in page.text
    client.post("/logout", headers={"Origin": SAME}, follow_redirects=False)
    client.cookies.set(SESSION_COOKIE, session)  # replaying the old cookie
    assert client.get("/v1/jobs").status_code == 401
    session = _login(client, alice)
    client.cookies.set(SESSION_COOKIE, session)
    assert client.get("/v1/jobs").status_code == 200
    ParticipantStore(settings.database).revoke("alice")
    assert client.get("/v1/jobs").status_code == 401
    client.cookies.clear()
    client.cookies.set(SESSION_COOKIE, alice)  # the token itself is no session
    assert client.get("/v1/jobs").status_code == 401
    organiser = _login(client, TOKEN)
    client.cookies.set(SESSION_COOKIE, organiser)
    assert "Logged in as the organiser" in client.get("/").text


def test_every_page_and_answer_carries_the_headers_and_pages_have_no_inline_code(service):
    client, _, _ = service
    client.cookies.clear()
    for source in ("/static/site.css", "/static/index.js"):  # the login form's files need no login
        assert client.get(source).status_code == 200, source
    assert client.get("/v1/jobs").status_code == 401
    client.cookies.set(SESSION_COOKIE, _login(client, TOKEN))
    strict = policy()
    assert "'unsafe-inline'" not in strict and "'unsafe-eval'" not in strict
    assert "script-src 'self';" in strict and "frame-ancestors 'none'" in strict and "default-src 'none'" in strict
    for path in ("/", "/login", "/docs", "/v1/jobs", "/healthz", "/openapi.json", "/no-such-page", "/static/index.js"):
        answer = client.get(path)
        assert answer.headers["x-frame-options"] == "DENY", path
        assert answer.headers["x-content-type-options"] == "nosniff", path
        assert answer.headers["content-security-policy"] == strict, path
        if answer.headers.get("content-type", "").startswith("text/html"):
            assert _inline(answer.text) == [], path
            for source in re.findall(r'<(?:script|link)[^>]+(?:src|href)="(/[^"]+)"', answer.text):
                assert client.get(source).status_code == 200, source


def test_a_trusted_documents_inline_code_is_allowed_by_its_hashes_only():
    html = "<html><style>p { color: red }</style><p>x</p><script>var a = 1;</script></html>"
    hashes = inline_hashes(html)
    # printf "var a = 1;" | openssl dgst -sha256 -binary | base64
    assert hashes["script"] == ["sha256-+dZ6udsWxNVoGfScAq7t5IIF5UJb4F6RhjbN6oe1p4w="]
    text = policy(script_hashes=hashes["script"], style_hashes=hashes["style"])
    assert f"script-src 'self' '{hashes['script'][0]}';" in text


@pytest.mark.parametrize("headers,refused", [
    ({b"origin": b"http://127.0.0.1:8000", b"host": b"127.0.0.1:8000"}, False),
    ({b"origin": b"https://kit.example", b"host": b"kit.example"}, False),
    ({b"origin": b"https://kit.example", b"host": b"internal:8000", b"x-forwarded-host": b"kit.example"}, False),
    ({b"origin": b"http://[::1]:8000", b"host": b"[::1]:8000"}, False),
    ({b"origin": b"http://127.0.0.1:8001", b"host": b"127.0.0.1:8000"}, True),
    ({b"origin": b"http://localhost:8000", b"host": b"127.0.0.1:8000"}, True),
    ({b"sec-fetch-site": b"same-site", b"host": b"kit.example"}, True),
    ({b"host": b"kit.example"}, False),
])
def test_origin_rules(headers, refused):
    assert (cross_site_reason(headers) is not None) == refused
