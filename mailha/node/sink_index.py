"""mailha-sink-index: list what the sink stored, one JSON object per line.

Fields: file (full path), message_id, subject, from, to, dkim_domain (d= of
the first DKIM-Signature header, or null) and client_address (the address
the sink received the message from, read from the topmost Received header,
the one the sink added). Only the headers are read.

  mailha-sink-index [--maildir DIR] [--since EPOCH] [--count-only]

The default Maildir is maildir= in /etc/mailha/sink.conf (the sink role
writes it), else /var/spool/sink/Maildir.

--since lists only files stored at or after EPOCH (seconds, by their
modification time): a benchmark reads its own run, not the whole Maildir.

Exit codes: 0 listed, 1 the Maildir cannot be read, 2 usage error.
"""

import argparse
import email.parser
import email.policy
import json
import os
import re
import sys
from email.header import decode_header, make_header

from mailha.node import config

CONFIG_FILE = "/etc/mailha/sink.conf"
DEFAULTS = {"maildir": "/var/spool/sink/Maildir"}
FOLDERS = ("new", "cur")
FOLDING = re.compile(r"\r?\n[ \t]+")
ADDRESS_LITERAL = re.compile(r"\[(?:IPv6:)?([0-9A-Fa-f:.]+)\]")
BY_CLAUSE = re.compile(r"\sby\s")
DKIM_DOMAIN = re.compile(r"(?:^|;)\s*d\s*=\s*([^;\s]+)")
PARSER = email.parser.BytesHeaderParser(policy=email.policy.compat32)


def message_files(maildir, since=None):
    for folder in FOLDERS:
        path = os.path.join(maildir, folder)
        with os.scandir(path) as entries:
            names = sorted(
                e.name
                for e in entries
                if e.is_file() and not e.name.startswith(".") and (since is None or stored_since(e, since))
            )
        for name in names:
            yield os.path.join(path, name)


def stored_since(entry, since):
    try:
        return entry.stat().st_mtime >= since
    except FileNotFoundError:
        return False  # removed while we listed


def read_headers(path):
    """Parse the header block only: stop reading at the first empty line."""
    lines = []
    with open(path, "rb") as handle:
        for line in handle:
            if line in (b"\n", b"\r\n"):
                break
            lines.append(line)
    return PARSER.parsebytes(b"".join(lines))


def text(value):
    if value is None:
        return None
    value = FOLDING.sub(" ", str(value)).strip()
    try:
        return str(make_header(decode_header(value)))
    except (ValueError, LookupError):
        return value


def dkim_domain(headers):
    signature = headers.get("DKIM-Signature")
    if signature is None:
        return None
    found = DKIM_DOMAIN.search(FOLDING.sub(" ", str(signature)))
    return found.group(1) if found else None


def client_address(headers):
    received = headers.get("Received")
    if received is None:
        return None
    # "from HELO (NAME [ADDRESS]) by ...": the last literal before "by" is
    # the connecting client; the HELO name may itself be a literal.
    from_clause = BY_CLAUSE.split(FOLDING.sub(" ", str(received)), maxsplit=1)[0]
    literals = ADDRESS_LITERAL.findall(from_clause)
    return literals[-1] if literals else None


def describe(path):
    headers = read_headers(path)
    return {
        "file": path,
        "message_id": text(headers.get("Message-ID")),
        "subject": text(headers.get("Subject")),
        "from": text(headers.get("From")),
        "to": text(headers.get("To")),
        "dkim_domain": dkim_domain(headers),
        "client_address": client_address(headers),
    }


def main(argv=None):
    try:
        default = config.load(CONFIG_FILE, DEFAULTS)["maildir"]
    except config.UsageError as err:
        print(f"mailha-sink-index: {err}", file=sys.stderr)
        return 2
    parser = argparse.ArgumentParser(
        prog="mailha-sink-index", description="List the messages stored by the sink, one JSON object per line."
    )
    parser.add_argument("--maildir", default=default, help="Maildir to read (default: %(default)s)")
    parser.add_argument("--count-only", action="store_true", help="print only the number of stored messages")
    parser.add_argument("--since", type=float, help="only files stored at or after this time (epoch seconds)")
    args = parser.parse_args(argv)
    try:
        files = list(message_files(args.maildir, args.since))
    except OSError as err:
        print(f"mailha-sink-index: {err}", file=sys.stderr)
        return 1
    if args.count_only:
        print(len(files))
        return 0
    out = sys.stdout
    for path in files:
        try:
            record = describe(path)
        except FileNotFoundError:
            continue  # removed while we listed
        out.write(json.dumps(record) + "\n")
    return 0


def run(argv=None):
    try:
        return main(argv)
    except BrokenPipeError:  # e.g. piped into head
        # Python would complain about the broken stdout again at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(run())
