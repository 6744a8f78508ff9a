"""mailha-health-agent: HTTP view of mailha-health for HAProxy and monitoring.

  GET /active   200 "active" only when this node holds the floating IP, its
                MTA is healthy and it is not drained; otherwise 503 and a
                one-line reason. HAProxy checks this, so HAProxy and VRRP
                never disagree about the active node. Degraded (below)
                stays 200 unless failover_on_degraded.
  GET /health   200 / 503 from the health check alone; while degraded the
                200's body is "healthy, degraded: <reasons>".
  GET /metrics  the same facts in the Prometheus text format (below).
  GET /status   everything as one JSON object, for `mailha status`: health
                findings, health_level ("ok", "degraded", "failed"),
                greeting_latency_median_seconds, degraded_reasons (one line
                each), VRRP state (last line of the transition log),
                floating IP held, drained, queue counts and oldest age,
                and this node's split-brain view (below): vrrp_priority
                (effective), address, split_brain, demoted, demoted_reason.

Exit codes (it never stops on its own while all is well):
  1  the watcher or the HTTP server stopped, or the agent cannot listen on
     agent_bind_address:agent_port (say, the address is not up yet at
     boot); one line on stderr says why, and systemd starts it again
  3  bad configuration (mailha-health's usage error)

The checks are mailha-health's own code (imported, not copied) and its
settings file /etc/mailha/health.conf (agent_bind_address, agent_port,
agent_request_timeout, agent_max_connections, floating_ip, drain_file,
watch_*, track_file, split_brain_track_file, fip_recheck_file, degraded_*,
failover_on_degraded, and for split brain
peer_agent_url, peer_address, node_address, vrrp_priority,
vrrp_priority_file, vrrp_advert_interval).

The watcher (watch_interval > 0) runs the check every watch_interval
seconds. The endpoints answer from its latest verdict while that is fresh,
so HAProxy can poll often without costing an SMTP session each time. With
track_file set it also writes keepalived's track file: 1 after watch_fall
failed checks in a row (keepalived puts the instance in FAULT at once,
through inotify), 0 after watch_rise healthy ones. The demotion for a split
brain (below) goes to split_brain_track_file, 1 at once while the node is
demoted, else 0, so keepalived can track the guard without the MTA watch (a
correctness feature, not a timing). With split_brain_track_file empty (an
older config) the demotion goes into track_file instead: 1 while the MTA
failed or the node is demoted. A file is written when its value changes,
and every file at start. keepalived's own vrrp_script stays the backstop: a
file whose writer died keeps its last value, so the file only ever makes
detection faster. A configured dry run (full_check) is rationed by
run_checks itself: at most one every full_check_interval seconds across
the watcher and keepalived's script, the greeting in between
(mailha-health's header says why).

Degraded: a relay that works, but slowly or backed up. Only the watcher can
tell (keepalived's one-shot script keeps no history), so the level is its
own, judged at every check (an evaluation):
- the median of the last degraded_latency_window greeting times is above
  degraded_latency_seconds. The window must be full before it is judged,
  and its median ignores a few slow answers: one slow answer never changes
  the level. A check with no greeting counts as the deadline (timeout): a
  relay missing deadlines is slow, and ignoring misses would make the
  median look better the worse things get. Dry runs are not greetings;
- or the five queues hold more than degraded_queue_messages messages, or
  the oldest is older than degraded_queue_age_seconds (an unreadable queue
  counts too). The queue is read at most every QUEUE_READ_INTERVAL seconds
  (the constant says why);
- with hysteresis: degraded after the condition held for degraded_fall
  evaluations in a row, ok after degraded_rise without it.
None (0 or empty in health.conf) turns a threshold off. The level is
"failed" whenever the check fails (/health 503: the MTA's verdict wins),
else "degraded" or "ok"; without a watcher it is never "degraded".
Degraded moves nothing by default: a slow relay that works is better than
none. With failover_on_degraded the watcher treats it as failed: the track
file says 1 and /active answers 503 "degraded (failover_on_degraded): ...".

/metrics: mailha_health_exit_code, mailha_active, mailha_floating_ip_held,
mailha_drained, mailha_split_brain, mailha_demoted (alert rules use these
names: keep them), mailha_health_level (0 ok, 1 degraded, 2 failed),
mailha_smtp_check_seconds (the latest check), mailha_smtp_greeting_seconds
(histogram of every greeting the watcher measured since it started),
mailha_vrrp_state{state=MASTER|BACKUP|FAULT|STOP|UNKNOWN} (1 for the
current one), mailha_vrrp_last_transition_timestamp_seconds,
mailha_queue_messages (with max_queue), mailha_queue_oldest_message_age_seconds
and mailha_queue_disk_free_megabytes (with min_free_disk_mb), the last
four only when known.

HAProxy sends mail only to a node whose /active answers, so no client may
keep the agent from answering it. 300 half-sent requests from one outside
host once held every handler thread of an agent that listened on all
addresses without a request timeout: a denial of service of the pair.
- It listens on agent_bind_address, the node's own address.
- A connection has agent_request_timeout seconds in all to deliver its
  request line and headers (one deadline, not one per read: a byte every
  few seconds buys nothing); then it is closed.
- One request per connection (HTTP/1.0, "Connection: close"), so no idle
  keep-alive connection holds a handler.
- At most agent_max_connections connections have a handler thread. At the
  cap a new connection takes the place of the oldest connection still
  waiting for its request, from the client holding the most such
  connections: a flood displaces itself, not HAProxy's check, which sends
  its request at once. Only when no connection is waiting (all are being
  answered, a matter of milliseconds) is the new one closed at once. The
  accept loop never waits for a slot.
Floods are logged as one summary line at most every NOTICE_INTERVAL s.

Split brain (with peer_agent_url, the peer agent's /status). If only VRRP
between the relays is cut (a firewall change, a cloud security group),
both keepalived instances become MASTER: both hold the floating IP, both
answer /active, HAProxy sends to both, and deliveries cut between them
duplicate. The pair settles it by itself, the same way every time:
- A node's claim is (its effective VRRP priority, its own IPv4 address as
  an integer): the higher priority wins; equal priorities, the higher
  address. That is VRRP's own election rule (RFC 5798 section 6.4.3), so
  when VRRP returns keepalived keeps the same winner. The effective
  priority is the "priority N" line of keepalived's override file
  (vrrp_priority_file) while that exists, else vrrp_priority; the address
  is node_address (default agent_bind_address).
- A guard thread, every watch_interval while this node holds the floating
  IP or is demoted, GETs the peer's /status (PEER_TIMEOUT). A peer that
  does not answer, or answers without a valid holds_floating_ip, healthy,
  vrrp_priority and address, means no split brain known.
- The peer holds the floating IP too: split brain, one log line. The node
  whose claim loses demotes itself when the peer is healthy and no VRRP
  advertisement from it arrived in the last 3 * vrrp_advert_interval + 1 s
  (one that arrives means VRRP gets through and keepalived settles it
  itself): the demotion's track file says 1, so keepalived goes to FAULT
  and releases the floating IP at once (inotify), and /active answers 503
  "demoted: split brain, peer X holds the floating IP with a better
  claim", so HAProxy stops at once too. The winner keeps the floating
  IP; with fip_recheck_file set (a cloud whose API moves the floating IP)
  it writes that file when the split brain ends while it holds the
  address (the loser let it go), and a systemd path unit runs the mover's
  settled check (mailha-node fip-check --settle): the loser's assign
  through the API, asked when it became MASTER, may land after its
  demotion and must be undone at once, not at the mover's next timer.
  Only then: a second write while the check runs would be merged into it
  by systemd, and the check must come after the loser let go.
- The node stays demoted while the peer holds the floating IP, is healthy
  and no advert of it arrives. An advert from the peer (VRRP is back:
  keepalived leaves FAULT as BACKUP, hears the MASTER and stays BACKUP),
  or a peer that lets the floating IP go, fails its check or stops
  answering (then VRRP, cut or not, lets this node take over) clears the
  demotion at once.
- A restarted agent starts demoted when split_brain_track_file says 1 and
  a peer is set, and its first poll decides again as above (stay demoted,
  or clear). Starting from 0 would take keepalived out of FAULT and, VRRP
  still cut, back to MASTER for a second split brain before the guard
  demoted it again. Without a peer nothing could clear it: 0 at start. A
  demotion folded into track_file cannot be told from an MTA failure; the
  restarted watcher takes it for one (watch_rise healthy checks clear it).
- Adverts are seen on a raw socket of IP protocol 112 (a thread): the
  kernel gives it a copy of every VRRP packet the input firewall accepts,
  whatever keepalived does with it; the peer's are those whose source is
  peer_address (default the host of peer_agent_url). Without CAP_NET_RAW
  (one log line) only the peer letting the floating IP go, failing or not
  answering clears a demotion.
/status says split_brain (at the last poll both nodes held the floating
IP), demoted and demoted_reason, with vrrp_priority and address: the
claim the peer reads.
"""

