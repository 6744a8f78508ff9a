terraform {
  required_version = ">= 1.9"
  # Terraform's built-in provider only: the zone's own server applies the records.
}
