"""DKIM: our own signature on each SMTP and outbox message ([delivery.dkim]), and new keys.

Gmail and Yahoo junk bulk mail without a DKIM signature aligned with the From domain; a relay
that does not sign (a small organisation's own server) needs the sender to. dkimpy signs, each
message once, after its headers are final (providers/base.WholeMessages.message); the key comes
from DKIM_PRIVATE_KEY or key_file (0600, read never through a link) and is loaded and checked
once per send, before anything goes out. `cryptography` reads and makes the PEM keys.
"""

from __future__ import annotations

import base64
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Mapping

from newsletter_mailer.errors import NewsletterError

if TYPE_CHECKING:  # pragma: no cover
    from newsletter_mailer.settings import DkimSettings

ENV = "DKIM_PRIVATE_KEY"
ALGORITHMS = ("rsa", "ed25519")
RSA_BITS = 2048
MIN_RSA_BITS = 1024  # receivers ignore shorter keys (RFC 8301)
# Signed even where absent (a null header in h=): nobody can add one later without breaking it.
HEADERS = (b"from", b"to", b"subject", b"date", b"message-id", b"reply-to", b"list-id", b"list-unsubscribe",
           b"list-unsubscribe-post", b"mime-version", b"content-type", b"x-newsletter-issue")
CANONICALIZE = (b"relaxed", b"simple")  # our bodies are QP with no trailing spaces: relaxed would add nothing


@dataclass(frozen=True)
class Key:
    """A private key in the form dkimpy takes, and what to publish for it."""

    kind: str        # k= : "rsa" or "ed25519"
    secret: bytes = b""  # PKCS#1 PEM (rsa) or the base64 seed (ed25519): never printed
    public: str = ""     # p= : base64

    @property
    def algorithm(self) -> bytes:
        return b"rsa-sha256" if self.kind == "rsa" else b"ed25519-sha256"

    def record(self) -> str:
        """The TXT record to publish at <selector>._domainkey.<domain>."""
        return f"v=DKIM1; k={self.kind}; p={self.public}"

    def __repr__(self) -> str:  # never the secret
        return f"Key({self.kind}, p={self.public[:12]}…)"


def parse_key(pem: bytes, where: str) -> Key:
    """An RSA (≥1024 bits) or Ed25519 PEM private key; anything else is one line naming `where`."""
    from cryptography.hazmat.primitives import serialization as ser
    from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

    hint = f"make one with `newsletter dkim keygen --selector S` (rsa {RSA_BITS} or ed25519)"
    try:
        key = ser.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError):
        raise NewsletterError(f"{where} is not an unencrypted PEM private key", hint=hint) from None
    except Exception:  # noqa: BLE001 - cryptography's UnsupportedAlgorithm and friends: same answer
        raise NewsletterError(f"{where} is not a key DKIM can use", hint=hint) from None
    if isinstance(key, rsa.RSAPrivateKey):
        if key.key_size < MIN_RSA_BITS:
            raise NewsletterError(f"{where} is a {key.key_size}-bit RSA key: receivers ignore DKIM keys under "
                                  f"{MIN_RSA_BITS} bits", hint=hint)
        secret = key.private_bytes(ser.Encoding.PEM, ser.PrivateFormat.TraditionalOpenSSL, ser.NoEncryption())
        public = key.public_key().public_bytes(ser.Encoding.DER, ser.PublicFormat.SubjectPublicKeyInfo)
        return Key("rsa", secret, base64.b64encode(public).decode("ascii"))
    if isinstance(key, ed25519.Ed25519PrivateKey):
        seed = key.private_bytes(ser.Encoding.Raw, ser.PrivateFormat.Raw, ser.NoEncryption())
        public = key.public_key().public_bytes(ser.Encoding.Raw, ser.PublicFormat.Raw)
        return Key("ed25519", base64.b64encode(seed), base64.b64encode(public).decode("ascii"))
    raise NewsletterError(f"{where} is a {type(key).__name__.removeprefix('_')} key: DKIM signs with RSA or Ed25519",
                          hint=hint)


