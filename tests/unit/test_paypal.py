"""PayPal: events parsed to payment changes, signatures checked offline, the receiver end to end.

PayPal publishes no offline-verifiable signature vector (tests/fixtures/MANIFEST.md), so the
tests make their own PKI: a test CA, and leaf certificates issued to PayPal's signing name,
valid, expired, self-signed or from a CA nobody trusts. Each PayPal sample event is signed
the way PayPal signs, and the certificate is served by a fake fetch (or, for the real fetch,
a loopback HTTP server).
"""

from __future__ import annotations

import asyncio
import json
import threading
import zlib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from fastapi import FastAPI
from fastapi.testclient import TestClient
from httpx import Response
from pydantic import ValidationError
from sqlalchemy import select

from domain.events import Action, MalformedEvent, PaymentEvent
from domain.outcomes import Outcome, OutcomeKind, Reason
from domain.providers import parse_delivery, paypal
from tasks.confirming import confirm_payment
from tasks.migrate import upgrade
from tasks.processing import process_delivery
from tasks.registering import create_order, create_payment
from tasks.storage import queries
from tasks.storage.tables import deliveries
from tests.fixture_files import FIXTURES, fixture_bytes, fixture_json
from tests.unit.committed import CommittedPublisher
from tests.unit.common import NOW
from worker.runtime import ProcessRuntime
from worker.settings import Settings
from worker.signing.errors import SignatureError
from worker.signing.paypal import (
    FAILURE_TTL_S,
    MAX_CACHED,
    MAX_FETCHES,
    SIGNING_NAMES,
    CertificateUnavailable,
    PayPalCertificates,
    fetch_certificate,
    load_roots,
    sign_paypal,
    signed_message,
    verify_paypal,
)
from worker.signing.stripe import sign_stripe
from worker.taskqueue.app import create_app
from worker.web.app import create_http_app

SENT_AT = "2024-05-01T12:00:00Z"
WEBHOOK_ID = "1JE4291016473214C"
CERT_URL = "https://api.paypal.com/v1/notifications/certs/CERT-360caa42-fca2a594-test"
HOSTS = ("api.paypal.com", "api.sandbox.paypal.com")
LIVE_NAME = SIGNING_NAMES[0]
PAYPAL_FIXTURES = sorted(
    path.name for path in (FIXTURES / "paypal").glob("*.json") if path.name[0].isupper()
)


# --- a test PKI ---------------------------------------------------------------------------


def _key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _usage(*, ca: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=not ca,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=ca,
        crl_sign=ca,
        encipher_only=False,
        decipher_only=False,
    )


@dataclass(frozen=True)
class Issued:
    key: rsa.RSAPrivateKey
    cert: x509.Certificate

    @property
    def pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)


def issue(
    common_name: str,
    issuer: Issued | None,
    *,
    ca: bool,
    valid: tuple[datetime, datetime] = (NOW - timedelta(days=30), NOW + timedelta(days=60)),
    dns: tuple[str, ...] = (),
    key: rsa.RSAPrivateKey | None = None,
) -> Issued:
    """A certificate as a CA issues one; `issuer` None makes it self-signed."""
    key = key or _key()
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    signer_key = key if issuer is None else issuer.key
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject if issuer is None else issuer.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(valid[0])
        .not_valid_after(valid[1])
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .add_extension(_usage(ca=ca), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(signer_key.public_key()),
            critical=False,
        )
    )
    if not ca:
        builder = builder.add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
        ).add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in dns]), critical=False)
    return Issued(key, builder.sign(signer_key, hashes.SHA256()))


@dataclass(frozen=True)
class Pki:
    root: Issued
    intermediate: Issued
    leaf: Issued  # issued by the root, to PayPal's live signing name
    chained_leaf: Issued  # issued by the intermediate
    sandbox_leaf: Issued
    expired_leaf: Issued
    future_leaf: Issued
    wrong_name_leaf: Issued
    self_signed_leaf: Issued
    rogue_leaf: Issued  # issued by a CA nobody trusts


@pytest.fixture(scope="module")
def pki() -> Pki:
    root = issue(
        "payhook test root CA",
        None,
        ca=True,
        valid=(NOW - timedelta(days=365), NOW + timedelta(days=3650)),
    )
    intermediate = issue("payhook test intermediate CA", root, ca=True)
    rogue_ca = issue("rogue CA", None, ca=True)
    key = _key()  # one key for most leaves: only the certificate around it differs
    return Pki(
        root=root,
        intermediate=intermediate,
        leaf=issue(LIVE_NAME, root, ca=False, dns=(LIVE_NAME,), key=key),
        chained_leaf=issue(LIVE_NAME, intermediate, ca=False, dns=(LIVE_NAME,), key=key),
        sandbox_leaf=issue(SIGNING_NAMES[1], root, ca=False, dns=(SIGNING_NAMES[1],), key=key),
        expired_leaf=issue(
            LIVE_NAME,
            root,
            ca=False,
            dns=(LIVE_NAME,),
            key=key,
            valid=(NOW - timedelta(days=400), NOW - timedelta(days=35)),
        ),
        future_leaf=issue(
            LIVE_NAME,
            root,
            ca=False,
            dns=(LIVE_NAME,),
            key=key,
            valid=(NOW + timedelta(days=1), NOW + timedelta(days=400)),
        ),
        wrong_name_leaf=issue("shop.example", root, ca=False, dns=("shop.example",), key=key),
        self_signed_leaf=issue(LIVE_NAME, None, ca=False, dns=(LIVE_NAME,), key=key),
        rogue_leaf=issue(LIVE_NAME, rogue_ca, ca=False, dns=(LIVE_NAME,), key=key),
    )


@dataclass
class FakeCertHost:
    """PayPal's certificate host as tests see it: a URL -> PEM map that records each fetch."""

    served: dict[str, bytes] = field(default_factory=dict)
    fetched: list[str] = field(default_factory=list)
    down: bool = False

    def __call__(self, url: str) -> bytes:
        self.fetched.append(url)
        if self.down:
            raise CertificateUnavailable("certificate host answered 503")
        if url not in self.served:
            raise SignatureError("certificate could not be fetched (HTTP 404)")
        return self.served[url]


@pytest.fixture
def host(pki: Pki) -> FakeCertHost:
    return FakeCertHost({CERT_URL: pki.leaf.pem})


@pytest.fixture
def certificates(pki: Pki, host: FakeCertHost) -> PayPalCertificates:
    return PayPalCertificates(HOSTS, [pki.root.cert], fetch=host)


def signed(
    body: bytes,
    key: rsa.RSAPrivateKey,
    *,
    cert_url: str = CERT_URL,
    webhook_id: str = WEBHOOK_ID,
    transmission_id: str = "69cd13f0-d67a-11e5-baa3-778b53f4ae55",
    transmission_time: str = SENT_AT,
) -> dict[str, str]:
    return sign_paypal(
        body,
        key,
        cert_url=cert_url,
        webhook_id=webhook_id,
        transmission_id=transmission_id,
        transmission_time=transmission_time,
    )


