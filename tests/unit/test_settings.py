"""Settings from the environment: placeholders, weak tokens, misspelled names are refused."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from worker.settings import Settings, SettingsError, load_settings, setting_names

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
STRONG_TOKEN = "a-real-api-token-of-thirty-two-chars-or-more"


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Only the PAYHOOK_* names each test sets."""
    for name in list(os.environ):
        if name.startswith("PAYHOOK_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("PAYHOOK_DATA_DIR", str(tmp_path))


def refused(monkeypatch: pytest.MonkeyPatch, **environment: str) -> str:
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError) as error:
        load_settings()
    message = str(error.value)
    assert "\n" not in message
    return message


def deploy_placeholders() -> list[tuple[str, str]]:
    """The Secret of deploy/k8s/config.yaml: every value a placeholder to fill in."""
    documents = yaml.safe_load_all((DEPLOY / "k8s" / "config.yaml").read_text())
    (secret,) = [doc for doc in documents if doc and doc["kind"] == "Secret"]
    return sorted(secret["stringData"].items())


@pytest.mark.parametrize(("name", "value"), deploy_placeholders())
def test_the_deploy_files_placeholders_are_refused(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    assert "CHANGE-ME" in value
    message = refused(monkeypatch, **{name: value})
    assert message.startswith(f"bad setting {name}: still holds the placeholder CHANGE-ME")


def test_an_api_token_under_32_characters_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    message = refused(monkeypatch, PAYHOOK_API_TOKEN="x" * 31)
    assert message.startswith("bad setting PAYHOOK_API_TOKEN: must be at least 32 characters")
    monkeypatch.setenv("PAYHOOK_API_TOKEN", "x" * 32)
    token = load_settings().api_token
    assert token is not None and token.get_secret_value() == "x" * 32


def test_an_empty_api_token_leaves_the_api_closed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PAYHOOK_API_TOKEN", "")
    token = load_settings().api_token
    assert token is None or token.get_secret_value() == ""


def test_a_stripe_secret_that_is_not_a_signing_secret_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # An API key pasted where the webhook signing secret belongs, next to a good one.
    message = refused(monkeypatch, PAYHOOK_STRIPE_WEBHOOK_SECRETS="whsec_abc,sk_live_abc")
    assert message.startswith("bad setting PAYHOOK_STRIPE_WEBHOOK_SECRETS: ")
    assert "whsec_" in message
    assert "sk_live_abc" not in message
    monkeypatch.setenv("PAYHOOK_STRIPE_WEBHOOK_SECRETS", "whsec_new, whsec_old")
    assert load_settings().stripe_secrets() == ("whsec_new", "whsec_old")


def test_a_misspelled_setting_is_refused_with_the_closest_name(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    message = refused(monkeypatch, PAYHOOK_DATABSE_URL="postgresql+psycopg://db/payhook")
    assert message == (
        "unknown setting PAYHOOK_DATABSE_URL (did you mean PAYHOOK_DATABASE_URL?): "
        "payhook reads no such name"
    )


def test_the_tooling_names_are_not_settings_and_are_let_through(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in (
        "PAYHOOK_TEST_DATABASE_URL",
        "PAYHOOK_TEST_SCOPE",
        "PAYHOOK_SOAK_REDIS_URL",
        "PAYHOOK_BENCH_ANYTHING",
        "PAYHOOK_WITH_RABBITMQ",
        "PAYHOOK_PYTHON",
        "PAYHOOK_REQUIRE_SERVICES",
    ):
        monkeypatch.setenv(name, "1")
    monkeypatch.setenv("PAYHOOK_API_TOKEN", STRONG_TOKEN)
    assert load_settings().api_token is not None


def test_the_valid_names_are_the_settings_fields() -> None:
    names = setting_names()
    assert {f"PAYHOOK_{field.upper()}" for field in Settings.model_fields} <= names
    assert "PAYHOOK_DATABASE_URL" in names


def test_payhook_refuses_a_misspelled_setting_in_one_line_before_starting(
    tmp_path: Path,
) -> None:
    environment = {"PATH": "/usr/bin:/bin", "PAYHOOK_DATA_DIR": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, "-m", "worker.cli", "migrate"],
        env={**environment, "PAYHOOK_SWEEP_AFTER": "300"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode != 0
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert "PAYHOOK_SWEEP_AFTER (did you mean PAYHOOK_SWEEP_AFTER_S?)" in lines[0]
    assert not (tmp_path / "payhook.sqlite3").exists()
