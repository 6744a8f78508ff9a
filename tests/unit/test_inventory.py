"""Inventory generation from the output contract, including malformed input."""

import copy
import json

import pytest
import yaml
from click.testing import CliRunner

from mailha import inventory
from mailha.cli import main
from mailha.errors import BadInput

CONTRACT = {
    "environment": "lab",
    "connection": "podman",
    "network": {"cidr": "10.213.0.0/24", "gateway": "10.213.0.1"},
    "floating_ip": "10.213.0.100",
    "dns": {
        "zone": "mailha.test",
        "nameserver": "10.213.0.10",
        "sending_host": "mta.mailha.test",
        "submission_host": "smtp.mailha.test",
    },
    "load_balancer": {"host": "lb", "address": "10.213.0.20", "ports": [25, 587]},
    "hosts": {
        "mx1": {
            "address": "10.213.0.11",
            "fqdn": "mx1.mailha.test",
            "target": "mailha-mx1",
            "groups": ["mail"],
            "vrrp_priority": 150,
            "vrrp_state": "MASTER",
        },
        "mx2": {
            "address": "10.213.0.12",
            "fqdn": "mx2.mailha.test",
            "target": "mailha-mx2",
            "groups": ["mail"],
            "vrrp_priority": 100,
            "vrrp_state": "BACKUP",
        },
        "lb": {
            "address": "10.213.0.20",
            "fqdn": "lb.mailha.test",
            "target": "mailha-lb",
            "groups": ["loadbalancer"],
            "vrrp_priority": None,
            "vrrp_state": None,
        },
        "ns": {
            "address": "10.213.0.10",
            "fqdn": "ns.mailha.test",
            "target": "mailha-ns",
            "groups": ["dns"],
            "vrrp_priority": None,
            "vrrp_state": None,
        },
    },
}


def contract(**changes):
    data = copy.deepcopy(CONTRACT)
    for dotted, value in changes.items():
        node = data
        *path, last = dotted.split("__")
        for key in path:
            node = node[key]
        if value is KeyError:
            del node[last]
        else:
            node[last] = value
    return data


def test_builds_groups_and_host_vars():
    inv = inventory.build(CONTRACT)
    children = inv["all"]["children"]
    assert set(children) == {"mail", "loadbalancer", "dns"}
    assert set(children["mail"]["hosts"]) == {"mx1", "mx2"}
    mx1 = children["mail"]["hosts"]["mx1"]
    assert mx1["ansible_host"] == "mailha-mx1"
    assert mx1["mailha_vrrp_state"] == "MASTER"
    assert mx1["mailha_vrrp_priority"] == 150
    assert "mailha_vrrp_state" not in children["loadbalancer"]["hosts"]["lb"]


def test_global_vars_come_from_the_contract():
    all_vars = inventory.build(CONTRACT)["all"]["vars"]
    assert all_vars["ansible_connection"] == "containers.podman.podman"
    assert all_vars["mailha_floating_ip"] == "10.213.0.100"
    assert all_vars["mailha_controller_address"] == "10.213.0.1"
    assert all_vars["mailha_load_balancer_ports"] == [25, 587]


def test_ssh_connection_for_cloud_environments():
    inv = inventory.build(contract(connection="ssh", ssh={"user": "admin", "port": 2222}))
    assert inv["all"]["vars"]["ansible_connection"] == "ansible.builtin.ssh"


def test_ssh_hosts_carry_their_login_and_become_root():
    inv = inventory.build(contract(connection="ssh", ssh={"user": "admin", "port": 2222}))
    for group in inv["all"]["children"].values():
        for host in group["hosts"].values():
            assert host["ansible_user"] == "admin"
            assert host["ansible_port"] == 2222
            assert host["ansible_become"] is True
    # Not in `all`: a control host from a second inventory keeps its own login.
    assert "ansible_user" not in inv["all"]["vars"]
    assert "ansible_become" not in inv["all"]["vars"]


def test_root_over_ssh_needs_no_become():
    inv = inventory.build(contract(connection="ssh", ssh={"user": "root", "port": 22}))
    mx1 = inv["all"]["children"]["mail"]["hosts"]["mx1"]
    assert mx1["ansible_user"] == "root" and mx1["ansible_port"] == 22
    assert "ansible_become" not in mx1


