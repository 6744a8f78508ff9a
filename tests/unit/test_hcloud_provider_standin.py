"""The hcloud provider stand-in (terraform/providers/hcloud) against what the
hcloud environment uses and against terraform-provider-hcloud v1.68.0.

The stand-in lets Terraform validate and test terraform/environments/hcloud
offline; it is only as good as its schema. These tests hold it to three
things: every argument the environment's HCL sets exists in it and may be
set (and every required one is set); it declares nothing the environment
does not use; and each declared attribute has the type and mode that
v1.68.0's source gives it (the table below, transcribed from it).
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
STANDIN = REPO / "terraform" / "providers" / "hcloud" / "terraform-provider-hcloud"
ENVIRONMENT = REPO / "terraform" / "environments" / "hcloud"
MODULES = REPO / "terraform" / "modules"

S, N, B = "string", "number", "bool"
MAP_S = ["map", S]

# terraform-provider-hcloud v1.68.0 (internal/*/resource*.go): type and mode
# (R required, O optional, C computed, OC optional+computed) of every
# attribute the environment uses. SDKv2 resources' ids are strings; the
# plugin-framework ones declare theirs (hcloud_zone's is a number).
V1_68 = {
    ("hcloud_network", "id"): (S, "C"),
    ("hcloud_network", "name"): (S, "R"),
    ("hcloud_network", "ip_range"): (S, "R"),
    ("hcloud_network", "labels"): (MAP_S, "O"),
    ("hcloud_network_subnet", "id"): (S, "C"),
    ("hcloud_network_subnet", "network_id"): (N, "R"),
    ("hcloud_network_subnet", "type"): (S, "R"),
    ("hcloud_network_subnet", "network_zone"): (S, "R"),
    ("hcloud_network_subnet", "ip_range"): (S, "R"),
    ("hcloud_firewall", "id"): (S, "C"),
    ("hcloud_firewall", "name"): (S, "R"),
    ("hcloud_firewall", "labels"): (MAP_S, "OC"),
    ("hcloud_firewall", "rule.direction"): (S, "R"),
    ("hcloud_firewall", "rule.protocol"): (S, "R"),
    ("hcloud_firewall", "rule.port"): (S, "O"),
    ("hcloud_firewall", "rule.source_ips"): (["set", S], "O"),
    ("hcloud_firewall", "rule.description"): (S, "O"),
    ("hcloud_ssh_key", "id"): (S, "C"),
    ("hcloud_ssh_key", "name"): (S, "R"),
    ("hcloud_ssh_key", "public_key"): (S, "R"),
    ("hcloud_ssh_key", "labels"): (MAP_S, "OC"),
    ("hcloud_placement_group", "id"): (S, "C"),
    ("hcloud_placement_group", "name"): (S, "R"),
    ("hcloud_placement_group", "type"): (S, "R"),
    ("hcloud_placement_group", "labels"): (MAP_S, "O"),
    ("hcloud_server", "id"): (S, "C"),
    ("hcloud_server", "name"): (S, "R"),
    ("hcloud_server", "server_type"): (S, "R"),
    ("hcloud_server", "image"): (S, "OC"),
    ("hcloud_server", "location"): (S, "OC"),
    ("hcloud_server", "placement_group_id"): (N, "O"),
    ("hcloud_server", "ssh_keys"): (["list", S], "O"),
    ("hcloud_server", "firewall_ids"): (["set", N], "OC"),
    ("hcloud_server", "user_data"): (S, "O"),
    ("hcloud_server", "labels"): (MAP_S, "O"),
    ("hcloud_server", "delete_protection"): (B, "O"),
    ("hcloud_server", "rebuild_protection"): (B, "O"),
    ("hcloud_server", "ipv4_address"): (S, "C"),
    ("hcloud_server", "network.subnet_id"): (S, "OC"),
    ("hcloud_server", "network.ip"): (S, "OC"),
    ("hcloud_server", "network.alias_ips"): (["set", S], "OC"),
    ("hcloud_floating_ip", "id"): (S, "C"),
    ("hcloud_floating_ip", "type"): (S, "R"),
    ("hcloud_floating_ip", "name"): (S, "OC"),
    ("hcloud_floating_ip", "description"): (S, "O"),
    ("hcloud_floating_ip", "server_id"): (N, "OC"),
    ("hcloud_floating_ip", "labels"): (MAP_S, "O"),
    ("hcloud_floating_ip", "delete_protection"): (B, "O"),
    ("hcloud_floating_ip", "ip_address"): (S, "C"),
    ("hcloud_rdns", "id"): (S, "C"),
    ("hcloud_rdns", "floating_ip_id"): (N, "O"),
    ("hcloud_rdns", "ip_address"): (S, "R"),
    ("hcloud_rdns", "dns_ptr"): (S, "R"),
    ("hcloud_load_balancer", "id"): (S, "C"),
    ("hcloud_load_balancer", "name"): (S, "R"),
    ("hcloud_load_balancer", "load_balancer_type"): (S, "R"),
    ("hcloud_load_balancer", "location"): (S, "OC"),
    ("hcloud_load_balancer", "labels"): (MAP_S, "OC"),
    ("hcloud_load_balancer", "delete_protection"): (B, "O"),
    ("hcloud_load_balancer", "ipv4"): (S, "C"),
    ("hcloud_load_balancer_network", "id"): (S, "C"),
    ("hcloud_load_balancer_network", "load_balancer_id"): (N, "R"),
    ("hcloud_load_balancer_network", "subnet_id"): (S, "O"),
    ("hcloud_load_balancer_network", "ip"): (S, "OC"),
    ("hcloud_load_balancer_target", "id"): (S, "C"),
    ("hcloud_load_balancer_target", "type"): (S, "R"),
    ("hcloud_load_balancer_target", "load_balancer_id"): (N, "R"),
    ("hcloud_load_balancer_target", "server_id"): (N, "O"),
    ("hcloud_load_balancer_target", "use_private_ip"): (B, "OC"),
    ("hcloud_load_balancer_service", "id"): (S, "C"),
    ("hcloud_load_balancer_service", "load_balancer_id"): (S, "R"),
    ("hcloud_load_balancer_service", "protocol"): (S, "R"),
    ("hcloud_load_balancer_service", "listen_port"): (N, "OC"),
    ("hcloud_load_balancer_service", "destination_port"): (N, "OC"),
    ("hcloud_load_balancer_service", "proxyprotocol"): (B, "OC"),
    ("hcloud_load_balancer_service", "health_check.protocol"): (S, "R"),
    ("hcloud_load_balancer_service", "health_check.port"): (N, "R"),
    ("hcloud_load_balancer_service", "health_check.interval"): (N, "R"),
    ("hcloud_load_balancer_service", "health_check.timeout"): (N, "R"),
    ("hcloud_load_balancer_service", "health_check.retries"): (N, "R"),
    ("hcloud_load_balancer_service", "health_check.http.path"): (S, "O"),
    ("hcloud_load_balancer_service", "health_check.http.status_codes"): (["list", S], "O"),
    ("hcloud_zone", "id"): (N, "C"),
    ("hcloud_zone", "name"): (S, "R"),
    ("hcloud_zone", "mode"): (S, "R"),
    ("hcloud_zone", "labels"): (MAP_S, "OC"),
    ("hcloud_zone_rrset", "id"): (S, "C"),
    ("hcloud_zone_rrset", "zone"): (S, "R"),
    ("hcloud_zone_rrset", "name"): (S, "R"),
    ("hcloud_zone_rrset", "type"): (S, "R"),
    ("hcloud_zone_rrset", "ttl"): (N, "O"),
    ("hcloud_zone_rrset", "records"): (["set", ["object", {"value": S}]], "R"),
}
# Blocks: nesting mode and max items in v1.68.0.
V1_68_BLOCKS = {
    ("hcloud_firewall", "rule"): ("set", None),
    ("hcloud_server", "network"): ("set", None),
    ("hcloud_load_balancer_service", "health_check"): ("list", 1),
    ("hcloud_load_balancer_service", "health_check.http"): ("list", 1),
}


@pytest.fixture(scope="module")
def standin():
    loader = importlib.machinery.SourceFileLoader("hcloud_standin", str(STANDIN))
    spec = importlib.util.spec_from_loader("hcloud_standin", loader)
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


def flatten(spec: dict, prefix: str = "") -> tuple[dict, dict]:
    """The schema of one resource as {path: (type, mode)} and {block path: (nesting, max_items)}."""
    attributes = {prefix + name: (rule["type"], rule["mode"]) for name, rule in spec["attributes"].items()}
    blocks = {}
    for name, nested in spec.get("nested_attributes", {}).items():
        fields = {k: v["type"] for k, v in nested["attributes"].items()}
        attributes[prefix + name] = ([nested["nesting"], ["object", fields]], nested["mode"])
    for name, block in spec["blocks"].items():
        blocks[prefix + name] = (block["nesting"], block["max_items"])
        inner_attributes, inner_blocks = flatten(block, f"{prefix}{name}.")
        attributes.update(inner_attributes)
        blocks.update(inner_blocks)
    return attributes, blocks


def hcl_files() -> list[Path]:
    modules = {
        m.group(1)
        for f in ENVIRONMENT.glob("*.tf")
        for m in re.finditer(r'source\s*=\s*"\.\./\.\./modules/([a-z_]+)"', f.read_text())
    }
    return sorted(ENVIRONMENT.glob("*.tf")) + sorted(p for m in modules for p in (MODULES / m).glob("*.tf"))


def strip_comments(text: str) -> str:
    return "\n".join(re.sub(r'^((?:[^"#]|"(?:[^"\\]|\\.)*")*)#.*$', r"\1", line) for line in text.splitlines())


def used_arguments(text: str) -> dict[str, set[str]]:
    """{resource type: argument paths set in its blocks} from terraform fmt'ed HCL.

    A line `name = ...` at a block's top level is an argument; `name {` or
    `dynamic "name" {` opens a nested block (a dynamic block's `content`
    is the block itself, its for_each Terraform's); meta-arguments and
    lifecycle are Terraform's."""
    used: dict[str, set[str]] = {}
    meta = {"count", "for_each", "depends_on", "provider", "lifecycle"}
    # Each open block: its argument path prefix, or None where arguments are Terraform's.
    stack: list[str | None] = []
    dynamic: list[str] = []  # paths of the dynamic blocks open, for their content
    resource = None
    open_brackets = 0
    for line in strip_comments(text).splitlines():
        stripped = line.strip()
        if open_brackets:
            open_brackets += sum(stripped.count(c) for c in "[{(") - sum(stripped.count(c) for c in "]})")
            continue
        if match := re.match(r'resource "(hcloud_[a-z_]+)" "[a-z_]+" \{$', stripped):
            resource, stack = match.group(1), [""]
            used.setdefault(resource, set())
            continue
        if resource is None:
            continue
        if stripped == "}":
            stack.pop()
            resource = resource if stack else None
            continue
        if match := re.match(r'dynamic "([a-z_]+)" \{$', stripped):
            path = f"{stack[-1]}{match.group(1)}"
            used[resource].add(path)
            dynamic.append(path)
            stack.append(None)
            continue
        if match := re.match(r"([a-z_]+) \{$", stripped):
            name, top = match.group(1), stack[-1]
            if name == "content" and top is None and dynamic:
                stack.append(dynamic.pop() + ".")
            elif top is None or (top == "" and name in meta):
                stack.append(None)
            else:
                used[resource].add(top + name)
                stack.append(f"{top}{name}.")
            continue
        if match := re.match(r"([a-z_]+)\s*=\s*(.*)$", stripped):
            name, value = match.groups()
            if stack[-1] is not None and not (stack[-1] == "" and name in meta):
                used[resource].add(stack[-1] + name)
            open_brackets = sum(value.count(c) for c in "[{(") - sum(value.count(c) for c in "]})")
    return used


@pytest.fixture(scope="module")
def environment_usage() -> tuple[dict[str, set[str]], str]:
    used: dict[str, set[str]] = {}
    text = ""
    for path in hcl_files():
        text += path.read_text()
        for resource, arguments in used_arguments(path.read_text()).items():
            used.setdefault(resource, set()).update(arguments)
    return used, text


def test_the_scanner_reads_arguments_nested_and_dynamic_blocks():
    used = used_arguments(
        'resource "hcloud_x" "a" {\n  for_each = {\n    b = 1\n  }\n  name = "n" # a comment = 2\n'
        '  labels = {\n    inner = "x"\n  }\n  dynamic "rule" {\n    for_each = []\n    content {\n'
        '      port = "22"\n    }\n  }\n  health_check {\n    http {\n      path = "/"\n    }\n  }\n'
        "  lifecycle {\n    ignore_changes = [name]\n  }\n}\n"
    )
    assert used == {
        "hcloud_x": {
            "name",
            "labels",
            "rule",
            "rule.port",
            "health_check",
            "health_check.http",
            "health_check.http.path",
        }
    }


def test_every_resource_the_environment_uses_is_in_the_standin(standin, environment_usage):
    used, _ = environment_usage
    assert set(used) == set(standin.RESOURCES), "the stand-in must declare exactly the resource types the HCL uses"


def test_every_argument_set_is_declared_and_settable(standin, environment_usage):
    used, _ = environment_usage
    for resource, arguments in used.items():
        attributes, blocks = flatten(standin.RESOURCES[resource])
        for argument in arguments:
            if argument in blocks:
                continue
            assert argument in attributes, f"{resource}.{argument} is set in the HCL but not in the stand-in's schema"
            assert attributes[argument][1] in ("R", "O", "OC"), f"{resource}.{argument} is read-only"


def test_every_required_argument_is_set(standin, environment_usage):
    used, _ = environment_usage
    for resource, spec in standin.RESOURCES.items():
        attributes, _ = flatten(spec)
        for path, (_, mode) in attributes.items():
            inside = path.rpartition(".")[0]
            if mode == "R" and (not inside or inside in used[resource]):
                assert path in used[resource], f"{resource}.{path} is required but the HCL never sets it"


def test_the_standin_declares_nothing_the_environment_does_not_use(standin, environment_usage):
    used, text = environment_usage
    for resource, spec in standin.RESOURCES.items():
        attributes, blocks = flatten(spec)
        for path, (_, mode) in attributes.items():
            if mode == "C":
                # Read only: some expression must read it (ids are always read).
                name = path.rpartition(".")[2]
                assert name == "id" or re.search(rf"\.{name}\b", text), f"{resource}.{path} is read nowhere"
            else:
                assert path in used[resource], f"{resource}.{path} is declared but the HCL never sets it"
        for path in blocks:
            assert path in used[resource], f"{resource} block {path} is declared but never used"


def test_the_standin_follows_provider_v1_68(standin):
    declared, declared_blocks = {}, {}
    for resource, spec in standin.RESOURCES.items():
        attributes, blocks = flatten(spec)
        declared.update({(resource, path): rule for path, rule in attributes.items()})
        declared_blocks.update({(resource, path): block for path, block in blocks.items()})
    assert declared == {key: (value[0], value[1]) for key, value in V1_68.items()}
    assert declared_blocks == V1_68_BLOCKS


@pytest.mark.parametrize(
    ("resource", "config", "argument"),
    [
        ("hcloud_placement_group", {"type": "cluster"}, "type"),
        ("hcloud_firewall", {"rule": [{"direction": "in", "protocol": "vrrp"}]}, "rule"),
        ("hcloud_load_balancer_service", {"protocol": "udp"}, "protocol"),
        ("hcloud_load_balancer_service", {"health_check": [{"protocol": "smtp"}]}, "health_check"),
        ("hcloud_network_subnet", {"type": "private"}, "type"),
    ],
)
def test_the_standin_refuses_what_v1_68_refuses(standin, resource, config, argument):
    found = standin.problems(resource, config)
    assert [where for where, _ in found] == [argument]


def test_the_standin_accepts_what_the_environment_sets(standin):
    assert standin.problems("hcloud_firewall", {"rule": [{"direction": "in", "protocol": "tcp"}]}) == []
    assert standin.problems("hcloud_load_balancer_service", {"protocol": "tcp", "health_check": None}) == []


@pytest.fixture
def cli_config(tmp_path):
    # The interpreter running the tests has `tf` (the stand-in's package),
    # whether or not its virtual environment is activated.
    python = Path(sys.executable)
    subprocess.run([str(REPO / "scripts" / "hcloud-standin.sh"), str(python), str(tmp_path / "standin")], check=True)
    return tmp_path / "standin", python


def test_the_cli_config_serves_the_standin_by_dev_overrides(cli_config):
    directory, python = cli_config
    config = (directory / "cli.tfrc").read_text()
    overrides = re.search(r"provider_installation \{\n  dev_overrides \{\n(.*?)\n  \}\n  direct \{\}\n\}", config, re.S)
    assert overrides, config
    assert overrides.group(1).strip() == f'"hetznercloud/hcloud" = "{directory}"'
    assert Path(directory).is_absolute() and "disable_checkpoint = true" in config
    assert config.count("{") == config.count("}")
    wrapper = directory / "terraform-provider-hcloud"
    assert os.access(wrapper, os.X_OK)
    assert wrapper.read_text().splitlines()[1] == f'exec {python} {STANDIN} "$@"'


def test_the_cli_config_script_refuses_a_missing_python(tmp_path):
    result = subprocess.run(
        [str(REPO / "scripts" / "hcloud-standin.sh"), str(tmp_path / "nopython"), str(tmp_path / "d")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 2 and "is no Python interpreter" in result.stderr


def test_terraform_reads_the_schema_as_declared(standin, cli_config, tmp_path):
    """Terraform's own view of the stand-in (providers schema -json) is the declared schema."""
    if shutil.which("terraform") is None:
        pytest.skip("terraform is not on PATH")
    directory, _ = cli_config
    pytest.importorskip("tf")
    work = tmp_path / "work"
    work.mkdir()
    (work / "main.tf").write_text(
        'terraform {\n  required_providers {\n    hcloud = {\n      source = "hetznercloud/hcloud"\n    }\n  }\n}\n'
    )
    env = dict(os.environ, TF_CLI_CONFIG_FILE=str(directory / "cli.tfrc"), CHECKPOINT_DISABLE="1")
    result = subprocess.run(
        ["terraform", f"-chdir={work}", "providers", "schema", "-json"],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    schemas = json.loads(result.stdout)["provider_schemas"]["registry.terraform.io/hetznercloud/hcloud"]
    assert set(schemas["resource_schemas"]) == set(standin.RESOURCES)

    def seen(block: dict, prefix: str = "") -> tuple[dict, dict]:
        attributes, blocks = {}, {}
        for name, a in block.get("attributes", {}).items():
            mode = (
                "R"
                if a.get("required")
                else ("OC" if a.get("optional") and a.get("computed") else ("O" if a.get("optional") else "C"))
            )
            if "nested_type" in a:
                fields = {k: v["type"] for k, v in a["nested_type"]["attributes"].items()}
                cty = [a["nested_type"]["nesting_mode"], ["object", fields]]
            else:
                cty = a["type"]
            attributes[prefix + name] = (cty, mode)
        for name, b in block.get("block_types", {}).items():
            blocks[prefix + name] = (b["nesting_mode"], b.get("max_items"))
            inner_attributes, inner_blocks = seen(b["block"], f"{prefix}{name}.")
            attributes.update(inner_attributes)
            blocks.update(inner_blocks)
        return attributes, blocks

    for resource, spec in standin.RESOURCES.items():
        assert seen(schemas["resource_schemas"][resource]["block"]) == flatten(spec), resource
