"""Adyen stories: notifications through the receiver to their outcomes and the books."""

from __future__ import annotations

from typing import Any

import pytest

from tests.unit.adyen.support import Receiver, authorisation, fixture_item, request_of, signed


def test_authorisation_confirms_and_a_full_refund_refunds(receiver: Receiver) -> None:
    reference, amount = "8313842560770001", 10100  # the authorisation fixture's
    payment_id = receiver.register(reference, amount)
    refund = fixture_item("refund-true.json")
    refund["merchantReference"] = reference
    refund["amount"]["value"] = amount
    assert receiver.post(request_of(signed(fixture_item("authorisation-true.json")))).is_success
    assert receiver.post(request_of(signed(refund))).is_success
    (authorised_id, *_), (refund_id, *_) = receiver.stored()

    authorised = receiver.process(authorised_id).outcome
    assert (authorised.kind, authorised.transition) == ("applied", "pending->confirmed")
    assert receiver.payment(payment_id)["state"] == "confirmed"

    refunded = receiver.process(refund_id).outcome
    assert (refunded.kind, refunded.transition) == ("applied", "confirmed->refunded")
    payment = receiver.payment(payment_id)
    assert (payment["state"], payment["refunded_amount"]) == ("refunded", amount)


def chargeback_story(name: str) -> dict[str, Any]:
    item = fixture_item(name)
    return signed(item)


def test_a_chargeback_takes_the_money_and_its_reversal_returns_it(receiver: Receiver) -> None:
    chargeback = fixture_item("chargeback.json")
    reference, amount = chargeback["merchantReference"], chargeback["amount"]["value"]
    payment_id = receiver.register(reference, amount)
    batch = [signed(authorisation(reference, amount, "9913333333333333"))]
    batch += [chargeback_story(f"{name}.json") for name in DISPUTE_IN_ORDER[:3]]
    assert receiver.post(request_of(*batch)).is_success
    authorised_id, notified_id, charged_id, reversed_id = [row[0] for row in receiver.stored()]
    order = f"order-{reference}"

    assert receiver.process(authorised_id).outcome.transition == "pending->confirmed"
    assert receiver.process(notified_id).outcome.transition == "dispute:opened"
    assert receiver.order(order)["status"] == "paid"  # notified: no money moved yet
    assert receiver.process(charged_id).outcome.transition == "dispute:funds_withdrawn"
    taken = receiver.order(order)
    assert (taken["status"], taken["disputed_amount"]) == ("pending", amount)
    assert receiver.process(reversed_id).outcome.transition == "dispute:funds_reinstated"
    back = receiver.order(order)
    assert (back["status"], back["disputed_amount"]) == ("paid", 0)
    assert receiver.payment(payment_id)["state"] == "confirmed"


DISPUTE_IN_ORDER = [
    "notification-of-chargeback",
    "chargeback",
    "chargeback-reversed",
    "second-chargeback",
    "prearbitration-lost",
]


@pytest.mark.parametrize(
    ("last", "transition", "disputed"),
    [
        ("second-chargeback", "dispute:funds_withdrawn", 1000),
        ("prearbitration-won", "dispute:won", 0),
        ("prearbitration-lost", "dispute:lost", 1000),
    ],
)
def test_a_dispute_ends_with_what_its_last_stage_says_in_any_order(
    receiver: Receiver, last: str, transition: str, disputed: int
) -> None:
    chargeback = fixture_item("chargeback.json")
    reference, amount = chargeback["merchantReference"], chargeback["amount"]["value"]
    receiver.register(reference, amount)
    stages = [*DISPUTE_IN_ORDER[: DISPUTE_IN_ORDER.index("second-chargeback")], last]
    if last.startswith("prearbitration"):
        stages.insert(-1, "second-chargeback")
    # The last stage first, then the others, newest to oldest: the older ones are stale.
    batch = [signed(authorisation(reference, amount, "9913333333333333"))]
    batch += [chargeback_story(f"{name}.json") for name in reversed(stages)]
    assert receiver.post(request_of(*batch)).is_success
    authorised_id, newest_id, *older_ids = [row[0] for row in receiver.stored()]

    receiver.process(authorised_id)
    assert receiver.process(newest_id).outcome.transition == transition
    assert {receiver.process(i).outcome.reason for i in older_ids} == {"stale"}
    assert receiver.order(f"order-{reference}")["disputed_amount"] == disputed