def refusal(
    body: bytes,
    headers: dict[str, str],
    certificates: PayPalCertificates,
    *,
    webhook_id: str = WEBHOOK_ID,
    now: datetime = NOW,
) -> str:
    with pytest.raises(SignatureError) as refused:
        verify_paypal(body, headers, webhook_id, certificates, now)
    reason = refused.value.reason
    assert "\n" not in reason
    return reason


# --- the signed message -------------------------------------------------------------------


def test_the_signed_message_is_id_time_webhook_id_and_unsigned_crc32() -> None:
    # "123456789" is CRC-32's check value, 0xCBF43926: above 2**31, so a signed CRC shows.
    assert zlib.crc32(b"123456789") == 0xCBF43926
    assert signed_message("tid", SENT_AT, "WH1", b"123456789") == (
        f"tid|{SENT_AT}|WH1|3421780262".encode()
    )


# --- verification ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", PAYPAL_FIXTURES)
def test_each_sample_event_signed_as_paypal_does_verifies(
    name: str, pki: Pki, certificates: PayPalCertificates
) -> None:
    body = fixture_bytes(f"paypal/{name}")
    verify_paypal(body, signed(body, pki.leaf.key), WEBHOOK_ID, certificates, NOW)


def test_an_altered_body_fails(pki: Pki, certificates: PayPalCertificates) -> None:
    body = fixture_bytes("paypal/PAYMENT.CAPTURE.COMPLETED.v2.json")
    headers = signed(body, pki.leaf.key)
    altered = body.replace(b'"2.51"', b'"25.10"')
    assert refusal(altered, headers, certificates) == "no valid signature"


def test_an_altered_transmission_id_fails(pki: Pki, certificates: PayPalCertificates) -> None:
    body = fixture_bytes("paypal/PAYMENT.CAPTURE.COMPLETED.v2.json")
    headers = {**signed(body, pki.leaf.key), "paypal-transmission-id": "another-transmission"}
    assert refusal(body, headers, certificates) == "no valid signature"


def test_an_altered_transmission_time_fails(pki: Pki, certificates: PayPalCertificates) -> None:
    body = fixture_bytes("paypal/PAYMENT.CAPTURE.COMPLETED.v2.json")
    headers = {**signed(body, pki.leaf.key), "paypal-transmission-time": "2024-05-01T12:00:01Z"}
    assert refusal(body, headers, certificates) == "no valid signature"


def test_an_event_signed_for_another_webhook_fails(
    pki: Pki, certificates: PayPalCertificates
) -> None:
    body = fixture_bytes("paypal/PAYMENT.CAPTURE.COMPLETED.v2.json")
    headers = signed(body, pki.leaf.key, webhook_id="8PT597110X687430L")
    assert refusal(body, headers, certificates) == "no valid signature"


def test_a_signature_by_another_key_fails(pki: Pki, certificates: PayPalCertificates) -> None:
    body = fixture_bytes("paypal/PAYMENT.CAPTURE.COMPLETED.v2.json")
    assert refusal(body, signed(body, pki.root.key), certificates) == "no valid signature"


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://api.paypal.com/v1/notifications/certs/CERT-1", "paypal-cert-url must use https"),
        ("https://paypal.example/v1/notifications/certs/CERT-1", "not on an allowed PayPal host"),
        ("https://api.paypal.com.evil.example/cert", "not on an allowed PayPal host"),
        ("https://api.paypal.com@evil.example/cert", "not on an allowed PayPal host"),
        ("https://user@api.paypal.com/cert", "not on an allowed PayPal host"),
        ("https://api.paypal.com:8443/cert", "not on an allowed PayPal host"),
        ("https://127.0.0.1/cert", "not on an allowed PayPal host"),
        ("cert_url", "paypal-cert-url must use https"),  # as in PayPal's API example
        ("https://[::1/cert", "malformed paypal-cert-url header"),
        ("https://api.paypal.com/v1/oauth2/token", "not a PayPal certificate URL"),
        ("https://api.paypal.com/v1/notifications/certs/../../x", "not a PayPal certificate URL"),
        ("https://api.paypal.com/v1/notifications/certs/CERT-1?x=1", "not a PayPal certificate"),
        ("https://api.paypal.com/v1/notifications/certs/CERT-1/more", "not a PayPal certificate"),
    ],
)
def test_a_cert_url_off_paypals_https_hosts_is_refused_without_fetching(
    url: str, reason: str, pki: Pki, host: FakeCertHost, certificates: PayPalCertificates
) -> None:
    host.served[url] = pki.leaf.pem
    body = fixture_bytes("paypal/PAYMENT.CAPTURE.COMPLETED.v2.json")
    assert reason in refusal(body, signed(body, pki.leaf.key, cert_url=url), certificates)
    assert host.fetched == []


def test_the_sandbox_host_and_certificate_are_accepted(pki: Pki, host: FakeCertHost) -> None:
    url = "https://api.sandbox.paypal.com/v1/notifications/certs/CERT-sandbox"
    host.served[url] = pki.sandbox_leaf.pem
    certificates = PayPalCertificates(HOSTS, [pki.root.cert], fetch=host)
    body = fixture_bytes("paypal/PAYMENT.CAPTURE.DENIED.v2.json")
    verify_paypal(body, signed(body, pki.leaf.key, cert_url=url), WEBHOOK_ID, certificates, NOW)


def test_a_host_left_out_of_the_settings_is_refused(pki: Pki, host: FakeCertHost) -> None:
    certificates = PayPalCertificates(["api.paypal.com"], [pki.root.cert], fetch=host)
    url = "https://api.sandbox.paypal.com/v1/notifications/certs/CERT-sandbox"
    body = fixture_bytes("paypal/PAYMENT.CAPTURE.DENIED.v2.json")
    reason = refusal(body, signed(body, pki.leaf.key, cert_url=url), certificates)
    assert reason == "paypal-cert-url is not on an allowed PayPal host"
    assert host.fetched == []


@pytest.mark.parametrize(
    ("leaf", "reason"),
    [
        ("expired_leaf", "certificate expired"),
        ("future_leaf", "certificate is not valid yet"),
        ("rogue_leaf", "certificate does not chain to a trusted CA"),
        ("self_signed_leaf", "certificate does not chain to a trusted CA"),
        ("wrong_name_leaf", "certificate is not issued to PayPal's webhook-signing name"),
    ],
)
def test_a_certificate_paypal_could_not_have_served_fails(
    leaf: str, reason: str, pki: Pki, host: FakeCertHost, certificates: PayPalCertificates
) -> None:
    issued: Issued = getattr(pki, leaf)
    host.served[CERT_URL] = issued.pem
    body = fixture_bytes("paypal/PAYMENT.CAPTURE.COMPLETED.v2.json")
    # Signed with the certificate's own key: only the certificate is wrong.
    assert refusal(body, signed(body, issued.key), certificates) == reason


