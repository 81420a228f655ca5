"""A tiny RESP server on 127.0.0.1 for replies no real Redis gives (a proxy, another server).

Each command is answered by a function of its arguments, which returns the
raw bytes to send, an iterable of chunks (a huge reply, sent as the client
reads it), or None to close the connection. ``sent`` counts the bytes the
client's kernel accepted, so a test can tell whether a huge reply was read.
"""

from __future__ import annotations

import socket
import socketserver
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import BinaryIO

Answer = bytes | Iterable[bytes] | None

#: HELLO answered as Redis 7 does (RESP3, the protocol redis-py asks for when it may).
HELLO = b"%1\r\n$5\r\nproto\r\n:3\r\n"
#: What any client says on connecting, answered as Redis would.
_HANDSHAKE = {
    b"AUTH": b"+OK\r\n",
    b"CLIENT": b"+OK\r\n",
    b"SELECT": b"+OK\r\n",
    b"PING": b"+PONG\r\n",
}


def bulk(data: bytes) -> bytes:
    return b"$%d\r\n%s\r\n" % (len(data), data)


def array(*items: bytes) -> bytes:
    return b"*%d\r\n%s" % (len(items), b"".join(items))


def _command(stream: BinaryIO) -> list[bytes] | None:
    line = stream.readline()
    if not line:
        return None
    if not line.startswith(b"*"):  # an inline command
        return line.split()
    args = []
    for _ in range(int(line[1:])):
        size = int(stream.readline()[1:])
        args.append(stream.read(size + 2)[:-2])
    return args


class FakeResp:
    """Answers every command with ``answer(args)``, after the handshake's usual replies."""

    def __init__(self, answer: Callable[[list[bytes]], Answer], hello: bytes = HELLO) -> None:
        self.answer = answer
        self.sent = 0
        self.commands: list[list[bytes]] = []
        owner = self

        class Handler(socketserver.StreamRequestHandler):
            def handle(self) -> None:
                while (args := _command(self.rfile)) is not None:
                    owner.commands.append(args)
                    name = args[0].upper() if args else b""
                    reply = hello if name == b"HELLO" else _HANDSHAKE.get(name)
                    if reply is None:
                        reply = owner.answer(args)  # type: ignore[assignment]
                    if reply is None:
                        return
                    try:
                        for chunk in [reply] if isinstance(reply, bytes) else reply:
                            self.request.sendall(chunk)
                            owner.sent += len(chunk)
                    except OSError:  # the client gave up on it
                        return

        self.server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port: int = self.server.server_address[1]
        self._thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def __enter__(self) -> FakeResp:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(5)


def huge_bulk(size: int, chunk: int = 1 << 20) -> Iterator[bytes]:
    """A bulk string of ``size`` bytes, sent a chunk at a time."""
    yield b"$%d\r\n" % size
    left = size
    while left > 0:
        n = min(chunk, left)
        yield b"x" * n
        left -= n
    yield b"\r\n"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port
