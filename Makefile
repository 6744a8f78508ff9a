SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help
MAKEFLAGS += --no-print-directory

ENV ?= lab
VENV ?= $(CURDIR)/.venv
TF_DIR := terraform/environments/$(ENV)
INVENTORY ?= inventories/$(ENV)/hosts.yml
# Every environment but the lab describes servers that exist already; the
# operator's settings for it live here (git ignores it).
TFVARS ?= $(TF_DIR)/terraform.tfvars
# The lab's operator key: every lab host takes it, as a VPS takes the key
# its cloud-init installs (scripts/lab-podman.sh operator-key makes it once).
LAB_SECRETS := .lab/secrets/lab
LAB_KEY := $(LAB_SECRETS)/id_ed25519
ROLES ?= $(notdir $(wildcard roles/*))
PYTEST_ARGS ?=
# Molecule scenarios run side by side (scripts/molecule-roles.sh). One after
# another they took 28 min of the suite on a 2-core machine, most of it
# waiting (systemd boots, Ansible round trips), so 2 lanes run nearly twice
# the scenarios per minute; 1 restores the sequential run.
MOLECULE_JOBS ?= 2
BENCHMARK_ARGS ?=

export CONTAINERS_CONF := $(CURDIR)/lab/containers.conf
export TF_CLI_CONFIG_FILE := $(CURDIR)/terraform/cli.tfrc
export CHECKPOINT_DISABLE := 1
export TF_IN_AUTOMATION := 1
export ANSIBLE_CONFIG := $(CURDIR)/ansible.cfg
export ANSIBLE_FORCE_COLOR ?= 0
export PATH := $(VENV)/bin:$(PATH)

.PHONY: help
help: ## List the targets and what each environment reads
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F ':.*## ' '{printf "  %-21s %s\n", $$1, $$2}'
	@printf '\nEnvironments (ENV, default lab) for provision, converge, destroy:\n'
	@printf '  %-21s %s\n' \
	  'ENV=lab' 'podman containers on this machine; reads no settings (terraform/environments/lab/variables.tf defaults)' \
	  'ENV=existing' 'servers you rent already; reads terraform/environments/existing/terraform.tfvars (copy terraform.tfvars.example)'

.PHONY: deps
deps: ## Install host packages and the pinned virtual environment
	@scripts/bootstrap-host.sh $(VENV)

.PHONY: image
image: deps ## Build the lab image (reused while its package list is unchanged)
	@scripts/build-image.sh >/dev/null

.PHONY: provision
provision: $(if $(filter lab,$(ENV)),image,settings controller-deps) ## Build the lab (ENV=existing: check the settings) with Terraform, write the inventory, configure it (site.yml)
ifeq ($(ENV),lab)
	@$(MAKE) lab-hosts
	@mailha inventory --terraform-dir $(TF_DIR) --inventory $(INVENTORY)
	@ansible-playbook -i $(INVENTORY) playbooks/site.yml
	@scripts/lab-summary.sh $(INVENTORY)
else
	@terraform -chdir=$(TF_DIR) init -input=false >/dev/null
	@terraform -chdir=$(TF_DIR) apply -input=false -auto-approve -var-file=$(abspath $(TFVARS))
	@mailha inventory --terraform-dir $(TF_DIR) --inventory $(INVENTORY)
	@ansible-playbook -i $(INVENTORY) playbooks/site.yml
endif

# The lab's servers as a cloud would hand them over: containers booted,
# sshd up with the operator's key, nothing configured (provision does that).
.PHONY: lab-hosts
lab-hosts: image ## The lab's network and containers only (what a cloud's API makes), not configured
	@scripts/lab-podman.sh operator-key $(LAB_SECRETS)
	@image=$$(scripts/build-image.sh); \
	terraform -chdir=terraform/environments/lab init -input=false >/dev/null; \
	replace=$$(scripts/lab-drift.sh terraform/environments/lab); \
	terraform -chdir=terraform/environments/lab apply -input=false -auto-approve -var image=$$image \
	  -var ssh_public_key="$$(cat $(LAB_KEY).pub)" $$replace

# These fail in one line, before anything is installed, when ENV names no
# environment or its terraform.tfvars is missing ($(error) expands only when
# the recipe runs, so other targets never see it).
.PHONY: known-env
known-env:
	$(if $(wildcard $(TF_DIR)/*.tf),,$(error ENV=$(ENV): $(TF_DIR) is no Terraform environment; the environments are $(notdir $(wildcard terraform/environments/*))))

.PHONY: settings
settings: known-env
	$(if $(wildcard $(TFVARS)),,$(error ENV=$(ENV): $(TFVARS) is missing; copy terraform.tfvars.example to terraform.tfvars and fill it in))

# What a control host of existing servers needs: no lab packages.
.PHONY: controller-deps
controller-deps:
	@scripts/bootstrap-host.sh --controller $(VENV)

.PHONY: converge
converge: ## Run playbooks/site.yml against the existing inventory
	@ansible-playbook -i $(INVENTORY) playbooks/site.yml

.PHONY: destroy
destroy: $(if $(filter lab,$(ENV)),,known-env) ## Remove everything the lab made (containers, network, Terraform state); ENV=existing: only the state and inventory
ifeq ($(ENV),lab)
	@if [[ -d $(TF_DIR)/.terraform ]]; then \
	  image=$$(scripts/build-image.sh --print-ref); \
	  key=$$(cat $(LAB_KEY).pub 2>/dev/null || echo "ssh-ed25519 AAAAgone"); \
	  terraform -chdir=$(TF_DIR) destroy -input=false -auto-approve -var image=$$image -var ssh_public_key="$$key"; \
	fi
	@rm -f $(INVENTORY)
else
	@rm -f $(TF_DIR)/terraform.tfstate $(TF_DIR)/terraform.tfstate.backup $(INVENTORY)
	@echo "destroy ENV=$(ENV): removed the Terraform state and $(INVENTORY); no server was touched (mailha never deletes servers it did not create)"
endif

.PHONY: lint
lint: deps rules-test ## ruff, yamllint, ansible-lint (production profile), terraform fmt, alert rules
	ruff check mailha tests roles benchmarks plugins molecule
	ruff format --check mailha tests benchmarks plugins molecule
	yamllint -s .
	ansible-lint --profile production --offline -q
	terraform fmt -check -recursive terraform

.PHONY: rules-test
rules-test: deps ## promtool: check and unit-test the alert rules (monitoring/prometheus)
	promtool check rules monitoring/prometheus/mailha-rules.yml
	promtool test rules monitoring/prometheus/tests/*.yml

.PHONY: tf-test
tf-test: deps ## terraform validate and terraform test, offline
	@for dir in terraform/environments/*/; do \
	  terraform -chdir=$$dir init -input=false -backend=false >/dev/null; \
	  terraform -chdir=$$dir validate -no-color; \
	  terraform -chdir=$$dir test -no-color; \
	done

.PHONY: molecule
molecule: image ## Molecule default scenario of every role, MOLECULE_JOBS at a time (ROLES="a b" for some)
	@podman network exists mailha-molecule || \
	  podman network create --internal --subnet 10.213.1.0/24 mailha-molecule >/dev/null
	@scripts/molecule-roles.sh $(MOLECULE_JOBS) $(ROLES)

.PHONY: molecule-failover
molecule-failover: image ## The multi-node failover scenario (kills the primary's MTA; scheduled CI runs it)
	@podman network exists mailha-molecule || \
	  podman network create --internal --subnet 10.213.1.0/24 mailha-molecule >/dev/null
	molecule test -s failover

.PHONY: node-package
node-package: ## Build the relays' zipapp (mailha/node) into build/mailha-node.pyz
	python3 -m mailha.node.build --output build/mailha-node.pyz

.PHONY: unit
unit: deps ## Unit tests (no lab needed)
	pytest tests/unit $(PYTEST_ARGS)

.PHONY: integration
integration: deps ## Integration tests on the provisioned lab
	pytest tests/integration $(PYTEST_ARGS)

.PHONY: benchmark
benchmark: deps ## Failover benchmark on the lab, tuned vs stock keepalived timings (RUNS=3)
	python benchmarks/failover.py --runs $${RUNS:-3}

.PHONY: benchmark-throughput
benchmark-throughput: deps ## Throughput benchmark on the lab: msg/s per path, signed vs unsigned, accepted vs delivered (ROUNDS=3)
	python benchmarks/throughput.py --rounds $${ROUNDS:-3} $(BENCHMARK_ARGS)

# The lab's servers described to the existing environment, as an operator
# describes servers they rent (inventories/lab-existing/README.md).
LAB_AS_EXISTING_TFVARS := .lab/lab-existing.tfvars.json
LAB_AS_EXISTING_INVENTORY := inventories/lab-existing/hosts.yml

.PHONY: lab-as-existing
lab-as-existing: ## The provisioned lab's servers as ENV=existing (its own Terraform workspace): what make test runs pytest on
	@scripts/lab-as-existing.sh inventories/lab/hosts.yml $(LAB_AS_EXISTING_TFVARS)
	@TF_WORKSPACE=lab-existing $(MAKE) provision ENV=existing TFVARS=$(CURDIR)/$(LAB_AS_EXISTING_TFVARS) \
	  INVENTORY=$(LAB_AS_EXISTING_INVENTORY)

.PHONY: test
test: lint tf-test molecule provision lab-as-existing ## The whole suite: lint, Terraform tests, Molecule, lab, the lab as ENV=existing, pytest on it
	MAILHA_TEST_INVENTORY=$(CURDIR)/$(LAB_AS_EXISTING_INVENTORY) pytest tests $(PYTEST_ARGS)
