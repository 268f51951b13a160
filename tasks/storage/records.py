"""What the storage hands to the use cases besides domain objects."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from domain.events import PaymentEvent
from domain.outcomes import Outcome
from domain.providers import DEFAULT_READING, Reading, parse_delivery


@dataclass(frozen=True, slots=True)
class DeliveryRecord:
    id: int
    provider: str
    event_id: str
    event_type: str
    received_at: datetime
    replayed_at: datetime | None
    status: str
    attempts: int
    redeliveries: int
    headers: str
    body: bytes
    outcome: Outcome | None

    @property
    def waiting_since(self) -> datetime:
        """Where the grace period for a missing payment starts: receipt, or the last replay."""
        return self.replayed_at or self.received_at

    def event(self, reading: Reading = DEFAULT_READING) -> PaymentEvent:
        return parse_delivery(self.provider, self.event_id, self.body, reading)
