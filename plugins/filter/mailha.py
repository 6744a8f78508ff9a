"""Ansible filters over the mailha package, so playbooks and the CLI share one implementation."""

from mailha import dns_records, names


class FilterModule:
    def filters(self):
        return {
            "mailha_zones": dns_records.zones,
            "mailha_dkim_txt": dns_records.dkim_txt,
            "mailha_relative_name": dns_records.relative_name,
            "mailha_servers": dns_records.servers,
            "mailha_node_tag": names.node_tag,
        }
