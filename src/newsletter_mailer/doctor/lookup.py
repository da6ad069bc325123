"""DNS for the doctor: dnspython's resolver, at the system's servers or at --nameserver IP[:PORT].

A name that does not exist and a name without the asked type are both "no records" (what a
receiving server concludes too); a timeout or a refusal is a `LookupProblem`, which the check
that asked turns into its own failure line.
"""

from __future__ import annotations

import ipaddress
from contextlib import contextmanager
from typing import Iterator

import dns.exception
import dns.resolver

from newsletter_mailer.errors import NewsletterError

TIMEOUT = 5.0


class LookupProblem(Exception):
    """DNS did not answer (timeout, SERVFAIL, refused): nothing can be concluded."""


def parse_nameserver(text: str) -> tuple[str, int]:
    """IP, IP:PORT or [IPv6]:PORT; anything else is one line for --nameserver."""
    host, port = text.strip(), "53"
    if host.startswith("[") and "]" in host:
        host, _, rest = host[1:].partition("]")
        port = rest.removeprefix(":") or "53"
    elif host.count(":") == 1:
        host, port = host.split(":")
    try:
        ipaddress.ip_address(host)
        number = int(port)
        if not 0 < number < 65536:
            raise ValueError
    except ValueError:
        raise NewsletterError(f"'{text}' is not a name server address", field="--nameserver",
                              hint="give an IP address, optionally with a port: 192.0.2.53, 127.0.0.1:5353, [::1]:53") from None
    return host, number


def resolver(nameserver: str | None = None) -> dns.resolver.Resolver:
    """The system's resolver, or one that asks only `nameserver`."""
    if nameserver is None:
        r = dns.resolver.Resolver()
    else:
        host, port = parse_nameserver(nameserver)
        r = dns.resolver.Resolver(configure=False)
        r.nameservers, r.port = [host], port
    r.lifetime = r.timeout = TIMEOUT
    return r


class Lookup:
    """Cached look-ups of one doctor run."""

    def __init__(self, res: dns.resolver.Resolver):
        self.resolver = res
        self._cache: dict[tuple[str, str], list] = {}

    def records(self, name: str, rdtype: str) -> list:
        key = (name.lower().rstrip("."), rdtype)
        if key not in self._cache:
            try:
                self._cache[key] = list(self.resolver.resolve(key[0] + ".", rdtype, search=False))
            except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
                self._cache[key] = []
            except dns.exception.Timeout:
                raise LookupProblem(f"no answer for {key[0]} {rdtype} within {TIMEOUT:g} s") from None
            except dns.exception.DNSException as exc:
                raise LookupProblem(f"the look-up of {key[0]} {rdtype} failed ({type(exc).__name__})") from None
        return self._cache[key]

    def txt(self, name: str) -> list[str]:
        """Each TXT record's strings joined (as SPF, DKIM and DMARC read them)."""
        return [b"".join(r.strings).decode("utf-8", "replace") for r in self.records(name, "TXT")]

    def addresses(self, name: str) -> list[str]:
        return [r.address for r in self.records(name, "A")] + [r.address for r in self.records(name, "AAAA")]

    @contextmanager
    def as_default(self) -> Iterator[None]:
        """pyspf asks dnspython's default resolver: this one, for the duration."""
        import warnings

        before = dns.resolver.default_resolver
        dns.resolver.default_resolver = self.resolver
        try:
            with warnings.catch_warnings():  # pyspf calls the old dns.resolver.query
                warnings.simplefilter("ignore", DeprecationWarning)
                yield
        finally:
            dns.resolver.default_resolver = before
