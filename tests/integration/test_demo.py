"""The embedded default, end to end: `payhook demo --once` from an empty folder."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def test_demo_once_gives_every_sample_its_expected_outcome(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PAYHOOK_")}
    env["COLUMNS"] = "160"
    result = subprocess.run(
        [sys.executable, "-m", "worker.cli", "demo", "--once"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "every sample got its expected outcome" in output
    assert "acknowledged_duplicate/same_event" in output
    assert (tmp_path / ".payhook" / "demo" / "payhook.sqlite3").exists()
