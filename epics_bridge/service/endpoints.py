"""The service's HTTP endpoints: ``/metrics``, ``/livez`` and ``/readyz`` on ``--metrics-port``.

Served from the supervisor's own loop, one short request at a time, so the supervisor needs no
thread of its own. Machines read only the status code; the plain-text body is for
people: ``/livez`` says what would need a restart of the whole service, ``/readyz`` lists each
task of this instance that cannot serve now and why.
"""

from __future__ import annotations

from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Callable, Dict, Tuple

from ..task import ConfigError

__all__ = ["Endpoints", "Response"]

#: (status code, content type, body)
Response = Tuple[int, str, bytes]
TEXT = "text/plain; charset=utf-8"
#: Longest a client may take to send its request: the supervisor's loop waits for nobody longer.
REQUEST_TIMEOUT = 2.0


class _Handler(BaseHTTPRequestHandler):
    timeout = REQUEST_TIMEOUT
    server: _Server

    def do_GET(self) -> None:  # noqa: N802 - the http.server protocol
        route = self.server.routes.get(self.path.split("?", 1)[0])
        code, kind, body = route() if route else (404, TEXT, b"not found: try /metrics, /livez, /readyz\n")
        self.send_response(code)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the base class's name
        """Probes every few seconds would drown the log."""


class _Server(HTTPServer):
    routes: Dict[str, Callable[[], Response]]


class Endpoints:
    """Bound at construction (ConfigError if the port cannot be had), answered by :meth:`handle`."""

    def __init__(self, port: int, addr: str = "127.0.0.1") -> None:
        try:
            self.server = _Server((addr, port), _Handler)
        except (OSError, OverflowError) as exc:
            reason = getattr(exc, "strerror", None) or exc
            raise ConfigError(f"--metrics-port {port} --metrics-addr {addr}: cannot listen there: {reason}") from None
        self.server.routes = {}
        self.server.timeout = 0
        self.address = self.server.server_address[:2]

    def route(self, path: str, answer: Callable[[], Response]) -> None:
        self.server.routes[path] = answer

    def fileno(self) -> int:
        return self.server.fileno()

    def handle(self) -> None:
        """Answer one waiting request (call when the socket is readable)."""
        self.server.handle_request()

    def close(self) -> None:
        self.server.server_close()


def health(problems: Dict[str, str], healthy: str) -> Response:
    """200 and ``healthy`` when there are no problems, else 503 and one line per problem."""
    if not problems:
        return 200, TEXT, (healthy + "\n").encode()
    return 503, TEXT, "".join(f"{name}: {why}\n" for name, why in sorted(problems.items())).encode()
