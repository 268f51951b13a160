"""Prometheus metrics: the receiver's, and the worker's (observed in worker/taskqueue/metrics.py).

Every metric here is labelled, so that under PROMETHEUS_MULTIPROC_DIR no value file is created
before a prefork child first observes something (see worker/taskqueue/metrics_server.py).
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

DELIVERIES_RECEIVED = Counter(
    "payhook_deliveries_received",
    "Webhook deliveries received, by provider and the status answered",
    ["provider", "answer"],
)

SIGNATURE_FAILURES = Counter(
    "payhook_signature_failures",
    "Webhook requests answered 401: a missing or wrong signature, or a timestamp outside the "
    "tolerance, by provider",
    ["provider"],
)
BROKER_UP = Gauge(
    "payhook_broker_up",
    "1 when the receiver reached the broker at its last readiness check, else 0 (deliveries "
    "are still stored; the sweeper publishes them once the broker is back)",
)
WEBHOOK_REQUEST_DURATION = Histogram(
    "payhook_webhook_request_duration_seconds",
    "Time to answer a webhook request, by route template and status",
    ["route", "status"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)

# The worker side.
OUTCOMES = Counter(
    "payhook_outcomes",
    "Outcomes recorded by the workers, by kind and reason",
    ["kind", "reason"],
)
TASK_DURATION = Histogram(
    "payhook_task_duration_seconds",
    "Time a payhook task ran in a worker process, by task",
    ["task"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0),
)
OUTCOME_LAG = Histogram(
    "payhook_outcome_lag_seconds",
    "From a delivery's receipt (or its replay) to its recorded outcome, by provider",
    ["provider"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0, 21600.0),
)
TASK_RETRIES = Counter(
    "payhook_task_retries",
    "Task retries through the broker, by task and cause (the transient error's type)",
    ["task", "cause"],
)
DEFERRALS = Counter(
    "payhook_deferrals",
    "Attempts that left a delivery waiting in the database, by reason: no_payment (none "
    "registered yet) or awaiting_state (the payment has not reached the state the event needs)",
    ["reason"],
)
TASK_FAILURES = Counter(
    "payhook_task_failures",
    "Tasks that raised instead of returning (the delivery stays for the sweeper), by task",
    ["task"],
)
DEAD_DELIVERIES = Counter(
    "payhook_dead_deliveries",
    "Deliveries recorded dead (replayable), by reason",
    ["reason"],
)
NOTIFICATION_SENDS = Counter(
    "payhook_notification_sends",
    "Host notifications posted by the relay, by result: delivered (2xx), retrying (backing "
    "off), failed (past PAYHOOK_NOTIFY_RETRY_S; replayable)",
    ["result"],
)
