"""Provider bodies normalized into PaymentEvents: real Stripe fixtures and payhook's own schema."""

import json
from typing import Any

import pytest

from domain.events import Action, EventKey, MalformedEvent, PaymentEvent
from domain.providers import parse_delivery, standard, stripe
from tests.fixture_files import FIXTURES, fixture_bytes, fixture_json

STRIPE_EVENTS = FIXTURES / "stripe" / "events"
PI = "pi_000000000000000000000000"  # the PaymentIntent, charge, refund and dispute of the fixtures
CH = "ch_000000000000000000000000"
RE = "re_000000000000000000000000"
DP = "dp_000000000000000000000000"
USD = {"currency": "USD"}

# file -> what the event asks for (PaymentEvent fields besides provider, event id and type)
STRIPE_EXPECTED: dict[str, dict[str, Any]] = {
    "payment_intent.succeeded.json": {
        "action": Action.CONFIRM,
        "payment_reference": PI,
        "amount": 2000,
        "alias": CH,  # from the PaymentIntent's `charges` list (API before 2022-11-15)
        **USD,
    },
    "charge.succeeded.json": {
        "action": Action.CONFIRM,
        "payment_reference": PI,
        "amount": 2000,
        "alias": CH,
        **USD,
    },
    "checkout.session.completed.json": {
        "action": Action.CONFIRM,
        "payment_reference": PI,
        "amount": 3000,
        **USD,
    },
    "checkout.session.completed.payment_mode.json": {
        "action": Action.CONFIRM,
        "payment_reference": "pi_00000000000000",
        "amount": 25000,
        **USD,
    },
    "payment_intent.payment_failed.json": {
        "action": Action.FAIL,
        "payment_reference": PI,
        **USD,
    },
    "payment_intent.canceled.json": {
        "action": Action.CANCEL,
        "payment_reference": PI,
        **USD,
    },
    # This charge was made without a PaymentIntent: it is known by its charge id.
    "charge.refunded.json": {
        "action": Action.REFUND,
        "payment_reference": CH,
        "alias": CH,
        "refund_reference": RE,
        "amount": 100,
        **USD,
    },
    "charge.refund.updated.json": {
        "action": Action.REFUND,
        "payment_reference": CH,
        "alias": CH,
        "refund_reference": RE,
        "amount": 100,
        **USD,
    },
    "charge.dispute.created.json": {
        "action": Action.DISPUTE,
        "payment_reference": CH,
        "alias": CH,
        "dispute_reference": DP,
        "amount": 100,
        "dispute_stage": 1,
        **USD,
    },
    # An authorised charge captured; this charge was made without a PaymentIntent.
    "charge.captured.json": {
        "action": Action.CONFIRM,
        "payment_reference": CH,
        "alias": CH,
        "amount": 100,
        **USD,
    },
    "charge.failed.json": {"action": Action.UNSUPPORTED},
    # Manual capture: the PaymentIntent waits in requires_capture, the money only held.
    "payment_intent.amount_capturable_updated.json": {
        "action": Action.AUTHORIZE,
        "payment_reference": PI,
        "amount": 2000,
        "alias": CH,
        **USD,
    },
    # Older fixtures (api_version 2018-01-23) with their own ids; the dispute names its charge.
    "charge.dispute.funds_reinstated.json": {
        "action": Action.DISPUTE_FUNDS_REINSTATED,
        "payment_reference": "ch_00000000000000",
        "alias": "ch_00000000000000",
        "dispute_reference": "dp_00000000000000",
        "amount": 1000,
        "dispute_stage": 3,
        **USD,
    },
    "charge.dispute.closed.json": {
        "action": Action.DISPUTE_CLOSED,
        "payment_reference": "ch_00000000000000",
        "alias": "ch_00000000000000",
        "dispute_reference": "dp_00000000000000",
        "amount": 1000,
        "dispute_stage": 4,
        "dispute_won": True,
        **USD,
    },
    # Assembled from Stripe's own OpenAPI fixtures (see MANIFEST.md).
    "charge.dispute.funds_withdrawn.json": {
        "action": Action.DISPUTE_FUNDS_WITHDRAWN,
        "payment_reference": "ch_1PgafuB7WZ01zgkWXYmPNZs8",
        "alias": "ch_1PgafuB7WZ01zgkWXYmPNZs8",
        "dispute_reference": "dp_1Pgc71B7WZ01zgkWMevJiAUx",
        "amount": 1000,
        "dispute_stage": 2,
        **USD,
    },
}


