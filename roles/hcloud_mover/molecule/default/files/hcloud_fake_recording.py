"""Molecule only: mailha.hcloud_fake, with every request it answers
appended as one JSON line to $HCLOUD_FAKE_RECORD (method, path, status,
body; never a header, so never the token), for the tests to count calls."""

import json
import os
import sys

from mailha import hcloud_fake

RECORD = os.environ.get("HCLOUD_FAKE_RECORD", "/var/lib/hcloud-fake/requests.jsonl")


class RecordingFake(hcloud_fake.FakeHcloud):
    def handle(self, method, path, headers, body):
        status, document, extra = super().handle(method, path, headers, body)
        line = {"method": method, "path": path.split("?", 1)[0], "status": status, "body": body}
        with open(RECORD, "a", encoding="utf-8") as record:
            record.write(json.dumps(line) + "\n")
        return status, document, extra


hcloud_fake.FakeHcloud = RecordingFake  # main() builds the fake from this name
sys.exit(hcloud_fake.main())
