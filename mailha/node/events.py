"""Events: one syslog line each, and a JSON POST to the configured webhooks
that never delays what caused it.

emit(kind, **fields) is what the emitters call (keepalived's notify, the
health agent, the mailha CLI). It builds one event

    {"id": "<uuid4>", "time": "2025-01-31T12:00:00.123Z", "host": "mx1",
     "kind": "vrrp_transition", "state": "MASTER", "instance": "VI_MAIL",
     "priority": "150"}

writes one syslog line (ident "mailha", facility daemon:
"vrrp_transition id=... state=MASTER instance=VI_MAIL priority=150") and,
when webhook_urls is set, one file in the spool directory (written by
rename, so the deliverer never reads half an event). That is all: emit
touches no network and raises nothing. A spool it cannot write (a full
disk) costs one stderr line and the webhook; the transition goes on.

The deliverer (`mailha-node events deliver`, a systemd service on the
relays; the mailha CLI starts `deliver --until-empty` detached) scans the
spool oldest first and POSTs each event's bytes to every URL it has not
reached yet: timeout seconds per attempt, a 2xx is delivered. A failed URL
is tried again after backoff_initial_seconds, doubling up to
backoff_max_seconds, each delay with jitter (between half and all of it).
A 4xx other than 408 and 429 will not change by retrying: that URL is given
up at once. An event is dropped (one syslog line) when every URL took it or
was given up, after max_attempts attempts at a URL, or once it is older
than max_age_seconds. The per-URL state (attempts, when next, last error)
is <event>.state beside the event, written by rename: a restarted
deliverer resumes where it stopped. One deliverer at a time works a spool
(flock on <spool>/.lock).

With webhook_secret_file, each POST carries
"X-Mailha-Signature: sha256=<hex HMAC-SHA256 of the body>", the file's
content (stripped of surrounding whitespace) as the key.

`mailha-node events receive` is the lab's receiver: it stores each POSTed
event as <output>/<id>.json and answers 204 (a redelivery overwrites its
own file: delivery is at least once, the id makes it once).

Settings: /etc/mailha/events.conf (mailha_node role), key=value:
  webhook_urls=URL,URL        http:// or https://; empty = syslog only, no spool
  spool_directory=DIR         /var/spool/mailha/events
  max_attempts=N              per URL (20)
  max_age_seconds=S           an event older than this is dropped (86400)
  timeout=S                   each POST's connect and read timeout (5)
  backoff_initial_seconds=S   the first retry's delay (5)
  backoff_max_seconds=S       the longest delay (600)
  webhook_secret_file=PATH    the HMAC key; empty = unsigned

Commands (exit 0; 1 the spool or the listener cannot be used; 2 usage or
bad settings, one line on stderr):
  mailha-node events deliver [--once | --until-empty] [--config FILE]
  mailha-node events receive --listen ADDR:PORT --output DIR
      [--secret-file FILE] [--max-body BYTES]
  mailha-node events emit KIND [KEY=VALUE ...] [--config FILE]
"""

import contextlib
import datetime
import errno
import fcntl
import hashlib
import hmac
import http.client
import http.server
import json
import os
import random
import re
import socket
import sys
import syslog
import time
import urllib.parse
import uuid

from mailha.node import config, files

CONFIG_FILE = "/etc/mailha/events.conf"
SPOOL_DIRECTORY = "/var/spool/mailha/events"
KINDS = ("vrrp_transition", "health", "split_brain", "switch", "failback", "drill", "preflight")
SIGNATURE_HEADER = "X-Mailha-Signature"
LOCK_NAME = ".lock"
EVENT_SUFFIX = ".json"
STATE_SUFFIX = ".state"
# The deliverer looks at the spool at least this often while it waits for
# the next retry: a new event never waits longer for its first attempt.
SCAN_INTERVAL = 1.0
# The receiver's bound on a body: an event is a few hundred bytes.
MAX_BODY = 65536
# The receiver gives a connection this long for its request and body.
RECEIVE_TIMEOUT = 10.0
EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
# A 4xx a later attempt may turn into a 2xx: the rest are given up at once.
RETRYABLE_CLIENT_ERRORS = (408, 429)

DEFAULTS = {
    "webhook_urls": [],
    "spool_directory": SPOOL_DIRECTORY,
    "max_attempts": 20,
    "max_age_seconds": 86400.0,
    "timeout": 5.0,
    "backoff_initial_seconds": 5.0,
    "backoff_max_seconds": 600.0,
    "webhook_secret_file": "",
}


