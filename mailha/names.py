"""What a name or an address must look like before mailha uses it.

The contract's values end up in file paths (the state directory, the
secrets directory), in command lines (podman, ansible-playbook's extra
variables) and in URLs, so each is checked against a strict pattern first.
Each check returns None for a good value, else what is allowed, so that the
caller can name the field and the value in its one-line error.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import re

ENVIRONMENT = re.compile(r"[a-z][a-z0-9_-]{0,31}")
# One DNS label, lower case: also the shape of an inventory host name.
LABEL = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")
# A podman container name, or a host name or address ssh connects to.
TARGET = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,252}")
# The login name ssh uses (useradd's default NAME_REGEX, bounded).
LOGIN = re.compile(r"[a-z_][a-z0-9_-]{0,31}")

ENVIRONMENT_RULE = "1 to 32 of a-z, 0-9, '_' and '-', starting with a letter"
HOST_NAME_RULE = "a DNS label: 1 to 63 of a-z, 0-9 and '-', not starting or ending with '-'"
DNS_NAME_RULE = "a DNS name of lower-case labels joined by '.', without a trailing dot"
LOGIN_RULE = "a login name: 1 to 32 of a-z, 0-9, '_' and '-', starting with a letter or '_'"
TARGET_RULE = (
    "a container or host name (letters, digits, '_', '.', '-'; starting with a letter or digit) or an IP address"
)


def shown(value: object, limit: int = 60) -> str:
    """A value as an error message shows it: quoted, escaped, on one line, bounded."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def json_kind(value: object) -> str:
    """A decoded JSON value's type as JSON names it: object, array, string, number, boolean, null."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    kinds = {dict: "object", list: "array", str: "string", int: "number", float: "number"}
    return kinds.get(type(value), type(value).__name__)


def environment_problem(value: object) -> str | None:
    if isinstance(value, str) and ENVIRONMENT.fullmatch(value):
        return None
    return f"must be {ENVIRONMENT_RULE}"


def host_name_problem(value: object) -> str | None:
    if isinstance(value, str) and LABEL.fullmatch(value):
        return None
    return f"must be {HOST_NAME_RULE}"


def dns_name_problem(value: object) -> str | None:
    if isinstance(value, str) and len(value) <= 253 and all(LABEL.fullmatch(label) for label in value.split(".")):
        return None
    return f"must be {DNS_NAME_RULE}"


def address_problem(value: object) -> str | None:
    if isinstance(value, str):
        try:
            ipaddress.ip_address(value)
            return None
        except ValueError:
            pass
    return "must be an IP address"


def login_problem(value: object) -> str | None:
    if isinstance(value, str) and LOGIN.fullmatch(value):
        return None
    return f"must be {LOGIN_RULE}"


def target_problem(value: object) -> str | None:
    if isinstance(value, str) and (TARGET.fullmatch(value) or address_problem(value) is None):
        return None
    return f"must be {TARGET_RULE}"


# The greeting carries this instead of the relay's name: clients and drills
# can tell the relays apart, outsiders learn no internal name. The key lives
# with the secrets on the controller (playbooks/secrets.yml).
NODE_TAG_LENGTH = 10
NODE_TAG_IN_GREETING = re.compile(rf"\bESMTP ([0-9a-f]{{{NODE_TAG_LENGTH}}})\b")


def node_tag(key: str, node: str) -> str:
    """The opaque tag of one relay in its greeting: an HMAC of its name."""
    return hmac.new(key.strip().encode(), node.encode(), hashlib.sha256).hexdigest()[:NODE_TAG_LENGTH]
