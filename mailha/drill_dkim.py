"""A drill's DKIM check: the mail the standby accepted during the fault
carries a signature the pair's DNS vouches for (the report counts the rest
as unsigned; a max_unsigned target bounds them)."""

from __future__ import annotations

from collections.abc import Callable

import dkim
import dns.resolver


def txt_lookup(resolver: dns.resolver.Resolver) -> Callable[..., bytes]:
    """dkimpy's dnsfunc: the TXT record of a name through `resolver` (the
    pair's name server, not the host's), its strings joined."""

    def dnsfunc(name, timeout=5):
        name = name.decode() if isinstance(name, bytes) else name
        return b"".join(b"".join(r.strings) for r in resolver.resolve(name, "TXT"))

    return dnsfunc


def check_dkim(
    attempts,
    entries: dict[str, dict],
    standby: str,
    read: Callable[[str], bytes],
    resolver: dns.resolver.Resolver,
    sample: int = 10,
) -> dict[str, bool]:
    """Verify the DKIM signature of up to `sample` messages the standby accepted.

    `entries` are the recipient side's index entries by Message-ID; `read`
    returns the raw message stored in an entry's file."""
    dnsfunc = txt_lookup(resolver)
    results = {}
    served = [a.message_id for a in attempts if a.accepted and a.node == standby and a.message_id in entries]
    for msg_id in served[:sample]:
        raw = read(entries[msg_id]["file"])
        try:
            results[msg_id] = bool(dkim.verify(raw, dnsfunc=dnsfunc))
        except dkim.DKIMException:
            results[msg_id] = False
    return results
