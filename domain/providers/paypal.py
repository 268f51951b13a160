"""PayPal events: which ones move a payment, and through which reference.

Hosts register a PayPal payment under the id they get at checkout, before anything is
captured: the order id of the Orders v2 API (`5O190127TN364715T`), or the payment id of the
legacy Payments v1 API (`PAY-…`). An event is matched through that id when it carries it
(`supplementary_data.related_ids.order_id`, the order itself, or v1's `parent_payment`), and
through the capture id when it does not. A capture event that carries both teaches payhook
the capture id as an alias, so that a later refund naming only the capture (in its `up`
link) still finds the payment. Events that name no order (PayPal's older samples, captures
made outside the Orders API) are matched by the capture id: such a payment is registered
under its capture id.

Amounts are decimal strings ("2.51"): they become minor units exactly, by the currency's
ISO 4217 exponent, and a value with more decimals than the currency has is refused.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any
from urllib.parse import urlparse

from domain.events import Action, MalformedEvent, PaymentEvent
from domain.money import exponent
from domain.providers._json import currency, load_object, mapping, optional_text, text

PROVIDER = "paypal"
_WHERE = "resource"
# PayPal's own pattern for money values, ASCII digits only: "2.51", "100", "-0.15", ".5".
_DECIMAL = re.compile(r"(-?)([0-9]*)(?:\.([0-9]+))?")
_MAX_DECIMAL_CHARS = 32  # PayPal's limit for a money value
# A refund points at its capture through a link: /v2/payments/captures/{id} (rel "up") or,
# in v1, /v1/payments/capture/{id} (rel "capture").
_CAPTURE_LINK = re.compile(r"/v[12]/payments/captures?/([A-Za-z0-9-]+)/?")  # the whole path

Fields = dict[str, Any]


def parse(body: bytes) -> PaymentEvent:
    """Normalize a PayPal event body (v1 or v2 resource); other event types are UNSUPPORTED."""
    event = load_object(body)
    event_id = text(event, "id", "event")
    event_type = text(event, "event_type", "event")
    reader = _READERS.get(event_type)
    fields = reader(mapping(event, _WHERE, "event")) if reader is not None else None
    if fields is None:
        return PaymentEvent(PROVIDER, event_id, event_type, Action.UNSUPPORTED)
    return PaymentEvent(PROVIDER, event_id, event_type, **fields)


def minor_units_of(value: object, currency_code: str, where: str, *, negative: bool = False) -> int:
    """An exact decimal string in minor units: ("2.51", "USD") -> 251, ("100", "JPY") -> 100.

    Never through a float. `negative` accepts a leading minus (v1 refunds say "-0.15") and
    returns the magnitude.
    """
    if not isinstance(value, str) or len(value) > _MAX_DECIMAL_CHARS:
        raise MalformedEvent(f"{where} must be a decimal string")
    match = _DECIMAL.fullmatch(value)
    if match is None or not (match[2] or match[3]):
        raise MalformedEvent(f"{where} must be a decimal string, not {value!r}")
    sign, whole, fraction = match[1], match[2], match[3] or ""
    if sign and not negative:
        raise MalformedEvent(f"{where} must not be negative")
    digits = exponent(currency_code)
    if len(fraction) > digits:
        raise MalformedEvent(
            f"{where} {value!r} has more decimals than {currency_code} allows ({digits})"
        )
    scale: int = 10**digits
    return int(whole or "0") * scale + int(fraction.ljust(digits, "0") or "0")


def _capture(action: Action) -> Callable[[dict[str, Any]], Fields]:
    """PAYMENT.CAPTURE.COMPLETED / DENIED: the resource is the capture (v1 or v2)."""

    def read(resource: dict[str, Any]) -> Fields:
        capture = text(resource, "id", _WHERE)
        checkout = _checkout_id(resource)
        amount, code = _money(resource)
        return {
            "action": action,
            "payment_reference": checkout or capture,
            "alias": capture if checkout else None,
            "amount": amount,
            "currency": code,
        }

    return read


def _returned(resource: dict[str, Any]) -> Fields:
    """PAYMENT.CAPTURE.REFUNDED / REVERSED: money went back to the buyer.

    The resource is the refund (PayPal's samples, v1 and v2), which names its capture; one
    that names no capture is taken to be the capture itself, reversed for its amount.
    """
    returned = text(resource, "id", _WHERE)
    capture = _refunded_capture(resource) or returned
    checkout = _checkout_id(resource)
    amount, code = _money(resource, negative=True)
    return {
        "action": Action.REFUND,
        "payment_reference": checkout or capture,
        "alias": capture if checkout else None,
        "refund_reference": returned,
        "amount": amount,
        "currency": code,
    }


def _authorization(action: Action) -> Callable[[dict[str, Any]], Fields]:
    """PAYMENT.AUTHORIZATION.CREATED / VOIDED: the resource is the authorization (v1 or v2).

    Money is held, not captured: a created authorization makes the payment `authorized`; a
    voided one (by the merchant, or expired after its validity period) cancels it.
    """

    def read(resource: dict[str, Any]) -> Fields:
        authorization = text(resource, "id", _WHERE)
        amount, code = _money(resource)
        return {
            "action": action,
            "payment_reference": _checkout_id(resource) or authorization,
            "amount": amount,
            "currency": code,
        }

    return read


def _dispute(resource: dict[str, Any], stage: int, action: Action) -> Fields:
    """A CUSTOMER.DISPUTE.* resource: the dispute names the capture it disputes."""
    transactions = _objects(resource, "disputed_transactions", _WHERE)
    captures = [t.get("seller_transaction_id") for t in transactions]
    if not captures or not isinstance(captures[0], str) or not captures[0]:
        raise MalformedEvent(f"{_WHERE}.disputed_transactions names no seller_transaction_id")
    money = mapping(resource, "dispute_amount", _WHERE)
    code = currency(money, "currency_code", f"{_WHERE}.dispute_amount")
    amount = minor_units_of(money.get("value"), code, f"{_WHERE}.dispute_amount.value")
    return {
        "action": action,
        "payment_reference": captures[0],
        "dispute_reference": text(resource, "dispute_id", _WHERE),
        "dispute_stage": stage,
        "amount": amount,
        "currency": code,
    }


def _dispute_created(resource: dict[str, Any]) -> Fields:
    """CUSTOMER.DISPUTE.CREATED: a case opened; PayPal may hold the money, none is lost yet."""
    return _dispute(resource, 1, Action.DISPUTE)


def _dispute_resolved(resource: dict[str, Any]) -> Fields:
    """CUSTOMER.DISPUTE.RESOLVED: lost when resolved for the buyer or accepted by the seller
    (the amount refunded to the buyer, else the disputed amount), won otherwise."""
    fields = _dispute(resource, 2, Action.DISPUTE_CLOSED)
    outcome = mapping(resource, "dispute_outcome", _WHERE)
    lost = outcome.get("outcome_code") in _LOST_OUTCOMES
    fields["dispute_won"] = not lost
    refunded = outcome.get("amount_refunded")
    if lost and isinstance(refunded, dict):
        code = currency(refunded, "currency_code", f"{_WHERE}.dispute_outcome.amount_refunded")
        if code != fields["currency"]:
            raise MalformedEvent("the dispute's refund is in another currency than the dispute")
        where = f"{_WHERE}.dispute_outcome.amount_refunded.value"
        fields["amount"] = minor_units_of(refunded.get("value"), code, where)
    return fields


_LOST_OUTCOMES = frozenset({"RESOLVED_BUYER_FAVOUR", "ACCEPTED"})


def _order_completed(resource: dict[str, Any]) -> Fields | None:
    """CHECKOUT.ORDER.COMPLETED: the resource is the order; its completed captures are paid."""
    order = text(resource, "id", _WHERE)
    captures = _completed_captures(resource)
    if not captures:
        return None  # authorized only, or captures still pending: a capture event confirms
    paid = [_money(capture) for capture in captures]
    codes = {code for _amount, code in paid}
    if len(codes) != 1:
        raise MalformedEvent("the order's captures are in several currencies")
    return {
        "action": Action.CONFIRM,
        "payment_reference": order,
        "alias": text(captures[0], "id", "capture") if len(captures) == 1 else None,
        "amount": sum(amount for amount, _code in paid),
        "currency": codes.pop(),
    }


def _completed_captures(order: dict[str, Any]) -> list[dict[str, Any]]:
    captures = []
    for unit in _objects(order, "purchase_units", _WHERE):
        if "payments" in unit:
            payments = mapping(unit, "payments", "purchase_unit")
            listed = _objects(payments, "captures", "purchase_unit.payments")
            captures += [capture for capture in listed if capture.get("status") == "COMPLETED"]
    return captures


def _money(resource: dict[str, Any], *, negative: bool = False) -> tuple[int, str]:
    """`amount` as v2 writes it ({value, currency_code}) or v1 ({total, currency})."""
    amount = mapping(resource, "amount", _WHERE)
    where = f"{_WHERE}.amount"
    if "value" in amount or "currency_code" in amount:
        code = currency(amount, "currency_code", where)
        return minor_units_of(amount.get("value"), code, f"{where}.value", negative=negative), code
    code = currency(amount, "currency", where)
    return minor_units_of(amount.get("total"), code, f"{where}.total", negative=negative), code


def _checkout_id(resource: dict[str, Any]) -> str | None:
    """The id the host registered: the v2 order id, else the v1 payment id, if named."""
    supplementary = resource.get("supplementary_data")
    related = supplementary.get("related_ids") if isinstance(supplementary, dict) else None
    if isinstance(related, dict):
        order = optional_text(related, "order_id", "supplementary_data.related_ids")
        if order is not None:
            return order
    return optional_text(resource, "parent_payment", _WHERE)


def _refunded_capture(resource: dict[str, Any]) -> str | None:
    supplementary = resource.get("supplementary_data")
    related = supplementary.get("related_ids") if isinstance(supplementary, dict) else None
    if isinstance(related, dict):
        capture = optional_text(related, "capture_id", "supplementary_data.related_ids")
        if capture is not None:
            return capture
    capture = optional_text(resource, "capture_id", _WHERE)  # v1 refunds
    if capture is not None:
        return capture
    for link in _objects(resource, "links", _WHERE):
        if link.get("rel") in ("up", "capture") and isinstance(link.get("href"), str):
            found = _CAPTURE_LINK.fullmatch(urlparse(link["href"]).path)
            if found is not None:
                return found[1]
    return None


def _objects(obj: dict[str, Any], name: str, where: str) -> list[dict[str, Any]]:
    """An optional list of objects; anything else in its place is malformed."""
    value = obj.get(name)
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(item, dict) for item in value):
        raise MalformedEvent(f"{where}.{name} must be a list of objects")
    return value


_READERS: dict[str, Callable[[dict[str, Any]], Fields | None]] = {
    "PAYMENT.CAPTURE.COMPLETED": _capture(Action.CONFIRM),
    "PAYMENT.CAPTURE.DENIED": _capture(Action.FAIL),
    "PAYMENT.CAPTURE.REFUNDED": _returned,
    "PAYMENT.CAPTURE.REVERSED": _returned,
    "CHECKOUT.ORDER.COMPLETED": _order_completed,
    "PAYMENT.AUTHORIZATION.CREATED": _authorization(Action.AUTHORIZE),
    "PAYMENT.AUTHORIZATION.VOIDED": _authorization(Action.CANCEL),
    "CUSTOMER.DISPUTE.CREATED": _dispute_created,
    "CUSTOMER.DISPUTE.RESOLVED": _dispute_resolved,
}
