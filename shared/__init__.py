"""Server-Sent Events for Python services: wire encoding, a topic hub with replay, Litestar glue.

The public surface is re-exported here; each concept lives in its own module.
"""

from __future__ import annotations

from .backends import Backend, BackendUnavailable, Entry, MemoryBackend, UnknownEventId, from_url
from .encoding import Event, encode, encode_comment, encode_json, validate_event_id
from .hub import Hub, HubSettings, Subscription

__all__ = [
    "Backend",
    "BackendUnavailable",
    "Entry",
    "Event",
    "Hub",
    "HubSettings",
    "MemoryBackend",
    "Subscription",
    "UnknownEventId",
    "encode",
    "encode_comment",
    "encode_json",
    "from_url",
    "validate_event_id",
]
