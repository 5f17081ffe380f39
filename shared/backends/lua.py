"""Lua scripts, kept in ``.lua`` files and loaded from here (as Litestar's channels backend does).

``stream.lua`` is the library of the Redis backend's event streams (``sse_append``): the backend's
own append and an app's scripts are both built on it by :func:`with_streams`, so a change to the
stream layout or its retention is made once, for both.
"""

from __future__ import annotations

from functools import cache
from importlib import resources

__all__ = ["load_lua", "with_streams"]


@cache
def load_lua(package: str, name: str) -> str:
    """The text of ``name`` (e.g. ``"lua/post.lua"``) in ``package``, read once."""
    return resources.files(package).joinpath(name).read_text(encoding="utf-8")


def with_streams(source: str) -> str:
    """``source`` after the stream library: it may call ``sse_append(stream, data, event, mark,
    on_trim)``; the last two ARGV must be the backend's ``maxlen`` and ``trim_slack`` (see
    ``RedisBackend.stream_script``, which adds them)."""
    return load_lua("shared.backends", "lua/stream.lua") + "\n" + source
