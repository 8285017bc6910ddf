"""Authentication on connect: HMAC-signed tokens by default, any authenticator pluggable.

A token is `<payload>.<signature>`, both unpadded base64url: the payload is JSON
`{"uid": user_id, "mid": meeting_id, "exp": epoch seconds}` and the signature is
HMAC-SHA256 of the payload's base64 text under the gateway's secret. Verification is
constant-time, and a token past `exp` (allowing `leeway` seconds of clock skew) is refused.

An authenticator is any callable `(token, headers) -> Identity` (or an awaitable of one)
that raises `AuthError` to refuse; `HmacAuthenticator` is the default.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from meetq.errors import MeetqError


class AuthError(MeetqError):
    """A connection's credentials were missing, malformed, forged or expired."""


@dataclass(frozen=True, slots=True)
class Identity:
    """Who a connection is: what the token (or the authenticator) vouches for."""

    user_id: int
    meeting_id: int
    expires_at: float = 0.0


Authenticator = Callable[[str | None, Mapping[str, str]], "Identity | Awaitable[Identity]"]


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _sign(secret: bytes, payload: str) -> str:
    return _b64(hmac.new(secret, payload.encode(), hashlib.sha256).digest())


def _key(secret: str | bytes) -> bytes:
    key = secret.encode() if isinstance(secret, str) else secret
    if len(key) < 16:
        raise ValueError("the token secret must be at least 16 bytes")
    return key


def make_token(
    secret: str | bytes,
    user_id: int,
    meeting_id: int,
    ttl: float = 3600.0,
    now: float | None = None,
) -> str:
    """A signed token for `user_id` in `meeting_id`, valid for `ttl` seconds."""
    exp = (time.time() if now is None else now) + ttl
    payload = _b64(orjson.dumps({"uid": int(user_id), "mid": int(meeting_id), "exp": exp}))
    return f"{payload}.{_sign(_key(secret), payload)}"


class HmacAuthenticator:
    """Verifies `make_token` tokens against `secret`."""

    def __init__(self, secret: str | bytes, leeway: float = 5.0, max_length: int = 1024) -> None:
        self._secret = _key(secret)
        self.leeway = leeway
        self.max_length = max_length

    def __call__(self, token: str | None, headers: Mapping[str, str] | None = None) -> Identity:
        return self.verify(token)

    def verify(self, token: str | None, now: float | None = None) -> Identity:
        if not token:
            raise AuthError("missing token")
        if len(token) > self.max_length:
            raise AuthError("token too long")
        payload, sep, signature = token.partition(".")
        if not sep or not payload or not signature:
            raise AuthError("malformed token")
        expected = _sign(self._secret, payload)
        if not hmac.compare_digest(expected.encode(), signature.encode()):
            raise AuthError("bad token signature")
        try:
            claims: Any = orjson.loads(_unb64(payload))
            uid, mid, exp = claims["uid"], claims["mid"], claims["exp"]
            if type(uid) is not int or type(mid) is not int:
                raise TypeError("uid and mid must be integers")
            exp = float(exp)
        except (ValueError, KeyError, TypeError, orjson.JSONDecodeError) as exc:
            raise AuthError(f"malformed token claims: {exc}") from None
        if (time.time() if now is None else now) > exp + self.leeway:
            raise AuthError("token expired")
        return Identity(uid, mid, exp)


__all__ = ["AuthError", "Authenticator", "HmacAuthenticator", "Identity", "make_token"]
