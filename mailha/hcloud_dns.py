"""Set or remove one DNS record through Hetzner's API when the zone is
served by Hetzner (inventory: mailha_dns_updates: hcloud), where an RFC 2136
update has no server to go to: the active-relay record at a switch, and the
DKIM selectors an isolation rotates.

    python -m mailha.hcloud_dns --zone example.com --name relay --type A \\
        (--value 10.0.1.12 | --absent) [--ttl 60] [--endpoint URL] [--ca-file PEM] \\
        [--token-file FILE] [--wait-nameserver IP] [--total-seconds 60] [-o text|json]

Run on the controller (switch.yml and isolate.yml run it with the
playbook's Python). It reads the rrset; when it already holds exactly
--value, it stops; else it sets the records (POST .../actions/set_records),
or creates the rrset with --ttl when it is not there, polls the action
until it ends, and reads the rrset again to check. With --absent it deletes
the rrset instead (DELETE .../rrsets/NAME/TYPE), or stops when there is
none. A TXT --value is the text itself (v=DKIM1; k=rsa; p=...): it goes to
the API as zone-file rdata, quoted strings of at most 255 characters, as
Terraform's dns_records module writes it. With --wait-nameserver it then
asks that authoritative server until it answers the value (or, --absent,
no record) too (Hetzner's servers publish what the API holds a moment
later), within the same bound. Retries and their bounds are the floating-IP mover's
(mailha.node.fipmover.BoundedRun): `locked`, `rate_limit_exceeded`,
`conflict`, server errors, failed actions and timeouts are retried with
backoff within --total-seconds; what no retry fixes (a wrong token, a zone
the token cannot see, a secondary zone, a protected rrset, a certificate
that does not verify) ends at once with one line saying what to fix.

The token: the first line of --token-file (a regular file readable by its
owner only), else the HCLOUD_TOKEN environment variable (the one Terraform
reads). It is never printed: a line that would carry it has it replaced.

Each API call is one line on standard error; the result is one line on
standard output (`-o json`: one JSON object with zone, name, type, value,
changed, calls, seconds, or error and hint).

Exit codes: 0 the record holds the value (changed or not); 1 gave up within
the bound; 2 usage (bad arguments, no token, no SDK with zones); 3 refused
by the API for a reason no retry fixes.
"""

import argparse
import ipaddress
import json
import os
import sys
import time

from mailha.node import config, fipmover
from mailha.node.fipmover import ActionFailed, ApiError, OutOfTime, TransportError

EXIT_OK, EXIT_GAVE_UP, EXIT_USAGE, EXIT_REFUSED = 0, 1, 2, 3
TOKEN_ENV = "HCLOUD_TOKEN"  # noqa: S105 - a variable's name, not a secret

# Codes no retry fixes, with what to do (on top of the mover's).
REFUSED = {
    "unauthorized": "the token ({token}) is wrong or revoked: give a valid read/write token of the project",
    "forbidden": "the token ({token}) may not change zone {zone}: use a read/write token of its project",
    "token_readonly": "the token ({token}) is read-only: give a read/write token",
    "not_found": "zone {zone} is not in the token's project: check mailha_dns_zone and the token",
    "invalid_input": "the API refused the record {name} {type} {value}: check mailha_active_record",
    "incorrect_zone_mode": "zone {zone} is a secondary zone at Hetzner: change the record at its primary server",
    "protected": "the rrset {name}/{type} of zone {zone} is protected against changes: lift the protection",
    "tls_untrusted": "the certificate of {endpoint} does not verify against {cas}: pass --ca-file, or fix the "
    "endpoint's certificate",
}


class Usage(Exception):
    """Bad arguments or no token: exit 2."""


def read_token(token_file, environ=os.environ):
    """The token from `token_file` (owner-only) or HCLOUD_TOKEN; raises Usage."""
    if token_file:
        try:
            return fipmover.read_token(token_file, owner_uid=os.geteuid())
        except config.UsageError as err:
            raise Usage(str(err)) from None
    token = environ.get(TOKEN_ENV, "").strip()
    if not token:
        raise Usage(f"no Hetzner token: set {TOKEN_ENV} or pass --token-file (mailha_hcloud_token_file)")
    return token


