"""PayPal stories: events through the receiver to their outcomes and the books."""

from __future__ import annotations

import json

from domain.outcomes import Outcome, OutcomeKind, Reason
from tasks.confirming import confirm_payment
from tests.fixture_files import fixture_bytes
from tests.unit.common import NOW
from tests.unit.paypal.support import RELATED, PayPalApp, body_of


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
