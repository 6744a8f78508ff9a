"""mailha-health: is this node's MTA fit to hold the floating IP?

Exit codes (the contract keepalived's vrrp_script and the agent rely on):
  0  healthy
  1  the MTA failed: Postfix's master.pid names no live "master" process,
     no "220" greeting within the deadline, or the optional
     EHLO/MAIL FROM/RCPT TO dry run (--full) was refused
  2  the MTA answers, but a queue (--max-queue) or disk (--min-free-disk-mb)
     threshold is exceeded
  3  usage error (bad option, unreadable or malformed configuration)

Defaults come from /etc/mailha/health.conf (key=value, written by the
mail_health role), so keepalived and mailha-health-agent call it without
arguments. It runs every second: stdlib only, one TCP connection, no child
processes (the queue is counted with os.scandir, never with postqueue).
The dry run (full_check) is EHLO, MAIL FROM, RCPT TO, RSET, QUIT; DATA is
never sent. It costs the MTA more than a greeting: Postfix opens a queue
file at the first accepted RCPT TO and takes one in_flow_delay token for it,
which an aborted transaction never gives back; the queue manager refills
the tokens only when mail arrives or at its next queue run. Checked every
second, the dry run would drain them on a quiet relay, and then every
RCPT TO (the check's and real mail's) waits in_flow_delay (1 s): the check
misses its own deadline and keepalived moves the IP off a healthy MTA.
So with full_check in the configuration the dry run runs at most every
full_check_interval seconds (a failed one is repeated at once); the stamp
file full_check_stamp records when, for every process that checks. The
runs in between read the greeting only. --full on the command line forces
a dry run now; --no-full leaves it out.
--check-config only parses the configuration (exit 0 or 3).

mailha-health-agent (mailha.node.agent) imports this module and calls
run_checks(); keep the public functions (load_config, run_checks) stable.
The SMTP dialogue is mailha.node.smtp's, the queue counts
mailha.node.queue's, the atomic write mailha.node.files', shared with the
other commands and the controller.
"""

import argparse
import ipaddress
import json
import math
import os
import sys
import time
import urllib.parse

from mailha.node import config, files
from mailha.node.config import UsageError

# Also read through this module (mailha-health-agent's callers, the tests).
from mailha.node.queue import QUEUE_DIRECTORY, QUEUE_NAMES, count_queue, queue_details  # noqa: F401
from mailha.node.smtp import SmtpDialogue, SmtpFailure

CONFIG_FILE = "/etc/mailha/health.conf"

EXIT_HEALTHY = 0
EXIT_MTA_FAILED = 1
EXIT_THRESHOLD = 2
EXIT_USAGE = 3

