"""PayPal webhook signatures, checked offline the way PayPal documents it.

PayPal signs `<transmission id>|<transmission time>|<webhook id>|<CRC-32 of the body>` (the
CRC as an unsigned decimal) with SHA256withRSA, and names the certificate that checks it in
the `paypal-cert-url` header. That header is the sender's word until proven otherwise: the
URL must be HTTPS on one of PayPal's hosts before anything is fetched, and the certificate
must chain to a trusted CA, be within its validity dates and be issued to PayPal's
message-verification name (the rule of PayPal's own Java SDK).
"""

from __future__ import annotations

import base64
import binascii
import re
import threading
import time
import warnings
import zlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime
from pathlib import Path

import certifi
import httpx
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.utils import CryptographyDeprecationWarning
from cryptography.x509.verification import PolicyBuilder, Store, VerificationError

from worker.signing.errors import SignatureError

AUTH_ALGO = "SHA256withRSA"
# The names PayPal issues its webhook-signing certificates to, live and sandbox.
SIGNING_NAMES = (
    "messageverificationcerts.paypal.com",
    "messageverificationcerts.sandbox.paypal.com",
)
FETCH_TIMEOUT_S = 5.0
MAX_CERTIFICATE_BYTES = 64 * 1024  # a PEM chain is a few KiB
MAX_CACHED = 16  # PayPal rotates its certificate rarely; only certificates that load go in
# A URL that failed is not fetched again for a while: forged headers cannot make every request
# a fetch. Bounded, apart from the good certificates, so junk URLs never evict the real one.
FAILURE_TTL_S = 60.0
MAX_FAILURES = 1024
# Fetches at once per process; a request beyond them is answered 503 (PayPal retries it).
MAX_FETCHES = 2
# The path PayPal's certificate URLs have: /v1/notifications/certs/CERT-360caa42-fca2a594-….
_CERT_PATH = re.compile(r"/v1/notifications/certs/CERT-[A-Za-z0-9-]{1,64}")
_MAX_HEADER = 1024
_PEM_CERTIFICATE = re.compile(
    rb"-----BEGIN CERTIFICATE-----\r?\n.+?-----END CERTIFICATE-----", re.DOTALL
)

Fetch = Callable[[str], bytes]


class CertificateUnavailable(Exception):
    """The certificate could not be fetched for a reason that may pass (timeout, 5xx)."""


def signed_message(
    transmission_id: str, transmission_time: str, webhook_id: str, body: bytes
) -> bytes:
    """What PayPal signs; the time exactly as its header carries it."""
    crc = zlib.crc32(body)  # unsigned in Python 3
    return f"{transmission_id}|{transmission_time}|{webhook_id}|{crc}".encode()


def verify_paypal(
    body: bytes,
    headers: Mapping[str, str],
    webhook_id: str,
    certificates: PayPalCertificates,
    now: datetime,
    tolerance: int = 300,
) -> None:
    """Raise SignatureError unless the paypal-* headers carry PayPal's signature of `body`.

    `headers` is looked up with lower-case names (pass Starlette's `Headers` or a dict with
    lower-case keys). The transmission time must be within `tolerance` seconds of `now` (an
    aware datetime), in the past or the future. Cheap checks come first, so a forged request
    fetches nothing; CertificateUnavailable means the check could not be made yet.
    """
    if not webhook_id:
        raise ValueError("no PayPal webhook id configured")
    transmission_id = _ascii_header(headers, "paypal-transmission-id")
    transmission_time = _ascii_header(headers, "paypal-transmission-time")
    signature = _signature(_ascii_header(headers, "paypal-transmission-sig"))
    if _ascii_header(headers, "paypal-auth-algo") != AUTH_ALGO:
        raise SignatureError(f"unsupported paypal-auth-algo (only {AUTH_ALGO})")
    cert_url = _ascii_header(headers, "paypal-cert-url")
    if abs((now - _timestamp(transmission_time)).total_seconds()) > tolerance:
        raise SignatureError("transmission time outside the tolerance")
    key = certificates.signing_key(cert_url, now)
    message = signed_message(transmission_id, transmission_time, webhook_id, body)
    try:
        key.verify(signature, message, padding.PKCS1v15(), hashes.SHA256())
    except InvalidSignature:
        raise SignatureError("no valid signature") from None


