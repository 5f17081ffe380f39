"""The framework-free core (issue 17.2): sessions, pending requests and routing raise their own
typed errors, and one glue module (``shared.errors``) answers them as HTTP.

What a user sees is unchanged (the same status, detail and headers, as JSON with the security
headers); what a developer sees is that the core can be lifted without Litestar.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from litestar import Litestar, get
from litestar.testing import TestClient

from shared.errors import error_handlers
from shared.problems import InUse, Problem, TooMany, Unavailable, problem_of

ROOT = Path(__file__).resolve().parents[2]
CORE = [
    "shared/rpc_sessions.py",
    "shared/rpc_pending.py",
    "shared/rpc_forwarding.py",
    "shared/routing.py",
    "shared/problems.py",
]


@pytest.mark.parametrize("module", CORE)
def test_the_core_imports_no_web_framework(module: str) -> None:
    tree = ast.parse((ROOT / module).read_text())
    imported: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            imported.append(node.module or "")
    assert not [m for m in imported if m.split(".")[0] in ("litestar", "starlette", "fastapi")], imported


def test_public_names_stay_importable_from_shared_correlation() -> None:
    from shared import correlation

    for name in ("AnswerRejected", "ClientGone", "Correlator", "RequestCancelled", "RequestTimeout", "Session",
                 "UnknownClient", "bearer_token"):  # fmt: skip
        assert hasattr(correlation, name), name
    assert issubclass(correlation.AnswerRejected, Problem)


def test_the_glue_answers_a_core_error_as_json_with_its_status_and_headers() -> None:
    @get("/busy")
    async def busy() -> None:
        raise TooMany("too many client sessions (3); retry later", headers={"Retry-After": "5"},
                      extra={"limit": 3, "limit_name": "max_sessions"})  # fmt: skip

    @get("/stopping")
    async def stopping() -> None:
        raise Unavailable("server is shutting down")

    @get("/taken")
    async def taken() -> None:
        raise InUse("client id 'c1' is in use; reconnect with its session token, or pick another id")

    with TestClient(Litestar([busy, stopping, taken], exception_handlers=error_handlers())) as client:
        r = client.get("/busy")
        assert r.status_code == 429
        assert r.headers["retry-after"] == "5"
        assert r.headers["x-content-type-options"] == "nosniff"
        assert r.json() == {
            "status_code": 429,
            "detail": "too many client sessions (3); retry later",
            "extra": {"limit": 3, "limit_name": "max_sessions"},
        }
        r = client.get("/stopping")
        assert (r.status_code, r.headers["retry-after"]) == (503, "1")
        r = client.get("/taken")
        assert r.status_code == 409
        assert "in use" in r.json()["detail"]


def test_an_apps_framework_exception_crosses_instances_as_the_same_problem() -> None:
    from litestar.exceptions import NotFoundException

    problem = problem_of(NotFoundException("no run 'r1'"))
    assert problem is not None
    assert (problem.status_code, problem.detail) == (404, "no run 'r1'")
    assert problem_of(ValueError("a bug")) is None  # not an HTTP outcome: the router answers 502
