"""HMAC tokens: round trip, expiry, forgery, malformed input, weak secrets."""

from __future__ import annotations

import pytest

from meetq.gateway.auth import AuthError, HmacAuthenticator, Identity, make_token

SECRET = "test-secret-0123456789abcdef"


def test_round_trip() -> None:
    token = make_token(SECRET, 42, 7, ttl=60, now=1000.0)
    ident = HmacAuthenticator(SECRET).verify(token, now=1030.0)
    assert ident == Identity(42, 7, 1060.0)


def test_expired_with_leeway() -> None:
    auth = HmacAuthenticator(SECRET, leeway=5)
    token = make_token(SECRET, 1, 1, ttl=10, now=1000.0)
    assert auth.verify(token, now=1014.0).user_id == 1
    with pytest.raises(AuthError, match="expired"):
        auth.verify(token, now=1016.0)


def test_forged_and_tampered() -> None:
    auth = HmacAuthenticator(SECRET)
    other = make_token("another-secret-0123456789", 1, 1)
    with pytest.raises(AuthError, match="signature"):
        auth.verify(other)
    good = make_token(SECRET, 1, 1)
    payload, sig = good.split(".")
    evil = make_token(SECRET, 999, 1).split(".")[0]
    with pytest.raises(AuthError, match="signature"):
        auth.verify(f"{evil}.{sig}")
    with pytest.raises(AuthError, match="signature"):
        auth.verify(f"{payload}.{sig[:-2]}AA")


@pytest.mark.parametrize("token", [None, "", "abc", ".", "a.", ".b", "x" * 5000])
def test_malformed(token: str | None) -> None:
    with pytest.raises(AuthError):
        HmacAuthenticator(SECRET).verify(token)


def test_signed_but_bad_claims() -> None:
    import base64
    import hashlib
    import hmac

    def sign(payload: bytes) -> str:
        p = base64.urlsafe_b64encode(payload).rstrip(b"=").decode()
        s = hmac.new(SECRET.encode(), p.encode(), hashlib.sha256).digest()
        return p + "." + base64.urlsafe_b64encode(s).rstrip(b"=").decode()

    auth = HmacAuthenticator(SECRET)
    for payload in (b"[]", b'{"uid": "1", "mid": 1, "exp": 9e12}', b'{"uid": 1}', b"\xff"):
        with pytest.raises(AuthError, match="claims"):
            auth.verify(sign(payload))


def test_short_secret_is_refused() -> None:
    with pytest.raises(ValueError):
        HmacAuthenticator("short")
    with pytest.raises(ValueError):
        make_token("short", 1, 1)