import bisect
import collections
import contextlib
import http.client
import http.server
import io
import ipaddress
import json
import os
import queue
import socket
import socketserver
import statistics
import sys
import threading
import time
import urllib.parse

from mailha.node import addresses, events, files, health, postfix_role, vrrp
from mailha.node.queue import age_of, read_queue
from mailha.node.queue import total as queue_total

EXIT_STOPPED = 1
# A burst of connections waits in the listen queue while the accept loop
# starts threads. Python's default of 5 (in Molecule, even 256) dropped SYNs,
# and a dropped SYN costs a client a one-second retransmission: longer than
# HAProxy's check timeout (1 s, fall 1). The accept loop takes about a
# thousand connections a second, so a full queue of 1024 still drains in
# about that second.
LISTEN_BACKLOG = 1024
NOTICE_INTERVAL = 10.0
# VRRP's IP protocol number (RFC 5798).
IPPROTO_VRRP = 112
# The peer's /status must connect, and each read of it arrive, within this.
PEER_TIMEOUT = 0.5
# Our own /status is about 1 KB; a longer answer is not one.
PEER_STATUS_LIMIT = 65536
# The demotion a restarted agent starts from (was_demoted), until a poll decides.
CARRIED_OVER = "split brain: this node was demoted when the agent started again"
# The watcher reads the queue for the degraded level at most this often.
# A reading lists and stats every file of the five queues, one stat per
# message: on a big spool that is real disk work, and four times a second
# (watch_interval) it would compete with Postfix's queue manager for the disk
# of the very relay that is backed up. A queue grows and ages over minutes;
# a reading 5 s old costs the level at most 5 s.
QUEUE_READ_INTERVAL = 5.0
# /status and /metrics take the same shared reading while it is younger than
# this: the peer's split-brain guard asks for /status four times a second,
# and each of its answers used to walk the whole spool. The oldest message's
# age is computed when the answer is written, so it never lags; the counts
# lag by at most this. /status?fresh=1 reads the queue now (a drill's "are
# the queues empty" before it counts at the recipient side).
STATUS_QUEUE_MAX_AGE = 1.0
# mailha_smtp_greeting_seconds' buckets (upper bounds, seconds).
GREETING_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
# The health levels, in the order of mailha_health_level's values (0, 1, 2).
LEVELS = ("ok", "degraded", "failed")
# mailha_vrrp_state's label values: keepalived's states, and UNKNOWN for no
# (or an unreadable) transition log.
VRRP_STATE_LABELS = (*vrrp.STATES, "UNKNOWN")


def log(text):
    sys.stderr.write(f"mailha-health-agent: {text}\n")


# One definition of "holds the floating IP" (mailha.node.addresses).
holds_address = addresses.holds_address


def read_track_value(path):
    """The value keepalived reads from the track file (0 when absent or not a number)."""
    try:
        with open(path, encoding="ascii") as handle:
            return int(handle.read().strip() or 0)
    except (OSError, ValueError):
        return 0


def write_track_value(path, value):
    """Replace the file in one step, so keepalived never reads half a write."""
    files.replace_file(path, f"{value:d}\n", encoding="ascii")


def was_demoted(settings):
    """The demotion a restarted agent starts from (the header says why):
    what split_brain_track_file says, when a peer is set."""
    path = settings["split_brain_track_file"]
    return bool(path and settings["peer_agent_url"]) and read_track_value(path) != 0


class QueueReader:
    """One reading of the five queues (mailha.node.queue.read_queue), shared
    by the watcher and the endpoints' threads: a caller takes the reading
    while it is younger than the max_age it asks for, else reads the queue
    again. One caller reads at a time; those that arrive meanwhile take its
    reading instead of walking the spool again."""

    def __init__(self, queue_directory, read=None, clock=time.monotonic, wall=time.time):
        self.read = read or (lambda: read_queue(queue_directory))
        self.clock, self.wall = clock, wall
        self.lock = threading.Lock()
        self.taken = None  # clock time of the reading
        self.reading = None  # (counts, oldest arrival) or the OSError it raised

    def details(self, max_age):
        """(counts, oldest message's age in seconds or None) from a reading at
        most max_age seconds old (0: read now); raises the reading's OSError."""
        with self.lock:
            now = self.clock()
            if self.taken is None or not 0 <= now - self.taken < max_age:
                try:
                    self.reading = self.read()
                except OSError as err:
                    self.reading = err
                self.taken = now
            reading = self.reading
        if isinstance(reading, OSError):
            raise reading
        counts, oldest = reading
        return dict(counts), age_of(oldest, self.wall())


