"""What must hold after any run (soak, bench, tests), read from the database — the record —
not from the sender. The one invariant checker, with one meaning of "confirmed"."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field

from sqlalchemy import Connection, Subquery, func, select, text

from tasks.storage.tables import orders, outcomes, payments

# The transitions out of created, pending, authorized and failed confirm a payment;
# `refunded->confirmed` (a refund reversed) does not.
CONFIRMING = (
    "created->confirmed",
    "pending->confirmed",
    "authorized->confirmed",
    "failed->confirmed",
)
# Applied decisions the host is not told of by themselves (domain/notifications.py): a refund's
# failure recorded before its success (the host never heard of the refund), and a dispute's
# money moving while the order's status stays (the order is told when it becomes unpaid or
# paid again).
# (The query below names them: "refund:failed", "dispute:funds_withdrawn",
# "dispute:funds_reinstated".)


@dataclass
class Findings:
    deliveries: int = 0
    outcomes: int = 0
    by_kind: dict[str, int] = field(default_factory=dict)
    lost: list[int] = field(default_factory=list)  # accepted, yet no outcome (or not stored)
    without_outcome: int = 0  # stored deliveries that have no outcome
    several_outcomes: list[int] = field(default_factory=list)
    applied_twice: list[int] = field(default_factory=list)  # payments confirmed more than once
    confirmed_unrecorded: list[int] = field(default_factory=list)  # settled, no confirm outcome
    over_refunded: list[int] = field(default_factory=list)  # refunds past the amount, or sums off
    orders_off: list[str] = field(default_factory=list)  # stored sums or status disagree
    # Recorded dead: no soak fault loses a delivery's attempts often enough to justify that.
    dead: list[int] = field(default_factory=list)

    def failures(self) -> list[str]:
        """One line per broken invariant; empty when every one holds."""
        checks: dict[str, list[int] | list[str]] = {
            "deliveries accepted but without an outcome": self.lost,
            "deliveries with more than one outcome": self.several_outcomes,
            "payments confirmed by more than one delivery": self.applied_twice,
            "settled payments without a recorded confirmation": self.confirmed_unrecorded,
            "payments whose refunds exceed their amount or disagree": self.over_refunded,
            "orders whose sums or status disagree with their payments": self.orders_off,
            "deliveries recorded dead": self.dead,
        }
        lines = [f"{what}: {_few(ids)}" for what, ids in checks.items() if ids]
        if self.without_outcome:
            lines.append(f"stored deliveries without an outcome: {self.without_outcome}")
        return lines


def check(
    conn: Connection,
    accepted: Collection[int] = (),
    order_status: dict[str, str] | None = None,
) -> Findings:
    """Every invariant, given the delivery ids the receiver answered 2xx for and each order's
    status as the API shows it (`None`: the stored sums are checked, the shown status not)."""
    found = Findings()
    found.deliveries = _scalar(conn, "SELECT count(*) FROM deliveries")
    found.outcomes = _scalar(conn, "SELECT count(*) FROM outcomes")
    found.by_kind = {
        kind: int(n)
        for kind, n in conn.execute(
            text("SELECT kind || coalesce('/' || reason, ''), count(*) FROM outcomes GROUP BY 1")
        )
    }
    with_outcome = {row[0] for row in conn.execute(text("SELECT delivery_id FROM outcomes"))}
    found.lost = sorted(set(accepted) - with_outcome)
    found.without_outcome = _scalar(
        conn,
        "SELECT count(*) FROM deliveries d"
        " WHERE NOT EXISTS (SELECT 1 FROM outcomes o WHERE o.delivery_id = d.id)",
    )
    found.dead = _ids(conn, "SELECT delivery_id FROM outcomes WHERE kind = 'dead'")
    found.several_outcomes = _ids(
        conn, "SELECT delivery_id FROM outcomes GROUP BY delivery_id HAVING count(*) > 1"
    )
    confirmations = _confirmations()
    found.applied_twice = sorted(
        conn.execute(select(confirmations.c.payment_id).where(confirmations.c.n > 1)).scalars()
    )
    found.confirmed_unrecorded = sorted(
        conn.execute(
            select(payments.c.id)
            .outerjoin(confirmations, confirmations.c.payment_id == payments.c.id)
            .where(payments.c.state.in_(("confirmed", "refunded")))
            .where(func.coalesce(confirmations.c.n, 0) != 1)
        ).scalars()
    )
    found.over_refunded = _ids(
        conn,
        "SELECT p.id FROM payments p"
        " LEFT JOIN (SELECT payment_id, sum(amount) AS s FROM refunds"
        "   WHERE status = 'succeeded' GROUP BY payment_id) r"
        "   ON r.payment_id = p.id"
        " WHERE p.refunded_amount > p.amount OR p.refunded_amount <> coalesce(r.s, 0)"
        "    OR (p.state = 'refunded') <> (p.refunded_amount = p.amount AND p.amount > 0)",
    )
    found.orders_off = _orders_off(conn, order_status)
    return found


def _orders_off(conn: Connection, order_status: dict[str, str] | None) -> list[str]:
    """Orders whose stored sums differ from their payments' (each confirmation counted from
    the outcomes, each refund from the refunds), or whose status is not what the sums say."""
    confirmations = _confirmations()
    rows = conn.execute(
        select(
            orders.c.reference,
            orders.c.total,
            orders.c.paid_amount,
            orders.c.refunded_amount + orders.c.disputed_amount,
            func.coalesce(func.sum(payments.c.amount * func.coalesce(confirmations.c.n, 0)), 0),
            func.coalesce(func.sum(payments.c.refunded_amount + payments.c.disputed_amount), 0),
        )
        .select_from(orders)
        .outerjoin(payments, payments.c.order_id == orders.c.id)
        .outerjoin(confirmations, confirmations.c.payment_id == payments.c.id)
        .group_by(orders.c.id)
    )
    off = []
    for reference, total, paid_amount, refunded_amount, paid, refunded in rows:
        expected = "paid" if paid - refunded >= total else "pending"
        shown = expected if order_status is None else order_status.get(reference)
        if (paid_amount, refunded_amount) != (paid, refunded) or shown != expected:
            off.append(reference)
    return off


def _confirmations() -> Subquery:
    """Applied confirmations per payment."""
    return (
        select(outcomes.c.payment_id, func.count().label("n"))
        .where(outcomes.c.kind == "applied", outcomes.c.transition.in_(CONFIRMING))
        .group_by(outcomes.c.payment_id)
        .subquery("confirmations")
    )


def _scalar(conn: Connection, sql: str) -> int:
    return int(conn.execute(text(sql)).scalar_one())


def _ids(conn: Connection, sql: str) -> list[int]:
    return sorted(int(row[0]) for row in conn.execute(text(sql)))


def _few(ids: list[int] | list[str]) -> str:
    shown = ", ".join(map(str, ids[:10]))
    return f"{len(ids)} ({shown}{', …' if len(ids) > 10 else ''})"


@dataclass
class Told:
    """What the host endpoint was told, against the outbox and the applied outcomes."""

    notifications: int = 0
    received: int = 0  # distinct webhook-ids the endpoint verified
    missing: list[int] = field(default_factory=list)  # in the outbox, never received
    unknown: list[str] = field(default_factory=list)  # received, not in the outbox
    applied_untold: list[int] = field(default_factory=list)  # applied outcomes, no notification
    told_unapplied: list[int] = field(default_factory=list)  # notifications of no applied outcome
    confirmed_twice: list[int] = field(default_factory=list)  # payments told confirmed more often
    out_of_sequence: list[str] = field(default_factory=list)  # orders not told 1, 2, 3… in order

    def failures(self) -> list[str]:
        checks: dict[str, list[int] | list[str]] = {
            "notifications never received by the host endpoint": self.missing,
            "notifications received that the outbox does not hold": self.unknown,
            "applied deliveries without a notification": self.applied_untold,
            "notifications of deliveries that applied nothing": self.told_unapplied,
            "payments told confirmed more often than they were": self.confirmed_twice,
            "orders whose notifications arrived out of sequence": self.out_of_sequence,
        }
        return [f"{what}: {_few(ids)}" for what, ids in checks.items() if ids]


def check_notifications(conn: Connection, received: list[tuple[str, str, int]]) -> Told:
    """`received`: (webhook-id, order reference, order_sequence) as the endpoint first got each."""
    told = Told()
    ids = {int(row[0]) for row in conn.execute(text("SELECT id FROM notifications"))}
    told.notifications = len(ids)
    got = {message_id for message_id, _, _ in received}
    told.received = len(got)
    told.missing = sorted(ids - {int(m) for m in got if m.isdigit()})
    told.unknown = sorted(m for m in got if not m.isdigit() or int(m) not in ids)
    told.applied_untold = _ids(
        conn,
        "SELECT o.delivery_id FROM outcomes o WHERE o.kind = 'applied'"
        " AND o.transition NOT IN ('refund:failed', 'dispute:funds_withdrawn',"
        " 'dispute:funds_reinstated') AND NOT EXISTS"
        " (SELECT 1 FROM notifications n WHERE n.delivery_id = o.delivery_id)",
    )
    told.told_unapplied = _ids(
        conn,
        "SELECT n.id FROM notifications n WHERE n.delivery_id IS NOT NULL AND NOT EXISTS"
        " (SELECT 1 FROM outcomes o WHERE o.delivery_id = n.delivery_id AND o.kind = 'applied')",
    )
    confirmations = _confirmations()
    told.confirmed_twice = sorted(
        conn.execute(
            select(payments.c.id)
            .outerjoin(confirmations, confirmations.c.payment_id == payments.c.id)
            .where(
                select(func.count())
                .select_from(text("notifications"))
                .where(text("notifications.payment_id = payments.id"))
                .where(text("notifications.type = 'payment.confirmed'"))
                .scalar_subquery()
                > func.coalesce(confirmations.c.n, 0)
            )
        ).scalars()
    )
    sequences: dict[str, list[int]] = {}
    for _, order, sequence in received:
        sequences.setdefault(order, []).append(sequence)
    told.out_of_sequence = sorted(
        order for order, seen in sequences.items() if seen != list(range(1, len(seen) + 1))
    )
    return told
