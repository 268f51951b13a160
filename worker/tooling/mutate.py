"""Mutation testing of the guarantee modules with cosmic-ray; `./dev mutate` runs it.

cosmic-ray edits each module in place (so worker processes an integration test starts see the
mutant), runs the tests given for that module, and puts the module back. One session per
module in .payhook/mutate/, resumed on the next run; where only some functions carry the
guarantee (the repositories' claim and lock paths, the receiver's store-then-publish), the
other mutants are skipped. Prints the score and every survivor; not part of CI (too long).

    python -m worker.tooling.mutate [--minutes N] [--module NAME ...] [--fresh]
"""

from __future__ import annotations

import argparse
import ast
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SESSIONS = ROOT / ".payhook" / "mutate"
PYTHON = str(ROOT / ".venv" / "bin" / "python")
COSMIC_RAY = ROOT / ".venv" / "bin" / "cosmic-ray"


@dataclass(frozen=True)
class Target:
    name: str
    module: str
    tests: tuple[str, ...]
    functions: tuple[str, ...] = ()  # only mutants inside these (Class.method); () = all


TARGETS = (
    Target(
        "processing",
        "tasks/processing.py",
        ("tests/unit/test_processing.py", "tests/unit/test_replay.py", "tests/unit/test_shims.py"),
    ),
    Target(
        "shims",
        "tasks/shims.py",
        ("tests/unit/test_shims.py", "tests/unit/test_celery_app.py", "tests/unit/test_metrics.py"),
    ),
    Target(
        "repositories",
        "tasks/storage/repositories.py",
        ("tests/unit/test_processing.py", "tests/integration/test_concurrent_events.py"),
        ("Deliveries.lock", "IdempotencyKeys.claim", "IdempotencyKeys.first", "Payments._lock"),
    ),
    Target(
        "receiving",
        "worker/web/receiving.py",
        ("tests/unit/stripe/test_receiving.py", "tests/unit/adyen/test_receiving.py"),
        ("accept", "_store_and_publish", "accept_one"),
    ),
    Target("sweeping", "tasks/sweeping.py", ("tests/unit/test_sweeping.py",)),
    Target(
        "replaying",
        "tasks/replaying.py",
        ("tests/unit/test_replay.py", "tests/unit/test_operator_commands.py"),
    ),
)


def config(target: Target) -> str:
    tests = " ".join(target.tests)
    command = f"{PYTHON} -m pytest -x -q -p no:cacheprovider -o addopts= {tests}"
    return (
        "[cosmic-ray]\n"
        f'module-path = "{target.module}"\n'
        "timeout = 120.0\n"
        "excluded-modules = []\n"
        f'test-command = "{command}"\n\n'
        "[cosmic-ray.distributor]\n"
        'name = "local"\n'
    )


def line_ranges(module: Path, functions: Sequence[str]) -> list[tuple[int, int]]:
    """First and last line of each named function (`name` or `Class.name`)."""
    tree = ast.parse(module.read_text())
    found: dict[str, tuple[int, int]] = {}
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            found[node.name] = (node.lineno, node.end_lineno or node.lineno)
        elif isinstance(node, ast.ClassDef):
            for item in node.body:
                if isinstance(item, ast.FunctionDef | ast.AsyncFunctionDef):
                    end = item.end_lineno or item.lineno
                    found[f"{node.name}.{item.name}"] = (item.lineno, end)
    missing = [name for name in functions if name not in found]
    if missing:
        raise SystemExit(f"mutate: {module}: no function {', '.join(missing)}; update TARGETS")
    return [found[name] for name in functions]


def skip_outside(session: Path, module: Path, functions: Sequence[str]) -> int:
    """Mark skipped every mutant outside `functions`, with cosmic-ray's own work database."""
    from cosmic_ray.work_db import WorkDB, use_db
    from cosmic_ray.work_item import WorkerOutcome, WorkResult

    ranges = line_ranges(module, functions)
    skipped = 0
    with use_db(str(session), WorkDB.Mode.open) as db:
        for item in list(db.pending_work_items):
            lines = [mutation.start_pos[0] for mutation in item.mutations]
            if not any(first <= line <= last for line in lines for first, last in ranges):
                db.set_result(item.job_id, WorkResult(worker_outcome=WorkerOutcome.SKIPPED))
                skipped += 1
    return skipped


