"""A real authoritative DNS server on loopback, for tests that need DNS answers.

It speaks the protocol over UDP and TCP with dnspython's own wire code, so
the code under test runs its real resolver against it: NXDOMAIN for a name
it does not hold, NOERROR with no answer for a type the name lacks, TC over
UDP for an answer that does not fit (the resolver then retries over TCP),
and a chosen rcode (SERVFAIL, REFUSED) or silence for a name told to.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections import defaultdict

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.query
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset

# Without EDNS a UDP answer is limited to 512 bytes (RFC 1035).
UDP_LIMIT = 512


class LocalDnsServer:
    """Records are added as text, as a zone file writes them:

    server.add("news.example.test", "TXT", '"v=spf1 -all"')
    server.add("10.0.213.10.in-addr.arpa", "PTR", "mta.example.test.")
    """

    def __init__(self) -> None:
        self.records: dict[tuple[dns.name.Name, int], list[str]] = defaultdict(list)
        self.names: set[dns.name.Name] = set()
        self.rcodes: dict[dns.name.Name, int] = {}
        self.silent: set[dns.name.Name] = set()
        self.queries: list[tuple[str, str]] = []
        self._lock = threading.Lock()
        self._udp, self._tcp = self._bind()
        self.port = self._udp.getsockname()[1]
        self._stopping = threading.Event()
        self._threads = [
            threading.Thread(target=self._serve_udp, daemon=True),
            threading.Thread(target=self._serve_tcp, daemon=True),
        ]

    @staticmethod
    def _bind() -> tuple[socket.socket, socket.socket]:
        """A UDP and a TCP socket on the same free port (a port free for UDP may be taken for TCP)."""
        for _ in range(20):
            udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            udp.bind(("127.0.0.1", 0))
            tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                tcp.bind(("127.0.0.1", udp.getsockname()[1]))
            except OSError:
                udp.close()
                tcp.close()
                continue
            tcp.listen(8)
            return udp, tcp
        raise OSError("no port free for both UDP and TCP on 127.0.0.1")

    @staticmethod
    def _name(text: str) -> dns.name.Name:
        return dns.name.from_text(text)

    def add(self, name: str, rdtype: str, *values: str) -> LocalDnsServer:
        owner = self._name(name)
        rdtype_value = dns.rdatatype.from_text(rdtype)
        # A value that is not valid record data fails here, in the test, not in the server's thread.
        dns.rrset.from_text_list(owner, 300, dns.rdataclass.IN, rdtype_value, list(values))
        with self._lock:
            self.names.add(owner)
            self.records[(owner, rdtype_value)].extend(values)
        return self

    def fail(self, name: str, rcode: str) -> None:
        """Answer every query for `name` with this rcode (SERVFAIL, REFUSED)."""
        self.rcodes[self._name(name)] = dns.rcode.from_text(rcode)

    def ignore(self, name: str) -> None:
        """Never answer a query for `name`: the client times out."""
        self.silent.add(self._name(name))

    def answer(self, query: dns.message.Message) -> dns.message.Message | None:
        response = dns.message.make_response(query)
        response.flags |= dns.flags.AA
        question = query.question[0]
        self.queries.append((question.name.to_text(), dns.rdatatype.to_text(question.rdtype)))
        if question.name in self.silent:
            return None
        if question.name in self.rcodes:
            response.set_rcode(self.rcodes[question.name])
            return response
        with self._lock:
            values = list(self.records.get((question.name, question.rdtype), []))
            exists = any(n == question.name or n.is_subdomain(question.name) for n in self.names)
        if values:
            rrset = dns.rrset.from_text_list(question.name, 300, dns.rdataclass.IN, question.rdtype, values)
            response.answer.append(rrset)
        elif not exists:
            response.set_rcode(dns.rcode.NXDOMAIN)
        return response

    def _serve_udp(self) -> None:
        while not self._stopping.is_set():
            try:
                query, _, client = dns.query.receive_udp(self._udp)
            except (OSError, dns.exception.DNSException):
                continue
            response = self.answer(query)
            if response is None:
                continue
            limit = max(UDP_LIMIT, query.payload if query.edns >= 0 else 0)
            wire = response.to_wire()
            if len(wire) > limit:
                response = dns.message.make_response(query)
                response.flags |= dns.flags.TC | dns.flags.AA
                wire = response.to_wire()
            with contextlib.suppress(OSError):
                self._udp.sendto(wire, client)

    def _serve_tcp(self) -> None:
        while not self._stopping.is_set():
            try:
                connection, _ = self._tcp.accept()
            except OSError:
                continue
            with connection:
                connection.settimeout(2)
                try:
                    query, _ = dns.query.receive_tcp(connection)
                    response = self.answer(query)
                    if response is not None:
                        dns.query.send_tcp(connection, response)
                except (OSError, EOFError, dns.exception.DNSException):
                    continue

    def start(self) -> LocalDnsServer:
        for thread in self._threads:
            thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        for sock in (self._udp, self._tcp):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
        for thread in self._threads:
            thread.join(timeout=2)