class Histogram:
    """A Prometheus histogram: observations counted per bucket, cumulated
    (as the format wants) only when rendered. Not thread-safe by itself:
    the Watcher holds its lock around observe() and snapshot()."""

    def __init__(self, bounds):
        self.bounds = tuple(bounds)
        # One count per bound, and a last one for values above every bound.
        self.counts = [0] * (len(self.bounds) + 1)
        self.sum = 0.0

    def observe(self, value):
        # bisect_left: a value equal to a bound belongs to it (le = "<=").
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.sum += value

    def snapshot(self):
        return HistogramSnapshot(self.bounds, tuple(self.counts), self.sum)


class HistogramSnapshot(collections.namedtuple("HistogramSnapshot", "bounds counts sum")):
    def exposition(self, name, description):
        """The histogram's lines in the Prometheus text format."""
        lines = [f"# HELP {name} {description}", f"# TYPE {name} histogram"]
        cumulative = 0
        for bound, count in zip((*self.bounds, None), self.counts, strict=True):
            cumulative += count
            label = "+Inf" if bound is None else f"{bound:g}"
            lines.append(f'{name}_bucket{{le="{label}"}} {cumulative:d}')
        lines += [f"{name}_sum {self.sum:.6f}", f"{name}_count {cumulative:d}"]
        return lines


class Grade(collections.namedtuple("Grade", "degraded reasons median fault greetings")):
    """The watcher's degraded level at one moment: degraded (with the
    hysteresis), the reasons of the last evaluation that found it, the
    greetings' median (None before the first), fault (degraded and
    failover_on_degraded: keepalived and /active treat it as failed) and
    the greeting histogram (a HistogramSnapshot, None without a watcher)."""


# Without a watcher there is no history, so no degraded level.
NO_GRADE = Grade(False, (), None, False, None)


def health_level(findings, grade=NO_GRADE):
    """ "failed" whenever /health says 503 (the MTA's verdict wins), else
    "degraded" or "ok" from the watcher's grade."""
    if findings["exit_code"] != health.EXIT_HEALTHY:
        return "failed"
    return "degraded" if grade.degraded else "ok"


