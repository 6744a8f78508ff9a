"""`mailha status --watch`: the topology again every few seconds, until Ctrl-C.

On a terminal each round clears the screen and redraws (ANSI), so the
table stays in place; into a pipe or a file each round is a separator line
and the table, so nothing is overwritten; with JSON each round is one
document on one line (NDJSON) carrying the time it was read.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable

import click

from mailha import status as status_mod
from mailha.audit import now_iso

DEFAULT_INTERVAL = 2.0
# Cursor home, then erase the screen: a redraw in place, without scrollback noise.
CLEAR_SCREEN = "\x1b[H\x1b[2J"


def watch(
    gather: Callable[[], status_mod.Topology],
    *,
    interval: float = DEFAULT_INTERVAL,
    count: int | None = None,
    as_json: bool = False,
    tty: bool = False,
    echo: Callable[[str], None] = click.echo,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> int:
    """Show `gather()` every `interval` seconds (from the start of one round to
    the next), `count` times or until Ctrl-C. Returns the exit code: the last
    round's verdict after `count` rounds (as `mailha status`), 0 after Ctrl-C,
    which is how an operator ends a watch."""
    rounds = 0
    try:
        while True:
            began = clock()
            topology = gather()
            rounds += 1
            read_at = now_iso()
            if as_json:
                echo(json.dumps({"time": read_at, **topology.to_dict()}, sort_keys=True))
            elif tty:
                header = f"mailha status every {interval:g}s (Ctrl-C to stop), read {read_at}"
                echo(f"{CLEAR_SCREEN}{header}\n{status_mod.render_table(topology)}")
            else:
                echo(f"--- {read_at} ---\n{status_mod.render_table(topology)}")
            if count is not None and rounds >= count:
                return topology.exit_code
            sleep(max(0.0, interval - (clock() - began)))
    except KeyboardInterrupt:
        if tty and not as_json:
            echo("")  # the shell prompt starts on a line of its own, after the ^C
        return 0