class ZoneSdk:
    """The calls the setter makes, through the hcloud SDK (2.x: zones)."""

    def __init__(self, token, endpoint, timeout_for, poll_interval, ca_file=""):
        import hcloud
        import requests

        try:
            from hcloud.zones.domain import Zone, ZoneRecord, ZoneRRSet
        except ImportError:
            version = getattr(getattr(hcloud, "_version", None), "__version__", "?")
            raise ImportError(f"hcloud {version} has no zones API; install hcloud 2.8 or later") from None
        options = {"token": token, "poll_interval": poll_interval}
        if endpoint:
            options["api_endpoint"] = endpoint
        self.client = hcloud.Client(**options)
        self._zone, self._record, self._rrset = Zone, ZoneRecord, ZoneRRSet
        self._zone_id = None
        self.bounded = fipmover._install_session(self.client, fipmover._bounded_session(requests, timeout_for, ca_file))

    def values(self, zone, name, rrset_type):
        """The rrset's values, or None when the zone has no such rrset. The
        zone is read first (once): its not_found is the token's or the
        zone's problem, an rrset's is only a record to create."""
        if self._zone_id is None:
            self._zone_id = self.client.zones.get(zone).id
        try:
            rrset = self.client.zones.get_rrset(self._zone(id=self._zone_id), name, rrset_type)
        except ApiError as err:
            if err.code == "not_found":
                return None
            raise
        return [record.value for record in rrset.records or ()]

    def _rrset_of(self, zone, name, rrset_type):
        return self._rrset(zone=self._zone(id=self._zone_id, name=zone), name=name, type=rrset_type)

    def delete(self, zone, name, rrset_type):
        action = self.client.zones.delete_rrset(self._rrset_of(zone, name, rrset_type)).action
        return action.id, action.status

    def set(self, zone, name, rrset_type, value):
        rrset = self._rrset_of(zone, name, rrset_type)
        action = self.client.zones.set_rrset_records(rrset, [self._record(value=value)])
        return action.id, action.status

    def create(self, zone, name, rrset_type, value, ttl):
        response = self.client.zones.create_rrset(
            self._zone(id=self._zone_id, name=zone),
            name=name,
            type=rrset_type,
            ttl=ttl,
            records=[self._record(value=value)],
        )
        return response.action.id, response.action.status

    def action(self, action_id):
        action = self.client.actions.get_by_id(action_id)
        return action.status, action.error


