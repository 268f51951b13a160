"""Settings from the environment (prefix PAYHOOK_), read once at start into a frozen object."""

from __future__ import annotations

import base64
import binascii
import difflib
import os
from collections.abc import Mapping
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlparse

from pydantic import (
    AliasChoices,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

from domain.providers import BUILT_IN, Reading
from domain.providers.adyen import CaptureMode
from tasks.policy import RetryPolicy
from tasks.relaying import RelayPolicy

RESERVED_SOURCES = BUILT_IN
# The placeholder the deploy files ship with: a value that still holds it was never filled in.
PLACEHOLDER = "CHANGE-ME"
MIN_API_TOKEN_LENGTH = 32
# PAYHOOK_* names that are not settings: the test, soak and bench tooling's, and ./dev's.
TOOLING_PREFIXES = ("PAYHOOK_TEST_", "PAYHOOK_SOAK_", "PAYHOOK_BENCH_")
TOOLING_NAMES = frozenset(
    {
        "PAYHOOK_WITH_RABBITMQ",
        "PAYHOOK_WITH_PGBOUNCER",
        "PAYHOOK_PYTHON",
        "PAYHOOK_REQUIRE_SERVICES",
    }
)


class SettingsError(Exception):
    """A bad setting: the message is the one line shown before the program stops."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="PAYHOOK_", frozen=True, extra="ignore")

    data_dir: Path = Path(".payhook")
    database_url: str = ""  # default: a SQLite file in data_dir
    broker_url: str = ""  # default: a file-system broker folder in data_dir
    api_token: SecretStr | None = None
    stripe_webhook_secrets: SecretStr = SecretStr("")  # comma-separated, for rotation
    adyen_hmac_keys: SecretStr = SecretStr("")
    standard_webhook_secrets: SecretStr = SecretStr("")  # source=whsec_…,source=whsec_…
    paypal_webhook_id: str = ""
    # Hosts a paypal-cert-url may name (HTTPS only), and the CA bundle its chain must reach
    # (default: the Mozilla roots that httpx uses too, from certifi).
    paypal_cert_hosts: str = "api.paypal.com,api.sandbox.paypal.com"
    paypal_ca_bundle: Path | None = None
    max_body_bytes: int = Field(1024 * 1024, gt=0)
    signature_tolerance_s: int = Field(300, gt=0)
    # How long an event waits: for a payment with its reference to be registered, and for
    # its payment to reach the state it needs (a refund before its capture).
    unmatched_grace_s: int = Field(600, ge=0)
    await_state_s: int = Field(259200, ge=0)
    # Adyen captures at once (no CAPTURE notifications), or on the merchant's request.
    adyen_capture: CaptureMode = CaptureMode.AUTOMATIC
    # How often deferred deliveries whose next attempt has come are published again.
    wake_interval_s: int = Field(5, gt=0)
    sweep_after_s: int = Field(300, gt=0)
    sweep_interval_s: int = Field(60, gt=0)
    max_sweeps: int = Field(5, gt=0)
    task_time_limit_s: int = Field(60, gt=0)
    # Longest wait between two attempts: for a missing payment, and after a transient error.
    deferral_cap_s: int = Field(60, gt=0)
    transient_cap_s: int = Field(30, gt=0)
    visibility_timeout_s: int = Field(3600, gt=0)
    # RabbitMQ: deliveries of one task message (x-delivery-limit on the quorum queue) before
    # RabbitMQ moves it to payhook.dead; above the lost attempts payhook itself allows.
    delivery_limit: int = Field(10, gt=0)
    db_pool_size: int = Field(5, gt=0)
    # A row lock waited for longer than this is a transient error, retried by the task.
    db_lock_timeout_ms: int = Field(5000, gt=0)
    # Server-side prepared statements; false behind a PgBouncer before 1.21 in transaction mode
    # (deploy/SCALING.md).
    db_prepared_statements: bool = True
    # Raw bodies (and headers) of processed deliveries are emptied after this many days;
    # outcomes are kept for good, and unmatched or dead deliveries keep their bodies.
    body_retention_days: int = Field(30, gt=0)
    log_format: Literal["json", "console"] = "json"
    flower_basic_auth: SecretStr | None = None  # user:password for `payhook flower`
    # Host notifications: endpoints (comma-separated), their Standard Webhooks secrets
    # (whsec_…; several during rotation, the first signs), how long a notification is retried,
    # and how often `payhook beat` has the relay look for sends that are due.
    notify_url: str = ""
    notify_secret: SecretStr = SecretStr("")
    notify_retry_s: int = Field(259200, gt=0)
    notify_interval_s: int = Field(5, gt=0)

    @field_validator("*", mode="before")
    @classmethod
    def _filled_in(cls, value: Any) -> Any:
        raw = value.get_secret_value() if isinstance(value, SecretStr) else value
        if isinstance(raw, str) and PLACEHOLDER in raw:
            raise ValueError(f"still holds the placeholder {PLACEHOLDER} of the deploy files")
        return value

    @field_validator("database_url", "broker_url")
    @classmethod
    def _strip(cls, value: str) -> str:
        return value.strip()

    @field_validator("api_token")
    @classmethod
    def _strong_token(cls, value: SecretStr | None) -> SecretStr | None:
        # Empty means unset: the API stays closed.
        if value is not None and 0 < len(value.get_secret_value()) < MIN_API_TOKEN_LENGTH:
            raise ValueError(
                f"must be at least {MIN_API_TOKEN_LENGTH} characters (for instance "
                "python3 -c 'import secrets; print(secrets.token_urlsafe(32))')"
            )
        return value

    @field_validator("stripe_webhook_secrets")
    @classmethod
    def _stripe_secrets(cls, value: SecretStr) -> SecretStr:
        if any(not s.startswith("whsec_") for s in _split(value.get_secret_value())):
            raise ValueError("every Stripe signing secret starts with whsec_ (Dashboard, Webhooks)")
        return value

    @field_validator("flower_basic_auth")
    @classmethod
    def _user_and_password(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            user, sep, password = value.get_secret_value().partition(":")
            if not (user and sep and password):
                raise ValueError("must read user:password")
        return value

    @field_validator("paypal_ca_bundle")
    @classmethod
    def _bundle_exists(cls, value: Path | None) -> Path | None:
        if value is not None and not value.is_file():
            raise ValueError(f"no such file: {value}")
        return value

    @model_validator(mode="after")
    def _check(self) -> Settings:
        self.standard_secrets()  # each raises on a malformed list
        self.adyen_keys()
        endpoints, secrets = self.notify_endpoints(), self.notify_secrets()
        if endpoints and not secrets:
            raise ValueError("PAYHOOK_NOTIFY_URL needs PAYHOOK_NOTIFY_SECRET to sign with")
        policy = self.retry_policy()
        if self.uses_redis and self.visibility_timeout_s <= (
            policy.longest_countdown_s + policy.time_limit_s
        ):
            raise ValueError(
                f"PAYHOOK_VISIBILITY_TIMEOUT_S ({self.visibility_timeout_s}s) must exceed the "
                f"longest retry countdown plus the task time limit "
                f"({policy.longest_countdown_s + policy.time_limit_s:.0f}s), or Redis would "
                "deliver a waiting task twice"
            )
        if self.uses_amqp and self.delivery_limit <= policy.max_sweeps:
            raise ValueError(
                f"PAYHOOK_DELIVERY_LIMIT ({self.delivery_limit}) must exceed the lost attempts "
                f"payhook allows (PAYHOOK_MAX_SWEEPS, {policy.max_sweeps}), so that payhook "
                "records such a delivery dead before RabbitMQ dead-letters its message"
            )
        return self

    @property
    def database(self) -> str:
        return self.database_url or f"sqlite:///{(self.data_dir / 'payhook.sqlite3').resolve()}"

    @property
    def broker(self) -> str:
        return self.broker_url or "filesystem://"

    @property
    def uses_redis(self) -> bool:
        return urlparse(self.broker).scheme in {"redis", "rediss"}

    @property
    def uses_amqp(self) -> bool:
        return urlparse(self.broker).scheme in {"amqp", "amqps", "pyamqp"}

    @property
    def uses_data_dir(self) -> bool:
        """The embedded default (a SQLite file, a file-system broker) or an explicit data dir:
        only then does payhook keep files of its own; elsewhere the working directory and the
        file system may well be read-only (a container, systemd's /)."""
        return not self.database_url or not self.broker_url or "data_dir" in self.model_fields_set

    @property
    def broker_folder(self) -> Path:
        return (self.data_dir / "broker").resolve()

    def stripe_secrets(self) -> tuple[str, ...]:
        return _split(self.stripe_webhook_secrets.get_secret_value())

    def adyen_keys(self) -> tuple[str, ...]:
        """Adyen HMAC keys, hex as the Customer Area shows them; several during rotation."""
        keys = _split(self.adyen_hmac_keys.get_secret_value())
        if any(len(key) % 2 or not set(key) <= set("0123456789abcdefABCDEF") for key in keys):
            raise ValueError("PAYHOOK_ADYEN_HMAC_KEYS must list hex keys, comma-separated")
        return keys

    def paypal_hosts(self) -> frozenset[str]:
        return frozenset(host.lower() for host in _split(self.paypal_cert_hosts))

    def standard_secrets(self) -> dict[str, tuple[str, ...]]:
        """Secrets per Standard Webhooks source; a source may list several, for rotation."""
        sources: dict[str, tuple[str, ...]] = {}
        for item in _split(self.standard_webhook_secrets.get_secret_value()):
            source, sep, secret = item.partition("=")
            source = source.strip()
            if not sep or not source or not secret.strip():
                raise ValueError(
                    "PAYHOOK_STANDARD_WEBHOOK_SECRETS must read source=whsec_…,source=whsec_…"
                )
            if source in RESERVED_SOURCES:
                raise ValueError(f"Standard Webhooks source may not be named {source!r}")
            sources[source] = (*sources.get(source, ()), secret.strip())
        return sources

    def reading(self) -> Reading:
        return Reading(adyen_capture=self.adyen_capture)

    def notify_endpoints(self) -> tuple[str, ...]:
        """The host's notification endpoints, http(s) URLs."""
        urls = _split(self.notify_url)
        for url in urls:
            parts = urlparse(url)
            if parts.scheme not in {"http", "https"} or not parts.hostname:
                raise ValueError(f"PAYHOOK_NOTIFY_URL must list http(s) URLs, not {url!r}")
        return urls

    def notify_secrets(self) -> tuple[str, ...]:
        """Signing secrets, newest first: the first signs, the others are kept for rotation."""
        secrets = _split(self.notify_secret.get_secret_value())
        for secret in secrets:
            try:
                valid = secret.startswith("whsec_") and bool(
                    base64.b64decode(secret.removeprefix("whsec_"), validate=True)
                )
            except binascii.Error:
                valid = False
            if not valid:
                raise ValueError("PAYHOOK_NOTIFY_SECRET must list whsec_ secrets (base64)")
        return secrets

    def relay_policy(self) -> RelayPolicy:
        return RelayPolicy(retry_window=timedelta(seconds=self.notify_retry_s))

    def retry_policy(self) -> RetryPolicy:
        return RetryPolicy(
            unmatched_grace=timedelta(seconds=self.unmatched_grace_s),
            await_state=timedelta(seconds=self.await_state_s),
            sweep_after=timedelta(seconds=self.sweep_after_s),
            max_sweeps=self.max_sweeps,
            deferral_cap_s=self.deferral_cap_s,
            # A state change wakes its waiting deliveries: their own attempts are a backstop.
            awaiting_state_cap_s=10 * self.deferral_cap_s,
            transient_cap_s=self.transient_cap_s,
            time_limit_s=self.task_time_limit_s,
            soft_time_limit_s=max(1, self.task_time_limit_s - 10),
        )


def _split(value: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in value.split(",") if part.strip())


def setting_names() -> frozenset[str]:
    """Every environment name a setting is read from, derived from the fields themselves."""
    names = set()
    for field_name, field in Settings.model_fields.items():
        names.add(f"PAYHOOK_{field_name.upper()}")
        alias = field.validation_alias
        choices = alias.choices if isinstance(alias, AliasChoices) else [alias]
        names |= {choice.upper() for choice in choices if isinstance(choice, str)}
    return frozenset(names)


def unknown_names(environ: Mapping[str, str]) -> list[str]:
    """PAYHOOK_* names in `environ` that no setting reads (a misspelling is not ignored)."""
    known = setting_names()
    return sorted(
        name
        for name in environ
        if name.upper().startswith("PAYHOOK_")
        and name.upper() not in known
        and name.upper() not in TOOLING_NAMES
        and not name.upper().startswith(TOOLING_PREFIXES)
    )


def load_settings() -> Settings:
    """Read the environment once; a bad setting becomes a one-line SettingsError."""
    unknown = unknown_names(os.environ)
    if unknown:
        known = sorted(setting_names())
        guesses = []
        for name in unknown:
            close = difflib.get_close_matches(name.upper(), known, n=1)
            guesses.append(f"{name} (did you mean {close[0]}?)" if close else name)
        raise SettingsError(f"unknown setting {'; '.join(guesses)}: payhook reads no such name")
    try:
        return Settings()
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "settings"
        name = f"PAYHOOK_{where.upper()}" if first["loc"] else "settings"
        message = str(first["msg"]).removeprefix("Value error, ")
        raise SettingsError(f"bad setting {name}: {message}") from None
