"""PayPal signatures: the signed message, offline verification, the certificate and its fetch."""

from __future__ import annotations

import threading
import zlib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tests.fixture_files import fixture_bytes
from tests.unit.common import NOW
from tests.unit.paypal.support import (
    CERT_URL,
    HOSTS,
    PAYPAL_FIXTURES,
    SENT_AT,
    WEBHOOK_ID,
    FakeCertHost,
    Issued,
    Pki,
    refusal,
    signed,
)
from worker.signing.errors import SignatureError
from worker.signing.paypal import (
    FAILURE_TTL_S,
    MAX_CACHED,
    MAX_FETCHES,
    CertificateUnavailable,
    PayPalCertificates,
    fetch_certificate,
    load_roots,
    signed_message,
    verify_paypal,
)

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
