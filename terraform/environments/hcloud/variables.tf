# Hetzner Cloud settings (terraform.tfvars; see terraform.tfvars.example).
# Every rule a typo could break is checked here, before anything is made.
# There is no token variable: the provider reads HCLOUD_TOKEN.

variable "name_prefix" {
  description = "Prefix of every name Terraform gives at Hetzner (servers are <prefix>-<relay>); also the label mailha=<prefix> on everything."
  type        = string
  default     = "mailha"

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{0,20}$", var.name_prefix))
    error_message = "name_prefix must start with a letter and hold at most 21 lower-case letters, digits or '-'."
  }
}

variable "location" {
  description = "Hetzner location of the relays, the floating IP and the load balancer: fsn1, nbg1, hel1 (eu-central), ash (us-east), hil (us-west) or sin (ap-southeast)."
  type        = string
  default     = "fsn1"

  validation {
    condition     = contains(["fsn1", "nbg1", "hel1", "ash", "hil", "sin"], var.location)
    error_message = "location must be one of fsn1, nbg1, hel1, ash, hil, sin (the network zone follows from it)."
  }
}

variable "server_type" {
  description = "Hetzner server type of both relays."
  type        = string
  default     = "cx23"

  validation {
    condition     = can(regex("^[a-z]+[0-9]+[a-z]*$", var.server_type))
    error_message = "server_type must be a Hetzner server type name such as cx23 or cpx21."
  }
}

variable "image" {
  description = "Image of both relays: Debian 12, the platform the roles are written and tested for."
  type        = string
  default     = "debian-12"

  validation {
    condition     = var.image == "debian-12"
    error_message = "image must be debian-12: the roles are written and tested for Debian 12 only."
  }
}

variable "relays" {
  description = "Short names of the two relays (inventory host names; the fqdn is <name>.<dns_zone>)."
  type        = list(string)
  default     = ["mx1", "mx2"]

  validation {
    condition     = length(var.relays) == 2 && length(distinct(var.relays)) == 2
    error_message = "relays must name exactly two different relays, the primary and the standby, e.g. [\"mx1\", \"mx2\"]."
  }

  validation {
    condition     = alltrue([for name in var.relays : can(regex("^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$", name))])
    error_message = "every relay name must be a DNS label: 1 to 63 of a-z, 0-9 and '-', not starting or ending with '-' (e.g. mx1)."
  }
}

variable "primary" {
  description = "The relay that starts as VRRP MASTER and is given the floating IP at creation; null: the first by name."
  type        = string
  default     = null

  validation {
    condition     = var.primary == null ? true : contains(var.relays, var.primary)
    error_message = "primary must be one of the relays."
  }
}

variable "network_cidr" {
  description = "The private network's range (RFC 1918); VRRP runs unicast over it."
  type        = string
  default     = "10.213.0.0/16"

  validation {
    condition = can(cidrnetmask(var.network_cidr)) ? (
      cidrsubnet(var.network_cidr, 0, 0) == var.network_cidr &&
      anytrue([for private in ["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"] :
        tonumber(split("/", var.network_cidr)[1]) >= tonumber(split("/", private)[1]) &&
      cidrhost("${split("/", var.network_cidr)[0]}/${split("/", private)[1]}", 0) == cidrhost(private, 0)])
    ) : false
    error_message = "network_cidr must be a private IPv4 network (inside 10.0.0.0/8, 172.16.0.0/12 or 192.168.0.0/16) written with its first address, e.g. 10.213.0.0/16."
  }
}

