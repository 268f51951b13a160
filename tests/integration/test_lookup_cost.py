"""The lookups the worker makes read a few index pages, however large the tables grow.

On real PostgreSQL: the same statements the worker runs, explained with their buffers at 200
rows and again at 5,000. The payment lookup of every event (by its reference, or by an alias
learned earlier): one that reads every payment of the provider (a WHERE with an OR over the
reference and the aliases) grows with the table. Giving back a deferred delivery's claims: one
that reads every claim grows with the table. An index lookup stays within a page or two of
where it started.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import psycopg
import pytest
from psycopg.rows import dict_row
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import make_url

from tasks.storage.repositories import _LOCKS_BY_REFERENCE, _RELEASE_CLAIMS
from tests.integration.stack import fresh_database

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

SMALL, LARGE = 200, 5_000
T = TypeVar("T")


@pytest.fixture(scope="module")
def conn() -> Iterator[psycopg.Connection[Any]]:
    url = make_url(fresh_database("lookup_cost")).set(drivername="postgresql")
    with psycopg.connect(url.render_as_string(False), autocommit=True) as connection:
        yield connection


def _add_payments(conn: psycopg.Connection[Any], first: int, last: int) -> None:
    """Payments first..last, each with its order, under `pi_<n>`; every odd one also known as
    `ch_<n>`; and an `adyen` payment under the same reference, which no stripe lookup may find."""
    conn.execute(
        "INSERT INTO orders (id, reference, total, currency, paid_amount, refunded_amount,"
        " created_at) SELECT n, 'order_' || n, 1000, 'EUR', 0, 0, now()"
        " FROM generate_series(%(a)s::bigint, %(b)s::bigint) AS n",
        {"a": first, "b": last},
    )
    for offset, provider in ((0, "stripe"), (LARGE, "adyen")):
        conn.execute(
            "INSERT INTO payments (id, order_id, provider, provider_reference, amount, currency,"
            " state, refunded_amount, created_at, updated_at)"
            " SELECT n + %(offset)s, n, %(provider)s, 'pi_' || n, 1000, 'EUR', 'pending', 0,"
            " now(), now() FROM generate_series(%(a)s::bigint, %(b)s::bigint) AS n",
            {"a": first, "b": last, "offset": offset, "provider": provider},
        )
    conn.execute(
        "INSERT INTO payment_aliases (provider, alias, payment_id)"
        " SELECT 'stripe', 'ch_' || n, n FROM generate_series(%(a)s::bigint, %(b)s::bigint) AS n"
        " WHERE n %% 2 = 1",
        {"a": first, "b": last},
    )


def _at_both_sizes(
    conn: psycopg.Connection[Any],
    add: Callable[[psycopg.Connection[Any], int, int], None],
    tables: str,
    measure: Callable[[int], T],
) -> tuple[T, T]:
    """`measure` of row 101 at SMALL rows, then of row 4001 at LARGE. Statistics are taken when
    the tables are new (as autovacuum does on a fresh install), and not since: the planner has
    not seen the growth, and still must not scan."""
    add(conn, 1, 3)
    conn.execute(f"ANALYZE {tables}")
    add(conn, 4, SMALL)
    small = measure(101)
    add(conn, SMALL + 1, LARGE)
    return small, measure(4001)


def _pages(conn: psycopg.Connection[Any], statement: Any, values: dict[str, Any]) -> int:
    """The most buffers (pages) `statement` reads with `values`, rolled back: with the plan made
    for these values, and with the generic plan PostgreSQL may keep for a prepared statement (as
    the worker prepares it)."""
    compiled = statement.compile(dialect=postgresql.dialect())
    params = {**compiled.params, **values}
    pages = 0
    for mode in ("force_custom_plan", "force_generic_plan"):
        with conn.transaction(force_rollback=True):
            conn.execute(f"SET LOCAL plan_cache_mode = {mode}")
            explained = conn.execute(
                "EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) " + str(compiled), params, prepare=True
            )
            (plan,) = explained.fetchone() or ("[]",)
        root = (json.loads(plan) if isinstance(plan, str) else plan)[0]["Plan"]
        pages = max(pages, int(root["Shared Hit Blocks"]) + int(root["Shared Read Blocks"]))
    return pages


def _lookup(conn: psycopg.Connection[Any], reference: str) -> tuple[int | None, int]:
    """The payment id the worker's locking read finds for a stripe `reference`, and the pages
    it read to find it."""
    compiled = _LOCKS_BY_REFERENCE.compile(dialect=postgresql.dialect())
    params = {**compiled.params, "provider": "stripe", "reference": reference}
    with conn.transaction(force_rollback=True):
        found = conn.cursor(row_factory=dict_row).execute(str(compiled), params).fetchone()
    pages = _pages(conn, _LOCKS_BY_REFERENCE, {"provider": "stripe", "reference": reference})
    return (None if found is None else int(found["id"])), pages


def test_the_lookup_by_reference_reads_the_same_pages_at_5000_payments_as_at_200(
    conn: psycopg.Connection[Any],
) -> None:
    small, large = _at_both_sizes(
        conn,
        _add_payments,
        "orders, payments, payment_aliases",
        lambda n: {ref: _lookup(conn, ref) for ref in (f"pi_{n}", f"ch_{n}", "pi_none")},
    )

    # What it finds: the payment under its own reference, by its alias, and nothing (never the
    # adyen payment under the same reference).
    assert [small[r][0] for r in ("pi_101", "ch_101", "pi_none")] == [101, 101, None]
    assert [large[r][0] for r in ("pi_4001", "ch_4001", "pi_none")] == [4001, 4001, None]
    # What it reads: an index lookup grows by a page or two (a deeper index), a scan of the
    # provider's payments by 25 times.
    for before, after in zip(small.values(), large.values(), strict=True):
        assert after[1] <= before[1] + 3, (small, large)


def test_a_reference_that_is_also_another_payments_alias_finds_the_lowest_id(
    conn: psycopg.Connection[Any],
) -> None:
    """A payment's own reference that another payment learned as an alias (the data allows it):
    the lookup takes the lower id, whichever of the two that is."""
    conn.execute(
        "INSERT INTO orders (id, reference, total, currency, paid_amount, refunded_amount,"
        " created_at) VALUES (90001, 'order_90001', 1000, 'EUR', 0, 0, now())"
    )
    conn.execute(
        "INSERT INTO payments (id, order_id, provider, provider_reference, amount, currency,"
        " state, refunded_amount, created_at, updated_at) VALUES"
        " (90001, 90001, 'stripe', 'pi_low', 1000, 'EUR', 'pending', 0, now(), now()),"
        " (90002, 90001, 'stripe', 'pi_high', 1000, 'EUR', 'pending', 0, now(), now())"
    )
    conn.execute(
        "INSERT INTO payment_aliases (provider, alias, payment_id) VALUES"
        " ('stripe', 'pi_high', 90001), ('stripe', 'pi_low', 90002)"
    )
    assert _lookup(conn, "pi_high")[0] == 90001  # by its alias: the lower id
    assert _lookup(conn, "pi_low")[0] == 90001  # by its own reference: the lower id


def _add_claims(conn: psycopg.Connection[Any], first: int, last: int) -> None:
    """Claims of events first..last, each by the delivery of the same number (the deliveries
    themselves are left out: foreign keys are not checked for this session's inserts)."""
    with conn.transaction():
        conn.execute("SET LOCAL session_replication_role = replica")
        conn.execute(
            "INSERT INTO idempotency_keys (provider, event_id, first_delivery_id, fingerprint,"
            " claimed_at) SELECT 'stripe', 'evt_' || n, n, 'f', now()"
            " FROM generate_series(%(a)s::bigint, %(b)s::bigint) AS n",
            {"a": first, "b": last},
        )


def test_giving_back_a_deliverys_claims_reads_the_same_pages_at_5000_claims_as_at_200(
    conn: psycopg.Connection[Any],
) -> None:
    small, large = _at_both_sizes(
        conn,
        _add_claims,
        "idempotency_keys",
        lambda n: _pages(conn, _RELEASE_CLAIMS, {"delivery_id": n}),
    )

    assert large <= small + 3, (small, large)
    compiled = _RELEASE_CLAIMS.compile(dialect=postgresql.dialect())
    with conn.transaction(force_rollback=True):
        conn.execute(str(compiled), {**compiled.params, "delivery_id": 4001})
        left = conn.execute("SELECT count(*), bool_or(event_id = 'evt_4001') FROM idempotency_keys")
        assert left.fetchone() == (LARGE - 1, False)
