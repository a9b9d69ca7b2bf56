"""Local Apache Kafka in KRaft mode, from Maven Central jars; no Docker.

    python deploy/local/kafka_local.py fetch              # jars into the cache, once
    python deploy/local/kafka_local.py start [--nodes 3]  # background; prints the bootstrap
    python deploy/local/kafka_local.py stop

The same `Cluster` class is what the pytest fixtures use. One node runs in combined mode
(broker + controller); three nodes form a static controller quorum
(`controller.quorum.voters`, KIP-595) with distinct ports and data directories.

The cache folder is `$TIDINGS_CACHE` (default `.cache/` at the repository root); the jars
land in `<cache>/kafka-<version>/libs` and are reused by later runs.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

KAFKA_VERSION = "4.3.1"
DEPENDENCY_PLUGIN = "org.apache.maven.plugins:maven-dependency-plugin:3.8.1"
HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
# Heap for one local node. The log cleaner's dedupe buffer is shrunk to match (below):
# its 128 MB default would otherwise take a quarter of it.
HEAP = os.environ.get("TIDINGS_KAFKA_HEAP", "512m")


class KafkaLaunchError(RuntimeError):
    """The local runtime could not be fetched or started; the message says what to look at."""


def cache_dir() -> Path:
    return Path(os.environ.get("TIDINGS_CACHE", REPO / ".cache")).resolve()


def libs_dir() -> Path:
    return cache_dir() / f"kafka-{KAFKA_VERSION}" / "libs"


def fetch() -> Path:
    """Copy the broker's jars from Maven Central into the cache (skipped when already there)."""
    libs = libs_dir()
    done = libs / ".complete"
    if done.exists():
        return libs
    libs.mkdir(parents=True, exist_ok=True)
    mvn = shutil.which("mvn")
    if mvn is None:
        raise KafkaLaunchError("mvn not found on PATH: Maven is needed to fetch the Kafka jars")
    command = [
        mvn, "-B", "-q", "-f", str(HERE / "pom.xml"),
        f"{DEPENDENCY_PLUGIN}:copy-dependencies",
        f"-DoutputDirectory={libs}", "-DincludeScope=runtime",
    ]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise KafkaLaunchError(
            f"fetching Kafka {KAFKA_VERSION} jars failed ({result.returncode}):\n"
            f"{result.stdout[-4000:]}{result.stderr[-4000:]}"
        )
    if not any(libs.glob("kafka_2.13-*.jar")):
        raise KafkaLaunchError(f"maven finished but no kafka_2.13 jar is in {libs}")
    done.write_text(KAFKA_VERSION)
    return libs


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def random_cluster_id() -> str:
    """Kafka's cluster id format: a UUID, base64url without padding (what `random-uuid` prints)."""
    return base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")


@dataclass
class Node:
    node_id: int
    port: int
    controller_port: int
    data_dir: Path
    process: subprocess.Popen[bytes] | None = None
    pid: int | None = None

    @property
    def config_path(self) -> Path:
        return self.data_dir / "server.properties"


# A broker keeps files open for each partition's active segment; a test run creates
# thousands of partitions, and past the open-files limit Kafka fails every new connection
# with "Too many open files". The tests delete their topics (tests/conftest.py); the broker
# also gets as high a limit as the system allows it.
BROKER_OPEN_FILES = 262_144