def test_a_certificate_expired_since_it_was_cached_fails(
    pki: Pki, certificates: PayPalCertificates
) -> None:
    body = fixture_bytes("paypal/PAYMENT.CAPTURE.COMPLETED.v2.json")
    verify_paypal(body, signed(body, pki.leaf.key), WEBHOOK_ID, certificates, NOW)
    later = pki.leaf.cert.not_valid_after_utc + timedelta(minutes=1)
    headers = signed(body, pki.leaf.key, transmission_time=later.isoformat())
    assert refusal(body, headers, certificates, now=later) == "certificate expired"


def test_a_chain_served_with_its_intermediate_verifies(
    pki: Pki, host: FakeCertHost, certificates: PayPalCertificates
) -> None:
    host.served[CERT_URL] = pki.chained_leaf.pem + pki.intermediate.pem
    body = fixture_bytes("paypal/PAYMENT.CAPTURE.REFUNDED.v2.json")
    verify_paypal(body, signed(body, pki.chained_leaf.key), WEBHOOK_ID, certificates, NOW)


def test_a_leaf_served_without_its_intermediate_fails(
    pki: Pki, host: FakeCertHost, certificates: PayPalCertificates
) -> None:
    host.served[CERT_URL] = pki.chained_leaf.pem
    body = fixture_bytes("paypal/PAYMENT.CAPTURE.REFUNDED.v2.json")
    reason = refusal(body, signed(body, pki.chained_leaf.key), certificates)
    assert reason == "certificate does not chain to a trusted CA"


def test_a_url_that_serves_no_pem_fails(
    pki: Pki, host: FakeCertHost, certificates: PayPalCertificates
) -> None:
    host.served[CERT_URL] = b"<html>not a certificate</html>"
    body = fixture_bytes("paypal/PAYMENT.CAPTURE.COMPLETED.v2.json")
    reason = refusal(body, signed(body, pki.leaf.key), certificates)
    assert reason == "paypal-cert-url does not serve a PEM certificate"


@pytest.mark.parametrize("skew", [timedelta(seconds=301), timedelta(seconds=-301)])
def test_a_stale_or_future_transmission_time_fails_before_any_fetch(
    skew: timedelta, pki: Pki, host: FakeCertHost, certificates: PayPalCertificates
) -> None:
    body = fixture_bytes("paypal/PAYMENT.CAPTURE.COMPLETED.v2.json")
    headers = signed(body, pki.leaf.key, transmission_time=(NOW + skew).isoformat())
    assert refusal(body, headers, certificates) == "transmission time outside the tolerance"
    assert host.fetched == []


@pytest.mark.parametrize("skew", [timedelta(seconds=300), timedelta(seconds=-300)])
def test_a_transmission_time_at_the_tolerance_passes(
    skew: timedelta, pki: Pki, certificates: PayPalCertificates
) -> None:
    body = fixture_bytes("paypal/PAYMENT.CAPTURE.COMPLETED.v2.json")
    sent_at = (NOW + skew).strftime("%Y-%m-%dT%H:%M:%SZ")
    headers = signed(body, pki.leaf.key, transmission_time=sent_at)
    verify_paypal(body, headers, WEBHOOK_ID, certificates, NOW)


def test_the_certificate_is_fetched_once_per_url(
    pki: Pki, host: FakeCertHost, certificates: PayPalCertificates
) -> None:
    for name in PAYPAL_FIXTURES:
        body = fixture_bytes(f"paypal/{name}")
        verify_paypal(body, signed(body, pki.leaf.key), WEBHOOK_ID, certificates, NOW)
    assert host.fetched == [CERT_URL]


def test_a_failed_fetch_is_remembered_briefly_then_tried_again(
    pki: Pki, host: FakeCertHost
) -> None:
    clock = [0.0]
    certificates = PayPalCertificates(HOSTS, [pki.root.cert], fetch=host, clock=lambda: clock[0])
    body = fixture_bytes("paypal/PAYMENT.CAPTURE.COMPLETED.v2.json")
    served = host.served.pop(CERT_URL)

    assert "HTTP 404" in refusal(body, signed(body, pki.leaf.key), certificates)
    assert "HTTP 404" in refusal(body, signed(body, pki.leaf.key), certificates)
    assert host.fetched == [CERT_URL]  # forged headers cannot make every request a fetch

    host.served[CERT_URL] = served
    clock[0] = FAILURE_TTL_S + 1
    verify_paypal(body, signed(body, pki.leaf.key), WEBHOOK_ID, certificates, NOW)
    assert host.fetched == [CERT_URL, CERT_URL]


def test_junk_certificate_urls_never_evict_paypals_certificate(
    pki: Pki, host: FakeCertHost, certificates: PayPalCertificates
) -> None:
    body = fixture_bytes("paypal/PAYMENT.CAPTURE.COMPLETED.v2.json")
    verify_paypal(body, signed(body, pki.leaf.key), WEBHOOK_ID, certificates, NOW)
    for n in range(2 * MAX_CACHED):
        junk = f"https://api.paypal.com/v1/notifications/certs/CERT-junk-{n}"
        host.served[junk] = pki.root.pem  # a real certificate, but not PayPal's signing one
        refusal(body, signed(body, pki.leaf.key, cert_url=junk), certificates)

    verify_paypal(body, signed(body, pki.leaf.key), WEBHOOK_ID, certificates, NOW)
    assert host.fetched.count(CERT_URL) == 1


def test_certificate_fetches_at_once_are_capped_and_the_rest_answered_unavailable(
    pki: Pki,
) -> None:
    release = threading.Event()
    started = threading.Semaphore(0)

    def slow(url: str) -> bytes:
        started.release()
        release.wait(10)
        raise CertificateUnavailable("certificate host answered 503")

    certificates = PayPalCertificates(HOSTS, [pki.root.cert], fetch=slow)
    body = fixture_bytes("paypal/PAYMENT.CAPTURE.COMPLETED.v2.json")
    urls = [f"https://api.paypal.com/v1/notifications/certs/CERT-slow-{n}" for n in range(3)]
    with ThreadPoolExecutor(MAX_FETCHES) as pool:
        busy = [
            pool.submit(refusal_or_unavailable, body, pki, certificates, url)
            for url in urls[:MAX_FETCHES]
        ]
        for _ in range(MAX_FETCHES):
            assert started.acquire(timeout=5)
        extra = refusal_or_unavailable(body, pki, certificates, urls[MAX_FETCHES])
        release.set()
        assert [future.result() for future in busy] == ["unavailable"] * MAX_FETCHES
    assert extra == "too many PayPal certificate fetches at once"


def refusal_or_unavailable(
    body: bytes, pki: Pki, certificates: PayPalCertificates, url: str
) -> str:
    try:
        verify_paypal(body, signed(body, pki.leaf.key, cert_url=url), WEBHOOK_ID, certificates, NOW)
    except CertificateUnavailable as error:
        return "unavailable" if "503" in str(error) else str(error)
    return "verified"


