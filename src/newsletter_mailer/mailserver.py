"""What the SMTP sender and the IMAP reader share about reaching a mail server: the port from
the environment, the TLS trust (system CAs plus a private CA file) and the hint for a refused
certificate, so both say the same thing and name their own variable."""

from __future__ import annotations

import ssl

from newsletter_mailer.errors import NewsletterError

# OpenSSL's verify codes (ssl.SSLCertVerificationError.verify_code) that each need their own hint.
_NAME_MISMATCH = frozenset({62, 64})  # host name, IP address
_UNTRUSTED = frozenset({2, 18, 19, 20, 21})  # issuer unknown, self-signed (in the chain), leaf unverifiable
_EXPIRED, _NOT_YET_VALID = 10, 9


def port(raw: str, variable: str, example: int) -> int:
    """A port number from the environment, or one line naming the variable."""
    try:
        number = int(raw)
    except ValueError:
        raise NewsletterError(f"{variable} '{raw}' is not a port number",
                              hint=f"e.g. export {variable}={example}") from None
    return in_range(number, variable.split("_")[0], example)


def in_range(number: int, protocol: str, example: int) -> int:
    if not 0 < number < 65536:
        raise NewsletterError(f"{protocol} port {number} is out of range", hint=f"use 1-65535, e.g. {example}")
    return number


def tls_context(ca_file: str | None, protocol: str, where: str) -> ssl.SSLContext:
    """The system's trusted CAs plus, when given, ca_file's: in addition to, not instead of, so
    the same settings work with a server whose certificate is public. Read now, before any mail
    moves; `where` says which setting to check."""
    context = ssl.create_default_context()
    if ca_file:
        try:
            context.load_verify_locations(cafile=ca_file)
        except ssl.SSLError:  # an OSError too: first
            raise NewsletterError(f"the {protocol} CA file holds no PEM certificate", path=ca_file,
                                  hint=where) from None
        except OSError as exc:
            raise NewsletterError(f"cannot read the {protocol} CA file: {exc.strerror or exc}", path=ca_file,
                                  hint=where) from None
    return context


def certificate_hint(exc: ssl.SSLCertVerificationError, host: str, ca: str, ca_setting: str | None = None) -> str:
    """What to do about a certificate the check refused, by what actually failed; host and ca
    are the variables to set (e.g. SMTP_HOST, SMTP_CA_FILE), ca_setting the settings-file key."""
    code = exc.verify_code
    if code in _NAME_MISMATCH:
        return f"check {host} is the name on the server's certificate"
    if code in _UNTRUSTED:
        also = f" (or {ca_setting})" if ca_setting else ""
        return (f"the server's certificate is issued by a CA this machine does not trust: set {ca}{also} "
                "to your organisation's CA")
    if code == _EXPIRED:
        return "the server's certificate has expired: it must be renewed on the server, or this machine's clock is wrong"
    if code == _NOT_YET_VALID:
        return "the server's certificate is not valid yet: check this machine's clock"
    return f"check {host}, and {ca} for a private CA"
