"""``GET /poll/events`` (the tally, live) and ``POST /poll/vote``."""

from __future__ import annotations

from typing import Any

import msgspec
from litestar import get, post
from litestar.datastructures import State
from litestar.params import JSONBody
from litestar.response import Stream

from shared.errors import errors
from shared.responses import sse_response

from .poll import TOPIC, poll_of

__all__ = ["handlers"]


class VoteBody(msgspec.Struct, forbid_unknown_fields=True):
    option: str


@get("/poll/events", media_type="text/event-stream", raises=errors(429, 503))
async def events(state: State) -> Stream:
    """``tally`` events: the counts now, then after every vote."""
    poll = poll_of(state)
    return sse_response(poll.hub, TOPIC, prelude=poll.prelude)


@get("/poll/tally")
async def tally(state: State) -> dict[str, Any]:
    return poll_of(state).tally()


@post("/poll/vote", status_code=200, raises=errors(413, 422))
async def vote(data: JSONBody[VoteBody], state: State) -> dict[str, Any]:
    """One vote for ``option``; answers the new tally (every page gets it as a ``tally`` event)."""
    return await poll_of(state).vote(data.option)


handlers = [events, tally, vote]
