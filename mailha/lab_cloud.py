"""The lab as a cloud that routes the floating IP through its API.

    python -m mailha.lab_cloud start --inventory BASE.yml --out CLOUD.yml [--latency 2]
    python -m mailha.lab_cloud route FLOATING_IP_ID SERVER_ID
    python -m mailha.lab_cloud mirror ZONE NAME TYPE TTL VALUE...
    python -m mailha.lab_cloud latency SECONDS
    python -m mailha.lab_cloud apply
    python -m mailha.lab_cloud status [--output json]
    python -m mailha.lab_cloud stop

In Hetzner Cloud the floating IP reaches the server the API assigned it to,
whatever the servers announce. keepalived still adds the address on the
VRRP MASTER (so it can accept and send from it) and its notify asks the API
(mailha-node fip-assign, roles/hcloud_mover); until the API has moved it,
the new MASTER's address is dead. The lab's bridge has no such router: an
address goes where ARP says. So in this mode the controller plays the
cloud's router: every relay but the one the fake API (mailha.hcloud_fake,
on the controller, over TLS on the lab network) assigns the address to
gets a fence in its network namespace, set from outside (nftables table
netdev mailha_cloud on its link): no ARP for the address, no packet from
or to it. When an assign action succeeds, after the latency given here,
the fake's hook (`route`) moves the fence and announces the address from
the assigned relay with gratuitous ARP, as the cloud's routing change
would. A relay that is powered off is skipped; it comes back unfenced and
without the address (keepalived starts it as BACKUP).

The sending domain's zone is Hetzner's too: the fake serves it (the
active-relay record and the DKIM selector's TXT, as BIND answers them at
`start`), the inventory says `mailha_dns_updates: hcloud`, so a switch
changes the record and an isolation rotates the DKIM selector through the
API (mailha.hcloud_dns, with the fake's token file and CA), and the fake's
other hook (`mirror`) copies every rrset it changes or deletes into the
lab's BIND with an RFC 2136 update (TSIG: the environment's zone key,
mailha-zone), as Hetzner's servers publish what its API was given.

`start` writes, under .lab/cloud/: the fake's token (also the relays' token
file, <secrets>/hcloud-mover-token), a CA and the API's certificate for the
controller's address, the fake's state (one floating IP, held by the relay
that holds the address now; one server per relay), its log and pid, the
hook's log (routes.log), and the inventory CLOUD.yml: BASE.yml with the
mover (mailha_floating_ip_mover: ids, endpoint, CA), the controller's
DNS changes through the API (mailha_dns_updates, mailha_hcloud_api_endpoint,
mailha_hcloud_api_ca_file, mailha_hcloud_token_file) and its load balancer
declared managed (mailha_load_balancer_kind hcloud, no loadbalancer host:
the lab's HAProxy, left as provisioned, plays Hetzner's, which sends to the
relay answering /active). Converging CLOUD.yml
(site.yml) installs the mover and keepalived's notify lines; `apply` then
fences the relays as the fake's state says. `stop` ends the fake and lifts
the fences; converging BASE.yml takes the mover's notify lines away.

Exit codes: 0 done, 1 failed (one line on stderr says why), 2 usage error.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import signal
import socket
import ssl
import struct
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from mailha import dns_records, project
from mailha import pair as pair_mod
from mailha.errors import BadInput, MailhaError
from mailha.node import files

STATE_DIR_NAME = ".lab/cloud"
DEFAULT_PORT = 8443
# The fake's floating IP and the relays' server ids start here (any positive ids do).
FLOATING_IP_ID = 4711
FIRST_SERVER_ID = 101
# The lab's containers have one link.
DEVICE = "eth0"
HOOK_TIMEOUT = 30
# The fake's zone id (any positive id does) and the record a switch changes.
ZONE_ID = 31
# The zone key (bind_update_key): Hetzner's servers publish every rrset its
# API holds, the DKIM selector too, which the CLI's key may not change.
TSIG_KEY_NAME = "mailha-zone"
TSIG_ALGORITHM = "hmac-sha256"
FENCE_TABLE = "mailha_cloud"
# An assign must end well inside the mover's bound (hcloud_mover_total_seconds, 40 s).
MAX_LATENCY = 30


def cloud_dir() -> Path:
    return project.project_dir() / STATE_DIR_NAME


def _log(text: str) -> None:
    with open(cloud_dir() / "routes.log", "a", encoding="utf-8") as handle:
        handle.write(f"{time.strftime('%Y-%m-%dT%H:%M:%S')}.{int(time.time() * 1000) % 1000:03d} {text}\n")


def _podman(*args: str, timeout: float = HOOK_TIMEOUT, check: bool = True) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env.setdefault("CONTAINERS_CONF", str(project.project_dir() / "lab" / "containers.conf"))
    try:
        result = subprocess.run(
            ["podman", *args], capture_output=True, text=True, timeout=timeout, env=env, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise MailhaError(f"podman {' '.join(args[:2])} failed: {exc}") from None
    if check and result.returncode != 0:
        raise MailhaError(f"podman {' '.join(args[:3])} failed: {' '.join(result.stderr.split())[:300]}")
    return result


# -- the settings start writes and every other command reads ------------------


def load_base(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text())
        data["all"]["vars"]["mailha_floating_ip"]
        data["all"]["children"]["mail"]["hosts"]
    except (OSError, KeyError, TypeError, yaml.YAMLError) as exc:
        raise MailhaError(f"cannot read the inventory {path}: {exc}; run 'make provision' first") from None
    return data


def plan(base: dict[str, Any], endpoint: str, ca_file: str, token_file: str) -> dict[str, Any]:
    """What the cloud is: the floating IP, each relay's server id and address,
    and how the API is reached (endpoint, CA, the controller's token file)."""
    relays = base["all"]["children"]["mail"]["hosts"]
    servers = {
        name: {"id": FIRST_SERVER_ID + index, "address": relays[name]["mailha_address"]}
        for index, name in enumerate(sorted(relays))
    }
    return {
        "floating_ip": base["all"]["vars"]["mailha_floating_ip"],
        "floating_ip_id": FLOATING_IP_ID,
        "servers": servers,
        "endpoint": endpoint,
        "ca_file": ca_file,
        "token_file": token_file,
    }


def cloud_inventory(base: dict[str, Any], settings: dict[str, Any]) -> dict[str, Any]:
    """BASE with the mover, and its load balancer as a cloud's managed one
    (kind hcloud, no host): the lab's HAProxy plays it, sending to whichever
    relay answers /active as Hetzner's does, and the playbooks and the CLI
    take the managed path (no pin, no drain, no statistics)."""
    data = json.loads(json.dumps(base))
    all_vars = data["all"]["vars"]
    children = data["all"]["children"]
    balancer = children.pop("loadbalancer", {}).get("hosts", {}).get(all_vars.get("mailha_load_balancer_host"), {})
    all_vars["mailha_load_balancer_kind"] = "hcloud"
    all_vars.setdefault(
        "mailha_load_balancer_source_address", balancer.get("mailha_address", all_vars["mailha_load_balancer_address"])
    )
    all_vars["mailha_dns_updates"] = "hcloud"
    all_vars["mailha_hcloud_api_endpoint"] = settings["endpoint"]
    all_vars["mailha_hcloud_api_ca_file"] = settings["ca_file"]
    all_vars["mailha_hcloud_token_file"] = settings["token_file"]
    data["all"]["vars"]["mailha_floating_ip_mover"] = {
        "kind": "hcloud",
        "floating_ip_id": settings["floating_ip_id"],
        "server_ids": {name: server["id"] for name, server in settings["servers"].items()},
        "api_endpoint": settings["endpoint"],
        "api_ca_file": settings["ca_file"],
    }
    return data


def load_settings() -> dict[str, Any]:
    path = cloud_dir() / "settings.json"
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise MailhaError(f"the lab is not in cloud mode ({path}: {exc}); run 'make lab-as-cloud'") from None


# -- the lab's side of the route ----------------------------------------------


def containers_by_address() -> dict[str, tuple[str, str]]:
    """The running lab containers, by their address on the lab network: (name, process id)."""
    names = _podman("ps", "--filter", "label=mailha.lab=1", "--format", "{{.Names}}").stdout.split()
    if not names:
        return {}
    shown = _podman(
        "inspect", "-f", "{{.Name}} {{.State.Pid}} {{range .NetworkSettings.Networks}}{{.IPAddress}} {{end}}", *names
    ).stdout  # fmt: skip
    found = {}
    for line in shown.splitlines():
        name, pid, *addresses = line.split()
        if pid.isdigit() and pid != "0":
            for address in addresses:
                found[address] = (name, pid)
    return found


def garp_frame(mac: str, address: str) -> bytes:
    """A gratuitous ARP request: this MAC has this address (sender = target)."""
    hardware = bytes.fromhex(mac.replace(":", ""))
    if len(hardware) != 6:
        raise ValueError(f"not a MAC address: {mac!r}")
    ip = socket.inet_aton(address)
    header = b"\xff" * 6 + hardware + b"\x08\x06"
    return header + struct.pack("!HHBBH", 1, 0x0800, 6, 4, 1) + hardware + ip + b"\x00" * 6 + ip


GARP_PROGRAM = """
import socket, sys
device, frame = sys.argv[1], bytes.fromhex(sys.argv[2])
sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
sock.bind((device, 0))
for _ in range(3):
    sock.send(frame)
"""


def _in_netns(
    container: tuple[str, str], *command: str, check: bool = True, input: str | None = None
) -> subprocess.CompletedProcess:
    """Run a controller program in the (name, pid) container's network
    namespace: the cloud's router acts from outside the server."""
    name, pid = container
    try:
        result = subprocess.run(
            ["nsenter", "-t", pid, "-n", *command],
            input=input,
            capture_output=True,
            text=True,
            timeout=HOOK_TIMEOUT,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise MailhaError(f"nsenter for {name} failed: {exc}") from None
    if check and result.returncode != 0:
        raise MailhaError(f"{' '.join(command[:4])} in {name} failed: {' '.join(result.stderr.split())[:300]}")
    return result


def fence_rules(address: str) -> str:
    """The cloud's fence on a relay the address is not assigned to (nft -f)."""
    return f"""table netdev {FENCE_TABLE} {{}}
delete table netdev {FENCE_TABLE}
table netdev {FENCE_TABLE} {{
\tchain egress {{
\t\ttype filter hook egress device "{DEVICE}" priority -500; policy accept;
\t\tarp saddr ip {address} counter drop comment "not assigned here: no announcement"
\t\tip saddr {address} counter drop comment "not assigned here: nothing leaves from it"
\t}}
\tchain ingress {{
\t\ttype filter hook ingress device "{DEVICE}" priority -500; policy accept;
\t\tarp daddr ip {address} counter drop comment "not assigned here: no answer"
\t\tip daddr {address} counter drop comment "not assigned here: nothing arrives for it"
\t}}
}}
"""


OPEN_RULES = f"table netdev {FENCE_TABLE} {{}}\ndelete table netdev {FENCE_TABLE}\n"


def _nft(container: tuple[str, str], rules: str) -> None:
    _in_netns(container, "nft", "-f", "-", input=rules)


def route(settings: dict[str, Any], server_id: int) -> str:
    """Make the lab deliver the floating IP to the relay of `server_id` only; its name."""
    owners = {server["id"]: name for name, server in settings["servers"].items()}
    if server_id not in owners:
        raise MailhaError(f"server {server_id} is none of the lab's relays ({', '.join(map(str, owners))})")
    target = owners[server_id]
    address = settings["floating_ip"]
    by_address = containers_by_address()
    containers = {name: by_address.get(server["address"]) for name, server in settings["servers"].items()}
    if containers[target] is None:
        raise MailhaError(f"{target} ({settings['servers'][target]['address']}) is not running: nothing to route to")
    for name, container in containers.items():
        # The others first: the address must never reach two relays.
        if name != target and container is not None:
            _nft(container, fence_rules(address))
    _nft(containers[target], OPEN_RULES)
    # Through netlink: /sys under nsenter -n is still the controller's.
    link = _in_netns(containers[target], "ip", "-o", "link", "show", "dev", DEVICE).stdout.split()
    mac = link[link.index("link/ether") + 1] if "link/ether" in link else ""
    _in_netns(containers[target], sys.executable, "-c", GARP_PROGRAM, DEVICE, garp_frame(mac, address).hex())
    return target


def lift_fences(settings: dict[str, Any]) -> None:
    """Every relay as in a lab without a cloud: no fence."""
    by_address = containers_by_address()
    for server in settings["servers"].values():
        if by_address.get(server["address"]) is not None:
            _nft(by_address[server["address"]], OPEN_RULES)


def fenced(settings: dict[str, Any]) -> list[str]:
    """The relays the cloud's fence keeps the address from."""
    by_address = containers_by_address()
    found = []
    for name, server in settings["servers"].items():
        container = by_address.get(server["address"])
        if container is not None:
            listed = _in_netns(container, "nft", "list", "tables", "netdev", check=False).stdout.split()
            if FENCE_TABLE in listed:
                found.append(name)
    return found


# -- the fake API -------------------------------------------------------------


def _openssl(*args: str) -> None:
    result = subprocess.run(["openssl", *args], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise MailhaError(f"openssl {args[0]} failed: {' '.join(result.stderr.split())[:300]}")


def make_certificates(directory: Path, address: str) -> None:
    """A CA of the lab's cloud and the API's certificate for `address`."""
    ca_key, ca_pem = directory / "ca.key", directory / "ca.pem"
    key, request, pem = directory / "api.key", directory / "api.csr", directory / "api.pem"
    extensions = directory / "api.ext"
    curve = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"]
    _openssl("req", "-x509", *curve, "-keyout", str(ca_key), "-out", str(ca_pem), "-days", "30",
             "-subj", "/CN=mailha lab cloud CA")  # fmt: skip
    _openssl("req", "-new", *curve, "-keyout", str(key), "-out", str(request), "-subj", f"/CN={address}")
    extensions.write_text(f"subjectAltName=IP:{address}\nextendedKeyUsage=serverAuth\n")
    _openssl("x509", "-req", "-in", str(request), "-CA", str(ca_pem), "-CAkey", str(ca_key), "-CAcreateserial",
             "-out", str(pem), "-days", "30", "-extfile", str(extensions))  # fmt: skip
    for private in (ca_key, key):
        private.chmod(0o600)


def fake_pid() -> int | None:
    try:
        pid = int((cloud_dir() / "fake.pid").read_text())
        os.kill(pid, 0)
    except (OSError, ValueError):
        return None
    return pid


def stop() -> bool:
    """End the fake; whether one was running."""
    pid = fake_pid()
    if pid is None:
        return False
    os.kill(pid, signal.SIGTERM)
    for _ in range(50):
        try:
            os.kill(pid, 0)
        except OSError:
            break
        time.sleep(0.1)
    else:
        os.kill(pid, signal.SIGKILL)
    (cloud_dir() / "fake.pid").unlink(missing_ok=True)
    return True


def _wait_for_api(address: str, port: int, ca_file: str, timeout: float = 15) -> None:
    context = ssl.create_default_context(cafile=ca_file)
    deadline = time.monotonic() + timeout
    while True:
        try:
            with (
                socket.create_connection((address, port), timeout=2) as raw,
                context.wrap_socket(raw, server_hostname=address),
            ):
                return
        except OSError as exc:
            if time.monotonic() > deadline or fake_pid() is None:
                log = (cloud_dir() / "fake.log").read_text(errors="replace")[-400:]
                raise MailhaError(f"the fake API does not answer on {address}:{port} ({exc}): {log}") from None
            time.sleep(0.2)


def holder(settings: dict[str, Any]) -> str | None:
    """The relay that has the address on its link now, as keepalived's
    MASTER does (None: none or both)."""
    by_address = containers_by_address()
    found = []
    for name, server in settings["servers"].items():
        container = by_address.get(server["address"])
        if container is None:
            continue
        shown = _in_netns(container, "ip", "-o", "-4", "addr", "show", "dev", DEVICE, check=False).stdout
        if f" {settings['floating_ip']}/" in shown:
            found.append(name)
    return found[0] if len(found) == 1 else None


# -- the zone: the fake's rrsets, published by the lab's BIND ----------------

ACTIVE_RECORD = "relay"


def active_record(dns_settings: dict[str, Any], base: dict[str, Any]) -> str:
    """What the lab's BIND answers for the active-relay record now (the
    fake's zone starts from it), or the first relay's address."""
    import dns.exception
    import dns.resolver

    resolver = dns.resolver.Resolver(configure=False)
    resolver.nameservers = [dns_settings["nameserver"]]
    resolver.lifetime = 5
    try:
        answer = resolver.resolve(f"{ACTIVE_RECORD}.{dns_settings['zone']}", "A")
        return answer[0].address
    except dns.exception.DNSException:
        relays = base["all"]["children"]["mail"]["hosts"]
        return relays[sorted(relays)[0]]["mailha_address"]


def dkim_rrset(dns_settings: dict[str, Any], base_path: Path) -> dict[str, Any] | None:
    """The DKIM selector's TXT rrset as the lab's BIND answers it now (the
    fake's zone holds it too, as Terraform publishes it at Hetzner, so an
    isolation rotates it through the API), or None when BIND has none."""
    import dns.exception
    import dns.resolver

    pair = pair_mod.load(base_path)
    owner = f"{pair.dkim_selector()}._domainkey.{pair.settings['mailha_sender_domain']}"
    try:
        name = dns_records.relative_name(owner, dns_settings["zone"])
    except BadInput:
        return None
    resolver = dns.resolver.Resolver(configure=False)
    resolver.nameservers = [dns_settings["nameserver"]]
    resolver.lifetime = 5
    try:
        answer = resolver.resolve(owner, "TXT")
    except dns.exception.DNSException:
        return None
    return {"name": name, "type": "TXT", "ttl": answer.rrset.ttl, "records": [{"value": rr.to_text()} for rr in answer]}


def mirror(dns_settings: dict[str, Any], zone: str, name: str, rrset_type: str, ttl: int, values: list[str]) -> None:
    """Replace the rrset at the lab's BIND (RFC 2136, TSIG), as the fake has
    it now; no values: the rrset was deleted, and goes from BIND too."""
    import dns.exception
    import dns.query
    import dns.rcode
    import dns.tsigkeyring
    import dns.update

    if zone.rstrip(".").lower() != dns_settings["zone"].rstrip(".").lower():
        raise MailhaError(f"zone {zone} is not the lab's ({dns_settings['zone']})")
    try:
        secret = Path(dns_settings["key_file"]).read_text().strip()
    except OSError as exc:
        raise MailhaError(f"cannot read the TSIG key {dns_settings['key_file']}: {exc.strerror}") from None
    keyring = dns.tsigkeyring.from_text({dns_settings["key_name"]: secret})
    update = dns.update.Update(
        dns_settings["zone"], keyring=keyring, keyname=dns_settings["key_name"], keyalgorithm=dns_settings["algorithm"]
    )
    owner = "@" if name == "@" else name
    if values:
        update.replace(owner, int(ttl), rrset_type, *values)
    else:
        update.delete(owner, rrset_type)
    try:
        response = dns.query.tcp(update, dns_settings["nameserver"], timeout=10)
    except (dns.exception.DNSException, OSError) as exc:
        raise MailhaError(f"the update of {name} {rrset_type} at {dns_settings['nameserver']} failed: {exc}") from None
    if response.rcode() != dns.rcode.NOERROR:
        rcode = dns.rcode.to_text(response.rcode())
        raise MailhaError(f"{dns_settings['nameserver']} refused the update of {name} {rrset_type}: {rcode}")


def start(base_path: Path, out_path: Path, latency: float, port: int) -> dict[str, Any]:
    base = load_base(base_path)
    address = base["all"]["vars"]["mailha_controller_address"]
    environment = base["all"]["vars"]["mailha_environment"]
    stop()
    directory = cloud_dir()
    directory.mkdir(parents=True, exist_ok=True)
    directory.chmod(0o700)
    make_certificates(directory, address)
    settings = plan(base, f"https://{address}:{port}/v1", str(directory / "ca.pem"), str(directory / "token"))
    current = holder(settings)
    if current is None:
        raise MailhaError("no single relay holds the floating IP; make the pair healthy first ('mailha status')")
    token = secrets.token_hex(32)
    files.replace_file(str(directory / "token"), token + "\n", mode=0o600)
    secrets_dir = base_path.resolve().parent.parent.parent / ".lab" / "secrets" / environment
    files.replace_file(str(secrets_dir / "hcloud-mover-token"), token + "\n", mode=0o600)
    all_vars = base["all"]["vars"]
    settings["dns"] = {
        "zone": all_vars["mailha_dns_zone"],
        "nameserver": all_vars["mailha_nameserver"],
        "key_name": TSIG_KEY_NAME,
        "algorithm": TSIG_ALGORITHM,
        "key_file": str(secrets_dir / f"tsig-{TSIG_KEY_NAME}.key"),
    }
    record = active_record(settings["dns"], base)
    state = {
        "floating_ips": [
            {
                "id": settings["floating_ip_id"],
                "ip": settings["floating_ip"],
                "server": settings["servers"][current]["id"],
                "name": "mailha-lab",
            }
        ],
        "servers": [{"id": server["id"], "name": name} for name, server in settings["servers"].items()],
        "zones": [
            {
                "id": ZONE_ID,
                "name": settings["dns"]["zone"],
                "rrsets": [{"name": ACTIVE_RECORD, "type": "A", "ttl": 60, "records": [{"value": record}]}]
                + [rrset for rrset in [dkim_rrset(settings["dns"], base_path)] if rrset],
            }
        ],
    }
    files.replace_file(str(directory / "state.json"), json.dumps(state, indent=2) + "\n", mode=0o644)
    settings |= {"latency": latency, "listen": f"{address}:{port}", "inventory": str(out_path.resolve())}
    files.replace_file(str(directory / "settings.json"), json.dumps(settings, indent=2) + "\n", mode=0o644)
    header = "# Written by 'python -m mailha.lab_cloud start' (make lab-as-cloud): the lab as a cloud.\n"
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(header + yaml.safe_dump(cloud_inventory(base, settings), sort_keys=False))
    group_vars = out_path.parent / "group_vars"
    if not group_vars.exists():
        group_vars.symlink_to(os.path.relpath(base_path.parent / "group_vars", out_path.parent))
    launch(settings)
    return settings | {"holder": current}


def launch(settings: dict[str, Any]) -> None:
    """Start the fake API from the files start wrote, with settings["latency"]."""
    directory = cloud_dir()
    command = [
        sys.executable, "-m", "mailha.hcloud_fake",
        "--listen", settings["listen"],
        "--token-file", str(directory / "token"),
        "--state-file", str(directory / "state.json"),
        "--assign-latency", str(settings["latency"]),
        "--on-assign", f"{sys.executable} -m mailha.lab_cloud route",
        "--on-rrset", f"{sys.executable} -m mailha.lab_cloud mirror",
        "--tls-cert", str(directory / "api.pem"),
        "--tls-key", str(directory / "api.key"),
    ]  # fmt: skip
    with open(directory / "fake.log", "ab") as log:
        process = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True,
            cwd=project.project_dir(),
        )  # fmt: skip
    (directory / "fake.pid").write_text(f"{process.pid}\n")
    address, _, port = settings["listen"].rpartition(":")
    _wait_for_api(address, int(port), settings["ca_file"])


def relaunch(latency: float) -> dict[str, Any]:
    """The same fake (token, certificate, state) with another assign latency."""
    settings = load_settings()
    stop()
    settings["latency"] = latency
    files.replace_file(str(cloud_dir() / "settings.json"), json.dumps(settings, indent=2) + "\n", mode=0o644)
    launch(settings)
    return settings


def status() -> dict[str, Any]:
    settings = load_settings()
    try:
        state = json.loads((cloud_dir() / "state.json").read_text())
    except (OSError, ValueError) as exc:
        raise MailhaError(f"cannot read the fake's state: {exc}") from None
    assigned = state["floating_ips"][0]["server"]
    owners = {server["id"]: name for name, server in settings["servers"].items()}
    return {
        "api": settings["endpoint"],
        "running": fake_pid() is not None,
        "latency": settings["latency"],
        "assigned_to": owners.get(assigned),
        "holder": holder(settings),
        "fenced": fenced(settings),
        "inventory": settings["inventory"],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mailha.lab_cloud", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    begin = commands.add_parser("start", help="write the cloud inventory and start the fake API")
    begin.add_argument("--inventory", type=Path, required=True, help="the lab's SSH inventory to start from")
    begin.add_argument("--out", type=Path, required=True, help="where to write the cloud inventory")
    begin.add_argument("--latency", type=float, default=2.0, help="seconds an assign takes (default: %(default)s)")
    begin.add_argument("--port", type=int, default=DEFAULT_PORT, help="the API's port (default: %(default)s)")
    hook = commands.add_parser("route", help="the fake's on-assign hook")
    hook.add_argument("floating_ip_id", type=int)
    hook.add_argument("server_id", type=int)
    copy = commands.add_parser("mirror", help="the fake's on-rrset hook: publish an rrset in the lab's BIND")
    copy.add_argument("zone")
    copy.add_argument("name")
    copy.add_argument("type")
    # An rrset without a TTL of its own (None) has the zone's (3600 at the fake).
    copy.add_argument("ttl", type=lambda text: 3600 if text == "None" else int(text))
    copy.add_argument("values", nargs="*")
    again = commands.add_parser("latency", help="restart the fake with another assign latency")
    again.add_argument("seconds", type=float)
    commands.add_parser("apply", help="put the address where the fake's state says")
    show = commands.add_parser("status", help="the fake, its assignment and the lab's holder")
    show.add_argument("-o", "--output", choices=("text", "json"), default="text")
    commands.add_parser("stop", help="end the fake API")
    options = parser.parse_args(argv)
    try:
        latency = getattr(options, "latency", getattr(options, "seconds", 0))
        if not 0 <= latency <= MAX_LATENCY:
            parser.error(f"latency: seconds from 0 to {MAX_LATENCY} (the mover gives up after 40 s by default)")
        if options.command == "start":
            done = start(options.inventory, options.out, options.latency, options.port)
            print(f"lab cloud: the fake API at {done['endpoint']} ({done['latency']:g} s per assign) "
                  f"routes {done['floating_ip']} to {done['holder']}; inventory {options.out}")  # fmt: skip
        elif options.command == "latency":
            done = relaunch(options.seconds)
            print(f"lab cloud: the fake API at {done['endpoint']} now takes {done['latency']:g} s per assign")
        elif options.command == "route":
            settings = load_settings()
            _log(f"assign {options.floating_ip_id} to server {options.server_id}")
            where = route(settings, options.server_id)
            _log(f"routed {settings['floating_ip']} to {where}")
        elif options.command == "mirror":
            settings = load_settings()
            mirror(settings["dns"], options.zone, options.name, options.type, options.ttl, options.values)
            _log(
                f"published {options.name} {options.type} {' '.join(options.values)} at {settings['dns']['nameserver']}"
            )
        elif options.command == "apply":
            settings = load_settings()
            assigned = json.loads((cloud_dir() / "state.json").read_text())["floating_ips"][0]["server"]
            print(f"lab cloud: {settings['floating_ip']} routed to {route(settings, assigned)}")
        elif options.command == "status":
            shown = status()
            if options.output == "json":
                print(json.dumps(shown, indent=2))
            else:
                print("\n".join(f"{key}: {value}" for key, value in shown.items()))
        elif options.command == "stop":
            print("lab cloud: the fake API stopped" if stop() else "lab cloud: no fake API was running")
            if (cloud_dir() / "settings.json").exists():
                lift_fences(load_settings())
                print("lab cloud: the relays' fences are lifted")
    except MailhaError as exc:
        if options.command in ("route", "mirror"):
            _log(f"{options.command} failed: {exc}")
        print(f"lab cloud: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
