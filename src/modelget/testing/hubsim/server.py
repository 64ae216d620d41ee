"""The simulator's listeners: threaded HTTP servers on 127.0.0.1 that track their connections,
so that stopping aborts them (stalled responses included), and their start and stop."""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
import time
from collections.abc import Sequence
from http.server import ThreadingHTTPServer
from socketserver import TCPServer
from typing import TYPE_CHECKING, Any

from modelget.testing.hubsim.handler import Handler

if TYPE_CHECKING:
    from modelget.testing.hubsim.simulator import HubSimulator

log = logging.getLogger(__name__)


class Listener(ThreadingHTTPServer):
    """One listener (``hub`` or ``cdn``); tracks its connections so that stop() can abort them."""

    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], sim: HubSimulator, listener: str) -> None:
        self.sim = sim
        self.listener = listener
        self._conns: dict[socket.socket, threading.Thread] = {}
        self._conn_lock = threading.Lock()
        super().__init__(address, Handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind does a reverse DNS lookup (getfqdn); skip it.
        TCPServer.server_bind(self)
        self.server_name = "127.0.0.1"
        self.server_port = self.socket.getsockname()[1]

    def process_request(self, request: Any, client_address: Any) -> None:
        thread = threading.Thread(
            target=self._process,
            args=(request, client_address),
            name=f"hubsim-{self.sim.name}-{self.listener}-conn",
            daemon=True,
        )
        with self._conn_lock:
            self._conns[request] = thread
        thread.start()

    def _process(self, request: socket.socket, client_address: Any) -> None:
        try:
            self.finish_request(request, client_address)
        except Exception:
            log.debug("hubsim %s: connection error", self.listener, exc_info=True)
        finally:
            self.shutdown_request(request)
            with self._conn_lock:
                self._conns.pop(request, None)

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.debug("hubsim %s: request error from %s", self.listener, client_address)

    def abort_connections(self) -> None:
        with self._conn_lock:
            conns = list(self._conns)
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)

    def join_handlers(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        with self._conn_lock:
            threads = list(self._conns.values())
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))


def start_listeners(
    sim: HubSimulator, ports: tuple[int, int], *, cdn: bool
) -> tuple[dict[str, Listener], list[threading.Thread]]:
    """Bind the hub listener (and with ``cdn`` the CDN one) and serve each in a thread."""
    servers = {"hub": Listener(("127.0.0.1", ports[0]), sim, "hub")}
    try:
        if cdn:
            servers["cdn"] = Listener(("127.0.0.1", ports[1]), sim, "cdn")
    except OSError:
        servers["hub"].server_close()
        raise
    threads = []
    for listener, srv in servers.items():
        thread = threading.Thread(
            target=srv.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"hubsim-{sim.name}-{listener}",
            daemon=True,
        )
        thread.start()
        threads.append(thread)
    return servers, threads


def stop_listeners(
    servers: Sequence[Listener], threads: Sequence[threading.Thread], timeout: float = 5.0
) -> None:
    """Stop serving, abort open connections and join the threads (``timeout`` in all)."""
    for srv in servers:
        srv.shutdown()
    for srv in servers:
        srv.abort_connections()
        srv.server_close()
    deadline = time.monotonic() + timeout
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
    for srv in servers:
        srv.join_handlers(max(0.0, deadline - time.monotonic()))
