# The servers you rent already, and how they fit together. Every rule that
# a typo could break is checked here, so a bad terraform.tfvars fails before
# Ansible touches a server. Addresses are IPv4: the host firewalls admit
# them as /32s and keepalived moves an IPv4 floating IP.

variable "relays" {
  description = "The two mail relays by short name (inventory host name; the fqdn is <name>.<dns_zone>): address on network_cidr, and ssh_host if SSH reaches it at another name or address."
  type = map(object({
    address  = string
    ssh_host = optional(string)
  }))

  validation {
    condition     = length(var.relays) == 2
    error_message = "relays must name exactly two servers, the primary and the standby, e.g. { mx1 = { address = \"192.0.2.11\" }, mx2 = { address = \"192.0.2.12\" } }."
  }

  validation {
    condition     = alltrue([for name in keys(var.relays) : can(regex("^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$", name))])
    error_message = "every relay name must be a DNS label: 1 to 63 of a-z, 0-9 and '-', not starting or ending with '-' (e.g. mx1)."
  }

  validation {
    condition     = alltrue([for r in var.relays : can(cidrnetmask("${r.address}/32"))])
    error_message = "every relay's address must be an IPv4 address such as 192.0.2.11."
  }

  validation {
    condition     = length(distinct([for r in var.relays : r.address])) == length(var.relays)
    error_message = "the two relays have the same address; each relay needs an address of its own."
  }

  validation {
    condition = alltrue([
      for r in var.relays : !can(cidrnetmask("${r.address}/32")) || !can(cidrnetmask(var.network_cidr)) ? true :
      cidrhost("${r.address}/${split("/", var.network_cidr)[1]}", 0) == cidrhost(var.network_cidr, 0)
    ])
    error_message = "every relay's address must be inside network_cidr ${var.network_cidr}: VRRP moves the floating IP between the relays on that network."
  }

  validation {
    condition     = alltrue([for r in var.relays : r.ssh_host == null ? true : can(regex("^[A-Za-z0-9][A-Za-z0-9_.-]{0,252}$", r.ssh_host))])
    error_message = "a relay's ssh_host must be a host name or an IP address (letters, digits, '_', '.', '-'; starting with a letter or digit)."
  }
}

variable "primary" {
  description = "The relay that starts as VRRP MASTER (a key of relays); null: the first relay by name."
  type        = string
  default     = null

  validation {
    condition     = var.primary == null ? true : contains(keys(var.relays), var.primary)
    error_message = "primary must be the name of one of the relays."
  }
}

variable "load_balancer" {
  description = "The HAProxy server in front of the relays: name (default lb), address, and ssh_host if SSH reaches it at another name or address."
  type = object({
    name     = optional(string, "lb")
    address  = string
    ssh_host = optional(string)
  })

  validation {
    condition     = can(regex("^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$", var.load_balancer.name))
    error_message = "load_balancer.name must be a DNS label: 1 to 63 of a-z, 0-9 and '-', not starting or ending with '-' (e.g. lb)."
  }

  validation {
    condition     = can(cidrnetmask("${var.load_balancer.address}/32"))
    error_message = "load_balancer.address must be an IPv4 address such as 192.0.2.20."
  }

  validation {
    condition = (
      !contains(keys(var.relays), var.load_balancer.name) &&
      !contains([for r in var.relays : r.address], var.load_balancer.address)
    )
    error_message = "load_balancer must be a server of its own: its name and address must differ from the relays'."
  }

  validation {
    condition     = var.load_balancer.ssh_host == null ? true : can(regex("^[A-Za-z0-9][A-Za-z0-9_.-]{0,252}$", var.load_balancer.ssh_host))
    error_message = "load_balancer.ssh_host must be a host name or an IP address (letters, digits, '_', '.', '-'; starting with a letter or digit)."
  }
}