class Watcher:
    """Check every `watch_interval` s; keep the latest findings; mirror them
    into the track file with watch_fall / watch_rise hysteresis, and the
    split-brain guard's demotion into its own file (or, without one, into
    the same); grade the relay ok or degraded (header: "Degraded"). serve()
    runs it in a thread of its own."""

    def __init__(
        self,
        settings,
        check=None,
        clock=time.monotonic,
        sleep=time.sleep,
        demoted=False,
        read_queue=None,
        emit=events.emit,
        queue_reader=None,
    ):
        self.settings = settings
        self.emit = emit
        self.check = check or health.run_checks
        self.clock, self.sleep = clock, sleep
        # The reading the endpoints share (main() passes the server's).
        self.queue_reader = queue_reader or QueueReader(settings["queue_directory"])
        self.read_queue = read_queue or (lambda: self.queue_reader.details(QUEUE_READ_INTERVAL))
        self.lock = threading.Lock()
        self.latest = None  # (clock time, findings)
        self.track_file = settings["track_file"]
        self.split_brain_track_file = settings["split_brain_track_file"]
        # Start from what the file says, so a restarted agent does not clear
        # a failure before the MTA has proved itself watch_rise times.
        self.failed = bool(self.track_file) and read_track_value(self.track_file) != 0
        self.streak = 0
        # Set by the split-brain guard (from its thread); at start, what
        # was_demoted() found.
        self.demoted = demoted
        self.track_lock = threading.Lock()
        self.written = {}  # path: the value last written there
        # The degraded level (header: "Degraded"), under self.lock for the
        # endpoints' threads.
        self.greetings = collections.deque(maxlen=settings["degraded_latency_window"])
        self.greeting_seconds = Histogram(GREETING_BUCKETS)
        self.queue_reading = None  # (clock time, the reasons it gave)
        self.degraded = False
        self.degraded_streak = 0
        self.degraded_reasons = ()

    def fresh(self):
        """The latest findings while they can stand for a new check, else None."""
        with self.lock:
            latest = self.latest
        if latest is None:
            return None
        limit = 2 * self.settings["watch_interval"] + self.settings["timeout"]
        return latest[1] if self.clock() - latest[0] <= limit else None

    def observe(self, findings):
        """Record one check; returns the watcher's new value for the track
        file (1 the MTA failed, or degraded with failover_on_degraded; 0
        neither), or None for no change. sync_track() writes it, with the
        demotion."""
        before, level = self.own_fault(), self.level()
        with self.lock:
            self.latest = (self.clock(), findings)
        self.grade_check(findings)
        self.judge_mta(findings)
        if self.level() != level:
            self.emit("health", level=self.level(), previous=level, reason=self.level_reason(findings))
        after = self.own_fault()
        return None if after == before else int(after)

    def level(self):
        """The level as the watcher judged it (with its hysteresis): "failed",
        "degraded" or "ok". The health event follows this one."""
        return "failed" if self.failed else "degraded" if self.degraded else "ok"

    def level_reason(self, findings):
        if self.failed:
            return findings["reason"]
        return "; ".join(self.degraded_reasons) if self.degraded else "healthy"

    def own_fault(self):
        """The watcher's own causes for the track file: the MTA failed (with
        watch_fall / watch_rise), or degraded and failover_on_degraded."""
        return self.failed or self.degraded_fault()

    def degraded_fault(self):
        return self.degraded and self.settings["failover_on_degraded"]

    def judge_mta(self, findings):
        """The MTA's verdict with watch_fall / watch_rise hysteresis (self.failed)."""
        healthy = findings["exit_code"] == health.EXIT_HEALTHY
        if healthy != self.failed:
            # The verdict agrees with the state: nothing to count.
            self.streak = 0
            return None
        self.streak += 1
        needed = self.settings["watch_rise"] if self.failed else self.settings["watch_fall"]
        if self.streak < needed:
            return None
        self.failed, self.streak = not healthy, 0
        log(f"MTA failed: {findings['reason']}" if self.failed else "MTA healthy again")
        return 1 if self.failed else 0

    def grade_check(self, findings):
        """One evaluation of the degraded level (header: "Degraded")."""
        now = self.clock()
        smtp = findings.get("smtp", {})
        with self.lock:
            if smtp.get("ok") and not smtp.get("dry_run") and "seconds" in smtp:
                self.greetings.append(smtp["seconds"])
                self.greeting_seconds.observe(smtp["seconds"])
            elif smtp.get("ok") is False:
                # No greeting within the deadline (or none at all): a miss
                # counts as the deadline, or the median would improve as
                # more greetings fail. Not a measurement: not in the histogram.
                self.greetings.append(self.settings["timeout"])
        reasons = self.latency_reasons() + self.queue_reasons(now)
        if bool(reasons) == self.degraded:
            self.degraded_streak = 0
        else:
            self.degraded_streak += 1
        needed = self.settings["degraded_rise"] if self.degraded else self.settings["degraded_fall"]
        with self.lock:
            if reasons:
                self.degraded_reasons = tuple(reasons)
            if self.degraded_streak < needed:
                return
            self.degraded, self.degraded_streak = bool(reasons), 0
            if not self.degraded:
                self.degraded_reasons = ()
        if self.degraded:
            moves = "; failover_on_degraded: track file 1, /active 503" if self.degraded_fault() else ""
            log(f"degraded: {'; '.join(reasons)}{moves}")
        else:
            log("no longer degraded")

    def latency_reasons(self):
        """The greeting median's reason, judged on a full window only (before
        it fills, one slow answer could be most of it)."""
        limit = self.settings["degraded_latency_seconds"]
        with self.lock:
            samples = list(self.greetings)
        if limit is None or len(samples) < self.greetings.maxlen:
            return []
        median = statistics.median(samples)
        if median <= limit:
            return []
        return [
            f"greeting median {median:.3f} s over the last {len(samples):d} checks (degraded_latency_seconds {limit:g})"
        ]

    def queue_reasons(self, now):
        """The queue's reasons, from a reading at most QUEUE_READ_INTERVAL old."""
        max_messages = self.settings["degraded_queue_messages"]
        max_age = self.settings["degraded_queue_age_seconds"]
        if max_messages is None and max_age is None:
            return []
        if self.queue_reading is None or not 0 <= now - self.queue_reading[0] < QUEUE_READ_INTERVAL:
            self.queue_reading = (now, self.read_queue_reasons(max_messages, max_age))
        return list(self.queue_reading[1])

    def read_queue_reasons(self, max_messages, max_age):
        try:
            counts, oldest = self.read_queue()
        except OSError as err:
            return [f"queue unreadable: {err}"]
        reasons = []
        messages = queue_total(counts)
        if max_messages is not None and messages > max_messages:
            reasons.append(f"queue holds {messages:d} messages (degraded_queue_messages {max_messages:d})")
        if max_age is not None and oldest is not None and oldest > max_age:
            reasons.append(f"oldest queued message is {oldest:.0f} s old (degraded_queue_age_seconds {max_age:g})")
        return reasons

    def grade(self):
        """A Grade: the degraded level and its facts, for the endpoints."""
        with self.lock:
            samples = list(self.greetings)
            return Grade(
                self.degraded,
                self.degraded_reasons if self.degraded else (),
                round(statistics.median(samples), 4) if samples else None,
                self.degraded_fault(),
                self.greeting_seconds.snapshot(),
            )

    def track_value(self):
        """What keepalived must read from track_file: 1 while the MTA failed
        (with the hysteresis above) or the node is degraded with
        failover_on_degraded, or, without split_brain_track_file, while the
        node is demoted too; else 0."""
        demoted = self.demoted and not self.split_brain_track_file
        return 1 if self.own_fault() or demoted else 0

    def track_values(self):
        """{path: value} of every file this agent writes."""
        values = {}
        if self.track_file:
            values[self.track_file] = self.track_value()
        if self.split_brain_track_file:
            values[self.split_brain_track_file] = 1 if self.demoted else 0
        return values

    def set_demoted(self, demoted):
        """The guard's verdict; applies to its track file at once."""
        self.demoted = demoted
        self.sync_track()

    def sync_track(self, force=False):
        """Write each file whose value differs from the last one written there
        (every file with force). Both threads call it; whichever writes last
        has seen both causes."""
        with self.track_lock:
            for path, value in self.track_values().items():
                if value != self.written.get(path) or force:
                    self.written[path] = value
                    self._write_track(path, value)

    def _write_track(self, path, value):
        # A track file that cannot be written costs keepalived its fast path,
        # not HAProxy its answers: the watcher goes on.
        try:
            write_track_value(path, value)
        except OSError as err:
            log(f"cannot write {path}: {err}")

    def run(self):
        """Check forever; returns (or raises) only on a bug, and serve() then exits."""
        self.sync_track(force=True)
        while True:
            began = self.clock()
            if self.observe(self.check(self.settings)) is not None:
                self.sync_track()
            self.sleep(max(0.0, self.settings["watch_interval"] - (self.clock() - began)))


def read_priority_override(path):
    """N of the last "priority N" line of keepalived's override file; None
    when there is no file (or no such line: keepalived keeps its own)."""
    if not path:
        return None
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            text = handle.read(4096)
    except OSError:
        return None
    value = None
    for line in text.splitlines():
        # keepalived's comments start with # or !.
        fields = line.split("#", 1)[0].split("!", 1)[0].split()
        number = fields[1] if len(fields) == 2 and fields[0] == "priority" else ""
        if number.isascii() and number.isdigit() and 1 <= int(number) <= 255:
            value = int(number)
    return value


def effective_priority(settings):
    """The priority keepalived runs with: the override file's while it exists."""
    override = read_priority_override(settings["vrrp_priority_file"])
    return settings["vrrp_priority"] if override is None else override


def claim(priority, address):
    """A node's VRRP claim; the greater claim wins: the higher priority, and
    between equal priorities the higher IPv4 address (RFC 5798 6.4.3)."""
    return (priority, int(ipaddress.IPv4Address(address)))


def describe_claims(ours, theirs):
    """Why one claim beats the other, in words (claims as (priority, address))."""
    text = f"priority {theirs[0]} against this node's {ours[0]}"
    if theirs[0] == ours[0]:
        text += f", address {theirs[1]} against {ours[1]}"
    return text


def fetch_status(url, timeout=PEER_TIMEOUT):
    """The JSON document at url (the peer agent's /status). Raises OSError,
    http.client.HTTPException or ValueError when there is none."""
    parts = urllib.parse.urlsplit(url)
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    connection = http.client.HTTPConnection(parts.hostname, parts.port or 80, timeout=timeout)
    try:
        connection.request("GET", target, headers={"Connection": "close"})
        response = connection.getresponse()
        if response.status != 200:
            raise ValueError(f"HTTP status {response.status}")
        body = response.read(PEER_STATUS_LIMIT + 1)
        if len(body) > PEER_STATUS_LIMIT:
            raise ValueError(f"an answer longer than {PEER_STATUS_LIMIT} bytes")
        return json.loads(body)
    finally:
        connection.close()


