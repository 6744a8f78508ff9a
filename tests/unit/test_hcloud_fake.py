"""The local fake of the Hetzner Cloud API (mailha.hcloud_fake): the raw
answers (JSON shapes, statuses, headers) with the standard library, and what
the hcloud SDK makes of them."""

import json
import secrets
import subprocess
import sys
import time
import types
import urllib.error
import urllib.request

import pytest

from mailha.hcloud_fake import ERROR_STATUS, FakeHcloud

TOKEN = "hc-" + secrets.token_hex(16)
READONLY_TOKEN = "ro-" + secrets.token_hex(16)
WRONG_TOKEN = "wrong-" + secrets.token_hex(16)
FIP = 4711


@pytest.fixture
def fake():
    with FakeHcloud(
        TOKEN,
        floating_ips=[{"id": FIP, "ip": "198.51.100.7", "server": 1}],
        servers=[{"id": 1, "name": "mx1"}, {"id": 2, "name": "mx2"}],
        readonly_token=READONLY_TOKEN,
        assign_latency=0.1,
    ) as fake:
        yield fake


def http(fake, method, path, body=None, token=TOKEN, timeout=5):
    """(status, JSON document, headers) of one request."""
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(fake.endpoint + path, data=data, method=method)  # noqa: S310 (loopback)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    if data:
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 (loopback)
            return response.status, json.loads(response.read()), response.headers
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read()), err.headers


def test_a_floating_ip_has_the_apis_shape(fake):
    status, document, headers = http(fake, "GET", f"/floating_ips/{FIP}")
    assert status == 200
    fip = document["floating_ip"]
    assert fip["id"] == FIP and fip["ip"] == "198.51.100.7" and fip["type"] == "ipv4" and fip["server"] == 1
    assert {"name", "description", "dns_ptr", "home_location", "blocked", "protection", "labels", "created"} <= set(fip)
    assert fip["home_location"]["network_zone"] == "eu-central"
    assert int(headers["RateLimit-Limit"]) == 3600 and int(headers["RateLimit-Remaining"]) == 3599
    assert int(headers["RateLimit-Reset"]) >= time.time()


def test_an_assign_runs_then_moves_the_floating_ip(fake):
    status, document, _ = http(fake, "POST", f"/floating_ips/{FIP}/actions/assign", {"server": 2})
    assert status == 201
    action = document["action"]
    assert action["status"] == "running" and action["command"] == "assign_floating_ip" and action["error"] is None
    assert {"id": FIP, "type": "floating_ip"} in action["resources"]
    assert fake.server_of(FIP) == 1  # not before the action ends
    time.sleep(0.2)
    _, document, _ = http(fake, "GET", f"/actions/{action['id']}")
    assert document["action"]["status"] == "success" and document["action"]["progress"] == 100
    assert fake.server_of(FIP) == 2


def test_an_assign_while_an_action_runs_is_locked(fake):
    assert http(fake, "POST", f"/floating_ips/{FIP}/actions/assign", {"server": 2})[0] == 201
    status, document, _ = http(fake, "POST", f"/floating_ips/{FIP}/actions/assign", {"server": 1})
    assert status == 423 and document["error"]["code"] == "locked"


@pytest.mark.parametrize(
    ("token", "method", "path", "status", "code"),
    [
        (None, "GET", f"/floating_ips/{FIP}", 401, "unauthorized"),
        (WRONG_TOKEN, "GET", f"/floating_ips/{FIP}", 401, "unauthorized"),
        (READONLY_TOKEN, "POST", f"/floating_ips/{FIP}/actions/assign", 403, "token_readonly"),
        (TOKEN, "GET", "/floating_ips/999", 404, "not_found"),
        (TOKEN, "POST", f"/floating_ips/{FIP}/actions/assign", 404, "not_found"),  # server 9
        (TOKEN, "GET", "/actions/999", 404, "not_found"),
    ],
)
def test_errors_have_the_apis_body_and_status(fake, token, method, path, status, code):
    body = {"server": 9} if method == "POST" else None
    answer, document, _ = http(fake, method, path, body, token=token)
    assert answer == status
    assert set(document) == {"error"} and set(document["error"]) == {"code", "message", "details"}
    assert document["error"]["code"] == code
    assert fake.calls()[-1].error == code


def test_a_read_only_token_may_read(fake):
    assert http(fake, "GET", f"/floating_ips/{FIP}", token=READONLY_TOKEN)[0] == 200


@pytest.mark.parametrize("code", ["forbidden", "maintenance", "conflict", "timeout", "locked"])
def test_injected_errors_answer_the_next_requests_only(fake, code):
    fake.fail("get_floating_ip", code, times=2)
    statuses = [http(fake, "GET", f"/floating_ips/{FIP}")[0] for _ in range(3)]
    assert statuses == [ERROR_STATUS[code], ERROR_STATUS[code], 200]
    assert [r.error for r in fake.calls("get_floating_ip")] == [code, code, None]


