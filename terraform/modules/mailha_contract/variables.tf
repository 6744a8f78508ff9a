variable "environment" {
  description = "Name of the environment (lab, cloud, ...); it names directories (/var/lib/mailha/<environment>)."
  type        = string

  validation {
    condition     = can(regex("^[a-z][a-z0-9_-]{0,31}$", var.environment))
    error_message = "environment must be 1 to 32 of a-z, 0-9, '_' and '-', starting with a letter (it becomes a directory name)."
  }
}

variable "connection" {
  description = "How Ansible reaches the hosts: podman (lab containers) or ssh."
  type        = string

  validation {
    condition     = contains(["podman", "ssh"], var.connection)
    error_message = "connection must be \"podman\" or \"ssh\"."
  }
}

variable "ssh" {
  description = "How Ansible and mailha log in over ssh, the same on every host: user, port, and optionally the private key and the known_hosts file (else ssh's own defaults: the agent, ~/.ssh). Required with connection ssh, null with podman."
  type = object({
    user             = string
    port             = number
    private_key_file = optional(string)
    known_hosts_file = optional(string)
  })
  default = null

  validation {
    condition     = var.ssh == null ? true : can(regex("^[a-z_][a-z0-9_-]{0,31}$", var.ssh.user))
    error_message = "ssh.user must be a login name: 1 to 32 of a-z, 0-9, '_' and '-', starting with a letter or '_'."
  }

  validation {
    condition = var.ssh == null ? true : alltrue([
      for file in [var.ssh.private_key_file, var.ssh.known_hosts_file] : file == null ? true : startswith(file, "/")
    ])
    error_message = "ssh.private_key_file and ssh.known_hosts_file must be absolute paths (the inventory is read from any directory)."
  }

  validation {
    condition     = var.ssh == null ? true : var.ssh.port == floor(var.ssh.port) && var.ssh.port >= 1 && var.ssh.port <= 65535
    error_message = "ssh.port must be a TCP port (1-65535)."
  }
}

variable "network" {
  description = "The hosts' network: its CIDR and the controller's gateway address on it."
  type = object({
    cidr    = string
    gateway = string
  })

  validation {
    condition     = can(cidrhost(var.network.cidr, 0))
    error_message = "network.cidr must be a network in CIDR notation, such as 10.213.0.0/24."
  }

  validation {
    condition     = can(cidrhost("${var.network.gateway}/32", 0)) || can(cidrhost("${var.network.gateway}/128", 0))
    error_message = "network.gateway must be an IP address."
  }
}

variable "floating_ip" {
  description = "The floating IP: the sending identity that VRRP moves between the mail hosts."
  type        = string

  validation {
    condition     = can(cidrhost("${var.floating_ip}/32", 0))
    error_message = "floating_ip must be an IPv4 address."
  }
}

variable "dns" {
  description = "DNS names: zone, authoritative nameserver address, sending host, submission host; optionally how the zone's records are changed (updates: rfc2136, TSIG-signed dynamic updates to the nameserver; hcloud, Hetzner's DNS API)."
  type = object({
    zone            = string
    nameserver      = string
    sending_host    = string
    submission_host = string
    updates         = optional(string, "rfc2136")
  })

  validation {
    condition     = contains(["rfc2136", "hcloud"], var.dns.updates)
    error_message = "dns.updates must be \"rfc2136\" (dynamic updates to the nameserver) or \"hcloud\" (Hetzner's DNS API)."
  }

  validation {
    condition = alltrue([
      for name in [var.dns.zone, var.dns.sending_host, var.dns.submission_host] :
      length(name) <= 253 && can(regex("^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$", name))
    ])
    error_message = "dns.zone, dns.sending_host and dns.submission_host must be DNS names of lower-case labels joined by '.', without a trailing dot."
  }

  validation {
    condition = alltrue([
      for name in [var.dns.sending_host, var.dns.submission_host] : name == var.dns.zone || endswith(name, ".${var.dns.zone}")
    ])
    error_message = "dns.sending_host and dns.submission_host must be inside dns.zone."
  }

  validation {
    condition     = can(cidrhost("${var.dns.nameserver}/32", 0)) || can(cidrhost("${var.dns.nameserver}/128", 0))
    error_message = "dns.nameserver must be an IP address."
  }
}