def parse_webhook_urls(text):
    """Comma-separated http:// or https:// URLs with a host; "" is none."""
    urls = [part.strip() for part in text.split(",") if part.strip()]
    for url in urls:
        try:
            parts = urllib.parse.urlsplit(url)
            parts.port  # noqa: B018 - raises ValueError for a bad port
        except ValueError:
            parts = None
        usable = parts is not None and parts.scheme in ("http", "https") and parts.hostname
        if not usable or any(c.isspace() for c in url):
            raise ValueError(f"not an http:// or https:// URL with a host: {url!r}")
    return urls


def _parse_directory(text):
    if not text.startswith("/"):
        raise ValueError(f"must be an absolute directory: {text!r}")
    return text.rstrip("/") or "/"


def _parse_optional_path(text):
    if text and not text.startswith("/"):
        raise ValueError(f"must be an absolute path or empty: {text!r}")
    return text


PARSERS = {
    "webhook_urls": parse_webhook_urls,
    "spool_directory": _parse_directory,
    "max_attempts": config.parse_positive_int,
    "max_age_seconds": config.parse_positive_float,
    "timeout": config.parse_positive_float,
    "backoff_initial_seconds": config.parse_positive_float,
    "backoff_max_seconds": config.parse_positive_float,
    "webhook_secret_file": _parse_optional_path,
}


def load_config(path=None):
    """The settings of path (default CONFIG_FILE; a missing file: syslog
    only); UsageError names file:line."""
    return config.load(path or CONFIG_FILE, DEFAULTS, PARSERS)


# -- emit -------------------------------------------------------------------