def test_podman_hosts_have_no_ssh_login():
    mx1 = inventory.build(CONTRACT)["all"]["children"]["mail"]["hosts"]["mx1"]
    assert not {"ansible_user", "ansible_port", "ansible_become"} & set(mx1)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"floating_ip": KeyError}, "floating_ip is missing"),
        ({"floating_ip": "10.213.0.300"}, "floating_ip is not an IP address"),
        ({"connection": "telnet"}, "connection must be one of podman, ssh"),
        ({"hosts__mx2__vrrp_state": "MASTER"}, "exactly one mail host in state MASTER, found 2"),
        ({"hosts__mx2__groups": ["dns"]}, "exactly two mail hosts, found 1"),
        ({"hosts__mx1__vrrp_priority": 300}, "hosts.mx1.vrrp_priority must be between 1 and 254"),
        ({"hosts__mx1__vrrp_priority": "high"}, "hosts.mx1.vrrp_priority must be of type int"),
        ({"hosts__mx2__address": "10.213.0.11"}, "10.213.0.11 is also the address of mx1"),
        ({"hosts__lb__address": "10.213.0.100"}, "is the floating IP"),
        ({"hosts__ns__target": KeyError}, "hosts.ns.target is missing"),
        ({"network__cidr": "10.213.0.0/33"}, "network.cidr is not a network"),
        ({"load_balancer__host": "haproxy"}, "'haproxy', which is not in hosts"),
        ({"load_balancer__ports": []}, "load_balancer.ports must be a non-empty list"),
        ({"hosts": {}}, "hosts is empty"),
        ({"hosts__mx1": "mailha-mx1"}, "hosts.mx1. must be an object"),
        ({"connection": "ssh"}, "output contract: ssh is missing"),
        ({"connection": "ssh", "ssh": {"port": 22}}, "ssh.user is missing"),
        ({"connection": "ssh", "ssh": {"user": "admin;id", "port": 22}}, "ssh.user is 'admin;id'; it must be a login"),
        ({"connection": "ssh", "ssh": {"user": "admin", "port": 0}}, "ssh.port must be a TCP port (1-65535), not 0"),
        ({"connection": "ssh", "ssh": {"user": "admin", "port": "22"}}, "ssh.port must be of type int"),
        ({"ssh": {"user": "root", "port": 22}}, "ssh must be null with the podman connection"),
    ],
)
def test_malformed_contracts_name_the_field(changes, message):
    with pytest.raises(BadInput) as caught:
        inventory.build(contract(**changes))
    assert message in caught.value.message
    assert caught.value.exit_code == 2


def hcloud_contract(**changes):
    """A managed load balancer (no host), updates through Hetzner's DNS API and a floating IP moved by the API."""
    data = contract(**changes)
    del data["hosts"]["lb"]
    data["load_balancer"].update(kind="hcloud", address="198.51.100.20", source_address="10.213.0.20")
    data["dns"]["updates"] = "hcloud"
    data["mover"] = {"kind": "hcloud", "floating_ip_id": "4711", "server_ids": {"mx1": "101", "mx2": "102"}}
    return data


def test_the_optional_fields_left_at_their_defaults_change_nothing():
    defaults = contract(
        load_balancer__kind="haproxy", load_balancer__source_address=None, dns__updates="rfc2136", mover=None
    )
    assert inventory.build(defaults) == inventory.build(CONTRACT)


