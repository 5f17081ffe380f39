"""The poll itself: the counts, and the ``tally`` event every page gets when they change."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from litestar.datastructures import State

from shared.encoding import encode_json
from shared.errors import Unprocessable
from shared.hub import Hub

from .settings import PollSettings

__all__ = ["TOPIC", "Poll", "poll_of"]

TOPIC = "poll"


@dataclass(slots=True, eq=False)
class Poll:
    """Counts kept in this process (a restart starts over; several processes would each count
    their own: keep them in Redis for that, as the chat does with its messages)."""

    settings: PollSettings
    hub: Hub
    counts: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.counts = dict.fromkeys(self.settings.options, 0)

    def tally(self) -> dict[str, Any]:
        return {"question": self.settings.question, "counts": dict(self.counts), "total": sum(self.counts.values())}

    async def vote(self, option: str) -> dict[str, Any]:
        if option not in self.counts:
            raise Unprocessable(f"unknown option {option!r}: vote for one of {', '.join(self.settings.options)}")
        self.counts[option] += 1
        tally = self.tally()
        # Ephemeral: nobody needs old tallies replayed, every (re)connect starts with the latest.
        await self.hub.publish_json(TOPIC, tally, event="tally", ephemeral=True)
        return tally

    async def prelude(self) -> bytes:
        """The first event of every stream: the counts now, so a new page never waits for a vote."""
        return encode_json(self.tally(), event="tally")


def poll_of(state: State) -> Poll:
    poll: Poll = state.poll
    return poll