@pytest.mark.parametrize(
    "header",
    [
        "paypal-transmission-id",
        "paypal-transmission-time",
        "paypal-transmission-sig",
        "paypal-auth-algo",
        "paypal-cert-url",
    ],
)
def test_a_missing_header_is_named(header: str, pki: Pki, certificates: PayPalCertificates) -> None:
    body = fixture_bytes("paypal/PAYMENT.CAPTURE.COMPLETED.v2.json")
    headers = signed(body, pki.leaf.key)
    del headers[header]
    assert refusal(body, headers, certificates) == f"missing {header} header"


@pytest.mark.parametrize(
    ("header", "value", "reason"),
    [
        ("paypal-auth-algo", "SHA1withRSA", "unsupported paypal-auth-algo (only SHA256withRSA)"),
        ("paypal-transmission-sig", "not base64!", "malformed paypal-transmission-sig header"),
        ("paypal-transmission-time", "yesterday", "malformed paypal-transmission-time header"),
        (
            "paypal-transmission-time",
            "2024-05-01T12:00:00",
            "paypal-transmission-time has no time zone",
        ),
        ("paypal-transmission-id", "tid-\u00e9", "malformed paypal-transmission-id header"),
    ],
)
def test_a_malformed_header_is_refused(
    header: str, value: str, reason: str, pki: Pki, certificates: PayPalCertificates
) -> None:
    body = fixture_bytes("paypal/PAYMENT.CAPTURE.COMPLETED.v2.json")
    headers = {**signed(body, pki.leaf.key), header: value}
    assert refusal(body, headers, certificates) == reason


def test_no_webhook_id_is_a_configuration_error(pki: Pki, certificates: PayPalCertificates) -> None:
    body = fixture_bytes("paypal/PAYMENT.CAPTURE.COMPLETED.v2.json")
    with pytest.raises(ValueError, match="webhook id"):
        verify_paypal(body, signed(body, pki.leaf.key), "", certificates, NOW)


def test_no_trust_roots_is_a_configuration_error() -> None:
    with pytest.raises(ValueError):
        PayPalCertificates(HOSTS, [])


def test_the_default_trust_roots_are_certifis_and_a_bundle_can_replace_them(
    pki: Pki, tmp_path: Path
) -> None:
    assert len(load_roots()) > 50
    bundle = tmp_path / "ca.pem"
    bundle.write_bytes(pki.root.pem)
    assert load_roots(bundle) == [pki.root.cert]
    with pytest.raises(ValueError, match="CA bundle"):
        load_roots(tmp_path / "missing.pem")


# --- the real fetch, against a loopback server --------------------------------------------


