"""The processes a benchmark runs: Tidings workers, the webhook receiver, and a monitor that
samples their memory and CPU (and the machine's) every 100 ms.

Workers are `python -m streams.cli worker` with a TIDINGS_ environment, as tests/conftest.py
starts them; the receiver is `python -m connectors.emulators.webhook_receiver`, in its own
process so that its CPU is not the worker's, with its one-line-per-delivery output sent to
/dev/null.
"""

from __future__ import annotations

import base64
import bisect
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parents[2]
SECRET = "whsec_" + base64.b64encode(b"tidings-bench-signing-key-0123456789").decode()
HIGH_RATE = "1000000000"  # per minute: the limits never bind in a throughput run


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def loopback_delivery_env() -> dict[str, str]:
    """Worker settings for runs that deliver to the receiver on 127.0.0.1 (see worker_app.py)."""
    paths = [str(Path(__file__).resolve().parent), os.environ.get("PYTHONPATH", "")]
    return {
        "TIDINGS_WORKER_APP": "worker_app:build_app",
        "PYTHONPATH": os.pathsep.join(p for p in paths if p),
    }


def worker_env(bootstrap: str, prefix: str, data_dir: Path, *,
               stages: list[str] | None = None, partitions: int = 8,
               **extra: str) -> dict[str, str]:
    env = {
        "TIDINGS_KAFKA_BOOTSTRAP": bootstrap,
        "TIDINGS_TOPIC_PREFIX": prefix,
        "TIDINGS_APP_ID": prefix,
        "TIDINGS_PARTITIONS": str(partitions),
        "TIDINGS_DATA_DIR": str(data_dir),
        "TIDINGS_WEB_PORT": str(free_port()),
        "TIDINGS_WEBHOOK_SECRET": SECRET,
        "TIDINGS_RATE_TENANT_PER_MIN": HIGH_RATE,
        "TIDINGS_RATE_USER_PER_MIN": HIGH_RATE,
        "TIDINGS_RATE_CHANNEL_PER_MIN": HIGH_RATE,
        "TIDINGS_RATE_BURST": "1000",
        # A benchmark's flood is what the runaway guard is for: keep it from holding one.
        "TIDINGS_GUARD_ENABLED": "false",
        # The SSRF guard (when it lands) refuses loopback unless allowed; unknown settings
        # are ignored until then.
        "TIDINGS_WEBHOOK_ALLOWED_NETWORKS": '["127.0.0.0/8"]',
        "TIDINGS_LOG_LEVEL": "warn",
    }
    if stages is not None:
        env["TIDINGS_STAGES"] = "[" + ",".join(f'"{s}"' for s in stages) + "]"
    env.update(extra)
    return env


class Child:
    """A child process with its output in a log file; stopped with SIGTERM, then SIGKILL."""

    def __init__(self, name: str, command: list[str], env: dict[str, str], log_path: Path,
                 *, quiet: bool = False) -> None:
        self.name = name
        self.log_path = log_path
        self.env = env
        log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(log_path, "ab")  # noqa: SIM115 - the child's, closed with the process
        # `quiet`: stdout (one line per event) is dropped, stderr is kept for errors.
        self.process = subprocess.Popen(
            command, cwd=REPO, env={**os.environ, **env, "PYTHONUNBUFFERED": "1"},
            stdout=subprocess.DEVNULL if quiet else log, stderr=log,
        )
        log.close()
        self.pid = self.process.pid
        self.started_at = time.time()

    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self, timeout_s: float = 30.0) -> int:
        if self.process.poll() is not None:
            return self.process.returncode
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait()

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return ""


def start_worker(name: str, env: dict[str, str], log_dir: Path) -> Child:
    return Child(name, [sys.executable, "-m", "streams.cli", "worker"], env,
                 log_dir / f"{name}.log")


def start_receiver(log_dir: Path) -> tuple[Child, str]:
    """The webhook receiver on a free port; returns it and its base URL once it listens."""
    port = free_port()
    child = Child(
        "receiver",
        [sys.executable, "-m", "connectors.emulators.webhook_receiver",
         "--port", str(port), "--secret", SECRET],
        {}, log_dir / "receiver.log", quiet=True,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if not child.alive():
            raise RuntimeError(f"webhook receiver exited: {child.log_tail()}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return child, f"http://127.0.0.1:{port}"
        except OSError:
            time.sleep(0.1)
    child.stop()
    raise RuntimeError("webhook receiver did not listen within 30 s")


@dataclass
class _Series:
    times: list[float] = field(default_factory=list)
    rss: list[int] = field(default_factory=list)
    cpu_s: list[float] = field(default_factory=list)


class Monitor:
    """Samples RSS and CPU time of named processes, and the machine's busy CPU, every 100 ms.

    `watch` adds a process (by pid) at any time; its series end when it exits. The machine's
    CPU not used by any watched process (nor this harness) is reported as `other_cores`:
    other work on the box, which skews every figure measured at the same time.
    """

    def __init__(self, interval_s: float = 0.1) -> None:
        self._interval = interval_s
        self._procs: dict[str, psutil.Process] = {}
        self._series: dict[str, _Series] = {}
        self._system = _Series()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="bench-monitor")
        self.watch("harness", os.getpid())
        self._thread.start()

    def watch(self, name: str, pid: int) -> None:
        with self._lock:
            self._procs[name] = psutil.Process(pid)
            self._series[name] = _Series()

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            now = time.time()
            system = psutil.cpu_times()
            busy = system.user + system.system + system.nice + system.irq + system.softirq
            with self._lock:
                self._system.times.append(now)
                self._system.cpu_s.append(busy)
                for name, proc in list(self._procs.items()):
                    try:
                        with proc.oneshot():
                            rss = proc.memory_info().rss
                            times = proc.cpu_times()
                            cpu = times.user + times.system
                            for child in proc.children(recursive=True):
                                rss += child.memory_info().rss
                                ctimes = child.cpu_times()
                                cpu += ctimes.user + ctimes.system
                    except psutil.Error:
                        del self._procs[name]
                        continue
                    series = self._series[name]
                    series.times.append(now)
                    series.rss.append(rss)
                    series.cpu_s.append(cpu)

    def peak_rss_mb(self, name: str) -> float | None:
        with self._lock:
            series = self._series.get(name)
            return max(series.rss) / 2**20 if series and series.rss else None

    def cores(self, name: str, start: float, end: float) -> float | None:
        """Mean cores a process used between two wall-clock times (epoch seconds)."""
        with self._lock:
            series = self._system if name == "system" else self._series.get(name)
            if series is None:
                return None
            return _rate(series, start, end)

    def other_cores(self, start: float, end: float, ours: list[str]) -> float | None:
        system = self.cores("system", start, end)
        if system is None:
            return None
        used = sum(self.cores(name, start, end) or 0.0 for name in [*ours, "harness"])
        return max(0.0, system - used)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)


def _rate(series: _Series, start: float, end: float) -> float | None:
    if len(series.times) < 2 or end <= start:
        return None
    i = max(0, bisect.bisect_left(series.times, start) - 1)
    j = min(len(series.times) - 1, bisect.bisect_right(series.times, end))
    if j <= i:
        return None
    span = series.times[j] - series.times[i]
    return (series.cpu_s[j] - series.cpu_s[i]) / span if span > 0 else None
