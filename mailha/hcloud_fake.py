"""A small local fake of the Hetzner Cloud API: the calls that move a floating
IP and set a DNS record.

    python -m mailha.hcloud_fake --listen 127.0.0.1:8780 --token-file FILE \\
        --state-file STATE.json [--assign-latency 1] [--on-assign COMMAND] \\
        [--rrset-latency 0.5] [--on-rrset COMMAND] \\
        [--tls-cert CERT.pem --tls-key KEY.pem]

It answers what the hcloud SDK (1.18 and 2.x; zones: 2.x) sends for a
floating IP and a zone's record sets and parses what the real API returns,
in the same JSON shapes:

  GET  /v1/floating_ips/{id}                 {"floating_ip": {...}}
  GET  /v1/floating_ips/{id}/actions         {"actions": [...], "meta": {"pagination": ...}}: the
                                             floating IP's actions, oldest first; ?status= filters
  POST /v1/floating_ips/{id}/actions/assign  {"server": ID} -> 201 {"action": {... "running" ...}}
  GET  /v1/actions/{id}                      {"action": {...}}: running, then success or error
                                             once the assign latency has passed
  GET  /v1/pricing                           {"pricing": {...}}: the price list given to the fake
                                             (`mailha hcloud-costs`)
  GET  /v1/zones/{id_or_name}                {"zone": {...}}
  GET  /v1/zones/{zone}/rrsets/{name}/{type} {"rrset": {...}}
  POST /v1/zones/{zone}/rrsets               {"name", "type", "ttl", "records"} -> 201 {"rrset", "action"}
  POST /v1/zones/{zone}/rrsets/{name}/{type}/actions/set_records  {"records": [{"value"}]} -> 201 {"action"}
  POST /v1/zones/{zone}/rrsets/{name}/{type}/actions/change_ttl   {"ttl": N} -> 201 {"action"}
  DELETE /v1/zones/{zone}/rrsets/{name}/{type}                    -> 201 {"action"}

A zone is named by its id or its name, as the real API allows; an rrset by
its name relative to the zone ("@" for the apex, lower case) and its type.

Like the real API: every request needs "Authorization: Bearer TOKEN" (none
or an unknown one: 401 unauthorized; a read-only token on a POST: 403
token_readonly); an error is {"error": {"code", "message", "details"}} with
the HTTP status the API gives that code; every answer carries RateLimit-Limit,
RateLimit-Remaining and RateLimit-Reset (a bucket of `rate_limit` requests,
refilled one a second; an empty bucket answers 429 rate_limit_exceeded); an
assign while another action on the same floating IP runs is 423 locked; the
floating IP's server changes when its action succeeds, not when it is asked.
The same for a zone: a change while another action on the zone runs is 423
locked, and an rrset changes (or is created) when its action succeeds,
`rrset_latency` after it was asked. A change to a secondary zone is 422
incorrect_zone_mode; to an rrset with change protection, 423 protected; a
create of an rrset that exists, 409 uniqueness_error; a TXT value that is
not quoted strings of at most 255 characters, 400 invalid_input.

Faults for tests (FakeHcloud methods), each for the next N matching requests:
fail() answers an error code, rate_limit() a 429 with its headers, delay()
answers late (the request is still carried out, as a real one that arrived
would be), fail_actions() lets the next actions (assign or rrset) end in
status "error". Every request is recorded (FakeHcloud.requests) for assertions,
and so is every connection that failed the TLS handshake
(FakeHcloud.tls_failures).
on_assign(floating_ip_id, server_id) is called when an assign succeeds, so a
lab can move the address between its hosts; on_rrset(zone_name, name, type,
ttl, values) when an rrset action succeeds (set_records, create, change_ttl;
with the rrset as it now is), so a lab can mirror the record into its own
DNS server. An exception in either hook ends the action in error and
changes nothing.

The state file (JSON) holds {"floating_ips": [{"id", "ip", "server", ...}],
"servers": [{"id", "name"}], "zones": [{"id", "name", "mode", "ttl",
"rrsets": [{"name", "type", "ttl", "records": [{"value"}]}]}]} ("zones"
only when there are any); it is read at start and rewritten (by rename)
after every change, so a lab or a test can read who holds the address and
what a record says.

With --tls-cert and --tls-key (both PEM; start(tls=(cert, key))) it serves
HTTPS (TLS 1.2 at least), as the real API does, so a mover on another host
can reach it: the mover sends its token over https only (http to loopback
alone) and trusts the fake's CA through api_ca_file (mailha.lab_cloud).
Each connection's handshake runs in its own thread, bounded: a client that
fails it (plain HTTP, garbage, a CA it does not trust, silence) loses that
connection only.
"""

