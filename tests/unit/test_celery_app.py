"""The Celery configuration per broker (no broker needed: nothing connects)."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from tasks.shims import RELAY, SWEEP, WAKE, whole_seconds
from worker.settings import Settings, SettingsError, load_settings
from worker.taskqueue.app import (
    DEAD_LETTER,
    NOTIFY_QUEUE,
    QUEUE,
    REDIS_PREFETCH,
    SWEEP_QUEUE,
    create_app,
)

AMQP = "amqp://guest:guest@127.0.0.1:5672//"


def test_rabbitmq_gets_a_quorum_queue_with_a_delivery_limit_and_publisher_confirms(
    tmp_path: Path,
) -> None:
    app = create_app(Settings(broker_url=AMQP, data_dir=tmp_path, delivery_limit=7))
    queue, notify, sweeps = app.conf.task_queues
    assert sweeps.name == SWEEP_QUEUE
    assert (queue.name, notify.name) == (QUEUE, NOTIFY_QUEUE)
    for each in (queue, notify):
        assert each.exchange.type == "topic"  # native delayed delivery cannot route to direct
        assert each.queue_arguments["x-queue-type"] == "quorum"
        assert each.queue_arguments["x-delivery-limit"] == 7
        assert each.queue_arguments["x-dead-letter-exchange"] == DEAD_LETTER
    assert app.conf.broker_transport_options == {"confirm_publish": True}
    assert app.conf.worker_detect_quorum_queues is True
    assert app.conf.task_acks_late is True
    assert app.conf.task_reject_on_worker_lost is True
    assert app.conf.worker_prefetch_multiplier == 1


def test_redis_keeps_its_plain_queue_and_visibility_timeout(tmp_path: Path) -> None:
    app = create_app(Settings(broker_url="redis://127.0.0.1:6379/15", data_dir=tmp_path))
    assert [queue.name for queue in app.conf.task_queues] == [QUEUE, NOTIFY_QUEUE, SWEEP_QUEUE]
    assert app.conf.task_default_queue == QUEUE
    assert app.conf.broker_transport_options["visibility_timeout"] == 3600
    assert "confirm_publish" not in app.conf.broker_transport_options
    assert app.conf.worker_prefetch_multiplier == REDIS_PREFETCH > 1


def test_a_delivery_limit_at_or_below_payhooks_own_redelivery_budget_is_refused(
    tmp_path: Path,
) -> None:
    with pytest.raises(ValidationError, match="PAYHOOK_DELIVERY_LIMIT"):
        Settings(broker_url=AMQP, data_dir=tmp_path, delivery_limit=5)
    Settings(broker_url="redis://127.0.0.1:6379/0", data_dir=tmp_path, delivery_limit=5)


@pytest.mark.parametrize(
    ("delay", "countdown"), [(0.0, 1), (0.3, 1), (1.0, 1), (1.2, 2), (59.5, 60)]
)
def test_retry_countdowns_are_whole_seconds_of_at_least_one(delay: float, countdown: int) -> None:
    assert whole_seconds(delay) == countdown


def test_sweeps_run_on_a_queue_of_their_own_and_expire_within_their_interval(
    tmp_path: Path,
) -> None:
    settings = Settings(
        broker_url="redis://127.0.0.1:6379/15", data_dir=tmp_path, sweep_interval_s=45
    )
    app = create_app(settings)
    entry = app.conf.beat_schedule["sweep"]
    assert entry["task"] == SWEEP
    assert entry["options"] == {"queue": SWEEP_QUEUE, "expires": 45.0}
    assert app.amqp.router.route({}, SWEEP)["queue"].name == SWEEP_QUEUE


def test_the_relay_has_a_queue_of_its_own_and_beat_runs_it_only_with_endpoints(
    tmp_path: Path,
) -> None:
    bare = create_app(Settings(broker_url="redis://127.0.0.1:6379/15", data_dir=tmp_path))
    assert bare.amqp.router.route({}, RELAY)["queue"].name == NOTIFY_QUEUE
    assert "relay" not in bare.conf.beat_schedule
    notifying = create_app(
        Settings(
            broker_url="redis://127.0.0.1:6379/15",
            data_dir=tmp_path,
            notify_url="http://127.0.0.1:9/hook",
            notify_secret="whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            notify_interval_s=7,
        )
    )
    assert notifying.conf.beat_schedule["relay"] == {"task": RELAY, "schedule": 7.0}


def test_the_beat_wakes_waiting_deliveries_as_often_as_configured(tmp_path: Path) -> None:
    app = create_app(Settings(data_dir=tmp_path, wake_interval_s=3))
    schedule = {entry["task"]: entry["schedule"] for entry in app.conf.beat_schedule.values()}
    assert schedule[WAKE] == 3.0
    assert WAKE in app.tasks  # registered, so that a worker runs what the beat sends


@pytest.mark.parametrize(
    ("name", "value"),
    [("PAYHOOK_ADYEN_CAPTURE", "sometimes"), ("PAYHOOK_AWAIT_STATE_S", "-1")],
)
def test_a_bad_capture_mode_or_wait_stops_the_program_with_one_line(
    name: str, value: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError) as refused:
        load_settings()
    assert str(refused.value).startswith(f"bad setting {name}: ")
    assert "\n" not in str(refused.value)