variable "dns_host" {
  description = "Optional: your own DNS server, which mailha configures (roles/bind) as the zone's RFC 2136 server. null when the zone is served elsewhere (then set dns_server)."
  type = object({
    name     = optional(string, "ns")
    address  = string
    ssh_host = optional(string)
  })
  default = null

  validation {
    condition     = var.dns_host == null ? true : can(regex("^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$", var.dns_host.name))
    error_message = "dns_host.name must be a DNS label: 1 to 63 of a-z, 0-9 and '-', not starting or ending with '-' (e.g. ns)."
  }

  validation {
    condition     = var.dns_host == null ? true : can(cidrnetmask("${var.dns_host.address}/32"))
    error_message = "dns_host.address must be an IPv4 address such as 192.0.2.10."
  }

  validation {
    condition = var.dns_host == null ? true : (
      !contains(concat(keys(var.relays), [var.load_balancer.name]), var.dns_host.name) &&
      !contains(concat([for r in var.relays : r.address], [var.load_balancer.address]), var.dns_host.address)
    )
    error_message = "dns_host must be a server of its own: its name and address must differ from the relays' and the load balancer's."
  }

  validation {
    condition     = var.dns_host == null ? true : var.dns_host.ssh_host == null ? true : can(regex("^[A-Za-z0-9][A-Za-z0-9_.-]{0,252}$", var.dns_host.ssh_host))
    error_message = "dns_host.ssh_host must be a host name or an IP address (letters, digits, '_', '.', '-'; starting with a letter or digit)."
  }
}

variable "sink" {
  description = "Optional: a recipient-side server you own for drills and tests (roles/sink): name (default sink), address, ssh_host. null: none."
  type = object({
    name     = optional(string, "sink")
    address  = string
    ssh_host = optional(string)
  })
  default = null

  validation {
    condition     = var.sink == null ? true : can(regex("^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$", var.sink.name))
    error_message = "sink.name must be a DNS label: 1 to 63 of a-z, 0-9 and '-', not starting or ending with '-' (e.g. sink)."
  }

  validation {
    condition     = var.sink == null ? true : can(cidrnetmask("${var.sink.address}/32"))
    error_message = "sink.address must be an IPv4 address such as 198.51.100.30."
  }

  validation {
    condition = var.sink == null ? true : (
      !contains(concat(keys(var.relays), [var.load_balancer.name], var.dns_host == null ? [] : [var.dns_host.name]), var.sink.name) &&
      !contains(concat([for r in var.relays : r.address], [var.load_balancer.address], var.dns_host == null ? [] : [var.dns_host.address]), var.sink.address)
    )
    error_message = "sink must be a server of its own: its name and address must differ from the relays', the load balancer's and dns_host's."
  }

  validation {
    condition     = var.sink == null ? true : var.sink.ssh_host == null ? true : can(regex("^[A-Za-z0-9][A-Za-z0-9_.-]{0,252}$", var.sink.ssh_host))
    error_message = "sink.ssh_host must be a host name or an IP address (letters, digits, '_', '.', '-'; starting with a letter or digit)."
  }
}

variable "network_cidr" {
  description = "The network the relays share, on which VRRP moves the floating IP (a provider's private network or VLAN), e.g. 192.0.2.0/24."
  type        = string

  validation {
    condition = (
      can(cidrnetmask(var.network_cidr)) && can(regex("/([89]|1[0-9]|2[0-9])$", var.network_cidr)) ?
      cidrsubnet(var.network_cidr, 0, 0) == var.network_cidr : false
    )
    error_message = "network_cidr must be an IPv4 network between /8 and /29 written with its first address, e.g. 192.0.2.0/24 (not 192.0.2.5/24)."
  }
}

variable "floating_ip" {
  description = "The floating IP: the sending identity (PTR, SPF) that keepalived moves between the relays; a free address on network_cidr that your provider lets the relays claim."
  type        = string

  validation {
    condition     = can(cidrnetmask("${var.floating_ip}/32"))
    error_message = "floating_ip must be an IPv4 address such as 192.0.2.100."
  }

  validation {
    condition = !can(cidrnetmask("${var.floating_ip}/32")) || !can(cidrnetmask(var.network_cidr)) ? true : (
      cidrhost("${var.floating_ip}/${split("/", var.network_cidr)[1]}", 0) == cidrhost(var.network_cidr, 0) &&
      !contains([cidrhost(var.network_cidr, 0), cidrhost(var.network_cidr, -1)], var.floating_ip)
    )
    error_message = "floating_ip ${var.floating_ip} must be a usable address inside network_cidr ${var.network_cidr} (not its first or last): VRRP moves it on the relays' network."
  }

  validation {
    condition = !contains(concat(
      [for r in var.relays : r.address],
      [var.load_balancer.address],
      var.dns_host == null ? [] : [var.dns_host.address],
      var.sink == null ? [] : [var.sink.address],
    ), var.floating_ip)
    error_message = "floating_ip ${var.floating_ip} is also a server's address; it must be a free address that only VRRP assigns."
  }
}

