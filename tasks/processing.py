"""Process one delivery: exactly one outcome, every payment change applied once."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from domain.events import Action, MalformedEvent, PaymentEvent
from domain.outcomes import Outcome, OutcomeKind, Reason
from domain.payments import needs_history
from domain.providers import DEFAULT_READING, Reading
from tasks.notifications import record_changes
from tasks.policy import RetryPolicy
from tasks.storage.records import DeliveryRecord
from tasks.storage.starting import Started
from tasks.storage.uow import UnitOfWork

_AGREES = frozenset({OutcomeKind.APPLIED, OutcomeKind.ACKNOWLEDGED_DUPLICATE})
# Outcomes a later attempt could change: their event's claim goes back.
_RELEASES_CLAIM = frozenset({OutcomeKind.UNMATCHED, OutcomeKind.DEAD})


class UnknownDelivery(LookupError):
    """A task for a delivery id that is not in the database."""


@dataclass(frozen=True, slots=True)
class Processed:
    """What became of one attempt: `retry_in` is set when the delivery was deferred (seconds
    to its next attempt); `woken` are deliveries waiting on this change, to publish now."""

    delivery_id: int
    provider: str
    event_id: str
    outcome: Outcome
    retry_in: float | None = None
    woken: tuple[int, ...] = ()
    # Set when this run recorded the outcome: since when the delivery waited for it (receipt or
    # last replay), and when it was recorded. None when it returned one recorded before.
    since: datetime | None = None
    recorded_at: datetime | None = None

    @classmethod
    def of(
        cls,
        delivery: DeliveryRecord,
        outcome: Outcome,
        retry_in: float | None = None,
        woken: tuple[int, ...] = (),
    ) -> Processed:
        return cls(delivery.id, delivery.provider, delivery.event_id, outcome, retry_in, woken)

    @classmethod
    def recorded(
        cls, delivery: DeliveryRecord, outcome: Outcome, now: datetime, woken: tuple[int, ...] = ()
    ) -> Processed:
        """The outcome this run recorded (and committed) at `now`."""
        return _remember(
            cls(
                delivery.id,
                delivery.provider,
                delivery.event_id,
                outcome,
                woken=woken,
                since=delivery.waiting_since,
                recorded_at=now,
            )
        )

    @property
    def lag_s(self) -> float | None:
        """Seconds from receipt (or the last replay) to the outcome this run recorded."""
        if self.since is None or self.recorded_at is None:
            return None
        return max(0.0, (self.recorded_at - self.since).total_seconds())

    def as_dict(self) -> dict[str, object]:
        """The small dict a task returns, so that Flower shows the outcome."""
        return {
            "kind": self.outcome.kind.value,
            "reason": None if self.outcome.reason is None else self.outcome.reason.value,
            "transition": self.outcome.transition,
            "delivery_id": self.delivery_id,
            "provider": self.provider,
            "event_id": self.event_id,
            "payment_id": self.outcome.payment_id,
            "duplicate_of": self.outcome.duplicate_of,
        }


def process_delivery(
    delivery_id: int,
    uow: UnitOfWork,
    now: datetime,
    policy: RetryPolicy,
    reading: Reading = DEFAULT_READING,
) -> Processed:
    with uow:
        delivery = _lock(uow, delivery_id)
        if delivery.outcome is not None:  # redelivered by the broker, or re-published
            return _remember(Processed.of(delivery, delivery.outcome))
        event, outcome = _decide(uow, delivery, now, reading)
        if outcome.is_deferred and not policy.wait_over(
            outcome.reason, delivery.waiting_since, now
        ):
            return _defer(uow, delivery, event, outcome, now, policy)
        if outcome.is_deferred:
            outcome = outcome.expire()  # unmatched: replayable, and its claim given back
        woken = _finish(uow, delivery.id, outcome, now, event)
    return Processed.recorded(delivery, outcome, now, woken)


def _defer(
    uow: UnitOfWork,
    delivery: DeliveryRecord,
    event: PaymentEvent | None,
    outcome: Outcome,
    now: datetime,
    policy: RetryPolicy,
) -> Processed:
    """Wait in the database for the payment, or for its state; the decision changed nothing,
    and the claim goes back, so that a resend of the event meanwhile starts afresh."""
    retry_in = policy.deferral_delay(delivery.attempts, reason=outcome.reason)
    reference = (
        event.payment_reference if event is not None and outcome.payment_id is None else None
    )
    uow.idempotency_keys.release(delivery.id)
    uow.deliveries.defer(
        delivery.id,
        now + timedelta(seconds=retry_in),
        awaiting_payment_id=outcome.payment_id,
        awaiting_reference=reference,
    )
    uow.commit()
    return Processed.of(delivery, outcome, retry_in)


def start_attempt(
    delivery_id: int, uow: UnitOfWork, now: datetime, policy: RetryPolicy
) -> Processed | None:
    """Mark the delivery started, counting an earlier attempt that started and never finished.

    Committed on its own, before processing, so that a process killed mid-task leaves its mark
    behind; a message merely handed out again (a warm shutdown, a re-publish) counts nothing.
    Past the budget of lost attempts the delivery is recorded `dead`. Returns the outcome when
    there is nothing left to process. The mark is one statement, committed as it runs; on
    PostgreSQL it records a copy of an event processed before (tasks/storage/starting.py).
    """
    with uow.autocommitting():
        started = uow.deliveries.start(delivery_id, now, max_lost=policy.max_sweeps)
        if started is None or started.lost <= policy.max_sweeps:
            uow.commit()
            return None if started is None else _recorded_copy(started, now)
    return record_failure(delivery_id, uow, now, Reason.WORKER_LOST)


def _recorded_copy(started: Started, now: datetime) -> Processed | None:
    """The outcome the start mark recorded, `acknowledged_duplicate/same_event`, as `_decide`
    records it; None when it recorded none."""
    if started.duplicate_of is None:
        return None
    return _remember(
        Processed(
            started.delivery_id,
            started.provider,
            started.event_id,
            Outcome.same_event(started.duplicate_of),
            since=started.waiting_since,
            recorded_at=now,
        )
    )


def release_attempt(delivery_id: int, uow: UnitOfWork, retry_at: datetime) -> None:
    """An attempt that ends in a retry (a transient error) was not lost: its task is due again
    at `retry_at`."""
    with uow:
        uow.deliveries.release(delivery_id, retry_at)
        uow.commit()


def record_failure(delivery_id: int, uow: UnitOfWork, now: datetime, reason: Reason) -> Processed:
    """Record a delivery as `dead` (replayable), unless it already has an outcome."""
    with uow:
        delivery = _lock(uow, delivery_id)
        if delivery.outcome is not None:
            return _remember(Processed.of(delivery, delivery.outcome))
        outcome = Outcome.dead(reason)
        _finish(uow, delivery.id, outcome, now)
    return Processed.recorded(delivery, outcome, now)


# The last delivery this process gave an outcome to, for the worker's metrics: the task-success
# observer (worker/taskqueue/metrics.py) reads whether this run recorded it, and its lag, here
# instead of asking the database again (a query per delivery, a third of a worker child's CPU).
_LAST: list[Processed] = []


def _remember(processed: Processed) -> Processed:
    _LAST[:] = [processed]
    return processed


def last_processed(delivery_id: int) -> Processed | None:
    """What this process's last run of `delivery_id` gave it, once; None if it was not the last."""
    found = _LAST.pop() if _LAST else None
    return found if found is not None and found.delivery_id == delivery_id else None