def now_rfc3339(now=None):
    now = now or datetime.datetime.now(datetime.UTC)
    return now.astimezone(datetime.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def build_event(kind, fields, now=None, host=None):
    event = {"id": str(uuid.uuid4()), "time": now_rfc3339(now), "host": host or socket.gethostname(), "kind": kind}
    # The envelope's keys are the event's own: a field cannot replace them.
    event.update({key: value for key, value in fields.items() if key not in event})
    return event


def _syslog_value(value):
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    if not text or any(c.isspace() or c in '"=' for c in text):
        return json.dumps(text)
    return text


def syslog_line(event):
    """ "KIND id=... key=value ...": values with spaces, quotes or "=" are JSON strings."""
    pairs = [f"{key}={_syslog_value(value)}" for key, value in event.items() if key not in ("kind", "time", "host")]
    return " ".join([event["kind"], *pairs])


def spool_name(event_id, now_ns=None):
    """<nanoseconds since the epoch, 20 digits>-<id>.json: names sort oldest first."""
    return f"{now_ns if now_ns is not None else time.time_ns():020d}-{event_id}{EVENT_SUFFIX}"


def write_syslog(line, priority=syslog.LOG_NOTICE):
    syslog.openlog("mailha", syslog.LOG_PID, syslog.LOG_DAEMON)
    syslog.syslog(priority, line)


def emit(kind, settings=None, **fields):
    """Log one event to syslog and spool it for the webhooks; returns the
    event (None when it could not even be built). Never raises, never
    touches the network: see the header."""
    try:
        event = build_event(kind, fields)
        body = json.dumps(event, default=str, sort_keys=False).encode("utf-8")
        event = json.loads(body)
    except Exception as err:  # an event must never stop its caller
        _complain(f"cannot build the {kind} event: {err}")
        return None
    try:
        write_syslog(syslog_line(event))
    except Exception as err:
        _complain(f"cannot log the {kind} event to syslog: {err}")
    try:
        settings = load_config() if settings is None else settings
        if settings["webhook_urls"]:
            path = os.path.join(settings["spool_directory"], spool_name(event["id"]))
            files.replace_file(path, body, mode=0o640)
    except Exception as err:  # a full disk, an unreadable events.conf
        _complain(f"event {event['id']} ({kind}) not spooled for the webhooks: {err}")
    return event


def _complain(text):
    with contextlib.suppress(Exception):
        sys.stderr.write(f"mailha events: {text}\n")


# -- deliver ----------------------------------------------------------------


class DeliveryError(Exception):
    """One attempt failed; permanent when retrying cannot help (a 4xx)."""

    def __init__(self, text, permanent=False):
        super().__init__(text)
        self.permanent = permanent


def sign(secret, body):
    """The signature header's value for body."""
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


def post(url, body, headers, timeout):
    """POST body to url; returns the status, raises DeliveryError unless 2xx.
    No redirect is followed: the receiver's address is configuration."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme == "https":
        connection = http.client.HTTPSConnection(parts.hostname, parts.port or 443, timeout=timeout)
    else:
        connection = http.client.HTTPConnection(parts.hostname, parts.port or 80, timeout=timeout)
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    try:
        connection.request("POST", target, body=body, headers=headers)
        response = connection.getresponse()
        response.read(MAX_BODY)
    except (OSError, http.client.HTTPException) as err:
        raise DeliveryError(f"{type(err).__name__}: {err}") from err
    finally:
        connection.close()
    if 200 <= response.status < 300:
        return response.status
    permanent = 400 <= response.status < 500 and response.status not in RETRYABLE_CLIENT_ERRORS
    raise DeliveryError(f"HTTP {response.status} {response.reason}", permanent=permanent)


def read_secret(path):
    """The HMAC key of webhook_secret_file, None without one. Raises OSError."""
    if not path:
        return None
    with open(path, "rb") as handle:
        secret = handle.read().strip()
    if not secret:
        raise OSError(errno.EINVAL, "the webhook secret file is empty", path)
    return secret


class Deliverer:
    """Works one spool: pass() is one scan, run() scans until told otherwise.
    clock (epoch seconds), sleep, jitter (0..1) and post are injectable."""

    def __init__(self, settings, post=post, clock=time.time, sleep=time.sleep, jitter=random.random, log=None):
        self.settings = settings
        self.spool = settings["spool_directory"]
        self.post, self.clock, self.sleep, self.jitter = post, clock, sleep, jitter
        self.log = log or (lambda text, priority=syslog.LOG_WARNING: write_syslog(text, priority))
        self.secret = read_secret(settings["webhook_secret_file"])

    # The spool: event files, oldest first; a temporary file starts with ".".
    def events(self):
        try:
            names = os.listdir(self.spool)
        except FileNotFoundError:
            return []
        return sorted(n for n in names if n.endswith(EVENT_SUFFIX) and not n.startswith("."))

    def backoff(self, attempts):
        """The delay after the attempts-th failure at a URL: doubling from
        backoff_initial_seconds up to backoff_max_seconds, with jitter."""
        initial, cap = self.settings["backoff_initial_seconds"], self.settings["backoff_max_seconds"]
        delay = min(cap, initial * 2 ** min(attempts - 1, 32))
        return delay / 2 + delay / 2 * self.jitter()

    def spooled_at(self, name):
        """Epoch seconds the event was spooled (its name), else its file's mtime."""
        stamp = name.split("-", 1)[0]
        if stamp.isdigit():
            return int(stamp) / 1e9
        try:
            return os.stat(os.path.join(self.spool, name)).st_mtime
        except OSError:
            return self.clock()

    def read_state(self, path):
        try:
            with open(path, encoding="utf-8") as handle:
                state = json.load(handle)
        except (OSError, ValueError):
            return {}
        return state if isinstance(state, dict) else {}

    def remove(self, name):
        for path in (name, name[: -len(EVENT_SUFFIX)] + STATE_SUFFIX):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(os.path.join(self.spool, path))

    def deliver_one(self, name, now):
        """Attempt every due URL of one event; returns when its next attempt
        is due (epoch seconds), or None when it is done with (delivered,
        given up or dropped, and removed)."""
        path = os.path.join(self.spool, name)
        state_path = path[: -len(EVENT_SUFFIX)] + STATE_SUFFIX
        try:
            with open(path, "rb") as handle:
                body = handle.read()
            event = json.loads(body)
            event_id, kind = event["id"], event["kind"]
        except FileNotFoundError:
            return None
        except (OSError, ValueError, TypeError, KeyError) as err:
            self.log(f"events: dropped {name}: not an event ({err})")
            self.remove(name)
            return None
        state = self.read_state(state_path)
        urls = {url: state.get(url) or {"attempts": 0, "next": 0.0} for url in self.settings["webhook_urls"]}
        what = f"event {event_id} ({kind})"
        if now - self.spooled_at(name) > self.settings["max_age_seconds"]:
            pending = [url for url, s in urls.items() if not s.get("done")]
            self.log(
                f"events: dropped {what}: older than max_age_seconds {self.settings['max_age_seconds']:g}, "
                f"not delivered to {', '.join(pending) or 'any URL'}"
            )
            self.remove(name)
            return None
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "mailha-events",
            "X-Mailha-Event": str(kind),
            "X-Mailha-Event-Id": str(event_id),
            "Connection": "close",
        }
        if self.secret is not None:
            headers[SIGNATURE_HEADER] = sign(self.secret, body)
        changed = False
        for url, url_state in urls.items():
            if url_state.get("done") or url_state["next"] > now:
                continue
            changed = True
            url_state["attempts"] += 1
            try:
                self.post(url, body, headers, self.settings["timeout"])
            except DeliveryError as err:
                url_state["error"] = str(err)
                if err.permanent or url_state["attempts"] >= self.settings["max_attempts"]:
                    url_state["done"] = "given up"
                    self.log(f"events: gave up {what} for {url} after {url_state['attempts']} attempt(s): {err}")
                else:
                    url_state["next"] = now + self.backoff(url_state["attempts"])
            else:
                url_state["done"] = "delivered"
            # The next pass starts from the clock, not from when this one began.
            now = self.clock()
        if all(s.get("done") for s in urls.values()):
            self.remove(name)
            return None
        if changed:
            files.replace_file(state_path, json.dumps(urls, sort_keys=True), mode=0o640)
        return min(s["next"] for s in urls.values() if not s.get("done"))

    def deliver_pass(self):
        """One scan of the spool, oldest first; returns the earliest next
        attempt due (epoch seconds), None when the spool is empty."""
        due = None
        for name in self.events():
            next_at = self.deliver_one(name, self.clock())
            if next_at is not None:
                due = next_at if due is None else min(due, next_at)
        return due

    def wait(self, due):
        """Sleep until due, but at most SCAN_INTERVAL: a new event is not kept waiting."""
        self.sleep(max(0.0, min(SCAN_INTERVAL, due - self.clock())) if due is not None else SCAN_INTERVAL)

    @contextlib.contextmanager
    def locked(self, block):
        """Hold the spool's lock; yields False when another deliverer holds it
        and block is False."""
        os.makedirs(self.spool, mode=0o750, exist_ok=True)
        fd = os.open(os.path.join(self.spool, LOCK_NAME), os.O_RDWR | os.O_CREAT, 0o640)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | (0 if block else fcntl.LOCK_NB))
            except BlockingIOError:
                yield False
                return
            yield True
        finally:
            os.close(fd)

    def run_forever(self, passes=None):
        """The service: wait for the lock, then deliver and wait, forever
        (passes bounds it for tests)."""
        with self.locked(block=True):
            count = 0
            while passes is None or count < passes:
                self.wait(self.deliver_pass())
                count += 1

    def run_until_empty(self):
        """Deliver until the spool is empty (every event delivered, given up
        or dropped); at once when another deliverer works the spool. A spool
        that filled again just after the lock was let go is taken up again:
        its writer's own deliverer may have found the lock still held."""
        while True:
            with self.locked(block=False) as mine:
                if not mine:
                    return
                while (due := self.deliver_pass()) is not None:
                    self.wait(due)
            if not self.events():
                return

    def run_once(self):
        """One pass (cron, tests); nothing when another deliverer works the spool."""
        with self.locked(block=False) as mine:
            if mine:
                self.deliver_pass()