def test_an_injected_rate_limit_carries_its_headers(fake):
    fake.rate_limit(times=1, reset_in=5)
    status, document, headers = http(fake, "GET", f"/floating_ips/{FIP}")
    assert status == 429 and document["error"]["code"] == "rate_limit_exceeded"
    assert headers["RateLimit-Remaining"] == "0" and headers["RateLimit-Limit"] == "3600"
    assert 3 <= int(headers["RateLimit-Reset"]) - time.time() <= 5


def test_an_empty_bucket_is_rate_limited_and_refills_one_a_second():
    with FakeHcloud(TOKEN, floating_ips=[{"id": FIP}], servers=[{"id": 1}], rate_limit=2) as fake:
        answers = [http(fake, "GET", f"/floating_ips/{FIP}") for _ in range(3)]
        assert [a[0] for a in answers] == [200, 200, 429]
        assert [a[2]["RateLimit-Remaining"] for a in answers] == ["1", "0", "0"]
        time.sleep(1.05)
        assert http(fake, "GET", f"/floating_ips/{FIP}")[0] == 200


def test_a_delayed_answer_times_a_client_out_and_is_still_carried_out(fake):
    fake.delay("assign", 1.0)
    with pytest.raises(TimeoutError):
        http(fake, "POST", f"/floating_ips/{FIP}/actions/assign", {"server": 2}, timeout=0.2)
    time.sleep(1.2)
    assert fake.server_of(FIP) == 2


def test_the_assign_hook_sees_each_success_and_its_failure_fails_the_action(fake):
    moved = []
    fake.on_assign = lambda fip, server: moved.append((fip, server))
    http(fake, "POST", f"/floating_ips/{FIP}/actions/assign", {"server": 2})
    time.sleep(0.2)
    assert moved == [(FIP, 2)] and fake.server_of(FIP) == 2

    def broken(fip, server):
        raise OSError("no such container")

    fake.on_assign = broken
    _, document, _ = http(fake, "POST", f"/floating_ips/{FIP}/actions/assign", {"server": 1})
    time.sleep(0.2)
    _, document, _ = http(fake, "GET", f"/actions/{document['action']['id']}")
    assert document["action"]["status"] == "error"
    assert document["action"]["error"]["code"] == "service_error"
    assert fake.server_of(FIP) == 2


def test_the_request_log_holds_method_path_and_body(fake):
    http(fake, "POST", f"/floating_ips/{FIP}/actions/assign", {"server": 2})
    (request,) = fake.calls("assign")
    assert (request.method, request.path, request.body, request.status) == (
        "POST",
        f"/v1/floating_ips/{FIP}/actions/assign",
        {"server": 2},
        201,
    )


def test_an_unknown_fault_endpoint_is_refused(fake):
    with pytest.raises(ValueError, match="unknown endpoint"):
        fake.fail("delete_server", "locked")


def test_an_rrset_is_deleted_by_an_action_and_txt_values_must_be_quoted():
    rrsets = [{"name": "sel._domainkey", "type": "TXT", "ttl": 300, "records": [{"value": '"v=DKIM1; p=x"'}]}]
    seen = []
    with FakeHcloud(
        TOKEN,
        floating_ips=[],
        servers=[],
        zones=[{"id": 9, "name": "example.com", "rrsets": rrsets}],
        readonly_token=READONLY_TOKEN,
        rrset_latency=0.1,
        on_rrset=lambda *args: seen.append(args),
    ) as fake:
        path = "/zones/example.com/rrsets/sel._domainkey/TXT"
        status, document, _ = http(fake, "DELETE", path, token=READONLY_TOKEN)
        assert (status, document["error"]["code"]) == (403, "token_readonly")
        status, document, _ = http(fake, "DELETE", path)
        assert status == 201 and document["action"]["command"] == "delete_rrset"
        assert document["action"]["status"] == "running"
        assert fake.rrset_of("example.com", "sel._domainkey", "TXT") is not None  # until the action ends
        other = {"name": "a", "type": "TXT", "records": [{"value": '"a"'}]}
        status, document, _ = http(fake, "POST", "/zones/9/rrsets", other)
        assert (status, document["error"]["code"]) == (423, "locked")
        time.sleep(0.2)
        assert fake.rrset_of("example.com", "sel._domainkey", "TXT") is None
        # The hook sees the deletion as an rrset with no values.
        assert seen == [("example.com", "sel._domainkey", "TXT", 300, [])]
        status, document, _ = http(fake, "DELETE", path)
        assert (status, document["error"]["code"]) == (404, "not_found")
        unquoted = {"name": "new", "type": "TXT", "records": [{"value": "v=spf1 -all"}]}
        status, document, _ = http(fake, "POST", "/zones/9/rrsets", unquoted)
        assert (status, document["error"]["code"]) == (400, "invalid_input")
        too_long = {"name": "new", "type": "TXT", "records": [{"value": '"' + "x" * 256 + '"'}]}
        assert http(fake, "POST", "/zones/9/rrsets", too_long)[0] == 400
        split = {"name": "new", "type": "TXT", "records": [{"value": '"' + "x" * 255 + '" "x"'}]}
        assert http(fake, "POST", "/zones/9/rrsets", split)[0] == 201


