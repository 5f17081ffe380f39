"""The poll's options."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["PollSettings"]


@dataclass(frozen=True, slots=True)
class PollSettings:
    question: str = "Server-Sent Events or WebSockets?"
    options: tuple[str, ...] = ("SSE", "WebSockets", "long polling")