class _CertHandler(BaseHTTPRequestHandler):
    routes: dict[str, tuple[int, bytes, dict[str, str]]] = {}

    def do_GET(self) -> None:
        status, body, headers = self.routes.get(self.path, (404, b"no such certificate", {}))
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def loopback(pki: Pki) -> Iterator[str]:
    _CertHandler.routes = {
        "/cert": (200, pki.leaf.pem, {"Content-Type": "application/x-pem-file"}),
        "/big": (200, b"x" * (64 * 1024 + 1), {}),
        "/moved": (302, b"", {"Location": "/cert"}),
        "/busy": (503, b"try later", {}),
    }
    server = ThreadingHTTPServer(("127.0.0.1", 0), _CertHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


def test_the_real_fetch_returns_the_served_pem(loopback: str, pki: Pki) -> None:
    assert fetch_certificate(f"{loopback}/cert") == pki.leaf.pem


@pytest.mark.parametrize(
    ("path", "reason"),
    [
        ("/missing", "certificate could not be fetched (HTTP 404)"),
        ("/moved", "certificate could not be fetched (HTTP 302)"),  # redirects are not followed
        ("/big", "certificate response is too large"),
    ],
)
def test_the_real_fetch_refuses_what_is_not_a_certificate(
    path: str, reason: str, loopback: str
) -> None:
    with pytest.raises(SignatureError) as refused:
        fetch_certificate(f"{loopback}{path}")
    assert refused.value.reason == reason


def test_the_real_fetch_reports_a_failing_host_as_unavailable(loopback: str) -> None:
    with pytest.raises(CertificateUnavailable, match="503"):
        fetch_certificate(f"{loopback}/busy")


def test_the_real_fetch_reports_an_unreachable_host_as_unavailable() -> None:
    with ThreadingHTTPServer(("127.0.0.1", 0), _CertHandler) as closed:
        port = closed.server_address[1]  # bound, then closed: nothing listens there
    with pytest.raises(CertificateUnavailable):
        fetch_certificate(f"http://127.0.0.1:{port}/cert")


# --- parsing ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Expected:
    action: Action
    reference: str
    amount: int
    currency: str
    alias: str | None = None
    refund: str | None = None
    dispute: str | None = None
    stage: int | None = None
    won: bool | None = None


EXPECTED = {
    "PAYMENT.CAPTURE.COMPLETED.v2.json": Expected(Action.CONFIRM, "27M47624FP291604U", 251, "USD"),
    "PAYMENT.CAPTURE.DENIED.v2.json": Expected(Action.FAIL, "7NW873794T343360M", 251, "AUD"),
    "PAYMENT.CAPTURE.REFUNDED.v2.json": Expected(
        Action.REFUND, "0JF852973C016714D", 99, "USD", refund="1Y107995YT783435V"
    ),
    "CHECKOUT.ORDER.COMPLETED.v2.json": Expected(
        Action.CONFIRM, "5O190127TN364715T", 10000, "USD", alias="3C679366HH908993F"
    ),
    "PAYMENT.CAPTURE.COMPLETED.v1.json": Expected(
        Action.CONFIRM, "PAY-3YE025760C441402AKTRY2PQ", 747, "USD", alias="42311647XV020574X"
    ),
    "PAYMENT.CAPTURE.DENIED.v1.json": Expected(
        Action.FAIL, "PAY-6AG64245W53716013KYKUWNI", 50, "EUR", alias="1YH34677BD7819356"
    ),
    "PAYMENT.CAPTURE.REFUNDED.v1.json": Expected(
        Action.REFUND,
        "PAY-7PD36489JY0066936KREEERQ",
        15,
        "USD",
        alias="5LK72275CG489890D",
        refund="8VC964970N548345V",
    ),
    # Money held, not captured; a voided hold pays nothing.
    "PAYMENT.AUTHORIZATION.CREATED.v1.json": Expected(
        Action.AUTHORIZE, "PAY-36246664YD343335CKHFA4AY", 747, "USD"
    ),
    "PAYMENT.AUTHORIZATION.VOIDED.v2.json": Expected(
        Action.CANCEL, "5O190127TN364715T", 10000, "USD"
    ),
    # A dispute names the capture it disputes (learned as the order's alias).
    "CUSTOMER.DISPUTE.CREATED.json": Expected(
        Action.DISPUTE, "3C679366HH908993F", 10000, "USD", dispute="PP-D-27803", stage=1
    ),
    "CUSTOMER.DISPUTE.RESOLVED.json": Expected(
        Action.DISPUTE_CLOSED,
        "3C679366HH908993F",
        10000,  # dispute_outcome.amount_refunded
        "USD",
        dispute="PP-D-27803",
        stage=2,
        won=False,
    ),
}


def test_every_sample_event_has_an_expectation() -> None:
    assert set(EXPECTED) | {"verify_webhook_signature_request.example.json"} == set(
        path.name for path in (FIXTURES / "paypal").glob("*.json")
    )


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_each_sample_event_parses_to_its_payment_change(name: str) -> None:
    document = fixture_json(f"paypal/{name}")
    event = paypal.parse(fixture_bytes(f"paypal/{name}"))
    want = EXPECTED[name]
    assert event == PaymentEvent(
        provider="paypal",
        event_id=document["id"],
        event_type=document["event_type"],
        action=want.action,
        payment_reference=want.reference,
        amount=want.amount,
        currency=want.currency,
        refund_reference=want.refund,
        alias=want.alias,
        dispute_reference=want.dispute,
        dispute_stage=want.stage,
        dispute_won=want.won,
    )
    assert parse_delivery("paypal", document["id"], fixture_bytes(f"paypal/{name}")) == event


def body_of(name: str, **changes: Any) -> bytes:
    """A sample event with top-level `changes`; `resource` entries are merged into it."""
    document = fixture_json(f"paypal/{name}")
    resource = changes.pop("resource", {})
    document.update(changes)
    document["resource"].update(resource)
    return json.dumps(document).encode()


RELATED = {"related_ids": {"order_id": "5O190127TN364715T"}}


def test_a_capture_naming_its_order_is_matched_by_the_order_and_teaches_the_capture() -> None:
    body = body_of("PAYMENT.CAPTURE.COMPLETED.v2.json", resource={"supplementary_data": RELATED})
    event = paypal.parse(body)
    assert (event.payment_reference, event.alias) == ("5O190127TN364715T", "27M47624FP291604U")


def test_a_refund_naming_its_order_and_capture_is_matched_by_the_order() -> None:
    related = {"related_ids": {"order_id": "5O190127TN364715T", "capture_id": "3C679366HH908993F"}}
    body = body_of("PAYMENT.CAPTURE.REFUNDED.v2.json", resource={"supplementary_data": related})
    event = paypal.parse(body)
    assert (event.payment_reference, event.alias) == ("5O190127TN364715T", "3C679366HH908993F")
    assert (event.action, event.amount, event.refund_reference) == (
        Action.REFUND,
        99,
        "1Y107995YT783435V",
    )


def test_a_reversal_is_a_refund_of_the_capture_its_up_link_names() -> None:
    body = body_of("PAYMENT.CAPTURE.REFUNDED.v2.json", event_type="PAYMENT.CAPTURE.REVERSED")
    event = paypal.parse(body)
    assert (event.action, event.payment_reference, event.amount) == (
        Action.REFUND,
        "0JF852973C016714D",
        99,
    )


def test_a_reversal_reported_on_the_capture_itself_returns_its_amount() -> None:
    body = body_of(
        "PAYMENT.CAPTURE.COMPLETED.v2.json",
        event_type="PAYMENT.CAPTURE.REVERSED",
        resource={"status": "REVERSED", "links": []},
    )
    event = paypal.parse(body)
    assert (event.action, event.payment_reference, event.refund_reference, event.amount) == (
        Action.REFUND,
        "27M47624FP291604U",
        "27M47624FP291604U",
        251,
    )


def test_a_completed_order_without_completed_captures_confirms_nothing() -> None:
    document = fixture_json("paypal/CHECKOUT.ORDER.COMPLETED.v2.json")
    capture = document["resource"]["purchase_units"][0]["payments"]["captures"][0]
    capture["status"] = "PENDING"
    event = paypal.parse(json.dumps(document).encode())
    assert (event.action, event.payment_reference) == (Action.UNSUPPORTED, None)


def test_a_completed_order_sums_its_completed_captures() -> None:
    document = fixture_json("paypal/CHECKOUT.ORDER.COMPLETED.v2.json")
    captures = document["resource"]["purchase_units"][0]["payments"]["captures"]
    captures.append(
        {
            **captures[0],
            "id": "4D679366HH908993G",
            "amount": {"currency_code": "USD", "value": "0.01"},
        }
    )
    event = paypal.parse(json.dumps(document).encode())
    assert (event.amount, event.alias) == (10001, None)


def test_an_event_type_payhook_does_not_act_on_is_unsupported() -> None:
    body = json.dumps({"id": "WH-1", "event_type": "CUSTOMER.DISPUTE.UPDATED", "resource": {}})
    assert paypal.parse(body.encode()) == PaymentEvent(
        "paypal", "WH-1", "CUSTOMER.DISPUTE.UPDATED", Action.UNSUPPORTED
    )


@pytest.mark.parametrize(
    ("outcome_code", "won"),
    [
        ("RESOLVED_BUYER_FAVOUR", False),
        ("ACCEPTED", False),
        ("RESOLVED_SELLER_FAVOUR", True),
        ("RESOLVED_WITH_PAYOUT", True),
        ("CANCELED_BY_BUYER", True),
    ],
)
def test_a_dispute_is_lost_only_when_resolved_for_the_buyer(outcome_code: str, won: bool) -> None:
    document = fixture_json("paypal/CUSTOMER.DISPUTE.RESOLVED.json")
    document["resource"]["dispute_outcome"] = {"outcome_code": outcome_code}
    assert paypal.parse(json.dumps(document).encode()).dispute_won is won


def test_a_dispute_naming_no_transaction_is_malformed() -> None:
    document = fixture_json("paypal/CUSTOMER.DISPUTE.CREATED.json")
    document["resource"]["disputed_transactions"] = []
    with pytest.raises(MalformedEvent, match="seller_transaction_id"):
        paypal.parse(json.dumps(document).encode())


@pytest.mark.parametrize(
    ("value", "code", "minor"),
    [
        ("2.51", "USD", 251),
        ("100.00", "USD", 10000),
        ("0.1", "USD", 10),
        (".5", "USD", 50),
        ("7", "USD", 700),
        ("100", "JPY", 100),
        ("1.234", "KWD", 1234),
        ("12345678901234567.89", "USD", 1234567890123456789),  # beyond a float's precision
    ],
)
def test_decimal_strings_become_exact_minor_units(value: str, code: str, minor: int) -> None:
    assert paypal.minor_units_of(value, code, "amount") == minor


@pytest.mark.parametrize(
    ("value", "code"),
    [
        ("2.515", "USD"),
        ("100.0", "JPY"),
        ("1.2345", "KWD"),
        ("-2.51", "USD"),
        ("", "USD"),
        (".", "USD"),
        ("-", "USD"),
        ("1.", "USD"),
        ("1e3", "USD"),
        ("1,00", "USD"),
        (" 1.00", "USD"),
        ("\u0663.00", "USD"),  # an Arabic-Indic three: a digit to Python, not to PayPal
        ("1" * 33, "USD"),
        (2.51, "USD"),
        (251, "USD"),
        (None, "USD"),
    ],
)
def test_amounts_that_are_not_exact_decimals_for_the_currency_are_malformed(
    value: object, code: str
) -> None:
    with pytest.raises(MalformedEvent):
        paypal.minor_units_of(value, code, "amount")


def test_a_negative_refund_amount_counts_as_its_magnitude() -> None:
    assert paypal.minor_units_of("-0.15", "USD", "amount", negative=True) == 15


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b"[]",
        json.dumps({"event_type": "PAYMENT.CAPTURE.COMPLETED", "resource": {}}).encode(),
        json.dumps({"id": "WH-1", "resource": {}}).encode(),
        json.dumps({"id": "WH-1", "event_type": "PAYMENT.CAPTURE.COMPLETED"}).encode(),
        body_of("PAYMENT.CAPTURE.COMPLETED.v2.json", resource={"amount": None}),
        body_of("PAYMENT.CAPTURE.COMPLETED.v2.json", resource={"id": ""}),
        body_of(
            "PAYMENT.CAPTURE.COMPLETED.v2.json",
            resource={"amount": {"currency_code": "US", "value": "2.51"}},
        ),
        body_of(
            "PAYMENT.CAPTURE.COMPLETED.v2.json",
            resource={"amount": {"currency_code": "USD", "value": 2.51}},
        ),
        body_of("PAYMENT.CAPTURE.REFUNDED.v2.json", resource={"links": "up"}),
        body_of("PAYMENT.CAPTURE.COMPLETED.v1.json", resource={"parent_payment": 7}),
        body_of("CHECKOUT.ORDER.COMPLETED.v2.json", resource={"purchase_units": {}}),
    ],
)
def test_a_body_without_what_its_event_type_needs_is_malformed(body: bytes) -> None:
    with pytest.raises(MalformedEvent):
        paypal.parse(body)


