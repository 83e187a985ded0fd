"""Real-client compatibility suite for the Fjord broker.

README
------
These tests run real Kafka clients -- confluent-kafka (librdkafka), kafka-python, and Apache Kafka's
own Java CLI tools and producer -- against a broker that the suite starts itself on 127.0.0.1 with a
fresh data directory. Nothing is mocked. Run it with

    bash scripts/python-env.sh && bash scripts/kafka-dist.sh
    FJORD_BROKER_BIN=target/release/fjord-broker ~/.cache/fjord/venv/bin/python -m pytest tests/compat -q

Environment:
  FJORD_TEST_TARGET  "fjord" (default) starts $FJORD_BROKER_BIN (default target/release/fjord-broker)
                     as `fjord-broker --override listeners=PLAINTEXT://127.0.0.1:<port>
                     --override log.dirs=<tmp> --override admin.listener=127.0.0.1:<port>
                     --override node.id=1`; ready = TCP connect + `GET /v1/ready` == 200.
                     "apache" starts an Apache Kafka 4.3.1 single-node KRaft broker (combined
                     broker+controller) from the jars instead, to validate the tests themselves.
  KAFKA_BIN_DIR      bin dir of the Apache Kafka distribution; found by running
                     scripts/kafka-dist.sh when unset.
  FJORD_TEST_KEEP    if set, keep the broker data/log directories after the run.

Modules: test_clients.py (confluent-kafka + kafka-python: 5 codecs x 100k records, 3-member group
with a member leaving, commit, broker restart, resume), test_cli.py (Apache CLI tools and the Java
producer/consumer), test_crash.py (SIGKILL under an idempotent acks=all producer), test_bad_input.py
(malformed frames on raw sockets), test_misc.py (admin APIs, timestamps, size limits, interop).
The whole suite takes about 3-4 minutes on 2 cores.

Each test module gets its own broker (module-scoped fixture ``broker_proc``); the function-scoped
``broker`` fixture restarts it if an earlier test left it down, and fails a test during which the
broker died without the test asking for it. The broker's stdout/stderr go to a log file whose tail
is printed on any failure. Every test has a pytest-timeout; every loop is bounded.
"""
from __future__ import annotations

import base64
import os
import shutil
import signal
import socket
import struct
import subprocess
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
TARGET = os.environ.get("FJORD_TEST_TARGET", "fjord").strip().lower()
READY_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 30.0
KAFKA_VERSION = "4.3.1"


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------

def _die_with_parent():
    """preexec_fn: the broker gets SIGKILL if the pytest process dies (no orphaned brokers)."""
    try:
        import ctypes
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG = 1
    except Exception:  # noqa: BLE001 - best effort
        pass


def random_cluster_id() -> str:
    """Like `kafka-storage random-uuid`: URL-safe base64 of a random UUID, no padding. Ids starting
    with '-' are skipped: the tool's argument parser would read them as an option."""
    while True:
        cid = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        if not cid.startswith("-"):
            return cid


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tail(path: Path, n: int = 80) -> str:
    try:
        lines = Path(path).read_text(errors="replace").splitlines()
    except OSError as e:
        return f"<cannot read {path}: {e}>"
    return "\n".join(lines[-n:])


