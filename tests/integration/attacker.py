"""Attacks an outside host on the lab network tries (tests/integration/test_lab_security.py).

Runs inside a lab container with the image's python3 and the standard library
only: `python3 - ACTION ARGS... < attacker.py`. Prints one JSON document.
Every loop is bounded in count and time, and every address is a lab host.

Actions:
  proxy-relay HOST PORT CLAIMED   a forged PROXY v1 header claiming CLAIMED,
                                  then EHLO, MAIL FROM, RCPT TO a far domain
  relay HOST PORT                 the same without a PROXY header
  connect HOST PORT               open / refused / timeout
  dns SERVER NAME                 one UDP query: answered / timeout
  http-flood HOST PORT COUNT HOLD COUNT half-sent requests held HOLD seconds
  vrrp SOURCE VRID PRIORITY RATE SECONDS ADDRESS DEST...
                                  forged VRRPv3 adverts for ADDRESS
"""

from __future__ import annotations

import json
import socket
import struct
import sys
import time

TIMEOUT = 1.5  # a dropped SYN is the usual answer; lab hosts answer in milliseconds
FAR_AWAY = "someone@far-away.example.org"


def reply(sock_file) -> tuple[int, str]:
    lines = []
    while True:
        line = sock_file.readline()
        if not line:
            raise ConnectionError("connection closed")
        lines.append(line.decode(errors="replace").rstrip())
        if len(line) < 4 or line[3:4] != b"-":
            return int(line[:3]), " ".join(lines)


def smtp_relay(host: str, port: int, proxy_header: bytes | None) -> dict:
    """Try to relay; `accepted` is true only when RCPT TO to a far domain got 2xx."""
    result = {"target": f"{host}:{port}", "stage": "connect", "accepted": False, "replies": []}
    try:
        sock = socket.create_connection((host, port), timeout=TIMEOUT)
    except TimeoutError:
        result["outcome"] = "timeout"
        return result
    except OSError as error:
        result["outcome"] = f"refused: {error}"
        return result
    result["outcome"] = "connected"
    try:
        with sock, sock.makefile("rb") as sock_file:
            if proxy_header:
                sock.sendall(proxy_header)
            steps = [
                ("greeting", None),
                ("ehlo", b"EHLO attacker.example.org\r\n"),
                ("mail", b"MAIL FROM:<spam@news.mailha.test>\r\n"),
                ("rcpt", f"RCPT TO:<{FAR_AWAY}>\r\n".encode()),
            ]
            for stage, command in steps:
                result["stage"] = stage
                if command:
                    sock.sendall(command)
                code, text = reply(sock_file)
                result["replies"].append(text)
                if code >= 400:
                    return result
            result["accepted"] = True
            sock.sendall(b"RSET\r\nQUIT\r\n")
    except (OSError, ConnectionError, ValueError) as error:
        result["replies"].append(f"error: {error}")
    return result


def connect(host: str, port: int) -> dict:
    try:
        with socket.create_connection((host, port), timeout=TIMEOUT):
            return {"target": f"{host}:{port}", "outcome": "open"}
    except TimeoutError:
        return {"target": f"{host}:{port}", "outcome": "timeout"}
    except OSError as error:
        return {"target": f"{host}:{port}", "outcome": f"refused: {error}"}


def dns_query(server: str, name: str) -> dict:
    query = struct.pack("!HHHHHH", 0x4D48, 0x0100, 1, 0, 0, 0)
    query += b"".join(bytes([len(label)]) + label.encode() for label in name.rstrip(".").split("."))
    query += b"\x00" + struct.pack("!HH", 1, 1)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(TIMEOUT)
        sock.sendto(query, (server, 53))
        try:
            sock.recvfrom(512)
            return {"target": f"{server}:53", "outcome": "answered"}
        except TimeoutError:
            return {"target": f"{server}:53", "outcome": "timeout"}


def http_flood(host: str, port: int, count: int, hold: float) -> dict:
    """Open COUNT connections that send half a request; report how many the peer closed."""
    sockets, refused = [], 0
    for _ in range(count):
        try:
            sock = socket.create_connection((host, port), timeout=TIMEOUT)
            sock.sendall(b"GET /active HTTP/1.1\r\nHost: x\r\n")
            sockets.append(sock)
        except OSError:
            refused += 1
    time.sleep(hold)
    closed = 0
    for sock in sockets:
        sock.settimeout(0.2)
        try:
            if sock.recv(1) == b"":
                closed += 1
        except TimeoutError:
            pass
        except OSError:
            closed += 1
        sock.close()
    return {"target": f"{host}:{port}", "opened": len(sockets), "refused": refused, "closed_by_peer": closed}


def checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\x00"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def vrrp_advert(source: str, dest: str, vrid: int, priority: int, address: str) -> bytes:
    """A VRRPv3 advertisement (RFC 5798 5.1), 0.2 s interval, checksum over the IPv4 pseudo-header."""
    body = struct.pack("!BBBBH", 0x31, vrid, priority, 1, 20) + b"\x00\x00" + socket.inet_aton(address)
    pseudo = socket.inet_aton(source) + socket.inet_aton(dest) + struct.pack("!BBH", 0, 112, len(body))
    value = checksum(pseudo + body)
    return body[:6] + struct.pack("!H", value) + body[8:]


def vrrp(source: str, vrid: int, priority: int, rate: float, seconds: float, address: str, dests: list[str]) -> dict:
    sent = 0
    with socket.socket(socket.AF_INET, socket.SOCK_RAW, 112) as sock:
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_TTL, 255)
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 255)
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton(source))
        deadline = time.monotonic() + min(seconds, 30)
        while time.monotonic() < deadline:
            for dest in dests:
                sock.sendto(vrrp_advert(source, dest, vrid, priority, address), (dest, 0))
                sent += 1
            time.sleep(1 / rate)
    return {"source": source, "sent": sent}


def main(argv: list[str]) -> dict:
    action, args = argv[0], argv[1:]
    if action == "proxy-relay":
        host, port, claimed = args[0], int(args[1]), args[2]
        header = f"PROXY TCP4 {claimed} {host} 40000 {port}\r\n".encode()
        return smtp_relay(host, port, header)
    if action == "relay":
        return smtp_relay(args[0], int(args[1]), None)
    if action == "connect":
        return connect(args[0], int(args[1]))
    if action == "dns":
        return dns_query(args[0], args[1])
    if action == "http-flood":
        return http_flood(args[0], int(args[1]), min(int(args[2]), 500), min(float(args[3]), 30))
    if action == "vrrp":
        return vrrp(args[0], int(args[1]), int(args[2]), float(args[3]), float(args[4]), args[5], args[6:])
    raise SystemExit(f"unknown action {action}")


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1:])))
