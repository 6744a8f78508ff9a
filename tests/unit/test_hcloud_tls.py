"""The fake Hetzner API over TLS and the mover's api_ca_file: what lets the
lab's relays reach a fake on the controller (mailha.lab_cloud) with the
token never in clear, and what a certificate that does not verify does."""

import contextlib
import os
import socket
import ssl
import subprocess

import pytest

pytest.importorskip("hcloud")

from mailha import hcloud_fake
from mailha.hcloud_fake import FakeHcloud
from mailha.node import fipmover
from tests.unit.test_fipmover import FIP, PEER, THIS_SERVER, TOKEN, Node


def openssl(*args):
    subprocess.run(["openssl", *args], check=True, capture_output=True)


@pytest.fixture(scope="module")
def certificates(tmp_path_factory):
    """A throwaway CA and the API's certificate for 127.0.0.1, signed by it."""
    d = tmp_path_factory.mktemp("tls")
    curve = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"]
    openssl("req", "-x509", *curve, "-keyout", str(d / "ca.key"), "-out", str(d / "ca.pem"), "-days", "2",
            "-subj", "/CN=test CA")  # fmt: skip
    openssl("req", "-new", *curve, "-keyout", str(d / "api.key"), "-out", str(d / "api.csr"), "-subj", "/CN=api")
    (d / "api.ext").write_text("subjectAltName=IP:127.0.0.1\n")
    openssl("x509", "-req", "-in", str(d / "api.csr"), "-CA", str(d / "ca.pem"), "-CAkey", str(d / "ca.key"),
            "-CAcreateserial", "-out", str(d / "api.pem"), "-days", "2", "-extfile", str(d / "api.ext"))  # fmt: skip
    return d


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
def node(tmp_path, fake):
    return Node(tmp_path, fake)


def test_the_fake_serves_https_when_given_a_certificate(fake):
    assert fake.endpoint.startswith("https://127.0.0.1:")


def test_the_mover_assigns_over_https_trusting_the_ca_it_is_given(node, fake, certificates):
    assert node.run(api_ca_file=certificates / "ca.pem") == fipmover.EXIT_OK
    assert fake.server_of(FIP) == THIS_SERVER
    assert [r.endpoint for r in fake.calls()][:2] == ["get_floating_ip", "assign"]


def test_a_certificate_that_does_not_verify_is_refused_at_once_with_one_line(node, fake):
    # No api_ca_file: the system's CAs do not know the test CA.
    assert node.run() == fipmover.EXIT_REFUSED
    assert fake.calls() == [] and fake.server_of(FIP) == PEER
    refusals = [line for line in node.lines if line.startswith("refused, not retried")]
    assert len(refusals) == 1 and node.sleeps == []
    assert f"certificate of {fake.endpoint} does not verify: set api_ca_file" in refusals[0]


def test_a_client_that_fails_the_handshake_stops_nothing(node, fake, certificates):
    host, port = fake.endpoint.split("//")[1].split("/")[0].split(":")
    with socket.create_connection((host, int(port)), timeout=2) as plain:
        plain.sendall(b"GET /v1/floating_ips/7 HTTP/1.1\r\nHost: x\r\n\r\n")
        plain.settimeout(2)
        with contextlib.suppress(TimeoutError, ConnectionError):
            plain.recv(100)
    untrusting = ssl.create_default_context()
    with socket.create_connection((host, int(port)), timeout=2) as raw, pytest.raises(ssl.SSLError):
        untrusting.wrap_socket(raw, server_hostname=host)
    assert node.run(api_ca_file=certificates / "ca.pem") == fipmover.EXIT_OK


@pytest.mark.parametrize(
    ("value", "message"), [("ca.pem", "an absolute path"), ("/nonexistent/ca.pem", "no such file")]
)
def test_a_bad_api_ca_file_is_one_line(tmp_path, value, message):
    path = tmp_path / "fip-mover.conf"
    path.write_text(f"floating_ip_id=1\nserver_id=2\naddress=203.0.113.10\napi_ca_file={value}\n")
    with pytest.raises(fipmover.config.UsageError, match=message):
        fipmover.load_config(str(path), os.getuid())


def test_the_fakes_tls_options_go_together(capsys, tmp_path):
    with pytest.raises(SystemExit) as exited:
        hcloud_fake.main(["--token-file", "t", "--state-file", "s", "--tls-cert", str(tmp_path / "c.pem")])
    assert exited.value.code == 2
    assert "--tls-cert and --tls-key go together" in capsys.readouterr().err


def test_execute_reads_api_ca_file_from_the_settings_file(node, certificates):
    node.write_config(api_ca_file=certificates / "ca.pem")
    assert fipmover.load_config(str(node.config), os.getuid())["api_ca_file"] == str(certificates / "ca.pem")
