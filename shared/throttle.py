"""Wrong log-ins counted per client address (issue 14.12): after ``max_failures`` within
``window`` seconds that address waits; other addresses are not held up, so a flood from one
cannot lock the operator out. Bounded memory: the least recently failing addresses are forgotten
first. Per process (each instance counts its own), framework-free: callers turn a wait into 429.
"""

from __future__ import annotations

import time
from collections import OrderedDict, deque

__all__ = ["FailureThrottle"]

MAX_TRACKED_ADDRESSES = 10_000


class FailureThrottle:
    def __init__(self, max_failures: int = 10, window: float = 60.0) -> None:
        self.max_failures = max_failures
        self.window = window
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()

    def wait(self, address: str) -> int | None:
        """Seconds ``address`` must wait before trying again, or ``None`` if it may try now."""
        failures = self._failures.get(address)
        if failures is None:
            return None
        now = time.monotonic()
        while failures and failures[0] < now - self.window:
            failures.popleft()
        if len(failures) < self.max_failures:
            return None
        return max(1, int(failures[0] + self.window - now) + 1)

    def failed(self, address: str) -> None:
        failures = self._failures.get(address)
        if failures is None:
            failures = self._failures[address] = deque()
            while len(self._failures) > MAX_TRACKED_ADDRESSES:
                self._failures.popitem(last=False)
        self._failures.move_to_end(address)
        failures.append(time.monotonic())
