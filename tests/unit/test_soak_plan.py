"""What `payhook soak` plans to send (no servers)."""

from __future__ import annotations

import json
import random
from collections import Counter

from domain.events import Action
from domain.providers import stripe
from worker.tooling.soak.plan import Registration, make_plan


def test_a_fifth_of_the_deliveries_are_copies_of_other_events() -> None:
    plan = make_plan(1000, random.Random(1))
    ids = Counter(json.loads(body)["id"] for body in plan.bodies)
    assert len(plan.bodies) == 1000
    assert plan.distinct_events == len(ids) == 800
    assert sum(n - 1 for n in ids.values()) == 200


def test_a_copy_means_the_same_as_its_original_though_its_bytes_differ() -> None:
    plan = make_plan(500, random.Random(2))
    by_id: dict[str, set[str]] = {}
    bodies: dict[str, set[bytes]] = {}
    for body in plan.bodies:
        event = stripe.parse(body)
        by_id.setdefault(event.event_id, set()).add(event.fingerprint())
        bodies.setdefault(event.event_id, set()).add(body)
    assert all(len(fingerprints) == 1 for fingerprints in by_id.values())
    assert any(len(variants) > 1 for variants in bodies.values())


def test_every_event_names_a_planned_payment_and_the_mix_covers_each_action() -> None:
    plan = make_plan(4000, random.Random(3))
    references = {p.intent for p in plan.payments} | {p.charge for p in plan.payments}
    events = [stripe.parse(body) for body in plan.bodies]
    assert {e.payment_reference for e in events if e.action is not Action.UNSUPPORTED} <= (
        references
    )
    actions = Counter(e.action for e in events)
    assert set(actions) >= {
        Action.CONFIRM,
        Action.FAIL,
        Action.REFUND,
        Action.REFUND_FAILED,
        Action.DISPUTE,
        Action.UNSUPPORTED,
    }
    assert 200 <= len(plan.payments) <= 300
    registrations = Counter(p.registration for p in plan.payments)
    assert registrations[Registration.NEVER] >= 1
    assert registrations[Registration.LATE] >= 1


def test_the_same_seed_plans_the_same_run() -> None:
    assert make_plan(300, random.Random(9)).bodies == make_plan(300, random.Random(9)).bodies