def load_key(dkim: DkimSettings, env: Mapping[str, str]) -> Key:
    """DKIM_PRIVATE_KEY, else [delivery.dkim] key_file (0600, not a link)."""
    from newsletter_mailer.files import read_no_follow

    value = (env.get(ENV) or "").strip()
    if value:
        return parse_key(value.replace("\\n", "\n").encode("utf-8"), ENV)
    if not dkim.key_file:
        raise NewsletterError(f"no DKIM key: set {ENV} or key_file", field="delivery.dkim.key_file",
                              hint="make one with `newsletter dkim keygen --selector " + dkim.selector + "`")
    path = Path(dkim.key_file)
    try:
        st = os.lstat(path)
        if stat.S_ISLNK(st.st_mode):
            raise NewsletterError("the DKIM key is a symbolic link", path=path, field="delivery.dkim.key_file",
                                  hint="point key_file at the file itself")
        if st.st_mode & 0o077:
            raise NewsletterError(f"the DKIM key can be read by others (mode {stat.S_IMODE(st.st_mode):04o})",
                                  path=path, field="delivery.dkim.key_file", hint=f"run chmod 600 {path}")
        pem = read_no_follow(path)
    except OSError as exc:
        raise NewsletterError(f"cannot read the DKIM key: {exc.strerror}", path=path,
                              field="delivery.dkim.key_file") from None
    return parse_key(pem, str(path))


class Signer:
    """message bytes -> the same bytes under a DKIM-Signature header."""

    def __init__(self, dkim: DkimSettings, key: Key):
        self.domain = dkim.domain.lower().encode("ascii")
        self.selector = dkim.selector.encode("ascii")
        self.key = key
        if key.kind == "rsa":
            rsa_by_openssl(key.secret)

    def __call__(self, message: bytes) -> bytes:
        import dkim

        k = self.key
        # dkimpy parses the header section; the body it would split into lines and join again with
        # CRLF, which for our messages (CRLF throughout) gives back the same bytes at ~1 ms for
        # 64 KB: it gets them as they are.
        head, sep, body = message.partition(b"\r\n\r\n")
        d = dkim.DKIM(head + sep)
        d.body = body
        return d.sign(self.selector, self.domain, k.secret, signature_algorithm=k.algorithm,
                      include_headers=HEADERS, canonicalize=CANONICALIZE) + message


_OPENSSL: dict[int, object] = {}  # modulus -> cryptography's private key, for the keys this process signs with


def rsa_by_openssl(pem: bytes) -> None:
    """dkimpy computes RSA in pure Python: ~7 ms of a message's ~8 ms (benchmarks/RESULTS.md).
    RSASSA-PKCS1-v1_5 is deterministic, so OpenSSL (through cryptography) makes the very same
    signature bytes in ~0.3 ms: dkimpy keeps canonicalisation, hashing and the header, and only
    its private-key operation is handed over, for the keys registered here (any other key, or a
    hash other than sha256, still goes to dkimpy's own code)."""
    import dkim
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives import serialization as ser
    from cryptography.hazmat.primitives.asymmetric import padding, utils

    key = ser.load_pem_private_key(pem, password=None)
    _OPENSSL[key.private_numbers().public_numbers.n] = key  # type: ignore[union-attr]
    if getattr(dkim.RSASSA_PKCS1_v1_5_sign, "by_openssl", False):
        return
    pure = dkim.RSASSA_PKCS1_v1_5_sign

    def sign(hash, private_key):  # noqa: A002 - dkimpy's names
        known = _OPENSSL.get(private_key["modulus"])
        if known is None or hash.name.lower() != "sha256":
            return pure(hash, private_key)
        return known.sign(hash.digest(), padding.PKCS1v15(), utils.Prehashed(hashes.SHA256()))

    sign.by_openssl = True  # type: ignore[attr-defined]
    dkim.RSASSA_PKCS1_v1_5_sign = sign


def signer_for(dkim: DkimSettings | None, provider: str, env: Mapping[str, str]) -> tuple[Signer | None, str | None]:
    """(signer, note) for a send: none without [delivery.dkim]; none (and a note) for SendGrid."""
    if dkim is None:
        return None, None
    if provider == "sendgrid":
        return None, ("delivery.dkim ignored: SendGrid signs with its own keys "
                      "(set up Sender Authentication; `newsletter doctor` checks s1/s2._domainkey)")
    return Signer(dkim, load_key(dkim, env)), None


def keygen(algorithm: str = "rsa") -> tuple[bytes, Key]:
    """(PKCS#8 PEM to keep, the Key): RSA 2048 bits or Ed25519."""
    from cryptography.hazmat.primitives import serialization as ser
    from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

    if algorithm not in ALGORITHMS:
        raise NewsletterError(f"unknown DKIM algorithm '{algorithm}'", field="--algorithm", hint="use rsa or ed25519")
    private = rsa.generate_private_key(public_exponent=65537, key_size=RSA_BITS) if algorithm == "rsa" \
        else ed25519.Ed25519PrivateKey.generate()
    pem = private.private_bytes(ser.Encoding.PEM, ser.PrivateFormat.PKCS8, ser.NoEncryption())
    return pem, parse_key(pem, "the new key")


def txt_chunks(record: str) -> str:
    """The record as zone-file strings of at most 255 characters (an RSA key is longer than one)."""
    return " ".join(f'"{record[i:i + 255]}"' for i in range(0, len(record), 255))