# -- receive (the lab's receiver) -------------------------------------------

EVENT_ID = re.compile(r"[0-9a-fA-F-]{1,64}")


class ReceiverServer(http.server.ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False

    def __init__(self, address, output, secret=None, max_body=MAX_BODY):
        self.output, self.secret, self.max_body = output, secret, max_body
        host, port = address
        if ":" in host:
            self.address_family = socket.AF_INET6
        super().__init__((host, port), ReceiverHandler)


class ReceiverHandler(http.server.BaseHTTPRequestHandler):
    server_version = "mailha-events-receiver"
    protocol_version = "HTTP/1.0"
    timeout = RECEIVE_TIMEOUT

    def _answer(self, status, text=""):
        payload = text.encode("utf-8")
        self.send_response(status)
        self.send_header("Connection", "close")
        if payload:
            self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if payload:
            self.wfile.write(payload)

    def do_POST(self):  # the name http.server calls
        server = self.server
        try:
            length = int(self.headers.get("Content-Length", ""))
        except ValueError:
            self._answer(411, "a Content-Length is required\n")
            return
        if not 0 < length <= server.max_body:
            self._answer(413, f"the body must be 1 to {server.max_body} bytes\n")
            return
        body = self.rfile.read(length)
        if server.secret is not None:
            given = self.headers.get(SIGNATURE_HEADER, "")
            if not hmac.compare_digest(given, sign(server.secret, body)):
                self._answer(401, "bad or missing signature\n")
                return
        try:
            event = json.loads(body)
            event_id = event["id"]
        except (ValueError, TypeError, KeyError):
            self._answer(400, "not a JSON event with an id\n")
            return
        if not isinstance(event_id, str) or not EVENT_ID.fullmatch(event_id):
            self._answer(400, "the event id must be a UUID\n")
            return
        try:
            files.replace_file(os.path.join(server.output, event_id + EVENT_SUFFIX), body, mode=0o644)
        except OSError as err:
            self._answer(503, f"cannot store the event: {err.strerror}\n")
            return
        self._answer(204)

    def do_GET(self):  # the name http.server calls
        self._answer(405, "POST events here\n")

    def log_message(self, format, *args):  # http.server's signature
        sys.stderr.write(f"mailha-events-receiver: {self.address_string()} {format % args}\n")


def parse_listen(text):
    """ADDR:PORT (an IPv6 address in brackets) as (host, port); ValueError otherwise."""
    host, sep, port = text.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"--listen must be ADDR:PORT, not {text!r}")
    return host, int(port)


