"""schemathesis against every app's OpenAPI schema: no 5xx, and every answer as documented.

Each app runs under a real uvicorn (its streams need one), and the fuzzer carries the credential
that gets it past authentication (dashboard control token, exec operator token, chat session
cookie), so its cases reach the handlers. schemathesis runs all its phases (examples, coverage:
boundary values and invalid input, fuzzing, stateful links), derandomized so CI sees the same
cases every run; ``FUZZ_EXAMPLES=300 pytest tests/system/test_fuzz_http.py -s`` hunts longer.

SSE endpoints are fuzzed too: an answer is read up to its first event, or for half a second,
then dropped (streams never end). Endpoints that act on the machine are fenced: the exec policy
here allows ``echo`` only, and the dashboard's process actions are stubbed to refuse.
"""

from __future__ import annotations

import os
import re
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import strategies as st
from litestar import Litestar
from schemathesis.engine import Status, events

import chat
import dashboard
import remote_exec
from chat.session import COOKIE as CHAT_COOKIE
from dashboard import actions
from shared.openapi import schema_url
from showcase import basics, bidi
from tests.rig import LiveServer

MAX_EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "15"))
DASH_TOKEN = "fuzz-dashboard-token-0123456789"
EXEC_TOKEN = "fuzz-operator-token-0123456789"


@dataclass
class Findings:
    """What one schemathesis run saw: the figures, and every failed check or error."""

    app: str
    cases: int = 0
    seconds: float = 0.0
    statuses: Counter[int] = field(default_factory=Counter)
    failures: list[str] = field(default_factory=list)
    checks: Counter[str] = field(default_factory=Counter)

    def summary(self) -> str:
        codes = ", ".join(f"{code}: {n}" for code, n in sorted(self.statuses.items()))
        checked = sum(self.checks.values())
        return (
            f"{self.app}: {self.cases} cases, {checked} checks in {self.seconds:.1f} s, "
            f"{len(self.failures)} failures; statuses {codes}"
        )


def fuzz(
    srv: LiveServer,
    prefix: str,
    headers: dict[str, str] | None = None,
    operations: list[dict[str, Any]] | None = None,
    known: dict[str, Any] | None = None,
) -> Findings:
    """Run schemathesis against the app at ``srv``. ``known`` path parameters (a real room, a real
    run id) replace the generated ones in about half the cases, so those get past the lookup."""
    config = schemathesis.Config.from_dict(
        {
            "headers": headers or {},
            "max-stream-events": 1,
            "request-timeout": 20,
            "generation": {"max-examples": MAX_EXAMPLES, "deterministic": True, "database": "none"},
            # Our schemas do not spell out every rule (a room name's characters, a limit's range);
            # a rule broken gives a documented 4xx, which the other checks verify.
            "checks": {"positive_data_acceptance": {"enabled": False}},
            "operations": [{"include-path-regex": "/events$", "request-timeout": 0.5}, *(operations or [])],
        }
    )
    schema = schemathesis.openapi.from_url(srv.url + schema_url(prefix), config=config)
    found = Findings(prefix.strip("/"))

    @schema.hook
    def after_call(context: Any, case: Any, response: Any) -> None:
        found.statuses[response.status_code] += 1

    if known:

        @schema.hook
        def flatmap_path_parameters(context: Any, path_parameters: dict[str, Any]) -> st.SearchStrategy[Any]:
            if not path_parameters:
                return st.just(path_parameters)
            real = {name: known.get(name, value) for name, value in path_parameters.items()}
            return st.sampled_from([path_parameters, real])

    began = time.monotonic()
    for event in schemathesis.engine.from_schema(schema).execute():
        if isinstance(event, events.ScenarioFinished):
            found.cases += len(event.recorder.cases)
            for checks in event.recorder.checks.values():
                for check in checks:
                    found.checks[check.name] += 1
                    if check.status == Status.FAILURE and check.failure_info is not None:
                        failure = check.failure_info.failure
                        found.failures.append(
                            f"{event.label} [{check.name}] {failure.title}: {failure.message}\n"
                            f"    {check.failure_info.code_sample}"
                        )
        elif isinstance(event, events.NonFatalError):
            found.failures.append(f"{event.label}: error {event.value!r}")
        elif isinstance(event, events.FatalError):
            found.failures.append(f"fatal: {event.exception!r}")
    found.seconds = time.monotonic() - began
    print(found.summary())
    return found


def check(found: Findings, allowed: frozenset[int] = frozenset()) -> None:
    unique = sorted(set(found.failures))
    assert not unique, f"{found.summary()}\n" + "\n".join(unique)
    assert found.statuses, "the fuzzer sent nothing"
    assert not any(code >= 500 and code not in allowed for code in found.statuses), found.summary()


# -- the schemas cover every route --------------------------------------------------------------


def _documented(app: Litestar) -> set[tuple[str, str]]:
    schema = app.openapi_schema.to_schema()
    return {(method.upper(), path) for path, item in schema["paths"].items() for method in item}


def _routes(app: Litestar) -> set[tuple[str, str]]:
    skip = ("/static/", "/vendor/", "/schema")
    return {
        (method, re.sub(r"\{(\w+):\w+\}", r"{\1}", path))  # {room:str} -> {room}, as OpenAPI spells it
        for path, handlers in app.route_handler_method_map.items()
        if not any(part in path + "/" for part in skip)
        for method in handlers
        if method not in ("OPTIONS", "HEAD")
    }