# What fetch_status raises for a peer that does not answer as an agent must.
PEER_ERRORS = (OSError, http.client.HTTPException, ValueError, RecursionError)


class PeerView:
    """The facts of the peer's /status the guard decides on."""

    def __init__(self, holds_ip, healthy, priority, address):
        self.holds_ip, self.healthy = holds_ip, healthy
        self.priority, self.address = priority, address
        self.claim = claim(priority, address)


def peer_view(document, own_address=None):
    """A PeerView of the peer's /status, or None when a field is missing or
    malformed (an agent of an earlier version, or not an agent at all)."""
    if not isinstance(document, dict):
        return None
    holds_ip, healthy = document.get("holds_floating_ip"), document.get("healthy")
    priority, address = document.get("vrrp_priority"), document.get("address")
    if type(holds_ip) is not bool or type(healthy) is not bool:
        return None
    if type(priority) is not int or not 1 <= priority <= 255 or not isinstance(address, str):
        return None
    try:
        view = PeerView(holds_ip, healthy, priority, str(ipaddress.IPv4Address(address)))
    except ValueError:
        return None
    # peer_agent_url naming this node itself decides nothing.
    return None if view.address == own_address else view


class AdvertListener:
    """When the last VRRP advertisement from `source` arrived.

    A raw socket of IP protocol 112 gets a copy of every VRRP packet the
    host's input firewall lets through, whatever keepalived does with it:
    an advert counts here exactly when VRRP from the peer gets through."""

    def __init__(self, source, clock=time.monotonic):
        self.source, self.clock = source, clock
        self.last = None
        self.available = False

    def start(self, open_socket=None):
        """Listen in a daemon thread; False (and one log line) without a raw socket."""
        try:
            sock = (open_socket or self._open)()
        except OSError as err:
            log(
                f"cannot open a raw socket for VRRP adverts ({err}; CAP_NET_RAW?): a split-brain "
                "demotion lasts until the peer lets the floating IP go, fails or stops answering"
            )
            return False
        self.available = True
        threading.Thread(target=self.listen, args=(sock,), name="mailha-adverts", daemon=True).start()
        return True

    @staticmethod
    def _open():
        return socket.socket(socket.AF_INET, socket.SOCK_RAW, IPPROTO_VRRP)

    def listen(self, sock):
        try:
            while True:
                _, sender = sock.recvfrom(65535)
                if sender[0] == self.source:
                    self.heard()
        except OSError as err:
            log(f"the VRRP advert listener stopped: {err}; demotions now clear only through the peer's /status")
        finally:
            self.available = False
            sock.close()

    def heard(self):
        """Record an advert from the peer, now."""
        self.last = self.clock()

    def heard_within(self, seconds):
        last = self.last
        return self.available and last is not None and self.clock() - last <= seconds


def request_fip_recheck(path, reason):
    """Ask the floating IP mover for a settled check (fip_recheck_file: a
    systemd path unit runs mailha-node fip-check --settle when the file is
    written). A write that fails costs one line: the mover's timer still
    checks within its interval."""
    try:
        os.makedirs(os.path.dirname(path), mode=0o755, exist_ok=True)
        # Written in place, not by rename: the path unit watches close-after-write.
        with open(path, "w", encoding="utf-8") as handle:
            handle.write(f"{time.time():.3f} {reason}\n")
    except OSError as err:
        log(f"cannot ask for a floating IP check ({path}: {err}); the mover's timer checks within its interval")
        return
    log(f"{reason}: asked the floating IP mover for a settled check ({path})")


class SplitBrainGuard:
    """The split-brain handling of the header: poll() is one round, run()
    polls every watch_interval in a thread of its own."""

    def __init__(
        self,
        settings,
        fetch=fetch_status,
        holds_ip=None,
        adverts=None,
        on_change=None,
        clock=time.monotonic,
        sleep=time.sleep,
        demoted=False,
        emit=events.emit,
        on_recheck=None,
    ):
        self.settings = settings
        self.emit = emit
        self.url = settings["peer_agent_url"]
        self.address = health.node_address(settings)
        self.peer_address = health.peer_address(settings)
        # An advert missing for three intervals is VRRP's own master-down
        # time; the second is for the clocks of two threads and a poll.
        self.window = 3 * settings["vrrp_advert_interval"] + 1.0
        self.fetch = fetch
        self.holds_ip = holds_ip or (lambda: holds_address(settings["floating_ip"]))
        self.adverts = adverts
        self.on_change = on_change or (lambda demoted: None)
        self.on_recheck = on_recheck or (lambda reason: None)
        self.clock, self.sleep = clock, sleep
        self.split_brain = False
        # A restarted agent may start demoted (was_demoted): the first poll
        # keeps or clears it as for any demotion.
        self.demoted_reason = CARRIED_OVER if demoted else None

    @property
    def demoted(self):
        return self.demoted_reason is not None

    def claim(self):
        return claim(effective_priority(self.settings), self.address)

    def vrrp_heard(self):
        """An advert from the peer arrived within the window: VRRP gets through."""
        return self.adverts is not None and self.adverts.heard_within(self.window)

    def poll(self):
        """One round: ask the peer while this node holds the floating IP or is
        demoted; demote, or clear the demotion, as the header says."""
        holds_ip = self.holds_ip()
        if not holds_ip and not self.demoted:
            self.split_brain = False
            return
        try:
            view = peer_view(self.fetch(self.url, PEER_TIMEOUT), self.address)
        except PEER_ERRORS:
            view = None
        if view is None:
            settled = f"the peer's agent ({self.url}) does not answer with a valid /status"
        elif not view.holds_ip:
            settled = f"peer {view.address} does not hold the floating IP"
        elif not view.healthy:
            settled = f"peer {view.address} is unhealthy"
        elif self.vrrp_heard():
            settled = f"VRRP advertisements from {self.peer_address} arrive"
        else:
            settled = None
        split_brain = holds_ip and view is not None and view.holds_ip
        began = split_brain and not self.split_brain
        ended = self.split_brain and not split_brain and holds_ip
        self.split_brain = split_brain
        if self.demoted:
            if settled is not None:
                self._set(None, f"split-brain demotion cleared: {settled}")
            return
        if ended:
            self.on_recheck(f"the split brain ended with this node holding the floating IP ({settled})")
        if not split_brain:
            return
        ours = self.claim()
        if view.claim > ours and settled is None:
            details = describe_claims((ours[0], self.address), (view.priority, view.address))
            reason = f"split brain, peer {view.address} holds the floating IP with a better claim ({details})"
            self._set(reason, f"{reason}: demoting this node (track file 1, /active 503)")
        elif began:
            if view.claim > ours:
                outcome = f"the peer's claim is better, but {settled}: no demotion"
            elif view.claim == ours:
                outcome = "the claims are equal: nothing decided"
            else:
                outcome = "this node's claim is better: it keeps the floating IP"
            log(
                f"split brain: peer {view.address} (priority {view.priority}) holds the floating IP too, "
                f"as this node (priority {ours[0]}, {self.address}) does; {outcome}"
            )
            self.emit("split_brain", action="detected", peer=view.address, demoted=False, reason=outcome)

    def _set(self, reason, line):
        log(line)
        self.demoted_reason = reason
        self.on_change(reason is not None)
        action = "demoted" if reason is not None else "cleared"
        self.emit("split_brain", action=action, peer=self.peer_address, demoted=reason is not None, reason=line)

    def run(self):
        """Poll forever; returns (or raises) only on a bug, and serve() then exits."""
        while True:
            began = self.clock()
            self.poll()
            self.sleep(max(0.0, self.settings["watch_interval"] - (self.clock() - began)))


