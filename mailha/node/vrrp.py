"""keepalived's side of the pair: the transition log, the notify script
(mailha-vrrp-notify) and the release after a keepalived that died
(mailha-vrrp-release).

The transition log is one line per VRRP transition,

    <ISO-8601 UTC time with milliseconds> <INSTANCE> <STATE> <PRIORITY>

e.g. "2024-05-01T12:00:00.123Z VI_MAIL MASTER 150". format_transition writes
it, parse_transition reads it: the health agent (/status), `mailha drill`
and the playbooks (through `mailha-node facts`) all read it through them.

Settings: /etc/mailha/vrrp.conf (keepalived role), key=value:
  log=PATH        the transition log
  hook=COMMAND    run on every transition with the new state (lower case)
                  appended; one line per hook, in order
                  (then the vrrp_transition event: mailha.node.events)
  instance=NAME   the VRRP instance (the release's notify names it)
  interface=DEV   the interface keepalived adds the addresses to
  address=CIDR    a virtual address (one line each), for the release
"""

import datetime
import os
import shlex
import subprocess
import sys
import syslog

from mailha.node import config, events, files

CONFIG_FILE = "/etc/mailha/vrrp.conf"
LOG_FILE = "/var/log/mailha/vrrp-transitions.log"
HOOK_TIMEOUT_SECONDS = 60
STATES = ("MASTER", "BACKUP", "FAULT", "STOP")

DEFAULTS = {
    "log": LOG_FILE,
    "hook": [],
    "instance": "VI_MAIL",
    "interface": "eth0",
    "address": [],
}
LISTS = ("hook", "address")


def _parse_hook(text):
    if not shlex.split(text):
        raise ValueError("an empty command")
    return text


def _parse_cidr(text):
    address, sep, length = text.partition("/")
    if not sep or not length.isdigit() or not address:
        raise ValueError(f"not an address in CIDR form: {text!r}")
    return text


PARSERS = {"hook": _parse_hook, "address": _parse_cidr}


def load_config(path=CONFIG_FILE):
    return config.load(path, DEFAULTS, PARSERS, LISTS)


# -- the transition log ---------------------------------------------------