def stripe_event(name: str = "payment_intent.succeeded.json") -> dict[str, Any]:
    event: dict[str, Any] = fixture_json(f"stripe/events/{name}")
    return event


def encode(value: Any) -> bytes:
    return json.dumps(value).encode()


def standard_body(event_type: str = "payment.succeeded", **data: Any) -> bytes:
    fields = {"payment_reference": "pay_1", "amount": 1500, "currency": "EUR", **data}
    return encode({"type": event_type, "data": fields})


# --- Stripe: every fixture ----------------------------------------------------------------


def test_every_stripe_event_fixture_has_an_expectation() -> None:
    assert {path.name for path in STRIPE_EVENTS.glob("*.json")} == set(STRIPE_EXPECTED)


@pytest.mark.parametrize("name", sorted(STRIPE_EXPECTED))
def test_stripe_event_fixture_maps_to_its_action(name: str) -> None:
    raw = fixture_bytes(f"stripe/events/{name}")
    document = json.loads(raw)

    parsed = stripe.parse(raw)

    assert parsed == PaymentEvent(
        provider="stripe",
        event_id=document["id"],
        event_type=document["type"],
        **STRIPE_EXPECTED[name],
    )
    assert parsed.key == EventKey("stripe", document["id"])


@pytest.mark.parametrize(
    "name", ["checkout.session.completed.json", "checkout.session.completed.payment_mode.json"]
)
def test_completed_checkout_confirms_through_its_payment_intent_not_the_session(
    name: str,
) -> None:
    document = stripe_event(name)
    parsed = stripe.parse(encode(document))
    assert parsed.payment_reference == document["data"]["object"]["payment_intent"]
    assert parsed.payment_reference != document["data"]["object"]["id"]


def test_checkout_session_not_yet_paid_is_unsupported() -> None:
    document = stripe_event("checkout.session.completed.json")
    document["data"]["object"]["payment_status"] = "unpaid"
    assert stripe.parse(encode(document)).action is Action.UNSUPPORTED


def test_checkout_session_without_a_payment_intent_is_unsupported() -> None:
    document = stripe_event("checkout.session.completed.json")
    document["data"]["object"]["payment_intent"] = None
    assert stripe.parse(encode(document)).action is Action.UNSUPPORTED


def test_charge_without_a_payment_intent_confirms_under_its_charge_id() -> None:
    document = stripe_event("charge.succeeded.json")
    document["data"]["object"]["payment_intent"] = None
    parsed = stripe.parse(encode(document))
    assert parsed.action is Action.CONFIRM
    assert parsed.payment_reference == CH


def test_payment_intent_with_latest_charge_teaches_that_charge_as_alias() -> None:
    document = stripe_event()
    document["data"]["object"]["latest_charge"] = "ch_latest"
    assert stripe.parse(encode(document)).alias == "ch_latest"


@pytest.mark.parametrize(
    ("status", "action"),
    [
        ("succeeded", Action.REFUND),
        ("failed", Action.REFUND_FAILED),
        ("canceled", Action.REFUND_FAILED),
    ],
)
def test_refund_update_maps_its_status(status: str, action: Action) -> None:
    document = stripe_event("charge.refund.updated.json")
    document["data"]["object"]["status"] = status
    assert stripe.parse(encode(document)).action is action


