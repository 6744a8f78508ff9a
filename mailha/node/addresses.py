"""Whether this host holds an address (the floating IP).

One definition for every reader: the health agent (/active), the Postfix
route (mailha-postfix-role), the playbooks (`mailha-node facts`): the
address is a local address of this network namespace, as
/proc/net/fib_trie lists it. Reading it costs no child process, and it
needs no "ip | grep" pipeline (a grep that leaves at the first match can
kill ip with SIGPIPE, and pipefail then turns a match into a failure).
"""

import subprocess

FIB_TRIE = "/proc/net/fib_trie"


def holds_address(address, fib_trie=FIB_TRIE):
    """True when address is a local address of this network namespace.

    /proc/net/fib_trie lists every local address as a leaf followed by a
    "/32 host LOCAL" line; reading it costs no child process.
    """
    if not address:
        return False
    current = None
    with open(fib_trie, encoding="ascii") as handle:
        for line in handle:
            text = line.strip()
            if text.startswith("|--"):
                current = text[3:].strip()
            elif current == address and text.startswith("/32") and "host LOCAL" in text:
                return True
    return False


def on_interface(cidr, interface, run=subprocess.run):
    """True when `cidr` (address/length, as keepalived adds it) is on
    `interface`, per `ip -o addr show dev INTERFACE`. The release needs the
    exact address and interface to delete it, not just "held"."""
    result = run(
        ["ip", "-o", "addr", "show", "dev", interface],
        capture_output=True,
        text=True,
        check=False,
        stdin=subprocess.DEVNULL,
    )
    return result.returncode == 0 and (f" {cidr} ") in result.stdout