def grade_of(watcher):
    """The watcher's Grade (NO_GRADE without a watcher)."""
    return watcher.grade() if watcher is not None else NO_GRADE


def evaluate(settings, watcher=None, guard=None, grade=None):
    """The facts behind every endpoint: the watcher's latest verdict while
    it is fresh, otherwise a check of its own. A degraded relay stays
    active (HAProxy keeps a slow but working relay) unless
    failover_on_degraded; grade is the watcher's, taken once by the caller."""
    findings = (watcher.fresh() if watcher is not None else None) or health.run_checks(settings)
    grade = grade_of(watcher) if grade is None else grade
    holds_ip = holds_address(settings["floating_ip"])
    drained = os.path.exists(settings["drain_file"])
    demoted_reason = guard.demoted_reason if guard is not None else None
    if findings["exit_code"] != health.EXIT_HEALTHY:
        active_reason = f"unhealthy: {findings['reason']}"
    elif demoted_reason is not None:
        # Before "not held": keepalived releases the floating IP at once.
        active_reason = f"demoted: {demoted_reason}"
    elif grade.fault:
        # Likewise: the track file says 1, keepalived releases it at once.
        active_reason = f"degraded (failover_on_degraded): {'; '.join(grade.reasons)}"
    elif not holds_ip:
        active_reason = f"floating IP {settings['floating_ip'] or '(unset)'} not held"
    elif drained:
        active_reason = f"drained: {settings['drain_file']} present"
    else:
        active_reason = None
    return findings, holds_ip, drained, active_reason


def vrrp_state(log_path):
    """(state, ISO time) of the last transition keepalived's notify script
    logged (mailha.node.vrrp's format), or ("UNKNOWN", None)."""
    return vrrp.state(log_path)


def route(path):
    """How Postfix routes this relay's mail, from mailha-postfix-role's file:
    "hold" (a switch holds it), "hand-over" (to the floating IP), "direct"
    (it delivers), or None when the file cannot be read."""
    return postfix_role.read_route(path)


def status_document(
    settings, findings, holds_ip, drained, active_reason, guard=None, grade=NO_GRADE, queue_details=None
):
    """/status. queue_details gives (counts, oldest age); by default it reads the queue now."""
    counts, oldest_age = (queue_details or (lambda: health.queue_details(settings["queue_directory"])))()
    state, since = vrrp_state(settings["vrrp_log"])
    demoted_reason = guard.demoted_reason if guard is not None else None
    return {
        "host": socket.getfqdn(),
        "healthy": findings["exit_code"] == health.EXIT_HEALTHY,
        "health": findings,
        "health_level": health_level(findings, grade),
        "greeting_latency_median_seconds": grade.median,
        "degraded_reasons": list(grade.reasons),
        "vrrp_state": state,
        "vrrp_since": since,
        "holds_floating_ip": holds_ip,
        "floating_ip": settings["floating_ip"],
        "drained": drained,
        "active": active_reason is None,
        "active_reason": active_reason,
        "queue": counts,
        "queue_oldest_age_seconds": oldest_age,
        "route": route(settings["route_file"]),
        # The claim the peer's guard compares (header: split brain).
        "vrrp_priority": effective_priority(settings),
        "address": health.node_address(settings),
        "split_brain": guard.split_brain if guard is not None else False,
        "demoted": demoted_reason is not None,
        "demoted_reason": demoted_reason,
    }


def _metrics(findings, holds_ip, drained, active_reason, guard=None, grade=NO_GRADE, transition=None, queue_age=None):
    """The Prometheus text format (0.0.4): HELP and TYPE once per family.
    transition is the transition log's last line (vrrp.Transition, None
    when unknown), queue_age the oldest queued message's age (None: none)."""
    lines = [
        "# HELP mailha_health_exit_code Exit code of mailha-health (0 healthy).",
        "# TYPE mailha_health_exit_code gauge",
        f"mailha_health_exit_code {findings['exit_code']:d}",
        "# HELP mailha_active 1 when this node answers 200 on /active.",
        "# TYPE mailha_active gauge",
        f"mailha_active {active_reason is None:d}",
        "# HELP mailha_floating_ip_held 1 when this node holds the floating IP.",
        "# TYPE mailha_floating_ip_held gauge",
        f"mailha_floating_ip_held {holds_ip:d}",
        "# HELP mailha_drained 1 when the drain file is present.",
        "# TYPE mailha_drained gauge",
        f"mailha_drained {drained:d}",
        "# HELP mailha_split_brain 1 when this node and its peer both held the floating IP at the last poll.",
        "# TYPE mailha_split_brain gauge",
        f"mailha_split_brain {guard is not None and guard.split_brain:d}",
        "# HELP mailha_demoted 1 while this node is demoted for a split brain.",
        "# TYPE mailha_demoted gauge",
        f"mailha_demoted {guard is not None and guard.demoted:d}",
    ]
    level = health_level(findings, grade)
    lines += [
        "# HELP mailha_health_level Health level: 0 ok, 1 degraded, 2 failed.",
        "# TYPE mailha_health_level gauge",
        f"mailha_health_level {LEVELS.index(level):d}",
    ]
    if "seconds" in findings.get("smtp", {}):
        lines += [
            "# HELP mailha_smtp_check_seconds Seconds the latest SMTP check took.",
            "# TYPE mailha_smtp_check_seconds gauge",
            f"mailha_smtp_check_seconds {findings['smtp']['seconds']}",
        ]
    if grade.greetings is not None:
        lines += grade.greetings.exposition(
            "mailha_smtp_greeting_seconds", "Seconds of each greeting the watcher measured, since the agent started."
        )
    state = transition.state if transition is not None else "UNKNOWN"
    state = state if state in VRRP_STATE_LABELS else "UNKNOWN"
    lines += [
        "# HELP mailha_vrrp_state 1 for keepalived's state at its last transition (UNKNOWN: no transition log).",
        "# TYPE mailha_vrrp_state gauge",
        *(f'mailha_vrrp_state{{state="{label}"}} {label == state:d}' for label in VRRP_STATE_LABELS),
    ]
    stamp = transition.timestamp() if transition is not None else None
    if stamp is not None:
        lines += [
            "# HELP mailha_vrrp_last_transition_timestamp_seconds Unix time of keepalived's last transition.",
            "# TYPE mailha_vrrp_last_transition_timestamp_seconds gauge",
            f"mailha_vrrp_last_transition_timestamp_seconds {stamp:.3f}",
        ]
    if "messages" in findings.get("queue", {}):
        lines += [
            "# HELP mailha_queue_messages Messages in the five queues (mailha.node.queue), with max_queue set.",
            "# TYPE mailha_queue_messages gauge",
            f"mailha_queue_messages {findings['queue']['messages']:d}",
        ]
    if queue_age is not None:
        lines += [
            "# HELP mailha_queue_oldest_message_age_seconds Age of the oldest queued message.",
            "# TYPE mailha_queue_oldest_message_age_seconds gauge",
            f"mailha_queue_oldest_message_age_seconds {queue_age:g}",
        ]
    if "free_mb" in findings.get("disk", {}):
        lines += [
            "# HELP mailha_queue_disk_free_megabytes Free megabytes on the queue filesystem.",
            "# TYPE mailha_queue_disk_free_megabytes gauge",
            f"mailha_queue_disk_free_megabytes {findings['disk']['free_mb']:d}",
        ]
    return "\n".join(lines) + "\n"