class PayPalCertificates:
    """PayPal's signing certificates by URL: fetched once per process, checked at every use.

    `fetch` takes an already allowed URL and returns the PEM it serves (the leaf first, then
    any intermediates); it raises CertificateUnavailable for a failure that may pass and
    SignatureError for one that will not. Tests pass their own.
    """

    def __init__(
        self,
        hosts: Iterable[str],
        roots: Sequence[x509.Certificate],
        fetch: Fetch | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._hosts = frozenset(host.lower() for host in hosts)
        self._store = Store(list(roots))  # an empty list raises: nothing could ever verify
        self._fetch = fetch or fetch_certificate
        self._clock = clock
        self._cache: dict[str, list[x509.Certificate]] = {}
        self._failed: dict[str, tuple[float, SignatureError | CertificateUnavailable]] = {}
        self._fetches = threading.BoundedSemaphore(MAX_FETCHES)
        self._lock = threading.Lock()  # receivers verify in a thread pool

    def signing_key(self, url: str, now: datetime) -> rsa.RSAPublicKey:
        """The public key of the certificate at `url`, once the URL and the chain are trusted.

        Only a certificate that verified is kept (so junk URLs never evict PayPal's); a URL
        that failed is refused without a fetch for FAILURE_TTL_S.
        """
        self.check_url(url)
        with self._lock:
            cached = self._cache.get(url)
            failed = self._failed.get(url)
        if cached is not None:
            return self._trusted_key(cached, now)
        if failed is not None and failed[0] > self._clock():
            raise _again(failed[1])
        # Outside the lock: a slow fetch must not hold up the others; but only a few at once.
        if not self._fetches.acquire(blocking=False):
            raise CertificateUnavailable("too many PayPal certificate fetches at once")
        try:
            chain = self._load(url)
            key = self._trusted_key(chain, now)
        except (SignatureError, CertificateUnavailable) as error:
            with self._lock:
                while len(self._failed) >= MAX_FAILURES:
                    self._failed.pop(next(iter(self._failed)))
                self._failed[url] = (self._clock() + FAILURE_TTL_S, error)
            raise
        finally:
            self._fetches.release()
        with self._lock:
            self._failed.pop(url, None)
            while len(self._cache) >= MAX_CACHED:
                self._cache.pop(next(iter(self._cache)))
            self._cache[url] = chain
        return key

    def _trusted_key(self, chain: list[x509.Certificate], now: datetime) -> rsa.RSAPublicKey:
        if not chain:
            raise SignatureError("paypal-cert-url does not serve a PEM certificate")
        leaf, *intermediates = chain
        if now < leaf.not_valid_before_utc:
            raise SignatureError("certificate is not valid yet")
        if now > leaf.not_valid_after_utc:
            raise SignatureError("certificate expired")
        verifier = (
            PolicyBuilder()
            .store(self._store)
            .time(now)
            .build_server_verifier(x509.DNSName(_signing_name(leaf)))
        )
        try:
            verifier.verify(leaf, intermediates)
        except VerificationError:
            raise SignatureError("certificate does not chain to a trusted CA") from None
        key = leaf.public_key()
        if not isinstance(key, rsa.RSAPublicKey):
            raise SignatureError("certificate key is not RSA")
        return key

    def check_url(self, url: str) -> None:
        """Refuse, before any fetch, a URL that is not HTTPS on a configured PayPal host."""
        try:
            # httpx parses it here as it will when fetching: no two readings of one URL.
            parts = httpx.URL(url)
            port = parts.port
        except (httpx.InvalidURL, ValueError):
            raise SignatureError("malformed paypal-cert-url header") from None
        if parts.scheme != "https":
            raise SignatureError("paypal-cert-url must use https")
        if parts.host not in self._hosts or parts.userinfo or port not in (None, 443):
            raise SignatureError("paypal-cert-url is not on an allowed PayPal host")
        if parts.query or parts.fragment or not _CERT_PATH.fullmatch(parts.path):
            raise SignatureError("paypal-cert-url is not a PayPal certificate URL")

    def _load(self, url: str) -> list[x509.Certificate]:
        pem = self._fetch(url)
        try:
            return x509.load_pem_x509_certificates(pem)
        except ValueError:
            raise SignatureError("paypal-cert-url does not serve a PEM certificate") from None


def _again(error: SignatureError | CertificateUnavailable) -> Exception:
    """A fresh copy of a remembered failure (one exception object is never raised twice)."""
    if isinstance(error, SignatureError):
        return SignatureError(error.reason)
    return CertificateUnavailable(str(error))


def fetch_certificate(url: str) -> bytes:
    """GET `url` with a short timeout, no redirects and a size limit."""
    chunks: list[bytes] = []
    size = 0
    try:
        with httpx.stream("GET", url, timeout=FETCH_TIMEOUT_S, follow_redirects=False) as answer:
            if answer.status_code >= 500 or answer.status_code == 429:
                raise CertificateUnavailable(f"certificate host answered {answer.status_code}")
            if answer.status_code != 200:
                raise SignatureError(
                    f"certificate could not be fetched (HTTP {answer.status_code})"
                )
            for chunk in answer.iter_bytes():
                size += len(chunk)
                if size > MAX_CERTIFICATE_BYTES:
                    raise SignatureError("certificate response is too large")
                chunks.append(chunk)
    except httpx.HTTPError as error:
        raise CertificateUnavailable(
            f"certificate could not be fetched ({type(error).__name__})"
        ) from None
    return b"".join(chunks)


def load_roots(bundle: Path | None = None) -> list[x509.Certificate]:
    """The trust roots: a PEM bundle, or by default certifi's (the one httpx trusts)."""
    path = Path(certifi.where()) if bundle is None else bundle
    try:
        pem = path.read_bytes()
    except OSError as error:
        raise ValueError(f"cannot read the CA bundle {path}: {error.strerror}") from None
    roots = []
    for block in _PEM_CERTIFICATE.findall(pem):
        # One at a time: a root that this cryptography cannot parse (certifi carries one
        # with a negative serial number, which it now warns about) must not lose all others.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", CryptographyDeprecationWarning)
            try:
                roots.append(x509.load_pem_x509_certificate(block))
            except ValueError:
                continue
    if not roots:
        raise ValueError(f"no certificate in the CA bundle {path}")
    return roots


def _signing_name(leaf: x509.Certificate) -> str:
    try:
        names = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        names = None
    dns = set(names.get_values_for_type(x509.DNSName)) if names is not None else set()
    for name in SIGNING_NAMES:
        if name in dns:
            return name
    raise SignatureError("certificate is not issued to PayPal's webhook-signing name")


def _ascii_header(headers: Mapping[str, str], name: str) -> str:
    value = headers.get(name)
    if not value:
        raise SignatureError(f"missing {name} header")
    # PayPal sends ASCII; anything else (or an oversized value) cannot be its signature.
    if not value.isascii() or len(value) > _MAX_HEADER:
        raise SignatureError(f"malformed {name} header")
    return value


def _timestamp(value: str) -> datetime:
    try:
        sent_at = datetime.fromisoformat(value)
    except ValueError:
        raise SignatureError("malformed paypal-transmission-time header") from None
    if sent_at.tzinfo is None:
        raise SignatureError("paypal-transmission-time has no time zone")
    return sent_at


def _signature(value: str) -> bytes:
    try:
        return base64.b64decode(value, validate=True)
    except binascii.Error:
        raise SignatureError("malformed paypal-transmission-sig header") from None
