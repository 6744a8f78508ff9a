"""mailha-postfix-role master|backup|fault|stop|hold|refresh|reconcile

Keeps Postfix's role in step with VRRP (keepalived's notify hook calls it on
every transition). On the node holding the floating IP the role transport
file holds the destination groups' routes (a copy of the static
mailha_destinations, the provider domains to their mx_<group> transports),
so mail is delivered directly; on a standby (BACKUP, FAULT)
every message is handed over to the active node at the floating IP. "stop"
(keepalived shutting down, so the floating IP is released) is a standby too.
"hold" (a planned switch to this node is starting) keeps new mail queued
instead of handing it over: a hand-over cut by the floating IP moving would
leave the mail on both nodes. keepalived's MASTER transition ends the hold.
A standby's or held route is the "*" entry alone: Postfix tries "*" only
after every domain key, so a group's domain beside it would be sent
directly, from an address the standby does not hold. "refresh" (the role,
after the destination table changed) re-copies the table if this node is
the active one and leaves any other route alone. "reconcile" (a failed
switch's rescue) sets the route the floating IP calls for and ends a hold.

keepalived runs notify scripts without waiting for each other, so on fast
flaps they can start out of order. The route is therefore taken from
whether this node holds the floating IP when the script runs under the
lock, not from the state named: the last run always matches the address.
"hold" is the one role that does not follow the address; it never
flushes, because "postqueue -f" delivers mail in defer_transports too and
would release what the hold keeps. Every run cancels the delayed flush a
previous run scheduled (the unit mailha-postfix-flush), so a flush meant
for an old role never runs in a new one.

Exit codes: 0 done, 1 the file could not be written (or the lock not taken,
or Postfix not reloaded), 2 usage error.

Settings: /etc/mailha/postfix-role.conf (postfix role), key=value:
floating_ip, transport_file, destinations_file, flush_delay (seconds: the
hand-over timeout plus 10), lock_file, lock_timeout, flush_unit.
"""

import fcntl
import ipaddress
import subprocess
import sys
import syslog
import time

from mailha.node import addresses, config, files

CONFIG_FILE = "/etc/mailha/postfix-role.conf"
ROLES = ("master", "backup", "fault", "stop", "hold", "refresh", "reconcile")
USAGE = "usage: mailha-postfix-role master|backup|fault|stop|hold|refresh|reconcile"

EXIT_DONE = 0
EXIT_FAILED = 1
EXIT_USAGE = 2

# Postfix processes that open a table file modified within the last second
# wait before reading it: a reload right after the write stalled every new
# SMTP session for 2 to 3 s on the lab (long enough to fail the health check
# and put a just-promoted relay in FAULT). The file is replaced whole by the
# rename, so it is never half written; date it a few seconds back.
BACKDATE_SECONDS = 5

DEFAULTS = {
    "floating_ip": "",
    "transport_file": "/etc/postfix/mailha_role_transport",
    "destinations_file": "/etc/postfix/mailha_destinations",
    # The hand-over timeout (postfix_handover_timeout) plus 10 s.
    "flush_delay": 30,
    "lock_file": "/run/mailha-postfix-role.lock",
    "lock_timeout": 60.0,
    "flush_unit": "mailha-postfix-flush",
}


def _parse_ipv4(text):
    return str(ipaddress.IPv4Address(text.strip()))


PARSERS = {
    "floating_ip": _parse_ipv4,
    "flush_delay": config.parse_positive_int,
    "lock_timeout": config.parse_positive_float,
}


def load_config(path=CONFIG_FILE):
    settings = config.load(path, DEFAULTS, PARSERS)
    if not settings["floating_ip"]:
        raise config.UsageError(f"{path}: floating_ip is not set")
    return settings


# -- the route file: its content and how it reads back --------------------


def transport_content(state, floating_ip):
    """The route file's content for a backup or a hold ("* ..." alone); None
    for master, whose file is a copy of the destinations table."""
    if state == "backup":
        return f"* relay:[{floating_ip}]:25\n"
    if state == "hold":
        return f"* hold:[{floating_ip}]:25\n"
    return None