def metrics_page(settings, findings, holds_ip, drained, active_reason, guard=None, grade=NO_GRADE, queue_details=None):
    """/metrics: _metrics with the VRRP transition read now and the queue's
    oldest age from queue_details (by default a reading of the queue now)."""
    try:
        queue_age = (queue_details or (lambda: health.queue_details(settings["queue_directory"])))()[1]
    except OSError:
        queue_age = None
    transition = vrrp.last_transition(settings["vrrp_log"])
    return _metrics(findings, holds_ip, drained, active_reason, guard, grade, transition, queue_age)


class RequestTimeout(TimeoutError):
    """The request line and headers did not arrive within agent_request_timeout."""


class DeadlineReader(io.RawIOBase):
    """A connection's reads, all bounded by one deadline."""

    def __init__(self, sock, seconds, clock=time.monotonic):
        super().__init__()
        self.sock, self.seconds, self.clock = sock, seconds, clock
        self.deadline = clock() + seconds

    def readable(self):
        return True

    def readinto(self, buffer):
        remaining = self.deadline - self.clock()
        if remaining > 0:
            self.sock.settimeout(remaining)
            with contextlib.suppress(TimeoutError):
                return self.sock.recv_into(buffer)
        raise RequestTimeout(f"no complete request within {self.seconds:g} s")


class Notices:
    """Counts what a flood does and logs it as one line at most every
    `interval` seconds (the first at once), so a flood cannot flood the journal."""

    def __init__(self, interval=NOTICE_INTERVAL, clock=time.monotonic):
        self.interval, self.clock = interval, clock
        self.lock = threading.Lock()
        self.counts = collections.Counter()
        self.logged = None

    def count(self, event):
        with self.lock:
            self.counts[event] += 1
        self.flush()

    def flush(self):
        """Log the counts unless a line went out less than `interval` s ago
        (the server's loop calls this too, so the last counts get out)."""
        with self.lock:
            now = self.clock()
            if not self.counts or (self.logged is not None and now - self.logged < self.interval):
                return
            self.logged = now
            summary = "; ".join(f"{what}: {number}" for what, number in sorted(self.counts.items()))
            self.counts.clear()
        log(f"{summary} (one such line at most every {self.interval:g} s)")


class AgentServer(http.server.ThreadingHTTPServer):
    """The HTTP server with the request deadline and the connection cap
    described in the header."""

    daemon_threads = True
    # server_close() must not wait for the handler threads.
    block_on_close = False
    request_queue_size = LISTEN_BACKLOG

    def __init__(self, settings, watcher=None, handler=None, guard=None, queue_reader=None):
        self.settings, self.watcher, self.guard = settings, watcher, guard
        # main() gives the watcher's: one walk of the spool serves both.
        self.queue_reader = queue_reader or QueueReader(settings["queue_directory"])
        self.request_timeout = settings["agent_request_timeout"]
        self.max_connections = settings["agent_max_connections"]
        self.notices = Notices()
        self._lock = threading.Lock()
        # socket -> [client address, still waiting for its request], oldest first.
        self._connections = {}
        address = settings["agent_bind_address"]
        if ipaddress.ip_address(address).version == 6:
            self.address_family = socket.AF_INET6
        super().__init__((address, settings["agent_port"]), handler or Handler)

    def server_bind(self):
        # HTTPServer's own also looks up the address's name: at boot, with
        # DNS not up yet, a wait for a name nothing here uses.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = self.server_address[:2]

    def service_actions(self):
        # serve_forever calls this at least every poll interval.
        self.notices.flush()

    def process_request(self, request, client_address):
        if not self._admit(request, client_address[0]):
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except RuntimeError:
            # "can't start new thread": the unit's TasksMax is reached.
            self._release(request)
            self.shutdown_request(request)
            self.notices.count("connections closed for want of a thread")

    def process_request_thread(self, request, client_address):
        # ThreadingMixIn's, with the slot given back before the socket closes.
        try:
            self.finish_request(request, client_address)
        except Exception:
            self.handle_error(request, client_address)
        finally:
            self._release(request)
            self.shutdown_request(request)

    def _admit(self, request, client):
        """Give request a slot: a free one, else a waiting connection's
        (closed here); False when every connection is being answered."""
        with self._lock:
            if len(self._connections) >= self.max_connections:
                displaced = self._most_idle()
                if displaced is None:
                    admitted, event = False, "connections refused at the cap"
                else:
                    # Under the lock: its thread has not released (and closed) it.
                    # Its read returns end of file and its handler ends.
                    del self._connections[displaced]
                    with contextlib.suppress(OSError):
                        displaced.shutdown(socket.SHUT_RDWR)
                    admitted, event = True, "waiting connections closed at the cap"
            else:
                admitted, event = True, None
            if admitted:
                self._connections[request] = [client, True]
        if event:
            self.notices.count(f"{event} of {self.max_connections}")
        return admitted

    def _most_idle(self):
        """The oldest connection still waiting for its request, of the client
        that holds the most of them; None when none is waiting."""
        waiting = [(sock, client) for sock, (client, idle) in self._connections.items() if idle]
        if not waiting:
            return None
        per_client = collections.Counter(client for _, client in waiting)
        most = max(per_client.values())
        return next(sock for sock, client in waiting if per_client[client] == most)

    def request_received(self, request):
        """Mark request as being answered (never displaced from now on);
        False when it was displaced while its request arrived."""
        with self._lock:
            entry = self._connections.get(request)
            if entry is None:
                return False
            entry[1] = False
            return True

    def _release(self, request):
        with self._lock:
            self._connections.pop(request, None)

    def open_connections(self):
        with self._lock:
            return len(self._connections)

    def handle_error(self, request, client_address):
        if isinstance(sys.exc_info()[1], ConnectionError):
            self.notices.count("connections reset by their client")
            return
        super().handle_error(request, client_address)


