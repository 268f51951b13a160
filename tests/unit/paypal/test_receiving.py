"""The PayPal receiver: verified offline, stored, published, answered; its settings."""

from __future__ import annotations

import asyncio
import json
import threading
from pathlib import Path

import httpx
import pytest
from pydantic import ValidationError

from tests.fixture_files import fixture_bytes
from tests.unit.common import NOW
from tests.unit.paypal.support import (
    CERT_URL,
    HOSTS,
    PayPalApp,
    Pki,
    error_of,
    paypal_app_for,
    paypal_settings,
    signed,
)
from worker.settings import Settings
from worker.signing.paypal import (
    CertificateUnavailable,
    PayPalCertificates,
)
from worker.signing.stripe import sign_stripe

# --- settings -------------------------------------------------------------------------------


def test_paypal_settings_name_paypals_hosts_and_check_the_bundle(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, paypal_cert_hosts=" API.PayPal.com , api.x.test,")
    assert settings.paypal_hosts() == {"api.paypal.com", "api.x.test"}
    assert Settings(data_dir=tmp_path).paypal_hosts() == set(HOSTS)
    with pytest.raises(ValidationError, match="no such file"):
        Settings(data_dir=tmp_path, paypal_ca_bundle=tmp_path / "missing.pem")


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
