"""Login sessions of the web pages: the cookie holds a random session id, never a bearer token.

The database keeps the session id's SHA-256 and the SHA-256 of the token it was opened with, so a session
ends when that token does (a participant revoked, the organiser's token changed), at logout, or after
SESSION_LIFETIME_S.
"""
from __future__ import annotations

import hashlib
import secrets
import time

from app.service.db import Database
from app.service.participants import token_digest

SESSION_COOKIE = "petct_session"
SESSION_LIFETIME_S = 12 * 3600.0
_SCHEMA = """
CREATE TABLE IF NOT EXISTS sessions (
    id_sha256 TEXT PRIMARY KEY,
    token_sha256 TEXT NOT NULL,
    created_at REAL NOT NULL
);
"""


def _digest(session_id: str) -> str:
    return hashlib.sha256(session_id.encode("utf-8", "surrogateescape")).hexdigest()


class SessionStore(Database):
    schema = _SCHEMA

    def open(self, token: str, *, now: float | None = None) -> str:
        """A new session for a token the caller has checked; the id to put in the cookie."""
        now = time.time() if now is None else now
        session_id = secrets.token_urlsafe(32)
        with self._transaction() as db:
            db.execute("DELETE FROM sessions WHERE created_at < ?", (now - SESSION_LIFETIME_S,))
            db.execute("INSERT INTO sessions VALUES (?, ?, ?)", (_digest(session_id), token_digest(token), now))
        return session_id

    def token_digest(self, session_id: str, *, now: float | None = None) -> str | None:
        """The SHA-256 of the token a live session was opened with, or None."""
        if not session_id:
            return None
        now = time.time() if now is None else now
        row = self._one("SELECT token_sha256 FROM sessions WHERE id_sha256 = ? AND created_at >= ?",
                        (_digest(session_id), now - SESSION_LIFETIME_S))
        return row[0] if row else None

    def close_session(self, session_id: str) -> None:
        with self._transaction() as db:
            db.execute("DELETE FROM sessions WHERE id_sha256 = ?", (_digest(session_id),))
