"""The load generator of `payhook bench`: wrk, a compiled HTTP benchmark, driven by a Lua script
that sends each pre-signed request exactly once and then stops.

wrk cannot sign, so every body is signed before the phase starts (each phase stays well inside
the 300 s signature tolerance). The script formats every request once, in `init`, so that wrk
spends its time sending, not building; connections with nothing left to send wait a second
between `GET /healthz` probes until the last POST is answered. The generator's own CPU is its
rusage, read when it exits.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from worker.tooling.bench.events import Post

WRK = "wrk"
INSTALL_HINT = "install wrk (Debian/Ubuntu: apt-get install wrk) and run payhook bench again"
RESULT_MARK = "payhook-bench-result "
FIRST_MARK = "payhook-bench-first"  # the first POST is being sent
DONE_MARK = "payhook-bench-done"  # every POST has its answer

SCRIPT = (
    r"""
local requests, sent, answered, interval = {}, 0, 0, 0
local probe, verified = nil, false

function init(args)
  math.randomseed(os.time())
  local data = dofile(args[1])
  interval = tonumber(args[2])
  for k, r in ipairs(data) do
    requests[k] = wrk.format("POST", r[1], r[2], r[3])
  end
  probe = wrk.format("GET", "/healthz")
end

function delay()
  if sent >= #requests then return 1000 end
  if interval == 0 then return 0 end
  -- Exponential waits: the connections' requests together arrive as a Poisson stream, not in
  -- bursts of every connection at once (equal waits keep the connections in step).
  return -math.log(1 - math.random()) * interval
end

function request()
  -- wrk calls request() once before sending anything, to check the request it builds
  -- (script_verify_request): give it the probe, so that no POST is lost to that call.
  if not verified then
    verified = true
    return probe
  end
  if sent < #requests then
    sent = sent + 1
    if sent == 1 then mark("FIRST_MARK") end
    return requests[sent]
  end
  return probe
end

function response(status, headers, body)
  if status ~= 200 then
    answered = answered + 1
    -- wrk runs for its whole --duration: the benchmark interrupts it on this line.
    if answered == #requests then mark("DONE_MARK") end
  end
end

function mark(line)
  io.write(line, "\n")
  io.stdout:flush()
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '%s{"duration_us": %d, "requests": %d, "non_2xx": %d, "connect": %d, "read": %d, ' ..
    '"write": %d, "timeout": %d, "p50_us": %d, "p99_us": %d}\n',
    "RESULT_MARK", summary.duration, summary.requests, e.status, e.connect, e.read, e.write,
    e.timeout, latency:percentile(50), latency:percentile(99)))
end
""".replace("RESULT_MARK", RESULT_MARK)
    .replace("FIRST_MARK", FIRST_MARK)
    .replace("DONE_MARK", DONE_MARK)
)


class WrkMissing(Exception):
    """wrk is not installed and could not be installed, or did not run."""


@dataclass
class WrkResult:
    """What wrk saw: seconds from the first POST to the last answer, answers, latency
    percentiles (ms) and its own CPU seconds."""

    seconds: float
    requests: int
    non_2xx: int
    socket_errors: int
    p50_ms: float
    p99_ms: float
    cpu_s: float
    started: float  # time.perf_counter() when the first POST went out
    finished: float  # … and when the last answer came back
    errors: dict[str, int] = field(default_factory=dict)


def ensure_wrk() -> str:
    """The path of wrk; installed with apt-get when it is missing and we are root."""
    found = shutil.which(WRK)
    if found:
        return found
    if os.geteuid() == 0 and shutil.which("apt-get"):
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        for command in (["apt-get", "update"], ["apt-get", "install", "-y", WRK]):
            done = subprocess.run(command, env=env, capture_output=True, check=False)  # noqa: S603
            if done.returncode != 0 and command[1] == "install":
                raise WrkMissing(f"apt-get install -y wrk failed; {INSTALL_HINT}")
        found = shutil.which(WRK)
        if found:
            return found
    raise WrkMissing(f"wrk is not installed: {INSTALL_HINT}")


def run_wrk(
    base_url: str,
    posts: Sequence[Post],
    connections: int,
    timeout_s: float,
    *,
    rate: float | None = None,
) -> WrkResult:
    """Send every post once over `connections` connections (one wrk thread), as fast as they
    are answered, or at about `rate` per second (each connection waits an exponentially
    distributed time, mean connections/rate seconds, between requests: a steady Poisson load)."""
    wrk = ensure_wrk()
    connections = max(1, min(connections, len(posts)))
    interval_ms = 0 if rate is None else max(0, round(connections / rate * 1000))
    with tempfile.TemporaryDirectory(prefix="payhook-wrk-") as folder:
        script, data = Path(folder) / "send.lua", Path(folder) / "requests.lua"
        script.write_text(SCRIPT)
        data.write_bytes(_lua_requests(posts))
        command = [
            wrk,
            "--threads",
            "1",
            "--connections",
            str(connections),
            "--duration",
            f"{max(1, round(timeout_s))}s",
            "--timeout",
            "30s",
            "--script",
            str(script),
            base_url,
            "--",
            str(data),
            str(interval_ms),
        ]
        started = finished = 0.0
        lines: list[str] = []
        # Our own program and arguments: nothing here comes from a request.
        process = subprocess.Popen(  # noqa: S603
            command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        )
        assert process.stdout is not None
        for raw in process.stdout:
            line = raw.decode(errors="replace").rstrip("\n")
            if line == FIRST_MARK:
                started = time.perf_counter()
            elif line == DONE_MARK:
                finished = time.perf_counter()
                process.send_signal(signal.SIGINT)  # wrk prints its summary and exits
            else:
                lines.append(line)
        _, status, usage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)
    summary = next((ln for ln in lines if ln.startswith(RESULT_MARK)), None)
    if process.returncode != 0 or summary is None or not started:
        text = " | ".join(lines).strip()[-500:]
        raise WrkMissing(f"wrk failed (status {process.returncode}): {text}")
    if not finished:  # --duration ran out before every POST was answered
        finished = time.perf_counter()
    figures = json.loads(summary[len(RESULT_MARK) :])
    errors = {k: int(figures[k]) for k in ("connect", "read", "write", "timeout") if figures[k]}
    return WrkResult(
        seconds=max(finished - started, 1e-6),
        requests=int(figures["requests"]),
        non_2xx=int(figures["non_2xx"]),
        socket_errors=sum(errors.values()),
        p50_ms=figures["p50_us"] / 1000,
        p99_ms=figures["p99_us"] / 1000,
        cpu_s=usage.ru_utime + usage.ru_stime,
        started=started,
        finished=finished,
        errors=errors,
    )


def _lua_requests(posts: Sequence[Post]) -> bytes:
    """A Lua chunk returning {{path, headers, body}, ...}, bodies as long strings."""
    parts = [b"return {\n"]
    for post in posts:
        level = 1
        while b"]" + b"=" * level + b"]" in post.body:
            level += 1
        eq = b"=" * level
        headers = b", ".join(
            b"[" + _lua_string(k) + b"] = " + _lua_string(v) for k, v in post.headers.items()
        )
        # A newline right after the opening bracket is dropped by Lua: the body starts on it.
        body = b"[" + eq + b"[\n" + post.body + b"]" + eq + b"]"
        parts.append(b"{" + _lua_string(post.path) + b", {" + headers + b"}, " + body + b"},\n")
    parts.append(b"}\n")
    return b"".join(parts)


def _lua_string(value: str) -> bytes:
    return json.dumps(value).encode()  # a JSON string of ASCII is a valid Lua string
