"""A real webhook receiver: a threaded stdlib HTTP server that records what it is sent."""
from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Receiver:
    def __init__(self):
        self.requests: list[tuple[dict[str, str], bytes]] = []
        self.gate = threading.Event()  # cleared: requests hang until it is set (a stuck receiver)
        self.gate.set()
        self.delay = 0.0  # seconds each request takes (a slow receiver)
        self.lock = threading.Lock()
        rec = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                rec.gate.wait(60)
                if rec.delay:
                    time.sleep(rec.delay)
                with rec.lock:
                    rec.requests.append(({k.lower(): v for k, v in self.headers.items()}, body))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/hook"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def payloads(self) -> list[dict]:
        with self.lock:
            return [json.loads(b) for _, b in self.requests]

    def close(self) -> None:
        self.gate.set()
        self.httpd.shutdown()
        self.httpd.server_close()
