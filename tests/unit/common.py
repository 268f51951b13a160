"""Constants the unit tests share."""

from __future__ import annotations

from datetime import UTC, datetime

# The unit tests' clock: the day of the Stripe and PayPal fixtures, so that their timestamps
# and certificates are current.
NOW = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