def format_transition(instance, state, priority, now=None):
    """One log line (with its newline) for a transition at `now` (UTC)."""
    now = now or datetime.datetime.now(datetime.UTC)
    stamp = now.astimezone(datetime.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return f"{stamp} {instance} {state} {priority}\n"


class Transition:
    """One parsed log line: time (the ISO text as logged), instance, state
    (upper case), priority (the text as logged, None when absent)."""

    __slots__ = ("instance", "priority", "state", "time")

    def __init__(self, time, instance, state, priority=None):
        self.time, self.instance, self.state, self.priority = time, instance, state, priority

    def timestamp(self):
        """Epoch seconds of the time field, None when it is no ISO time."""
        try:
            return datetime.datetime.fromisoformat(self.time.replace("Z", "+00:00")).timestamp()
        except ValueError:
            return None

    def __eq__(self, other):
        return isinstance(other, Transition) and all(getattr(self, k) == getattr(other, k) for k in self.__slots__)

    def __repr__(self):
        return f"Transition({self.time!r}, {self.instance!r}, {self.state!r}, {self.priority!r})"


def parse_transition(line):
    """The Transition of one log line, None for a line with fewer than three fields."""
    fields = line.split()
    if len(fields) < 3:
        return None
    return Transition(fields[0], fields[1], fields[2].upper(), fields[3] if len(fields) > 3 else None)


def parse_transitions(text):
    """Every Transition of the log text, oldest first."""
    return [t for t in map(parse_transition, text.splitlines()) if t is not None]


def last_transition(path, tail_bytes=4096):
    """The last Transition of the log at `path` (its last `tail_bytes` are
    read), None when there is none or the file cannot be read."""
    try:
        with open(path, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            handle.seek(max(0, handle.tell() - tail_bytes))
            lines = handle.read().decode("utf-8", "replace").splitlines()
    except OSError:
        return None
    for line in reversed(lines):
        transition = parse_transition(line)
        if transition is not None:
            return transition
    return None


def state(path):
    """(state, ISO time) of the last transition logged, or ("UNKNOWN", None)."""
    transition = last_transition(path)
    if transition is None:
        return "UNKNOWN", None
    return transition.state, transition.time


def log_transition(path, instance, state, priority, now=None):
    """Append the line; one O_APPEND write, so concurrent notifications never
    interleave a line. Raises OSError."""
    files.append_line(path, format_transition(instance, state, priority, now))


# -- mailha-vrrp-notify ---------------------------------------------------
#
# keepalived runs it on every transition with TYPE NAME STATE PRIORITY. It
# appends the transition to the log, then runs each hook with the new state
# in lower case appended. A failing hook is logged to syslog and never stops
# the other hooks or fails the notify.


def run_hook(hook, state, run=subprocess.run, log=None):
    log = log or (lambda text: syslog.syslog(syslog.LOG_ERR, text))
    try:
        result = run(
            [*shlex.split(hook), state],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=HOOK_TIMEOUT_SECONDS,
            check=False,
        )
    except (OSError, ValueError, subprocess.TimeoutExpired) as err:
        log(f"hook {hook!r} {state} failed: {err}")
        return
    if result.returncode != 0:
        detail = (result.stderr or result.stdout).strip().splitlines()
        log(f"hook {hook!r} {state} exited {result.returncode:d}{(': ' + detail[-1]) if detail else ''}")


def notify(argv, settings=None, run=subprocess.run):
    """mailha-vrrp-notify TYPE NAME STATE PRIORITY; exit 0, 2 on usage."""
    if len(argv) < 4:
        sys.stderr.write("usage: mailha-vrrp-notify TYPE NAME STATE PRIORITY\n")
        return 2
    _kind, name, new_state, priority = argv[:4]
    syslog.openlog("mailha-vrrp-notify")
    status = 0
    if settings is None:
        try:
            settings = load_config()
        except config.UsageError as err:
            # Still log the transition where it is logged by default; no hook
            # runs with settings nobody can read.
            syslog.syslog(syslog.LOG_ERR, str(err))
            settings, status = dict(DEFAULTS), 1
    try:
        log_transition(settings["log"], name, new_state, priority)
    except OSError as err:
        syslog.syslog(syslog.LOG_ERR, f"cannot write {settings['log']}: {err}")
    for hook in settings["hook"]:
        run_hook(hook, new_state.lower(), run=run)
    # After the hooks: the transition's own work never waits for its event.
    events.emit("vrrp_transition", state=new_state.upper(), instance=name, priority=priority)
    return status


# -- mailha-vrrp-release --------------------------------------------------
#
# Run by systemd after keepalived stopped (ExecStopPost). A keepalived that
# stopped cleanly has already removed its addresses and this does nothing;
# one that died leaves them: remove them and run the notify with STOP, so
# the transition is logged and Postfix hands its mail over.


def release(argv=(), settings=None, run=subprocess.run, environ=os.environ):
    """Remove the virtual addresses keepalived left on the interface; exit 0."""
    from mailha.node import addresses

    if argv:
        sys.stderr.write(f"usage: mailha-vrrp-release (settings in {CONFIG_FILE})\n")
        return 2
    syslog.openlog("mailha-vrrp-release")
    if settings is None:
        try:
            settings = load_config()
        except config.UsageError as err:
            syslog.syslog(syslog.LOG_ERR, str(err))
            return 1
    released = []
    for address in settings["address"]:
        if addresses.on_interface(address, settings["interface"], run=run):
            deleted = run(
                ["ip", "addr", "del", address, "dev", settings["interface"]], check=False, stdin=subprocess.DEVNULL
            )
            if deleted.returncode == 0:
                released.append(address)
    if released:
        syslog.syslog(
            syslog.LOG_NOTICE,
            f"keepalived ended ({environ.get('SERVICE_RESULT') or 'unknown'}); released {' '.join(released)}",
        )
        notify(["INSTANCE", settings["instance"], "STOP", "0"], settings=settings, run=run)
    return 0