def test_a_managed_load_balancer_is_no_host_and_its_settings_reach_the_playbooks():
    inv = inventory.build(hcloud_contract())
    all_vars = inv["all"]["vars"]
    assert "loadbalancer" not in inv["all"]["children"]
    assert all_vars["mailha_load_balancer_kind"] == "hcloud"
    assert all_vars["mailha_load_balancer_address"] == "198.51.100.20"
    assert all_vars["mailha_load_balancer_source_address"] == "10.213.0.20"
    assert all_vars["mailha_dns_updates"] == "hcloud"
    assert all_vars["mailha_floating_ip_mover"] == {
        "kind": "hcloud",
        "floating_ip_id": "4711",
        "server_ids": {"mx1": "101", "mx2": "102"},
    }


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda c: c["load_balancer"].update(kind="nginx"), "load_balancer.kind must be one of haproxy, hcloud"),
        (lambda c: c["load_balancer"].update(source_address="lb"), "load_balancer.source_address is not an IP"),
        (lambda c: c["hosts"].update(lb=CONTRACT["hosts"]["lb"]), "a hcloud load balancer is no host"),
        (lambda c: c["mover"].update(kind="aws"), "mover.kind must be one of hcloud"),
        (lambda c: c["mover"]["server_ids"].pop("mx2"), "mover.server_ids must name exactly the mail hosts mx1, mx2"),
        (lambda c: c["mover"].update(floating_ip_id="12;id"), "mover.floating_ip_id is '12;id'; it must be a numeric"),
        (lambda c: c["mover"]["server_ids"].update(mx1=101), "mover.server_ids.mx1 is 101; it must be a numeric id"),
    ],
)
def test_malformed_cloud_fields_name_the_field(change, message):
    data = hcloud_contract()
    change(data)
    with pytest.raises(BadInput) as caught:
        inventory.build(data)
    assert message in caught.value.message


def test_contract_that_is_not_an_object():
    with pytest.raises(BadInput, match="must be an object, not list"):
        inventory.build([])


def test_write_is_idempotent(tmp_path):
    path = tmp_path / "inventories" / "lab" / "hosts.yml"
    inv = inventory.build(CONTRACT)
    assert inventory.write(inv, path) is True
    first = path.read_text()
    assert inventory.write(inv, path) is False
    assert path.read_text() == first
    assert inventory.load(path) == inv


def test_load_reports_missing_and_malformed_files(tmp_path):
    with pytest.raises(BadInput, match="does not exist; run 'make provision'"):
        inventory.load(tmp_path / "absent.yml")
    broken = tmp_path / "broken.yml"
    broken.write_text("all: [unclosed\n")
    with pytest.raises(BadInput, match="not valid YAML at line"):
        inventory.load(broken)


def test_cli_writes_inventory_from_json(tmp_path):
    source = tmp_path / "contract.json"
    source.write_text(json.dumps(CONTRACT))
    target = tmp_path / "hosts.yml"
    runner = CliRunner()
    result = runner.invoke(main, ["inventory", "--from-json", str(source), "--inventory", str(target)])
    assert result.exit_code == 0, result.output
    assert "written" in result.output
    assert yaml.safe_load(target.read_text())["all"]["vars"]["mailha_floating_ip"] == "10.213.0.100"
    again = runner.invoke(main, ["inventory", "--from-json", str(source), "--inventory", str(target)])
    assert again.exit_code == 0 and "unchanged" in again.output


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "is not JSON (line 1"),
        (json.dumps(contract(hosts__mx1__vrrp_state="LEADER")), "must be MASTER or BACKUP, not 'LEADER'"),
    ],
)
def test_cli_bad_input_is_one_line_without_traceback(tmp_path, content, message):
    source = tmp_path / "contract.json"
    source.write_text(content)
    target = tmp_path / "hosts.yml"
    result = CliRunner().invoke(main, ["inventory", "--from-json", str(source), "--inventory", str(target)])
    assert result.exit_code == 2
    assert message in result.output
    assert "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert not target.exists()


def test_cli_needs_exactly_one_source(tmp_path):
    result = CliRunner().invoke(main, ["inventory", "--inventory", str(tmp_path / "h.yml")])
    assert result.exit_code == 2
    assert "exactly one of --terraform-dir or --from-json" in result.output


def test_cli_terraform_dir_without_state(tmp_path):
    result = CliRunner().invoke(
        main, ["inventory", "--terraform-dir", str(tmp_path), "--inventory", str(tmp_path / "h.yml")]
    )
    assert result.exit_code == 2
    assert "has no Terraform state; run 'make provision'" in result.output


def test_output_is_the_format_everywhere_so_inventory_writes_with_inventory(tmp_path):
    target = tmp_path / "h.yml"
    result = CliRunner().invoke(main, ["inventory", "--from-json", str(tmp_path / "c.json"), "--output", str(target)])
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == [
        f"Error: --output names the output format; write the inventory with --inventory {target}"
    ]
    assert not target.exists()
