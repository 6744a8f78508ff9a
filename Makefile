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
# Hetzner Cloud: the relays' SSH host keys, made here before the servers
# exist (scripts/hcloud-host-keys.sh), and the known_hosts that names them.
# HCLOUD_RELAYS must be the relays of terraform.tfvars (default mx1 mx2).
HCLOUD_SECRETS := $(CURDIR)/.lab/secrets/hcloud
HCLOUD_RELAYS ?= mx1 mx2
HCLOUD_VARS = -var-file=$(abspath $(TFVARS)) -var-file=$(HCLOUD_SECRETS)/host-keys.tfvars.json \
  -var ssh_known_hosts_file=$(HCLOUD_SECRETS)/known_hosts
# The schema-only hcloud provider stand-in (terraform/providers/hcloud) and
# the CLI configuration that serves it, for offline validate and test only.
STANDIN_DIR := $(CURDIR)/.lab/terraform-standin
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
	  'ENV=existing' 'servers you rent already; reads terraform/environments/existing/terraform.tfvars (copy terraform.tfvars.example)' \
	  'ENV=hcloud' 'Hetzner Cloud (makes servers, floating IP, load balancer); reads terraform/environments/hcloud/terraform.tfvars and HCLOUD_TOKEN'

.PHONY: deps
deps: ## Install host packages and the pinned virtual environment
	@scripts/bootstrap-host.sh $(VENV)

.PHONY: image
image: deps ## Build the lab image (reused while its package list is unchanged)
	@scripts/build-image.sh >/dev/null

.PHONY: provision
provision: $(if $(filter lab,$(ENV)),image,settings $(if $(filter hcloud,$(ENV)),hcloud-token) controller-deps) ## Build the lab (ENV=existing: check the settings; ENV=hcloud: make the servers) with Terraform, write the inventory, configure it (site.yml)
ifeq ($(ENV),lab)
	@$(MAKE) lab-hosts
	@mailha inventory --terraform-dir $(TF_DIR) --inventory $(INVENTORY)
	@ansible-playbook -i $(INVENTORY) playbooks/site.yml
	@scripts/lab-summary.sh $(INVENTORY)
else ifeq ($(ENV),hcloud)
	@scripts/hcloud-host-keys.sh $(HCLOUD_SECRETS) $(HCLOUD_RELAYS)
	@terraform -chdir=$(TF_DIR) init -input=false >/dev/null
	@terraform -chdir=$(TF_DIR) apply -input=false -auto-approve $(HCLOUD_VARS)
	@terraform -chdir=$(TF_DIR) output -raw known_hosts > $(HCLOUD_SECRETS)/known_hosts
	@mailha inventory --terraform-dir $(TF_DIR) --inventory $(INVENTORY)
	@ansible all -i $(INVENTORY) -m ansible.builtin.wait_for_connection -a timeout=600 >/dev/null
	@ansible-playbook -i $(INVENTORY) playbooks/site.yml
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

# The provider reads the token from the environment; it is no Terraform
# variable, so it never reaches a file, the state or a server.
.PHONY: hcloud-token
hcloud-token:
	$(if $(HCLOUD_TOKEN),,$(error ENV=hcloud: HCLOUD_TOKEN is not set; export a read/write API token of your Hetzner Cloud project (never put it in terraform.tfvars)))

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
destroy: $(if $(filter lab,$(ENV)),,known-env) $(if $(filter hcloud,$(ENV)),settings hcloud-token) ## Remove everything the lab made (containers, network, Terraform state); ENV=existing: only the state and inventory; ENV=hcloud: asks, then deletes what Terraform made
ifeq ($(ENV),lab)
	@python -m mailha.lab_cloud stop >/dev/null || true
	@if [[ -d $(TF_DIR)/.terraform ]]; then \
	  image=$$(scripts/build-image.sh --print-ref); \
	  key=$$(cat $(LAB_KEY).pub 2>/dev/null || echo "ssh-ed25519 AAAAgone"); \
	  terraform -chdir=$(TF_DIR) destroy -input=false -auto-approve -var image=$$image -var ssh_public_key="$$key"; \
	fi
	@rm -f $(INVENTORY)