# -- the command ------------------------------------------------------------

USAGE = """usage: mailha-node events deliver [--once | --until-empty] [--config FILE]
       mailha-node events receive --listen ADDR:PORT --output DIR [--secret-file FILE] [--max-body BYTES]
       mailha-node events emit KIND [KEY=VALUE ...] [--config FILE]
"""


def _options(argv, flags, valued):
    """({option: value or True}, positional) of argv; ValueError for anything else."""
    options, positional = {}, []
    items = iter(argv)
    for item in items:
        if item in flags:
            options[item] = True
        elif item in valued:
            value = next(items, None)
            if value is None:
                raise ValueError(f"{item} needs a value")
            options[item] = value
        elif item.startswith("--"):
            raise ValueError(f"unknown option {item}")
        else:
            positional.append(item)
    return options, positional


def _fail(text, code=EXIT_USAGE):
    sys.stderr.write(f"mailha-node events: {text}\n")
    return code


def _deliver(argv):
    options, positional = _options(argv, ("--once", "--until-empty"), ("--config",))
    if positional or ("--once" in options and "--until-empty" in options):
        raise ValueError("deliver takes --once or --until-empty, and --config FILE")
    settings = load_config(options.get("--config"))
    if not settings["webhook_urls"]:
        # Nothing is spooled without URLs; the service may as well idle.
        sys.stderr.write("mailha-node events: no webhook_urls configured: nothing to deliver\n")
        if "--once" in options or "--until-empty" in options:
            return EXIT_OK
    try:
        deliverer = Deliverer(settings)
        if "--once" in options:
            deliverer.run_once()
        elif "--until-empty" in options:
            deliverer.run_until_empty()
        else:
            deliverer.run_forever()
    except OSError as err:
        return _fail(f"cannot work the spool {settings['spool_directory']}: {err}", EXIT_FAILED)
    return EXIT_OK


def _receive(argv):
    options, positional = _options(argv, (), ("--listen", "--output", "--secret-file", "--max-body"))
    if positional or "--listen" not in options or "--output" not in options:
        raise ValueError("receive needs --listen ADDR:PORT and --output DIR")
    address = parse_listen(options["--listen"])
    max_body = config.parse_positive_int(options.get("--max-body", str(MAX_BODY)))
    try:
        secret = read_secret(options.get("--secret-file", ""))
        os.makedirs(options["--output"], exist_ok=True)
        server = ReceiverServer(address, options["--output"], secret, max_body)
    except OSError as err:
        return _fail(f"cannot receive on {options['--listen']} into {options['--output']}: {err}", EXIT_FAILED)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return EXIT_OK


def _emit(argv):
    options, positional = _options(argv, (), ("--config",))
    if not positional or positional[0] not in KINDS:
        raise ValueError(f"emit needs a KIND, one of {', '.join(KINDS)}")
    fields = {}
    for item in positional[1:]:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"not KEY=VALUE: {item!r}")
        fields[key] = value
    settings = load_config(options.get("--config"))
    return EXIT_OK if emit(positional[0], settings=settings, **fields) is not None else EXIT_FAILED


def main(argv):
    """mailha-node events deliver|receive|emit ...; the header's exit codes."""
    commands = {"deliver": _deliver, "receive": _receive, "emit": _emit}
    if not argv or argv[0] not in commands:
        sys.stderr.write(USAGE)
        return EXIT_USAGE
    try:
        return commands[argv[0]](argv[1:])
    except (ValueError, config.UsageError) as err:
        return _fail(str(err))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