APPS: dict[str, Callable[[Path], Litestar]] = {
    "basics": lambda _: basics.create_app(),
    "bidi": lambda _: bidi.create_app(),
    "chat": lambda d: chat.create_app(d, secret=b"k" * 32),
    "dashboard": lambda d: dashboard.create_app(d, control_token=DASH_TOKEN),
    "exec": lambda d: remote_exec.create_app(d, token=EXEC_TOKEN),
}


@pytest.mark.parametrize("name", APPS)
def test_every_route_is_in_the_schema(name: str, tmp_path: Path) -> None:
    app = APPS[name](tmp_path)
    routes, documented = _routes(app), _documented(app)
    assert routes, "no routes found"
    assert routes == documented, f"missing from the schema: {routes - documented}; stale: {documented - routes}"
    schema = app.openapi_schema.to_schema()
    for path, item in schema["paths"].items():
        for method, op in item.items():
            errors = [code for code in op["responses"] if code[0] in "45"]
            assert errors or method == "get", f"{method.upper()} {path} documents no error at all"
            if method in ("post", "put", "patch", "delete"):
                assert "403" in op["responses"], f"{method.upper()} {path}: the Origin check's 403 is not documented"


# -- fuzzing each app ----------------------------------------------------------------------------


def test_fuzz_basics() -> None:
    with LiveServer(lambda: basics.create_app(interval=0.1)) as srv:
        check(fuzz(srv, "/basics"))


def test_fuzz_bidi() -> None:
    # A short grace: a session the fuzzer opened and dropped is gone before a trigger waits on it.
    with LiveServer(lambda: bidi.create_app(grace=0.5)) as srv:
        # A trigger is a gateway to the client: 504 when it does not answer in time, 502 when it
        # answers an error. Documented, and the right codes; any other 5xx is a failure.
        gateway = {
            "include-path": "/bidi/trigger",
            "checks": {"not_a_server_error": {"expected-statuses": ["2xx", "3xx", "4xx", "502", "504"]}},
        }
        check(fuzz(srv, "/bidi", operations=[gateway]), allowed=frozenset({502, 504}))


def test_fuzz_chat(tmp_path: Path) -> None:
    settings = chat.ChatSettings(rate=1000, burst=1000)  # reach the handlers, not the rate limit
    with LiveServer(lambda: chat.create_app(tmp_path, settings=settings, secret=b"k" * 32)) as srv:
        joined = httpx.post(srv.url + "/chat/session", json={"name": "fuzzer"})
        joined.raise_for_status()
        cookie = {"Cookie": f"{CHAT_COOKIE}={joined.cookies[CHAT_COOKIE]}"}
        sent = httpx.post(
            srv.url + "/chat/rooms/general/messages", json={"text": "hi", "client_msg_id": "m1"}, headers=cookie
        )
        shared = httpx.post(
            srv.url + "/chat/rooms/general/files",
            params={"name": "a.txt", "client_msg_id": "f1"},
            content=b"hello",
            headers={**cookie, "Content-Type": "application/octet-stream"},
        )
        file = shared.json()["file"]
        known = {"room": "general", "message_id": sent.json()["id"], "file_id": file["id"], "name": file["name"]}
        check(fuzz(srv, "/chat", cookie, known=known))


@pytest.fixture
def refuse_process_actions(monkeypatch: pytest.MonkeyPatch) -> list[tuple[Any, ...]]:
    """The fuzzer could, in theory, name a live (pid, start_time): it is never acted on."""
    calls: list[tuple[Any, ...]] = []

    def refuse(*args: Any) -> str:
        calls.append(args)
        raise actions.Refused(403, "refused", "process actions are disabled while fuzzing")

    monkeypatch.setattr(actions, "perform", refuse)
    return calls


def test_fuzz_dashboard(tmp_path: Path, refuse_process_actions: list[tuple[Any, ...]]) -> None:
    def app() -> Litestar:
        return dashboard.create_app(
            tmp_path, control_token=DASH_TOKEN, interval=0.25, confirm_timeout=1, session_grace=0.5, rules=[]
        )

    with LiveServer(app) as srv:
        check(fuzz(srv, "/dashboard", {"Authorization": f"Bearer {DASH_TOKEN}"}))


def test_fuzz_exec(tmp_path: Path) -> None:
    policy = remote_exec.Policy.from_dict(
        {
            "commands": {"allow": ["echo"], "shell": False},
            "cwd": {"allow": [str(tmp_path)], "default": str(tmp_path)},
            "runs": {"max_concurrent": 4, "default_timeout_s": 5, "max_timeout_s": 5, "kill_grace_s": 0.2},
        }
    )
    with LiveServer(lambda: remote_exec.create_app(tmp_path / "data", token=EXEC_TOKEN, policy=policy)) as srv:
        bearer = {"Authorization": f"Bearer {EXEC_TOKEN}"}
        run = httpx.post(srv.url + "/exec/runs", json={"argv": ["echo", "hi"]}, headers=bearer)
        viewer = httpx.post(srv.url + "/exec/tokens", json={"label": "fuzz"}, headers=bearer)
        known = {"run_id": run.json()["id"], "token_id": viewer.json()["id"]}
        check(fuzz(srv, "/exec", bearer, known=known))