variable "subnet_cidr" {
  description = "The subnet inside network_cidr the relays (hosts 11 and 12) and the load balancer (host 20) take their addresses from."
  type        = string
  default     = "10.213.0.0/24"

  validation {
    condition = can(cidrnetmask(var.subnet_cidr)) && can(cidrnetmask(var.network_cidr)) ? (
      cidrsubnet(var.subnet_cidr, 0, 0) == var.subnet_cidr &&
      tonumber(split("/", var.subnet_cidr)[1]) >= tonumber(split("/", var.network_cidr)[1]) &&
      tonumber(split("/", var.subnet_cidr)[1]) <= 27 &&
      cidrhost("${split("/", var.subnet_cidr)[0]}/${split("/", var.network_cidr)[1]}", 0) == cidrhost(var.network_cidr, 0)
    ) : false
    error_message = "subnet_cidr must be a network of /27 or larger inside network_cidr ${var.network_cidr}, written with its first address, e.g. 10.213.0.0/24."
  }
}

variable "controller_address" {
  description = "The public IPv4 address your control host (Ansible, the mailha CLI) connects from; SSH and the health agent admit it."
  type        = string

  validation {
    condition     = can(cidrnetmask("${var.controller_address}/32"))
    error_message = "controller_address must be an IPv4 address such as 198.51.100.5 (the address the servers see you connect from)."
  }
}

variable "operator_networks" {
  description = "Networks (CIDR) that may reach SSH on the relays; empty: the controller alone."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for n in var.operator_networks : can(cidrnetmask(n))])
    error_message = "operator_networks must be IPv4 networks in CIDR notation, e.g. 198.51.100.0/24."
  }
}

variable "submission_networks" {
  description = "Networks (CIDR) of campaign clients that submit to the floating IP directly (25, 587); empty: only through the load balancer."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for n in var.submission_networks : can(cidrnetmask(n)) && n != "0.0.0.0/0"])
    error_message = "submission_networks must be IPv4 networks in CIDR notation, and not 0.0.0.0/0 (the relays are no open relay)."
  }
}

variable "ssh_user" {
  description = "The login cloud-init makes on each relay, with passwordless sudo (root cannot log in)."
  type        = string
  default     = "mailha"

  validation {
    condition     = can(regex("^[a-z_][a-z0-9_-]{0,31}$", var.ssh_user)) && var.ssh_user != "root"
    error_message = "ssh_user must be a login name other than root (1 to 32 of a-z, 0-9, '_' and '-')."
  }
}

variable "ssh_public_key" {
  description = "The operator's OpenSSH public key: the only key the relays accept."
  type        = string

  validation {
    condition     = can(regex("^(ssh-ed25519|ssh-rsa|ecdsa-sha2-nistp256|ecdsa-sha2-nistp384|ecdsa-sha2-nistp521) [A-Za-z0-9+/]+={0,2}( [^\\n]*)?$", var.ssh_public_key))
    error_message = "ssh_public_key must be one OpenSSH public key line (ssh-ed25519 AAAA... comment), not a private key or a file name."
  }
}

variable "ssh_private_key_file" {
  description = "Absolute path of the operator's private key on the control host; null: ssh's defaults (the agent, ~/.ssh)."
  type        = string
  default     = null

  validation {
    condition     = var.ssh_private_key_file == null ? true : can(regex("^/[A-Za-z0-9._/-]+$", var.ssh_private_key_file))
    error_message = "ssh_private_key_file must be an absolute path of letters, digits and ._/- (it lands on ssh's command line)."
  }
}

variable "ssh_known_hosts_file" {
  description = "Absolute path of the known_hosts file holding the relays' host keys (make provision ENV=hcloud writes it from the known_hosts output); ssh checks it strictly."
  type        = string

  validation {
    condition     = can(regex("^/[A-Za-z0-9._/-]+$", var.ssh_known_hosts_file))
    error_message = "ssh_known_hosts_file must be an absolute path of letters, digits and ._/- (it lands on ssh's command line)."
  }
}

variable "host_public_keys" {
  description = "Each relay's ed25519 SSH host public key, made on the controller (scripts/hcloud-host-keys.sh); cloud-init installs it and known_hosts names it."
  type        = map(string)

  validation {
    condition     = alltrue([for key in values(var.host_public_keys) : can(regex("^ssh-ed25519 [A-Za-z0-9+/]+={0,2}( [^\\n]*)?$", key))])
    error_message = "host_public_keys must map each relay to an ed25519 public key line (ssh-ed25519 AAAA...)."
  }

  validation {
    condition     = sort(keys(var.host_public_keys)) == sort(var.relays)
    error_message = "host_public_keys must hold a key for each relay and no other (scripts/hcloud-host-keys.sh makes them)."
  }
}