DEFAULTS = {
    "smtp_host": "127.0.0.1",
    "smtp_port": 25,
    "timeout": 1.0,
    "full_check": False,
    "helo_name": "localhost",
    "mail_from": "",
    "rcpt_to": "postmaster",
    "max_queue": None,
    "min_free_disk_mb": None,
    "queue_directory": QUEUE_DIRECTORY,
    # The configured dry run runs at most this often (see the header).
    "full_check_interval": 30.0,
    "full_check_stamp": "/run/mailha/dry-run",
    # Read by mailha-health-agent only (its header says why these limits).
    "agent_bind_address": "127.0.0.1",
    "agent_port": 8025,
    "agent_request_timeout": 5.0,
    "agent_max_connections": 64,
    "floating_ip": "",
    "drain_file": "/etc/mailha/drain",
    "vrrp_log": "/var/log/mailha/vrrp-transitions.log",
    # Postfix's role route (mailha-postfix-role writes it): the agent reports
    # whether this relay delivers, hands over or holds its mail.
    "route_file": "/etc/postfix/mailha_role_transport",
    # The agent's watcher: check every watch_interval seconds (0 = only on
    # request), keep the verdict for the HTTP endpoints and mirror it into
    # track_file for keepalived ("" = no file).
    "watch_interval": 0.25,
    "watch_fall": 2,
    "watch_rise": 4,
    "track_file": "",
    # The split-brain guard's demotion for keepalived, 1 while demoted ("" =
    # folded into track_file, as before this setting existed).
    "split_brain_track_file": "",
    # Written (a timestamp) when a split brain this node won ends, for a
    # systemd path unit that runs the floating IP mover's
    # settled check (mailha-node fip-check --settle; a cloud whose API moves
    # the floating IP). "" = none.
    "fip_recheck_file": "",
    # The watcher's degraded level (mailha-health-agent's header): slow
    # greetings (their median over the last degraded_latency_window checks)
    # or a big or old queue, held for degraded_fall evaluations, cleared
    # after degraded_rise. None turns a threshold off. Degraded moves the
    # floating IP only with failover_on_degraded.
    "degraded_latency_seconds": 0.5,
    "degraded_latency_window": 20,
    "degraded_queue_messages": 10000,
    "degraded_queue_age_seconds": None,
    "degraded_fall": 8,
    "degraded_rise": 40,
    "failover_on_degraded": False,
    # Split brain (mailha-health-agent's header): the peer's agent
    # ("" = no split-brain handling), this node's VRRP claim (keepalived's
    # priority, with its override file, and this node's own address, "" =
    # agent_bind_address), the peer's address for its adverts ("" = the host
    # of peer_agent_url) and keepalived's advert interval.
    "peer_agent_url": "",
    "peer_address": "",
    "node_address": "",
    "vrrp_priority": 100,
    "vrrp_priority_file": "",
    "vrrp_advert_interval": 1.0,
}


_parse_bool = config.parse_bool


def _parse_optional_int(text):
    text = text.strip()
    if text in ("", "none", "null"):
        return None
    value = int(text)
    if value < 0:
        raise ValueError("must not be negative")
    return value


def _parse_non_negative_float(text):
    value = float(text)
    if value < 0:
        raise ValueError("must not be negative")
    return value


def _parse_threshold(convert, unit):
    """A threshold of the degraded level: a positive number, or "", none or
    0 for off (None)."""

    def parse(text):
        text = text.strip().lower()
        if text in ("", "none", "null"):
            return None
        try:
            value = convert(text)
        except ValueError:
            value = math.nan
        if not math.isfinite(value):
            raise ValueError(f"not {unit}: {text!r} (0 or empty turns it off)")
        if value < 0:
            raise ValueError(f"must not be negative: {text!r} (0 or empty turns it off)")
        return value or None

    return parse


def _parse_latency_window(text):
    value = int(text)
    if value < 3:
        # The median of one or two answers is one slow answer.
        raise ValueError("must be at least 3 (the median of fewer greetings follows one slow answer)")
    return value


def _parse_ip_address(text):
    return str(ipaddress.ip_address(text.strip()))


def _parse_optional_ipv4(text):
    text = text.strip()
    return str(ipaddress.IPv4Address(text)) if text else ""


def _parse_vrrp_priority(text):
    value = int(text)
    if not 1 <= value <= 255:
        raise ValueError("must be between 1 and 255")
    return value


def _parse_peer_url(text):
    """ "" or http://HOST[:PORT]/PATH (the peer agent's /status)."""
    text = text.strip()
    if not text:
        return ""
    parts = urllib.parse.urlsplit(text)
    # .port raises ValueError itself for a port that is not a number below 65536.
    if parts.scheme != "http" or not parts.hostname or parts.port == 0:
        raise ValueError("must be an http:// URL with a host, such as http://10.213.0.12:8025/status")
    return text


def node_address(settings):
    """This node's own address, the second half of its VRRP claim."""
    return settings["node_address"] or settings["agent_bind_address"]


