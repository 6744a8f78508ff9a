"""`mailha-node facts`: this relay's facts as one JSON object, for the
playbooks (verify, switch, hand-over, reconcile), so they read the same
facts the agent reports instead of shell pipelines of their own:

  floating_ip, holds_floating_ip  (mailha.node.addresses)
  vrrp_state, vrrp_since          (the transition log, mailha.node.vrrp)
  queue, queue_total, queue_pending, queue_oldest_age_seconds
                                  (mailha.node.queue)
  route                           (mailha.node.postfix_role)

Settings come from /etc/mailha/health.conf (floating_ip, vrrp_log,
queue_directory, route_file); options override them. --get KEY prints one
value alone (JSON: true/false, a number, a string without quotes).
Exit codes: 0, 3 usage error.
"""

import argparse
import json
import sys

from mailha.node import addresses, config, health, postfix_role, queue, vrrp


def gather(settings):
    counts, oldest = queue.queue_details(settings["queue_directory"])
    state, since = vrrp.state(settings["vrrp_log"])
    try:
        holds = addresses.holds_address(settings["floating_ip"])
    except OSError:
        holds = False
    return {
        "floating_ip": settings["floating_ip"],
        "holds_floating_ip": holds,
        "vrrp_state": state,
        "vrrp_since": since,
        "queue": counts,
        "queue_total": queue.total(counts),
        "queue_pending": queue.pending(counts),
        "queue_oldest_age_seconds": oldest,
        "route": postfix_role.read_route(settings["route_file"]),
    }


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        self.print_usage(sys.stderr)
        sys.stderr.write(f"{self.prog}: error: {message}\n")
        sys.exit(health.EXIT_USAGE)


def main(argv=None):
    parser = _Parser(prog="mailha-node facts", description="This relay's facts as one JSON object.")
    parser.add_argument("--config", default=health.CONFIG_FILE)
    parser.add_argument("--floating-ip", dest="floating_ip")
    parser.add_argument("--vrrp-log", dest="vrrp_log")
    parser.add_argument("--queue-directory", dest="queue_directory")
    parser.add_argument("--route-file", dest="route_file")
    parser.add_argument("--get", metavar="KEY", help="print this fact alone")
    options = parser.parse_args(sys.argv[1:] if argv is None else argv)
    try:
        settings = health.load_config(options.config)
    except config.UsageError as err:
        sys.stderr.write(f"mailha-node facts: {err}\n")
        return health.EXIT_USAGE
    for key in ("floating_ip", "vrrp_log", "queue_directory", "route_file"):
        if getattr(options, key) is not None:
            settings[key] = getattr(options, key)
    facts = gather(settings)
    if options.get is None:
        print(json.dumps(facts, sort_keys=True))
    elif options.get not in facts:
        sys.stderr.write(f"mailha-node facts: no fact {options.get!r} ({', '.join(sorted(facts))})\n")
        return health.EXIT_USAGE
    else:
        value = facts[options.get]
        print(value if isinstance(value, str) else json.dumps(value))
    return 0
