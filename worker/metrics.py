"""Prometheus metrics of the receiver."""

from __future__ import annotations

from prometheus_client import Counter

DELIVERIES_RECEIVED = Counter(
    "payhook_deliveries_received",
    "Webhook deliveries received, by provider and the status answered",
    ["provider", "answer"],
)
