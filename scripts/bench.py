#!/usr/bin/env python3
"""Side-by-side benchmark: fjord-broker vs Apache Kafka 4.3.1 (single node, same machine, one after the other).

    python3 scripts/bench.py                      # both brokers, default record count
    python3 scripts/bench.py --records 200000     # quick run
    python3 scripts/bench.py --only kafka         # just the Apache Kafka half
    python3 scripts/bench.py --cluster            # 3-node clusters, RF 3, acks=all (1,000,000 records)
    python3 scripts/bench.py --compaction         # compaction: MB/s cleaned, effect on produce (bench_compaction.py)

Called by `cargo xtask bench` with FJORD_BROKER_BIN pointing at a release build. Stdlib only.

For each broker: start it on 127.0.0.1 with a fresh data dir and the same settings; for acks=1 and
acks=all create a 6-partition topic and run `kafka-producer-perf-test` (1 KiB records, unthrottled)
then `kafka-consumer-perf-test` over the same records. Reported per phase: records/s, MB/s, producer
p50/p99 latency, broker CPU-seconds per GB moved (utime+stime from /proc/<pid>/stat around the
phase), and the broker's peak RSS (VmHWM). The table (with fjord/kafka ratios) is printed and
written as markdown to docs/benchmarks.md. A broker that fails to start or to finish is reported
as failed with its reason and log tail; the other broker still runs; the exit code is then 1.

`--cluster` runs the replicated comparison instead: three fjord-broker processes, then three Apache
Kafka processes, each a KRaft cluster of combined broker+controller nodes (ids 1-3 on 127.0.0.1-3, all
voters); a 6-partition topic with replication factor 3 and min.insync.replicas=2; the same producer
(acks=all) and consumer runs. CPU is summed over the three processes; RSS is reported as the largest
and the sum of the three. Only the "3 brokers" section of docs/benchmarks.md is rewritten (and a plain
run keeps that section).
"""
from __future__ import annotations

import argparse
import base64
import datetime as dt
import os
import platform
import re
import resource
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import traceback
import urllib.request
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
KAFKA_VERSION = "4.3.1"
CLK_TCK = os.sysconf("SC_CLK_TCK")
START_LOAD = " ".join(f"{x:.2f}" for x in os.getloadavg())


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


class BenchError(Exception):
    pass


# ------------------------------------------------------------------------------------------------
# process / proc helpers
# ------------------------------------------------------------------------------------------------