import argparse
import datetime
import http.server
import ipaddress
import json
import re
import shlex
import ssl
import subprocess
import sys
import threading
import time
import urllib.parse
from dataclasses import dataclass, field

# The HTTP status the API answers with each error code.
ERROR_STATUS = {
    "invalid_input": 400,
    "json_error": 400,
    "unauthorized": 401,
    "forbidden": 403,
    "token_readonly": 403,
    "not_found": 404,
    "conflict": 409,
    "uniqueness_error": 409,
    "incorrect_zone_mode": 422,
    "locked": 423,
    "protected": 423,
    "rate_limit_exceeded": 429,
    "server_error": 500,
    "bad_gateway": 502,
    "maintenance": 503,
    "unavailable": 503,
    "timeout": 504,
}
DEFAULT_MESSAGES = {
    "unauthorized": "unable to authenticate",
    "forbidden": "insufficient permissions for this request",
    "token_readonly": "the token is read-only",
    "not_found": "resource not found",
    "locked": "the resource is locked by a running action",
    "rate_limit_exceeded": "limit of requests per hour reached",
    "maintenance": "cannot perform operation due to maintenance",
    "conflict": "the resource has changed during the request, please retry",
    "timeout": "the request timed out",
    "protected": "the resource is protected",
}
# Endpoint names, for faults and for reading the request log.
ENDPOINTS = (
    "get_floating_ip",
    "list_floating_ip_actions",
    "assign",
    "get_action",
    "get_pricing",
    "get_zone",
    "get_rrset",
    "create_rrset",
    "set_rrset_records",
    "change_rrset_ttl",
    "delete_rrset",
)
ZONE_ENDPOINTS = ("get_zone", "get_rrset", "create_rrset", "set_rrset_records", "change_rrset_ttl", "delete_rrset")
# The record types the API knows (hcloud.zones.domain.ZoneRRSetType).
RRSET_TYPES = (
    "A",
    "AAAA",
    "CAA",
    "CNAME",
    "DS",
    "HINFO",
    "HTTPS",
    "MX",
    "NS",
    "PTR",
    "RP",
    "SOA",
    "SRV",
    "SVCB",
    "TLSA",
    "TXT",
)
ZONE_NAMESERVERS = ["hydrogen.ns.hetzner.com.", "oxygen.ns.hetzner.com.", "helium.ns.hetzner.de."]
HOME_LOCATION = {
    "id": 1,
    "name": "fsn1",
    "description": "Falkenstein DC Park 1",
    "country": "DE",
    "city": "Falkenstein",
    "latitude": 50.47612,
    "longitude": 12.370071,
    "network_zone": "eu-central",
}


def _iso(epoch):
    return datetime.datetime.fromtimestamp(epoch, datetime.UTC).isoformat(timespec="seconds")


@dataclass
class Request:
    """One request as the fake received it and what it answered."""

    method: str
    path: str
    endpoint: str | None
    body: object
    status: int = 0
    error: str | None = None
    time: float = 0.0
    headers: dict = field(default_factory=dict)  # the answer's extra headers (RateLimit-*)


@dataclass
class _Fault:
    endpoint: str  # an ENDPOINTS name or "*"
    times: int
    code: str | None = None
    message: str | None = None
    status: int | None = None
    headers: dict = field(default_factory=dict)
    delay: float = 0.0


