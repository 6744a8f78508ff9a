"""mailha-node fip-assign / fip-check: the floating IP follows VRRP through
the Hetzner Cloud API.

On Hetzner a floating IP reaches the server the API assigns it to, whatever
keepalived adds to an interface. So the relay that holds the address (the
VRRP MASTER; one fact: mailha.node.addresses) also makes the API agree:

  fip-assign [STATE]   keepalived's notify_master and notify_master_rx_lower_pri
                       (or a vrrp.conf hook, which appends the state: anything
                       but "master" does nothing)
  fip-check            the same, from a timer: repairs an assignment that
                       drifted while this relay stayed MASTER
  fip-check --settle   the same, as fip-assign settles it (below): the health
                       agent asks for it (fip_recheck_file, a systemd path
                       unit) when a split brain it won ends

Both, under one lock (/run/mailha/fip-mover.lock): while this host holds
the address, read the floating IP; if it is on this server already, stop;
else assign it (POST .../actions/assign), poll the action until it ends,
and read the floating IP again to check. fip-assign and fip-check --settle
trust "on this server" only once no action runs on the floating IP
(GET .../actions?status=running): after a split brain the losing relay's
assign, asked before its demotion, may still be running and move the
floating IP away when it ends; they wait for it, read again and assign it
back. `locked`, `rate_limit_exceeded`
(waiting for RateLimit-Reset, capped), `conflict`, `maintenance`, server
errors, failed actions and timeouts are retried with exponential backoff
(jitter: half to all of each delay) within total_seconds; `unauthorized`,
`forbidden`, `token_readonly`, `not_found`, `invalid_input` and an endpoint
certificate that does not verify (`tls_untrusted`: against api_ca_file, or
the system's CAs) are not: one line says what to fix. The address is
looked at again before every attempt: a relay that stopped being MASTER
meanwhile leaves the floating IP alone. Every API call is one syslog line
(ident mailha-fip-assign or mailha-fip-check) with its outcome; the run
ends with one line.

The hcloud SDK (python3-hcloud 1.18 on Debian 12, or 2.x) is imported only
here, only when a run starts. Its own retries (up to 60 s per call in 2.x)
and its lack of a default timeout would break the bound, so its HTTP
session is replaced by one that sets each call's timeout (request_timeout,
never past the total bound) and answers every error status itself: the SDK
never sees one, so it never retries or sleeps.

The token: the first line of token_file, which must be a regular file owned
by root and readable by nobody else (0600 or 0400), else the run refuses
in one line. The settings file must be root's and writable by nobody else
(it names the endpoint the token is sent to). The token is never logged
(a line that would carry it has it replaced), never put in argv or an
environment: no child process is started.

Settings: /etc/mailha/fip-mover.conf, key=value:
  floating_ip_id=N            the floating IP (Terraform output) - required
  server_id=N                 this relay's server id - required
  address=IP                  the floating IP's address, as keepalived adds it - required
  api_endpoint=URL            default: the SDK's (the public API); https, or http to loopback only
  api_ca_file=PATH            PEM file of the CA(s) the endpoint's certificate is checked against
                              instead of the system's (absolute; a regular file holding at least
                              one certificate; default: "", the system's CAs)
  token_file=PATH             /etc/mailha/hcloud-token
  total_seconds=S             the whole run's bound, lock wait included (40)
  request_timeout=S           each call's connect and read timeout (10)
  backoff_initial_seconds=S   the first retry's delay (1)
  backoff_max_seconds=S       the longest delay, and the longest wait for a rate limit (8)
  poll_interval=S             between reads of a running action (1)
  lock_file=PATH              /run/mailha/fip-mover.lock

Exit codes: 0 the floating IP is on this server, or this host does not hold
the address (nothing to do); 1 gave up within the bound (a retryable error
lasted); 2 usage, bad settings, a refused token file or no SDK; 3 the API
refused for a reason no retry fixes (the line says which setting to fix).
"""

import argparse
import contextlib
import fcntl
import ipaddress
import os
import random
import ssl
import stat
import sys
import syslog
import time
import urllib.parse

from mailha.node import config

