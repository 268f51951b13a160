"""schemathesis against the app's own OpenAPI document: no request gets a server error."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error

from tasks.migrate import upgrade
from tests.unit.webapp import AUTH, make_settings
from worker.runtime import ProcessRuntime
from worker.taskqueue.app import create_app
from worker.web.app import create_http_app


def _app() -> Any:
    """The real app on a SQLite file of its own; publishing goes nowhere (no broker here)."""
    settings = make_settings(Path(tempfile.mkdtemp(prefix="payhook-schemathesis-")))
    upgrade(settings.database)
    runtime = ProcessRuntime(settings, create_app(settings))
    runtime.publish = lambda _delivery_id: None  # type: ignore[method-assign]
    return create_http_app(runtime)


# schemathesis reads the schema when this module is collected (its pytest fixtures loader
# does not work with pytest 9), so the app is built here, once, for this module only.
schema = schemathesis.openapi.from_asgi("/openapi.json", _app())


@schema.parametrize()
@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
def test_no_request_the_schema_allows_gets_a_server_error(case: Any) -> None:
    # With the bearer token, so that the API's own handlers (not only the 401) are exercised.
    case.call_and_validate(headers=AUTH, checks=[not_a_server_error])