class FakeHcloud:
    """The fake API: state, faults and the request log. start() serves it in
    a thread (loopback by default; HTTPS with tls=(certificate, key)) and
    returns the endpoint (http://127.0.0.1:PORT/v1, or https://...)."""

    def __init__(
        self,
        token,
        floating_ips=(),
        servers=(),
        readonly_token=None,
        assign_latency=0.0,
        rate_limit=3600,
        on_assign=None,
        state_file=None,
        pricing=None,
        zones=(),
        rrset_latency=0.0,
        on_rrset=None,
    ):
        self._tokens = {token: "read_write"}
        if readonly_token:
            self._tokens[readonly_token] = "read_only"
        self.assign_latency = assign_latency
        self.on_assign = on_assign
        self.rrset_latency = rrset_latency
        self.on_rrset = on_rrset
        self.state_file = state_file
        # GET /pricing answers this document (the API's `pricing` object); None: 404.
        self.pricing = pricing
        self.requests = []
        # (client address, error) of each connection that failed the TLS handshake.
        self.tls_failures = []
        self._lock = threading.RLock()
        self._stopping = threading.Event()
        self._faults = []
        self._action_faults = []
        self._actions = {}
        self._next_action_id = 1000
        self._limit = rate_limit
        self._bucket = float(rate_limit)
        self._bucket_time = time.time()
        self._server = None
        self.floating_ips = {}
        self.servers = {}
        for server in servers:
            server_id = int(server["id"])
            self.servers[server_id] = {"id": server_id, "name": server.get("name", f"server{server_id}")}
        for fip in floating_ips:
            self.floating_ips[int(fip["id"])] = self._floating_ip(fip)
        # zones by id (the API's zone object); their rrsets by zone id, then (name, type).
        self.zones = {}
        self.rrsets = {}
        for zone in zones:
            zone_id = int(zone["id"])
            self.zones[zone_id] = self._zone(zone)
            self.rrsets[zone_id] = {}
            for rrset in zone.get("rrsets", ()):
                records = [{"value": r["value"], "comment": r.get("comment")} for r in rrset.get("records", ())]
                self._put_rrset(zone_id, rrset["name"], rrset["type"], rrset.get("ttl"), records, rrset)

    @staticmethod
    def _floating_ip(fip):
        ip = fip.get("ip", "203.0.113.10")
        return {
            "id": int(fip["id"]),
            "name": fip.get("name", f"fip{fip['id']}"),
            "description": fip.get("description", ""),
            "ip": ip,
            "type": fip.get("type", "ipv4"),
            "server": fip.get("server"),
            "dns_ptr": [{"ip": ip, "dns_ptr": fip.get("dns_ptr", "static.example.invalid")}],
            "home_location": dict(HOME_LOCATION),
            "blocked": False,
            "protection": {"delete": False},
            "labels": fip.get("labels", {}),
            "created": fip.get("created", "2024-01-01T00:00:00+00:00"),
        }

    @staticmethod
    def _zone(zone):
        return {
            "id": int(zone["id"]),
            "name": zone["name"].rstrip(".").lower(),
            "created": zone.get("created", "2024-01-01T00:00:00+00:00"),
            "mode": zone.get("mode", "primary"),
            "ttl": int(zone.get("ttl", 3600)),
            "labels": zone.get("labels", {}),
            "protection": {"delete": False},
            "status": "ok",
            "record_count": 0,
            "registrar": "other",
            "primary_nameservers": [],
            "authoritative_nameservers": {
                "assigned": list(ZONE_NAMESERVERS),
                "delegated": list(ZONE_NAMESERVERS),
                "delegation_last_check": None,
                "delegation_status": "valid",
            },
        }

    def _put_rrset(self, zone_id, name, rrset_type, ttl, records, given=None):
        given = given or {}
        self.rrsets[zone_id][(name, rrset_type)] = {
            "id": f"{name}/{rrset_type}",
            "name": name,
            "type": rrset_type,
            "ttl": ttl,
            "labels": given.get("labels", {}),
            "protection": {"change": bool((given.get("protection") or {}).get("change", False))},
            "records": records,
            "zone": zone_id,
        }
        self._count_records(zone_id)

    def _count_records(self, zone_id):
        self.zones[zone_id]["record_count"] = sum(len(r["records"]) for r in self.rrsets[zone_id].values())

    # -- loading and saving ------------------------------------------------

    @classmethod
    def from_state_file(cls, path, token, **options):
        with open(path, encoding="utf-8") as handle:
            state = json.load(handle)
        return cls(
            token,
            state.get("floating_ips", ()),
            state.get("servers", ()),
            state_file=path,
            zones=state.get("zones", ()),
            **options,
        )

    def _save(self):
        if not self.state_file:
            return
        from mailha.node import files

        state = {"floating_ips": list(self.floating_ips.values()), "servers": list(self.servers.values())}
        if self.zones:
            state["zones"] = [
                {k: zone[k] for k in ("id", "name", "mode", "ttl")}
                | {"rrsets": [self._stored_rrset(r) for r in self.rrsets[zone_id].values()]}
                for zone_id, zone in self.zones.items()
            ]
        files.replace_file(self.state_file, json.dumps(state, indent=2) + "\n", mode=0o644)

    # -- faults --------------------------------------------------------------

    def fail(self, endpoint, code, times=1, message=None, status=None):
        """The next `times` requests to `endpoint` ("*": any) answer error `code`."""
        self._add_fault(_Fault(endpoint, times, code=code, message=message, status=status))

    def rate_limit(self, endpoint="*", times=1, reset_in=2.0, limit=None):
        """The next `times` requests answer 429 with the headers of an empty
        bucket that is full again in `reset_in` seconds."""
        limit = self._limit if limit is None else limit
        headers = {"RateLimit-Limit": str(limit), "RateLimit-Remaining": "0", "_reset_in": reset_in}
        self._add_fault(_Fault(endpoint, times, code="rate_limit_exceeded", headers=headers))

    def delay(self, endpoint, seconds, times=1):
        """The next `times` requests to `endpoint` are answered `seconds` late."""
        self._add_fault(_Fault(endpoint, times, delay=seconds))

    def fail_actions(self, code="action_failed", message="Action failed", times=1):
        """The next `times` actions (assign or rrset) end in status "error"."""
        with self._lock:
            self._action_faults.extend([(code, message)] * times)

    def _add_fault(self, fault):
        if fault.endpoint != "*" and fault.endpoint not in ENDPOINTS:
            raise ValueError(f"unknown endpoint {fault.endpoint!r}; one of {', '.join(ENDPOINTS)} or *")
        with self._lock:
            self._faults.append(fault)

    def _take_fault(self, endpoint):
        with self._lock:
            for fault in self._faults:
                if fault.times > 0 and fault.endpoint in ("*", endpoint):
                    fault.times -= 1
                    if fault.times == 0:
                        self._faults.remove(fault)
                    return fault
        return None

    # -- reading the log ----------------------------------------------------

    def calls(self, endpoint=None):
        """The recorded requests, to `endpoint` only when given."""
        with self._lock:
            return [r for r in self.requests if endpoint is None or r.endpoint == endpoint]

    def _tls_failed(self, client_address, err):
        with self._lock:
            self.tls_failures.append((client_address, f"{type(err).__name__}: {err}"))

    def server_of(self, floating_ip_id):
        with self._lock:
            self._settle()
            return self.floating_ips[int(floating_ip_id)]["server"]

    def rrset_of(self, zone, name, rrset_type):
        """(ttl, [values]) of an rrset as it is now, or None when it is not there."""
        with self._lock:
            self._settle()
            zone_id = self._zone_id(str(zone))
            rrset = self.rrsets.get(zone_id, {}).get((name, rrset_type))
            return None if rrset is None else (rrset["ttl"], [r["value"] for r in rrset["records"]])

    @staticmethod
    def _stored_rrset(rrset):
        return {k: rrset[k] for k in ("name", "type", "ttl", "records", "protection")}

    # -- the rate limit -----------------------------------------------------

    def _take_request(self):
        """(allowed, headers) of the project's bucket: `limit` requests,
        refilled one a second."""
        now = time.time()
        with self._lock:
            self._bucket = min(self._limit, self._bucket + (now - self._bucket_time))
            self._bucket_time = now
            allowed = self._bucket >= 1
            if allowed:
                self._bucket -= 1
            remaining = int(self._bucket)
            reset = int(now + (self._limit - self._bucket)) + 1
        headers = {"RateLimit-Limit": str(self._limit), "RateLimit-Remaining": str(remaining)}
        return allowed, headers | {"RateLimit-Reset": str(reset)}

    # -- actions ------------------------------------------------------------

    def _settle(self):
        """Finish every action whose time has come (called under the lock):
        its hook first (a lab's), then its change, unless either failed."""
        now = time.time()
        changed = False
        for action in self._actions.values():
            if action["status"] != "running" or action["_due"] > now:
                continue
            error = action.pop("_error", None)
            if error is None:
                try:
                    action["_hook"]()
                except Exception as err:  # the lab's hook failed: the action fails
                    error = ("service_error", f"{action['_hook_name']} failed: {err}")
            if error is None:
                action["_apply"]()
                action["status"] = "success"
                changed = True
            else:
                action["status"] = "error"
                action["error"] = {"code": error[0], "message": error[1]}
            action["progress"] = 100
            action["finished"] = _iso(now)
        if changed:
            self._save()

    def _public(self, action):
        return {k: v for k, v in action.items() if not k.startswith("_")}

    def _start_action(self, command, resources, lock, latency, apply, hook, hook_name):
        """A running action that applies its change `latency` seconds from now."""
        self._next_action_id += 1
        now = time.time()
        action = {
            "id": self._next_action_id,
            "command": command,
            "status": "running",
            "progress": 0,
            "started": _iso(now),
            "finished": None,
            "resources": resources,
            "error": None,
            "_due": now + latency,
            "_lock": lock,
            "_apply": apply,
            "_hook": hook,
            "_hook_name": hook_name,
        }
        if self._action_faults:
            action["_error"] = self._action_faults.pop(0)
        self._actions[action["id"]] = action
        timer = threading.Timer(latency, self._settle_locked)
        timer.daemon = True
        timer.start()
        return action

    def _locked(self, lock):
        return any(a["status"] == "running" and a["_lock"] == lock for a in self._actions.values())

    def _assign(self, fip_id, body):
        server_id = body.get("server") if isinstance(body, dict) else None
        if not isinstance(server_id, int) or isinstance(server_id, bool):
            return 400, _error("invalid_input", "invalid input in field 'server'")
        if server_id not in self.servers:
            return 404, _error("not_found", f"server with ID {server_id} not found")
        if self._locked(("floating_ip", fip_id)):
            return 423, _error("locked", "floating IP is locked by a running action")

        def hook():
            if self.on_assign is not None:
                self.on_assign(fip_id, server_id)

        def apply():
            self.floating_ips[fip_id]["server"] = server_id

        action = self._start_action(
            "assign_floating_ip",
            [{"id": fip_id, "type": "floating_ip"}, {"id": server_id, "type": "server"}],
            ("floating_ip", fip_id),
            self.assign_latency,
            apply,
            hook,
            "on_assign",
        )
        return 201, {"action": self._public(action)}

    # -- zones ----------------------------------------------------------------

    def _zone_id(self, id_or_name):
        """The id of the zone named by its id or its name, or None."""
        if id_or_name.isdigit():
            return int(id_or_name) if int(id_or_name) in self.zones else None
        name = id_or_name.rstrip(".").lower()
        return next((zone_id for zone_id, zone in self.zones.items() if zone["name"] == name), None)

    def _zone_change(self, command, zone_id, name, rrset_type, ttl, records):
        """Start the action that gives the rrset `records` (None: as they are)
        and `ttl` (None: as it is, or for a new rrset the zone's default)."""

        def result():
            current = self.rrsets[zone_id].get((name, rrset_type))
            new_ttl = ttl if ttl is not None else (current["ttl"] if current else None)
            new_records = records if records is not None else current["records"]
            return new_ttl, new_records

        def hook():
            if self.on_rrset is not None:
                new_ttl, new_records = result()
                zone_name = self.zones[zone_id]["name"]
                self.on_rrset(zone_name, name, rrset_type, new_ttl, [r["value"] for r in new_records])

        def apply():
            new_ttl, new_records = result()
            if command == "delete_rrset":
                self.rrsets[zone_id].pop((name, rrset_type), None)
                self._count_records(zone_id)
                return
            self._put_rrset(
                zone_id, name, rrset_type, new_ttl, new_records, self.rrsets[zone_id].get((name, rrset_type))
            )

        return self._start_action(
            command, [{"id": zone_id, "type": "zone"}], ("zone", zone_id), self.rrset_latency, apply, hook, "on_rrset"
        )

    def _zone_endpoint(self, endpoint, ids, body):
        zone_id = self._zone_id(ids[0])
        if zone_id is None:
            return 404, _error("not_found", f"zone with ID or name {ids[0]!r} not found")
        zone = self.zones[zone_id]
        if endpoint == "get_zone":
            return 200, {"zone": dict(zone)}
        if endpoint == "get_rrset":
            rrset = self.rrsets[zone_id].get((ids[1], ids[2]))
            if rrset is None:
                return 404, _error("not_found", f"rrset {ids[1]}/{ids[2]} not found in zone {zone['name']}")
            return 200, {"rrset": json.loads(json.dumps(rrset))}
        if zone["mode"] != "primary":
            return 422, _error("incorrect_zone_mode", "this operation is not supported for this zone's mode")
        if endpoint == "create_rrset":
            return self._create_rrset(zone_id, body)
        rrset = self.rrsets[zone_id].get((ids[1], ids[2]))
        if rrset is None:
            return 404, _error("not_found", f"rrset {ids[1]}/{ids[2]} not found in zone {zone['name']}")
        if rrset["protection"]["change"]:
            return 423, _error("protected", f"rrset {rrset['id']} is protected against changes")
        if endpoint == "delete_rrset":
            if self._locked(("zone", zone_id)):
                return 423, _error("locked", "zone is locked by a running action")
            action = self._zone_change("delete_rrset", zone_id, rrset["name"], rrset["type"], None, [])
            return 201, {"action": self._public(action)}
        if endpoint == "set_rrset_records":
            records, problem = _records(rrset["type"], body)
            if problem:
                return 400, _error("invalid_input", problem)
            ttl, command = None, "set_rrset_records"
        else:
            ttl = body.get("ttl") if isinstance(body, dict) else None
            if not isinstance(body, dict) or "ttl" not in body or not _valid_ttl(ttl, allow_none=True):
                return 400, _error("invalid_input", "invalid input in field 'ttl'")
            records, command = None, "change_rrset_ttl"
        if self._locked(("zone", zone_id)):
            return 423, _error("locked", "zone is locked by a running action")
        action = self._zone_change(command, zone_id, rrset["name"], rrset["type"], ttl, records)
        return 201, {"action": self._public(action)}

    def _create_rrset(self, zone_id, body):
        if not isinstance(body, dict):
            return 400, _error("invalid_input", "invalid input: a JSON object is expected")
        name, rrset_type, ttl = body.get("name"), body.get("type"), body.get("ttl")
        zone_name = self.zones[zone_id]["name"]
        if (
            not isinstance(name, str)
            or not _RRSET_NAME.fullmatch(name)
            or name == zone_name
            or name.endswith("." + zone_name)
        ):
            return 400, _error("invalid_input", "invalid input in field 'name'")
        if rrset_type not in RRSET_TYPES:
            return 400, _error("invalid_input", "invalid input in field 'type'")
        if "ttl" in body and not _valid_ttl(ttl, allow_none=True):
            return 400, _error("invalid_input", "invalid input in field 'ttl'")
        records, problem = _records(rrset_type, {"records": body.get("records", [])})
        if problem:
            return 400, _error("invalid_input", problem)
        if (name, rrset_type) in self.rrsets[zone_id]:
            return 409, _error("uniqueness_error", f"rrset {name}/{rrset_type} exists in zone {zone_name}")
        if self._locked(("zone", zone_id)):
            return 423, _error("locked", "zone is locked by a running action")
        action = self._zone_change("create_rrset", zone_id, name, rrset_type, ttl, records)
        rrset = {
            "id": f"{name}/{rrset_type}",
            "name": name,
            "type": rrset_type,
            "ttl": ttl,
            "labels": body.get("labels") or {},
            "protection": {"change": False},
            "records": records,
            "zone": zone_id,
        }
        return 201, {"rrset": rrset, "action": self._public(action)}

    def _settle_locked(self):
        with self._lock:
            self._settle()

    # -- requests -----------------------------------------------------------

    def handle(self, method, path, headers, body):
        """(status, JSON document, extra headers) for one request; recorded."""
        path_only, _, query = path.partition("?")
        endpoint, ids = _route(method, path_only)
        if endpoint == "list_floating_ip_actions":
            ids.append(urllib.parse.parse_qs(query).get("status", []))
        record = Request(method, path_only, endpoint, body, time=time.time())
        with self._lock:
            self.requests.append(record)
        status, document, extra = self._answer(method, endpoint, ids, headers, body)
        record.status, record.headers = status, dict(extra)
        if status >= 400:
            record.error = document["error"]["code"]
        return status, document, extra

    def _answer(self, method, endpoint, ids, headers, body):
        authorization = headers.get("Authorization", "")
        token = authorization[len("Bearer ") :] if authorization.startswith("Bearer ") else None
        kind = self._tokens.get(token)
        if kind is None:
            return 401, _error("unauthorized", DEFAULT_MESSAGES["unauthorized"]), {}
        allowed, limit_headers = self._take_request()
        fault = self._take_fault(endpoint) if endpoint else None
        if fault is not None and fault.delay:
            self._stopping.wait(fault.delay)
        if fault is not None and fault.code == "rate_limit_exceeded":
            extra = {k: v for k, v in fault.headers.items() if not k.startswith("_")}
            extra["RateLimit-Reset"] = str(int(time.time() + fault.headers.get("_reset_in", 1.0)))
            return 429, _error("rate_limit_exceeded", DEFAULT_MESSAGES["rate_limit_exceeded"]), extra
        if not allowed:
            return 429, _error("rate_limit_exceeded", DEFAULT_MESSAGES["rate_limit_exceeded"]), limit_headers
        if fault is not None and fault.code:
            status = fault.status or ERROR_STATUS.get(fault.code, 500)
            message = fault.message or DEFAULT_MESSAGES.get(fault.code, fault.code)
            return status, _error(fault.code, message), limit_headers
        if endpoint is None:
            return 404, _error("not_found", "no such endpoint in the fake"), limit_headers
        if method != "GET" and kind == "read_only":
            return 403, _error("token_readonly", DEFAULT_MESSAGES["token_readonly"]), limit_headers
        with self._lock:
            self._settle()
            status, document = self._dispatch(endpoint, ids, body)
        return status, document, limit_headers

    def _dispatch(self, endpoint, ids, body):
        if endpoint == "get_pricing":
            if self.pricing is None:
                return 404, _error("not_found", "the fake was given no price list")
            return 200, {"pricing": self.pricing}
        if endpoint in ZONE_ENDPOINTS:
            return self._zone_endpoint(endpoint, ids, body)
        number = int(ids[0])
        if endpoint == "get_action":
            action = self._actions.get(number)
            if action is None:
                return 404, _error("not_found", f"action with ID {number} not found")
            return 200, {"action": self._public(action)}
        fip = self.floating_ips.get(number)
        if fip is None:
            return 404, _error("not_found", f"floating IP with ID {number} not found")
        if endpoint == "get_floating_ip":
            return 200, {"floating_ip": dict(fip)}
        if endpoint == "list_floating_ip_actions":
            return 200, self._floating_ip_actions(number, ids[1])
        return self._assign(number, body)

    def _floating_ip_actions(self, fip_id, statuses):
        """One page of the floating IP's actions with these statuses (all
        when none are given), as the API lists them."""
        actions = [
            self._public(action)
            for action in self._actions.values()
            if {"id": fip_id, "type": "floating_ip"} in action["resources"]
            and (not statuses or action["status"] in statuses)
        ]
        pagination = {
            "page": 1,
            "per_page": max(25, len(actions)),
            "previous_page": None,
            "next_page": None,
            "last_page": 1,
            "total_entries": len(actions),
        }
        return {"actions": actions, "meta": {"pagination": pagination}}

    # -- serving ------------------------------------------------------------

    def start(self, host="127.0.0.1", port=0, tls=None):
        """Serve in a daemon thread; returns the API endpoint URL. `tls`:
        (certificate file, key file) to serve HTTPS, as the real API does."""
        self._stopping.clear()
        context = None
        if tls is not None:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.minimum_version = ssl.TLSVersion.TLSv1_2
            context.load_cert_chain(*tls)
        self._server = _Server((host, port), _Handler, self, context)
        thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, name="hcloud-fake", daemon=True
        )
        thread.start()
        return self.endpoint

    @property
    def endpoint(self):
        host, port = self._server.server_address[:2]
        scheme = "http" if self._server.tls is None else "https"
        return f"{scheme}://{host}:{port}/v1"

    def stop(self):
        self._stopping.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self):
        if self._server is None:
            self.start()
        return self

    def __exit__(self, *exc):
        self.stop()