def test_an_order_paid_in_two_currencies_is_malformed() -> None:
    document = fixture_json("paypal/CHECKOUT.ORDER.COMPLETED.v2.json")
    captures = document["resource"]["purchase_units"][0]["payments"]["captures"]
    captures.append({**captures[0], "amount": {"currency_code": "EUR", "value": "1.00"}})
    with pytest.raises(MalformedEvent, match="several currencies"):
        paypal.parse(json.dumps(document).encode())


# --- settings -------------------------------------------------------------------------------


def test_paypal_settings_name_paypals_hosts_and_check_the_bundle(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, paypal_cert_hosts=" API.PayPal.com , api.x.test,")
    assert settings.paypal_hosts() == {"api.paypal.com", "api.x.test"}
    assert Settings(data_dir=tmp_path).paypal_hosts() == set(HOSTS)
    with pytest.raises(ValidationError, match="no such file"):
        Settings(data_dir=tmp_path, paypal_ca_bundle=tmp_path / "missing.pem")


# --- the receiver, and what becomes of its deliveries -----------------------------------------


@dataclass
class PayPalApp:
    http_app: FastAPI
    client: TestClient
    runtime: ProcessRuntime
    host: FakeCertHost
    key: rsa.RSAPrivateKey
    published: list[int] = field(default_factory=list)
    sent: int = 0

    def post(self, body: bytes, **headers: str) -> Response:
        """POST `body` signed as PayPal would, each transmission with its own id."""
        self.sent += 1
        paypal_headers = signed(body, self.key, transmission_id=f"transmission-{self.sent}")
        response: Response = self.client.post(
            "/webhooks/paypal", content=body, headers={**paypal_headers, **headers}
        )
        return response

    def deliver(self, body: bytes) -> int:
        response = self.post(body)
        assert response.status_code == 202, response.text
        delivery_id: int = response.json()["delivery_id"]
        return delivery_id

    def process(self, body: bytes) -> Outcome:
        """Deliver `body`, then run the stored delivery as the worker would."""
        processed = process_delivery(
            self.deliver(body), self.runtime.unit_of_work(), NOW, self.runtime.policy
        )
        return processed.outcome

    def register(self, reference: str, amount: int, currency: str) -> int:
        """An order of `amount` and its PayPal payment registered under `reference`."""
        create_order(
            self.runtime.unit_of_work(),
            reference=f"order-{reference}",
            total=amount,
            currency=currency,
            now=NOW,
        )
        return create_payment(
            self.runtime.unit_of_work(),
            order_reference=f"order-{reference}",
            provider="paypal",
            provider_reference=reference,
            amount=amount,
            currency=currency,
            now=NOW,
        )

    def payment(self, payment_id: int) -> dict[str, Any]:
        with self.runtime.engine.connect() as conn:
            view = queries.payment(conn, payment_id)
        assert view is not None
        return view

    def order_status(self, reference: str) -> str:
        with self.runtime.engine.connect() as conn:
            view = queries.order(conn, f"order-{reference}")
        assert view is not None
        status: str = view["status"]
        return status

    def stored(self) -> list[dict[str, Any]]:
        with self.runtime.engine.connect() as conn:
            return [dict(row._mapping) for row in conn.execute(select(deliveries))]


def paypal_app_for(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, pki: Pki, *, own_certificates: bool = True
) -> PayPalApp:
    upgrade(settings.database)
    runtime = ProcessRuntime(settings, create_app(settings))
    http_app = create_http_app(runtime)
    host = FakeCertHost({CERT_URL: pki.leaf.pem})
    if own_certificates:
        # The receiver's certificates: PayPal's hosts, the test CA, and the fake host's PEM.
        http_app.state.paypal_certificates = PayPalCertificates(
            settings.paypal_hosts(), [pki.root.cert], fetch=host
        )
    harness = PayPalApp(http_app, TestClient(http_app), runtime, host, pki.leaf.key)
    publisher = CommittedPublisher(settings.database)  # a delivery not committed stays out
    harness.published = publisher.published
    monkeypatch.setattr(runtime, "publish", publisher)
    monkeypatch.setattr(runtime, "now", lambda: NOW)
    return harness


def paypal_settings(tmp_path: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "data_dir": tmp_path,
        "paypal_webhook_id": WEBHOOK_ID,
        "max_body_bytes": 16 * 1024,
        **overrides,
    }
    return Settings(**values)


@pytest.fixture
def app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, pki: Pki) -> Iterator[PayPalApp]:
    harness = paypal_app_for(paypal_settings(tmp_path), monkeypatch, pki)
    yield harness
    harness.runtime.engine.dispose()


def error_of(response: Response, status: int) -> str:
    """The one-line JSON reason of a refused request."""
    assert response.status_code == status, response.text
    assert "\n" not in response.text
    assert list(response.json()) == ["error"]
    reason: str = response.json()["error"]
    return reason