def _finish(
    uow: UnitOfWork,
    delivery_id: int,
    outcome: Outcome,
    now: datetime,
    event: PaymentEvent | None = None,
) -> tuple[int, ...]:
    """Record the delivery's one outcome and commit it with everything the decision changed.

    An applied change wakes, in the same statement, the deliveries waiting on what it did: the
    payment's new state, or the payment now known under another reference of the event. Their
    ids are returned, to publish after the commit.
    """
    if outcome.kind is OutcomeKind.APPLIED and outcome.payment_id is not None and event is not None:
        woken = uow.deliveries.finish(
            delivery_id,
            outcome,
            now,
            wake_payment_id=outcome.payment_id,
            wake_provider=event.provider,
            wake_reference=event.alias,
            telling=uow.outbox.take(),  # its notifications, in the same statement
        )
    else:
        woken = uow.deliveries.finish(delivery_id, outcome, now)
    if outcome.kind in _RELEASES_CLAIM:
        uow.idempotency_keys.release(delivery_id)  # the provider's resend processes normally
    uow.commit()
    return tuple(woken)


def _lock(uow: UnitOfWork, delivery_id: int) -> DeliveryRecord:
    delivery = uow.deliveries.lock(delivery_id)
    if delivery is None:
        raise UnknownDelivery(f"delivery {delivery_id} does not exist")
    return delivery


def _decide(
    uow: UnitOfWork, delivery: DeliveryRecord, now: datetime, reading: Reading
) -> tuple[PaymentEvent | None, Outcome]:
    try:
        event = delivery.event(reading)
    except MalformedEvent:
        # A signed body payhook does not understand (yet): stored all the same, replayable.
        return None, Outcome.rejected(Reason.MALFORMED_EVENT)
    fingerprint = event.fingerprint()
    holder = uow.idempotency_keys.claim(event.key, delivery.id, fingerprint, now)
    if holder is not None:
        first_delivery, first_fingerprint = holder
        if first_delivery == delivery.id:
            return event, _apply(uow, delivery, event, now)  # our own claim, kept by an earlier run
        if first_fingerprint != fingerprint:
            return event, Outcome.rejected(Reason.PAYLOAD_CONFLICT, duplicate_of=first_delivery)
        return event, Outcome.same_event(first_delivery)
    return event, _apply(uow, delivery, event, now)


def _apply(
    uow: UnitOfWork, delivery: DeliveryRecord, event: PaymentEvent, now: datetime
) -> Outcome:
    if event.action is Action.UNSUPPORTED or event.payment_reference is None:
        return Outcome.ignored(Reason.UNSUPPORTED_EVENT)
    # Only the event's own reference finds the payment; its alias is learned, never searched,
    # so that a reused or mistaken secondary id can never move another payment.
    locked = uow.payments.lock_by_reference(
        event.provider, event.payment_reference, with_history=needs_history(event.action)
    )
    if locked is None:
        return Outcome.deferred(Reason.NO_PAYMENT)
    order, payment = locked

    before, order_before = payment.snapshot(), order.snapshot()
    outcome = payment.apply(event, order, delivery.id)
    # Learn the event's other reference of this payment, unless the event was refused.
    alias = (
        event.alias
        if event.alias is not None
        and event.alias != payment.provider_reference
        and outcome.kind in _AGREES
        else None
    )
    if outcome.kind is OutcomeKind.APPLIED:
        uow.payments.save(order, payment, before, now, alias=alias)
        # The host hears of it in the same transaction: both commit, or neither.
        record_changes(
            uow,
            order_before=order_before,
            payment_before=before,
            order=order,
            payment=payment,
            transition=outcome.transition,
            delivery_id=delivery.id,
            now=now,
        )
    elif alias is not None:
        uow.payments.add_alias(event.provider, alias, payment.id)
    return outcome
