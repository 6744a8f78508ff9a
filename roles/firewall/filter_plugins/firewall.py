"""Checks and normalises the firewall role's variables (stdlib ipaddress, no netaddr).

The checks return one readable problem per bad entry, naming the variable to
fix, so preflight.yml can refuse a rule set before anything on the host
changes. The normalising filters give the template what nft lists back:
networks collapsed per address family, single addresses without a prefix.
"""

from __future__ import annotations

import ipaddress

PROTOCOLS = ("tcp", "udp", "vrrp", "icmp")
PROTOCOLS_WITH_PORTS = ("tcp", "udp")
# IP protocol numbers, so that the rule set does not depend on /etc/protocols.
_L4PROTO = {("vrrp", "ip"): 112, ("vrrp", "ip6"): 112, ("icmp", "ip"): 1, ("icmp", "ip6"): 58}
# nft refuses longer comments.
COMMENT_MAX_BYTES = 128


def _network(text) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    """An address or network; host bits set (10.0.0.5/24) is refused as a likely typo."""
    if not isinstance(text, str):
        raise ValueError(f"{text!r} is not a string")
    return ipaddress.ip_network(text.strip(), strict=True)


def firewall_address_problems(addresses, variable: str) -> list[str]:
    """'variable[i]: reason' for each entry that is not an address or network.

    A single string is checked as one entry named just `variable`.
    """
    if isinstance(addresses, str):
        entries = [(variable, addresses)]
    elif isinstance(addresses, list):
        entries = [(f"{variable}[{index}]", text) for index, text in enumerate(addresses)]
    else:
        return [f"{variable} must be a list of addresses or networks"]
    problems = []
    for where, text in entries:
        try:
            _network(text)
        except ValueError as err:
            problems.append(f"{where}: {err}")
    return problems


def firewall_single_ipv4_problems(addresses, variable: str) -> list[str]:
    """'variable[i]: X is not one IPv4 address' for each network or IPv6 entry
    (an ARP rule matches IPv4 addresses; entries that are no address at all
    are firewall_address_problems' to name)."""
    if not isinstance(addresses, list):
        return []
    problems = []
    for index, text in enumerate(addresses):
        try:
            network = _network(text)
        except ValueError:
            continue
        if network.version != 4 or network.prefixlen != network.max_prefixlen:
            problems.append(f"{variable}[{index}]: {text} is not one IPv4 address")
    return problems


def _name_problem(name) -> str | None:
    if not isinstance(name, str) or not name.strip():
        return "name must be a non-empty string"
    if any(char in name for char in '"\\\n\r'):
        return "name must not contain double quotes, backslashes or line breaks (it becomes an nft comment)"
    if len(name.encode()) > COMMENT_MAX_BYTES:
        return f"name must be at most {COMMENT_MAX_BYTES} bytes (nft's comment limit)"
    return None


def _port(value) -> int | None:
    """The port number of an int or a string of digits (argument_specs accepts "25"), else None."""
    if isinstance(value, bool) or not isinstance(value, int | str) or not str(value).strip().isdigit():
        return None
    port = int(value)
    return port if 1 <= port <= 65535 else None


def _ports_problem(proto, ports) -> str | None:
    if proto not in PROTOCOLS_WITH_PORTS:
        if ports:
            return f"ports apply to tcp and udp only; remove them from this {proto} rule"
        return None
    if not isinstance(ports, list) or not ports:
        return f"ports must list at least one port for a {proto} rule"
    bad = [port for port in ports if _port(port) is None]
    if bad:
        return f"ports must be integers from 1 to 65535 (got {bad})"
    return None


def firewall_allow_problems(rules) -> list[str]:
    """One problem per fault in firewall_allow, each naming the rule (index and name)."""
    if not isinstance(rules, list):
        return ["firewall_allow must be a list of rules"]
    problems = []
    seen_names = set()
    for index, rule in enumerate(rules):
        if not isinstance(rule, dict):
            problems.append(f"firewall_allow[{index}] must be a dict with name, proto, ports, sources")
            continue
        name = rule.get("name")
        where = f"firewall_allow[{index}] ({name})"
        proto = rule.get("proto")
        sources = rule.get("sources")
        faults = [_name_problem(name)]
        if isinstance(name, str) and name in seen_names:
            faults.append("name must be unique (it identifies the rule and its counter)")
        seen_names.add(name)
        if proto not in PROTOCOLS:
            faults.append(f"proto must be one of {', '.join(PROTOCOLS)} (got {proto!r})")
        else:
            faults.append(_ports_problem(proto, rule.get("ports")))
        if not isinstance(sources, list) or not sources:
            faults.append("sources must list at least one address or network")
        problems.extend(f"{where}: {fault}" for fault in faults if fault)
        if isinstance(sources, list):
            problems.extend(firewall_address_problems(sources, f"firewall_allow[{index}].sources"))
    return problems


def firewall_covers(networks, address) -> bool:
    """Whether address (an address or network) lies within one of networks."""
    try:
        wanted = ipaddress.ip_network(str(address).strip(), strict=False)
        candidates = [_network(text) for text in networks]
    except ValueError:
        return False
    return any(wanted.version == net.version and wanted.subnet_of(net) for net in candidates)


def _nft_address(network) -> str:
    if network.prefixlen == network.max_prefixlen:
        return str(network.network_address)
    return str(network)


def firewall_by_family(sources) -> dict[str, list[str]]:
    """{'ip': [...], 'ip6': [...]}: the sources per nft family, collapsed and sorted."""
    networks = [_network(text) for text in sources]
    return {
        family: [_nft_address(net) for net in ipaddress.collapse_addresses(n for n in networks if n.version == version)]
        for family, version in (("ip", 4), ("ip6", 6))
    }


def firewall_nft_elements(items) -> str:
    """One element as is, several as an anonymous set: '22' or '{ 25, 587 }'."""
    items = [str(item) for item in items]
    if len(items) == 1:
        return items[0]
    return "{ " + ", ".join(items) + " }"


def firewall_nft_match(rule: dict, family: str) -> str:
    """The protocol (and port) match of one firewall_allow rule in one family."""
    proto = rule["proto"]
    if proto in PROTOCOLS_WITH_PORTS:
        ports = sorted({_port(port) for port in rule["ports"]})
        return f"{proto} dport {firewall_nft_elements(ports)}"
    return f"meta l4proto {_L4PROTO[(proto, family)]}"


class FilterModule:
    def filters(self):
        return {
            "firewall_address_problems": firewall_address_problems,
            "firewall_allow_problems": firewall_allow_problems,
            "firewall_covers": firewall_covers,
            "firewall_by_family": firewall_by_family,
            "firewall_nft_elements": firewall_nft_elements,
            "firewall_nft_match": firewall_nft_match,
            "firewall_single_ipv4_problems": firewall_single_ipv4_problems,
        }