CONFIG_FILE = "/etc/mailha/fip-mover.conf"
# The API the SDK talks to when api_endpoint is "" (1.18 and 2.x alike).
DEFAULT_ENDPOINT = "https://api.hetzner.cloud/v1"
ROOT_UID = 0
EXIT_OK, EXIT_GAVE_UP, EXIT_USAGE, EXIT_REFUSED = 0, 1, 2, 3

DEFAULTS = {
    "floating_ip_id": 0,
    "server_id": 0,
    "address": "",
    "api_endpoint": "",
    "api_ca_file": "",
    "token_file": "/etc/mailha/hcloud-token",
    "total_seconds": 40.0,
    "request_timeout": 10.0,
    "backoff_initial_seconds": 1.0,
    "backoff_max_seconds": 8.0,
    "poll_interval": 1.0,
    "lock_file": "/run/mailha/fip-mover.lock",
}
REQUIRED = ("floating_ip_id", "server_id", "address")

# Codes no retry can fix, and what to do about each.
PERMANENT = {
    "unauthorized": "the token in {token_file} is wrong or revoked: write a valid read/write token of the project",
    "forbidden": "the token may not do this: use a read/write token of the project that owns floating IP {fip}",
    "token_readonly": "the token in {token_file} is read-only: write a read/write token",
    "not_found": "floating IP {fip} or server {server} is not in the token's project: check floating_ip_id and "
    "server_id in {config}",
    "invalid_input": "the API refused server {server}: check server_id in {config}",
    "tls_untrusted": "the certificate of {endpoint} does not verify against {cas}: set api_ca_file in {config} to "
    "the CA that signed it, or fix the endpoint's certificate",
    "json_error": "the API could not read the request: report a bug in mailha-node",
}


def _address(text):
    address = text.split("/", 1)[0].strip()
    ipaddress.ip_address(address)  # raises ValueError
    return address


def _endpoint(text):
    if not text:
        return ""
    url = urllib.parse.urlsplit(text)
    if url.scheme == "https" and url.hostname:
        return text.rstrip("/")
    if url.scheme == "http" and url.hostname in ("127.0.0.1", "::1", "localhost"):
        return text.rstrip("/")  # a local fake: the token never leaves the host
    raise ValueError(f"{text!r}: https://, or http:// to loopback only (the token must not travel in clear)")


def _ca_file(text):
    if not text:
        return ""
    if not os.path.isabs(text):
        raise ValueError(f"{text!r}: not an absolute path")
    if not os.path.exists(text):
        raise ValueError(f"{text!r}: no such file")
    if not os.path.isfile(text):
        raise ValueError(f"{text!r}: not a regular file")
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_verify_locations(cafile=text)
    except ssl.SSLError as err:
        raise ValueError(f"{text!r}: no PEM certificate in it ({err.reason or err})") from None
    except OSError as err:
        raise ValueError(f"{text!r}: {err.strerror or err}") from None
    return text


PARSERS = {
    "floating_ip_id": config.parse_positive_int,
    "server_id": config.parse_positive_int,
    "address": _address,
    "api_endpoint": _endpoint,
    "api_ca_file": _ca_file,
    "total_seconds": config.parse_positive_float,
    "request_timeout": config.parse_positive_float,
    "backoff_initial_seconds": config.parse_positive_float,
    "backoff_max_seconds": config.parse_positive_float,
    "poll_interval": config.parse_positive_float,
}


def _check_owned(path, owner_uid, what, forbidden_bits, fd=None):
    """Raise UsageError unless `path` is a regular file of `owner_uid`
    without `forbidden_bits` in its mode."""
    info = os.fstat(fd) if fd is not None else os.stat(path)
    mode = stat.S_IMODE(info.st_mode)
    if not stat.S_ISREG(info.st_mode):
        raise config.UsageError(f"refusing {what} {path}: not a regular file")
    if info.st_uid != owner_uid:
        raise config.UsageError(f"refusing {what} {path}: owned by uid {info.st_uid}, not {owner_uid}")
    if mode & forbidden_bits:
        raise config.UsageError(
            f"refusing {what} {path}: mode {mode:04o} lets others {'read' if forbidden_bits & 0o044 else 'change'} it;"
            f" chmod {0o777 & ~forbidden_bits & mode:04o} {path}"
        )