def _error(code, message, details=None):
    return {"error": {"code": code, "message": message, "details": details or {}}}


# An rrset's name: relative to its zone, lower case, no final dot; "@" is the apex.
_RRSET_NAME = re.compile(r"@|(\*\.)?[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?(\.[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?)*")


def _valid_ttl(ttl, allow_none=False):
    if ttl is None:
        return allow_none
    return isinstance(ttl, int) and not isinstance(ttl, bool) and 60 <= ttl <= 2147483647


# A TXT value as the API takes it: quoted strings of at most 255 characters
# (an escaped character counts once), separated by a space.
_TXT_STRING = r'"(?:[^"\\]|\\.){0,255}"'
_TXT_RDATA = re.compile(rf"{_TXT_STRING}(?: {_TXT_STRING})*")


def _records(rrset_type, body):
    """(records, None) of a body's "records", or (None, what is wrong)."""
    records = body.get("records") if isinstance(body, dict) else None
    if not isinstance(records, list) or not records:
        return None, "invalid input in field 'records': at least one record is needed"
    checked = []
    for record in records:
        value = record.get("value") if isinstance(record, dict) else None
        if not isinstance(value, str) or not value:
            return None, "invalid input in field 'records': every record needs a value"
        if rrset_type in ("A", "AAAA"):
            try:
                address = ipaddress.ip_address(value)
            except ValueError:
                address = None
            if address is None or address.version != (4 if rrset_type == "A" else 6):
                return None, f"invalid input in field 'records': {value!r} is no {rrset_type} record's value"
        if rrset_type == "TXT" and not _TXT_RDATA.fullmatch(value):
            return None, f"invalid input in field 'records': {value!r} is not one or more quoted strings of 255"
        checked.append({"value": value, "comment": record.get("comment")})
    return checked, None


