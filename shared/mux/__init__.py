"""One SSE connection per browser: ``GET /sse/mux`` carries any number of topics (docs/mux.md).

A topic is the path of one of the app's own stream endpoints, run as an internal sub-request
and relayed tagged with its key; ``POST /sse/mux/{conn}`` subscribes and unsubscribes.
"""

from __future__ import annotations

from .app import MUX_PATH, WORKER_PATH, Mux, MuxSettings
from .protocol import BadRequest, BadTopic, Change, Subscribe, parse_change, split_topic
from .topic import MUX_SCOPE_KEY

__all__ = [
    "MUX_PATH",
    "MUX_SCOPE_KEY",
    "WORKER_PATH",
    "BadRequest",
    "BadTopic",
    "Change",
    "Mux",
    "MuxSettings",
    "Subscribe",
    "parse_change",
    "split_topic",
]
