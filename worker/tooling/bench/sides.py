"""The two systems a `payhook bench` run measures side by side, behind one small interface:
payhook (its tables, `payhook serve`, `payhook worker`) and the reference design (its `ref_*`
tables, its receiver and worker). The benchmark reads both through its own connections."""

# Table names in these queries are fixed names of either side, never input: S608 does not apply.
# ruff: noqa: S608

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import Engine, text

from worker.tooling.bench.events import AMOUNT, CURRENCY, intent_of
from worker.tooling.bench.stack import APP_NAMES, Service, Worker


@dataclass
class Side:
    name: str  # "payhook" or "reference"
    receiver: Service
    base_url: str
    worker: Worker
    engine: Engine

    @property
    def deliveries(self) -> str:
        return "deliveries" if self.name == "payhook" else "ref_deliveries"

    @property
    def outcomes(self) -> str:
        return "outcomes" if self.name == "payhook" else "ref_outcomes"

    @property
    def app_names(self) -> tuple[str, str]:
        """The application names of its receiver's and its worker's PostgreSQL connections."""
        return APP_NAMES[f"{self.name} receiver"], APP_NAMES[f"{self.name} worker"]

    def last_delivery_id(self) -> int:
        with self.engine.connect() as conn:
            found = conn.execute(text(f"SELECT coalesce(max(id), 0) FROM {self.deliveries}"))
            return int(found.scalar_one())

    def outcomes_between(self, first: int, last: int) -> int:
        with self.engine.connect() as conn:
            found = conn.execute(
                text(f"SELECT count(*) FROM {self.outcomes} WHERE delivery_id BETWEEN :a AND :b"),
                {"a": first, "b": last},
            )
            return int(found.scalar_one())

    def outcome_counts(self, first: int, last: int) -> dict[str, int]:
        """Outcomes of deliveries first..last by `kind/reason` (as payhook's outcomes read)."""
        label = "kind || coalesce('/' || reason, '')"
        with self.engine.connect() as conn:
            rows = conn.execute(
                text(
                    f"SELECT {label}, count(*) FROM {self.outcomes} "
                    f"WHERE delivery_id BETWEEN :a AND :b GROUP BY 1"
                ),
                {"a": first, "b": last},
            ).all()
        return {str(kind): int(n) for kind, n in rows}

    def lags_s(self, first: int, last: int) -> list[float]:
        """Outcome recorded minus delivery received, for deliveries first..last."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                text(
                    f"SELECT extract(epoch FROM o.recorded_at - d.received_at) "
                    f"FROM {self.deliveries} d JOIN {self.outcomes} o ON o.delivery_id = d.id "
                    f"WHERE d.id BETWEEN :a AND :b"
                ),
                {"a": first, "b": last},
            ).all()
        return [max(0.0, float(row[0])) for row in rows]

    def register(self, refs: Sequence[str]) -> None:
        """An order and its pending payment for each reference, straight into the tables."""
        now = datetime.now(UTC)
        with self.engine.begin() as conn:
            if self.name == "payhook":
                conn.execute(
                    text(
                        "INSERT INTO orders (reference, total, currency, paid_amount, "
                        "refunded_amount, created_at) VALUES (:ref, :total, :cur, 0, 0, :now)"
                    ),
                    [
                        {"ref": f"order-{r}", "total": AMOUNT, "cur": CURRENCY, "now": now}
                        for r in refs
                    ],
                )
                conn.execute(
                    text(
                        "INSERT INTO payments (order_id, provider, provider_reference, amount, "
                        "currency, state, refunded_amount, created_at, updated_at) "
                        "SELECT id, 'stripe', :pref, :amount, :cur, 'pending', 0, :now, :now "
                        "FROM orders WHERE reference = :ref"
                    ),
                    [
                        {
                            "ref": f"order-{r}",
                            "pref": intent_of(r),
                            "amount": AMOUNT,
                            "cur": CURRENCY,
                            "now": now,
                        }
                        for r in refs
                    ],
                )
            else:
                conn.execute(
                    text("INSERT INTO ref_orders (reference, total) VALUES (:ref, :total)"),
                    [{"ref": f"order-{r}", "total": AMOUNT} for r in refs],
                )
                conn.execute(
                    text(
                        "INSERT INTO ref_payments (order_id, reference, amount, currency) "
                        "SELECT id, :pref, :amount, :cur FROM ref_orders WHERE reference = :ref"
                    ),
                    [
                        {"ref": f"order-{r}", "pref": intent_of(r), "amount": AMOUNT, "cur": "usd"}
                        for r in refs
                    ],
                )
