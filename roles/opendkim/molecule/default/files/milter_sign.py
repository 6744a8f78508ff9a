#!/usr/bin/python3
"""Send one message through a running milter, as Postfix would, and print the
headers the milter adds. Stdlib only.

Usage: milter_sign.py unix:PATH < message    (RFC 5322 message, CRLF or LF)
       milter_sign.py HOST PORT < message
"""

import socket
import struct
import sys

SMFI_VERSION = 6
ALL_ACTIONS = 0x1FF  # the filter may ask for any modification
NO_PROTOCOL_STEPS_SKIPPED = 0  # every step is sent and answered


def send(sock, command, data=b""):
    sock.sendall(struct.pack("!I", len(data) + 1) + command + data)


def receive(sock):
    length = struct.unpack("!I", read_exactly(sock, 4))[0]
    packet = read_exactly(sock, length)
    return packet[:1], packet[1:]


def read_exactly(sock, size):
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise ConnectionError("milter closed the connection")
        data += chunk
    return data


def expect_continue(sock, step):
    command, _ = receive(sock)
    if command != b"c":
        raise SystemExit(f"milter answered {command!r} to {step}, expected continue")


def main():
    message = sys.stdin.buffer.read().replace(b"\r\n", b"\n")
    head, _, body = message.partition(b"\n\n")
    headers = []
    for line in head.split(b"\n"):
        if line[:1] in (b" ", b"\t") and headers:
            headers[-1][1] += b"\r\n" + line
        else:
            name, _, value = line.partition(b":")
            headers.append([name, value.lstrip()])

    if sys.argv[1].startswith("unix:"):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(10)
        sock.connect(sys.argv[1][5:])
    else:
        sock = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=10)
    with sock:
        send(sock, b"O", struct.pack("!III", SMFI_VERSION, ALL_ACTIONS, NO_PROTOCOL_STEPS_SKIPPED))
        if receive(sock)[0] != b"O":
            raise SystemExit("option negotiation failed")
        send(sock, b"D", b"Ci\x00TESTQUEUEID\x00")  # macros for the connect step: queue id
        send(sock, b"C", b"localhost\x004" + struct.pack("!H", 12345) + b"127.0.0.1\x00")
        expect_continue(sock, "connect")
        send(sock, b"H", b"localhost\x00")
        expect_continue(sock, "helo")
        sender = next((v for n, v in headers if n.lower() == b"from"), b"<>")
        send(sock, b"M", b"<" + sender.strip(b"<>") + b">\x00")
        expect_continue(sock, "mail from")
        send(sock, b"R", b"<recipient@inbox.test>\x00")
        expect_continue(sock, "rcpt to")
        for name, value in headers:
            send(sock, b"L", name + b"\x00" + value + b"\x00")
            expect_continue(sock, "header")
        send(sock, b"N")
        expect_continue(sock, "end of headers")
        send(sock, b"B", body.replace(b"\n", b"\r\n"))
        expect_continue(sock, "body")
        send(sock, b"E")
        while True:
            command, data = receive(sock)
            if command in (b"h", b"i"):  # add header / insert header
                if command == b"i":
                    data = data[4:]  # index
                name, value = data.rstrip(b"\x00").split(b"\x00", 1)
                print(f"{name.decode()}: {value.decode()}")
            elif command in (b"a", b"c"):
                break
            elif command not in (b"m", b"e", b"+", b"-", b"b"):
                raise SystemExit(f"milter answered {command!r} to end of message")
        send(sock, b"Q")


if __name__ == "__main__":
    main()
