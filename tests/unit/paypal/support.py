"""Shared by the PayPal tests: a test PKI, a fake certificate host, the receiver harness.

PayPal publishes no offline-verifiable signature vector (tests/fixtures/MANIFEST.md), so the
tests make their own PKI: a test CA, and leaf certificates issued to PayPal's signing name,
valid, expired, self-signed or from a CA nobody trusts. Each PayPal sample event is signed
the way PayPal signs, and the certificate is served by a fake fetch (or, for the real fetch,
a loopback HTTP server).
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from fastapi import FastAPI
from fastapi.testclient import TestClient
from httpx import Response
from sqlalchemy import select

from domain.outcomes import Outcome
from tasks.migrate import upgrade
from tasks.processing import process_delivery
from tasks.registering import create_order, create_payment
from tasks.storage import queries
from tasks.storage.tables import deliveries
from tests.fixture_files import FIXTURES, fixture_json
from tests.unit.committed import CommittedPublisher
from tests.unit.common import NOW
from worker.runtime import ProcessRuntime
from worker.settings import Settings
from worker.signing.errors import SignatureError
from worker.signing.paypal import (
    AUTH_ALGO,
    SIGNING_NAMES,
    CertificateUnavailable,
    PayPalCertificates,
    signed_message,
    verify_paypal,
)
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


def error_of(response: Response, status: int) -> str:
    """The one-line JSON reason of a refused request."""
    assert response.status_code == status, response.text
    assert "\n" not in response.text
    assert list(response.json()) == ["error"]
    reason: str = response.json()["error"]
    return reason


def body_of(name: str, **changes: Any) -> bytes:
    """A sample event with top-level `changes`; `resource` entries are merged into it."""
    document = fixture_json(f"paypal/{name}")
    resource = changes.pop("resource", {})
    document.update(changes)
    document["resource"].update(resource)
    return json.dumps(document).encode()


RELATED = {"related_ids": {"order_id": "5O190127TN364715T"}}


def sign_paypal(
    body: bytes,
    key: rsa.RSAPrivateKey,
    *,
    cert_url: str,
    webhook_id: str,
    transmission_id: str,
    transmission_time: str,
) -> dict[str, str]:
    """The headers PayPal would send for `body`, signed with `key` (the tests' own PKI)."""
    message = signed_message(transmission_id, transmission_time, webhook_id, body)
    signature = key.sign(message, padding.PKCS1v15(), hashes.SHA256())
    return {
        "paypal-transmission-id": transmission_id,
        "paypal-transmission-time": transmission_time,
        "paypal-transmission-sig": base64.b64encode(signature).decode("ascii"),
        "paypal-auth-algo": AUTH_ALGO,
        "paypal-cert-url": cert_url,
    }
