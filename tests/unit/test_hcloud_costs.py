"""`mailha hcloud-costs`: the hcloud environment priced from the API's price
list, here the local fake's (mailha.hcloud_fake), over real HTTP on loopback."""

import json
import secrets
from decimal import Decimal

import pytest
from click.testing import CliRunner

from mailha import hcloud_costs
from mailha.cli import main
from mailha.hcloud_fake import FakeHcloud

TOKEN = secrets.token_hex(16)


def price(net: str, gross: str, location: str = "fsn1") -> dict:
    return {
        "location": location,
        "price_hourly": {"net": "0.0100000000", "gross": "0.0119000000"},
        "price_monthly": {"net": net, "gross": gross},
    }


# The shape of GET /v1/pricing's `pricing` object, with made-up figures.
PRICING = {
    "currency": "EUR",
    "vat_rate": "19.00",
    "server_types": [
        {"id": 1, "name": "cx23", "prices": [price("3.0000000000", "3.5700000000"), price("9", "9", "ash")]},
        {"id": 2, "name": "cx33", "prices": [price("5.0000000000", "5.9500000000")]},
    ],
    "load_balancer_types": [{"id": 1, "name": "lb11", "prices": [price("5.3900000000", "6.4141000000")]}],
    "floating_ips": [
        {
            "type": "ipv4",
            "prices": [
                {"location": "fsn1", "price_monthly": {"net": "3.00", "gross": "3.57"}},
                {"location": "ash", "price_monthly": {"net": "3.00", "gross": "3.00"}},
            ],
        },
        {"type": "ipv6", "prices": [{"location": "fsn1", "price_monthly": {"net": "1.00", "gross": "1.19"}}]},
    ],
    "primary_ips": [{"type": "ipv4", "prices": [price("0.5000000000", "0.5950000000"), price("1", "1", "ash")]}],
}


@pytest.fixture
def api():
    with FakeHcloud(TOKEN, pricing=PRICING) as fake:
        yield fake


def run(api, *args, token=TOKEN):
    env = {"HCLOUD_TOKEN": token} if token is not None else {"HCLOUD_TOKEN": ""}
    return CliRunner().invoke(main, ["hcloud-costs", "--api-endpoint", api.endpoint, *args], env=env)


def test_the_environment_is_priced_from_the_api(api, tmp_path):
    result = run(api, "--tfvars", str(tmp_path / "none.tfvars"), "-o", "json")
    assert result.exit_code == 2 and "cannot read" in result.output  # a named file must exist
    tfvars = tmp_path / "terraform.tfvars"
    tfvars.write_text('location    = "fsn1" # Falkenstein\nserver_type = "cx33"\nrelays = ["mx1", "mx2"]\n')
    result = run(api, "--tfvars", str(tfvars), "-o", "json")
    assert result.exit_code == 0, result.output
    document = json.loads(result.output)
    assert document["currency"] == "EUR" and document["location"] == "fsn1"
    items = {i["what"]: i for i in document["items"]}
    assert items["server cx33 (relay)"]["count"] == 2
    assert Decimal(items["server cx33 (relay)"]["monthly_net"]) == Decimal(5)
    assert Decimal(items["floating IPv4 (the sending identity)"]["monthly_gross"]) == Decimal("3.57")
    # 2 x 5 (servers) + 2 x 0.5 (their IPv4) + 3 (floating) + 5.39 (lb11) = 19.39
    assert document["total_monthly_net"] == "19.39"
    assert document["total_monthly_gross"] == f"{2 * 5.95 + 2 * 0.595 + 3.57 + 6.4141:.2f}"
    assert [r.path for r in api.requests] == ["/v1/pricing", "/v1/pricing"][: len(api.requests)]


def test_the_table_names_each_resource_and_the_total(api):
    result = run(api)
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].startswith("hcloud environment in fsn1")
    assert any(line.startswith("server cx23 (relay)") and line.split()[-2:] == ["6.00", "7.14"] for line in lines)
    assert lines[-1].split() == ["total", "15.39", f"{2 * 3.57 + 2 * 0.595 + 3.57 + 6.4141:.2f}"]


def test_the_token_goes_in_the_authorization_header_only(api):
    assert run(api).exit_code == 0
    (request,) = api.requests
    assert TOKEN not in request.path


@pytest.mark.parametrize(
    "settings, message",
    [
        ({"server_type": "cx99"}, "server type 'cx99' is not in Hetzner's price list"),
        ({"location": "ash", "load_balancer_type": "lb11"}, "the load balancer type is not sold in ash"),
        ({"location": "FSN1"}, "location 'FSN1' is no Hetzner name"),
    ],
)
def test_a_setting_the_price_list_does_not_know_is_one_line(api, tmp_path, settings, message):
    tfvars = tmp_path / "terraform.tfvars"
    tfvars.write_text("".join(f'{k} = "{v}"\n' for k, v in settings.items()))
    result = run(api, "--tfvars", str(tfvars))
    assert result.exit_code == 2
    (line,) = result.output.strip().splitlines()
    assert line.startswith(f"Error: {message}")


def test_without_a_token_nothing_is_asked(api):
    result = run(api, token=None)
    assert result.exit_code == 2 and "HCLOUD_TOKEN is not set" in result.output
    assert api.requests == []


def test_a_refused_token_is_one_line_with_the_apis_reason(api):
    result = run(api, token="not-the-token")  # noqa: S106 - a wrong token on purpose
    assert result.exit_code == 1
    assert result.output.strip() == (
        "Error: the Hetzner API refused GET /pricing: unauthorized (401): " + api_message(api, "unauthorized")
    )


def api_message(api, code):
    from mailha.hcloud_fake import DEFAULT_MESSAGES

    return DEFAULT_MESSAGES[code]


def test_an_api_that_does_not_answer_is_one_line(api):
    api.delay("get_pricing", 2.0)
    with pytest.raises(hcloud_costs.MailhaError) as pricing:
        hcloud_costs.fetch_pricing(TOKEN, api.endpoint, 0.3)
    assert "did not answer" in str(pricing.value)


def test_plain_http_is_for_loopback_only():
    result = CliRunner().invoke(
        main, ["hcloud-costs", "--api-endpoint", "http://192.0.2.1/v1"], env={"HCLOUD_TOKEN": TOKEN}
    )
    assert result.exit_code == 2 and "must be https" in result.output


def test_a_fake_without_a_price_list_is_not_found():
    with FakeHcloud(TOKEN) as fake:
        result = CliRunner().invoke(
            main, ["hcloud-costs", "--api-endpoint", fake.endpoint], env={"HCLOUD_TOKEN": TOKEN}
        )
    assert result.exit_code == 1 and "not_found (404)" in result.output
