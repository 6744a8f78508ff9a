#!/usr/bin/python3
"""Stand-in for mailha-health-agent: GET /active is 200 only while /run/active
exists; GET /health is 200 unless /run/unhealthy exists (the MTA is healthy)."""

import os
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

ACTIVE_FLAG = "/run/active"
UNHEALTHY_FLAG = "/run/unhealthy"


class Agent(BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path == "/active":
            ok = os.path.exists(ACTIVE_FLAG)
            body = b"active\n" if ok else b"not active\n"
        elif self.path == "/health":
            ok = not os.path.exists(UNHEALTHY_FLAG)
            body = b"healthy\n" if ok else b"unhealthy\n"
        else:
            ok, body = False, b"not found\n"
        self.send_response(200 if ok else 503)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


ThreadingHTTPServer(("0.0.0.0", 8025), Agent).serve_forever()
