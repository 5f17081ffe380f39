"""When to reconnect: the server's ``retry:`` hint, exponential backoff on failures, jitter.

Pure (no I/O) so the policy is tested on its own. WHATWG HTML 9.2.3: a client waits the
*reconnection time* (set by the ``retry:`` field) before reconnecting, and "may" wait longer,
for instance backing off exponentially when the previous attempt failed; that is what we do.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

__all__ = ["Backoff"]


@dataclass
class Backoff:
    """Delays between connection attempts, in seconds.

    - ``retry`` is the reconnection time; a ``retry:`` field from the server replaces it.
    - Each consecutive failed attempt doubles the delay, up to ``max_delay``.
    - A random extra of up to ``jitter`` (a fraction) spreads clients out, so that a restarted
      server is not hit by every client in the same millisecond. The delay is never shorter
      than the server asked for (unless ``max_delay`` is lower).
    """

    retry: float = 1.0
    max_delay: float = 30.0
    jitter: float = 0.25
    failures: int = 0
    rng: random.Random = field(default_factory=random.Random, repr=False)

    def server_retry(self, milliseconds: int) -> None:
        """Apply a ``retry:`` field (milliseconds, as on the wire)."""
        if milliseconds >= 0:
            self.retry = milliseconds / 1000

    def opened(self) -> None:
        """A connection was established: the next reconnect waits ``retry`` again."""
        self.failures = 0

    def next_delay(self, retry_after: float | None = None) -> float:
        """The wait before the next attempt; counts the attempt that just ended as a failure.

        ``retry_after`` (a ``Retry-After`` header) replaces the computed base when given.
        """
        exponential = self.retry * 2 ** min(self.failures, 16)
        base = retry_after if retry_after is not None and retry_after >= 0 else exponential
        self.failures += 1
        return min(self.max_delay, base * (1 + self.jitter * self.rng.random()))
