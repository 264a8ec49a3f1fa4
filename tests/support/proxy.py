"""A TCP relay on loopback that a test can pause: a network that stops passing bytes
without either end noticing, so messages are sent but not acknowledged."""

from __future__ import annotations

import select
import socket
import threading


class TcpProxy:
    """Forwards every connection on `port` to the target; `pause()` holds all bytes
    (they wait in the kernel's buffers), `resume()` lets them through again."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self._server = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._server.getsockname()[1])
        self._flowing = threading.Event()
        self._flowing.set()
        self._refusing = threading.Event()  # set: a route that is down (`refuse()`)
        self._closed = threading.Event()
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, name="proxy-accept", daemon=True).start()

    def pause(self) -> None:
        self._flowing.clear()

    def resume(self) -> None:
        self._refusing.clear()
        self._flowing.set()

    def refuse(self) -> None:
        """Until `resume()`, close every new connection at once, as a route that is down:
        a client's reconnect attempts fail (and it backs off) instead of waiting in the relay."""
        self._refusing.set()

    def sever(self) -> None:
        """Drop every current connection without passing on what it holds, as a network
        that dies with the process behind it; later connections are relayed (once resumed)."""
        with self._lock:
            sockets, self._sockets = self._sockets, []
        for sock in sockets:
            sock.close()

    def close(self) -> None:
        self._closed.set()
        self._flowing.set()
        self._server.close()
        with self._lock:
            for sock in self._sockets:
                sock.close()

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self._server.accept()
                if self._refusing.is_set():
                    client.close()
                    continue
                upstream = socket.create_connection(self.target)
            except OSError:
                return
            with self._lock:
                self._sockets += [client, upstream]
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(src, dst), name="proxy-pump", daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        while not self._closed.is_set():
            self._flowing.wait()
            try:
                readable, _, _ = select.select([src], [], [], 0.1)
                if not readable or not self._flowing.is_set():
                    continue
                data = src.recv(65536)
                if not data:
                    dst.shutdown(socket.SHUT_WR)  # pass the end of the stream on, after its bytes
                    return
                dst.sendall(data)
            except (OSError, ValueError):  # ValueError: select() on a socket sever() closed
                return
