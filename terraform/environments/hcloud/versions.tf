terraform {
  # 1.9: a variable's validation may compare it with other variables.
  required_version = ">= 1.9"

  required_providers {
    hcloud = {
      source  = "hetznercloud/hcloud"
      version = "~> 1.50"
    }
  }
}

# The token is read from HCLOUD_TOKEN in the environment: it is no variable,
# so it never lands in terraform.tfvars, the state or a server's user_data.
provider "hcloud" {}
