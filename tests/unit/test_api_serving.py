"""The API's HTTP transport: the writes of one event-loop turn leave as one, in order, and
nothing written is lost on close. Real sockets (a connected pair) and a real event loop."""

from __future__ import annotations

import asyncio
import socket

from api.serving import MAX_PENDING_BYTES, CoalescingTransport


class _CountingTransport:
    """The real transport, with a record of each write it is given."""

    def __init__(self, transport: asyncio.Transport) -> None:
        self.transport = transport
        self.writes: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.writes.append(data)
        self.transport.write(data)

    def __getattr__(self, name: str):
        return getattr(self.transport, name)


async def _connected() -> tuple[CoalescingTransport, _CountingTransport, socket.socket]:
    ours, peer = socket.socketpair()
    loop = asyncio.get_running_loop()
    transport, _ = await loop.connect_accepted_socket(asyncio.Protocol, ours)
    counting = _CountingTransport(transport)
    return CoalescingTransport(counting, loop), counting, peer


async def _received(peer: socket.socket) -> bytes:
    """Everything the peer gets until the other side closes."""
    peer.setblocking(False)
    loop = asyncio.get_running_loop()
    chunks = []
    while chunk := await asyncio.wait_for(loop.sock_recv(peer, 65536), timeout=5):
        chunks.append(chunk)
    peer.close()
    return b"".join(chunks)


def test_writes_of_one_turn_leave_as_one_write():
    async def scenario():
        coalescing, counting, peer = await _connected()
        coalescing.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n")
        coalescing.write(b"{}")
        assert counting.writes == []  # nothing leaves before the turn ends
        await asyncio.sleep(0)
        coalescing.close()
        return counting.writes, await _received(peer)

    writes, received = asyncio.run(scenario())
    assert writes == [b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}"]
    assert received == b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}"


def test_writes_of_different_turns_leave_separately_and_in_order():
    async def scenario():
        coalescing, counting, peer = await _connected()
        coalescing.write(b"first ")
        await asyncio.sleep(0)
        coalescing.write(b"second")
        await asyncio.sleep(0)
        coalescing.close()
        return counting.writes, await _received(peer)

    writes, received = asyncio.run(scenario())
    assert writes == [b"first ", b"second"]
    assert received == b"first second"


def test_close_sends_what_is_still_pending():
    async def scenario():
        coalescing, counting, peer = await _connected()
        coalescing.write(b"last words")
        coalescing.close()  # in the same turn as the write
        return counting.writes, await _received(peer)

    writes, received = asyncio.run(scenario())
    assert writes == [b"last words"]
    assert received == b"last words"


def test_a_large_write_leaves_at_once():
    body = b"x" * MAX_PENDING_BYTES

    async def scenario():
        coalescing, counting, peer = await _connected()
        coalescing.write(b"head ")
        coalescing.write(body)
        sent_before_the_turn_ended = list(counting.writes)
        coalescing.close()
        return sent_before_the_turn_ended, await _received(peer)

    sent, received = asyncio.run(scenario())
    assert sent == [b"head " + body]
    assert received == b"head " + body