@pytest.mark.parametrize("status", ["pending", "requires_action"])
def test_refund_not_yet_settled_is_unsupported(status: str) -> None:
    document = stripe_event("charge.refund.updated.json")
    document["data"]["object"]["status"] = status
    assert stripe.parse(encode(document)).action is Action.UNSUPPORTED


def test_refund_of_a_payment_intent_is_matched_through_it() -> None:
    document = stripe_event("charge.refund.updated.json")
    document["data"]["object"]["payment_intent"] = PI
    parsed = stripe.parse(encode(document))
    assert (parsed.payment_reference, parsed.alias) == (PI, CH)


def test_refund_that_names_no_payment_is_malformed() -> None:
    document = stripe_event("charge.refund.updated.json")
    document["data"]["object"]["charge"] = None
    with pytest.raises(MalformedEvent):
        stripe.parse(encode(document))


def test_charge_refunded_without_embedded_refunds_is_unsupported() -> None:
    document = stripe_event("charge.refunded.json")
    del document["data"]["object"]["refunds"]
    assert stripe.parse(encode(document)).action is Action.UNSUPPORTED


@pytest.mark.parametrize(
    ("status", "won"), [("won", True), ("warning_closed", True), ("lost", False)]
)
def test_closed_dispute_says_whether_it_was_won(status: str, won: bool) -> None:
    document = stripe_event("charge.dispute.created.json")
    document["type"] = "charge.dispute.closed"
    document["data"]["object"]["status"] = status
    parsed = stripe.parse(encode(document))
    assert parsed.action is Action.DISPUTE_CLOSED
    assert parsed.dispute_reference == DP
    assert parsed.dispute_won is won


def test_an_expanded_payment_intent_is_matched_by_its_id() -> None:
    document = stripe_event("charge.succeeded.json")
    document["data"]["object"]["payment_intent"] = {"id": "pi_expanded", "object": "x"}
    assert stripe.parse(encode(document)).payment_reference == "pi_expanded"


def test_a_payment_intent_that_is_not_an_id_is_malformed() -> None:
    document = stripe_event("charge.succeeded.json")
    document["data"]["object"]["payment_intent"] = 42
    with pytest.raises(MalformedEvent, match="payment_intent"):
        stripe.parse(encode(document))


def test_stripe_currency_is_stored_in_upper_case() -> None:
    assert stripe.parse(fixture_bytes("stripe/events/payment_intent.succeeded.json")).currency == (
        "USD"
    )


# --- Stripe: malformed bodies -------------------------------------------------------------


def _without(path: tuple[str, ...]) -> bytes:
    document = stripe_event()
    *parents, last = path
    target = document
    for name in parents:
        target = target[name]
    del target[last]
    return encode(document)


def _with(path: tuple[str, ...], value: Any) -> bytes:
    document = stripe_event()
    *parents, last = path
    target = document
    for name in parents:
        target = target[name]
    target[last] = value
    return encode(document)


AMOUNT = ("data", "object", "amount_received")
CURRENCY = ("data", "object", "currency")
MALFORMED_STRIPE: dict[str, bytes] = {
    "not-json": b"{this is not json",
    "not-utf8": b"\xff\xfe{}",
    "empty": b"",
    "json-array": b"[]",
    "json-string": b'"evt_1"',
    "missing-id": _without(("id",)),
    "empty-id": _with(("id",), ""),
    "id-not-a-string": _with(("id",), 12),
    "missing-type": _without(("type",)),
    "missing-data": _without(("data",)),
    "data-not-an-object": _with(("data",), []),
    "missing-data-object": _without(("data", "object")),
    "data-object-null": _with(("data", "object"), None),
    "missing-intent-id": _without(("data", "object", "id")),
    "missing-amount": _without(AMOUNT),
    "amount-as-string": _with(AMOUNT, "2000"),
    "amount-negative": _with(AMOUNT, -1),
    "amount-as-bool": _with(AMOUNT, True),
    "amount-as-float": _with(AMOUNT, 20.5),
    "missing-currency": _without(CURRENCY),
    "currency-too-short": _with(CURRENCY, "us"),
    "currency-not-letters": _with(CURRENCY, "us1"),
    "currency-not-a-string": _with(CURRENCY, 840),
}


