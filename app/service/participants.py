"""Named participants, each with its own bearer token, kept hashed in the service's database."""
from __future__ import annotations

import hashlib
import re
import secrets
import time
from dataclasses import dataclass

from app.service.db import Database
from petct.errors import InputError

NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")
_SCHEMA = """
CREATE TABLE IF NOT EXISTS participants (
    name TEXT PRIMARY KEY,
    token_sha256 TEXT NOT NULL UNIQUE,
    created_at REAL NOT NULL,
    revoked_at REAL
);
"""


@dataclass(frozen=True)
class Participant:
    name: str
    created_at: float
    revoked_at: float | None


def token_digest(token: str) -> str:
    # The tokens are 256 random bits, so a fast hash is enough: there is no dictionary to try against it.
    return hashlib.sha256(token.encode("utf-8", "surrogateescape")).hexdigest()


def check_name(name: str) -> str:
    if not NAME.fullmatch(name):
        raise InputError(f"participant name {name[:80]!r} must be 1-64 letters, digits, '-' or '_', "
                         "starting with a letter or digit")
    return name


class ParticipantStore(Database):
    """Participants and their token hashes; the token itself is shown once, when added, and never stored."""

    schema = _SCHEMA

    def __init__(self, path):
        super().__init__(path)
        self._seen_any = False

    def add(self, name: str) -> str:
        """A new participant's token (InputError if the name is taken, revoked names included)."""
        check_name(name)
        token = secrets.token_urlsafe(32)
        with self._transaction() as db:
            if db.execute("SELECT 1 FROM participants WHERE name = ?", (name,)).fetchone():
                raise InputError(f"participant {name} already exists (names are never reused)")
            db.execute("INSERT INTO participants (name, token_sha256, created_at) VALUES (?, ?, ?)",
                       (name, token_digest(token), time.time()))
        return token

    def revoke(self, name: str) -> None:
        with self._transaction() as db:
            changed = db.execute("UPDATE participants SET revoked_at = ? WHERE name = ? AND revoked_at IS NULL",
                                 (time.time(), name)).rowcount
        if not changed:
            raise InputError(f"no participant {name} with a live token")

    def list(self) -> list[Participant]:
        return [Participant(*row) for row in
                self._all("SELECT name, created_at, revoked_at FROM participants ORDER BY name")]

    def name_for(self, token: str) -> str | None:
        """The live participant this token belongs to, or None."""
        return self.name_for_digest(token_digest(token))

    def name_for_digest(self, digest: str) -> str | None:
        """The live participant whose token has this SHA-256, or None."""
        row = self._one("SELECT name FROM participants WHERE token_sha256 = ? AND revoked_at IS NULL", (digest,))
        return row[0] if row else None

    def any(self) -> bool:
        """Whether a participant was ever added (revoked ones too: their data still needs protecting)."""
        if not self._seen_any:  # once true, always true; spare the query
            self._seen_any = self._one("SELECT 1 FROM participants LIMIT 1") is not None
        return self._seen_any