def run(target: Target, seconds: float, fresh: bool) -> None:
    SESSIONS.mkdir(parents=True, exist_ok=True)
    cfg = SESSIONS / f"{target.name}.toml"
    session = SESSIONS / f"{target.name}.sqlite"
    module = ROOT / target.module
    cfg.write_text(config(target))
    if fresh:
        session.unlink(missing_ok=True)
    if not session.exists():
        subprocess.run([str(COSMIC_RAY), "init", str(cfg), str(session)], check=True, cwd=ROOT)  # noqa: S603
        if target.functions:
            skipped = skip_outside(session, module, target.functions)
            print(f"mutate: {target.name}: {skipped} mutants outside {', '.join(target.functions)}")
    original = module.read_bytes()
    print(f"mutate: {target.name}: cosmic-ray exec for at most {seconds / 60:.1f} min", flush=True)
    process = subprocess.Popen(  # noqa: S603
        [str(COSMIC_RAY), "exec", str(cfg), str(session)], cwd=ROOT, start_new_session=True
    )
    try:
        process.wait(timeout=seconds)
    except subprocess.TimeoutExpired:
        # Interrupted, not killed: cosmic-ray puts the module back as it unwinds.
        os.killpg(process.pid, signal.SIGINT)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    finally:
        if module.read_bytes() != original:
            module.write_bytes(original)
            print(f"mutate: {target.name}: put {target.module} back", flush=True)


def report(targets: Sequence[Target]) -> int:
    from cosmic_ray.work_db import WorkDB, use_db
    from cosmic_ray.work_item import TestOutcome, WorkerOutcome

    total_killed = total_done = total_pending = 0
    lines: list[str] = []
    for target in targets:
        session = SESSIONS / f"{target.name}.sqlite"
        if not session.exists():
            continue
        with use_db(str(session), WorkDB.Mode.open) as db:
            killed = done = 0
            for item, result in db.completed_work_items:
                if result.worker_outcome is WorkerOutcome.SKIPPED:
                    continue
                done += 1
                if result.test_outcome is not TestOutcome.SURVIVED:
                    killed += 1
                    continue
                (mutation,) = item.mutations
                changed = [
                    line
                    for line in (result.diff or "").splitlines()
                    if line[:1] in "+-" and not line.startswith(("+++", "---"))
                ]
                lines.append(
                    f"  {target.module}:{mutation.start_pos[0]} {mutation.operator_name}"
                    f" {' | '.join(changed)[:160]}"
                )
            pending = sum(1 for _ in db.pending_work_items)
        total_killed, total_done, total_pending = (
            total_killed + killed,
            total_done + done,
            total_pending + pending,
        )
        score = f"{100 * killed / done:.1f}%" if done else "-"
        print(f"{target.name:13} killed {killed:4} of {done:4} run ({score}), {pending} pending")
    score = f"{100 * total_killed / total_done:.1f}%" if total_done else "-"
    print(
        f"mutation score {score}: {total_killed} killed of {total_done} run, "
        f"{total_pending} not run yet (./dev mutate again resumes)"
    )
    if lines:
        print(f"survivors ({len(lines)}):")
        print("\n".join(lines))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="./dev mutate", description=__doc__)
    parser.add_argument("--minutes", type=float, default=30, help="for the whole run")
    parser.add_argument("--module", action="append", choices=[t.name for t in TARGETS])
    parser.add_argument("--fresh", action="store_true", help="forget earlier sessions")
    parser.add_argument("--report", action="store_true", help="only print the report")
    args = parser.parse_args(argv)
    targets = [t for t in TARGETS if not args.module or t.name in args.module]
    if not args.report:
        if not COSMIC_RAY.exists():
            print("mutate: installing cosmic-ray into .venv …", file=sys.stderr)
            install = [PYTHON, "-m", "pip", "install", "-q", "cosmic-ray>=8.4"]
            subprocess.run(install, check=True)  # noqa: S603
        deadline = time.monotonic() + args.minutes * 60
        for n, target in enumerate(targets):
            share = (deadline - time.monotonic()) / (len(targets) - n)
            if share > 5:
                run(target, share, args.fresh)
    return report(targets)


if __name__ == "__main__":
    sys.exit(main())