variable "host_private_keys" {
  description = "Each relay's ed25519 SSH host private key (OpenSSH format), made on the controller; it reaches the relay in its user_data."
  type        = map(string)
  sensitive   = true

  validation {
    condition = alltrue([
      for key in values(var.host_private_keys) :
      startswith(key, "-----BEGIN OPENSSH PRIVATE KEY-----\n") && endswith(trimspace(key), "-----END OPENSSH PRIVATE KEY-----")
    ])
    error_message = "host_private_keys must map each relay to an OpenSSH private key (-----BEGIN OPENSSH PRIVATE KEY----- ...)."
  }

  validation {
    condition     = sort(keys(var.host_private_keys)) == sort(var.relays)
    error_message = "host_private_keys must hold a key for each relay and no other (scripts/hcloud-host-keys.sh makes them)."
  }
}

variable "load_balancer_name" {
  description = "Short name of the load balancer (the contract's load_balancer.host; at Hetzner <prefix>-<name>)."
  type        = string
  default     = "lb"

  validation {
    condition     = can(regex("^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$", var.load_balancer_name)) && !contains(var.relays, var.load_balancer_name)
    error_message = "load_balancer_name must be a DNS label (a-z, 0-9 and '-') other than a relay's name."
  }
}

variable "load_balancer_type" {
  description = "Hetzner load balancer type; lb11, the smallest, carries two TCP services."
  type        = string
  default     = "lb11"

  validation {
    condition     = can(regex("^lb[0-9]+$", var.load_balancer_type))
    error_message = "load_balancer_type must be a Hetzner load balancer type such as lb11."
  }
}

variable "health_check" {
  description = "How often the load balancer asks each relay's agent GET /active (seconds), how long it waits, and after how many failed tries it takes the relay out."
  type = object({
    interval = number
    timeout  = number
    retries  = number
  })
  default = { interval = 3, timeout = 2, retries = 1 }

  validation {
    condition = (
      var.health_check.interval == floor(var.health_check.interval) && var.health_check.interval >= 1 &&
      var.health_check.timeout == floor(var.health_check.timeout) && var.health_check.timeout >= 1 &&
      var.health_check.timeout < var.health_check.interval &&
      var.health_check.retries == floor(var.health_check.retries) && var.health_check.retries >= 0
    )
    error_message = "health_check needs whole seconds with 1 <= timeout < interval, and retries >= 0 (a check must end before the next starts)."
  }
}

variable "agent_port" {
  description = "The relays' health agent port (mailha-health-agent, roles/mail_health)."
  type        = number
  default     = 8025

  validation {
    condition     = var.agent_port == floor(var.agent_port) && var.agent_port >= 1 && var.agent_port <= 65535
    error_message = "agent_port must be a TCP port (1-65535)."
  }
}

variable "dns_zone" {
  description = "The DNS zone of the relays' names and of the sending identity, e.g. example.com."
  type        = string

  validation {
    condition     = length(var.dns_zone) <= 253 && can(regex("^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)+$", var.dns_zone))
    error_message = "dns_zone must be a DNS name of at least two lower-case labels, without a trailing dot, e.g. example.com."
  }
}

variable "dns_provider" {
  description = "Who serves the zone: hcloud (Hetzner's DNS; Terraform publishes the records) or rfc2136 (your own or a provider's server; Terraform writes the update, you send it)."
  type        = string
  default     = "hcloud"

  validation {
    condition     = contains(["hcloud", "rfc2136"], var.dns_provider)
    error_message = "dns_provider must be \"hcloud\" or \"rfc2136\"."
  }
}

