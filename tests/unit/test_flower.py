"""payhook's Flower in-process: readers need the password, and nothing can change anything."""

from __future__ import annotations

import base64
from typing import Any

import pytest
from celery import Celery
from tornado.testing import AsyncHTTPTestCase

from worker.cli import main
from worker.taskqueue.flower import API_CLOSED, REFUSAL, build_flower

CREDENTIALS = "operator:unit-test-flower-password"
AUTH = {"Authorization": "Basic " + base64.b64encode(CREDENTIALS.encode()).decode()}
CONTROL = (
    "/api/worker/shutdown/w1@host",
    "/api/worker/pool/restart/w1@host",
    "/api/worker/pool/grow/w1@host",
    "/api/worker/pool/autoscale/w1@host",
    "/api/worker/queue/add-consumer/w1@host",
    "/api/task/revoke/00000000-0000-0000-0000-000000000000",
    "/api/task/apply/payhook.sweep",
    "/api/task/send-task/payhook.sweep",
    "/api/task/abort/00000000-0000-0000-0000-000000000000",
)


class ReadOnlyFlowerTest(AsyncHTTPTestCase):
    def get_app(self) -> Any:
        app = Celery("payhook-unit-flower", broker="memory://", set_as_current=False)
        return build_flower(app, address="127.0.0.1", port=0, basic_auth=CREDENTIALS)

    def test_reading_needs_the_password(self) -> None:
        assert self.fetch("/api/tasks").code == 401
        wrong = "Basic " + base64.b64encode(b"operator:guess").decode()
        assert self.fetch("/api/tasks", headers={"Authorization": wrong}).code == 401
        answer = self.fetch("/api/tasks", headers=AUTH)
        assert answer.code == 200
        assert answer.body == b"{}"

    def test_every_control_endpoint_is_refused_with_or_without_the_password(self) -> None:
        for path in CONTROL:
            for headers in (AUTH, {}):
                answer = self.fetch(path, method="POST", body=b"", headers=headers)
                assert answer.code == 403, path
                assert answer.body.decode() == REFUSAL

    def test_put_delete_and_patch_are_refused_too(self) -> None:
        for method in ("PUT", "DELETE", "PATCH"):
            body = None if method == "DELETE" else b"{}"
            answer = self.fetch("/api/tasks", method=method, body=body, headers=AUTH)
            assert answer.code == 403, method


def test_flower_refuses_to_start_without_credentials_unless_local_only(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("PAYHOOK_FLOWER_BASIC_AUTH", raising=False)
    assert main(["flower"]) == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert "PAYHOOK_FLOWER_BASIC_AUTH" in line
    assert "--local-only" in line

    assert main(["flower", "--local-only", "--address", "0.0.0.0"]) == 2
    assert "--local-only binds 127.0.0.1" in capsys.readouterr().err

    monkeypatch.setenv("PAYHOOK_FLOWER_BASIC_AUTH", "no-password-here")
    assert main(["flower"]) == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert line == "payhook: bad setting PAYHOOK_FLOWER_BASIC_AUTH: must read user:password"


class LocalOnlyFlowerTest(AsyncHTTPTestCase):
    """`--local-only`: no password, and FLOWER_UNAUTHENTICATED_API set by someone."""

    def get_app(self) -> Any:
        self.patch = pytest.MonkeyPatch()
        self.patch.setenv("FLOWER_UNAUTHENTICATED_API", "true")
        app = Celery("payhook-unit-flower-local", broker="memory://", set_as_current=False)
        return build_flower(app, address="127.0.0.1", port=0, basic_auth=None)

    def tearDown(self) -> None:
        super().tearDown()
        self.patch.undo()

    def test_the_environment_never_reopens_the_api(self) -> None:
        answer = self.fetch("/api/tasks")
        assert answer.code == 401
        assert answer.body.decode() == API_CLOSED
        page = self.fetch("/workers")
        assert "Access-Control-Allow-Origin" not in page.headers  # no cross-origin reads