# -- through the SDK --------------------------------------------------------


@pytest.fixture
def sdk(fake):
    hcloud = pytest.importorskip("hcloud")
    return hcloud, hcloud.Client(token=TOKEN, api_endpoint=fake.endpoint, poll_interval=0.05)


def test_the_sdk_reads_and_assigns(fake, sdk):
    from hcloud.servers.domain import Server

    _, client = sdk
    fip = client.floating_ips.get_by_id(FIP)
    assert (fip.id, fip.ip, fip.server.id, fip.home_location.name) == (FIP, "198.51.100.7", 1, "fsn1")
    action = fip.assign(Server(id=2))
    assert action.status == "running"
    action.wait_until_finished()
    assert client.actions.get_by_id(action.id).status == "success"
    assert client.floating_ips.get_by_id(FIP).server.id == 2


def test_the_sdk_lists_a_floating_ips_running_actions(fake, sdk):
    from hcloud.servers.domain import Server

    _, client = sdk
    fip = client.floating_ips.get_by_id(FIP)
    assert fip.get_actions_list(status=["running"])[0] == []
    action = fip.assign(Server(id=2))
    running = fip.get_actions_list(status=["running"], per_page=25)
    assert [a.id for a in running[0]] == [action.id]
    assert running[1].pagination.total_entries == 1
    action.wait_until_finished()
    assert fip.get_actions_list(status=["running"])[0] == []
    assert [(a.id, a.status, a.command) for a in fip.get_actions()] == [(action.id, "success", "assign_floating_ip")]
    # Another floating IP's actions are not this one's.
    status, document, _ = http(fake, "GET", "/floating_ips/4712/actions")
    assert (status, document["error"]["code"]) == (404, "not_found")


def test_the_sdk_raises_the_apis_error_codes(fake, sdk):
    from hcloud.servers.domain import Server

    hcloud, client = sdk
    fake.fail("assign", "locked")
    with pytest.raises(hcloud.APIException) as raised:
        client.floating_ips.get_by_id(FIP).assign(Server(id=2))
    assert raised.value.code == "locked"
    with pytest.raises(hcloud.APIException) as raised:
        hcloud.Client(token=WRONG_TOKEN, api_endpoint=fake.endpoint).floating_ips.get_by_id(FIP)
    assert raised.value.code == "unauthorized"


def test_the_sdk_sees_a_failed_action(fake, sdk):
    from hcloud.actions.domain import ActionFailedException
    from hcloud.servers.domain import Server

    _, client = sdk
    fake.fail_actions("action_failed", "Action failed")
    action = client.floating_ips.get_by_id(FIP).assign(Server(id=2))
    with pytest.raises(ActionFailedException):
        action.wait_until_finished()
    assert client.actions.get_by_id(action.id).error["code"] == "action_failed"
    assert fake.server_of(FIP) == 1


# -- as a process -------------------------------------------------------------


def test_the_fake_runs_as_a_process_and_writes_its_state(tmp_path):
    state = tmp_path / "state.json"
    state.write_text(json.dumps({"floating_ips": [{"id": FIP, "server": 1}], "servers": [{"id": 1}, {"id": 2}]}))
    token = tmp_path / "token"
    token.write_text(TOKEN + "\n")
    process = subprocess.Popen(
        [sys.executable, "-m", "mailha.hcloud_fake", "--listen", "127.0.0.1:0", "--token-file", str(token),
         "--state-file", str(state), "--assign-latency", "0"],
        stdout=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    try:
        endpoint = process.stdout.readline().split()[-1]
        assert endpoint.startswith("http://127.0.0.1:") and endpoint.endswith("/v1")
        target = types.SimpleNamespace(endpoint=endpoint)
        assert http(target, "POST", f"/floating_ips/{FIP}/actions/assign", {"server": 2})[0] == 201
        time.sleep(0.2)
        assert http(target, "GET", f"/floating_ips/{FIP}")[1]["floating_ip"]["server"] == 2
        assert json.loads(state.read_text())["floating_ips"][0]["server"] == 2
    finally:
        process.terminate()
        process.wait(timeout=10)
        process.stdout.close()