def _die_with_parent():
    """preexec_fn: the broker gets SIGKILL if this harness dies (no orphaned brokers)."""
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


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def cpu_seconds(pid: int) -> float:
    """utime+stime of the process (all its threads), in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        raw = f.read()
    fields = raw[raw.rindex(")") + 2:].split()  # fields after "pid (comm) "
    utime, stime = int(fields[11]), int(fields[12])  # stat fields 14 and 15
    return (utime + stime) / CLK_TCK


def vm_hwm_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    raise BenchError("no VmHWM in /proc status")


def tail(path: Path, n: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError as e:
        return f"<cannot read {path}: {e}>"


def api_versions_ok(host: str, port: int) -> bool:
    # ApiVersions v0: int32 size | int16 key=18 | int16 version=0 | int32 correlation id | int16 client id len | id
    body = struct.pack(">hhih", 18, 0, 1, 5) + b"bench"
    try:
        with socket.create_connection((host, port), timeout=2) as s:
            s.settimeout(2)
            s.sendall(struct.pack(">i", len(body)) + body)
            head = s.recv(4)
            return len(head) == 4 and struct.unpack(">i", head)[0] > 6
    except OSError:
        return False


def kafka_bin_dir() -> Path:
    d = os.environ.get("KAFKA_BIN_DIR")
    if d:
        return Path(d)
    out = subprocess.run(["bash", str(REPO / "scripts" / "kafka-dist.sh")], check=True,
                         stdout=subprocess.PIPE, text=True, timeout=1800).stdout
    return Path(out.strip().splitlines()[-1])


# ------------------------------------------------------------------------------------------------
# brokers
# ------------------------------------------------------------------------------------------------

# Broker settings given to both brokers (everything else is each broker's default).
SHARED_SETTINGS = {"num.partitions": "1", "auto.create.topics.enable": "true",
                   "group.initial.rebalance.delay.ms": "0"}


class BenchBroker:
    def __init__(self, kind: str, workdir: Path, bindir: Path, kafka_heap: str):
        self.kind, self.workdir, self.bindir, self.kafka_heap = kind, workdir, bindir, kafka_heap
        self.data = workdir / "data"
        self.data.mkdir(parents=True)
        self.log_path = workdir / "broker.log"
        self.port, self.admin_port, self.ctrl_port = free_port(), free_port(), free_port()
        self.bootstrap = f"127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None

    def command(self) -> tuple[list[str], dict]:
        env = dict(os.environ)
        if self.kind == "fjord":
            binary = os.environ.get("FJORD_BROKER_BIN") or str(REPO / "target" / "release" / "fjord-broker")
            if not os.access(binary, os.X_OK):
                raise BenchError(f"fjord-broker binary not found at {binary} (set FJORD_BROKER_BIN or "
                                 "cargo build --release -p fjord-broker)")
            cmd = [binary]
            for k, v in {"listeners": f"PLAINTEXT://{self.bootstrap}", "log.dirs": str(self.data),
                         "admin.listener": f"127.0.0.1:{self.admin_port}", "node.id": "1",
                         **SHARED_SETTINGS}.items():
                cmd += ["--override", f"{k}={v}"]
            return cmd, env
        props = {
            "process.roles": "broker,controller", "node.id": "1",
            "controller.quorum.voters": f"1@127.0.0.1:{self.ctrl_port}",
            "listeners": f"PLAINTEXT://{self.bootstrap},CONTROLLER://127.0.0.1:{self.ctrl_port}",
            "advertised.listeners": f"PLAINTEXT://{self.bootstrap}",
            "controller.listener.names": "CONTROLLER", "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "log.dirs": str(self.data),
            "offsets.topic.replication.factor": "1", "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1", "share.coordinator.state.topic.replication.factor": "1",
            "share.coordinator.state.topic.min.isr": "1",
            **SHARED_SETTINGS,
        }
        cfg = self.workdir / "server.properties"
        cfg.write_text("".join(f"{k}={v}\n" for k, v in props.items()))
        cluster_id = random_cluster_id()
        r = subprocess.run([str(self.bindir / "kafka-storage"), "format", "-t", cluster_id, "-c", str(cfg)],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=120)
        if r.returncode != 0:
            raise BenchError(f"kafka-storage format failed:\n{r.stdout}")
        env["KAFKA_HEAP_OPTS"] = self.kafka_heap
        return [str(self.bindir / "kafka-server-start"), str(cfg)], env

    def start(self, timeout: float = 60) -> None:
        cmd, env = self.command()
        log(f"starting {self.kind}: {' '.join(cmd)}")
        with open(self.log_path, "ab") as lf:
            self.proc = subprocess.Popen(cmd, stdout=lf, stderr=subprocess.STDOUT, env=env, cwd=self.workdir,
                                         start_new_session=True, preexec_fn=_die_with_parent)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise BenchError(f"{self.kind} broker exited with code {self.proc.returncode} during startup")
            if self.ready():
                return
            time.sleep(0.3)
        raise BenchError(f"{self.kind} broker not ready after {timeout:.0f}s")

    def ready(self) -> bool:
        if not api_versions_ok("127.0.0.1", self.port):
            return False
        if self.kind == "fjord":
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.admin_port}/v1/ready", timeout=2) as r:
                    return r.status == 200
            except Exception:
                return False
        return True

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def check_alive(self) -> None:
        if not self.alive():
            raise BenchError(f"{self.kind} broker died (exit code {self.proc.returncode})")

    def stop(self) -> None:
        if not self.alive():
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            log(f"{self.kind} broker ignored SIGTERM for 60s; killing")
            self.proc.kill()
            self.proc.wait(10)


# ------------------------------------------------------------------------------------------------
# tools
# ------------------------------------------------------------------------------------------------

def run_tool(bindir: Path, tool: str, args: list[str], timeout: float, heap: str = "-Xmx1g") -> str:
    env = dict(os.environ, KAFKA_HEAP_OPTS=heap)
    try:
        r = subprocess.run([str(bindir / tool), *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                           timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        raise BenchError(f"{tool} timed out after {timeout:.0f}s") from None
    if r.returncode != 0:
        raise BenchError(f"{tool} exited {r.returncode}:\n{r.stdout[-2000:]}\n{r.stderr[-2000:]}")
    return r.stdout


PRODUCER_RE = re.compile(
    r"(\d+) records sent, ([\d.]+) records/sec \(([\d.]+) MB/sec\), ([\d.]+) ms avg latency, ([\d.]+) ms max latency, "
    r"(\d+) ms 50th, (\d+) ms 95th, (\d+) ms 99th, (\d+) ms 99.9th")


def parse_producer(out: str, records: int) -> dict:
    """The figures of one `kafka-producer-perf-test` run (its last summary line)."""
    m = None
    for line in out.splitlines():
        m = PRODUCER_RE.search(line) or m
    if not m:
        raise BenchError(f"cannot parse kafka-producer-perf-test output:\n{out[-2000:]}")
    if int(m.group(1)) != records:
        raise BenchError(f"producer sent {m.group(1)} of {records} records")
    return {"records_s": float(m.group(2)), "mb_s": float(m.group(3)), "avg_ms": float(m.group(4)),
            "p50_ms": float(m.group(6)), "p99_ms": float(m.group(8))}


def parse_consumer(out: str, records: int) -> dict:
    """The figures of one `kafka-consumer-perf-test` run (CSV header + last row)."""
    lines = [ln for ln in out.splitlines() if ln.strip()]
    hdr = next((i for i, ln in enumerate(lines) if ln.startswith("start.time")), None)
    if hdr is None or hdr + 1 >= len(lines):
        raise BenchError(f"cannot parse kafka-consumer-perf-test output:\n{out[-2000:]}")
    cols = [c.strip() for c in lines[hdr].split(",")]
    vals = [v.strip() for v in lines[-1].split(",")]
    row = dict(zip(cols, vals))
    n = int(row["data.consumed.in.nMsg"])
    if n < records:
        raise BenchError(f"consumer read {n} of {records} records")
    return {"records_s": float(row["nMsg.sec"]), "mb_s": float(row["MB.sec"]),
            "fetch_mb_s": float(row.get("fetch.MB.sec", "nan"))}


def create_topic(bindir: Path, b: BenchBroker, topic: str, partitions: int) -> None:
    deadline = time.monotonic() + 60
    while True:
        try:
            run_tool(bindir, "kafka-topics", ["--bootstrap-server", b.bootstrap, "--create", "--topic", topic,
                                              "--partitions", str(partitions), "--replication-factor", "1"],
                     timeout=60, heap="-Xmx256m")
            break
        except BenchError as e:
            if time.monotonic() > deadline:
                raise BenchError(f"cannot create topic {topic}: {e}") from None
            time.sleep(1)
    # Wait for leaders (kafka-topics --describe shows Leader: 1 on every partition).
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        out = run_tool(bindir, "kafka-topics", ["--bootstrap-server", b.bootstrap, "--describe", "--topic", topic],
                       timeout=60, heap="-Xmx256m")
        if len(re.findall(r"Partition:\s*\d+\s+Leader:\s*1\b", out)) == partitions:
            return
        time.sleep(0.5)
    raise BenchError(f"topic {topic} partitions have no leader after 60s")


def bench_broker(kind: str, args, bindir: Path) -> dict:
    work = Path(tempfile.mkdtemp(prefix=f"fjord-bench-{kind}-", dir=args.work_dir))
    b = BenchBroker(kind, work, bindir, args.kafka_heap)
    res: dict = {"kind": kind, "phases": {}, "error": None, "log": str(b.log_path)}
    gb = args.records * args.record_size / 1e9
    try:
        b.start()
        res["rss_start_mib"] = vm_hwm_mib(b.proc.pid)
        if args.warmup > 0:
            # Untimed warm-up (JIT for the JVM broker, page cache and allocator for both).
            create_topic(bindir, b, "bench-warmup", args.partitions)
            log(f"{kind}: warm-up, {args.warmup} records")
            run_tool(bindir, "kafka-producer-perf-test", [
                "--topic", "bench-warmup", "--num-records", str(args.warmup), "--record-size", str(args.record_size),
                "--throughput", "-1", "--producer-props", f"bootstrap.servers={b.bootstrap}", *args.producer_props],
                timeout=args.phase_timeout)
            run_tool(bindir, "kafka-consumer-perf-test", [
                "--bootstrap-server", b.bootstrap, "--topic", "bench-warmup", "--num-records", str(args.warmup),
                "--timeout", "60000"], timeout=args.phase_timeout)
            b.check_alive()
        for acks in args.acks:
            topic = f"bench-acks-{acks}"
            create_topic(bindir, b, topic, args.partitions)
            b.check_alive()
            log(f"{kind}: producing {args.records} x {args.record_size} B, acks={acks}")
            cpu0, t0 = cpu_seconds(b.proc.pid), time.monotonic()
            out = run_tool(bindir, "kafka-producer-perf-test", [
                "--topic", topic, "--num-records", str(args.records), "--record-size", str(args.record_size),
                "--throughput", "-1", "--producer-props", f"bootstrap.servers={b.bootstrap}", f"acks={acks}",
                *args.producer_props], timeout=args.phase_timeout)
            wall, cpu = time.monotonic() - t0, cpu_seconds(b.proc.pid) - cpu0
            res["phases"][f"produce acks={acks}"] = {
                **parse_producer(out, args.records), "cpu_s_per_gb": cpu / gb, "wall_s": wall}
            b.check_alive()

            log(f"{kind}: consuming {args.records} records from {topic}")
            cpu0, t0 = cpu_seconds(b.proc.pid), time.monotonic()
            out = run_tool(bindir, "kafka-consumer-perf-test", [
                "--bootstrap-server", b.bootstrap, "--topic", topic, "--num-records", str(args.records),
                "--timeout", "60000"], timeout=args.phase_timeout)
            wall, cpu = time.monotonic() - t0, cpu_seconds(b.proc.pid) - cpu0
            res["phases"][f"consume acks={acks}"] = {
                **parse_consumer(out, args.records), "cpu_s_per_gb": cpu / gb, "wall_s": wall}
            b.check_alive()
        res["rss_peak_mib"] = vm_hwm_mib(b.proc.pid)
    except Exception as e:  # noqa: BLE001 - report any failure of this broker and go on
        res["error"] = f"{type(e).__name__}: {e}" if isinstance(e, BenchError) else traceback.format_exc()
        res["log_tail"] = tail(b.log_path) if b.log_path.exists() else "<broker never started>"
        log(f"{kind} FAILED: {res['error']}\n--- broker log tail ({b.log_path}) ---\n{res['log_tail']}")
        if b.alive():
            try:
                res["rss_peak_mib"] = vm_hwm_mib(b.proc.pid)
            except Exception:  # noqa: BLE001
                pass
    finally:
        b.stop()
        if not args.keep:
            # Keep only the broker log of a failed run; a successful run leaves nothing behind.
            shutil.rmtree(b.data if res["error"] else work, ignore_errors=True)
    return res


# ------------------------------------------------------------------------------------------------
# 3-node cluster (`--cluster`): RF 3, min.insync.replicas=2, combined broker+controller nodes
# ------------------------------------------------------------------------------------------------

CLUSTER_SIZE = 3
CLUSTER_RF = 3
CLUSTER_MIN_ISR = 2
LOG_PROBLEM_RE = re.compile(r"\b(WARN|ERROR)\b")


class ClusterNode:
    """One combined broker+controller process of a bench cluster: node i on 127.0.0.i."""

    def __init__(self, node_id: int, workdir: Path):
        self.id = node_id
        self.host = f"127.0.0.{node_id}"
        self.port, self.ctrl_port, self.admin_port = free_port(self.host), free_port(self.host), free_port(self.host)
        self.bootstrap = f"{self.host}:{self.port}"
        self.dir = workdir / f"node-{node_id}"
        self.data = self.dir / "data"
        self.data.mkdir(parents=True)
        self.log_path = workdir / f"node-{node_id}.log"
        self.proc: subprocess.Popen | None = None

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


class BenchCluster:
    """Three fjord-broker or Apache Kafka processes forming one KRaft cluster, same layout for both:
    node ids 1..3 on 127.0.0.1..3, each with a PLAINTEXT and a CONTROLLER listener, all three voters."""

    def __init__(self, kind: str, workdir: Path, bindir: Path, kafka_heap: str):
        self.kind, self.workdir, self.bindir, self.kafka_heap = kind, workdir, bindir, kafka_heap
        self.nodes = [ClusterNode(i, workdir) for i in range(1, CLUSTER_SIZE + 1)]
        self.voters = ",".join(f"{n.id}@{n.host}:{n.ctrl_port}" for n in self.nodes)
        self.bootstrap = ",".join(n.bootstrap for n in self.nodes)
        self.cluster_id = random_cluster_id()

    def common_props(self, n: ClusterNode) -> dict:
        return {
            "node.id": str(n.id), "process.roles": "broker,controller",
            "controller.quorum.voters": self.voters, "controller.listener.names": "CONTROLLER",
            "listeners": f"PLAINTEXT://{n.bootstrap},CONTROLLER://{n.host}:{n.ctrl_port}",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "log.dirs": str(n.data), **SHARED_SETTINGS,
        }

    def command(self, n: ClusterNode) -> tuple[list[str], dict]:
        env = dict(os.environ)
        if self.kind == "fjord":
            binary = os.environ.get("FJORD_BROKER_BIN") or str(REPO / "target" / "release" / "fjord-broker")
            if not os.access(binary, os.X_OK):
                raise BenchError(f"fjord-broker binary not found at {binary} (set FJORD_BROKER_BIN or "
                                 "cargo build --release -p fjord-broker)")
            props = {**self.common_props(n), "cluster.id": self.cluster_id,
                     "admin.listener": f"{n.host}:{n.admin_port}"}
            cmd = [binary]
            for k, v in props.items():
                cmd += ["--override", f"{k}={v}"]
            return cmd, env
        cfg = n.dir / "server.properties"
        return [str(self.bindir / "kafka-server-start"), str(cfg)], dict(env, KAFKA_HEAP_OPTS=self.kafka_heap)

    def format_kafka(self) -> None:
        """Writes each node's server.properties and runs `kafka-storage format` on all three at once,
        with the shared cluster id (the static voter set comes from controller.quorum.voters)."""
        procs = []
        for n in self.nodes:
            props = {**self.common_props(n), "advertised.listeners": f"PLAINTEXT://{n.bootstrap}",
                     "inter.broker.listener.name": "PLAINTEXT"}
            cfg = n.dir / "server.properties"
            cfg.write_text("".join(f"{k}={v}\n" for k, v in props.items()))
            procs.append(subprocess.Popen(
                [str(self.bindir / "kafka-storage"), "format", "-t", self.cluster_id, "-c", str(cfg)],
                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
        for n, p in zip(self.nodes, procs):
            out, _ = p.communicate(timeout=120)
            if p.returncode != 0:
                raise BenchError(f"kafka-storage format failed on node {n.id}:\n{out}")

    def start(self, timeout: float = 180) -> None:
        if self.kind == "kafka":
            self.format_kafka()
        for n in self.nodes:
            cmd, env = self.command(n)
            log(f"starting {self.kind} node {n.id}: {' '.join(cmd)}")
            with open(n.log_path, "ab") as lf:
                n.proc = subprocess.Popen(cmd, stdout=lf, stderr=subprocess.STDOUT, env=env, cwd=n.dir,
                                          start_new_session=True, preexec_fn=_die_with_parent)
        deadline = time.monotonic() + timeout
        pending = list(self.nodes)
        while pending:
            self.check_alive()
            pending = [n for n in pending if not self.node_ready(n)]
            if not pending:
                return
            if time.monotonic() > deadline:
                raise BenchError(f"{self.kind} nodes {[n.id for n in pending]} not ready after {timeout:.0f}s")
            time.sleep(0.3)

    def node_ready(self, n: ClusterNode) -> bool:
        if not api_versions_ok(n.host, n.port):
            return False
        if self.kind == "fjord":
            try:
                with urllib.request.urlopen(f"http://{n.host}:{n.admin_port}/v1/ready", timeout=2) as r:
                    return r.status == 200
            except Exception:  # noqa: BLE001 - not ready yet
                return False
        return True

    def check_alive(self) -> None:
        for n in self.nodes:
            if not n.alive():
                code = n.proc.returncode if n.proc else "never started"
                raise BenchError(f"{self.kind} node {n.id} died (exit code {code})")

    def cpu(self) -> list[float]:
        return [cpu_seconds(n.proc.pid) for n in self.nodes]

    def rss(self) -> list[float]:
        return [vm_hwm_mib(n.proc.pid) for n in self.nodes if n.alive()]

    def thread_cpu(self) -> dict[str, float]:
        """CPU-seconds per thread name (digits folded to #, names as the kernel truncates them), summed over
        the threads of all three processes, e.g. JIT compiler vs request handlers vs replica fetchers."""
        out: dict[str, float] = {}
        for n in self.nodes:
            pid = n.proc.pid
            try:
                tids = os.listdir(f"/proc/{pid}/task")
            except OSError:
                continue
            for tid in tids:
                try:
                    with open(f"/proc/{pid}/task/{tid}/stat") as f:
                        raw = f.read()
                except OSError:
                    continue  # the thread ended meanwhile
                name = re.sub(r"\d+", "#", raw[raw.index("(") + 1:raw.rindex(")")])
                fields = raw[raw.rindex(")") + 2:].split()
                out[name] = out.get(name, 0.0) + (int(fields[11]) + int(fields[12])) / CLK_TCK
        return out

    def stop(self) -> None:
        """SIGTERM to all three at once (controlled shutdown), SIGKILL whoever is left after 60 s."""
        running = [n for n in self.nodes if n.alive()]
        for n in running:
            n.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 60
        for n in running:
            try:
                n.proc.wait(max(1.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log(f"{self.kind} node {n.id} ignored SIGTERM for 60s; killing")
                n.proc.kill()
                n.proc.wait(10)

    def log_problems(self) -> list[int]:
        """WARN/ERROR lines in each node's log so far."""
        counts = []
        for n in self.nodes:
            try:
                text = n.log_path.read_text(errors="replace")
            except OSError:
                text = ""
            counts.append(sum(1 for ln in text.splitlines() if LOG_PROBLEM_RE.search(ln)))
        return counts


PARTITION_RE = re.compile(r"Partition:\s*(\d+)\s+Leader:\s*(-?\d+|none)\s+Replicas:\s*([\d,]*)\s+Isr:\s*([\d,]*)")


def describe_partitions(bindir: Path, bootstrap: str, topic: str) -> list[tuple[int, str, list[str], list[str]]]:
    out = run_tool(bindir, "kafka-topics", ["--bootstrap-server", bootstrap, "--describe", "--topic", topic],
                   timeout=60, heap="-Xmx256m")
    return [(int(p), leader, [r for r in reps.split(",") if r], [i for i in isr.split(",") if i])
            for p, leader, reps, isr in PARTITION_RE.findall(out)]


def create_replicated_topic(bindir: Path, c: BenchCluster, topic: str, partitions: int) -> dict[str, int]:
    """Creates `topic` (RF 3, min.insync.replicas=2) and waits until every partition has a leader and all
    three replicas in its ISR. Returns the number of partition leaders per node id."""
    deadline = time.monotonic() + 120
    while True:
        try:
            run_tool(bindir, "kafka-topics", [
                "--bootstrap-server", c.bootstrap, "--create", "--topic", topic, "--partitions", str(partitions),
                "--replication-factor", str(CLUSTER_RF), "--config", f"min.insync.replicas={CLUSTER_MIN_ISR}"],
                timeout=60, heap="-Xmx256m")
            break
        except BenchError as e:
            # Apache Kafka refuses RF 3 until all three brokers have registered; retry until then.
            c.check_alive()
            if time.monotonic() > deadline:
                raise BenchError(f"cannot create topic {topic}: {e}") from None
            time.sleep(1)
    deadline = time.monotonic() + 120
    parts: list = []
    while time.monotonic() < deadline:
        parts = describe_partitions(bindir, c.bootstrap, topic)
        if len(parts) == partitions and all(ld not in ("-1", "none") and len(isr) == CLUSTER_RF
                                            for _, ld, _, isr in parts):
            leaders: dict[str, int] = {}
            for _, ld, _, _ in parts:
                leaders[ld] = leaders.get(ld, 0) + 1
            return leaders
        c.check_alive()
        time.sleep(0.5)
    raise BenchError(f"topic {topic}: partitions without a leader or a full ISR after 120s: {parts}")


def machine_busy_s() -> float:
    """CPU-seconds the whole machine spent busy so far (user+nice+system+irq+softirq, all cores)."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    return (v[0] + v[1] + v[2] + v[5] + v[6]) / CLK_TCK


def children_cpu_s() -> float:
    """CPU-seconds of this script's finished (waited-for) children: the load tools."""
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def check_disk(path: Path, need_bytes: float) -> None:
    st = os.statvfs(path)
    free = st.f_bavail * st.f_frsize
    if free < need_bytes:
        raise BenchError(f"{free / 1e9:.1f} GB free in {path}, the run needs about {need_bytes / 1e9:.1f} GB "
                         "(use --records or --work-dir)")


def bench_cluster(kind: str, args, bindir: Path) -> dict:
    work = Path(tempfile.mkdtemp(prefix=f"fjord-bench-cluster-{kind}-", dir=args.work_dir))
    res: dict = {"kind": kind, "phases": {}, "error": None, "log": str(work / "node-*.log"),
                 "load_start": " ".join(f"{x:.2f}" for x in os.getloadavg())}
    gb = args.records * args.record_size / 1e9
    c = None
    t_all = time.monotonic()
    try:
        # Every record is stored three times; the indexes and the warm-up take a bit more.
        check_disk(work, (args.records + args.warmup) * args.record_size * CLUSTER_RF * len(args.acks) * 1.2)
        c = BenchCluster(kind, work, bindir, args.kafka_heap)
        t_start = time.monotonic()
        c.start()
        res["startup_s"] = time.monotonic() - t_start
        log(f"{kind}: 3 nodes ready in {res['startup_s']:.1f}s")
        if args.warmup > 0:
            create_replicated_topic(bindir, c, "bench-warmup", args.partitions)
            log(f"{kind}: warm-up, {args.warmup} records, acks=all")
            run_tool(bindir, "kafka-producer-perf-test", [
                "--topic", "bench-warmup", "--num-records", str(args.warmup), "--record-size", str(args.record_size),
                "--throughput", "-1", "--producer-props", f"bootstrap.servers={c.bootstrap}", "acks=all",
                *args.producer_props], timeout=args.phase_timeout)
            run_tool(bindir, "kafka-consumer-perf-test", [
                "--bootstrap-server", c.bootstrap, "--topic", "bench-warmup", "--num-records", str(args.warmup),
                "--timeout", "60000"], timeout=args.phase_timeout)
            c.check_alive()
        for acks in args.acks:
            topic = f"bench-cluster-acks-{acks}"
            res["leaders"] = create_replicated_topic(bindir, c, topic, args.partitions)
            log(f"{kind}: {topic} leaders per node: {res['leaders']}")
            log(f"{kind}: producing {args.records} x {args.record_size} B, acks={acks}")
            cpu0, t0, m0, k0 = c.cpu(), time.monotonic(), machine_busy_s(), children_cpu_s()
            threads0 = c.thread_cpu()
            out = run_tool(bindir, "kafka-producer-perf-test", [
                "--topic", topic, "--num-records", str(args.records), "--record-size", str(args.record_size),
                "--throughput", "-1", "--producer-props", f"bootstrap.servers={c.bootstrap}", f"acks={acks}",
                *args.producer_props], timeout=args.phase_timeout)
            wall, cpu = time.monotonic() - t0, [b - a for a, b in zip(cpu0, c.cpu())]
            # Threads that died during the phase are missing from the second sample (not counted).
            threads = {k: v - threads0.get(k, 0.0) for k, v in c.thread_cpu().items()}
            res["busiest_threads"] = sorted(threads.items(), key=lambda kv: -kv[1])[:4]
            res["phases"][f"produce acks={acks}"] = {
                **parse_producer(out, args.records), "cpu_s_per_gb": sum(cpu) / gb, "cpu_split": cpu,
                "wall_s": wall, "machine_s": machine_busy_s() - m0, "tool_s": children_cpu_s() - k0}
            c.check_alive()
            # Did a follower fall out of the ISR under load? (Reported, not a failure.)
            parts = describe_partitions(bindir, c.bootstrap, topic)
            res["isr_after_produce"] = sum(len(isr) for _, _, _, isr in parts)

            log(f"{kind}: consuming {args.records} records from {topic}")
            cpu0, t0, m0, k0 = c.cpu(), time.monotonic(), machine_busy_s(), children_cpu_s()
            out = run_tool(bindir, "kafka-consumer-perf-test", [
                "--bootstrap-server", c.bootstrap, "--topic", topic, "--num-records", str(args.records),
                "--timeout", "60000"], timeout=args.phase_timeout)
            wall, cpu = time.monotonic() - t0, [b - a for a, b in zip(cpu0, c.cpu())]
            res["phases"][f"consume acks={acks}"] = {
                **parse_consumer(out, args.records), "cpu_s_per_gb": sum(cpu) / gb, "cpu_split": cpu,
                "wall_s": wall, "machine_s": machine_busy_s() - m0, "tool_s": children_cpu_s() - k0}
            c.check_alive()
        res["rss_nodes_mib"] = c.rss()
    except Exception as e:  # noqa: BLE001 - report any failure of this cluster and go on
        res["error"] = f"{type(e).__name__}: {e}" if isinstance(e, BenchError) else traceback.format_exc()
        tails = []
        for n in (c.nodes if c else []):
            tails.append(f"--- node {n.id} ({n.log_path}) ---\n{tail(n.log_path)}")
        res["log_tail"] = "\n".join(tails) or "<cluster never started>"
        log(f"{kind} cluster FAILED: {res['error']}\n{res['log_tail']}")
        if c:
            try:
                res["rss_nodes_mib"] = c.rss()
            except Exception:  # noqa: BLE001
                pass
    finally:
        if c:
            res["log_problems"] = c.log_problems()  # before the shutdown, which has its own warnings
            c.stop()
        res["load_end"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
        res["total_s"] = time.monotonic() - t_all
        if not args.keep:
            # Keep only the node logs of a failed run (or with --keep-logs); the data dirs always go.
            if res["error"] or args.keep_logs:
                for n in (c.nodes if c else []):
                    shutil.rmtree(n.dir, ignore_errors=True)
                log(f"{kind}: node logs kept in {work}")
            else:
                shutil.rmtree(work, ignore_errors=True)
    return res


# ------------------------------------------------------------------------------------------------
# report
# ------------------------------------------------------------------------------------------------

def machine_facts(bindir: Path) -> dict:
    mem = "?"
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                mem = f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
    cpu = "?"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    java = subprocess.run(["java", "-version"], stderr=subprocess.PIPE, text=True).stderr.splitlines()
    fjord = "?"
    try:
        fjord = subprocess.run(["git", "-C", str(REPO), "describe", "--always", "--dirty"], stdout=subprocess.PIPE,
                               text=True, timeout=10).stdout.strip()
    except Exception:  # noqa: BLE001
        pass
    fjord_bin = os.environ.get("FJORD_BROKER_BIN", str(REPO / "target/release/fjord-broker"))
    try:
        import hashlib
        st = os.stat(fjord_bin)
        with open(fjord_bin, "rb") as f:
            digest = hashlib.sha256(f.read()).hexdigest()[:12]
        built = dt.datetime.fromtimestamp(st.st_mtime).astimezone().strftime("%Y-%m-%d %H:%M %Z")
        fjord += f" (binary built {built}, sha256 {digest})"
    except OSError:
        fjord += " (binary not found)"
    return {"date": dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"), "nproc": os.cpu_count(),
            "load": START_LOAD,
            "memory": mem, "cpu": cpu, "kernel": platform.release(), "java": java[0] if java else "?",
            "kafka": KAFKA_VERSION, "fjord": f"fjord-broker @ {fjord}",
            "fjord_bin": os.environ.get("FJORD_BROKER_BIN", str(REPO / "target/release/fjord-broker"))}


METRICS = [("records/s", "records_s", "{:,.0f}", True), ("MB/s", "mb_s", "{:,.1f}", True),
           ("p50 ms", "p50_ms", "{:,.0f}", False), ("p99 ms", "p99_ms", "{:,.0f}", False),
           ("fetch MB/s (excl. group join)", "fetch_mb_s", "{:,.1f}", True),
           ("broker CPU s/GB", "cpu_s_per_gb", "{:,.2f}", False)]


def fmt(v, f):
    return "—" if v is None else f.format(v)


def build_table(results: dict, args) -> list[str]:
    phases = []
    for acks in args.acks:
        phases += [f"produce acks={acks}", f"consume acks={acks}"]
    rows = ["| phase | metric | fjord | kafka | fjord/kafka |", "|---|---|---:|---:|---:|"]
    for ph in phases:
        for label, key, f, _higher in METRICS:
            fv = results.get("fjord", {}).get("phases", {}).get(ph, {}).get(key)
            kv = results.get("kafka", {}).get("phases", {}).get(ph, {}).get(key)
            if fv is None and kv is None:
                continue
            ratio = f"{fv / kv:.2f}" if fv is not None and kv not in (None, 0) else "—"
            rows.append(f"| {ph} | {label} | {fmt(fv, f)} | {fmt(kv, f)} | {ratio} |")
    fr, kr = results.get("fjord", {}).get("rss_peak_mib"), results.get("kafka", {}).get("rss_peak_mib")
    ratio = f"{fr / kr:.2f}" if fr and kr else "—"
    rows.append(f"| whole run | broker peak RSS MiB (VmHWM) | {fmt(fr, '{:,.0f}')} | {fmt(kr, '{:,.0f}')} | {ratio} |")
    return rows


def write_report(results: dict, args, facts: dict, path: Path) -> str:
    lines = [
        "# Benchmarks: fjord-broker vs Apache Kafka",
        "",
        "Generated by `cargo xtask bench` (`python3 scripts/bench.py`); do not edit by hand. "
        "Earlier runs, before/after comparisons and run-to-run spread: `docs/benchmark-history.md` "
        "(kept by hand).",
        "",
        f"- date: {facts['date']}",
        f"- machine: {facts['nproc']} cores ({facts['cpu']}), {facts['memory']} RAM, Linux {facts['kernel']}; "
        f"load average at start {facts['load']} (anything else running skews the numbers)",
        f"- versions: {facts['fjord']}; Apache Kafka {facts['kafka']} (KRaft, combined broker+controller, "
        f"{args.kafka_heap}); {facts['java']}",
        f"- workload: {args.records:,} records x {args.record_size} B per phase, topic with {args.partitions} "
        f"partitions, replication factor 1, `kafka-producer-perf-test --throughput -1` (default producer "
        f"settings{', ' + ' '.join(args.producer_props) if args.producer_props else ''}) then "
        f"`kafka-consumer-perf-test` over the same records; brokers run one after the other on the same "
        f"machine as the load tools, all on 127.0.0.1",
        "- broker settings for both: " + ", ".join(f"`{k}={v}`" for k, v in SHARED_SETTINGS.items())
        + " (the rest are each broker's defaults)",
        "- CPU s/GB: broker process utime+stime during the phase / GB moved; RSS: VmHWM at the end",
        f"- an untimed warm-up of {args.warmup:,} records (produce + consume) runs first on each broker",
        "",
    ]
    lines += build_table(results, args)
    lines.append("")
    for kind in ("fjord", "kafka"):
        r = results.get(kind)
        if r is None:
            lines.append(f"- {kind}: not run (`--only`)")
        elif r.get("error"):
            first = r["error"].strip().splitlines()[-1] if r["error"].strip() else "?"
            lines.append(f"- {kind}: **failed**: {first}")
    text = "\n".join(lines) + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    # The 3-node and compaction sections (written by --cluster and --compaction runs) stay.
    import bench_compaction
    old = path.read_text() if path.exists() else ""
    _, compaction = bench_compaction.split_section(old)
    _, cluster = split_cluster_section(bench_compaction.split_section(old)[0])
    path.write_text(text + ("\n" + cluster if cluster else "") + ("\n" + compaction if compaction else ""))
    return text


CLUSTER_BEGIN, CLUSTER_END = "<!-- bench --cluster: begin -->", "<!-- bench --cluster: end -->"


def split_section(text: str, begin: str, end: str) -> tuple[str, str]:
    """(the file without the section between the `begin` and `end` markers, the section with its
    markers or "")."""
    a = text.find(begin)
    if a < 0:
        return text, ""
    b = text.find(end, a)
    b = len(text) if b < 0 else b + len(end)
    return (text[:a].rstrip("\n") + "\n" + text[b:].lstrip("\n")).rstrip("\n") + "\n", text[a:b] + "\n"


def split_cluster_section(text: str) -> tuple[str, str]:
    """(the file without the 3-node section, the 3-node section with its markers or "")."""
    return split_section(text, CLUSTER_BEGIN, CLUSTER_END)


def build_cluster_table(results: dict, args) -> list[str]:
    rows = ["| phase | metric | fjord | kafka | fjord/kafka |", "|---|---|---:|---:|---:|"]

    def row(ph, label, fv, kv, f):
        ratio = f"{fv / kv:.2f}" if fv is not None and kv not in (None, 0) else "—"
        rows.append(f"| {ph} | {label} | {fmt(fv, f)} | {fmt(kv, f)} | {ratio} |")

    for acks in args.acks:
        for ph in (f"produce acks={acks}", f"consume acks={acks}"):
            for label, key, f, _higher in METRICS:
                fv = results.get("fjord", {}).get("phases", {}).get(ph, {}).get(key)
                kv = results.get("kafka", {}).get("phases", {}).get(ph, {}).get(key)
                if fv is None and kv is None:
                    continue
                if key == "cpu_s_per_gb":
                    label = "broker CPU s/GB (3 processes summed)"
                row(ph, label, fv, kv, f)
    rss = {k: results.get(k, {}).get("rss_nodes_mib") or None for k in ("fjord", "kafka")}
    row("whole run", "broker peak RSS MiB (VmHWM), largest of 3",
        max(rss["fjord"]) if rss["fjord"] else None, max(rss["kafka"]) if rss["kafka"] else None, "{:,.0f}")
    row("whole run", "broker peak RSS MiB (VmHWM), sum of 3",
        sum(rss["fjord"]) if rss["fjord"] else None, sum(rss["kafka"]) if rss["kafka"] else None, "{:,.0f}")
    return rows


def other_cpu_share(r: dict) -> float | None:
    """Share of the machine's CPU (all cores) used during the timed phases by processes other than the
    three brokers and the load tool: someone else's work on a shared machine (and kernel threads)."""
    phases = [v for v in r.get("phases", {}).values() if "machine_s" in v]
    avail = sum(v["wall_s"] for v in phases) * (os.cpu_count() or 1)
    if not avail:
        return None
    other = sum(max(0.0, v["machine_s"] - sum(v["cpu_split"]) - v["tool_s"]) for v in phases)
    return other / avail


def cluster_notes(results: dict, args) -> list[str]:
    notes = []
    shares = {k: other_cpu_share(r) for k, r in results.items() if r}
    shares = {k: v for k, v in shares.items() if v is not None}
    if shares:
        shared = max(shares.values()) > 0.05
        notes.append(("- **the machine was shared**: " if shared else "- the machine was quiet: ")
                     + "processes other than the brokers and the load tool (other people's builds and tests, "
                     "kernel threads) used " + ", ".join(f"{v:.0%} ({k})" for k, v in shares.items())
                     + " of the CPU during the timed phases")
    for kind in ("fjord", "kafka"):
        r = results.get(kind)
        if r is None:
            notes.append(f"- {kind}: not run (`--only`)")
            continue
        parts = [f"load average {r.get('load_start', '?')} at start, {r.get('load_end', '?')} at end",
                 f"{r.get('total_s', 0):.0f} s from start to stop of the 3 nodes"
                 + (f" (ready after {r['startup_s']:.0f} s)" if r.get("startup_s") is not None else "")]
        if r.get("leaders"):
            parts.append("partition leaders per node " + ", ".join(
                f"{k}: {v}" for k, v in sorted(r["leaders"].items())))
        if r.get("isr_after_produce") is not None:
            parts.append(f"{r['isr_after_produce']} of {args.partitions * CLUSTER_RF} replicas in the ISR "
                         "right after the produce phase")
        for ph, v in r.get("phases", {}).items():
            if v.get("cpu_split"):
                brokers = sum(v["cpu_split"])
                other = max(0.0, v["machine_s"] - brokers - v["tool_s"])
                parts.append(f"{ph}: {v['wall_s']:.0f} s, CPU s brokers {brokers:.1f} ("
                             + "/".join(f"{x:.1f}" for x in v["cpu_split"])
                             + f" per node), load tool {v['tool_s']:.1f}, anything else on the machine {other:.1f} "
                             f"(of {v['wall_s'] * (os.cpu_count() or 1):.0f} available)")
        if r.get("busiest_threads"):
            parts.append("busiest broker threads in the produce phase (CPU s, 3 nodes summed, by thread name) "
                         + ", ".join(f"`{k}` {v:.1f}" for k, v in r["busiest_threads"]))
        if r.get("rss_nodes_mib"):
            parts.append("peak RSS MiB per node " + "/".join(f"{x:,.0f}" for x in r["rss_nodes_mib"]))
        if r.get("log_problems") is not None:
            parts.append("WARN/ERROR log lines per node (start-up to the end of the last phase) "
                         + "/".join(str(x) for x in r["log_problems"]))
        notes.append(f"- {kind}: " + "; ".join(parts))
        if r.get("error"):
            first = r["error"].strip().splitlines()[-1] if r["error"].strip() else "?"
            notes.append(f"- {kind}: **failed**: {first}")
    return notes


def fs_type(path: str) -> str:
    """The file system type of the mount holding `path` (from /proc/mounts), e.g. ext4 or tmpfs."""
    best, kind = "", "?"
    real = os.path.realpath(path)
    try:
        with open("/proc/mounts") as f:
            for line in f:
                fields = line.split()
                mnt = fields[1]
                if (real == mnt or real.startswith(mnt.rstrip("/") + "/")) and len(mnt) >= len(best):
                    best, kind = mnt, fields[2]
    except OSError:
        pass
    return kind


def write_cluster_report(results: dict, args, facts: dict, path: Path) -> str:
    work_root = args.work_dir or tempfile.gettempdir()
    lines = [
        CLUSTER_BEGIN,
        "## 3 brokers, RF 3, acks=all",
        "",
        "Generated by `cargo xtask bench --cluster` (`python3 scripts/bench.py --cluster`); do not edit by hand. "
        "A `--cluster` run rewrites only this section, a plain run only the one above.",
        "",
        f"- date: {facts['date']}",
        f"- machine: {facts['nproc']} cores ({facts['cpu']}), {facts['memory']} RAM, Linux {facts['kernel']}; "
        f"load average at start {facts['load']} (anything else running skews the numbers; per-system load "
        "in the notes below)",
        f"- versions: {facts['fjord']}; Apache Kafka {facts['kafka']} ({args.kafka_heap} per node); {facts['java']}",
        f"- cluster, same layout for both: {CLUSTER_SIZE} processes in combined broker+controller mode, node ids "
        f"1-3 on 127.0.0.1, 127.0.0.2, 127.0.0.3, all three controller-quorum voters "
        "(`controller.quorum.voters`), one cluster id (Apache Kafka: `kafka-storage format -t <id>` on each node "
        "first); the two clusters run one after the other on the same machine as the load tools",
        f"- topic: {args.partitions} partitions, replication factor {CLUSTER_RF}, "
        f"`min.insync.replicas={CLUSTER_MIN_ISR}`; the run waits for all replicas in the ISR before producing",
        f"- workload: {args.records:,} records x {args.record_size} B per phase, `kafka-producer-perf-test "
        f"--throughput -1` with {', '.join(f'acks={a}' for a in args.acks)} (default producer settings otherwise"
        f"{', ' + ' '.join(args.producer_props) if args.producer_props else ''}) and all three nodes as bootstrap "
        "servers, then `kafka-consumer-perf-test` over the same records; an untimed warm-up of "
        f"{args.warmup:,} records (acks=all, produce + consume, separate topic) runs first on each cluster",
        "- broker settings for both: " + ", ".join(f"`{k}={v}`" for k, v in SHARED_SETTINGS.items())
        + " plus the cluster layout (the rest, replica fetching included, are each broker's defaults)",
        "- CPU s/GB: utime+stime of the three broker processes, summed, during the phase / GB of records "
        "produced (each record is written three times and fetched twice by followers); RSS: each process's "
        "VmHWM at the end",
        f"- data dirs: under {work_root} ({fs_type(work_root)}); neither broker fsyncs a write by default, both "
        "leave it to the page cache",
        f"- command: `cargo xtask bench {' '.join(sys.argv[1:])}`",
        "",
    ]
    lines += build_cluster_table(results, args)
    lines += ["", "Notes:", ""]
    lines += cluster_notes(results, args)
    lines.append(CLUSTER_END)
    section = "\n".join(lines) + "\n"
    rest, _ = split_cluster_section(path.read_text() if path.exists() else "")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(rest + "\n" + section)
    return section


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cluster", action="store_true",
                    help="3-node clusters instead (RF 3, min.insync.replicas=2, acks=all): rewrites only the "
                         "3-node section of --out")
    ap.add_argument("--compaction", action="store_true",
                    help="the compaction benchmark instead (scripts/bench_compaction.py): rewrites only the "
                         "compaction section of --out")
    ap.add_argument("--keys", type=int, default=20_000, help="--compaction: distinct keys")
    ap.add_argument("--value-size", type=int, default=200, help="--compaction: value bytes")
    ap.add_argument("--records", type=int, default=None,
                    help="records per phase (default 3,000,000; 1,000,000 with --cluster; 4,000,000 per topic with "
                         "--compaction)")
    ap.add_argument("--record-size", type=int, default=1024)
    ap.add_argument("--partitions", type=int, default=6)
    ap.add_argument("--warmup", type=int, default=None,
                    help="untimed warm-up records produced+consumed first (default: records/10, at most 500,000)")
    ap.add_argument("--acks", default=None,
                    help="comma-separated acks settings (default 1,all; all with --cluster)")
    ap.add_argument("--only", choices=["fjord", "kafka"], help="run just one broker")
    ap.add_argument("--producer-props", nargs="*", default=[], help="extra producer props key=value")
    ap.add_argument("--kafka-heap", default="-Xmx2g -Xms2g", help="KAFKA_HEAP_OPTS for the Apache broker")
    ap.add_argument("--phase-timeout", type=float, default=1800, help="seconds per perf-test run")
    ap.add_argument("--out", default=str(REPO / "docs" / "benchmarks.md"))
    ap.add_argument("--no-write", action="store_true", help="print only, do not write --out")
    ap.add_argument("--work-dir", default=None, help="where the data dirs go (default: system temp)")
    ap.add_argument("--keep", action="store_true", help="keep the brokers' data dirs")
    ap.add_argument("--keep-logs", action="store_true", help="--cluster: keep the node logs (data dirs go)")
    args = ap.parse_args()
    args.records_given = args.records is not None
    if args.records is None:
        args.records = 4_000_000 if args.compaction else 1_000_000 if args.cluster else 3_000_000
    if args.acks is None:
        args.acks = "all" if args.cluster else "1,all"
    if args.warmup is None:
        args.warmup = min(args.records // 10, 500_000)
    args.acks = [a.strip() for a in args.acks.split(",") if a.strip()]
    for a in args.acks:
        if a not in ("0", "1", "all", "-1"):
            ap.error(f"bad acks value {a!r}")

    bindir = kafka_bin_dir()
    if args.compaction:
        import bench_compaction
        return bench_compaction.run(args, bindir)
    kinds = [args.only] if args.only else ["fjord", "kafka"]
    results = {}
    for kind in kinds:
        results[kind] = bench_cluster(kind, args, bindir) if args.cluster else bench_broker(kind, args, bindir)

    facts = machine_facts(bindir)
    if args.no_write:
        table = build_cluster_table(results, args) + [""] + cluster_notes(results, args) if args.cluster \
            else build_table(results, args)
        text = "\n".join(table) + "\n"
    elif args.cluster:
        text = write_cluster_report(results, args, facts, Path(args.out))
        log(f"wrote the 3-node section of {args.out}")
    else:
        text = write_report(results, args, facts, Path(args.out))
        log(f"wrote {args.out}")
    print(text)
    failed = [k for k, r in results.items() if r.get("error")]
    if failed:
        for k in failed:
            print(f"{k}: FAILED -- {results[k]['error'].strip().splitlines()[-1]} (broker log: {results[k]['log']})",
                  file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