def test_a_chargeback_before_the_payment_is_captured_waits_for_the_capture(
    receiver: Receiver,
) -> None:
    chargeback = fixture_item("chargeback.json")
    reference, amount = chargeback["merchantReference"], chargeback["amount"]["value"]
    payment_id = receiver.register(reference, amount)
    batch = [signed(chargeback), signed(authorisation(reference, amount, "9913333333333333"))]
    assert receiver.post(request_of(*batch)).is_success
    charged_id, authorised_id = [row[0] for row in receiver.stored()]

    waiting = receiver.process(charged_id)
    assert (waiting.outcome.kind, waiting.outcome.reason) == ("deferred", "awaiting_state")
    captured = receiver.process(authorised_id)
    assert captured.woken == (charged_id,)
    assert receiver.process(charged_id).outcome.transition == "dispute:funds_withdrawn"
    assert receiver.payment(payment_id)["disputed_amount"] == amount


def test_the_same_item_delivered_twice_is_a_same_event_duplicate(receiver: Receiver) -> None:
    payment_id = receiver.register("8313842560770001", 10100)
    item = signed(fixture_item("authorisation-true.json"))
    assert receiver.post(request_of(item)).is_success
    assert receiver.post(request_of(item)).is_success  # Adyen retried: no [accepted] seen
    (first_id, *_), (second_id, *_) = receiver.stored()

    first = receiver.process(first_id).outcome
    second = receiver.process(second_id).outcome

    assert first.kind == "applied"
    assert (second.kind, second.reason, second.duplicate_of) == (
        "acknowledged_duplicate",
        "same_event",
        first_id,
    )
    assert receiver.payment(payment_id)["confirmed_by"] == first_id


def test_a_refund_failure_before_its_success_keeps_the_success_from_applying(
    receiver: Receiver,
) -> None:
    reference, amount = "payment-2017-1-17-11-refund", 1500  # the refund fixtures'
    payment_id = receiver.register(reference, amount)
    batch = [signed(authorisation(reference, amount, "ORIGINAL_PSP"))]
    batch += [signed(fixture_item("refund-false.json")), signed(fixture_item("refund-true.json"))]
    assert receiver.post(request_of(*batch)).is_success
    authorised_id, failed_id, succeeded_id = [row[0] for row in receiver.stored()]

    receiver.process(authorised_id)
    failed = receiver.process(failed_id).outcome
    late = receiver.process(succeeded_id).outcome

    assert (failed.kind, failed.transition) == ("applied", "refund:failed")
    assert (late.kind, late.reason) == ("ignored", "stale")
    payment = receiver.payment(payment_id)
    assert (payment["state"], payment["refunded_amount"]) == ("confirmed", 0)


def test_a_capture_after_the_authorisation_is_already_in_state(receiver: Receiver) -> None:
    capture = fixture_item("capture-true.json")
    reference, amount = capture["merchantReference"], capture["amount"]["value"]
    payment_id = receiver.register(reference, amount, currency="USD")
    batch = [signed(authorisation(reference, amount, "ORIGINAL_PSP", currency="USD"))]
    batch.append(signed(capture))
    assert receiver.post(request_of(*batch)).is_success
    (authorised_id, *_), (capture_id, *_) = receiver.stored()

    assert receiver.process(authorised_id).outcome.transition == "pending->confirmed"
    captured = receiver.process(capture_id).outcome

    assert (captured.kind, captured.reason) == ("acknowledged_duplicate", "already_in_state")
    assert receiver.payment(payment_id)["state"] == "confirmed"