def peer_address(settings):
    """The peer's address, the source of its VRRP adverts ("" without a peer)."""
    if settings["peer_address"]:
        return settings["peer_address"]
    return urllib.parse.urlsplit(settings["peer_agent_url"]).hostname or ""


def _check_split_brain(settings):
    """With a peer, both addresses must be distinct IPv4 unicast addresses
    (a claim compares them as integers) and the agent's watcher must run."""
    if not settings["peer_agent_url"]:
        return
    addresses = {}
    for what, value in (
        ("node_address (or agent_bind_address)", node_address(settings)),
        ("peer_address (or the host of peer_agent_url)", peer_address(settings)),
    ):
        try:
            address = ipaddress.IPv4Address(value)
        except ValueError as err:
            raise UsageError(f"peer_agent_url is set: {what} must be an IPv4 address, not {value!r}") from err
        if address.is_unspecified or address.is_loopback or address.is_multicast:
            raise UsageError(f"peer_agent_url is set: {what} must be this pair's unicast address, not {value}")
        addresses[what] = address
    if len(set(addresses.values())) < 2:
        raise UsageError(f"peer_agent_url is set: the peer's address is this node's own ({node_address(settings)})")
    if settings["watch_interval"] <= 0:
        raise UsageError("peer_agent_url is set: the agent's watcher must run (watch_interval > 0)")


_PARSERS = {
    "watch_interval": _parse_non_negative_float,
    "full_check_interval": _parse_non_negative_float,
    "watch_fall": config.parse_positive_int,
    "watch_rise": config.parse_positive_int,
    "smtp_port": int,
    "timeout": float,
    "full_check": _parse_bool,
    "max_queue": _parse_optional_int,
    "min_free_disk_mb": _parse_optional_int,
    "agent_port": int,
    "agent_bind_address": _parse_ip_address,
    "agent_request_timeout": config.parse_positive_float,
    "agent_max_connections": config.parse_positive_int,
    "peer_agent_url": _parse_peer_url,
    "peer_address": _parse_optional_ipv4,
    "node_address": _parse_optional_ipv4,
    "vrrp_priority": _parse_vrrp_priority,
    "vrrp_advert_interval": config.parse_positive_float,
    "degraded_latency_seconds": _parse_threshold(float, "a number of seconds"),
    "degraded_latency_window": _parse_latency_window,
    "degraded_queue_messages": _parse_threshold(int, "a number of messages"),
    "degraded_queue_age_seconds": _parse_threshold(float, "a number of seconds"),
    "degraded_fall": config.parse_positive_int,
    "degraded_rise": config.parse_positive_int,
    "failover_on_degraded": _parse_bool,
}


def _check_track_files(settings):
    """Two writers of one file would undo each other: a cleared demotion
    would write 0 over a failed MTA's 1."""
    if settings["track_file"] and settings["split_brain_track_file"] == settings["track_file"]:
        raise UsageError("split_brain_track_file must not be track_file (leave it empty to share that file)")
    recheck = settings["fip_recheck_file"]
    if recheck and not os.path.isabs(recheck):
        raise UsageError(f"fip_recheck_file must be an absolute path, not {recheck!r}")
    if recheck and recheck in (settings["track_file"], settings["split_brain_track_file"]):
        raise UsageError("fip_recheck_file must not be a track file")


def load_config(path=CONFIG_FILE):
    """Defaults overlaid with the key=value file; a missing file is fine."""
    settings = config.load(path, DEFAULTS, _PARSERS)
    try:
        _check_track_files(settings)
        _check_split_brain(settings)
    except UsageError as err:
        raise UsageError(f"{path}: {err}") from err
    return settings


