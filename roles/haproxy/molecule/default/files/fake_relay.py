#!/usr/bin/python3
"""Stand-in for a relay behind HAProxy: reads the PROXY v1 line, greets with
'220 <name> <client address from the PROXY line>', answers QUIT, closes.

Usage: fake_relay.py NAME PORT [PORT...]
"""

import socketserver
import sys
import threading

NAME = sys.argv[1]


class Relay(socketserver.StreamRequestHandler):
    timeout = 30

    def handle(self):
        proxy = self.rfile.readline(108).decode("ascii", "replace").split()
        # PROXY TCP4 <source> <destination> <source port> <destination port>
        source = proxy[2] if len(proxy) >= 6 and proxy[0] == "PROXY" else "no-proxy-header"
        self.wfile.write(f"220 {NAME} {source} ESMTP test relay\r\n".encode())
        for line in self.rfile:
            if line.strip().upper() == b"QUIT":
                self.wfile.write(b"221 2.0.0 Bye\r\n")
                return
            self.wfile.write(b"502 5.5.2 Not implemented\r\n")


class Server(socketserver.ThreadingTCPServer):
    allow_reuse_address = True
    daemon_threads = True


servers = [Server(("0.0.0.0", int(port)), Relay) for port in sys.argv[2:]]
for server in servers[1:]:
    threading.Thread(target=server.serve_forever, daemon=True).start()
servers[0].serve_forever()
