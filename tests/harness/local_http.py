"""A PURPOSE-BUILT HTTP(S) server on 127.0.0.1 for tests that need an exact answer no stand-in gives.

`serve(respond)` runs a threaded server whose every GET/POST is answered by RESPOND(method, path,
headers) -> (status, content type, body); the request body is read and dropped (as real servers do).
`ssl_context` makes it HTTPS. Shut down when the block ends; bounded joins.
"""

from __future__ import annotations

import contextlib
import ssl
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

Respond = Callable[[str, str, Any], tuple[int, str, bytes]]


@contextlib.contextmanager
def serve(respond: Respond, ssl_context: ssl.SSLContext | None = None) -> Iterator[str]:
    """Yield the server's base URL (http://127.0.0.1:PORT or https://…)."""

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *_args: object) -> None:
            pass

        def answer(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            if length:
                self.rfile.read(length)
            status, ctype, body = respond(self.command, self.path, self.headers)
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = answer

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    if ssl_context is not None:
        server.socket = ssl_context.wrap_socket(server.socket, server_side=True)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    scheme = "https" if ssl_context is not None else "http"
    try:
        yield f"{scheme}://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