class Setter(fipmover.BoundedRun):
    """One run: make the rrset (zone, name, type) hold exactly `value`."""

    def __init__(self, settings, sdk_factory, log, sleep=time.sleep, clock=time.monotonic, now=time.time):
        super().__init__(settings, log, sleep=sleep, clock=clock, now=now)
        self._sdk_factory = sdk_factory
        self.changed = False
        s = settings
        self.record = f"{s['name']}.{s['zone']} {s['type']}"
        # What the rrset must hold at the end: None (--absent) or the value.
        self.wanted = None if s.get("absent") else [s["value"]]

    def read(self, sdk):
        s = self.settings
        return self.call(
            f"GET zones/{s['zone']}/rrsets/{s['name']}/{s['type']}",
            lambda: sdk.values(s["zone"], s["name"], s["type"]),
            lambda values: "no such rrset" if values is None else " ".join(values) or "no records",
        )

    def attempt(self, sdk):
        """One try: True when the rrset holds exactly the value (or, with
        --absent, is gone) at its end."""
        s = self.settings
        values = self.read(sdk)
        if values == self.wanted:
            return True
        if self.wanted is None:
            label = f"DELETE zones/{s['zone']}/rrsets/{s['name']}/{s['type']}"
            action_id, status = self.call(
                label, lambda: sdk.delete(s["zone"], s["name"], s["type"]), lambda r: f"action {r[0]} {r[1]}"
            )
        elif values is None:
            label = f"POST zones/{s['zone']}/rrsets {s['name']} {s['type']} ttl={s['ttl']} {s['value']}"
            action_id, status = self.call(
                label,
                lambda: sdk.create(s["zone"], s["name"], s["type"], s["value"], s["ttl"]),
                lambda r: f"action {r[0]} {r[1]}",
            )
        else:
            label = f"POST zones/{s['zone']}/rrsets/{s['name']}/{s['type']}/actions/set_records {s['value']}"
            action_id, status = self.call(
                label, lambda: sdk.set(s["zone"], s["name"], s["type"], s["value"]), lambda r: f"action {r[0]} {r[1]}"
            )
        self.complete(sdk, action_id, status)
        self.changed = True
        return self.read(sdk) == self.wanted

    def published(self, nameserver, resolve=None):
        """What `nameserver` answers for the record once it answers the
        value (--absent: nothing) or the bound is reached (Hetzner's servers
        publish what its API holds a little later): the last answer's values."""
        import dns.exception
        import dns.resolver

        s = self.settings
        resolver = dns.resolver.Resolver(configure=False)
        resolver.nameservers = [nameserver]
        resolver.port = s.get("nameserver_port", 53)
        qname = s["zone"] if s["name"] == "@" else f"{s['name']}.{s['zone']}"
        answer = []
        while True:
            resolver.lifetime = max(0.1, min(s["request_timeout"], self.remaining()))
            try:
                answer = sorted(rr.to_text() for rr in resolver.resolve(qname, s["type"]))
            except dns.exception.DNSException as err:
                answer = []
                self.log(f"{nameserver}: {qname} {s['type']}: {type(err).__name__}")
            else:
                self.log(f"{nameserver}: {qname} {s['type']} {' '.join(answer)}")
            if answer == (self.wanted or []) or self.remaining() <= s["poll_interval"]:
                return answer
            self.sleep(s["poll_interval"])

    def run(self, token):
        """(exit code, result dict)."""
        started = self.clock()
        self.deadline = started + self.settings["total_seconds"]
        s = self.settings
        result = {"zone": s["zone"], "name": s["name"], "type": s["type"], "value": s["value"], "absent": s["absent"]}

        def done(code, **extra):
            result.update(extra, calls=self.calls, seconds=round(self.clock() - started, 2), changed=self.changed)
            return code, result

        try:
            sdk = self._sdk_factory(token, s["endpoint"], self.timeout_for, s["poll_interval"], ca_file=s["ca_file"])
        except ImportError as err:
            return done(
                EXIT_USAGE, error=f"the hcloud SDK cannot change zones: {err}", hint="pip install 'hcloud>=2.8'"
            )
        attempt, last = 0, None
        while True:
            try:
                if self.attempt(sdk):
                    if not s.get("nameserver"):
                        return done(EXIT_OK)
                    answer = self.published(s["nameserver"])
                    if answer == (self.wanted or []):
                        return done(EXIT_OK)
                    shown = " ".join(answer) if answer else "nothing"
                    holds = f"holds {s['value']}" if self.wanted else "holds no such rrset"
                    return done(
                        EXIT_GAVE_UP,
                        error=f"the API {holds} but {s['nameserver']} still answers {shown}"
                        f" after {self.clock() - started:.1f} s",
                        hint="check that the server is authoritative for the zone (mailha_nameserver); "
                        "--total-seconds sets the bound",
                    )
                last = ActionFailed("the rrset did not hold the value after its action succeeded")
            except OutOfTime:
                break
            except (ApiError, TransportError, ActionFailed) as err:
                if isinstance(err, ApiError) and (err.code in REFUSED or fipmover.is_permanent(err)):
                    hint = REFUSED.get(err.code, "check --endpoint").format(
                        token=f"--token-file {s['token_file']}" if s["token_file"] else TOKEN_ENV,
                        zone=s["zone"],
                        name=s["name"],
                        type=s["type"],
                        value=s["value"] or "(absent)",
                        endpoint=s["endpoint"] or fipmover.DEFAULT_ENDPOINT,
                        cas=s["ca_file"] or "the system's CAs",
                    )
                    return done(EXIT_REFUSED, error=f"refused, not retried: {err.describe()}", hint=hint)
                last = err
            if not self.wait_to_retry(last, attempt):
                break
            attempt += 1
        reason = last.describe() if last is not None else "no answer within the bound"
        return done(
            EXIT_GAVE_UP,
            error=f"gave up after {self.clock() - started:.1f} s and {self.calls} calls; last error: {reason}",
            hint="run the switch again once the API answers (--total-seconds sets the bound)",
        )


def txt_rdata(text):
    """A TXT record's text as zone-file rdata: quoted strings of at most 255
    characters (a 2048-bit DKIM key is longer), quotes and backslashes
    escaped; as Terraform's dns_records module and dnspython write it."""
    chunks = [text[start : start + 255] for start in range(0, max(len(text), 1), 255)]
    return " ".join('"' + chunk.replace("\\", "\\\\").replace('"', '\\"') + '"' for chunk in chunks)