def load_config(path=CONFIG_FILE, owner_uid=None):
    """The settings; with `owner_uid`, the file must be that user's and
    writable by nobody else. Raises config.UsageError."""
    if owner_uid is not None and os.path.exists(path):
        _check_owned(path, owner_uid, "settings file", 0o022)
    settings = config.load(path, DEFAULTS, PARSERS)
    missing = [key for key in REQUIRED if not settings[key]]
    if missing:
        raise config.UsageError(f"{path}: {', '.join(missing)} not set")
    return settings


def read_token(path, owner_uid=ROOT_UID):
    """The token: the file's first line. The file must be regular, owned by
    `owner_uid` and readable by nobody else. Raises config.UsageError."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as err:
        raise config.UsageError(f"cannot read token file {path}: {err.strerror}") from None
    try:
        _check_owned(path, owner_uid, "token file", 0o077, fd=fd)
        data = os.read(fd, 4096)
    finally:
        os.close(fd)
    lines = data.decode("utf-8", "replace").splitlines()
    token = lines[0].strip() if lines else ""
    if not token or any(char.isspace() for char in token):
        raise config.UsageError(f"token file {path} holds no token on its first line")
    return token


# -- errors -----------------------------------------------------------------


class ApiError(Exception):
    """An error answer: code (the API's, or the HTTP status when the body
    is no API error), message, HTTP status, response headers."""

    def __init__(self, code, message, status=None, headers=None):
        super().__init__(f"{code}: {message}")
        self.code, self.message, self.status, self.headers = code, message, status, headers or {}

    def describe(self):
        status = f" (HTTP {self.status})" if self.status and self.status != self.code else ""
        return f"{self.code}{status}: {self.message}"


class TransportError(Exception):
    """No answer: a timeout or a connection that failed."""

    def describe(self):
        return str(self)


class ActionFailed(Exception):
    """The assign action ended in status "error"."""

    def describe(self):
        return str(self)


class OutOfTime(Exception):
    """The total bound is reached."""


def _certificate_failure(err):
    """Why the server's certificate did not verify, when that is what `err`
    (requests' or urllib3's SSLError, however deep the ssl error is wrapped)
    reports; else None (another TLS failure: a reset handshake is worth a
    retry, an untrusted certificate is not)."""
    pending, seen = [err], set()
    while pending:
        current = pending.pop()
        if not isinstance(current, BaseException) or id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, ssl.SSLCertVerificationError):
            return current.verify_message or current.reason or str(current)
        pending.extend((current.__cause__, current.__context__, getattr(current, "reason", None), *current.args))
    return "certificate verify failed" if "CERTIFICATE_VERIFY_FAILED" in str(err) else None


def _untrusted(err, url):
    """The permanent ApiError of a certificate that did not verify, or None."""
    reason = _certificate_failure(err)
    if reason is None:
        return None
    parts = urllib.parse.urlsplit(url or "")
    origin = f"{parts.scheme}://{parts.netloc}" if parts.netloc else "the API"
    return ApiError("tls_untrusted", f"{origin}: certificate verify failed: {reason}")


def _as_api_error(err):
    """An ApiError for the SDK's APIException or an untrusted certificate
    (used when the session could not be replaced), else None."""
    untrusted = _untrusted(err, getattr(getattr(err, "request", None), "url", None))
    if untrusted is not None:
        return untrusted
    if type(err).__name__ == "APIException" and hasattr(err, "code"):
        code = err.code
        return ApiError(code, getattr(err, "message", str(err)), code if isinstance(code, int) else None)
    return None


def is_permanent(err):
    if not isinstance(err, ApiError):
        return False
    if isinstance(err.code, int):
        return 400 <= err.code < 500 and err.code not in (408, 409, 423, 429)
    return err.code in PERMANENT


# -- the SDK ----------------------------------------------------------------


def _bounded_session(requests, timeout_for, ca_file=""):
    """A requests.Session whose every call has the timeout timeout_for()
    gives, (seconds, cut short by the total bound), checks the server's
    certificate against ca_file when set, and raises ApiError for an error
    answer or a certificate that does not verify (tls_untrusted),
    TransportError for no answer, OutOfTime when the bound cut the call
    short."""

    class BoundedSession(requests.Session):
        def request(self, method, url, *args, **kwargs):
            timeout, cut_short = timeout_for()
            kwargs["timeout"] = timeout
            if ca_file:
                # Per call: a session's verify loses to REQUESTS_CA_BUNDLE in the environment.
                kwargs["verify"] = ca_file
            try:
                response = super().request(method, url, *args, **kwargs)
            except requests.exceptions.RequestException as err:
                # No retry makes an untrusted certificate trusted: permanent.
                # Any other TLS failure (a handshake cut short) is transient.
                untrusted = _untrusted(err, url) if isinstance(err, requests.exceptions.SSLError) else None
                if untrusted is not None:
                    raise untrusted from None
                # urllib3 reports some read timeouts as a ConnectionError.
                if isinstance(err, requests.exceptions.Timeout) or "timed out" in str(err):
                    if cut_short:
                        raise OutOfTime() from None
                    raise TransportError(f"no answer within {timeout:.1f} s") from None
                raise TransportError(f"{type(err).__name__}: {err}") from None
            if response.ok:
                return response
            try:
                error = response.json()["error"]
                code, message = error["code"], error["message"]
            except (ValueError, KeyError, TypeError):
                code, message = response.status_code, response.reason
            raise ApiError(code, message, response.status_code, dict(response.headers))

    return BoundedSession()


def _install_session(client, session):
    """Put `session` under the SDK's calls; False for an SDK whose session
    is not where 1.18 (Client._requests_session) or 2.x (ClientBase._session)
    keep it."""
    base = getattr(client, "_client", None)
    if base is not None and hasattr(base, "_session"):
        base._session = session
        return True
    if hasattr(client, "_requests_session"):
        client._requests_session = session
        return True
    return False


class Sdk:
    """The five calls the mover makes, through the hcloud SDK."""

    def __init__(self, token, endpoint, timeout_for, poll_interval, ca_file=""):
        import hcloud
        import requests
        from hcloud.servers.domain import Server

        options = {"token": token, "poll_interval": poll_interval}
        if endpoint:
            options["api_endpoint"] = endpoint
        self.client = hcloud.Client(**options)
        self._server_type = Server
        self._floating_ip = None
        self.bounded = _install_session(self.client, _bounded_session(requests, timeout_for, ca_file))
        self.version = getattr(hcloud, "__version__", None) or getattr(
            getattr(hcloud, "_version", None), "__version__", "unknown"
        )

    def server_of(self, floating_ip_id):
        """The id of the server the floating IP is assigned to, or None."""
        self._floating_ip = self.client.floating_ips.get_by_id(floating_ip_id)
        server = self._floating_ip.server
        return server.id if server is not None else None

    def assign(self, floating_ip_id, server_id):
        """Start the assignment of the floating IP server_of read last;
        (action id, status)."""
        if self._floating_ip is None or self._floating_ip.id != floating_ip_id:
            self.server_of(floating_ip_id)
        action = self._floating_ip.assign(self._server_type(id=server_id))
        return action.id, action.status

    def running_actions(self, floating_ip_id):
        """The ids of the actions still running on the floating IP (one
        page: a floating IP has one running action at most, as the API
        locks it while one runs)."""
        if self._floating_ip is None or self._floating_ip.id != floating_ip_id:
            self.server_of(floating_ip_id)
        page = self._floating_ip.get_actions_list(status=["running"], per_page=25)
        return [action.id for action in page[0]]

    def action(self, action_id):
        """(status, error dict or None) of an action."""
        action = self.client.actions.get_by_id(action_id)
        return action.status, action.error


# -- the run ----------------------------------------------------------------


class Log:
    """One syslog line per call (and on stderr when it is a terminal), with
    the token replaced wherever it would appear."""

    def __init__(self, ident, stream=None):
        self.ident, self.stream, self.secrets = ident, stream, []
        syslog.openlog(ident, 0, syslog.LOG_DAEMON)

    def __call__(self, text, priority=syslog.LOG_INFO):
        for secret in self.secrets:
            text = text.replace(secret, "[token]")
        syslog.syslog(priority, text)
        if self.stream is not None:
            self.stream.write(f"{self.ident}: {text}\n")


class BoundedRun:
    """API calls within one bound: each call's timeout, the delay before a
    retry, one log line per call. settings: request_timeout,
    backoff_initial_seconds, backoff_max_seconds; `deadline` (a clock()
    value) is the caller's to set. Shared with the controller's DNS setter
    (mailha.hcloud_dns)."""

    def __init__(self, settings, log, sleep=time.sleep, clock=time.monotonic, now=time.time):
        self.settings, self.log = settings, log
        self.sleep, self.clock, self.now = sleep, clock, now
        self.deadline = None
        self.calls = 0
        self.random = random.random
        self.waiting_for = None

    # timing

    def remaining(self):
        return self.deadline - self.clock()

    def timeout_for(self):
        """(the next call's timeout, whether the total bound cut it short)."""
        left = self.remaining()
        if left <= 0:
            raise OutOfTime()
        return min(self.settings["request_timeout"], left), left < self.settings["request_timeout"]

    def backoff(self, attempt):
        delay = min(self.settings["backoff_max_seconds"], self.settings["backoff_initial_seconds"] * 2**attempt)
        return delay * (0.5 + 0.5 * self.random())

    def retry_delay(self, err, attempt):
        """The wait before the next attempt: the backoff, or for a rate limit
        the time to RateLimit-Reset (when the bucket is full again; it refills
        one request a second, so the wait is capped at backoff_max_seconds)."""
        delay = self.backoff(attempt)
        if isinstance(err, ApiError) and err.code == "rate_limit_exceeded":
            try:
                until_reset = float(err.headers.get("RateLimit-Reset", "")) - self.now()
            except ValueError:
                until_reset = 0.0
            delay = min(max(delay, until_reset), self.settings["backoff_max_seconds"])
        return delay

    def wait_to_retry(self, err, attempt):
        """Sleep before the next attempt, with one line; False (no sleep)
        when the bound leaves no room for it."""
        delay = self.retry_delay(err, attempt)
        if self.remaining() <= delay:
            return False
        self.log(f"retrying in {delay:.1f} s ({err.describe()})")
        self.sleep(delay)
        return True

    # actions

    def wait_for(self, sdk, action_id, status="running"):
        """Poll a running action (sdk.action) until it ends: (status, error
        dict or None). waiting_for names it meanwhile, for a give-up line."""
        error = None
        self.waiting_for = f"action {action_id} still running"
        while status == "running":
            self.sleep(min(self.settings["poll_interval"], max(0.0, self.remaining())))
            status, error = self.call(f"GET actions/{action_id}", lambda: sdk.action(action_id), lambda r: r[0])
        self.waiting_for = None
        return status, error

    def complete(self, sdk, action_id, status):
        """Wait for an action this run started; ActionFailed unless it succeeded."""
        status, error = self.wait_for(sdk, action_id, status)
        if status != "success":
            detail = f"{error.get('code')}: {error.get('message')}" if error else "no detail"
            raise ActionFailed(f"action {action_id} ended in {status} ({detail})")

    # one call, one line

    def call(self, label, function, describe, quiet=lambda result: False):
        started = self.clock()
        self.calls += 1
        try:
            result = function()
        except OutOfTime:
            raise
        except (ApiError, TransportError) as err:
            self.log(f"{label}: {err.describe()} [{self.clock() - started:.2f} s]", syslog.LOG_WARNING)
            raise
        except Exception as err:
            api_error = _as_api_error(err)
            if api_error is None:
                self.log(f"{label}: {type(err).__name__}: {err} [{self.clock() - started:.2f} s]", syslog.LOG_ERR)
                raise TransportError(f"{type(err).__name__}: {err}") from None
            self.log(f"{label}: {api_error.describe()} [{self.clock() - started:.2f} s]", syslog.LOG_WARNING)
            raise api_error from None
        priority = syslog.LOG_DEBUG if quiet(result) else syslog.LOG_INFO
        self.log(f"{label}: {describe(result)} [{self.clock() - started:.2f} s]", priority)
        return result


class Mover(BoundedRun):
    """One run: make the API put the floating IP on this server while this
    host holds its address, within settings["total_seconds"]."""

    def __init__(self, settings, sdk_factory, holds, log, sleep=time.sleep, clock=time.monotonic, now=time.time):
        super().__init__(settings, log, sleep=sleep, clock=clock, now=now)
        self.holds = holds
        self.fip, self.server = settings["floating_ip_id"], settings["server_id"]
        self.routine = False  # fip-check: a run that finds nothing to do logs at debug priority
        # fip-assign and fip-check --settle: "on this server" counts only
        # once no action runs on the floating IP (settled_here).
        self.settle = False
        self._sdk_factory = sdk_factory

    def where(self, sdk):
        def describe(server):
            if server == self.server:
                return "on this server"
            return f"on server {server}, not this one ({self.server})" if server else "unassigned"

        # A timer's check that finds everything in place is routine: debug.
        routine = (lambda server: server == self.server and self.calls == 1) if self.routine else (lambda server: False)
        return self.call(f"GET floating_ips/{self.fip}", lambda: sdk.server_of(self.fip), describe, routine)

    def settled_here(self, sdk):
        """True when the floating IP reads on this server and no action on it
        runs; after a running one (the peer's assign, asked before a split
        brain demoted it) ends, the floating IP is read again."""
        running = self.call(
            f"GET floating_ips/{self.fip}/actions?status=running",
            lambda: sdk.running_actions(self.fip),
            lambda ids: f"running: {', '.join(f'action {i}' for i in ids)}" if ids else "none running",
        )
        if not running:
            return True
        for action_id in running:
            self.wait_for(sdk, action_id)  # its outcome is the floating IP's next reading
        return self.where(sdk) == self.server

    def attempt(self, sdk):
        """One try: True when the floating IP is on this server at its end."""
        self.waiting_for = None
        if self.where(sdk) == self.server and (not self.settle or self.settled_here(sdk)):
            return True
        action_id, status = self.call(
            f"POST floating_ips/{self.fip}/actions/assign server={self.server}",
            lambda: sdk.assign(self.fip, self.server),
            lambda result: f"action {result[0]} {result[1]}",
        )
        self.complete(sdk, action_id, status)
        return self.where(sdk) == self.server

    def run(self, token):
        """Exit code of one run (the lock is the caller's)."""
        started = self.clock()
        if self.deadline is None:
            self.deadline = started + self.settings["total_seconds"]
        address = self.settings["address"]
        try:
            # ca_file only when set: a factory of an SDK without it keeps working.
            extra = {"ca_file": self.settings["api_ca_file"]} if self.settings.get("api_ca_file") else {}
            sdk = self._sdk_factory(
                token, self.settings["api_endpoint"], self.timeout_for, self.settings["poll_interval"], **extra
            )
        except ImportError as err:
            self.log(
                f"cannot move floating IP {self.fip}: the hcloud SDK is missing ({err}); install python3-hcloud",
                syslog.LOG_ERR,
            )
            return EXIT_USAGE
        if not getattr(sdk, "bounded", True):
            ignored = "; api_ca_file is not applied" if self.settings.get("api_ca_file") else ""
            self.log(
                f"hcloud SDK {getattr(sdk, 'version', '?')}: its HTTP session was not found; its own timeouts and"
                f" retries apply, so total_seconds may be overrun{ignored}",
                syslog.LOG_WARNING,
            )
        attempt = 0
        last = None
        while True:
            if not self.holds():
                self.log(f"this host does not hold {address}: floating IP {self.fip} left alone")
                return EXIT_OK
            try:
                if self.attempt(sdk):
                    calls = f"{self.calls} call{'s' if self.calls != 1 else ''}"
                    self.log(
                        f"floating IP {self.fip} ({address}) is on this server {self.server}"
                        f" [{calls}, {self.clock() - started:.1f} s]",
                        syslog.LOG_DEBUG if self.routine and self.calls == 1 else syslog.LOG_INFO,
                    )
                    return EXIT_OK
                last = ActionFailed("the floating IP was elsewhere after its assign succeeded")
            except OutOfTime:
                break
            except (ApiError, TransportError, ActionFailed) as err:
                if is_permanent(err):
                    hint = PERMANENT.get(err.code, "check api_endpoint in {config}").format(
                        token_file=self.settings["token_file"],
                        fip=self.fip,
                        server=self.server,
                        config=self.settings.get("_path", CONFIG_FILE),
                        endpoint=self.settings["api_endpoint"] or DEFAULT_ENDPOINT,
                        cas=self.settings.get("api_ca_file") or "the system's CAs",
                    )
                    self.log(f"refused, not retried: {err.describe()}; {hint}", syslog.LOG_ERR)
                    return EXIT_REFUSED
                last = err
            if not self.wait_to_retry(last, attempt):
                break
            attempt += 1
        reason = last.describe() if last is not None else "none"
        if self.waiting_for:
            reason = f"{self.waiting_for} at the bound (before it: {reason})" if last else self.waiting_for
        self.log(
            f"gave up after {self.clock() - started:.1f} s (total_seconds={self.settings['total_seconds']:g}) and"
            f" {self.calls} calls: floating IP {self.fip} is not on this server {self.server}; last error: {reason}",
            syslog.LOG_ERR,
        )
        return EXIT_GAVE_UP


@contextlib.contextmanager
def _locked(path, mover):
    """Hold the mover's lock; waits within the bound. Yields False when the
    bound passed first."""
    directory = os.path.dirname(path)
    if directory:
        os.makedirs(directory, mode=0o755, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if mover.remaining() <= 0:
                    yield False
                    return
                mover.sleep(min(0.1, mover.remaining()))
        yield True
    finally:
        os.close(fd)


def execute(
    command,
    options,
    owner_uid=ROOT_UID,
    sdk_factory=Sdk,
    holds=None,
    log=None,
    sleep=time.sleep,
    clock=time.monotonic,
    now=time.time,
):
    """Run fip-assign or fip-check with parsed options; the exit code."""
    log = log or Log(f"mailha-{command}", sys.stderr if sys.stderr.isatty() else None)
    if command == "fip-assign" and options.state and options.state.lower() != "master":
        return EXIT_OK  # a vrrp.conf hook on backup, fault or stop: nothing to assign
    try:
        settings = load_config(options.config, owner_uid)
        settings["_path"] = options.config
        token = read_token(settings["token_file"], owner_uid)
    except config.UsageError as err:
        log(f"not moving the floating IP: {err}", syslog.LOG_ERR)
        if isinstance(log, Log) and log.stream is None:
            sys.stderr.write(f"mailha-node {command}: {err}\n")  # as every node command: usage on stderr
        return EXIT_USAGE
    if isinstance(log, Log):
        log.secrets.append(token)
    if holds is None:
        from mailha.node import addresses

        def holds():
            return addresses.holds_address(settings["address"])

    mover = Mover(settings, sdk_factory, holds, log, sleep=sleep, clock=clock, now=now)
    mover.settle = command == "fip-assign" or bool(getattr(options, "settle", False))
    mover.routine = command == "fip-check" and not mover.settle
    mover.deadline = clock() + settings["total_seconds"]
    with _locked(settings["lock_file"], mover) as locked:
        if not locked:
            log(
                f"gave up: another run held {settings['lock_file']} for {settings['total_seconds']:g} s", syslog.LOG_ERR
            )
            return EXIT_GAVE_UP
        return mover.run(token)


def _parser(command):
    parser = argparse.ArgumentParser(prog=f"mailha-node {command}", description=__doc__.split("\n\n")[0])
    if command == "fip-assign":
        parser.add_argument("state", nargs="?", help="the VRRP state a vrrp.conf hook appends; only master acts")
    else:
        parser.add_argument(
            "--settle",
            action="store_true",
            help="as fip-assign: on this server counts only once no action runs on the floating IP",
        )
    parser.add_argument("--config", default=CONFIG_FILE, help="settings file (default: %(default)s)")
    return parser


def _main(command, argv):
    try:
        options = _parser(command).parse_args(argv)
    except SystemExit as exit_:
        return EXIT_USAGE if exit_.code else EXIT_OK
    if command == "fip-check":
        options.state = None
    return execute(command, options)


def assign_main(argv):
    """mailha-node fip-assign [STATE] [--config FILE]"""
    return _main("fip-assign", argv)


def check_main(argv):
    """mailha-node fip-check [--settle] [--config FILE]"""
    return _main("fip-check", argv)