def test_a_signed_paypal_event_is_stored_published_and_accepted(app: PayPalApp) -> None:
    body = fixture_bytes("paypal/PAYMENT.CAPTURE.COMPLETED.v2.json")

    response = app.post(body)

    assert response.status_code == 202
    delivery_id = response.json()["delivery_id"]
    assert response.json() == {"delivery_id": delivery_id}
    assert app.published == [delivery_id]
    (stored,) = app.stored()
    assert (stored["provider"], stored["event_id"], stored["event_type"]) == (
        "paypal",
        "WH-58D329510W468432D-8HN650336L201105X",
        "PAYMENT.CAPTURE.COMPLETED",
    )
    assert stored["body"] == body
    kept = json.loads(stored["headers"])
    assert kept["paypal-cert-url"] == CERT_URL
    assert kept["paypal-transmission-id"] == "transmission-1"


def test_paypal_without_a_webhook_id_is_not_found(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, pki: Pki
) -> None:
    harness = paypal_app_for(paypal_settings(tmp_path, paypal_webhook_id=""), monkeypatch, pki)
    response = harness.post(fixture_bytes("paypal/PAYMENT.CAPTURE.COMPLETED.v2.json"))
    assert error_of(response, 404) == "provider paypal is not configured"


def test_an_unsigned_paypal_request_is_refused_and_nothing_stored(app: PayPalApp) -> None:
    response = app.client.post(
        "/webhooks/paypal", content=fixture_bytes("paypal/PAYMENT.CAPTURE.COMPLETED.v2.json")
    )
    assert error_of(response, 401) == "missing paypal-transmission-id header"
    assert (app.stored(), app.published, app.host.fetched) == ([], [], [])


def test_a_paypal_body_altered_in_transit_is_refused(app: PayPalApp) -> None:
    body = fixture_bytes("paypal/PAYMENT.CAPTURE.COMPLETED.v2.json")
    headers = signed(body, app.key)
    response = app.client.post(
        "/webhooks/paypal", content=body.replace(b"2.51", b"9.51"), headers=headers
    )
    assert error_of(response, 401) == "no valid signature"
    assert app.stored() == []


def test_a_cert_url_off_paypals_hosts_is_refused_with_401_and_never_fetched(
    app: PayPalApp,
) -> None:
    body = fixture_bytes("paypal/PAYMENT.CAPTURE.COMPLETED.v2.json")
    response = app.post(body, **{"paypal-cert-url": "https://attacker.example/cert.pem"})
    assert error_of(response, 401) == "paypal-cert-url is not on an allowed PayPal host"
    assert app.host.fetched == []


def test_a_signed_body_that_is_no_paypal_event_is_stored_and_recorded_malformed(
    app: PayPalApp,
) -> None:
    outcome = app.process(b'{"id": "WH-1"}')
    assert (outcome.kind.value, outcome.reason and outcome.reason.value) == (
        "rejected",
        "malformed_event",
    )
    assert len(app.stored()) == 1


def test_a_paypal_body_over_the_limit_is_refused(app: PayPalApp) -> None:
    response = app.post(b"{" + b" " * (16 * 1024) + b"}")
    assert error_of(response, 413) == f"body larger than {16 * 1024} bytes"


def test_an_unreachable_certificate_answers_503_so_paypal_retries(app: PayPalApp) -> None:
    app.host.down = True
    response = app.post(fixture_bytes("paypal/PAYMENT.CAPTURE.COMPLETED.v2.json"))
    assert "try again later" in error_of(response, 503)
    assert int(response.headers["Retry-After"]) > 0
    assert app.stored() == []


def test_the_receiver_builds_its_certificates_from_the_settings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, pki: Pki
) -> None:
    bundle = tmp_path / "paypal-ca.pem"
    bundle.write_bytes(pki.root.pem)
    settings = paypal_settings(tmp_path, paypal_ca_bundle=bundle)
    harness = paypal_app_for(settings, monkeypatch, pki, own_certificates=False)
    # The real fetch would leave the machine: the fake host answers in its place.
    monkeypatch.setattr("worker.signing.paypal.fetch_certificate", harness.host)

    response = harness.post(fixture_bytes("paypal/PAYMENT.CAPTURE.COMPLETED.v1.json"))

    assert response.status_code == 202, response.text
    assert harness.host.fetched == [CERT_URL]
    assert isinstance(harness.http_app.state.paypal_certificates, PayPalCertificates)


def test_a_completed_capture_confirms_and_a_later_denial_is_stale(app: PayPalApp) -> None:
    payment_id = app.register("27M47624FP291604U", 251, "USD")
    completed = fixture_bytes("paypal/PAYMENT.CAPTURE.COMPLETED.v2.json")

    assert app.process(completed) == Outcome.applied("pending->confirmed", payment_id)
    assert app.order_status("27M47624FP291604U") == "paid"
    denied = body_of(
        "PAYMENT.CAPTURE.DENIED.v2.json",
        resource={"id": "27M47624FP291604U", "amount": {"currency_code": "USD", "value": "2.51"}},
    )
    assert app.process(denied) == Outcome.ignored(Reason.STALE, payment_id)
    assert app.payment(payment_id)["state"] == "confirmed"

    again = app.process(completed)  # PayPal resends: a new transmission of the same event
    assert (again.kind, again.reason) == (OutcomeKind.ACKNOWLEDGED_DUPLICATE, Reason.SAME_EVENT)


def test_a_denied_capture_fails_its_pending_payment(app: PayPalApp) -> None:
    payment_id = app.register("7NW873794T343360M", 251, "AUD")
    denied = fixture_bytes("paypal/PAYMENT.CAPTURE.DENIED.v2.json")
    assert app.process(denied) == Outcome.applied("pending->failed", payment_id)
    assert app.payment(payment_id)["state"] == "failed"


def test_an_order_completes_and_a_refund_naming_only_its_capture_still_finds_it(
    app: PayPalApp,
) -> None:
    """The host registers the PayPal order id; the capture id is learned on the way."""
    payment_id = app.register("5O190127TN364715T", 10000, "USD")

    order_completed = fixture_bytes("paypal/CHECKOUT.ORDER.COMPLETED.v2.json")
    assert app.process(order_completed) == Outcome.applied("pending->confirmed", payment_id)
    capture_completed = body_of(
        "PAYMENT.CAPTURE.COMPLETED.v2.json",
        id="WH-CAPTURE-OF-5O190127TN364715T",
        resource={
            "id": "3C679366HH908993F",
            "amount": {"currency_code": "USD", "value": "100.00"},
            "supplementary_data": RELATED,
        },
    )
    assert app.process(capture_completed) == Outcome.already_in_state(payment_id, 1)
    # PayPal's refund sample names its capture only in its `up` link.
    refund = body_of(
        "PAYMENT.CAPTURE.REFUNDED.v2.json",
        resource={
            "links": [
                {
                    "href": "https://api.paypal.com/v2/payments/captures/3C679366HH908993F",
                    "rel": "up",
                }
            ]
        },
    )
    assert app.process(refund) == Outcome.applied("refund:partial", payment_id)
    assert app.payment(payment_id)["refunded_amount"] == 99