variable "dns_server" {
  description = "IPv4 address of an authoritative server of the zone, which mailha queries (with rfc2136: also updates)."
  type        = string

  validation {
    condition     = can(cidrnetmask("${var.dns_server}/32"))
    error_message = "dns_server must be the IPv4 address of an authoritative server of the zone, e.g. 192.0.2.53."
  }
}

variable "dns_ttl" {
  description = "TTL of the records Terraform describes, in seconds."
  type        = number
  default     = 300

  validation {
    condition     = var.dns_ttl == floor(var.dns_ttl) && var.dns_ttl >= 60 && var.dns_ttl <= 86400
    error_message = "dns_ttl must be whole seconds between 60 and 86400."
  }
}

variable "sending_name" {
  description = "First label of the sending host, <sending_name>.<dns_zone>: the floating IP's A and PTR name and the relays' HELO."
  type        = string
  default     = "mta"

  validation {
    condition     = can(regex("^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$", var.sending_name)) && !contains(concat(var.relays, [var.load_balancer_name, var.submission_name]), var.sending_name)
    error_message = "sending_name must be a DNS label (a-z, 0-9 and '-') of its own, not a relay's, the load balancer's or submission_name."
  }
}

variable "submission_name" {
  description = "First label of the submission host, <submission_name>.<dns_zone>: the load balancer's public address."
  type        = string
  default     = "smtp"

  validation {
    condition     = can(regex("^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$", var.submission_name)) && !contains(concat(var.relays, [var.load_balancer_name]), var.submission_name)
    error_message = "submission_name must be a DNS label (a-z, 0-9 and '-') of its own, not a relay's or the load balancer's."
  }
}

variable "sender_domain" {
  description = "The campaign sender domain (SPF, DKIM, DMARC): dns_zone or a name inside it; null: dns_zone."
  type        = string
  default     = null

  validation {
    condition     = var.sender_domain == null ? true : var.sender_domain == var.dns_zone || endswith(var.sender_domain, ".${var.dns_zone}")
    error_message = "sender_domain must be dns_zone or a name inside it (its SPF, DKIM and DMARC records go in the zone)."
  }
}

variable "dkim_selector" {
  description = "The DKIM selector: the key is published at <selector>._domainkey.<sender_domain>."
  type        = string
  default     = "mailha"

  validation {
    condition     = can(regex("^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$", var.dkim_selector))
    error_message = "dkim_selector must be a DNS label (a-z, 0-9 and '-'), e.g. mailha."
  }
}

variable "dkim_public_key" {
  description = "The DKIM public key, base64 without the PEM lines (the p= value; .lab/secrets/hcloud/dkim-<selector>.pub after the first provision); null: no DKIM record yet."
  type        = string
  default     = null

  validation {
    condition     = var.dkim_public_key == null ? true : can(regex("^[A-Za-z0-9+/]{100,}={0,2}$", var.dkim_public_key))
    error_message = "dkim_public_key must be the key's base64 text alone (MIIBIjAN...), without the BEGIN/END lines, spaces or quotes."
  }
}

variable "dmarc_policy" {
  description = "The sender domain's DMARC policy: none, quarantine or reject."
  type        = string
  default     = "reject"

  validation {
    condition     = contains(["none", "quarantine", "reject"], var.dmarc_policy)
    error_message = "dmarc_policy must be none, quarantine or reject."
  }
}

variable "dmarc_report_address" {
  description = "Mailbox for DMARC aggregate reports (rua=mailto:); null: none."
  type        = string
  default     = null

  validation {
    condition     = var.dmarc_report_address == null ? true : can(regex("^[A-Za-z0-9._+-]+@[a-z0-9.-]+\\.[a-z]{2,}$", var.dmarc_report_address))
    error_message = "dmarc_report_address must be a mail address such as dmarc@example.com."
  }
}

variable "protection" {
  description = "Hetzner's delete protection on the relays, the floating IP and the load balancer (and rebuild protection on the relays). Set false and apply before destroying."
  type        = bool
  default     = true
}

variable "labels" {
  description = "Extra labels on everything made at Hetzner."
  type        = map(string)
  default     = {}
}