_ROUTES = (
    ("GET", re.compile(r"/v1/floating_ips/(\d+)"), "get_floating_ip"),
    ("GET", re.compile(r"/v1/floating_ips/(\d+)/actions"), "list_floating_ip_actions"),
    ("POST", re.compile(r"/v1/floating_ips/(\d+)/actions/assign"), "assign"),
    ("GET", re.compile(r"/v1/actions/(\d+)"), "get_action"),
    ("GET", re.compile(r"/v1/pricing"), "get_pricing"),
    ("GET", re.compile(r"/v1/zones/([^/]+)"), "get_zone"),
    ("GET", re.compile(r"/v1/zones/([^/]+)/rrsets/([^/]+)/([^/]+)"), "get_rrset"),
    ("POST", re.compile(r"/v1/zones/([^/]+)/rrsets"), "create_rrset"),
    ("POST", re.compile(r"/v1/zones/([^/]+)/rrsets/([^/]+)/([^/]+)/actions/set_records"), "set_rrset_records"),
    ("POST", re.compile(r"/v1/zones/([^/]+)/rrsets/([^/]+)/([^/]+)/actions/change_ttl"), "change_rrset_ttl"),
    ("DELETE", re.compile(r"/v1/zones/([^/]+)/rrsets/([^/]+)/([^/]+)"), "delete_rrset"),
)


