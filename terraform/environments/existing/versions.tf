terraform {
  # 1.9: a variable's validation may compare it with other variables (a relay
  # inside network_cidr, a floating IP no server uses).
  required_version = ">= 1.9"
  # Only Terraform's built-in provider: the servers exist already, so
  # Terraform creates nothing and downloads nothing; it checks the settings
  # and emits the output contract.
}
