"""Sampling profiles of a worker with py-spy, summarised into the hotspots worth reading.

py-spy attaches to the running worker (no change to how it is started, nothing inside it)
and samples every thread's Python stack 100 times a second, during the run that is
measured. The raw output is
one line per distinct stack, `thread;frame;...;leaf count`; from it come:

- self time by function (the innermost Python frame: where the interpreter was),
- inclusive time by function (what a call costs with everything under it),
- self time by package (faust, aiokafka, asyncio, httpx, logging, ...),
- inclusive time of Tidings' own functions,
- each thread's share (Faust runs the Kafka consumer in a thread of its own).

Only busy samples count: a thread waiting in `select` (its event loop idle) is left out,
so percentages are of the worker's busy time, and `busy_cores` says how much that was.
"""

from __future__ import annotations

import collections
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
_FRAME = re.compile(r"^(?P<function>.*) \((?P<file>.*?)(?::(?P<line>\d+))?\)$")
_SITE = re.compile(r".*/site-packages/")
_STDLIB = re.compile(r".*/lib/python3\.\d+/")


def py_spy() -> str | None:
    beside = Path(sys.executable).parent / "py-spy"
    return str(beside) if beside.exists() else shutil.which("py-spy")


class Recording:
    """`py-spy record` attached to one process until `stop`."""

    def __init__(self, pid: int, output: Path, *, rate: int = 100) -> None:
        binary = py_spy()
        if binary is None:
            raise RuntimeError("py-spy is not installed (.venv/bin/pip install py-spy)")
        self.output = output
        self.rate = rate
        # Blocking (py-spy's default): each sample pauses the worker for the few tens of µs a
        # stack read takes (well under 1% at 100 Hz); --nonblocking read torn stacks here.
        command = [binary, "record", "--pid", str(pid), "--rate", str(rate), "--threads",
                   "--format", "raw", "--full-filenames", "--output", str(output)]
        self._log = output.with_suffix(".log")
        with open(self._log, "wb") as log:
            self._process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        self.started = time.time()
        self.stopped: float | None = None

    def stop(self) -> None:
        self.stopped = time.time()
        if self._process.poll() is None:
            self._process.send_signal(signal.SIGINT)  # py-spy writes its output on Ctrl-C
            try:
                self._process.wait(60)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        if not self.output.exists():
            raise RuntimeError(f"py-spy wrote no profile: {self._log.read_text()[-1000:]}")

    def summary(self, top: int = 15) -> dict[str, Any]:
        duration = (self.stopped or time.time()) - self.started
        return summarize(self.output, duration_s=duration, rate=self.rate, top=top)


def _parse(line: str) -> tuple[list[str], int] | None:
    stack, _, count = line.rstrip("\n").rpartition(" ")
    if not stack or not count.isdigit():
        return None
    return stack.split(";"), int(count)


def _short_file(path: str) -> str:
    if path.startswith(str(REPO) + "/") and "/site-packages/" not in path:
        return path[len(str(REPO)) + 1:]
    path = _SITE.sub("", path)
    return _STDLIB.sub("", path)


def _split(frame: str) -> tuple[str, str, str]:
    """(function, short file, line) of one py-spy frame."""
    match = _FRAME.match(frame)
    if match is None:
        return frame, "?", ""
    return match["function"], _short_file(match["file"]), match["line"] or ""


def _package(short_file: str) -> str:
    if short_file.startswith(("agents/", "streams/", "connectors/")):
        return "tidings:" + short_file.split("/")[0]
    head = short_file.split("/")[0]
    if head.endswith(".py"):
        head = head[:-3]
    return head or "?"


_IDLE = ("EpollSelector.select", "select (selectors.py")


def summarize(raw: Path, *, duration_s: float, rate: int, top: int = 15) -> dict[str, Any]:
    self_lines: collections.Counter[str] = collections.Counter()
    self_functions: collections.Counter[tuple[str, str]] = collections.Counter()
    function_lines: dict[tuple[str, str], collections.Counter[str]] = collections.defaultdict(
        collections.Counter)
    inclusive: collections.Counter[tuple[str, str]] = collections.Counter()
    packages: collections.Counter[str] = collections.Counter()
    threads: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.read_text(errors="replace").splitlines():
        parsed = _parse(line)
        if parsed is None:
            continue
        frames, count = parsed
        thread = ""
        if frames and frames[0].startswith("thread ("):
            thread = frames[0].split(": ", 1)[-1].rstrip(")")
            frames = frames[1:]
        if not frames or frames[-1].startswith(_IDLE):
            continue  # an event loop waiting for I/O: idle
        total += count
        threads[thread or "?"] += count
        leaf_function, leaf_file, leaf_line = _split(frames[-1])
        self_lines[f"{leaf_function} ({leaf_file}:{leaf_line})"] += count
        self_functions[(leaf_function, leaf_file)] += count
        function_lines[(leaf_function, leaf_file)][leaf_line] += count
        packages[_package(leaf_file)] += count
        seen = set()
        for frame in frames:
            function, file, _ = _split(frame)
            seen.add((function, file))
        for key in seen:
            inclusive[key] += count
    if total == 0:
        return {"samples": 0}

    def pct(count: int) -> float:
        return round(100.0 * count / total, 1)

    return {
        "samples": total,
        "duration_s": round(duration_s, 1),
        "busy_cores": round(total / max(1.0, duration_s * rate), 2),
        "threads": {name: pct(count) for name, count in threads.most_common()},
        "self_by_function": [
            {"function": function,
             "where": f"{file}:{function_lines[(function, file)].most_common(1)[0][0]}",
             "self_pct": pct(count), "inclusive_pct": pct(inclusive[(function, file)])}
            for (function, file), count in self_functions.most_common(top)
        ],
        "self_by_line": [{"frame": frame, "self_pct": pct(count)}
                         for frame, count in self_lines.most_common(top)],
        "inclusive_by_function": [
            {"function": function, "where": file, "inclusive_pct": pct(count)}
            for (function, file), count in inclusive.most_common(top * 4)
        ],
        "tidings_inclusive": [
            {"function": function, "where": file, "inclusive_pct": pct(count)}
            for (function, file), count in inclusive.most_common()
            if file.startswith(("agents/", "streams/", "connectors/"))
        ][:top],
        "self_by_package": [{"package": package, "self_pct": pct(count)}
                            for package, count in packages.most_common(top)],
    }