def route_of(text):
    """How a route file routes the relay's mail: "hold", "hand-over" or "direct"."""
    entries = [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    first = entries[0] if entries else ""
    if first.startswith("* hold:"):
        return "hold"
    if first.startswith("* relay:"):
        return "hand-over"
    return "direct"


def read_route(path):
    """route_of the file at path, None when it cannot be read."""
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            return route_of(handle.read())
    except OSError:
        return None


def is_standby_route(text):
    """A route of the "*" entry alone (backup or hold): not the active relay's."""
    return any(line.startswith("*") for line in text.splitlines())


def count_routes(text):
    """Domains in a destinations table: lines that are neither comments nor blank."""
    return sum(1 for line in text.splitlines() if line[:1] and line[:1] != "#" and not line[:1].isspace())


def choose_route(named, holds_ip, floating_ip):
    """(state the route is written for, the note when it differs from the
    state named, or None). "hold" does not follow the address; every other
    role does: master when this node holds the floating IP, else backup."""
    if named == "hold":
        return "hold", None
    state = "master" if holds_ip else "backup"
    expected = "backup"
    if named in ("master", "refresh"):
        expected = "master"
    if named == "reconcile":
        expected = state
    if state != expected:
        where = "here" if state == "master" else "not here"
        return state, f"{named}: the floating IP {floating_ip} is {where}, routing as {state}"
    return state, None


# -- the command ----------------------------------------------------------


class Node:
    """What the command does to the host; tests replace it with a fake."""

    def __init__(self, settings):
        self.settings = settings

    def say(self, text):
        print(f"mailha-postfix-role: {text}", flush=True)
        try:
            syslog.openlog("mailha-postfix-role")
            syslog.syslog(syslog.LOG_INFO, text)
        except OSError:
            pass

    def lock(self):
        """Take the lock (held until the process ends); False on time-out."""
        handle = open(self.settings["lock_file"], "a")  # noqa: SIM115 - kept open: the lock lives as long as the process
        deadline = time.monotonic() + self.settings["lock_timeout"]
        while True:
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    handle.close()
                    return False
                time.sleep(0.05)
            else:
                self._lock_handle = handle
                return True

    def read(self, path):
        """The file's text, None when it cannot be read."""
        try:
            with open(path, encoding="utf-8", errors="replace") as handle:
                return handle.read()
        except OSError:
            return None

    def holds_floating_ip(self):
        try:
            return addresses.holds_address(self.settings["floating_ip"])
        except OSError:
            return False

    def run(self, argv):
        """Run a command quietly; its exit status (127 when it cannot run)."""
        try:
            return subprocess.run(
                argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False
            ).returncode
        except OSError:
            return 127

    def write(self, path, text, mtime):
        files.replace_file(path, text, mode=0o644, mtime=mtime)

    def now(self):
        return time.time()


def apply(named, node):
    """One run of the command for the role `named` (lower case); an exit code."""
    settings = node.settings
    floating_ip = settings["floating_ip"]
    transport_file = settings["transport_file"]
    flush_unit = settings["flush_unit"]

    # One writer at a time: a refresh must not undo a transition that runs
    # beside it.
    if not node.lock():
        node.say(f"{named}: the lock {settings['lock_file']} is still held after {settings['lock_timeout']:g} s")
        return EXIT_FAILED

    if named == "refresh" and is_standby_route(node.read(transport_file) or ""):
        node.say("refresh: not the active relay, route unchanged")
        return EXIT_DONE

    # A flush scheduled by an earlier run belongs to the role it was meant for.
    node.run(["systemctl", "stop", f"{flush_unit}.timer", f"{flush_unit}.service"])

    state, note = choose_route(named, node.holds_floating_ip(), floating_ip)
    if note:
        node.say(note)

    content = transport_content(state, floating_ip)
    description = content.strip() if content else None
    if content is None:
        destinations = node.read(settings["destinations_file"])
        if destinations is None:
            node.say(f"master: {settings['destinations_file']} is missing, every domain through smtp")
            content = ""
        else:
            content = destinations
            description = f"direct delivery, {count_routes(destinations)} domains by destination group"

    # Write beside the file and rename, so Postfix never reads half a file;
    # dated BACKDATE_SECONDS back (see there).
    try:
        node.write(transport_file, content, node.now() - BACKDATE_SECONDS)
    except OSError as err:
        node.say(f"{named}: cannot write {transport_file}: {err}")
        return EXIT_FAILED

    # Deliveries still bound to the floating IP after it left this host can
    # never finish: the receiver's replies to that address reach the new holder,
    # which resets them, and the smtp client would wait out
    # smtp_data_done_timeout (600 s) holding its message (seen on the lab after
    # a network partition). Close those sockets: Postfix defers the message at
    # once and it is handed over with the rest of the queue.
    if state != "master" and not node.holds_floating_ip():
        node.run(["ss", "-K", "src", floating_ip])

    action = "not running, nothing to reload"
    if node.run(["postfix", "status"]) == 0:
        if node.run(["postfix", "reload"]) != 0:
            node.say(f"{named}: postfix reload failed")
            return EXIT_FAILED
        action = "reloaded"
        if state != "hold":
            # Send what waits in the deferred queue along the new route now.
            node.run(["postqueue", "-f"])
            # A hand-over session in flight during the reload keeps its message
            # locked; when it ends (within the hand-over timeout) the message waits
            # in the incoming queue for the next trigger. Flush once more after that
            # time, unless another run cancels it first.
            node.run(
                [
                    "systemd-run",
                    "--quiet",
                    "--collect",
                    f"--unit={flush_unit}",
                    f"--on-active={settings['flush_delay']:d}",
                    "/usr/sbin/postqueue",
                    "-f",
                ]
            )
            action = "reloaded and flushed"
    node.say(f"{named}: {state} route '{description or 'direct delivery'}', postfix {action}")
    return EXIT_DONE


def main(argv=None, node=None):
    argv = sys.argv[1:] if argv is None else argv
    named = argv[0].lower() if argv else ""
    # Like the shell version it replaces: the first argument names the
    # role, any further ones are ignored.
    if named not in ROLES:
        sys.stderr.write(USAGE + "\n")
        return EXIT_USAGE
    if node is None:
        try:
            settings = load_config()
        except config.UsageError as err:
            sys.stderr.write(f"mailha-postfix-role: {err}\n")
            return EXIT_USAGE
        node = Node(settings)
    return apply(named, node)


if __name__ == "__main__":
    sys.exit(main())
