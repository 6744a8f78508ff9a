"""Campaign traffic: uniquely numbered messages submitted over real SMTP.

Used by the integration tests, the CLI's test message and the drills. Every
attempt is recorded with its time and the server's reply, so that what was
acknowledged (250 after DATA) can be reconciled with what arrived.
The generator is bounded in count and time and stops by itself.
"""

from __future__ import annotations

import smtplib
import ssl
import threading
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.utils import formatdate

from mailha import names


@dataclass(frozen=True)
class Target:
    host: str
    port: int = 25
    starttls: bool = False

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"


@dataclass
class Attempt:
    seq: int
    message_id: str
    target: str
    started: float
    finished: float
    code: int | None
    reply: str
    node: str | None = None  # the relay that greeted, by its greeting's tag (Pair.node_tags)

    @property
    def accepted(self) -> bool:
        return self.code == 250


def new_run_id() -> str:
    return uuid.uuid4().hex[:12]


def message_id(run_id: str, seq: int, domain: str) -> str:
    return f"<mailha-{run_id}-{seq:06d}@{domain}>"


def build_message(msg_id: str, sender: str, recipient: str, subject: str) -> EmailMessage:
    message = EmailMessage()
    message["From"] = sender
    message["To"] = recipient
    message["Subject"] = subject
    message["Date"] = formatdate(localtime=False)
    message["Message-ID"] = msg_id
    message.set_content(f"mailha campaign test message {msg_id}\n")
    return message


@dataclass
class Reply:
    code: int | None
    text: str
    tag: str | None = None  # the greeting's relay tag (names.node_tag), if any


def submit(target: Target, message: EmailMessage, timeout: float = 10.0) -> Reply:
    """Submit one message; the final SMTP code and reply (code None if no reply) and the greeting's tag."""
    tag = None
    try:
        with smtplib.SMTP(timeout=timeout) as smtp:
            # Connecting here (not in the constructor) returns the banner; the
            # constructor would also have recorded the host STARTTLS needs.
            smtp._host = target.host
            _, banner = smtp.connect(target.host, target.port)
            found = names.NODE_TAG_IN_GREETING.search(banner.decode(errors="replace"))
            tag = found.group(1) if found else None
            return Reply(*_transaction(smtp, target, message), tag)
    except (OSError, smtplib.SMTPException) as exc:
        code = getattr(exc, "smtp_code", None)
        return Reply(code if isinstance(code, int) and code > 0 else None, f"{type(exc).__name__}: {exc}", tag)


def _transaction(smtp: smtplib.SMTP, target: Target, message: EmailMessage) -> tuple[int | None, str]:
    sender, recipient = message["From"], message["To"]
    code, reply = smtp.ehlo("mailha-client")
    if code != 250:
        return code, reply.decode(errors="replace")
    if target.starttls:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE  # the lab's relays use self-signed certificates
        code, reply = smtp.starttls(context=context)
        if code != 220:
            return code, reply.decode(errors="replace")
        smtp.ehlo("mailha-client")
    for step in (lambda: smtp.mail(sender), lambda: smtp.rcpt(recipient)):
        code, reply = step()
        if code not in (250, 251):
            return code, reply.decode(errors="replace")
    code, reply = smtp.data(message.as_bytes())
    return code, reply.decode(errors="replace")


@dataclass
class TrafficGenerator:
    """Submit numbered messages at `rate` per second, round-robin over `targets`.

    Open loop, as a campaign sender with parallel connections works: each
    attempt starts at its scheduled time on its own connection, so one
    submission hanging until its timeout does not hold back the ones after it
    (a closed loop would hide part of an outage behind the hung attempt and
    stretch another part of it). At most `concurrency` attempts are in
    flight; when all are busy, the next one starts as soon as one finishes.

    Stops after `max_messages` or `max_seconds`, whichever comes first, or
    when stop() is called; the attempts in flight are then allowed to finish.
    Runs in background threads.
    """

    targets: Sequence[Target]
    rate: float
    max_messages: int
    max_seconds: float
    sender: str = "campaign@news.mailha.test"
    recipient: str = "subscriber@inbox.test"
    run_id: str = field(default_factory=new_run_id)
    timeout: float = 5.0
    concurrency: int = 32
    # {greeting tag: relay}, to record which relay answered (Pair.node_tags).
    node_tags: Mapping[str, str] = field(default_factory=dict)
    attempts: list[Attempt] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.targets:
            raise ValueError("at least one target is needed")
        if self.rate <= 0 or self.max_messages <= 0 or self.max_seconds <= 0:
            raise ValueError("rate, max_messages and max_seconds must be positive")
        if self.concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"traffic-{self.run_id}", daemon=True)
        self._lock = threading.Lock()
        self._slots = threading.BoundedSemaphore(self.concurrency)
        self._workers: list[threading.Thread] = []
        self._domain = self.sender.rsplit("@", 1)[-1]

    def start(self) -> TrafficGenerator:
        self._thread.start()
        return self

    def stop(self) -> list[Attempt]:
        self._stop.set()
        return self.wait()

    def wait(self) -> list[Attempt]:
        self._thread.join()
        for worker in self._workers:
            worker.join()
        return self.snapshot()

    def snapshot(self) -> list[Attempt]:
        """The finished attempts so far, in submission order."""
        with self._lock:
            return sorted(self.attempts, key=lambda a: a.seq)

    def _run(self) -> None:
        interval = 1.0 / self.rate
        began = time.monotonic()
        for seq in range(self.max_messages):
            due = began + seq * interval
            if self._stop.is_set() or due - began > self.max_seconds:
                return
            delay = due - time.monotonic()
            if delay > 0 and self._stop.wait(delay):
                return
            while not self._slots.acquire(timeout=0.1):
                if self._stop.is_set():
                    return
            worker = threading.Thread(target=self._attempt, args=(seq,), name=f"traffic-{self.run_id}-{seq}")
            worker.daemon = True
            self._workers.append(worker)
            worker.start()

    def _attempt(self, seq: int) -> None:
        try:
            target = self.targets[seq % len(self.targets)]
            msg_id = message_id(self.run_id, seq, self._domain)
            message = build_message(msg_id, self.sender, self.recipient, f"campaign {self.run_id} #{seq}")
            started = time.time()
            reply = submit(target, message, timeout=self.timeout)
            attempt = Attempt(
                seq,
                msg_id,
                str(target),
                started,
                time.time(),
                reply.code,
                reply.text.strip(),
                self.node_tags.get(reply.tag or ""),
            )
            with self._lock:
                self.attempts.append(attempt)
        finally:
            self._slots.release()


def accepted_ids(attempts: Sequence[Attempt]) -> list[str]:
    return [a.message_id for a in attempts if a.accepted]