variable "controller_address" {
  description = "The address your servers see the control host (Ansible, the mailha CLI) connect from; the host firewalls admit SSH and the health agents from it only."
  type        = string

  validation {
    condition     = can(cidrnetmask("${var.controller_address}/32"))
    error_message = "controller_address must be an IPv4 address such as 198.51.100.5: the one your control host connects from."
  }
}

variable "ssh_user" {
  description = "The user Ansible logs in as on every server; a user other than root becomes root with sudo."
  type        = string
  default     = "root"

  validation {
    condition     = can(regex("^[a-z_][a-z0-9_-]{0,31}$", var.ssh_user))
    error_message = "ssh_user must be a login name: 1 to 32 of a-z, 0-9, '_' and '-', starting with a letter or '_'."
  }
}

variable "ssh_port" {
  description = "The port sshd listens on, on every server."
  type        = number
  default     = 22

  validation {
    condition     = var.ssh_port == floor(var.ssh_port) && var.ssh_port >= 1 && var.ssh_port <= 65535
    error_message = "ssh_port must be a TCP port, a whole number from 1 to 65535."
  }
}

variable "ssh_private_key_file" {
  description = "Optional: the private key Ansible and mailha log in with (absolute path); null: ssh's own choice (the agent, ~/.ssh/id_*)."
  type        = string
  default     = null

  validation {
    condition     = var.ssh_private_key_file == null ? true : startswith(var.ssh_private_key_file, "/")
    error_message = "ssh_private_key_file must be an absolute path, such as /home/you/.ssh/id_ed25519."
  }
}

variable "ssh_known_hosts_file" {
  description = "Optional: a known_hosts file that holds the servers' host keys (absolute path), checked strictly; null: ~/.ssh/known_hosts."
  type        = string
  default     = null

  validation {
    condition     = var.ssh_known_hosts_file == null ? true : startswith(var.ssh_known_hosts_file, "/")
    error_message = "ssh_known_hosts_file must be an absolute path, such as /home/you/.ssh/known_hosts."
  }
}

variable "dns_zone" {
  description = "The DNS zone that holds the servers' names and the sending identity, e.g. example.com; updated over RFC 2136 at a failover."
  type        = string

  validation {
    condition     = length(var.dns_zone) <= 253 && can(regex("^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)+$", var.dns_zone))
    error_message = "dns_zone must be a DNS name of at least two lower-case labels, without a trailing dot, e.g. example.com."
  }
}

variable "dns_server" {
  description = "The address of the zone's RFC 2136 (dynamic update) server; null: dns_host's address."
  type        = string
  default     = null

  validation {
    condition     = var.dns_server == null ? var.dns_host != null : can(cidrnetmask("${var.dns_server}/32"))
    error_message = "dns_server must be the IPv4 address of the zone's RFC 2136 server, e.g. 192.0.2.10; it may only be left out when dns_host names your own DNS server."
  }
}

variable "sending_name" {
  description = "First label of the sending host's name, <sending_name>.<dns_zone>: the floating IP's A and PTR name."
  type        = string
  default     = "mta"

  validation {
    condition     = can(regex("^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$", var.sending_name))
    error_message = "sending_name must be a DNS label such as mta (a-z, 0-9 and '-')."
  }

  validation {
    condition = !contains(concat(
      keys(var.relays), [var.load_balancer.name, var.submission_name],
      var.dns_host == null ? [] : [var.dns_host.name],
      var.sink == null ? [] : [var.sink.name],
    ), var.sending_name)
    error_message = "sending_name ${var.sending_name} is already a server's name or submission_name; the sending host needs a name of its own (it points at the floating IP)."
  }
}

variable "submission_name" {
  description = "First label of the submission host's name, <submission_name>.<dns_zone>: the load balancer's name for campaign clients."
  type        = string
  default     = "smtp"

  validation {
    condition     = can(regex("^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$", var.submission_name))
    error_message = "submission_name must be a DNS label such as smtp (a-z, 0-9 and '-')."
  }

  validation {
    condition = !contains(concat(
      keys(var.relays), [var.load_balancer.name],
      var.dns_host == null ? [] : [var.dns_host.name],
      var.sink == null ? [] : [var.sink.name],
    ), var.submission_name)
    error_message = "submission_name ${var.submission_name} is already a server's name; the submission host needs a name of its own (it points at the load balancer)."
  }
}
