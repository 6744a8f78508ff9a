"""mailha-node COMMAND [ARGS...]: the node-side commands, one entry point.

The zipapp's __main__ calls main(); the wrappers the roles install
(/usr/local/bin/mailha-health, /usr/local/sbin/mailha-postfix-role, ...)
run `python3 /usr/local/lib/mailha/mailha-node.pyz COMMAND "$@"`, so
keepalived, systemd units and playbooks keep calling the old paths.
Only the command's own modules are imported: mailha-health runs every
second.

Exit codes: the command's own; 2 for an unknown command.
"""

import importlib
import sys

# command -> (module, function, what it does)
COMMANDS = {
    "health": ("health", "main", "check the local MTA (mailha-health)"),
    "health-agent": ("agent", "run", "HTTP health agent for HAProxy (mailha-health-agent)"),
    "postfix-role": ("postfix_role", "main", "route Postfix by the VRRP role (mailha-postfix-role)"),
    "vrrp-notify": ("vrrp", "notify", "keepalived's notify script (mailha-vrrp-notify)"),
    "vrrp-release": ("vrrp", "release", "release addresses a dead keepalived left (mailha-vrrp-release)"),
    "sink-index": ("sink_index", "run", "list what the lab's sink stored (mailha-sink-index)"),
    "facts": ("facts", "main", "this relay's facts as JSON, for the playbooks"),
    "check-config": ("checkconfig", "main", "validate a settings file: check-config KIND FILE"),
    "events": ("events", "main", "webhook events: events deliver|receive|emit (mailha.node.events)"),
    "fip-assign": ("fipmover", "assign_main", "put the floating IP on this server through the Hetzner API"),
    "fip-check": ("fipmover", "check_main", "re-check and repair the floating IP's assignment while MASTER"),
}


def usage(stream):
    stream.write("usage: mailha-node COMMAND [ARGS...]\n\ncommands:\n")
    for name, (_, _, what) in COMMANDS.items():
        stream.write(f"  {name:<13} {what}\n")


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ("-h", "--help"):
        usage(sys.stdout if argv else sys.stderr)
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        sys.stderr.write(f"mailha-node: unknown command {command!r}\n")
        usage(sys.stderr)
        return 2
    module_name, function, _ = COMMANDS[command]
    module = importlib.import_module("mailha.node." + module_name)
    return getattr(module, function)(rest)


if __name__ == "__main__":
    sys.exit(main())
