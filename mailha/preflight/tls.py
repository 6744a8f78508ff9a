"""The certificate a relay presents after STARTTLS on 25 and 587.

`fetch_certificate` takes it without verifying it (MTAs send
opportunistically, and the lab's relays present self-signed certificates);
`judge_certificate` decides: valid for the sending host name, not expired,
not expiring within the warning window. Whom it is issued by is reported,
not judged.
"""

from __future__ import annotations

import contextlib
import ipaddress
import smtplib
import ssl
from datetime import datetime, timedelta

from cryptography import x509
from cryptography.x509.oid import ExtensionOID, NameOID

from mailha.preflight.result import FAIL, PASS, WARN, Result

PORTS = (25, 587)
CLIENT_NAME = "mailha-preflight"


class CertificateUnavailable(Exception):
    """No certificate: the relay cannot be reached, offers no STARTTLS, or the handshake failed."""


def fetch_certificate(host: str, port: int, timeout: float) -> bytes:
    """The DER certificate `host` presents after STARTTLS on `port`."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # judged afterwards, by name and dates
    try:
        with smtplib.SMTP(host, port, timeout=timeout, local_hostname=CLIENT_NAME) as smtp:
            smtp.ehlo()
            if not smtp.has_extn("starttls"):
                raise CertificateUnavailable(f"port {port} does not offer STARTTLS")
            smtp.starttls(context=context)
            der = smtp.sock.getpeercert(binary_form=True)
            with contextlib.suppress(smtplib.SMTPException, OSError):
                smtp.quit()
    except CertificateUnavailable:
        raise
    except (OSError, smtplib.SMTPException, ssl.SSLError) as exc:
        raise CertificateUnavailable(f"port {port}: {type(exc).__name__}: {exc}"[:200]) from None
    if not der:
        raise CertificateUnavailable(f"port {port} presented no certificate")
    return der


def names_of(certificate: x509.Certificate) -> tuple[list[str], bool]:
    """The DNS names the certificate is for, and whether they come from subjectAltName.

    Without subjectAltName the subject's common name counts, as Postfix's
    and Python's name checks still accept (RFC 6125 section 6.4.4)."""
    try:
        extension = certificate.extensions.get_extension_for_oid(ExtensionOID.SUBJECT_ALTERNATIVE_NAME)
        return [n.lower() for n in extension.value.get_values_for_type(x509.DNSName)], True
    except x509.ExtensionNotFound:
        common = certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        return [str(a.value).lower() for a in common], False


def name_matches(pattern: str, host: str) -> bool:
    """RFC 6125 matching: exact, or a wildcard standing for the whole leftmost label."""
    pattern, host = pattern.rstrip(".").lower(), host.rstrip(".").lower()
    if pattern == host:
        return True
    if pattern.startswith("*.") and "*" not in pattern[2:]:
        label, _, rest = host.partition(".")
        return bool(label) and rest == pattern[2:] and "." in rest
    return False


def _issuer(certificate: x509.Certificate) -> str:
    if certificate.issuer == certificate.subject:
        return "self-signed"
    common = certificate.issuer.get_attributes_for_oid(NameOID.COMMON_NAME)
    return f"issued by {common[0].value if common else certificate.issuer.rfc4514_string()}"


def judge_certificate(
    der: bytes, host_name: str, now: datetime, warning_days: int, *, subject: str, port: int
) -> Result:
    """Valid for `host_name` at `now`, and for `warning_days` more; `now` is timezone-aware."""
    check = "tls"
    try:
        certificate = x509.load_der_x509_certificate(der)
    except ValueError as exc:
        return Result(check, subject, FAIL, f"port {port}: the certificate does not parse: {exc}", _renew(host_name))
    names, from_san = names_of(certificate)
    not_before, not_after = certificate.not_valid_before_utc, certificate.not_valid_after_utc
    source = "subjectAltName" if from_san else "common name (no subjectAltName)"
    shown_names = ", ".join(names) or "no name"
    about = f"port {port}: {_issuer(certificate)}, for {shown_names} ({source}), until {not_after:%Y-%m-%d}"
    if not any(name_matches(n, host_name) for n in names) or _is_address(host_name):
        return Result(
            check,
            subject,
            FAIL,
            f"port {port}: the certificate is not valid for {host_name}; it is for {shown_names}",
            _renew(host_name),
            [about],
        )
    if now < not_before:
        return Result(
            check,
            subject,
            FAIL,
            f"port {port}: the certificate is not valid before {not_before:%Y-%m-%d %H:%M} UTC "
            "(or this host's clock is wrong)",
            _renew(host_name),
            [about],
        )
    if now >= not_after:
        return Result(
            check,
            subject,
            FAIL,
            f"port {port}: the certificate expired on {not_after:%Y-%m-%d}",
            _renew(host_name),
            [about],
        )
    left = not_after - now
    if left <= timedelta(days=warning_days):
        return Result(
            check,
            subject,
            WARN,
            f"port {port}: the certificate expires in {left.days} days ({not_after:%Y-%m-%d})",
            _renew(host_name),
            [about],
        )
    return Result(
        check,
        subject,
        PASS,
        f"port {port}: valid for {host_name} until {not_after:%Y-%m-%d} ({left.days} days)",
        "",
        [about],
    )


def _is_address(name: str) -> bool:
    with contextlib.suppress(ValueError):
        ipaddress.ip_address(name)
        return True
    return False


def _renew(host_name: str) -> str:
    return (
        f"install a certificate for {host_name} (postfix_tls_cert_content and postfix_tls_key_content) "
        "and converge with site.yml"
    )


def check_relay(address: str, host_name: str, now: datetime, warning_days: int, timeout: float, *, subject: str):
    """One Result per port."""
    results = []
    for port in PORTS:
        try:
            der = fetch_certificate(address, port, timeout)
        except CertificateUnavailable as exc:
            results.append(
                Result(
                    "tls",
                    subject,
                    FAIL,
                    f"no certificate from {address}: {exc}",
                    "check that Postfix listens there and offers STARTTLS (smtpd_tls_security_level)",
                )
            )
            continue
        results.append(judge_certificate(der, host_name, now, warning_days, subject=subject, port=port))
    return results
