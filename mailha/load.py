"""Bulk load: parallel SMTP sessions, each sending message after message.

A campaign sender keeps a few connections open and pushes mail through each
as fast as the relay takes it (closed loop). This is what the throughput
benchmark measures; the drills' TrafficGenerator (open loop, one connection
per message at a set rate) measures outages instead.

Bounded in count and time: at most `messages` submissions in all, none
started after `max_seconds`. Every 250 after DATA is recorded with its time
and Message-ID, so what was accepted can be counted at the recipient side.
"""

from __future__ import annotations

import functools
import itertools
import smtplib
import threading
import time
from dataclasses import dataclass, field
from email.utils import formatdate

from mailha.traffic import Target, message_id, new_run_id

FILLER = "The quick brown fox jumps over the lazy dog; mailha bulk load filler text, line "


def message_bytes(msg_id: str, sender: str, recipient: str, size: int) -> bytes:
    """A plain-text message of about `size` bytes, CRLF line ends, no line starting with a dot."""
    head = (
        f"From: {sender}\r\nTo: {recipient}\r\nSubject: mailha load {msg_id}\r\n"
        f"Date: {formatdate(localtime=False)}\r\nMessage-ID: {msg_id}\r\n"
        "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n"
    ).encode("ascii")
    return head + filler(size - len(head))


@functools.lru_cache(maxsize=16)
def filler(length: int) -> bytes:
    """Whole numbered lines, at least `length` bytes: built once per size, not per message (the client's hot path)."""
    lines = []
    total = 0
    for number in itertools.count():
        if total >= length:
            break
        line = f"{FILLER}{number:06d}\r\n"
        lines.append(line)
        total += len(line)
    return "".join(lines).encode("ascii")


@dataclass(frozen=True)
class Accepted:
    message_id: str
    at: float  # time.time() of the 250 after DATA


@dataclass
class LoadResult:
    target: str
    sessions: int
    size: int
    run_id: str
    started: float = 0.0  # time.time() when the first session began its first message
    accepted: list[Accepted] = field(default_factory=list)
    refused: int = 0
    errors: list[str] = field(default_factory=list)  # the first few, for the report

    @property
    def finished(self) -> float:
        return max((a.at for a in self.accepted), default=self.started)

    @property
    def accepted_per_second(self) -> float:
        elapsed = self.finished - self.started
        return len(self.accepted) / elapsed if self.accepted and elapsed > 0 else 0.0


class SessionLoad:
    """`sessions` SMTP sessions to `target`, sharing one budget of `messages`."""

    MAX_ERRORS_KEPT = 5
    MAX_RECONNECTS_PER_SESSION = 3

    def __init__(
        self,
        target: Target,
        sessions: int,
        messages: int,
        size: int = 2048,
        max_seconds: float = 30.0,
        sender: str = "campaign@news.mailha.test",
        recipient: str = "subscriber@inbox.test",
        run_id: str | None = None,
        timeout: float = 30.0,
    ):
        if sessions < 1 or messages < 1 or size < 1 or max_seconds <= 0 or timeout <= 0:
            raise ValueError("sessions, messages, size, max_seconds and timeout must be positive")
        self.target = target
        self.sessions = sessions
        self.messages = messages
        self.size = size
        self.max_seconds = max_seconds
        self.sender = sender
        self.recipient = recipient
        self.timeout = timeout
        self.result = LoadResult(str(target), sessions, size, run_id or new_run_id())
        self._domain = sender.rsplit("@", 1)[-1]
        self._numbers = itertools.count()
        self._lock = threading.Lock()
        self._deadline = 0.0

    def run(self) -> LoadResult:
        """Run every session to the end of the budget or the time bound; the result."""
        self.result.started = time.time()
        self._deadline = time.monotonic() + self.max_seconds
        threads = [
            threading.Thread(target=self._session, name=f"load-{self.result.run_id}-{n}", daemon=True)
            for n in range(self.sessions)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        self.result.accepted.sort(key=lambda a: a.at)
        return self.result

    def _next(self) -> int | None:
        if time.monotonic() >= self._deadline:
            return None
        with self._lock:
            seq = next(self._numbers)
        return seq if seq < self.messages else None

    def _note_error(self, text: str) -> None:
        with self._lock:
            if len(self.result.errors) < self.MAX_ERRORS_KEPT:
                self.result.errors.append(text)

    def _session(self) -> None:
        for _ in range(1 + self.MAX_RECONNECTS_PER_SESSION):
            try:
                with smtplib.SMTP(self.target.host, self.target.port, timeout=self.timeout) as smtp:
                    smtp.ehlo("mailha-load")
                    if self._send_until_done(smtp):
                        return
            except (OSError, smtplib.SMTPException) as exc:
                self._note_error(f"{type(exc).__name__}: {exc}")
                if time.monotonic() >= self._deadline:
                    return

    def _send_until_done(self, smtp: smtplib.SMTP) -> bool:
        """Send on one connection until the budget is spent (True) or the relay refuses to go on."""
        while (seq := self._next()) is not None:
            msg_id = message_id(self.result.run_id, seq, self._domain)
            data = message_bytes(msg_id, self.sender, self.recipient, self.size)
            code, reply = smtp.mail(self.sender)
            if code == 250:
                code, reply = smtp.rcpt(self.recipient)
            if code in (250, 251):
                try:
                    code, reply = smtp.data(data)
                except smtplib.SMTPDataError as exc:  # DATA itself refused
                    code, reply = exc.smtp_code, exc.smtp_error
            if code == 250:
                with self._lock:
                    self.result.accepted.append(Accepted(msg_id, time.time()))
                continue
            with self._lock:
                self.result.refused += 1
            self._note_error(f"{code} {reply.decode(errors='replace').strip()}")
            if code == 421 or code is None or code < 0:
                return False  # the relay is closing the session: reconnect
            smtp.rset()
        return True
