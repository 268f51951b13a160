"""The Adyen receiver in-process, under automatic and under manual capture."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.unit.adyen.support import KEY, OLD_KEY, Receiver, make_receiver


@pytest.fixture
def receiver(tmp_path: Path) -> Iterator[Receiver]:
    with make_receiver(tmp_path, f"{OLD_KEY},{KEY}", max_body_bytes=16 * 1024) as running:
        yield running


@pytest.fixture
def manual(tmp_path: Path) -> Iterator[Receiver]:
    with make_receiver(tmp_path, KEY, adyen_capture="manual") as running:
        yield running