class Handler(http.server.BaseHTTPRequestHandler):
    server_version = "mailha-health-agent"
    # One request per connection: every answer also says "Connection: close".
    protocol_version = "HTTP/1.0"

    def setup(self):
        # Also bounds each write of the answer.
        self.timeout = self.server.request_timeout
        super().setup()
        self.rfile.close()
        self.rfile = io.BufferedReader(DeadlineReader(self.connection, self.server.request_timeout))

    def parse_request(self):
        if not super().parse_request():
            return False
        if not self.server.request_received(self.connection):
            self.close_connection = True
            return False
        self.connection.settimeout(self.timeout)
        return True

    def _answer(self, status, body, content_type="text/plain; charset=utf-8"):
        payload = body.encode("utf-8")
        try:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(payload)))
            self.send_header("Cache-Control", "no-store")
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(payload)
        except (BrokenPipeError, ConnectionResetError):
            # HAProxy resets a check's connection once it has read the
            # status line; that is not an error worth a traceback.
            self.close_connection = True

    def do_GET(self):  # the name http.server calls
        settings, watcher, guard = self.server.settings, self.server.watcher, self.server.guard
        path, _, query = self.path.partition("?")
        if path not in ("/active", "/health", "/metrics", "/status"):
            self._answer(404, "not found\n")
            return
        grade = grade_of(watcher)
        findings, holds_ip, drained, active_reason = evaluate(settings, watcher, guard, grade)
        facts = (settings, findings, holds_ip, drained, active_reason, guard, grade)
        reader = self.server.queue_reader
        if path == "/active":
            if active_reason is None:
                self._answer(200, "active\n")
            else:
                self._answer(503, f"not active: {active_reason}\n")
        elif path == "/status":
            fresh = "1" in urllib.parse.parse_qs(query).get("fresh", ())
            document = status_document(*facts, lambda: reader.details(0 if fresh else STATUS_QUEUE_MAX_AGE))
            self._answer(200, json.dumps(document) + "\n", "application/json")
        elif path == "/health":
            if findings["exit_code"] != health.EXIT_HEALTHY:
                self._answer(503, f"{findings['reason']}\n")
            elif grade.degraded:
                self._answer(200, f"healthy, degraded: {'; '.join(grade.reasons)}\n")
            else:
                self._answer(200, "healthy\n")
        else:
            page = metrics_page(*facts, lambda: reader.details(QUEUE_READ_INTERVAL))
            self._answer(200, page, "text/plain; version=0.0.4; charset=utf-8")

    def log_request(self, code="-", size="-"):
        # HAProxy polls several times a second: access lines would flood the journal.
        # Errors still reach it through log_error.
        pass

    def log_error(self, message_format, *args):
        if args and isinstance(args[0], RequestTimeout):
            self.server.notices.count("requests not received in time")
            return
        super().log_error(message_format, *args)


def serve(server, watcher=None, guard=None):
    """Answer HTTP and run the watcher (and the split-brain guard), each in
    a thread, until one of them stops; then log why and return EXIT_STOPPED.

    Neither stops by design. Without the watcher the endpoints would each
    run a check and the track file would go stale, silently; without the
    HTTP server HAProxy would find the port closed while systemd saw a live
    process. Exiting lets systemd start a whole agent again."""
    stopped = queue.Queue()

    def run(what, target):
        try:
            target()
        except BaseException as err:
            stopped.put(f"{what} died: {type(err).__name__}: {err}")
        else:
            stopped.put(f"{what} stopped")

    parts = [("the HTTP server", "mailha-http", server.serve_forever)]
    if watcher is not None:
        parts.append(("the watcher", "mailha-watcher", watcher.run))
    if guard is not None:
        parts.append(("the split-brain guard", "mailha-peer", guard.run))
    for what, name, target in parts:
        threading.Thread(target=run, args=(what, target), name=name, daemon=True).start()
    log(f"{stopped.get()}; exiting for systemd to start the agent again")
    server.shutdown()
    return EXIT_STOPPED


def main():
    try:
        settings = health.load_config()
    except health.UsageError as err:
        log(str(err))
        return health.EXIT_USAGE
    demoted = was_demoted(settings)
    if demoted:
        log(f"{settings['split_brain_track_file']} says demoted for a split brain: kept until the guard's poll")
    # One reading of the queue for the watcher and the endpoints.
    queue_reader = QueueReader(settings["queue_directory"])
    watcher = Watcher(settings, demoted=demoted, queue_reader=queue_reader) if settings["watch_interval"] > 0 else None
    guard = None
    # load_config makes sure the watcher runs when a peer is set.
    if settings["peer_agent_url"] and watcher is not None:
        adverts = AdvertListener(health.peer_address(settings))
        adverts.start()
        recheck = settings["fip_recheck_file"]
        guard = SplitBrainGuard(
            settings,
            adverts=adverts,
            on_change=watcher.set_demoted,
            demoted=demoted,
            on_recheck=(lambda reason: request_fip_recheck(recheck, reason)) if recheck else None,
        )
    try:
        server = AgentServer(settings, watcher, guard=guard, queue_reader=queue_reader)
    except OSError as err:
        log(f"cannot listen on {settings['agent_bind_address']} port {settings['agent_port']}: {err}")
        return EXIT_STOPPED
    try:
        return serve(server, watcher, guard)
    except KeyboardInterrupt:
        return 0
    finally:
        server.server_close()


def run(argv=()):
    """The health-agent command: no arguments (its settings are health.conf's);
    like the script it replaces, it ignores any it is given."""
    return main()


if __name__ == "__main__":
    sys.exit(main())
