"""The Lua scripts of the Redis store (``chat/lua/*.lua``): each change is one script, so it
happens entirely or not at all.

A script runs atomically, and with ``appendonly yes`` + ``appendfsync always`` Redis writes it
to disk before it answers: a 201 means the message, its idempotency key and its event are
all stored; a 503 (Redis unreachable) means none of them were, or (reply lost) all were and a
retry with the same ``client_msg_id`` finds them.

Events are appended with the Redis backend's own stream library (``sse_append`` from
``shared/backends/lua/stream.lua``, through ``RedisBackend.stream_script``): the stream fields and
the retention are the backend's, in one place, so the hub's resume checks hold. A message whose
``message`` event is trimmed leaves history (``on_trim``: its hash, its place in the room's
index and its file go with it).

Each script is ``lua/lib.lua`` (ARGV[1] the key prefix; helpers) + ``lua/<name>.lua``.
"""

from __future__ import annotations

from shared.backends.lua import load_lua

__all__ = ["NAMES", "source"]

# Every script of the store (one list to keep: the store registers each of them).
NAMES = (
    "POST",
    "CHANGE",
    "CREATE_ROOM",
    "DELETE_ROOM",
    "EXPIRE_ROOMS",
    "HELLO",
    "HISTORY",
    "ROOMS",
    "MARK_READ",
    "START_READING",
)


def source(name: str) -> str:
    """The Lua of script ``name`` (one of :data:`NAMES`), before the backend's stream library."""
    return load_lua("chat", "lua/lib.lua") + "\n" + load_lua("chat", f"lua/{name.lower()}.lua")
