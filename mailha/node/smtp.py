"""The SMTP greeting probe: the node's health check (mailha-health) and the
controller's `mailha status` (mailha.probes.smtp_greeting) both judge an MTA
by it: a whole "220" reply within one deadline."""

import contextlib
import socket
import time


class SmtpFailure(Exception):
    """The MTA did not answer as a healthy MTA must."""


class SmtpDialogue:
    """A line-oriented SMTP client bounded by one absolute deadline."""

    def __init__(self, host, port, deadline):
        self.deadline = deadline
        self.buffer = b""
        try:
            self.sock = socket.create_connection((host, port), timeout=self._remaining())
        except OSError as err:
            raise SmtpFailure(f"connect to {host}:{port} failed: {err}") from err

    def _remaining(self):
        remaining = self.deadline - time.monotonic()
        if remaining <= 0:
            raise SmtpFailure("deadline exceeded")
        return remaining

    def _read_line(self):
        while b"\n" not in self.buffer:
            self.sock.settimeout(self._remaining())
            try:
                chunk = self.sock.recv(4096)
            except TimeoutError as err:
                raise SmtpFailure("deadline exceeded waiting for a reply") from err
            except OSError as err:
                raise SmtpFailure(f"read failed: {err}") from err
            if not chunk:
                raise SmtpFailure("connection closed by the MTA")
            self.buffer += chunk
        line, _, self.buffer = self.buffer.partition(b"\n")
        return line.rstrip(b"\r").decode("ascii", "replace")

    def reply(self):
        """Read a whole (possibly multi-line) reply; return (code, last line)."""
        while True:
            line = self._read_line()
            if len(line) < 3 or not line[:3].isdigit():
                raise SmtpFailure(f"malformed reply {line[:80]!r}")
            if len(line) == 3 or line[3] != "-":
                return int(line[:3]), line

    def command(self, text):
        try:
            self.sock.settimeout(self._remaining())
            self.sock.sendall(text.encode("ascii") + b"\r\n")
        except OSError as err:
            raise SmtpFailure(f"{text.split(' ')[0]}: send failed: {err}") from err
        return self.reply()

    def greeting(self):
        """Read the greeting; the line when it is 220, else SmtpFailure."""
        code, line = self.reply()
        if code != 220:
            raise SmtpFailure(f"greeting was not 220: {line[:80]!r}")
        return line

    def quit_quietly(self):
        """Say goodbye so the MTA logs a clean disconnect, not a lost
        connection; its answer does not change the verdict."""
        with contextlib.suppress(SmtpFailure):
            self.command("QUIT")

    def close(self):
        self.sock.close()


def greet(host, port=25, timeout=1.0):
    """Connect and read a 220 greeting within `timeout` seconds, then send
    QUIT without waiting for its answer (a probe from afar, not the node's
    own check, which waits for it). Returns (seconds until the greeting,
    greeting line); raises SmtpFailure."""
    started = time.monotonic()
    dialogue = SmtpDialogue(host, port, started + timeout)
    try:
        line = dialogue.greeting()
        seconds = time.monotonic() - started
        with contextlib.suppress(OSError):
            dialogue.sock.sendall(b"QUIT\r\n")
    finally:
        dialogue.close()
    return seconds, line
