"""`payhook payment` and `payhook stats` on the embedded default (SQLite)."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine

from domain.outcomes import Reason
from domain.providers import stripe
from tasks.migrate import upgrade
from tasks.policy import RetryPolicy
from tasks.processing import process_delivery, record_failure
from tasks.registering import create_order, create_payment, store_delivery
from tasks.storage import queries
from tasks.storage.engine import make_engine
from tasks.storage.queries import lag_summary
from tasks.storage.uow import UnitOfWork
from tests.fixture_files import fixture_json
from tests.unit.common import NOW
from worker.cli import main
from worker.settings import Settings

NO_GRACE = RetryPolicy(unmatched_grace=timedelta(0))
CHARGE = fixture_json("stripe/events/charge.succeeded.json")["data"]["object"]["id"]


def stripe_body(fixture: str, event_id: str, intent: str) -> bytes:
    event = fixture_json(f"stripe/events/{fixture}.json")
    event["id"] = event_id
    obj = event["data"]["object"]
    if obj["object"] == "payment_intent":
        obj["id"] = intent
    else:
        obj["payment_intent"] = intent
    return json.dumps(event).encode()


def register(engine: Engine, provider: str, reference: str) -> None:
    order = f"order-{provider}-{reference}"
    create_order(UnitOfWork(engine), reference=order, total=2000, currency="USD", now=NOW)
    create_payment(
        UnitOfWork(engine),
        order_reference=order,
        provider=provider,
        provider_reference=reference,
        amount=2000,
        currency="USD",
        now=NOW,
    )


def deliver(engine: Engine, body: bytes, *, received: float, processed: float | None) -> int:
    """Store `body` as received `received` seconds after NOW; process it at `processed`."""
    delivery_id = store_delivery(
        UnitOfWork(engine),
        stripe.parse(body),
        headers="{}",
        body=body,
        received_at=NOW + timedelta(seconds=received),
    )
    if processed is not None:
        at = NOW + timedelta(seconds=processed)
        process_delivery(delivery_id, UnitOfWork(engine), at, NO_GRACE)
    return delivery_id


@pytest.fixture
def engine(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Engine:
    for name in ("PAYHOOK_DATABASE_URL", "PAYHOOK_BROKER_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("PAYHOOK_DATA_DIR", str(tmp_path))
    database = Settings().database
    upgrade(database)
    return make_engine(database)


@pytest.fixture
def history(engine: Engine) -> dict[str, int]:
    """A confirmation, its copy, a charge for the same payment, an early confirmation of a
    payment registered only after it was found `unmatched`, and one that waits."""
    register(engine, "stripe", "pi_hist")
    confirmation = stripe_body("payment_intent.succeeded", "evt_hist_1", "pi_hist")
    ids = {
        "applied": deliver(engine, confirmation, received=0, processed=1),
        "copy": deliver(engine, confirmation, received=0.5, processed=3),
        "charge": deliver(
            engine,
            stripe_body("charge.succeeded", "evt_hist_2", "pi_hist"),
            received=1,
            processed=6,
        ),
        "early": deliver(
            engine,
            stripe_body("payment_intent.succeeded", "evt_late", "pi_late"),
            received=2,
            processed=12,
        ),
        "waiting": deliver(
            engine,
            stripe_body("payment_intent.succeeded", "evt_wait", "pi_wait"),
            received=3,
            processed=None,
        ),
    }
    register(engine, "stripe", "pi_late")
    return ids


def run_json(capsys: pytest.CaptureFixture[str], *argv: str) -> Any:
    assert main([*argv, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_payment_shows_every_delivery_about_it_oldest_first(
    history: dict[str, int], capsys: pytest.CaptureFixture[str]
) -> None:
    shown = run_json(capsys, "payment", "pi_hist")
    assert shown["payment"]["state"] == "confirmed"
    lines = [(d["id"], d["outcome"]["kind"], d["outcome"]["reason"]) for d in shown["deliveries"]]
    assert lines == [
        (history["applied"], "applied", None),
        (history["copy"], "acknowledged_duplicate", "same_event"),  # found by duplicate_of
        (history["charge"], "acknowledged_duplicate", "already_in_state"),
    ]
    # The charge id was learned as an alias: it finds the same payment.
    assert run_json(capsys, "payment", CHARGE)["payment"]["id"] == shown["payment"]["id"]


def test_payment_shows_deliveries_that_came_before_it_was_registered(
    history: dict[str, int], capsys: pytest.CaptureFixture[str]
) -> None:
    shown = run_json(capsys, "payment", "pi_late", "--provider", "stripe")
    assert shown["payment"]["state"] == "pending"
    ((line),) = shown["deliveries"]
    assert (line["id"], line["outcome"]["kind"]) == (history["early"], "unmatched")


def test_payment_reads_as_a_table_and_says_what_is_missing_or_ambiguous(
    engine: Engine, history: dict[str, int], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["payment", "pi_hist"]) == 0
    table = capsys.readouterr().out
    assert "confirmed" in table
    assert "applied" in table
    assert main(["payment", "pi_nowhere"]) == 1
    assert capsys.readouterr().err.strip() == "payhook: no payment with reference 'pi_nowhere'"

    register(engine, "shop", "pi_hist")  # a shop payment with the same reference
    assert main(["payment", "pi_hist"]) == 2
    assert "shop, stripe: give --provider" in capsys.readouterr().err
    assert run_json(capsys, "payment", "pi_hist", "--provider", "shop")["deliveries"] == []


def test_stats_count_by_provider_status_and_outcome_with_lag_percentiles(
    history: dict[str, int], capsys: pytest.CaptureFixture[str]
) -> None:
    since = (NOW - timedelta(hours=1)).isoformat()
    stats = run_json(capsys, "stats", "--since", since)
    counts = {(row["status"], row["kind"], row["reason"]): row["count"] for row in stats["counts"]}
    assert counts == {
        ("processed", "applied", None): 1,
        ("processed", "acknowledged_duplicate", "same_event"): 1,
        ("processed", "acknowledged_duplicate", "already_in_state"): 1,
        ("processed", "unmatched", "no_payment"): 1,
        ("received", None, None): 1,
    }
    assert stats["deliveries"] == 5
    # Lags 1, 2.5, 5 and 10 seconds: nearest rank.
    assert stats["lag_seconds"] == {
        "stripe": {"count": 4, "p50": 2.5, "p95": 10.0, "p99": 10.0, "max": 10.0}
    }

    naive = (NOW + timedelta(seconds=2)).replace(tzinfo=None).isoformat()
    later = run_json(capsys, "stats", "--since", naive, "--provider", "stripe")
    assert later["deliveries"] == 2  # no offset: UTC
    assert main(["stats", "--since", since]) == 0
    assert "p95" in capsys.readouterr().out


def test_lag_percentiles_are_nearest_rank() -> None:
    assert lag_summary([]) == {"count": 0}
    summary = lag_summary([float(n) for n in range(100, 0, -1)])
    assert summary == {"count": 100, "p50": 50.0, "p95": 95.0, "p99": 99.0, "max": 100.0}
    assert lag_summary([0.25]) == {"count": 1, "p50": 0.25, "p95": 0.25, "p99": 0.25, "max": 0.25}


def test_deliveries_and_replay_take_a_time_without_an_offset_as_utc(
    history: dict[str, int], capsys: pytest.CaptureFixture[str]
) -> None:
    def naive(seconds: int) -> str:  # NOW + seconds, written without an offset
        return (NOW + timedelta(seconds=seconds)).replace(tzinfo=None).isoformat()

    listed = run_json(capsys, "deliveries", "--since", naive(2))
    assert [d["id"] for d in listed] == [history["waiting"], history["early"]]

    # The early confirmation was recorded unmatched at 12:00:12, received at 12:00:02.
    assert main(["replay", "--outcome", "unmatched", "--since", naive(2)]) == 0
    assert "replayed 1" in capsys.readouterr().out
    assert main(["replay", "--outcome", "unmatched", "--since", naive(3)]) == 0
    assert "replayed 0" in capsys.readouterr().out


def test_replay_of_every_dead_delivery_pages_through_all_of_them(
    engine: Engine, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # Pages of three instead of a thousand: seven dead deliveries need three pages.
    monkeypatch.setattr(queries, "MAX_PAGE", 3)
    dead = []
    for n in range(7):
        body = stripe_body("payment_intent.succeeded", f"evt_dead_{n}", f"pi_dead_{n}")
        delivery_id = deliver(engine, body, received=n, processed=None)
        record_failure(delivery_id, UnitOfWork(engine), NOW, Reason.PROCESSING_ERROR)
        dead.append(delivery_id)
    assert main(["replay", "--outcome", "dead"]) == 0
    assert "replayed 7 of 7 deliveries" in capsys.readouterr().out
    with engine.connect() as conn:
        views = [queries.delivery(conn, delivery_id) for delivery_id in dead]
    assert [(v["status"], v["outcome"]) for v in views if v] == [("received", None)] * 7