def _route(method, path):
    """(endpoint name, the path's parameters as strings), or (None, [])."""
    for route_method, pattern, name in _ROUTES:
        match = pattern.fullmatch(path)
        if match and method == route_method:
            return name, [urllib.parse.unquote(group) for group in match.groups()]
    return None, []


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    # A client that connects and says nothing holds its own thread this long.
    handshake_seconds = 10.0

    def __init__(self, address, handler, fake, tls=None):
        self.fake = fake
        self.tls = tls
        super().__init__(address, handler)

    def finish_request(self, request, client_address):
        """With TLS, the handshake happens here, in the request's own thread
        (never in the accepting one): a client that fails it (plain HTTP,
        garbage, a certificate it does not trust, silence) loses its
        connection, is counted in fake.tls_failures and stops nothing else."""
        if self.tls is None:
            super().finish_request(request, client_address)
            return
        request.settimeout(self.handshake_seconds)
        try:
            wrapped = self.tls.wrap_socket(request, server_side=True)
        except (ssl.SSLError, OSError) as err:
            self.fake._tls_failed(client_address, err)
            return
        try:
            wrapped.settimeout(None)
            super().finish_request(wrapped, client_address)
        finally:
            # The plain socket was handed over to `wrapped`: close this one.
            self.shutdown_request(wrapped)


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def _serve(self, method):
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            status, document, extra = 400, _error("json_error", "invalid JSON"), {}
        else:
            status, document, extra = self.server.fake.handle(method, self.path, self.headers, body)
        data = json.dumps(document).encode()
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.send_header("X-Correlation-Id", f"fake-{id(self):x}")
            for name, value in extra.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)
        except OSError:  # the client gave up waiting (a delay() longer than its timeout)
            self.close_connection = True

    def do_GET(self):
        self._serve("GET")

    def do_POST(self):
        self._serve("POST")

    def do_DELETE(self):
        self._serve("DELETE")

    def log_message(self, format, *args):  # quiet: the request log is self.server.fake.requests
        pass


