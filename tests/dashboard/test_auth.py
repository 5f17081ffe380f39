"""The control token: generated when not given, never the cookie itself, log-ins rate limited."""

from __future__ import annotations

import pytest
from litestar.exceptions import ClientException, NotAuthorizedException

from dashboard.auth import ControlAuth


def test_generated_token_and_short_tokens() -> None:
    auth = ControlAuth()
    assert auth.generated
    assert len(auth.token) >= 32
    assert ControlAuth().token != auth.token
    with pytest.raises(ValueError, match="at least 8"):
        ControlAuth("short")


def test_login_cookie_is_not_the_token() -> None:
    auth = ControlAuth("a-long-enough-token")
    cookie = auth.login("a-long-enough-token", secure=False)
    assert cookie.httponly
    assert cookie.samesite == "strict"
    assert cookie.path == "/dashboard"
    assert cookie.value
    assert cookie.value != auth.token
    assert ControlAuth("another-long-token").login("another-long-token", secure=True).value != cookie.value


def test_wrong_logins_are_rate_limited() -> None:
    auth = ControlAuth("a-long-enough-token", max_failures=3)
    for _ in range(3):
        with pytest.raises(NotAuthorizedException):
            auth.login("guess-guess", secure=False)
    with pytest.raises(ClientException) as info:
        auth.login("a-long-enough-token", secure=False)  # even the right one, for a while
    assert info.value.status_code == 429
