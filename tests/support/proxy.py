"""A TCP proxy that injects faults between the service and a real server.

Modes:
- forward: pass bytes through (optionally delaying each chunk sent upstream,
  which delays every command by about that much);
- refuse: close every connection and refuse new ones (a server that is down);
- blackhole: accept and hold connections but pass nothing (a hung server).
"""

from __future__ import annotations

import contextlib
import select
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import bson

_CHUNK = 65536


class MongoWireTap:
    """Counts the MongoDB commands a proxy forwards, read from the wire itself.

    Parses OP_MSG (opcode 2013) messages; `commands` holds every command
    document seen, in order.
    """

    OP_MSG = 2013

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.commands: list[dict[str, Any]] = []

    def reset(self) -> None:
        with self._lock:
            self.commands.clear()

    def count(self, name: str, collection: str | None = None, **match: Any) -> int:
        """How many `name` commands (on `collection`, with fields equal to `match`) went by."""
        with self._lock:
            return sum(
                1
                for doc in self.commands
                if name in doc
                and (collection is None or doc[name] == collection)
                and all(doc.get(k) == v for k, v in match.items())
            )

    def stream(self) -> Callable[[bytes], None]:
        """A parser for one connection's client-to-server bytes."""
        buffer = bytearray()

        def feed(data: bytes) -> None:
            buffer.extend(data)
            while len(buffer) >= 16:
                length, _, _, opcode = struct.unpack_from("<iiii", buffer)
                if len(buffer) < length:
                    return
                message = bytes(buffer[:length])
                del buffer[:length]
                if opcode == self.OP_MSG and length > 21 and message[20] == 0:
                    (doc_length,) = struct.unpack_from("<i", message, 21)
                    doc = bson.decode(message[21 : 21 + doc_length])
                    with self._lock:
                        self.commands.append(doc)

        return feed


class FaultProxy:
    def __init__(self, upstream_port: int, upstream_host: str = "127.0.0.1", tap: MongoWireTap | None = None) -> None:
        self._upstream = (upstream_host, upstream_port)
        self.tap = tap
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(512)
        self.port: int = self._listener.getsockname()[1]
        self._lock = threading.Lock()
        self._mode = "forward"
        self.delay_seconds = 0.0
        self._connections: set[socket.socket] = set()
        self._closed = False
        threading.Thread(target=self._accept_loop, daemon=True).start()

    @property
    def url_host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def forward(self, delay_seconds: float = 0.0) -> None:
        with self._lock:
            self._mode = "forward"
            self.delay_seconds = delay_seconds

    def refuse(self) -> None:
        with self._lock:
            self._mode = "refuse"
        self._drop_all()

    def blackhole(self) -> None:
        with self._lock:
            self._mode = "blackhole"
        self._drop_all()

    @contextlib.contextmanager
    def refusing(self) -> Iterator[None]:
        self.refuse()
        try:
            yield
        finally:
            self.forward()

    @contextlib.contextmanager
    def delaying(self, seconds: float) -> Iterator[None]:
        self.forward(seconds)
        try:
            yield
        finally:
            self.forward()

    def close(self) -> None:
        self._closed = True
        self._listener.close()
        self._drop_all()

    def _drop_all(self) -> None:
        with self._lock:
            connections, self._connections = self._connections, set()
        for conn in connections:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
            conn.close()

    def _accept_loop(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            with self._lock:
                mode = self._mode
            if mode == "refuse":
                # A closed port answers with RST; closing at once is the nearest equivalent.
                client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
                client.close()
                continue
            with self._lock:
                self._connections.add(client)
            if mode == "blackhole":
                continue
            threading.Thread(target=self._pipe, args=(client,), daemon=True).start()

    def _pipe(self, client: socket.socket) -> None:
        try:
            upstream = socket.create_connection(self._upstream, timeout=5)
        except OSError:
            client.close()
            return
        upstream.settimeout(None)
        with self._lock:
            self._connections.add(upstream)
        sockets = [client, upstream]
        feed = self.tap.stream() if self.tap is not None else None
        try:
            while True:
                readable, _, _ = select.select(sockets, [], [], 1.0)
                if self._closed:
                    return
                for sock in readable:
                    data = sock.recv(_CHUNK)
                    if not data:
                        return
                    if sock is client:
                        if self.delay_seconds:
                            time.sleep(self.delay_seconds)
                        if feed is not None:
                            feed(data)
                        upstream.sendall(data)
                    else:
                        client.sendall(data)
        except (OSError, ValueError):  # ValueError: select on a socket _drop_all closed meanwhile
            return
        finally:
            for sock in sockets:
                with contextlib.suppress(OSError):
                    sock.close()
            with self._lock:
                self._connections.discard(client)
                self._connections.discard(upstream)