def test_a_failed_capture_takes_back_what_automatic_capture_counted(receiver: Receiver) -> None:
    capture = fixture_item("capture-false.json")
    reference, amount = capture["merchantReference"], capture["amount"]["value"]
    payment_id = receiver.register(reference, amount, currency="USD")
    batch = [signed(authorisation(reference, amount, "ORIGINAL_PSP", currency="USD"))]
    batch.append(signed(capture))
    assert receiver.post(request_of(*batch)).is_success
    (authorised_id, *_), (capture_id, *_) = receiver.stored()

    assert receiver.process(authorised_id).outcome.transition == "pending->confirmed"
    failed = receiver.process(capture_id).outcome

    assert (failed.kind, failed.transition) == ("applied", "confirmed->failed")
    assert receiver.payment(payment_id)["state"] == "failed"
    assert receiver.order(f"order-{reference}")["paid_amount"] == 0


def test_a_failed_capture_before_its_authorisation_waits_for_it(receiver: Receiver) -> None:
    capture = fixture_item("capture-false.json")
    payment_id = receiver.register(capture["merchantReference"], 23623, currency="USD")
    assert receiver.post(request_of(signed(capture))).is_success
    ((capture_id, *_),) = receiver.stored()

    waiting = receiver.process(capture_id).outcome

    assert (waiting.kind, waiting.reason) == ("deferred", "awaiting_state")
    assert receiver.payment(payment_id)["state"] == "pending"


def test_under_manual_capture_the_authorisation_holds_and_the_capture_pays(
    manual: Receiver,
) -> None:
    capture = fixture_item("capture-true.json")
    reference, amount = capture["merchantReference"], capture["amount"]["value"]
    payment_id = manual.register(reference, amount, currency="USD")
    batch = [signed(authorisation(reference, amount, "ORIGINAL_PSP", currency="USD"))]
    batch.append(signed(capture))
    assert manual.post(request_of(*batch)).is_success
    (authorised_id, *_), (capture_id, *_) = manual.stored()

    assert manual.process(authorised_id).outcome.transition == "pending->authorized"
    held = manual.order(f"order-{reference}")
    assert (held["status"], held["paid_amount"]) == ("pending", 0)
    assert manual.process(capture_id).outcome.transition == "authorized->confirmed"
    assert manual.order(f"order-{reference}")["status"] == "paid"
    assert manual.payment(payment_id)["state"] == "confirmed"


@pytest.mark.parametrize(
    ("fixture", "transition"),
    [
        ("offer-closed.json", "authorized->canceled"),
        ("capture-false.json", "authorized->failed"),
    ],
)
def test_under_manual_capture_an_authorisation_that_is_never_captured_pays_nothing(
    manual: Receiver, fixture: str, transition: str
) -> None:
    ended = fixture_item(fixture)
    reference, amount = ended["merchantReference"], ended["amount"]["value"]
    currency = ended["amount"]["currency"]
    manual.register(reference, amount, currency=currency)
    batch = [signed(authorisation(reference, amount, "ORIGINAL_PSP", currency=currency))]
    batch.append(signed(ended))
    assert manual.post(request_of(*batch)).is_success
    (authorised_id, *_), (ended_id, *_) = manual.stored()

    manual.process(authorised_id)
    assert manual.process(ended_id).outcome.transition == transition
    assert manual.order(f"order-{reference}")["paid_amount"] == 0


def test_a_cancellation_cancels_a_pending_payment(receiver: Receiver) -> None:
    # The fixture carries no merchantReference (recorded malformed, tested above);
    # Adyen sends one for payments made with one, as here.
    cancellation = fixture_item("cancellation-true.json")
    cancellation["merchantReference"] = "order-cancelled"
    payment_id = receiver.register("order-cancelled", 500)
    assert receiver.post(request_of(signed(cancellation))).is_success
    ((cancellation_id, *_),) = receiver.stored()

    canceled = receiver.process(cancellation_id).outcome

    assert (canceled.kind, canceled.transition) == ("applied", "pending->canceled")
    assert receiver.payment(payment_id)["state"] == "canceled"