variable "load_balancer" {
  description = "The load balancer: its host key (kind haproxy) or name (kind hcloud), the address clients submit to, the ports it serves; optionally its kind (haproxy: a host of the inventory that mailha configures; hcloud: Hetzner's managed load balancer, no host) and the address the relays see its connections and health checks come from (source_address; null: address)."
  type = object({
    host           = string
    address        = string
    ports          = list(number)
    kind           = optional(string, "haproxy")
    source_address = optional(string)
  })

  validation {
    condition     = can(regex("^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$", var.load_balancer.host))
    error_message = "load_balancer.host must be a host name: 1 to 63 of a-z, 0-9 and '-', not starting or ending with '-'."
  }

  validation {
    condition     = can(cidrhost("${var.load_balancer.address}/32", 0)) || can(cidrhost("${var.load_balancer.address}/128", 0))
    error_message = "load_balancer.address must be an IP address."
  }

  validation {
    condition     = length(var.load_balancer.ports) > 0 && alltrue([for p in var.load_balancer.ports : p == floor(p) && p >= 1 && p <= 65535])
    error_message = "load_balancer.ports must be a non-empty list of TCP ports (1-65535)."
  }

  validation {
    condition     = contains(["haproxy", "hcloud"], var.load_balancer.kind)
    error_message = "load_balancer.kind must be \"haproxy\" (a host mailha configures) or \"hcloud\" (Hetzner's managed load balancer)."
  }

  validation {
    condition = var.load_balancer.source_address == null ? true : (
      can(cidrhost("${var.load_balancer.source_address}/32", 0)) || can(cidrhost("${var.load_balancer.source_address}/128", 0))
    )
    error_message = "load_balancer.source_address must be an IP address (or null: the load balancer connects from its address)."
  }
}

variable "mover" {
  description = "How the floating IP moves when keepalived hands it over: null where the network lets the relays claim it themselves (gratuitous ARP); on a cloud that routes it through its API, the cloud (kind), the floating IP's id and each mail host's server id, which the relays' mover passes to the API."
  type = object({
    kind           = string
    floating_ip_id = string
    server_ids     = map(string)
  })
  default = null

  validation {
    condition     = var.mover == null ? true : var.mover.kind == "hcloud"
    error_message = "mover.kind must be \"hcloud\" (the one cloud mailha moves a floating IP on through its API)."
  }

  validation {
    condition = var.mover == null ? true : alltrue([
      for id in concat([var.mover.floating_ip_id], values(var.mover.server_ids)) : can(regex("^[1-9][0-9]{0,18}$", id))
    ])
    error_message = "mover.floating_ip_id and mover.server_ids must be the cloud's numeric ids (decimal digits)."
  }
}

variable "hosts" {
  description = "Every host, keyed by short name. Mail hosts carry their VRRP priority and initial state; others null."
  type = map(object({
    address       = string
    fqdn          = string
    target        = string
    groups        = list(string)
    vrrp_priority = optional(number)
    vrrp_state    = optional(string)
  }))

  # The names become Ansible host and group names, podman arguments and
  # directory names: each must match the same pattern mailha/names.py checks.
  validation {
    condition     = alltrue([for name in keys(var.hosts) : can(regex("^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$", name))])
    error_message = "every host name (a key of hosts) must be a DNS label: 1 to 63 of a-z, 0-9 and '-', not starting or ending with '-'."
  }

  validation {
    condition     = alltrue([for h in var.hosts : can(cidrhost("${h.address}/32", 0)) || can(cidrhost("${h.address}/128", 0))])
    error_message = "every host's address must be an IP address."
  }

  validation {
    condition = alltrue([
      for h in var.hosts :
      length(h.fqdn) <= 253 && can(regex("^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$", h.fqdn))
    ])
    error_message = "every host's fqdn must be a DNS name of lower-case labels joined by '.', without a trailing dot."
  }

  validation {
    condition = alltrue([
      for h in var.hosts :
      can(regex("^[A-Za-z0-9][A-Za-z0-9_.-]{0,252}$", h.target)) || can(cidrhost("${h.target}/32", 0)) || can(cidrhost("${h.target}/128", 0))
    ])
    error_message = "every host's target must be a container or host name (letters, digits, '_', '.', '-'; starting with a letter or digit) or an IP address."
  }

  validation {
    condition = alltrue([
      for h in var.hosts : length(h.groups) > 0 && alltrue([for g in h.groups : contains(["mail", "loadbalancer", "dns", "recipient"], g)])
    ])
    error_message = "every host needs groups from mail, loadbalancer, dns and recipient (the groups the playbooks know)."
  }

  validation {
    condition     = length([for h in var.hosts : h if contains(h.groups, "mail")]) == 2
    error_message = "hosts must hold exactly two hosts in the group \"mail\" (a primary and a standby)."
  }

  validation {
    condition     = length([for h in var.hosts : h if contains(h.groups, "mail") && h.vrrp_state == "MASTER"]) == 1
    error_message = "exactly one mail host must have vrrp_state = \"MASTER\"; the other is \"BACKUP\"."
  }

  validation {
    condition     = alltrue([for h in var.hosts : !contains(h.groups, "mail") || (coalesce(h.vrrp_priority, 0) >= 1 && coalesce(h.vrrp_priority, 0) <= 254)])
    error_message = "every mail host needs vrrp_priority between 1 and 254."
  }

  validation {
    condition     = length(distinct([for h in var.hosts : h.address])) == length(var.hosts)
    error_message = "every host needs an address of its own; two hosts share one."
  }
}