@pytest.mark.parametrize("body", MALFORMED_STRIPE.values(), ids=MALFORMED_STRIPE.keys())
def test_malformed_stripe_body_raises_malformed_event(body: bytes) -> None:
    with pytest.raises(MalformedEvent):
        stripe.parse(body)


def test_malformed_event_message_says_which_field() -> None:
    with pytest.raises(MalformedEvent, match=r"data\.object\.amount_received"):
        stripe.parse(_with(AMOUNT, "2000"))


def test_unsupported_stripe_event_needs_only_the_envelope() -> None:
    body = encode({"id": "evt_1", "type": "customer.created", "data": {"object": {}}})
    assert stripe.parse(body).action is Action.UNSUPPORTED


# --- Standard Webhooks schema -------------------------------------------------------------


@pytest.mark.parametrize(
    ("event_type", "action"),
    [
        ("payment.succeeded", Action.CONFIRM),
        ("payment.failed", Action.FAIL),
        ("payment.canceled", Action.CANCEL),
    ],
)
def test_standard_payment_event_maps_to_its_action(event_type: str, action: Action) -> None:
    parsed = standard.parse("shop", "msg_1", standard_body(event_type))
    assert parsed == PaymentEvent(
        provider="shop",
        event_id="msg_1",
        event_type=event_type,
        action=action,
        payment_reference="pay_1",
        amount=1500,
        currency="EUR",
    )


def test_standard_refund_carries_its_refund_reference() -> None:
    body = standard_body("payment.refunded", amount=500, refund_reference="rf_1")
    parsed = standard.parse("shop", "msg_1", body)
    assert parsed.action is Action.REFUND
    assert parsed.refund_reference == "rf_1"
    assert parsed.amount == 500


@pytest.mark.parametrize("refund_reference", [None, "", 7], ids=["missing", "empty", "number"])
def test_standard_refund_without_a_refund_reference_is_malformed(refund_reference: Any) -> None:
    data = {} if refund_reference is None else {"refund_reference": refund_reference}
    with pytest.raises(MalformedEvent, match="refund_reference"):
        standard.parse("shop", "msg_1", standard_body("payment.refunded", **data))


def test_standard_refund_of_nothing_is_malformed() -> None:
    body = standard_body("payment.refunded", amount=0, refund_reference="rf_1")
    with pytest.raises(MalformedEvent):
        standard.parse("shop", "msg_1", body)


def test_standard_unsupported_type_is_unsupported_without_needing_data() -> None:
    parsed = standard.parse("shop", "msg_1", encode({"type": "payment.disputed"}))
    assert parsed.action is Action.UNSUPPORTED
    assert parsed.provider == "shop"
    assert parsed.event_type == "payment.disputed"
    assert parsed.payment_reference is None


def test_standard_currency_in_lower_case_is_normalized() -> None:
    assert standard.parse("shop", "msg_1", standard_body(currency="eur")).currency == "EUR"


def test_the_standard_source_is_the_provider() -> None:
    parsed = standard.parse("marketplace", "msg_9", standard_body())
    assert parsed.key == EventKey("marketplace", "msg_9")


MALFORMED_STANDARD: dict[str, bytes] = {
    "not-json": b"nope",
    "json-array": b"[1]",
    "missing-type": encode({"data": {}}),
    "missing-data": encode({"type": "payment.succeeded"}),
    "missing-reference": encode(
        {"type": "payment.succeeded", "data": {"amount": 1, "currency": "EUR"}}
    ),
    "amount-as-string": standard_body(amount="1500"),
    "amount-negative": standard_body(amount=-5),
    "amount-as-bool": standard_body(amount=False),
    "missing-amount": encode(
        {"type": "payment.succeeded", "data": {"payment_reference": "p", "currency": "EUR"}}
    ),
    "bad-currency": standard_body(currency="EURO"),
}


