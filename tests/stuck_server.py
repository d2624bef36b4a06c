"""A tracking server whose /health answers but whose API hangs: a proxy in front of a stuck backend."""

from __future__ import annotations

import contextlib
import http.server
import threading


@contextlib.contextmanager
def hanging_api_server(hang_seconds: float = 120):
    """Yield the URI of a server that says OK on /health and holds every other request `hang_seconds`.
    MLflow's own defaults (120 s timeout, 7 retries) would wait on it for over 15 minutes."""
    release = threading.Event()

    class HealthyButStuck(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            if self.path == "/health":
                self.send_response(200)
                self.end_headers()
                self.wfile.write(b"OK")
            else:
                release.wait(hang_seconds)

        do_POST = do_GET

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), HealthyButStuck)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        release.set()
        server.shutdown()
        server.server_close()
