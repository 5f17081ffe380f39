"""Which topic paths are event streams: resolved through the wrapped app's own routing.

A topic runs the app's handler for ``GET <path>``; only a handler declared as
``text/event-stream`` may run, so a topic cannot fetch a page, a file or a download through
the mux. Resolution asks Litestar's router (the same trie a request goes through), after
:func:`shared.mux.protocol.split_topic` has refused dot segments and the mux's own paths.
"""

from __future__ import annotations

import contextlib
from typing import Any

from litestar import Litestar
from litestar.exceptions import MethodNotAllowedException, NotFoundException

from .protocol import BadTopic, split_topic

__all__ = ["app_for", "stream_refusal"]

_STREAM = "text/event-stream"


def app_for(app: Any, path: str) -> Litestar | None:
    """The Litestar app that would answer ``path``: through wrappers (``.app``) and
    :class:`shared.mount.Mounts` (``app_for``)."""
    node = app
    for _ in range(20):
        if isinstance(node, Litestar):
            return node
        pick = getattr(node, "app_for", None)
        node = pick(path) if callable(pick) else getattr(node, "app", None)
        if node is None:
            return None
    return None


def stream_refusal(app: Any, topic: str) -> str | None:
    """Why ``topic`` cannot be a mux topic, or ``None`` if it is a stream route (or no route
    at all: the app's own 404 then answers it, as for a plain request)."""
    try:
        path, _query = split_topic(topic)
    except BadTopic as exc:
        return f"{topic[:80]!r} {exc}"
    target = app_for(app, path)
    if target is None:
        return None
    # Litestar routes "/chat/" as "/chat" (it strips a final slash), so both are asked.
    for candidate in dict.fromkeys((path, path.rstrip("/") or "/")):
        with contextlib.suppress(NotFoundException, MethodNotAllowedException):
            _asgi, handler, *_ = target.asgi_router.handle_routing(candidate, "GET")
            media = str(getattr(handler, "media_type", "") or "")
            if not media.startswith(_STREAM):
                return (
                    f"GET {path} is not an event stream (it answers {media or 'no declared type'}); "
                    "topics are stream paths"
                )
            return None
    return None
