terraform {
  required_version = ">= 1.6"
  # Only Terraform's built-in provider: the lab needs no provider download.
}
