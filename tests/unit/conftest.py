"""A real SMTP server on loopback for the unit tests (traffic, bulk load)."""

import socketserver
import threading
from collections import Counter

import pytest

from mailha import names
from mailha.node import events


@pytest.fixture(autouse=True)
def _no_host_events(monkeypatch, tmp_path_factory):
    """Events the code under test emits go nowhere: not to this host's syslog,
    and not through an /etc/mailha/events.conf this host may have. A test
    that looks at them patches syslog itself (tests/unit/test_events.py)."""
    monkeypatch.setattr(events, "CONFIG_FILE", str(tmp_path_factory.getbasetemp() / "no-events.conf"))
    monkeypatch.setattr(events.syslog, "openlog", lambda *args, **kwargs: None)
    monkeypatch.setattr(events.syslog, "syslog", lambda *args: None)


class _Session(socketserver.StreamRequestHandler):
    def handle(self):
        server = self.server
        with server.lock:
            server.connections += 1
            hang = server.connections <= server.hang_first
        if hang:  # a relay that accepted the connection and then died: no greeting
            server.release.wait(10)
            return
        self.wfile.write(f"220 mta.mailha.test ESMTP {names.node_tag('key', 'mxT')}\r\n".encode())
        while line := self.rfile.readline():
            verb = line.decode().strip().split(" ")[0].upper()
            if verb == "EHLO":
                self.wfile.write(b"250-mta.mailha.test\r\n250 8BITMIME\r\n")
            elif verb == "RCPT":
                with server.lock:
                    server.rcpts += 1
                    refuse = server.refuse_every and server.rcpts % server.refuse_every == 0
                self.wfile.write(b"550 5.1.1 no such user\r\n" if refuse else server.rcpt_reply)
            elif verb == "DATA":
                self.wfile.write(b"354 go ahead\r\n")
                while self.rfile.readline() not in (b".\r\n", b""):
                    pass
                with server.lock:
                    server.received += 1
                    server.per_connection[id(self)] += 1
                self.wfile.write(b"250 2.0.0 Ok: queued as ABC\r\n")
            elif verb == "QUIT":
                self.wfile.write(b"221 bye\r\n")
                return
            else:
                self.wfile.write(b"250 ok\r\n")


@pytest.fixture
def smtp_server():
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _Session)
    server.daemon_threads = True
    server.received = 0
    server.rcpt_reply = b"250 ok\r\n"
    server.rcpts = 0
    server.refuse_every = 0  # n > 0: every n-th RCPT TO is refused
    server.per_connection = Counter()  # messages taken on each connection
    server.lock = threading.Lock()
    server.connections = 0
    server.hang_first = 0
    server.release = threading.Event()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.release.set()
    server.shutdown()
    server.server_close()
