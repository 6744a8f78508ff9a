#!/usr/bin/python3
"""Stand-in for mailha-health-agent: GET /active is 200 only while /run/active exists."""

import os
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

ACTIVE_FLAG = "/run/active"


class Agent(BaseHTTPRequestHandler):
    def do_GET(self):
        active = self.path == "/active" and os.path.exists(ACTIVE_FLAG)
        status = 200 if active else 503
        body = b"active\n" if active else b"not active\n"
        self.send_response(status)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


ThreadingHTTPServer(("0.0.0.0", 8025), Agent).serve_forever()