def _raise_open_files_limit() -> None:
    """In the broker's child process: as many open files as the system lets it have."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (BROKER_OPEN_FILES, BROKER_OPEN_FILES))
    except (ValueError, OSError):  # not privileged: the hard limit is the most we may have
        resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, hard), hard))


@dataclass
class Cluster:
    """A local Kafka cluster of `size` nodes, each a broker and a controller."""

    size: int = 1
    base_dir: Path | None = None
    ports: list[int] | None = None
    nodes: list[Node] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.base_dir is None:
            self.base_dir = Path(tempfile.mkdtemp(prefix="tidings-kafka-"))
        self.base_dir = Path(self.base_dir)
        ports = self.ports or [free_port() for _ in range(self.size)]
        if len(ports) != self.size:
            raise KafkaLaunchError(f"{self.size} nodes need {self.size} ports, got {ports}")
        self.nodes = [
            Node(i + 1, ports[i], free_port(), self.base_dir / f"node-{i + 1}")
            for i in range(self.size)
        ]

    @property
    def bootstrap(self) -> str:
        return ",".join(f"127.0.0.1:{node.port}" for node in self.nodes)

    def _properties(self, node: Node) -> str:
        voters = ",".join(f"{n.node_id}@127.0.0.1:{n.controller_port}" for n in self.nodes)
        replication = min(3, self.size)
        settings = {
            "process.roles": "broker,controller",
            "node.id": node.node_id,
            "controller.quorum.voters": voters,
            "listeners": f"PLAINTEXT://127.0.0.1:{node.port},CONTROLLER://127.0.0.1:{node.controller_port}",
            "advertised.listeners": f"PLAINTEXT://127.0.0.1:{node.port}",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "log.dirs": str(node.data_dir / "data"),
            "num.partitions": 1,
            "default.replication.factor": replication,
            "offsets.topic.replication.factor": replication,
            "offsets.topic.num.partitions": 8,
            "transaction.state.log.replication.factor": replication,
            "transaction.state.log.min.isr": min(2, replication),
            "share.coordinator.state.topic.replication.factor": replication,
            "share.coordinator.state.topic.min.isr": min(2, replication),
            "min.insync.replicas": min(2, replication),
            # Tests and local runs join groups constantly; the 3 s default delay only slows them.
            "group.initial.rebalance.delay.ms": 0,
            # The cleaner's dedupe buffer defaults to 128 MB; 1 MB (the minimum plus one) is
            # plenty for the compacted topics of a local run.
            "log.cleaner.dedupe.buffer.size": 1048577,
            "auto.create.topics.enable": "false",
            "log.segment.bytes": 64 * 1024 * 1024,
            "num.network.threads": 2,
            "num.io.threads": 4,
        }
        return "".join(f"{key}={value}\n" for key, value in settings.items())

    def _java(self, node: Node, main_class: str, *args: str) -> list[str]:
        java = shutil.which("java")
        if java is None:
            raise KafkaLaunchError("java not found on PATH: a JDK 17+ runs the broker")
        return [
            java, f"-Xms{HEAP}", f"-Xmx{HEAP}", "-XX:+UseG1GC", "-XX:MaxGCPauseMillis=20",
            "-Djava.awt.headless=true",
            f"-Dkafka.logs.dir={node.data_dir / 'logs'}",
            f"-Dlog4j2.configurationFile={HERE / 'log4j2.properties'}",
            "-cp", f"{libs_dir()}/*", main_class, *args,
        ]

    def start(self, timeout: float = 90.0) -> str:
        fetch()
        cluster_id = random_cluster_id()
        for node in self.nodes:
            (node.data_dir / "logs").mkdir(parents=True, exist_ok=True)
            node.config_path.write_text(self._properties(node))
            fmt = subprocess.run(
                self._java(node, "kafka.tools.StorageTool", "format", "--ignore-formatted",
                           "-t", cluster_id, "-c", str(node.config_path)),
                capture_output=True, text=True, check=False,
            )
            if fmt.returncode != 0:
                raise KafkaLaunchError(f"formatting node {node.node_id} failed:\n{fmt.stderr}")
        for node in self.nodes:
            out = open(node.data_dir / "logs" / "stdout.log", "ab")  # noqa: SIM115 - owned by the process
            node.process = subprocess.Popen(
                self._java(node, "kafka.Kafka", str(node.config_path)),
                stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                preexec_fn=_raise_open_files_limit,
            )
            node.pid = node.process.pid
        self.wait_ready(timeout)
        return self.bootstrap

    def wait_ready(self, timeout: float) -> None:
        """Wait until an admin client sees every broker of the cluster."""
        import logging

        from confluent_kafka.admin import AdminClient

        # librdkafka logs every refused connect while the broker boots; those are expected here.
        quiet = logging.getLogger("tidings.kafka_local.rdkafka")
        quiet.setLevel(logging.CRITICAL)
        admin = AdminClient(
            {"bootstrap.servers": self.bootstrap, "socket.timeout.ms": 2000, "logger": quiet}
        )
        deadline = time.monotonic() + timeout
        last_error: Exception | None = None
        while time.monotonic() < deadline:
            for node in self.nodes:
                if node.process is not None and node.process.poll() is not None:
                    raise KafkaLaunchError(
                        f"node {node.node_id} exited with {node.process.returncode}; "
                        f"see {node.data_dir / 'logs'}"
                    )
            try:
                metadata = admin.list_topics(timeout=2)
                if len(metadata.brokers) == self.size:
                    return
            except Exception as exc:  # noqa: BLE001 - any admin failure means "not yet"
                last_error = exc
            time.sleep(0.3)
        self.stop()
        raise KafkaLaunchError(f"brokers not ready after {timeout}s: {last_error}")

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM every node (a controlled shutdown), SIGKILL what is left after `timeout`."""
        pids = [node.pid for node in self.nodes if node.pid]
        for pid in pids:
            _signal(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for node in self.nodes:
            if node.process is not None:
                try:
                    node.process.wait(max(0.1, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    node.process.kill()
                    node.process.wait()
            elif node.pid:
                while _alive(node.pid) and time.monotonic() < deadline:
                    time.sleep(0.2)
                _signal(node.pid, signal.SIGKILL)
            node.pid = None
            node.process = None

    def kill_node(self, node_id: int) -> None:
        node = self.nodes[node_id - 1]
        if node.process is not None:
            node.process.kill()
            node.process.wait()
        node.process, node.pid = None, None

    def to_state(self) -> dict[str, object]:
        return {
            "bootstrap": self.bootstrap,
            "base_dir": str(self.base_dir),
            "nodes": [
                {"node_id": n.node_id, "port": n.port, "controller_port": n.controller_port,
                 "data_dir": str(n.data_dir), "pid": n.pid}
                for n in self.nodes
            ],
        }

    @classmethod
    def from_state(cls, state: dict[str, object]) -> Cluster:
        nodes = state["nodes"]
        assert isinstance(nodes, list)
        cluster = cls(size=len(nodes), base_dir=Path(str(state["base_dir"])),
                      ports=[n["port"] for n in nodes])
        for node, saved in zip(cluster.nodes, nodes, strict=True):
            node.controller_port = saved["controller_port"]
            node.pid = saved["pid"]
        return cluster


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _signal(pid: int, sig: signal.Signals) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def state_file() -> Path:
    return cache_dir() / "kafka-local.json"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("fetch", help="copy the Kafka jars from Maven Central into the cache")
    start = sub.add_parser("start", help="start in the background and print the bootstrap")
    start.add_argument("--nodes", type=int, default=1)
    start.add_argument("--port", type=int, default=9092, help="first broker port")
    sub.add_parser("stop", help="stop what `start` started")
    sub.add_parser("bootstrap", help="print the bootstrap of the running local cluster")
    args = parser.parse_args(argv)

    try:
        if args.command == "fetch":
            print(fetch())
        elif args.command == "start":
            if state_file().exists():
                state = json.loads(state_file().read_text())
                running = Cluster.from_state(state)
                if all(n.pid and _alive(n.pid) for n in running.nodes):
                    print(running.bootstrap)
                    return 0
            base = cache_dir() / "kafka-data"
            shutil.rmtree(base, ignore_errors=True)
            cluster = Cluster(
                size=args.nodes, base_dir=base,
                ports=[args.port + 2 * i for i in range(args.nodes)],
            )
            for node in cluster.nodes:
                node.controller_port = node.port + 1
            bootstrap = cluster.start()
            state_file().write_text(json.dumps(cluster.to_state()))
            print(bootstrap)
        elif args.command == "stop":
            if not state_file().exists():
                print("no local Kafka is running", file=sys.stderr)
                return 0
            Cluster.from_state(json.loads(state_file().read_text())).stop()
            state_file().unlink()
            print("stopped")
        elif args.command == "bootstrap":
            if not state_file().exists():
                return 1
            print(json.loads(state_file().read_text())["bootstrap"])
    except KafkaLaunchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
