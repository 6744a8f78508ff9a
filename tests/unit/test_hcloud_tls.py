"""The fake Hetzner API over TLS and the mover's api_ca_file: what lets the
lab's relays reach a fake on the controller (mailha.lab_cloud) with the
token never in clear, and what a certificate that does not verify does.

A throwaway CA, a second CA that signed nothing the fake serves, and the
fake's certificate for 127.0.0.1 (an IP SAN only) are made per module in a
temporary directory; nothing leaves loopback."""

import contextlib
import datetime
import ipaddress
import os
import socket
import ssl
import subprocess
import sys
import threading
import time
import types
import warnings

import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

pytest.importorskip("hcloud")

from mailha import hcloud_fake
from mailha.hcloud_fake import FakeHcloud
from mailha.node import config, fipmover
from tests.unit.test_fipmover import FIP, PEER, THIS_SERVER, TOKEN, Node

# -- certificates -------------------------------------------------------------


def _name(common_name):
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _write_key(path, key):
    path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )


def _certificate(subject, issuer, public_key, signing_key, extensions):
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=2))
    )
    for extension, critical in extensions:
        builder = builder.add_extension(extension, critical=critical)
    return builder.sign(signing_key, hashes.SHA256())


def _make_ca(directory, stem):
    key = ec.generate_private_key(ec.SECP256R1())
    certificate = _certificate(
        _name(f"mailha test {stem}"),
        _name(f"mailha test {stem}"),
        key.public_key(),
        key,
        [
            (x509.BasicConstraints(ca=True, path_length=0), True),
            (x509.KeyUsage(False, False, False, False, False, True, True, False, False), True),
            (x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False),
        ],
    )
    (directory / f"{stem}.pem").write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    return key, certificate


@pytest.fixture(scope="module")
def certificates(tmp_path_factory):
    """ca.pem (signed api.pem, the fake's certificate for 127.0.0.1, key
    api.key) and other-ca.pem (signed nothing the fake serves)."""
    directory = tmp_path_factory.mktemp("tls")
    ca_key, ca = _make_ca(directory, "ca")
    _make_ca(directory, "other-ca")
    key = ec.generate_private_key(ec.SECP256R1())
    certificate = _certificate(
        _name("hcloud fake"),
        ca.subject,
        key.public_key(),
        ca_key,
        [
            (x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False),
            (x509.BasicConstraints(ca=False, path_length=None), True),
            (x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), False),
            (x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False),
        ],
    )
    (directory / "api.pem").write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    _write_key(directory / "api.key", key)
    return directory


@pytest.fixture
def fake(certificates):
    fake = FakeHcloud(
        TOKEN,
        floating_ips=[{"id": FIP, "ip": "203.0.113.10", "server": PEER}],
        servers=[{"id": PEER, "name": "mx1"}, {"id": THIS_SERVER, "name": "mx2"}],
        assign_latency=0.05,
    )
    fake.start(tls=(str(certificates / "api.pem"), str(certificates / "api.key")))
    yield fake
    fake.stop()


@pytest.fixture
def node(tmp_path, fake, monkeypatch):
    # "The system's CAs" must mean the system's, whatever the test's environment points requests at.
    for variable in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "SSL_CERT_FILE", "SSL_CERT_DIR"):
        monkeypatch.delenv(variable, raising=False)
    return Node(tmp_path, fake)


def host_port(endpoint):
    host, port = endpoint.split("//")[1].split("/")[0].rsplit(":", 1)
    return host, int(port)


def refusals(node):
    return [line for line in node.lines if line.startswith("refused, not retried")]


# -- the fake over TLS -----------------------------------------------------------


def test_the_fake_serves_https_when_given_a_certificate_and_http_without(fake):
    assert fake.endpoint.startswith("https://127.0.0.1:") and fake.endpoint.endswith("/v1")
    with FakeHcloud(TOKEN) as plain:
        assert plain.endpoint.startswith("http://127.0.0.1:")