def check_master(queue_directory):
    """Raise SmtpFailure when Postfix's master process died and left its pid file.

    After a kill -9 of the master its smtpd children live on for seconds,
    greeting whoever reaches them, while new connections wait in a listen
    queue nobody serves: at 100 msg/s the greeting check saw the crash only
    after 3.5 s. A pid file naming no live "master" is the crash itself. No
    pid file (never started) leaves the verdict to the greeting.
    """
    try:
        with open(os.path.join(queue_directory, "pid", "master.pid")) as handle:
            text = handle.read(64).strip()
    except OSError:
        return
    if not text.isdigit():
        return  # being written by a master that is starting
    try:
        with open(f"/proc/{text}/comm") as handle:
            name = handle.read().strip()
    except OSError:
        name = None
    if name != "master":
        raise SmtpFailure(f"the Postfix master process (pid {text}) is gone")


def check_smtp(settings):
    """Greeting (and with full_check the dry run) within settings['timeout'].

    run_checks decides whether a configured dry run is due; called directly,
    full_check means a dry run now.
    """
    started = time.monotonic()
    deadline = started + settings["timeout"]
    check_master(settings["queue_directory"])
    dialogue = SmtpDialogue(settings["smtp_host"], settings["smtp_port"], deadline)
    try:
        dialogue.greeting()
        if settings["full_check"]:
            steps = (
                f"EHLO {settings['helo_name']}",
                f"MAIL FROM:<{settings['mail_from']}>",
                f"RCPT TO:<{settings['rcpt_to']}>",
                "RSET",
            )
            for step in steps:
                code, line = dialogue.command(step)
                if not 200 <= code < 300:
                    raise SmtpFailure(f"{step.split(':')[0]} refused: {line[:80]!r}")
            code, line = dialogue.command("QUIT")
            if code != 221:
                raise SmtpFailure(f"QUIT refused: {line[:80]!r}")
        else:
            # Say goodbye so the MTA logs a clean disconnect, not a lost
            # connection; its answer does not change the verdict.
            dialogue.quit_quietly()
    finally:
        dialogue.close()
    return {"ok": True, "seconds": round(time.monotonic() - started, 4)}


def free_disk_mb(path):
    stats = os.statvfs(path)
    return stats.f_bavail * stats.f_frsize // (1024 * 1024)


def dry_run_due(settings, now=None):
    """Whether the configured dry run must run now: never run (or no stamp),
    the last one failed, or full_check_interval has passed since it."""
    now = time.time() if now is None else now
    path = settings["full_check_stamp"]
    try:
        with open(path, encoding="ascii") as handle:
            verdict = handle.read().strip()
            age = now - os.fstat(handle.fileno()).st_mtime
    except OSError:
        return True
    # A clock set back makes the age negative: run rather than trust it.
    return verdict != "ok" or not 0 <= age < settings["full_check_interval"]


def replace_file(path, text):
    """Write path in one step (a temporary file renamed over it), so a reader
    never sees half a write; creates the directory. Raises OSError."""
    files.replace_file(path, text, encoding="ascii")


def record_dry_run(settings, ok):
    """Write the stamp; without one, every run is a dry run. The error, or None."""
    try:
        replace_file(settings["full_check_stamp"], "ok\n" if ok else "failed\n")
    except OSError as err:
        return str(err)
    return None


