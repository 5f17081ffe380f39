"""Who is asking: a signed, HttpOnly session cookie carrying a user id, a display name and a
session id.

The cookie is ``<payload>.<signature>``: base64url JSON and an HMAC-SHA256 of it. Sessions
survive restarts as long as the key does; the key is generated once and kept in the data dir
(or passed in). The session id (``sid``) is what the server can revoke: signing out, and every
join, revokes the cookie it came with (``chat.revocations``), so a cookie planted by another
page, or copied before sign-out, stops working.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

from shared.datadir import private_dir

__all__ = ["COOKIE", "Session", "SessionSigner", "User", "load_or_create_key", "new_session_id", "new_user_id"]

COOKIE = "chat_session"


@dataclass(frozen=True, slots=True)
class User:
    """A person: ``id`` is stable for the session (ownership, idempotency keys); ``name`` is shown."""

    id: str
    name: str


@dataclass(frozen=True, slots=True)
class Session:
    """A cookie's content: who, and which sign-in (``sid``, random per join)."""

    user: User
    sid: str


def new_user_id() -> str:
    return secrets.token_urlsafe(12)


def new_session_id() -> str:
    return secrets.token_urlsafe(16)


def load_or_create_key(path: Path) -> bytes:
    """The signing key at ``path``, created (readable by the owner only) if missing."""
    try:
        return bytes.fromhex(path.read_text().strip())
    except FileNotFoundError:
        pass
    private_dir(path.parent)
    key = secrets.token_bytes(32)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another process made it first: use theirs
        return bytes.fromhex(path.read_text().strip())
    with os.fdopen(fd, "w") as f:
        f.write(key.hex())
    return key


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class SessionSigner:
    """Signs and checks session cookie values."""

    def __init__(self, key: bytes, max_age: int) -> None:
        if len(key) < 16:
            raise ValueError("the session key must be at least 16 bytes")
        self._key = key
        self.max_age = max_age

    def _sign(self, payload: str) -> str:
        return _b64(hmac.new(self._key, payload.encode(), hashlib.sha256).digest())

    def dumps(self, session: Session, now: float | None = None) -> str:
        user = session.user
        body = {"u": user.id, "n": user.name, "s": session.sid, "t": int(now if now is not None else time.time())}
        payload = _b64(json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode())
        return f"{payload}.{self._sign(payload)}"

    def loads(self, value: str | None, now: float | None = None) -> Session | None:
        """The session in a cookie value, or ``None`` if it is missing, forged, malformed or expired.

        Revocation is not checked here (it needs the store): see ``chat.context``."""
        if not value or len(value) > 1024:
            return None
        payload, _, signature = value.partition(".")
        if not hmac.compare_digest(signature.encode(), self._sign(payload).encode()):
            return None
        try:
            body = json.loads(_unb64(payload))
            session = Session(User(str(body["u"]), str(body["n"])), str(body["s"]))
            issued = int(body["t"])
        except (ValueError, KeyError, TypeError):
            return None
        if (now if now is not None else time.time()) - issued > self.max_age:
            return None
        return session