@pytest.mark.parametrize("body", MALFORMED_STANDARD.values(), ids=MALFORMED_STANDARD.keys())
def test_malformed_standard_body_raises_malformed_event(body: bytes) -> None:
    with pytest.raises(MalformedEvent):
        standard.parse("shop", "msg_1", body)


def test_standard_event_needs_a_webhook_id() -> None:
    with pytest.raises(MalformedEvent, match="webhook-id"):
        standard.parse("shop", "", standard_body())


def test_parse_delivery_routes_stripe_and_standard_sources() -> None:
    stripe_body = fixture_bytes("stripe/events/payment_intent.succeeded.json")
    assert parse_delivery("stripe", "ignored", stripe_body) == stripe.parse(stripe_body)
    assert parse_delivery("shop", "msg_1", standard_body()).provider == "shop"


# --- fingerprints -------------------------------------------------------------------------


def test_fingerprint_is_equal_for_the_same_meaning_in_other_bytes() -> None:
    compact = standard_body()
    reordered = json.dumps(
        {
            "data": {"currency": "eur", "amount": 1500, "payment_reference": "pay_1", "x": 1},
            "type": "payment.succeeded",
        },
        indent=2,
    ).encode()
    assert compact != reordered
    first = standard.parse("shop", "msg_1", compact)
    second = standard.parse("shop", "msg_1", reordered)
    assert first.fingerprint() == second.fingerprint()


def test_fingerprint_differs_when_the_amount_differs() -> None:
    first = standard.parse("shop", "msg_1", standard_body(amount=1500))
    second = standard.parse("shop", "msg_1", standard_body(amount=1501))
    assert first.fingerprint() != second.fingerprint()


@pytest.mark.parametrize(
    "change",
    [
        {"payment_reference": "pay_2"},
        {"currency": "USD"},
    ],
    ids=["reference", "currency"],
)
def test_fingerprint_differs_when_the_payment_or_currency_differs(change: dict[str, Any]) -> None:
    first = standard.parse("shop", "msg_1", standard_body())
    second = standard.parse("shop", "msg_1", standard_body(**change))
    assert first.fingerprint() != second.fingerprint()


def test_fingerprint_differs_between_actions_on_the_same_payment() -> None:
    succeeded = standard.parse("shop", "msg_1", standard_body("payment.succeeded"))
    failed = standard.parse("shop", "msg_1", standard_body("payment.failed"))
    assert succeeded.fingerprint() != failed.fingerprint()


def test_stripe_fingerprint_ignores_pending_webhooks() -> None:
    original = fixture_bytes("stripe/events/payment_intent.succeeded.json")
    resent = stripe_event()
    resent["pending_webhooks"] = resent["pending_webhooks"] + 3
    assert stripe.parse(original).fingerprint() == stripe.parse(encode(resent)).fingerprint()


def test_stripe_fingerprint_differs_when_the_amount_received_differs() -> None:
    original = fixture_bytes("stripe/events/payment_intent.succeeded.json")
    changed = _with(AMOUNT, 1999)
    assert stripe.parse(original).fingerprint() != stripe.parse(changed).fingerprint()


def test_fingerprint_of_a_closed_dispute_depends_on_whether_it_was_won() -> None:
    document = stripe_event("charge.dispute.created.json")
    document["type"] = "charge.dispute.closed"
    document["data"]["object"]["status"] = "won"
    won = stripe.parse(encode(document))
    document["data"]["object"]["status"] = "lost"
    lost = stripe.parse(encode(document))
    assert won.fingerprint() != lost.fingerprint()
