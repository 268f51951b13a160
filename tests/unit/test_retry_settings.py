"""The retry caps and the lock timeout come from the settings (no server needed)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from celery import Celery
from pydantic import ValidationError

from tasks.policy import RetryPolicy
from tasks.storage import engine as engine_module
from tasks.storage.engine import LOCK_TIMEOUT_MS
from worker.runtime import ProcessRuntime
from worker.settings import Settings

REDIS = "redis://127.0.0.1:6379/0"


def test_short_retry_caps_allow_a_short_visibility_timeout(tmp_path: Path) -> None:
    settings = Settings(
        data_dir=tmp_path,
        broker_url=REDIS,
        deferral_cap_s=2,
        transient_cap_s=3,
        task_time_limit_s=15,
        visibility_timeout_s=19,
    )
    policy = settings.retry_policy()
    assert (policy.deferral_cap_s, policy.transient_cap_s) == (2, 3)
    assert policy.longest_countdown_s == 3
    assert all(policy.deferral_delay(n) <= 2 for n in range(40))
    assert all(policy.transient_delay(n) <= 3 for n in range(40))


def test_a_visibility_timeout_within_the_longest_countdown_plus_time_limit_is_refused(
    tmp_path: Path,
) -> None:
    with pytest.raises(ValidationError, match="PAYHOOK_VISIBILITY_TIMEOUT_S"):
        Settings(
            data_dir=tmp_path,
            broker_url=REDIS,
            deferral_cap_s=2,
            transient_cap_s=4,
            task_time_limit_s=15,
            visibility_timeout_s=19,
        )


def test_the_default_caps_are_the_policys_own(tmp_path: Path) -> None:
    policy, default = Settings(data_dir=tmp_path).retry_policy(), RetryPolicy()
    assert (policy.deferral_cap_s, policy.transient_cap_s) == (
        default.deferral_cap_s,
        default.transient_cap_s,
    )


@pytest.mark.parametrize(("configured", "expected"), [(None, LOCK_TIMEOUT_MS), (750, 750)])
def test_the_lock_timeout_reaches_every_postgresql_connection(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, configured: int | None, expected: int
) -> None:
    made: list[dict[str, Any]] = []

    def create_engine(url: str, **options: Any) -> object:
        made.append(options)
        return object()

    monkeypatch.setattr(engine_module, "create_engine", create_engine)
    settings = Settings(data_dir=tmp_path, database_url="postgresql+psycopg://u@db/payhook")
    if configured is not None:
        settings = settings.model_copy(update={"db_lock_timeout_ms": configured})
    ProcessRuntime(settings, Celery(set_as_current=False)).engine  # noqa: B018  (built lazily)
    assert made == [
        {
            "pool_size": settings.db_pool_size,
            "max_overflow": settings.db_pool_size,
            "pool_pre_ping": True,
            # Prepared on the server after five runs (PAYHOOK_DB_PREPARED_STATEMENTS=false turns
            # that off for an old PgBouncer in transaction mode).
            "connect_args": {"options": f"-c lock_timeout={expected}", "prepare_threshold": 5},
        }
    ]


def test_waits_come_from_the_settings_and_a_wait_for_a_state_outlasts_the_grace(
    tmp_path: Path,
) -> None:
    settings = Settings(data_dir=tmp_path, unmatched_grace_s=60, await_state_s=7200)
    policy = settings.retry_policy()
    start = Settings(data_dir=tmp_path).retry_policy()
    assert start.await_state.total_seconds() == 259200  # three days, the providers' horizon
    assert policy.unmatched_grace.total_seconds() == 60
    assert policy.await_state.total_seconds() == 7200
    assert policy.awaiting_state_cap_s == 10 * settings.deferral_cap_s