else ifeq ($(ENV),hcloud)
	@terraform -chdir=$(TF_DIR) destroy -input=true $(HCLOUD_VARS)
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
tf-test: deps ## terraform validate and terraform test, offline (hcloud with the schema-only provider stand-in)
	@scripts/hcloud-standin.sh $(VENV)/bin/python $(STANDIN_DIR)
	@for dir in terraform/environments/*/; do \
	  if grep -qs 'hetznercloud/hcloud' $$dir/versions.tf; then \
	    export TF_CLI_CONFIG_FILE=$(STANDIN_DIR)/cli.tfrc; \
	    terraform -chdir=$$dir get >/dev/null; \
	  else \
	    export TF_CLI_CONFIG_FILE=$(TF_CLI_CONFIG_FILE); \
	    terraform -chdir=$$dir init -input=false -backend=false >/dev/null; \
	  fi; \
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
	pytest tests/integration --ignore=tests/integration/cloud $(PYTEST_ARGS)

.PHONY: benchmark
benchmark: deps ## Failover benchmark on the lab, tuned vs stock keepalived timings (RUNS=3)
	python benchmarks/failover.py --runs $${RUNS:-3}

.PHONY: benchmark-cloud
benchmark-cloud: deps ## Failover benchmark in simulated cloud mode (after make lab-as-cloud): outage per API latency (LATENCIES=0.5,2,5 RUNS=3)
	python benchmarks/cloud_failover.py --latencies $${LATENCIES:-0.5,2,5} --runs $${RUNS:-3} \
	  --scenarios $${SCENARIOS:-mta-crash,host-down}

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

# The same servers as a cloud that routes the floating IP through its API
# (mailha/lab_cloud.py): a fake Hetzner API on the controller delivers the
# address to the relay it assigns it to, LAB_CLOUD_LATENCY seconds after the
# mover asks.
LAB_CLOUD_INVENTORY := inventories/lab-cloud/hosts.yml
LAB_CLOUD_LATENCY ?= 2

.PHONY: lab-as-cloud
lab-as-cloud: ## The lab as ENV=existing in simulated cloud mode: the mover asks a fake Hetzner API, which moves the floating IP (LAB_CLOUD_LATENCY=2 s)
	@python -m mailha.lab_cloud start --inventory $(LAB_AS_EXISTING_INVENTORY) --out $(LAB_CLOUD_INVENTORY) \
	  --latency $(LAB_CLOUD_LATENCY)
	@ansible-playbook -i $(LAB_CLOUD_INVENTORY) playbooks/site.yml --limit mail
	@python -m mailha.lab_cloud apply

.PHONY: lab-cloud-off
lab-cloud-off: ## Out of simulated cloud mode: no mover on the relays, no fence, the fake API stops
	@ansible-playbook -i $(LAB_AS_EXISTING_INVENTORY) playbooks/site.yml --limit mail
	@ansible -i $(LAB_AS_EXISTING_INVENTORY) mail -b -m ansible.builtin.command \
	  -a "systemctl disable --now mailha-fip-check.timer mailha-fip-recheck.path"
	@python -m mailha.lab_cloud stop

.PHONY: integration-cloud
integration-cloud: deps ## The simulated cloud mode's drills (after make lab-as-cloud)
	MAILHA_TEST_INVENTORY=$(CURDIR)/$(LAB_CLOUD_INVENTORY) pytest tests/integration/cloud $(PYTEST_ARGS)

.PHONY: test
test: lint tf-test molecule provision lab-as-existing ## The whole suite: lint, Terraform tests, Molecule, lab, the lab as ENV=existing, pytest on it, then its drills in simulated cloud mode
	MAILHA_TEST_INVENTORY=$(CURDIR)/$(LAB_AS_EXISTING_INVENTORY) pytest tests --ignore=tests/integration/cloud $(PYTEST_ARGS)
	$(MAKE) lab-as-cloud
	$(MAKE) integration-cloud
