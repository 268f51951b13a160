"""The must-kill mutants: hand-written edits of the guarantees, each killed by its tests.

`python -m worker.tooling.mutants [--table FILE] [--check] [NAME ...]` applies each mutant of
the table (tests/mutants/must_kill.toml) to its file, runs only the tests it lists, and restores
the file, whatever happens. It fails when a listed test passes with the mutant in place (the
mutant survived) or when a mutant's `original` snippet is not found exactly once (the code
moved: refresh the snippet). `--check` only looks for the snippets.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import subprocess
import sys
import time
import tomllib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

ROOT = Path(__file__).resolve().parents[2]
TABLE = ROOT / "tests" / "mutants" / "must_kill.toml"
TIMEOUT_S = 300
# pytest's short summary: one line per failed or erroring test, its id first.
_REPORTED = re.compile(r"^(?:FAILED|ERROR) (\S+)")


@dataclass(frozen=True)
class Edit:
    original: str
    replacement: str


@dataclass(frozen=True)
class Mutant:
    name: str
    file: Path
    why: str
    tests: tuple[str, ...]
    edits: tuple[Edit, ...]

    def problems(self) -> list[str]:
        """What keeps this mutant from applying: a missing file, a snippet found not once."""
        if not self.file.is_file():
            return [f"{self.name}: no such file {self._shown()}"]
        text = self.file.read_text()
        found = []
        for edit in self.edits:
            count = text.count(edit.original)
            if count != 1:
                first = edit.original.strip().splitlines()[0]
                where = "not found" if count == 0 else f"found {count} times"
                found.append(f"{self.name}: snippet {where} in {self._shown()}: {first!r}")
        return found

    def mutated(self, text: str) -> str:
        for edit in self.edits:
            text = text.replace(edit.original, edit.replacement, 1)
        return text

    def _shown(self) -> str:
        return str(self.file.relative_to(ROOT))


@dataclass(frozen=True)
class Verdict:
    mutant: Mutant
    killed: bool
    survivors: tuple[str, ...]  # listed tests that passed with the mutant in place
    seconds: float
    detail: str = ""


def load(table: Path) -> list[Mutant]:
    with table.open("rb") as file:
        document = tomllib.load(file)
    mutants = []
    for entry in document.get("mutant", []):
        edits = tuple(Edit(e["original"], e["replacement"]) for e in entry["edit"])
        mutants.append(
            Mutant(
                name=entry["name"],
                file=ROOT / entry["file"],
                why=entry.get("why", ""),
                tests=tuple(entry["tests"]),
                edits=edits,
            )
        )
    names = [m.name for m in mutants]
    if len(set(names)) != len(names):
        raise SystemExit(f"mutants: duplicate names in {table}")
    return mutants


@contextmanager
def applied(mutant: Mutant) -> Iterator[None]:
    """The mutant in its file for the duration; the original back afterwards, even on ^C."""
    original = mutant.file.read_bytes()
    previous = signal.signal(signal.SIGTERM, _interrupted)
    try:
        _write(mutant.file, mutant.mutated(original.decode()).encode())
        yield
    finally:
        _write(mutant.file, original)
        signal.signal(signal.SIGTERM, previous)


def _write(path: Path, content: bytes) -> None:
    """Write `content` with a modification time in a later second than the file had: Python
    trusts a cached .pyc whose recorded source mtime (whole seconds) and size still match."""
    before = int(path.stat().st_mtime)
    path.write_bytes(content)
    if int(path.stat().st_mtime) <= before:
        os.utime(path, (before + 1, before + 1))


def _interrupted(signum: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def run_tests(mutant: Mutant, timeout_s: float) -> Verdict:
    """Run the mutant's tests (the worker processes the integration tests start see the
    mutant too: they import this checkout)."""
    started = time.monotonic()
    env = {**os.environ, "COLUMNS": "500"}
    command = [
        sys.executable,
        "-m",
        "pytest",
        "-q",
        "-rfE",
        "-p",
        "no:cacheprovider",
        *mutant.tests,
    ]
    try:
        done = subprocess.run(  # noqa: S603  (our own python and pytest)
            command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout_s
        )
    except subprocess.TimeoutExpired:
        seconds = time.monotonic() - started
        return Verdict(mutant, True, (), seconds, f"timed out after {timeout_s:.0f} s")
    seconds = time.monotonic() - started
    output = done.stdout + done.stderr
    if done.returncode not in (0, 1):  # 2-5: interrupted, internal error, usage, no tests
        tail = "\n".join(output.strip().splitlines()[-15:])
        raise SystemExit(f"mutants: pytest could not run {mutant.name}'s tests:\n{tail}")
    failed = {m.group(1) for line in output.splitlines() if (m := _REPORTED.match(line))}
    survivors = tuple(test for test in mutant.tests if test not in failed)
    return Verdict(mutant, not survivors, survivors, seconds)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m worker.tooling.mutants", description=__doc__)
    parser.add_argument("names", nargs="*", help="only these mutants (default: every one)")
    parser.add_argument("--table", type=Path, default=TABLE)
    parser.add_argument("--check", action="store_true", help="only look for the snippets")
    parser.add_argument("--timeout", type=float, default=TIMEOUT_S, help="per mutant, seconds")
    args = parser.parse_args(argv)

    mutants = load(args.table)
    unknown = set(args.names) - {m.name for m in mutants}
    if unknown:
        print(f"mutants: no such mutant: {', '.join(sorted(unknown))}", file=sys.stderr)
        return 2
    chosen = [m for m in mutants if not args.names or m.name in args.names]
    problems = [p for m in chosen for p in m.problems()]
    if problems:
        print("mutants: the code moved; refresh these snippets in the table:", file=sys.stderr)
        for problem in problems:
            print(f"  {problem}", file=sys.stderr)
        return 1
    if args.check:
        print(f"mutants: all {len(chosen)} mutants apply", file=sys.stderr)
        return 0

    verdicts = []
    for mutant in chosen:
        with applied(mutant):
            verdict = run_tests(mutant, args.timeout)
        verdicts.append(verdict)
        state = "killed  " if verdict.killed else "SURVIVED"
        extra = f" ({verdict.detail})" if verdict.detail else ""
        print(f"{state} {mutant.name:38} {verdict.seconds:5.1f} s{extra}", file=sys.stderr)
        for test in verdict.survivors:
            print(f"           passed with the mutant: {test}", file=sys.stderr)
    survived = [v for v in verdicts if not v.killed]
    print(
        f"mutants: {len(verdicts) - len(survived)} of {len(verdicts)} killed by every test "
        "they list"
        + (f"; SURVIVED: {', '.join(v.mutant.name for v in survived)}" if survived else ""),
        file=sys.stderr,
    )
    return 1 if survived else 0


if __name__ == "__main__":
    sys.exit(main())