def tcp_ok(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def api_versions_roundtrip(host: str, port: int, timeout: float = 5.0) -> list[tuple[int, int, int]]:
    """Send a raw ApiVersions v0 request and return [(api_key, min, max)].

    Request frame: int32 size | int16 api_key=18 | int16 api_version=0 | int32 correlation_id |
                   int16 client_id length | client_id bytes        (request header v1, empty body)
    Response:      int32 size | int32 correlation_id | int16 error_code |
                   int32 n | n * (int16 api_key, int16 min, int16 max)
    """
    cid = 4242
    client_id = b"fjord-compat"
    body = struct.pack(">hhih", 18, 0, cid, len(client_id)) + client_id
    with socket.create_connection((host, port), timeout=timeout) as s:
        s.settimeout(timeout)
        s.sendall(struct.pack(">i", len(body)) + body)
        size = struct.unpack(">i", recv_exact(s, 4))[0]
        data = recv_exact(s, size)
    got_cid, err, n = struct.unpack(">ihi", data[:10])
    assert got_cid == cid, f"ApiVersions correlation id {got_cid} != {cid}"
    assert err == 0, f"ApiVersions v0 error_code {err}"
    out = []
    for i in range(n):
        out.append(struct.unpack(">hhh", data[10 + 6 * i: 16 + 6 * i]))
    return out


def recv_exact(s: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        if not chunk:
            raise ConnectionError(f"connection closed after {len(buf)}/{n} bytes")
        buf += chunk
    return buf


def kafka_bin_dir() -> Path:
    d = os.environ.get("KAFKA_BIN_DIR")
    if d:
        return Path(d)
    out = subprocess.run(["bash", str(REPO / "scripts" / "kafka-dist.sh")], check=True,
                         stdout=subprocess.PIPE, text=True, timeout=900).stdout
    d = out.strip().splitlines()[-1]
    os.environ["KAFKA_BIN_DIR"] = d
    return Path(d)


# --------------------------------------------------------------------------------------------
# broker process wrapper
# --------------------------------------------------------------------------------------------

class Broker:
    """One broker process (Fjord or Apache Kafka) with a fixed data dir and fixed ports.

    start()/stop()/kill() can be called repeatedly; start() after stop()/kill() reuses the same
    data directory and ports. ``bootstrap`` is "127.0.0.1:<port>"; ``log_path`` holds the
    process's stdout+stderr across all starts.
    """

    def __init__(self, workdir: Path, target: str = TARGET, extra: dict[str, str] | None = None):
        self.target = target
        self.workdir = Path(workdir)
        self.data_dir = self.workdir / "data"
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = self.workdir / "broker.log"
        self.host = "127.0.0.1"
        self.port = free_port()
        self.admin_port = free_port()        # fjord admin HTTP
        self.controller_port = free_port()   # apache KRaft controller listener
        self.bootstrap = f"{self.host}:{self.port}"
        self.extra = dict(extra or {})
        self.proc: subprocess.Popen | None = None
        self.expected_down = True
        self.starts = 0
        self._formatted = False

    # -- command lines -----------------------------------------------------------------------

    def _fjord_cmd(self) -> list[str]:
        binary = os.environ.get("FJORD_BROKER_BIN") or str(REPO / "target" / "release" / "fjord-broker")
        if not (os.path.isfile(binary) and os.access(binary, os.X_OK)):
            pytest.fail(f"fjord-broker binary not found at {binary!r}: build it with "
                        "`cargo build --release -p fjord-broker`, set FJORD_BROKER_BIN, or run "
                        "against Apache Kafka with FJORD_TEST_TARGET=apache", pytrace=False)
        overrides = {
            "listeners": f"PLAINTEXT://{self.bootstrap}",
            "log.dirs": str(self.data_dir),
            "admin.listener": f"{self.host}:{self.admin_port}",
            "node.id": "1",
            **self.extra,
        }
        cmd = [binary]
        for k, v in overrides.items():
            cmd += ["--override", f"{k}={v}"]
        return cmd

    def _apache_cmd(self) -> list[str]:
        bindir = kafka_bin_dir()
        props = {
            "process.roles": "broker,controller",
            "node.id": "1",
            "controller.quorum.voters": f"1@{self.host}:{self.controller_port}",
            "listeners": f"PLAINTEXT://{self.bootstrap},CONTROLLER://{self.host}:{self.controller_port}",
            "advertised.listeners": f"PLAINTEXT://{self.bootstrap}",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "log.dirs": str(self.data_dir),
            "num.partitions": "1",
            "auto.create.topics.enable": "true",
            "offsets.topic.replication.factor": "1",
            "offsets.topic.num.partitions": "10",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "transaction.state.log.num.partitions": "4",
            "share.coordinator.state.topic.replication.factor": "1",
            "share.coordinator.state.topic.min.isr": "1",
            "group.initial.rebalance.delay.ms": "0",
            "num.network.threads": "2",
            "num.io.threads": "4",
            **self.extra,
        }
        cfg = self.workdir / "server.properties"
        cfg.write_text("".join(f"{k}={v}\n" for k, v in props.items()))
        if not self._formatted:
            cluster_id = random_cluster_id()
            r = subprocess.run([str(bindir / "kafka-storage"), "format", "-t", cluster_id, "-c", str(cfg)],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=120)
            assert r.returncode == 0, f"kafka-storage format failed:\n{r.stdout}"
            self._formatted = True
        return [str(bindir / "kafka-server-start"), str(cfg)]

    # -- lifecycle ---------------------------------------------------------------------------

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self, timeout: float = READY_TIMEOUT_S) -> None:
        assert not self.alive(), "broker already running"
        cmd = self._fjord_cmd() if self.target == "fjord" else self._apache_cmd()
        env = dict(os.environ)
        if self.target == "apache":
            env.setdefault("KAFKA_HEAP_OPTS", "-Xmx512m -Xms256m")
        else:
            env.setdefault("RUST_BACKTRACE", "1")
        self.starts += 1
        with open(self.log_path, "ab") as log:
            log.write(f"\n===== start #{self.starts} {time.strftime('%H:%M:%S')}: {' '.join(cmd)}\n".encode())
            log.flush()
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env,
                                         cwd=self.workdir, start_new_session=True,
                                         preexec_fn=_die_with_parent)
        self.expected_down = False
        self.wait_ready(timeout)

    def is_ready(self) -> bool:
        if not tcp_ok(self.host, self.port):
            return False
        if self.target == "fjord":
            try:
                with urllib.request.urlopen(f"http://{self.host}:{self.admin_port}/v1/ready", timeout=2) as r:
                    return r.status == 200
            except Exception:
                return False
        # Apache: the data-plane listener accepts only once the broker has caught up; make sure it
        # answers ApiVersions and lists itself in Metadata.
        try:
            api_versions_roundtrip(self.host, self.port, timeout=2)
            from confluent_kafka.admin import AdminClient
            md = AdminClient({"bootstrap.servers": self.bootstrap, "log_level": 0}).list_topics(timeout=3)
            return len(md.brokers) >= 1
        except Exception:
            return False

    def wait_ready(self, timeout: float = READY_TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive():
                raise AssertionError(f"broker exited with code {self.proc.returncode} before becoming "
                                     f"ready; log {self.log_path}:\n{tail(self.log_path)}")
            if self.is_ready():
                return
            time.sleep(0.2)
        raise AssertionError(f"broker not ready after {timeout:.0f}s (TCP {self.bootstrap}"
                             + (f", GET http://{self.host}:{self.admin_port}/v1/ready" if self.target == "fjord" else "")
                             + f"); log {self.log_path}:\n{tail(self.log_path)}")

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> int:
        """SIGTERM and wait; SIGKILL (and raise) if it does not exit in time. Returns the exit code."""
        self.expected_down = True
        if not self.alive():
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
            raise AssertionError(f"broker did not exit within {timeout}s of SIGTERM; log tail:\n{tail(self.log_path)}")

    def kill(self) -> None:
        """SIGKILL, as a crash would."""
        self.expected_down = True
        if self.alive():
            self.proc.kill()
            self.proc.wait(10)

    def restart(self) -> None:
        self.stop()
        self.start()

    def describe(self) -> str:
        return f"{self.target} broker at {self.bootstrap} (log {self.log_path})"


# --------------------------------------------------------------------------------------------
# fixtures
# --------------------------------------------------------------------------------------------

def pytest_report_header(config):
    return [f"fjord compat: target={TARGET} FJORD_BROKER_BIN={os.environ.get('FJORD_BROKER_BIN', '<unset>')} "
            f"KAFKA_BIN_DIR={os.environ.get('KAFKA_BIN_DIR', '<unset: scripts/kafka-dist.sh>')}"]


@pytest.fixture(scope="session")
def kafka_bin() -> Path:
    """Apache Kafka CLI wrappers (scripts/kafka-dist.sh)."""
    return kafka_bin_dir()


@pytest.fixture(scope="module")
def broker_proc(request, tmp_path_factory):
    if TARGET not in ("fjord", "apache"):
        pytest.fail(f"FJORD_TEST_TARGET must be 'fjord' or 'apache', not {TARGET!r}", pytrace=False)
    name = request.module.__name__.rsplit(".", 1)[-1]
    workdir = tmp_path_factory.mktemp(f"broker-{name}")
    yield from serve_module_broker(Broker(workdir), READY_TIMEOUT_S)


def serve_module_broker(b: Broker, start_timeout: float | None = None):
    """Starts `b` for one test module and, after it, stops it (killing it if it will not stop)
    and removes its data unless FJORD_TEST_KEEP is set. Module-scoped fixtures use it as
    ``yield from serve_module_broker(b)``; the default start timeout allows for the JVM."""
    b.start(timeout=start_timeout or (90 if TARGET == "apache" else 30))
    yield b
    try:
        b.stop()
    finally:
        if b.alive():
            b.kill()
        if not os.environ.get("FJORD_TEST_KEEP"):
            shutil.rmtree(b.data_dir, ignore_errors=True)


@pytest.fixture
def broker(broker_proc: Broker, request):
    """The module's broker, guaranteed up at test start; the test fails if it died unasked."""
    if not broker_proc.alive():
        # An earlier test left it down (e.g. it failed between stop() and start()).
        broker_proc.start()
    yield broker_proc
    if not broker_proc.expected_down and not broker_proc.alive():
        pytest.fail(f"broker died during the test (exit code {broker_proc.proc.returncode}); "
                    f"log {broker_proc.log_path}:\n{tail(broker_proc.log_path)}", pytrace=False)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Attach the broker log tail to every failing test report."""
    outcome = yield
    rep = outcome.get_result()
    if rep.failed:
        b = item.funcargs.get("broker") or item.funcargs.get("broker_proc")
        if isinstance(b, Broker):
            rep.sections.append((f"broker log tail ({b.log_path})", tail(b.log_path, 60)))


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def wait_for(pred, timeout: float, what: str, interval: float = 0.2):
    deadline = time.monotonic() + timeout
    last_exc = None
    while time.monotonic() < deadline:
        try:
            v = pred()
            if v:
                return v
        except Exception as e:  # noqa: BLE001 - report the last one
            last_exc = e
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}" + (f" (last error: {last_exc!r})" if last_exc else ""))


def create_topic(bootstrap: str, topic: str, partitions: int, config: dict | None = None, timeout: float = 30):
    """Create a topic with confluent-kafka's AdminClient and wait until every partition has a leader."""
    from confluent_kafka.admin import AdminClient, NewTopic
    admin = AdminClient({"bootstrap.servers": bootstrap})
    fut = admin.create_topics([NewTopic(topic, partitions, 1, config=config or {})],
                              operation_timeout=timeout, request_timeout=timeout)[topic]
    fut.result(timeout)

    def ready():
        md = admin.list_topics(topic, timeout=5)
        t = md.topics.get(topic)
        return (t is not None and t.error is None and len(t.partitions) == partitions
                and all(p.leader >= 0 for p in t.partitions.values()))
    wait_for(ready, timeout, f"topic {topic} with {partitions} partitions to have leaders")


def end_offsets(bootstrap: str, topic: str, partitions: int) -> dict[int, int]:
    from confluent_kafka import Consumer, TopicPartition
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "fjord-compat-offsets-probe",
                  "enable.auto.commit": False})
    try:
        out = {}
        for p in range(partitions):
            # Right after topic creation (or a restart) leadership may still be settling: retry
            # retriable errors for up to 30 s.
            deadline = time.monotonic() + 30
            while True:
                try:
                    lo, hi = c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
                    break
                except Exception:  # noqa: BLE001 - NOT_LEADER, LEADER_NOT_AVAILABLE, transport
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.2)
            out[p] = hi
        return out
    finally:
        c.close()


# Modules whose tests must never be skipped: a security check that silently does not run is
# worse than a failing one.
SECURITY_MODULES = ("test_sasl_tls", "test_security_admin", "test_acl_users")


def _skipped_reports(terminalreporter):
    return [r for r in terminalreporter.stats.get("skipped", []) if getattr(r, "nodeid", "")]


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    skipped = _skipped_reports(terminalreporter)
    security = [r for r in skipped if r.nodeid.split("::")[0].rsplit("/", 1)[-1][:-3] in SECURITY_MODULES]
    terminalreporter.write_line(
        f"fjord compat: target={TARGET}, {len(skipped)} skipped, {len(security)} of them security tests")
    for r in security:
        terminalreporter.write_line(f"  security test skipped: {r.nodeid}", red=True)


def pytest_sessionfinish(session, exitstatus):
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is None:
        return
    security = [r for r in _skipped_reports(reporter)
                if r.nodeid.split("::")[0].rsplit("/", 1)[-1][:-3] in SECURITY_MODULES]
    if security and session.exitstatus == 0:
        session.exitstatus = 1