def test_the_fake_refuses_tls_older_than_1_2(fake, certificates):
    old = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    old.load_verify_locations(cafile=str(certificates / "ca.pem"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        old.set_ciphers("DEFAULT:@SECLEVEL=0")  # lets this client offer TLS 1.1 at all
        old.minimum_version = old.maximum_version = ssl.TLSVersion.TLSv1_1
    with socket.create_connection(host_port(fake.endpoint), timeout=2) as raw, pytest.raises(ssl.SSLError):
        old.wrap_socket(raw, server_hostname="127.0.0.1")
    deadline = time.monotonic() + 2
    while not fake.tls_failures and time.monotonic() < deadline:
        time.sleep(0.02)
    (failure,) = fake.tls_failures
    if "NO_PROTOCOLS_AVAILABLE" in failure[1]:
        pytest.skip("this OpenSSL offers no TLS 1.1 at all")
    assert "UNSUPPORTED_PROTOCOL" in failure[1]
    current = ssl.create_default_context(cafile=str(certificates / "ca.pem"))
    with (
        socket.create_connection(host_port(fake.endpoint), timeout=2) as raw,
        current.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
    ):
        assert tls.version() in ("TLSv1.2", "TLSv1.3")


def test_clients_that_fail_the_handshake_stop_nothing(node, fake, certificates):
    host, port = host_port(fake.endpoint)
    # Silent: connected, says nothing, and stays so while the mover runs.
    silent = socket.create_connection((host, port), timeout=2)
    try:
        # Plain HTTP to the TLS port: its connection is closed, nothing answered.
        with socket.create_connection((host, port), timeout=2) as plain:
            plain.sendall(f"GET /v1/floating_ips/{FIP} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            with contextlib.suppress(TimeoutError, ConnectionError):
                assert not plain.recv(100).startswith(b"HTTP/")
        # Garbage bytes.
        with socket.create_connection((host, port), timeout=2) as garbage:
            garbage.sendall(os.urandom(512))
            with contextlib.suppress(TimeoutError, ConnectionError):
                garbage.recv(100)
        # A client that does not trust the fake's CA.
        untrusting = ssl.create_default_context(cafile=str(certificates / "other-ca.pem"))
        with socket.create_connection((host, port), timeout=2) as raw, pytest.raises(ssl.SSLCertVerificationError):
            untrusting.wrap_socket(raw, server_hostname=host)
        assert fake.calls() == []
        # The next good client is served in full while the silent one still waits.
        assert node.run(api_ca_file=certificates / "ca.pem") == fipmover.EXIT_OK
        assert fake.server_of(FIP) == THIS_SERVER
    finally:
        silent.close()
    deadline = time.monotonic() + 2
    while len(fake.tls_failures) < 3 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert len(fake.tls_failures) >= 3
    assert {status for status in (r.status for r in fake.calls())} <= {200, 201}


def test_a_silent_client_loses_its_connection_after_the_handshake_bound(fake, monkeypatch):
    monkeypatch.setattr(hcloud_fake._Server, "handshake_seconds", 0.2)
    with socket.create_connection(host_port(fake.endpoint), timeout=3) as silent:
        started = time.monotonic()
        assert silent.recv(10) == b""  # closed by the fake, not by our timeout
        assert time.monotonic() - started < 2.5
    deadline = time.monotonic() + 2
    while not fake.tls_failures and time.monotonic() < deadline:
        time.sleep(0.02)
    assert len(fake.tls_failures) == 1 and "timed out" in fake.tls_failures[0][1]


def test_the_fakes_tls_options_go_together(capsys, tmp_path):
    for option in ("--tls-cert", "--tls-key"):
        with pytest.raises(SystemExit) as exited:
            hcloud_fake.main(["--token-file", "t", "--state-file", "s", option, str(tmp_path / "x.pem")])
        assert exited.value.code == 2
        assert "--tls-cert and --tls-key go together" in capsys.readouterr().err


def test_the_fake_process_serves_https_with_its_tls_options(tmp_path, certificates):
    state = tmp_path / "state.json"
    state.write_text(f'{{"floating_ips": [{{"id": {FIP}, "server": 1}}], "servers": [{{"id": 1}}, {{"id": 2}}]}}')
    token = tmp_path / "token"
    token.write_text(TOKEN + "\n")
    process = subprocess.Popen(
        [sys.executable, "-m", "mailha.hcloud_fake", "--listen", "127.0.0.1:0", "--token-file", str(token),
         "--state-file", str(state), "--assign-latency", "0",
         "--tls-cert", str(certificates / "api.pem"), "--tls-key", str(certificates / "api.key")],
        stdout=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    try:
        endpoint = process.stdout.readline().split()[-1]
        assert endpoint.startswith("https://127.0.0.1:")
        answer = requests.get(
            f"{endpoint}/floating_ips/{FIP}",
            headers={"Authorization": f"Bearer {TOKEN}"},
            verify=str(certificates / "ca.pem"),
            timeout=5,
        )
        assert answer.status_code == 200 and answer.json()["floating_ip"]["server"] == 1
        with pytest.raises(requests.exceptions.SSLError):
            requests.get(f"{endpoint}/floating_ips/{FIP}", verify=str(certificates / "other-ca.pem"), timeout=5)
    finally:
        process.terminate()
        process.wait(timeout=10)
        process.stdout.close()


# -- the mover and api_ca_file -----------------------------------------------------


def test_the_mover_assigns_over_https_trusting_the_ca_it_is_given(node, fake, certificates):
    assert node.run(api_ca_file=certificates / "ca.pem") == fipmover.EXIT_OK
    assert fake.server_of(FIP) == THIS_SERVER
    endpoints = [r.endpoint for r in fake.calls()]
    assert endpoints[:2] == ["get_floating_ip", "assign"] and endpoints[-1] == "get_floating_ip"
    assert fake.calls("assign")[0].body == {"server": THIS_SERVER}
    assert fake.tls_failures == [] and refusals(node) == []


def test_a_certificate_the_system_does_not_trust_is_refused_at_once_in_one_line(node, fake):
    # No api_ca_file: the system's CAs do not know the test CA.
    started = time.monotonic()
    assert node.run() == fipmover.EXIT_REFUSED
    assert time.monotonic() - started < 2  # not the retry loop of total_seconds (3 s here)
    # Nothing reached the API, and it was tried once: one handshake, no retry.
    assert fake.calls() == [] and fake.server_of(FIP) == PEER
    deadline = time.monotonic() + 2
    while not fake.tls_failures and time.monotonic() < deadline:
        time.sleep(0.02)
    assert len(fake.tls_failures) == 1
    assert node.sleeps == [] and not any(line.startswith("retrying") for line in node.lines)
    # The run ends in one line: which endpoint, against what, and what to do.
    (refused,) = refusals(node)
    assert node.lines[-1] == refused
    assert refused.startswith("refused, not retried: tls_untrusted: ")
    assert f"the certificate of {fake.endpoint} does not verify against the system's CAs" in refused
    assert f"set api_ca_file in {node.config} to the CA that signed it" in refused
    assert "or fix the endpoint's certificate" in refused
    assert "unable to get local issuer certificate" in refused
    assert "\n" not in refused and TOKEN not in "".join(node.lines)


def test_a_ca_file_of_another_ca_is_refused_naming_the_file(node, fake, certificates):
    assert node.run(api_ca_file=certificates / "other-ca.pem") == fipmover.EXIT_REFUSED
    assert fake.calls() == [] and node.sleeps == []
    (refused,) = refusals(node)
    assert f"does not verify against {certificates / 'other-ca.pem'}: set api_ca_file" in refused


def test_a_certificate_for_another_name_is_refused(node, fake, certificates):
    """The fake's certificate names 127.0.0.1 only; the right CA does not
    make it valid for another name."""
    endpoint = fake.endpoint.replace("127.0.0.1", "localhost")
    try:
        socket.create_connection(host_port(endpoint), timeout=1).close()
    except OSError:
        pytest.skip("localhost does not reach 127.0.0.1 here")
    assert node.run(api_endpoint=endpoint, api_ca_file=certificates / "ca.pem") == fipmover.EXIT_REFUSED
    (refused,) = refusals(node)
    assert "Hostname mismatch" in refused and f"the certificate of {endpoint} does not verify" in refused
    assert fake.calls() == []


def test_a_tls_handshake_cut_short_is_retried_not_refused(node, certificates):
    """A server that accepts and hangs up: a TLS failure no certificate
    explains, worth a retry within the bound."""
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    accepted = []

    def hang_up():
        with contextlib.suppress(OSError):
            while True:
                connection, _ = listener.accept()
                accepted.append(connection)
                connection.close()

    threading.Thread(target=hang_up, daemon=True).start()
    try:
        code = node.run(
            api_endpoint=f"https://127.0.0.1:{port}/v1", api_ca_file=certificates / "ca.pem", total_seconds=1
        )
    finally:
        listener.close()
    assert code == fipmover.EXIT_GAVE_UP
    assert refusals(node) == [] and len(accepted) >= 2
    assert any(line.startswith("retrying in") for line in node.lines)
    assert "tls_untrusted" not in "".join(node.lines)


# -- how api_ca_file reaches the SDK's requests (2.x and 1.18) -----------------------


def test_the_bounded_session_verifies_against_the_ca_file_as_1_18_calls_it(fake, certificates):
    """hcloud 1.18 calls Client._requests_session.request(method, URL,
    headers=...) with no verify of its own: the session the mover puts
    there brings api_ca_file."""
    client_1_18 = types.SimpleNamespace(_requests_session=object(), _api_endpoint=fake.endpoint)
    session = fipmover._bounded_session(requests, lambda: (2.0, False), str(certificates / "ca.pem"))
    assert fipmover._install_session(client_1_18, session) is True
    assert client_1_18._requests_session is session
    answer = client_1_18._requests_session.request(
        "GET", client_1_18._api_endpoint + f"/floating_ips/{FIP}", headers={"Authorization": f"Bearer {TOKEN}"}
    )
    assert answer.json()["floating_ip"]["id"] == FIP

    untrusting = fipmover._bounded_session(requests, lambda: (2.0, False))
    with pytest.raises(fipmover.ApiError) as refused:
        untrusting.request("GET", fake.endpoint + f"/floating_ips/{FIP}", headers={"Authorization": "Bearer x"})
    assert refused.value.code == "tls_untrusted" and fipmover.is_permanent(refused.value)
    assert refused.value.message.startswith(f"https://127.0.0.1:{host_port(fake.endpoint)[1]}: certificate verify")


def test_the_ca_file_wins_over_a_ca_bundle_in_the_environment(fake, certificates, monkeypatch):
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(certificates / "other-ca.pem"))
    session = fipmover._bounded_session(requests, lambda: (2.0, False), str(certificates / "ca.pem"))
    answer = session.request(
        "GET", fake.endpoint + f"/floating_ips/{FIP}", headers={"Authorization": f"Bearer {TOKEN}"}
    )
    assert answer.status_code == 200


def test_the_2x_sdk_gets_the_ca_file_through_the_movers_sdk(fake, certificates):
    sdk = fipmover.Sdk(TOKEN, fake.endpoint, lambda: (2.0, False), 0.02, ca_file=str(certificates / "ca.pem"))
    assert sdk.bounded is True
    assert sdk.server_of(FIP) == PEER
    without = fipmover.Sdk(TOKEN, fake.endpoint, lambda: (2.0, False), 0.02)
    with pytest.raises(fipmover.ApiError, match="tls_untrusted"):
        without.server_of(FIP)


def test_an_untrusted_certificate_from_the_sdks_own_session_is_permanent_too(fake):
    """Where the session could not be replaced, the SDK's requests error is
    read as the same permanent refusal."""
    with pytest.raises(requests.exceptions.SSLError) as raised:
        requests.get(fake.endpoint + f"/floating_ips/{FIP}", timeout=2)
    api_error = fipmover._as_api_error(raised.value)
    assert api_error.code == "tls_untrusted" and fipmover.is_permanent(api_error)
    assert "certificate verify failed" in api_error.message
    assert fipmover._as_api_error(requests.exceptions.SSLError("EOF occurred in violation of protocol")) is None


def test_an_sdk_whose_session_is_not_found_says_api_ca_file_is_not_applied(node, certificates):
    class Unbounded:
        bounded, version = False, "9.9"

        def __init__(self, token, endpoint, timeout_for, poll_interval, ca_file=""):
            self.ca_file = ca_file

        def server_of(self, floating_ip_id):
            return THIS_SERVER

    node.write_config(api_ca_file=certificates / "ca.pem")
    settings = fipmover.load_config(str(node.config))
    mover = fipmover.Mover(settings, Unbounded, lambda: True, lambda text, priority=None: node.lines.append(text))
    mover.deadline = time.monotonic() + 3
    assert mover.run(TOKEN) == fipmover.EXIT_OK
    assert any("api_ca_file is not applied" in line for line in node.lines)


# -- the setting -----------------------------------------------------------------


def test_api_ca_file_is_read_from_the_settings_file(node, certificates):
    node.write_config(api_ca_file=certificates / "ca.pem")
    assert fipmover.load_config(str(node.config), os.getuid())["api_ca_file"] == str(certificates / "ca.pem")
    node.write_config()
    assert fipmover.load_config(str(node.config), os.getuid())["api_ca_file"] == ""


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("ca.pem", "'ca.pem': not an absolute path"),
        ("/nonexistent/ca.pem", "'/nonexistent/ca.pem': no such file"),
        ("{dir}", "not a regular file"),
        ("{dir}/not-pem.txt", "no PEM certificate in it"),
        ("{dir}/api.key", "no PEM certificate in it"),
    ],
)
def test_a_bad_api_ca_file_is_one_line(tmp_path, certificates, value, message):
    (certificates / "not-pem.txt").write_text("not a certificate\n")
    path = tmp_path / "fip-mover.conf"
    value = value.format(dir=certificates)
    path.write_text(f"floating_ip_id=1\nserver_id=2\naddress=203.0.113.10\napi_ca_file={value}\n")
    with pytest.raises(config.UsageError) as refused:
        fipmover.load_config(str(path), os.getuid())
    text = str(refused.value)
    assert text.startswith(f"{path}:4: api_ca_file: ") and message in text and "\n" not in text


def test_a_bad_api_ca_file_stops_the_run_before_any_call(node, fake):
    assert node.run(api_ca_file="relative/ca.pem") == fipmover.EXIT_USAGE
    assert fake.calls() == [] and fake.tls_failures == []
    (line,) = node.lines
    assert line.startswith(f"not moving the floating IP: {node.config}:")
    assert line.endswith(": api_ca_file: 'relative/ca.pem': not an absolute path")


def test_http_uses_no_tls_and_ignores_api_ca_file(tmp_path, certificates):
    """The loopback fake over http (the role's Molecule scenario) keeps working with a CA set."""
    with FakeHcloud(
        TOKEN,
        floating_ips=[{"id": FIP, "server": PEER}],
        servers=[{"id": PEER}, {"id": THIS_SERVER}],
        assign_latency=0.02,
    ) as plain:
        node = Node(tmp_path, plain)
        assert node.run(api_ca_file=certificates / "ca.pem") == fipmover.EXIT_OK
        assert plain.server_of(FIP) == THIS_SERVER and plain.endpoint.startswith("http://")
