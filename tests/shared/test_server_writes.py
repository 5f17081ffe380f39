"""``shared.head_protocol``: a response's head leaves with its body, in one write to the socket."""

from __future__ import annotations

import asyncio

from shared.head_protocol import _HeadWithBody

HEAD = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n"


class Recording(asyncio.Transport):
    """Stands in for the socket's transport: records what each write() call was given."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.writes.append(bytes(data))

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.closed = True


async def test_the_head_waits_for_the_body_and_goes_with_it() -> None:
    real = Recording()
    t = _HeadWithBody(real, asyncio.get_running_loop())
    t.write(HEAD)
    assert real.writes == []
    t.write(b"{}")
    assert real.writes == [HEAD + b"{}"]
    t.write(b"more")  # later body parts go straight through
    assert real.writes[-1] == b"more"
    await asyncio.sleep(0)
    assert len(real.writes) == 2  # nothing left to flush


async def test_a_head_without_a_body_in_the_same_turn_is_sent_at_its_end() -> None:
    real = Recording()
    t = _HeadWithBody(real, asyncio.get_running_loop())
    t.write(HEAD)  # e.g. a stream whose first event comes later
    await asyncio.sleep(0)
    assert real.writes == [HEAD]


async def test_writelines_and_close_never_pass_a_held_head() -> None:
    real = Recording()
    t = _HeadWithBody(real, asyncio.get_running_loop())
    t.write(HEAD)
    t.writelines([b"{", b"}"])
    assert real.writes == [HEAD + b"{}"]
    t.write(HEAD)
    t.close()
    assert real.writes[-1] == HEAD
    assert real.closed


async def test_a_held_head_is_dropped_on_abort_and_after_the_connection_closed() -> None:
    real = Recording()
    t = _HeadWithBody(real, asyncio.get_running_loop())
    t.write(HEAD)
    t.abort()
    await asyncio.sleep(0)
    assert real.writes == []
    assert real.closed
    other = Recording()
    t = _HeadWithBody(other, asyncio.get_running_loop())
    t.write(HEAD)
    other.closed = True  # the connection was lost before the end of the turn
    await asyncio.sleep(0)
    assert other.writes == []