def run_checks(settings, force_full=False):
    """All checks; returns the findings, exit_code and reason included.

    With full_check the dry run runs when forced or due (dry_run_due);
    findings["smtp"]["dry_run"] says whether this run made one.
    """
    findings = {"exit_code": EXIT_HEALTHY, "reason": "healthy"}
    exceeded = []
    # Queue first: the --full dry run briefly creates (and then removes) a
    # queue file of its own, which must not count against --max-queue.
    if settings["max_queue"] is not None:
        try:
            messages = count_queue(settings["queue_directory"])
        except OSError as err:
            findings["queue"] = {"ok": False, "error": str(err)}
            exceeded.append(f"queue unreadable: {err}")
        else:
            queue_ok = messages <= settings["max_queue"]
            findings["queue"] = {"ok": queue_ok, "messages": messages, "max": settings["max_queue"]}
            if not queue_ok:
                exceeded.append(f"queue holds {messages:d} messages (max {settings['max_queue']:d})")
    if settings["min_free_disk_mb"] is not None:
        try:
            free = free_disk_mb(settings["queue_directory"])
        except OSError as err:
            findings["disk"] = {"ok": False, "error": str(err)}
            exceeded.append(f"queue filesystem unreadable: {err}")
        else:
            disk_ok = free >= settings["min_free_disk_mb"]
            findings["disk"] = {"ok": disk_ok, "free_mb": free, "min_mb": settings["min_free_disk_mb"]}
            if not disk_ok:
                exceeded.append(f"{free:d} MB free on the queue filesystem (min {settings['min_free_disk_mb']:d})")
    if exceeded:
        findings["exit_code"] = EXIT_THRESHOLD
        findings["reason"] = "; ".join(exceeded)
    dry_run = bool(settings["full_check"]) and (force_full or dry_run_due(settings))
    try:
        findings["smtp"] = check_smtp(dict(settings, full_check=dry_run))
    except SmtpFailure as err:
        # A failed MTA outranks any threshold.
        findings["smtp"] = {"ok": False, "error": str(err)}
        findings["exit_code"] = EXIT_MTA_FAILED
        findings["reason"] = f"MTA failed: {err}"
    findings["smtp"]["dry_run"] = dry_run
    if dry_run:
        stamp_error = record_dry_run(settings, findings["smtp"]["ok"])
        if stamp_error:
            findings["smtp"]["stamp_error"] = stamp_error
    return findings


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        self.print_usage(sys.stderr)
        sys.stderr.write(f"{self.prog}: error: {message}\n")
        sys.exit(EXIT_USAGE)


def _non_negative_int(text):
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError("must not be negative")
    return value


def _positive_float(text):
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError("must be positive")
    return value


def parse_arguments(argv):
    parser = _Parser(prog="mailha-health", description="Health check of the local MTA (exit 0/1/2/3, see header).")
    parser.add_argument("--config", default=CONFIG_FILE, help="key=value defaults file")
    parser.add_argument("--host", dest="smtp_host")
    parser.add_argument("--port", dest="smtp_port", type=int)
    parser.add_argument("--timeout", type=_positive_float, help="deadline for the SMTP check, seconds")
    parser.add_argument(
        "--full",
        dest="full_check",
        action=argparse.BooleanOptionalAction,
        help="EHLO, MAIL FROM, RCPT TO, RSET, QUIT dry run now (--no-full: none)",
    )
    parser.add_argument("--helo", dest="helo_name")
    parser.add_argument("--mail-from", dest="mail_from")
    parser.add_argument("--rcpt-to", dest="rcpt_to")
    parser.add_argument("--max-queue", type=_non_negative_int, help="exit 2 above N queued files")
    parser.add_argument(
        "--min-free-disk-mb", type=_non_negative_int, help="exit 2 below N MB free on the queue filesystem"
    )
    parser.add_argument("--json", action="store_true", help="print the findings as one JSON object")
    parser.add_argument("--check-config", action="store_true", help="only parse the configuration file (exit 0 or 3)")
    return parser.parse_args(argv)


def main(argv=None):
    options = parse_arguments(sys.argv[1:] if argv is None else argv)
    try:
        settings = load_config(options.config)
    except UsageError as err:
        sys.stderr.write(f"mailha-health: {err}\n")
        return EXIT_USAGE
    if options.check_config:
        return EXIT_HEALTHY
    for key in DEFAULTS:
        value = getattr(options, key, None)
        if value is not None:
            settings[key] = value
    findings = run_checks(settings, force_full=options.full_check is True)
    if options.json:
        print(json.dumps(findings, sort_keys=True))
    else:
        print(findings["reason"])
    return findings["exit_code"]


if __name__ == "__main__":
    sys.exit(main())