def _run_hook(command):
    """A hook that runs `command` with the hook's arguments appended (lists
    spread: on_rrset's values are its last arguments)."""

    def hook(*arguments):
        spread = [
            str(item) for argument in arguments for item in (argument if isinstance(argument, list) else [argument])
        ]
        subprocess.run([*shlex.split(command), *spread], check=True, timeout=60)

    return hook


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m mailha.hcloud_fake", description=__doc__.split("\n\n")[0])
    parser.add_argument("--listen", default="127.0.0.1:8780", help="ADDRESS:PORT (default: %(default)s)")
    parser.add_argument("--token-file", required=True, help="file holding the read/write token")
    parser.add_argument("--readonly-token-file", help="file holding a read-only token")
    parser.add_argument("--state-file", required=True, help="JSON: floating_ips and servers; rewritten on change")
    parser.add_argument("--assign-latency", type=float, default=1.0, help="seconds an assign action runs")
    parser.add_argument("--on-assign", help="command run with FLOATING_IP_ID SERVER_ID when an assign succeeds")
    parser.add_argument("--rrset-latency", type=float, default=0.5, help="seconds an rrset action runs")
    parser.add_argument(
        "--on-rrset",
        help="command run with ZONE NAME TYPE TTL VALUE... when an rrset action succeeds (set_records, ...)",
    )
    parser.add_argument("--tls-cert", help="PEM certificate: serve HTTPS (with --tls-key)")
    parser.add_argument("--tls-key", help="PEM private key of --tls-cert")
    options = parser.parse_args(argv)
    if bool(options.tls_cert) != bool(options.tls_key):
        parser.error("--tls-cert and --tls-key go together")
    host, _, port = options.listen.rpartition(":")
    if not host or not port.isdigit():
        parser.error(f"--listen: not ADDRESS:PORT: {options.listen!r}")

    def read(path):
        with open(path, encoding="utf-8") as handle:
            return handle.read().strip()

    fake = FakeHcloud.from_state_file(
        options.state_file,
        read(options.token_file),
        readonly_token=read(options.readonly_token_file) if options.readonly_token_file else None,
        assign_latency=options.assign_latency,
        on_assign=_run_hook(options.on_assign) if options.on_assign else None,
        rrset_latency=options.rrset_latency,
        on_rrset=_run_hook(options.on_rrset) if options.on_rrset else None,
    )
    tls = (options.tls_cert, options.tls_key) if options.tls_cert else None
    print(f"hcloud fake: {fake.start(host, int(port), tls=tls)}", flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        fake.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
