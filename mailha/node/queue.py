"""Postfix's queue counts, one definition for every reader.

The counts (queue_details) are files per queue directory, recursively, for
all five queues: maildrop, incoming, active, deferred, hold. Postfix marks a
queue file complete by setting its owner execute bit (cleanup in incoming,
postdrop in maildrop). A file in incoming or maildrop without it is one its
writer was still writing (or died writing: a crash leaves them behind); its
client never got a 250, so it is not a queued message and is not counted.

Two sums of them:
- total: every message on the relay (the health check's max_queue, the
  agent's /status, `mailha status`);
- pending: total without the hold queue, the messages Postfix sends by
  itself. A flush ("postqueue -f") never sends held mail (only an operator
  releases it, postsuper -H), so the hand-over waits for pending to reach 0,
  not total: it would wait for held mail forever.

The age of the oldest message is from its arrival time, the queue file's
"T" record (what `postqueue -j` reports as arrival_time), not the file's
mtime: the queue manager sets a deferred file's mtime to its next retry,
in the future, so mtime made a message deferred for hours look newer than
one queued a second ago (the lab's sink deferring one recipient showed it).
A file whose first records cannot be read that way counts with its mtime.

Before this definition the agent skipped maildrop and the hand-over skipped
hold (playbooks/tasks/handover.yml); maildrop is normally empty within
milliseconds (pickup moves it), so the agent's numbers only gain a key.
"""

import os
import stat
import time

QUEUE_DIRECTORY = "/var/spool/postfix"
QUEUE_NAMES = ("maildrop", "incoming", "active", "deferred", "hold")
# Queues whose files are counted only when complete (owner execute bit).
COMPLETE_ONLY = ("maildrop", "incoming")
HELD = ("hold",)
# Postfix's record types (src/global/rec_type.h) and how far into a queue
# file the arrival time is looked for: cleanup writes the size record (C),
# then the time (T), within the first hundred bytes or so.
REC_TYPE_TIME = ord("T")
ARRIVAL_SEARCH_BYTES = 512
ARRIVAL_SEARCH_RECORDS = 4


def arrival_time(head):
    """The arrival time (Unix seconds) in the first bytes of a queue file,
    or None. A record is a type byte, its length in 7-bit groups (low group
    first, the high bit set on all but the last), then the data; the T
    record's data is "seconds microseconds"."""
    position = 0
    for _ in range(ARRIVAL_SEARCH_RECORDS):
        if position >= len(head):
            return None
        kind, position = head[position], position + 1
        length = shift = 0
        while True:
            if position >= len(head) or shift > 28:
                return None
            byte, position = head[position], position + 1
            length |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                break
        data, position = head[position : position + length], position + length
        if kind == REC_TYPE_TIME:
            fields = data.split()
            if len(data) == length and fields and fields[0].isdigit():
                return float(fields[0])
            return None
    return None


def message_time(path, info):
    """When the message in the queue file arrived: its T record, else mtime."""
    try:
        with open(path, "rb") as handle:
            arrived = arrival_time(handle.read(ARRIVAL_SEARCH_BYTES))
    except OSError:
        arrived = None
    return info.st_mtime if arrived is None else arrived


def queue_details(queue_directory=QUEUE_DIRECTORY, now=None):
    """Files per queue (recursive; complete ones only in maildrop and
    incoming) and the age in seconds of the oldest file among them (None
    when all are empty)."""
    counts, oldest = read_queue(queue_directory)
    return counts, age_of(oldest, now)


def age_of(arrival, now=None):
    """Seconds since `arrival` (Unix time; None stays None), never negative."""
    return None if arrival is None else max(0.0, round((now or time.time()) - arrival, 1))


def read_queue(queue_directory=QUEUE_DIRECTORY):
    """Files per queue and the oldest file's arrival (Unix time, None when
    all are empty): one pass that lists, stats and opens every queue file."""
    counts = {}
    oldest = None
    for name in QUEUE_NAMES:
        counts[name] = 0
        pending = [os.path.join(queue_directory, name)]
        while pending:
            path = pending.pop()
            try:
                with os.scandir(path) as entries:
                    for entry in entries:
                        if entry.is_dir(follow_symlinks=False):
                            pending.append(entry.path)
                            continue
                        # Postfix moves files between these directories while
                        # they are read: a file gone between its listing and
                        # its stat is skipped, never an error (the hand-over's
                        # find failed with "No such file or directory" on the
                        # lab before it ignored such races).
                        try:
                            info = entry.stat(follow_symlinks=False)
                        except FileNotFoundError:
                            continue  # delivered while we looked
                        if name in COMPLETE_ONLY and not info.st_mode & stat.S_IXUSR:
                            continue
                        counts[name] += 1
                        arrived = message_time(entry.path, info)
                        oldest = arrived if oldest is None else min(oldest, arrived)
            except FileNotFoundError:
                continue
    return counts, oldest


def total(counts):
    """Every message on the relay."""
    return sum(counts.values())


def pending(counts):
    """The messages Postfix sends by itself: all but the hold queue's."""
    return sum(number for name, number in counts.items() if name not in HELD)


def count_queue(queue_directory=QUEUE_DIRECTORY):
    """total() of the queue counts."""
    return total(queue_details(queue_directory)[0])
