"""`mailha-node check-config KIND FILE`: parse a settings file as its
command would (the roles' template validation). KIND is health,
postfix-role, vrrp, sink, events or fip-mover. Exit 0 valid, 1 invalid, 2 usage error."""

import sys

from mailha.node import config


def _loader(kind):
    if kind == "health":
        from mailha.node import health

        return health.load_config
    if kind == "postfix-role":
        from mailha.node import postfix_role

        return postfix_role.load_config
    if kind == "vrrp":
        from mailha.node import vrrp

        return vrrp.load_config
    if kind == "events":
        from mailha.node import events

        return events.load_config
    if kind == "fip-mover":
        from mailha.node import fipmover

        return fipmover.load_config
    if kind == "sink":
        from mailha.node import sink_index

        return lambda path: config.load(path, sink_index.DEFAULTS)
    return None


def main(argv):
    loader = _loader(argv[0]) if len(argv) == 2 else None
    if loader is None:
        sys.stderr.write("usage: mailha-node check-config health|postfix-role|vrrp|sink|events|fip-mover FILE\n")
        return 2
    try:
        with open(argv[1], encoding="utf-8"):
            pass
        loader(argv[1])
    except OSError as err:
        sys.stderr.write(f"mailha-node check-config: cannot read {argv[1]}: {err}\n")
        return 1
    except config.UsageError as err:
        sys.stderr.write(f"mailha-node check-config: {err}\n")
        return 1
    return 0
