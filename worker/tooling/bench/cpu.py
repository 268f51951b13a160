"""CPU time from /proc, per group of processes, over a measured window.

A process's CPU is utime + stime of its own threads plus cutime + cstime of the children it has
reaped (`man 5 proc`, /proc/PID/stat fields 14-17). A group is read at the start and at the
end of a window, and every SAMPLE_S in between: a process that appears meanwhile counts from
zero, one that exits counts up to the last time it was seen. A process that comes and goes
between two samples (a PostgreSQL backend of a connection opened for one request) is not counted
at all: the benchmark reports how many connections the receiver opened, so that it shows.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from worker.tooling.processes import children_by_parent

TICKS_PER_S = os.sysconf("SC_CLK_TCK")
SAMPLE_S = 0.2


def cpu_seconds(pid: int) -> float | None:
    """utime + stime + cutime + cstime of `pid` in seconds; None when it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: the rest follows its last ")".
    fields = stat.rpartition(")")[2].split()
    # fields[0] is field 3 (state), so field N is fields[N - 3].
    return sum(int(fields[n - 3]) for n in (14, 15, 16, 17)) / TICKS_PER_S


def descendants(pid: int) -> list[int]:
    """`pid` and every process below it, from /proc (uvicorn's workers, prefork pools)."""
    parents = children_by_parent()
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        todo += parents.get(current, [])
    return found


Pids = Callable[[], Iterable[int]]
Counter = Callable[[], float]


@dataclass
class Meter:
    """CPU seconds spent by named groups between `start` and `stop`.

    A group is either a set of pids (read from /proc) or a counter of its own (Redis reports
    its CPU in INFO; a load generator's rusage is read when it exits).
    """

    groups: Mapping[str, Pids] = field(default_factory=dict)
    counters: Mapping[str, Counter] = field(default_factory=dict)
    _first: dict[str, dict[int, float]] = field(default_factory=dict)
    _last: dict[str, dict[int, float]] = field(default_factory=dict)
    _counted: dict[str, float] = field(default_factory=dict)
    _stop: threading.Event = field(default_factory=threading.Event)
    _sampler: threading.Thread | None = None

    def start(self) -> None:
        self._first = {name: _read(pids()) for name, pids in self.groups.items()}
        self._last = {name: dict(seen) for name, seen in self._first.items()}
        self._counted = {name: counter() for name, counter in self.counters.items()}
        self._stop.clear()
        self._sampler = threading.Thread(target=self._sample, name="cpu-meter", daemon=True)
        self._sampler.start()

    def stop(self) -> dict[str, float]:
        self._stop.set()
        if self._sampler is not None:
            self._sampler.join()
        self._take()
        spent: dict[str, float] = {}
        for name in self.groups:
            first, last = self._first.get(name, {}), self._last.get(name, {})
            spent[name] = max(0.0, sum(last[pid] - first.get(pid, 0.0) for pid in last))
        for name, counter in self.counters.items():
            spent[name] = max(0.0, counter() - self._counted.get(name, 0.0))
        return spent

    def _sample(self) -> None:
        while not self._stop.wait(SAMPLE_S):
            self._take()

    def _take(self) -> None:
        for name, pids in self.groups.items():
            self._last.setdefault(name, {}).update(_read(pids()))


def _read(pids: Iterable[int]) -> dict[int, float]:
    seen = {}
    for pid in pids:
        value = cpu_seconds(pid)
        if value is not None:
            seen[pid] = value
    return seen
