"""Ansible filters over the mailha package, so playbooks and the CLI share one implementation."""

from mailha import dns_records, names


class FilterModule:
    def filters(self):
        return {
            "mailha_zones": dns_records.zones,
            "mailha_servers": dns_records.servers,
            "mailha_node_tag": names.node_tag,
        }
