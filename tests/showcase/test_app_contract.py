"""The app contract (docs/app-contract.md): every app is a ``shared.apps.App`` with a prefix, a
frozen settings dataclass and the things to close at a stop; chat, dashboard and remote exec
share one ``create_app`` shape; the combined server is those same apps, built once and never
changed after (what ``python -m showcase`` prints comes from what it was given)."""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import chat
import dashboard
import remote_exec
from dashboard.settings import DashboardSettings
from remote_exec.settings import ExecSettings
from shared.apps import App, shutdown_groups
from showcase import basics, bidi
from showcase.app import Settings, create_app, login_lines

EXEC_TOKEN = "contract-exec-token-0123456789"
DASH_TOKEN = "contract-dash-token-0123456789"

FACTORIES: dict[str, Callable[[Path], App]] = {
    "chat": lambda d: chat.create_app(d),
    "dashboard": lambda d: dashboard.create_app(d, control_token=DASH_TOKEN),
    "exec": lambda d: remote_exec.create_app(d, token=EXEC_TOKEN),
    "basics": lambda _: basics.create_app(),
    "bidi": lambda _: bidi.create_app(),
}


@pytest.mark.parametrize("name", sorted(FACTORIES))
def test_every_app_is_an_app_with_frozen_settings_and_closables(name: str, tmp_path: Path) -> None:
    app = FACTORIES[name](tmp_path)
    assert isinstance(app, App)
    assert app.prefix == f"/{name}"
    assert app.closables, "nothing would end its streams at a stop"
    assert all(callable(getattr(c, "close", None)) for c in app.closables)
    assert dataclasses.is_dataclass(app.settings)
    field = dataclasses.fields(app.settings)[0].name
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(app.settings, field, None)


@pytest.mark.parametrize("factory", [chat.create_app, dashboard.create_app, remote_exec.create_app])
def test_the_three_apps_have_one_create_app_shape(factory: Callable[..., App], tmp_path: Path) -> None:
    params = list(inspect.signature(factory).parameters.values())
    assert [p.name for p in params[:2]] == ["data_dir", "settings"]
    keyword_only = {p.name for p in params if p.kind is inspect.Parameter.KEYWORD_ONLY}
    assert {"backend", "hub_settings"} <= keyword_only
    assert params[-1].kind is inspect.Parameter.VAR_KEYWORD  # fields of the settings
    with pytest.raises(TypeError, match="no_such_option"):
        factory(tmp_path, no_such_option=1)


def test_options_are_fields_of_the_settings(tmp_path: Path) -> None:
    app = dashboard.create_app(tmp_path, DashboardSettings(interval=0.5), control_token=DASH_TOKEN)
    assert app.settings == DashboardSettings(interval=0.5, control_token=DASH_TOKEN)
    given = chat.create_app(tmp_path, chat.ChatSettings(max_text=10), max_rooms=3).settings
    assert (given.max_text, given.max_rooms) == (10, 3)


def test_the_combined_server_is_the_same_apps_built_once(tmp_path: Path) -> None:
    settings = Settings(
        data_dir=tmp_path, exec=ExecSettings(token=EXEC_TOKEN), dashboard=DashboardSettings(control_token=DASH_TOKEN)
    )
    mounts = create_app(settings)
    apps: list[Any] = [mounts.app_at(p) for p in ("/basics", "/bidi", "/chat", "/exec", "/dashboard")]
    assert all(isinstance(a, App) for a in apps)
    assert apps[3].settings == settings.exec
    assert apps[4].settings == settings.dashboard
    groups = shutdown_groups(mounts)
    assert sorted(map(len, groups)) == sorted(len(a.closables) for a in apps)
    # Whether a token was made up is said by who made it up, not patched into the apps' state.
    url = "http://127.0.0.1:8000"
    quiet = "\n".join(login_lines(mounts, url))
    told = "\n".join(login_lines(mounts, url, generated=["exec", "dashboard"]))
    assert EXEC_TOKEN not in quiet
    assert DASH_TOKEN not in quiet
    assert f"#token={EXEC_TOKEN}" in told
    assert f"Control token (generated): {DASH_TOKEN}" in told
