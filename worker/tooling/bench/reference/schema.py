"""The reference design's tables, in the benchmark's database beside payhook's."""

from __future__ import annotations

TABLES = """
DROP TABLE IF EXISTS ref_outcomes, ref_claims, ref_deliveries, ref_payments, ref_orders;
CREATE TABLE ref_orders (
    id bigserial PRIMARY KEY,
    reference text NOT NULL UNIQUE,
    total bigint NOT NULL,
    paid bigint NOT NULL DEFAULT 0
);
CREATE TABLE ref_payments (
    id bigserial PRIMARY KEY,
    order_id bigint NOT NULL REFERENCES ref_orders (id),
    reference text NOT NULL UNIQUE,
    amount bigint NOT NULL,
    currency text NOT NULL,
    state text NOT NULL DEFAULT 'pending',
    confirmed_by bigint
);
-- The order's sum reads its payments by this index: without it, every confirmation read the
-- whole table, and the reference grew dearer with every phase.
CREATE INDEX ref_payments_order_id ON ref_payments (order_id);
CREATE TABLE ref_deliveries (
    id bigserial PRIMARY KEY,
    event_id text NOT NULL,
    event_type text NOT NULL,
    received_at timestamptz NOT NULL DEFAULT now(),
    headers text NOT NULL,
    body bytea NOT NULL
);
CREATE TABLE ref_claims (
    event_id text PRIMARY KEY,
    delivery_id bigint NOT NULL
);
CREATE TABLE ref_outcomes (
    delivery_id bigint PRIMARY KEY REFERENCES ref_deliveries (id),
    kind text NOT NULL,
    reason text,
    payment_id bigint,
    recorded_at timestamptz NOT NULL DEFAULT now()
);
"""
