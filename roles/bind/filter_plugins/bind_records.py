"""Turn bind_zones records into resource records, for zone files and nsupdate alike.

Both consumers read master-file syntax, so one rendering serves both:
owners and target names fully qualified (nsupdate would read an unqualified
name relative to the root, a zone file relative to the zone), TXT data split
into quoted strings of at most 255 bytes, as RFC 1035 requires.
"""

from __future__ import annotations

import ipaddress

# Record types whose data ends with a domain name.
_NAME_TARGETS = {"CNAME": 0, "NS": 0, "PTR": 0, "MX": 1}


def bind_origin(zone: str) -> str:
    """The zone name, lowercase and fully qualified: 'example.test.'."""
    return zone.strip().rstrip(".").lower() + "."


def _qualify(name: str, origin: str) -> str:
    if name == "@":
        return origin
    if name.endswith("."):
        return name
    return f"{name}.{origin}"


def _txt_strings(value: str) -> str:
    data = value.encode("utf-8")
    chunks = [data[i : i + 255] for i in range(0, len(data), 255)] or [b""]
    out = []
    for chunk in chunks:
        text = ""
        for byte in chunk:
            char = chr(byte)
            if char in '"\\':
                text += "\\" + char
            elif 0x20 <= byte < 0x7F:
                text += char
            else:
                text += f"\\{byte:03d}"
        out.append(f'"{text}"')
    return " ".join(out)


def _rdata(rtype: str, value: str, origin: str) -> str:
    if rtype == "TXT":
        return _txt_strings(value)
    fields = value.split()
    if rtype in _NAME_TARGETS and fields:
        index = _NAME_TARGETS[rtype]
        fields[index] = _qualify(fields[index], origin)
    return " ".join(fields)


def bind_rrsets(records: list[dict], zone: str, ttl: int) -> list[dict]:
    """[{owner, ttl, type, rdata}] for the records of one zone, in the given order."""
    origin = bind_origin(zone)
    result = []
    for record in records:
        rtype = str(record["type"]).upper()
        result.append(
            {
                "owner": _qualify(str(record["name"]).lower(), origin),
                "ttl": int(record.get("ttl") or ttl),
                "type": rtype,
                "rdata": _rdata(rtype, str(record["value"]), origin),
            }
        )
    return result


def bind_rrset_keys(rrsets: list[dict]) -> list[str]:
    """The record sets ('owner TYPE') the records make up, sorted and unique."""
    return sorted({f"{rr['owner']} {rr['type']}" for rr in rrsets})


def bind_blocklist_records(addresses: list[str], reason: str) -> list[dict]:
    """A DNS blocklist's records (RFC 5782) for IPv4 addresses, relative to its zone:
    the address reversed octet by octet, answering 127.0.0.2 with the reason as TXT."""
    records = []
    for address in addresses:
        owner = ".".join(reversed(str(ipaddress.IPv4Address(address)).split(".")))
        records.append({"name": owner, "type": "A", "value": "127.0.0.2"})
        records.append({"name": owner, "type": "TXT", "value": reason})
    return records


class FilterModule:
    def filters(self):
        return {
            "bind_origin": bind_origin,
            "bind_rrsets": bind_rrsets,
            "bind_rrset_keys": bind_rrset_keys,
            "bind_blocklist_records": bind_blocklist_records,
        }
