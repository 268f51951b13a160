"""Liveness and readiness."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.unit.webapp import (
    Harness,
    harness_for,
    make_settings,
)

# --- health -------------------------------------------------------------------------------


def test_healthz_answers_ok(app: Harness) -> None:
    response = app.client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_healthz_needs_no_token_and_no_database(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    missing = f"sqlite:///{tmp_path}/no/such/dir/payhook.db"
    harness = harness_for(make_settings(tmp_path, database_url=missing), monkeypatch, migrate=False)
    assert harness.client.get("/healthz").status_code == 200


# --- readiness ----------------------------------------------------------------------------


def test_ready_means_the_database_is_reachable_even_when_the_broker_is_not(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = make_settings(tmp_path, broker_url="redis://127.0.0.1:1/0")  # nothing listens
    harness = harness_for(settings, monkeypatch)

    response = harness.client.get("/readyz")

    assert response.status_code == 200, response.text
    assert response.json() == {
        "status": "ready",
        "database": "reachable",
        "broker": "unreachable",
    }
    metrics = harness.client.get("/metrics").text
    assert "payhook_broker_up 0.0" in metrics
    harness.runtime.engine.dispose()


def test_not_ready_when_the_database_is_unreachable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    missing = tmp_path / "no-such-folder" / "payhook.db"
    settings = make_settings(tmp_path, database_url=f"sqlite:///{missing}")
    harness = harness_for(settings, monkeypatch, migrate=False)

    response = harness.client.get("/readyz")

    assert response.status_code == 503
    assert response.json()["database"] == "unreachable"
