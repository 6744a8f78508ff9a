"""Which relays are isolated as possibly compromised (`mailha failover --isolate`).

Kept in the state directory as `isolated.json`: {node: {since, reason,
operator}}. Read by status, every switch and the queue hand-over; written by
mailha.isolation. A damaged file is an error, never "nothing isolated".
"""

from __future__ import annotations

import json

from mailha.audit import make_state_dir
from mailha.errors import MailhaError
from mailha.pair import Pair

ISOLATED_FILE = "isolated.json"


def marks(pair: Pair) -> dict[str, dict]:
    """The isolated relays: {node: {since, reason, operator}}. A damaged file is an error, never 'none'."""
    path = pair.state_dir / ISOLATED_FILE
    try:
        document = json.loads(path.read_bytes())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError, RecursionError) as exc:
        raise MailhaError(
            f"{path} cannot be read ({type(exc).__name__}); it lists the isolated relays: "
            "restore it or write the isolated ones back before switching"
        ) from None
    if not isinstance(document, dict) or not all(isinstance(v, dict) for v in document.values()):
        raise MailhaError(f"{path} is not a JSON object of relays; restore it before switching")
    return document


def write_marks(pair: Pair, document: dict[str, dict]) -> None:
    make_state_dir(pair.state_dir)
    path = pair.state_dir / ISOLATED_FILE
    temporary = path.with_suffix(".tmp")
    try:
        temporary.write_text(json.dumps(document, indent=2, sort_keys=True) + "\n")
        temporary.replace(path)
    except OSError as exc:
        raise MailhaError(f"cannot record the isolated relays in {path}: {exc.strerror}") from None


def refuse_if_isolated(pair: Pair, node: str, doing: str) -> None:
    mark = marks(pair).get(node)
    if mark is not None:
        raise MailhaError(
            f"refusing {doing}: {node} is isolated as possibly compromised since {mark.get('since', '?')}; "
            f"rebuild it (README, 'Isolating a compromised relay') and run 'mailha unisolate {node}' first"
        )