def _value(rrset_type, text):
    if rrset_type == "TXT":
        if not text or not text.isprintable():
            raise argparse.ArgumentTypeError("a TXT record's text must be printable and not empty")
        return txt_rdata(text)
    if rrset_type in ("A", "AAAA"):
        try:
            address = ipaddress.ip_address(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an IP address") from None
        if address.version != (4 if rrset_type == "A" else 6):
            raise argparse.ArgumentTypeError(f"{text} is not an IPv{4 if rrset_type == 'A' else 6} address")
    return text


def _positive(text):
    try:
        number = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not number > 0:
        raise argparse.ArgumentTypeError(f"{text} is not above 0")
    return number


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        raise Usage(message)


def parse(argv):
    parser = _Parser(prog="python -m mailha.hcloud_dns", description=__doc__.split("\n\n")[0])
    parser.add_argument("--zone", required=True, help="the zone's name at Hetzner, e.g. example.com")
    parser.add_argument("--name", required=True, help="the rrset's name in the zone, e.g. relay ('@': the apex)")
    parser.add_argument("--type", default="A", choices=("A", "AAAA", "TXT"), help="record type (A)")
    wanted = parser.add_mutually_exclusive_group(required=True)
    wanted.add_argument("--value", help="the one value the rrset must hold (TXT: the text, unquoted)")
    wanted.add_argument("--absent", action="store_true", help="delete the rrset (nothing to do when it is not there)")
    parser.add_argument("--ttl", type=int, default=60, help="TTL of an rrset this creates (60)")
    parser.add_argument("--endpoint", default="", help="API endpoint (default: Hetzner's public API)")
    parser.add_argument("--ca-file", default="", help="PEM CA(s) the endpoint's certificate is checked against")
    parser.add_argument("--token-file", default="", help=f"file whose first line is the token (else ${TOKEN_ENV})")
    parser.add_argument("--total-seconds", type=_positive, default=60.0, help="the whole run's bound (60)")
    parser.add_argument("--request-timeout", type=_positive, default=10.0, help="each call's timeout (10)")
    parser.add_argument("--backoff-initial", type=_positive, default=1.0, help="the first retry's delay (1)")
    parser.add_argument("--backoff-max", type=_positive, default=8.0, help="the longest delay between tries (8)")
    parser.add_argument(
        "--wait-nameserver",
        default="",
        help="then wait (within the bound) until this authoritative server's address answers the value",
    )
    parser.add_argument("--wait-port", type=int, default=53, help=argparse.SUPPRESS)  # a test's server
    parser.add_argument("--poll-interval", type=_positive, default=0.5, help="between reads of an action (0.5)")
    parser.add_argument("-o", "--output", choices=("text", "json"), default="text")
    options = parser.parse_args(argv)
    zone = options.zone.rstrip(".").lower()
    name = options.name.rstrip(".").lower()
    if not zone or not name or any(char.isspace() or char == "/" for char in zone + name):
        raise Usage(f"--zone {options.zone!r} / --name {options.name!r}: give a zone name and a name inside it")
    if name.endswith("." + zone) or name == zone:
        raise Usage(f"--name {name} must be relative to the zone {zone} (e.g. relay, not relay.{zone})")
    try:
        value = None if options.absent else _value(options.type, options.value)
    except argparse.ArgumentTypeError as err:
        raise Usage(f"--value: {err}") from None
    if options.wait_nameserver:
        try:
            ipaddress.ip_address(options.wait_nameserver)
        except ValueError:
            raise Usage(f"--wait-nameserver {options.wait_nameserver!r}: give the server's IP address") from None
    if not 60 <= options.ttl <= 2147483647:
        raise Usage(f"--ttl {options.ttl}: Hetzner takes 60 seconds or more")
    for flag, check in (("--endpoint", fipmover._endpoint), ("--ca-file", fipmover._ca_file)):
        try:
            check(getattr(options, flag[2:].replace("-", "_")))
        except ValueError as err:
            raise Usage(f"{flag} {err}") from None
    return options, {
        "zone": zone,
        "name": name,
        "type": options.type,
        "value": value,
        "absent": options.absent,
        "ttl": options.ttl,
        "endpoint": options.endpoint,
        "ca_file": options.ca_file,
        "token_file": options.token_file,
        "total_seconds": options.total_seconds,
        "request_timeout": options.request_timeout,
        "backoff_initial_seconds": options.backoff_initial,
        "backoff_max_seconds": options.backoff_max,
        "poll_interval": options.poll_interval,
        "nameserver": options.wait_nameserver,
        "nameserver_port": options.wait_port,
    }


def main(argv=None, sdk_factory=ZoneSdk, environ=os.environ, stdout=None, stderr=None):
    stdout, stderr = stdout or sys.stdout, stderr or sys.stderr
    try:
        options, settings = parse(sys.argv[1:] if argv is None else argv)
        token = read_token(settings["token_file"], environ)
    except Usage as err:
        stderr.write(f"mailha.hcloud_dns: {err}\n")
        return EXIT_USAGE
    log = _StderrLog(stderr, token)
    code, result = Setter(settings, sdk_factory, log).run(token)
    record = f"{settings['name']}.{settings['zone']} {settings['type']}"
    if options.output == "json":
        line = json.dumps(result)
    elif code == EXIT_OK:
        if settings["absent"]:
            what = "removed" if result["changed"] else "already absent"
        else:
            what = f"{'set to' if result['changed'] else 'already holds'} {settings['value']}"
        line = f"{record} {what} [{result['calls']} calls, {result['seconds']:.1f} s]"
    else:
        line = f"{record}: {result['error']}; {result['hint']}"
    stdout.write(line.replace(token, "[token]") + "\n")
    return code


class _StderrLog:
    """One line per call on standard error, the token replaced."""

    def __init__(self, stream, token):
        self.stream, self.token = stream, token

    def __call__(self, text, priority=None):
        self.stream.write(f"hcloud-dns: {text.replace(self.token, '[token]')}\n")


if __name__ == "__main__":
    sys.exit(main())