def test_the_refund_sample_is_the_second_of_two_that_return_a_whole_capture(
    app: PayPalApp,
) -> None:
    # The sample refunds 0.99 and says 1.98 is refunded in all: a 1.98 capture, refunded twice.
    payment_id = app.register("0JF852973C016714D", 198, "USD")
    captured = body_of(
        "PAYMENT.CAPTURE.COMPLETED.v2.json",
        id="WH-CAPTURE-0JF852973C016714D",
        resource={"id": "0JF852973C016714D", "amount": {"currency_code": "USD", "value": "1.98"}},
    )
    first_refund = body_of(
        "PAYMENT.CAPTURE.REFUNDED.v2.json",
        id="WH-FIRST-REFUND-OF-0JF852973C016714D",
        resource={"id": "1Y107995YT783435A"},
    )
    second_refund = fixture_bytes("paypal/PAYMENT.CAPTURE.REFUNDED.v2.json")

    assert app.process(captured) == Outcome.applied("pending->confirmed", payment_id)
    assert app.process(first_refund) == Outcome.applied("refund:partial", payment_id)
    assert app.process(second_refund) == Outcome.applied("confirmed->refunded", payment_id)
    payment = app.payment(payment_id)
    assert (payment["state"], payment["refunded_amount"]) == ("refunded", 198)
    assert app.order_status("0JF852973C016714D") == "pending"


def test_legacy_v1_events_are_matched_through_their_payment_id(app: PayPalApp) -> None:
    completed = app.register("PAY-3YE025760C441402AKTRY2PQ", 747, "USD")
    denied = app.register("PAY-6AG64245W53716013KYKUWNI", 50, "EUR")
    refunded = app.register("PAY-7PD36489JY0066936KREEERQ", 15, "USD")
    assert confirm_payment(refunded, app.runtime.unit_of_work(), NOW).payment is not None

    assert app.process(fixture_bytes("paypal/PAYMENT.CAPTURE.COMPLETED.v1.json")) == (
        Outcome.applied("pending->confirmed", completed)
    )
    assert app.process(fixture_bytes("paypal/PAYMENT.CAPTURE.DENIED.v1.json")) == (
        Outcome.applied("pending->failed", denied)
    )
    assert app.process(fixture_bytes("paypal/PAYMENT.CAPTURE.REFUNDED.v1.json")) == (
        Outcome.applied("confirmed->refunded", refunded)
    )


def test_an_event_payhook_does_not_act_on_is_accepted_and_ignored(app: PayPalApp) -> None:
    body = json.dumps({"id": "WH-1", "event_type": "CUSTOMER.DISPUTE.UPDATED", "resource": {}})
    assert app.process(body.encode()) == Outcome.ignored(Reason.UNSUPPORTED_EVENT)


def test_an_authorization_holds_and_its_void_cancels_without_paying(app: PayPalApp) -> None:
    payment_id = app.register("5O190127TN364715T", 10000, "USD")
    created = body_of(
        "PAYMENT.AUTHORIZATION.VOIDED.v2.json",
        id="WH-AUTHORIZATION-CREATED",
        event_type="PAYMENT.AUTHORIZATION.CREATED",
        resource={"status": "CREATED"},
    )
    voided = fixture_bytes("paypal/PAYMENT.AUTHORIZATION.VOIDED.v2.json")

    assert app.process(created) == Outcome.applied("pending->authorized", payment_id)
    assert app.order_status("5O190127TN364715T") == "pending"
    assert app.process(voided) == Outcome.applied("authorized->canceled", payment_id)
    assert app.payment(payment_id)["state"] == "canceled"


def test_the_v1_authorization_sample_holds_its_payment_and_pays_nothing(app: PayPalApp) -> None:
    payment_id = app.register("PAY-36246664YD343335CKHFA4AY", 747, "USD")
    created = fixture_bytes("paypal/PAYMENT.AUTHORIZATION.CREATED.v1.json")
    assert app.process(created) == Outcome.applied("pending->authorized", payment_id)
    assert app.order_status("PAY-36246664YD343335CKHFA4AY") == "pending"
    assert app.payment(payment_id)["state"] == "authorized"


def test_a_dispute_resolved_for_the_buyer_takes_the_money_back(app: PayPalApp) -> None:
    payment_id = app.register("5O190127TN364715T", 10000, "USD")
    completed = fixture_bytes("paypal/CHECKOUT.ORDER.COMPLETED.v2.json")
    assert app.process(completed) == Outcome.applied("pending->confirmed", payment_id)

    created = fixture_bytes("paypal/CUSTOMER.DISPUTE.CREATED.json")
    assert app.process(created) == Outcome.applied("dispute:opened", payment_id)
    assert app.order_status("5O190127TN364715T") == "paid"  # a hold is no loss
    resolved = fixture_bytes("paypal/CUSTOMER.DISPUTE.RESOLVED.json")
    assert app.process(resolved) == Outcome.applied("dispute:lost", payment_id)
    assert app.order_status("5O190127TN364715T") == "pending"
    assert app.payment(payment_id)["disputed_amount"] == 10000


def test_paypal_fetches_that_hang_leave_the_other_receivers_threads_free(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, pki: Pki
) -> None:
    settings = paypal_settings(tmp_path, stripe_webhook_secrets="whsec_threads")
    app = paypal_app_for(settings, monkeypatch, pki)
    hang = threading.Event()

    def hanging(url: str) -> bytes:
        hang.wait(30)
        raise CertificateUnavailable("certificate host answered 503")

    app.http_app.state.paypal_certificates = PayPalCertificates(
        HOSTS, [pki.root.cert], fetch=hanging
    )
    paypal_body = fixture_bytes("paypal/PAYMENT.CAPTURE.COMPLETED.v2.json")
    stripe_body = fixture_bytes("stripe/events/payment_intent.succeeded.json")

    async def scenario() -> tuple[list[int], int]:
        transport = httpx.ASGITransport(app=app.http_app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            forged = [
                client.post(
                    "/webhooks/paypal",
                    content=paypal_body,
                    headers=signed(
                        paypal_body,
                        pki.leaf.key,
                        cert_url=f"https://api.paypal.com/v1/notifications/certs/CERT-f{n}",
                    ),
                )
                for n in range(60)  # more than the shared thread pool has threads (40)
            ]
            pending = [asyncio.ensure_future(request) for request in forged]
            await asyncio.sleep(0.5)  # every forged request is in by now
            stripe = await asyncio.wait_for(
                client.post(
                    "/webhooks/stripe",
                    content=stripe_body,
                    headers={
                        "Stripe-Signature": sign_stripe(
                            stripe_body, "whsec_threads", int(NOW.timestamp())
                        )
                    },
                ),
                timeout=10,
            )
            hang.set()
            answers = [answer.status_code for answer in await asyncio.gather(*pending)]
        return answers, stripe.status_code

    answers, stripe_status = asyncio.run(scenario())

    assert stripe_status == 202
    assert set(answers) == {503}  # PayPal retries them
