"""mailha.node: everything that runs on the relays (and the lab's sink).

Standard library only: the relays run it with the distribution's python3,
from one zipapp (/usr/local/lib/mailha/mailha-node.pyz, built by
mailha.node.build) that thin wrappers such as /usr/local/bin/mailha-health
call. The controller side (mailha.status, mailha.drill, mailha.probes, ...)
imports the same modules where it computes the same fact, so a fact is
computed in one place:

- the VRRP transition log's line format: mailha.node.vrrp
- whether this host holds the floating IP: mailha.node.addresses
- the queue counts: mailha.node.queue
- the SMTP greeting probe: mailha.node.smtp
- atomic file writes: mailha.node.files
- the key=value settings files the roles write: mailha.node.config
- events to syslog and the webhooks (spool, deliverer, receiver): mailha.node.events

Commands (python3 mailha-node.pyz COMMAND ..., see mailha.node.__main__):
health, health-agent, postfix-role, vrrp-notify, vrrp-release, sink-index,
facts, check-config, events, fip-assign, fip-check (mailha.node.fipmover:
the floating IP through the Hetzner Cloud API; the one module that uses a
package beyond the standard library, python3-hcloud, imported when it runs).
"""
