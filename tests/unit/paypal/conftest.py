"""The PayPal tests' fixtures: a test PKI, a certificate host, and the receiver in-process."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from tests.unit.common import NOW
from tests.unit.paypal.support import (
    CERT_URL,
    HOSTS,
    LIVE_NAME,
    FakeCertHost,
    PayPalApp,
    Pki,
    _key,
    issue,
    paypal_app_for,
    paypal_settings,
)
from worker.signing.paypal import (
    SIGNING_NAMES,
    PayPalCertificates,
)


@pytest.fixture(scope="module")
def pki() -> Pki:
    root = issue(
        "payhook test root CA",
        None,
        ca=True,
        valid=(NOW - timedelta(days=365), NOW + timedelta(days=3650)),
    )
    intermediate = issue("payhook test intermediate CA", root, ca=True)
    rogue_ca = issue("rogue CA", None, ca=True)
    key = _key()  # one key for most leaves: only the certificate around it differs
    return Pki(
        root=root,
        intermediate=intermediate,
        leaf=issue(LIVE_NAME, root, ca=False, dns=(LIVE_NAME,), key=key),
        chained_leaf=issue(LIVE_NAME, intermediate, ca=False, dns=(LIVE_NAME,), key=key),
        sandbox_leaf=issue(SIGNING_NAMES[1], root, ca=False, dns=(SIGNING_NAMES[1],), key=key),
        expired_leaf=issue(
            LIVE_NAME,
            root,
            ca=False,
            dns=(LIVE_NAME,),
            key=key,
            valid=(NOW - timedelta(days=400), NOW - timedelta(days=35)),
        ),
        future_leaf=issue(
            LIVE_NAME,
            root,
            ca=False,
            dns=(LIVE_NAME,),
            key=key,
            valid=(NOW + timedelta(days=1), NOW + timedelta(days=400)),
        ),
        wrong_name_leaf=issue("shop.example", root, ca=False, dns=("shop.example",), key=key),
        self_signed_leaf=issue(LIVE_NAME, None, ca=False, dns=(LIVE_NAME,), key=key),
        rogue_leaf=issue(LIVE_NAME, rogue_ca, ca=False, dns=(LIVE_NAME,), key=key),
    )


@pytest.fixture
def host(pki: Pki) -> FakeCertHost:
    return FakeCertHost({CERT_URL: pki.leaf.pem})


@pytest.fixture
def certificates(pki: Pki, host: FakeCertHost) -> PayPalCertificates:
    return PayPalCertificates(HOSTS, [pki.root.cert], fetch=host)


@pytest.fixture
def app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, pki: Pki) -> Iterator[PayPalApp]:
    harness = paypal_app_for(paypal_settings(tmp_path), monkeypatch, pki)
    yield harness
    harness.runtime.engine.dispose()
