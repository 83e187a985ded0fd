#!/usr/bin/env python3
"""Side-by-side benchmark: fjord-broker vs Apache Kafka 4.3.1 (single node, same machine, one after the other).

    python3 scripts/bench.py                      # both brokers, default record count
    python3 scripts/bench.py --records 200000     # quick run
    python3 scripts/bench.py --only kafka         # just the Apache Kafka half

Called by `cargo xtask bench` with FJORD_BROKER_BIN pointing at a release build. Stdlib only.

For each broker: start it on 127.0.0.1 with a fresh data dir and the same settings; for acks=1 and
acks=all create a 6-partition topic and run `kafka-producer-perf-test` (1 KiB records, unthrottled)
then `kafka-consumer-perf-test` over the same records. Reported per phase: records/s, MB/s, producer
p50/p99 latency, broker CPU-seconds per GB moved (utime+stime from /proc/<pid>/stat around the
phase), and the broker's peak RSS (VmHWM). The table (with fjord/kafka ratios) is printed and
written as markdown to docs/benchmarks.md. A broker that fails to start or to finish is reported
as failed with its reason and log tail; the other broker still runs; the exit code is then 1.
"""
from __future__ import annotations

import argparse
import base64
import datetime as dt
import os
import platform
import re
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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
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
            m = None
            for line in out.splitlines():
                m = PRODUCER_RE.search(line) or m
            if not m:
                raise BenchError(f"cannot parse kafka-producer-perf-test output:\n{out[-2000:]}")
            if int(m.group(1)) != args.records:
                raise BenchError(f"producer sent {m.group(1)} of {args.records} records")
            res["phases"][f"produce acks={acks}"] = {
                "records_s": float(m.group(2)), "mb_s": float(m.group(3)), "avg_ms": float(m.group(4)),
                "p50_ms": float(m.group(6)), "p99_ms": float(m.group(8)), "cpu_s_per_gb": cpu / gb, "wall_s": wall}
            b.check_alive()

            log(f"{kind}: consuming {args.records} records from {topic}")
            cpu0, t0 = cpu_seconds(b.proc.pid), time.monotonic()
            out = run_tool(bindir, "kafka-consumer-perf-test", [
                "--bootstrap-server", b.bootstrap, "--topic", topic, "--num-records", str(args.records),
                "--timeout", "60000"], timeout=args.phase_timeout)
            wall, cpu = time.monotonic() - t0, cpu_seconds(b.proc.pid) - cpu0
            lines = [ln for ln in out.splitlines() if ln.strip()]
            hdr = next((i for i, ln in enumerate(lines) if ln.startswith("start.time")), None)
            if hdr is None or hdr + 1 >= len(lines):
                raise BenchError(f"cannot parse kafka-consumer-perf-test output:\n{out[-2000:]}")
            cols = [c.strip() for c in lines[hdr].split(",")]
            vals = [v.strip() for v in lines[-1].split(",")]
            row = dict(zip(cols, vals))
            n = int(row["data.consumed.in.nMsg"])
            if n < args.records:
                raise BenchError(f"consumer read {n} of {args.records} records")
            res["phases"][f"consume acks={acks}"] = {
                "records_s": float(row["nMsg.sec"]), "mb_s": float(row["MB.sec"]),
                "fetch_mb_s": float(row.get("fetch.MB.sec", "nan")), "cpu_s_per_gb": cpu / gb, "wall_s": wall}
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
        "Generated by `cargo xtask bench` (`python3 scripts/bench.py`); do not edit by hand.",
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
    path.write_text(text)
    return text


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--records", type=int, default=3_000_000, help="records per phase (default 3,000,000)")
    ap.add_argument("--record-size", type=int, default=1024)
    ap.add_argument("--partitions", type=int, default=6)
    ap.add_argument("--warmup", type=int, default=None,
                    help="untimed warm-up records produced+consumed first (default: records/10, at most 500,000)")
    ap.add_argument("--acks", default="1,all", help="comma-separated acks settings (default 1,all)")
    ap.add_argument("--only", choices=["fjord", "kafka"], help="run just one broker")
    ap.add_argument("--producer-props", nargs="*", default=[], help="extra producer props key=value")
    ap.add_argument("--kafka-heap", default="-Xmx2g -Xms2g", help="KAFKA_HEAP_OPTS for the Apache broker")
    ap.add_argument("--phase-timeout", type=float, default=1800, help="seconds per perf-test run")
    ap.add_argument("--out", default=str(REPO / "docs" / "benchmarks.md"))
    ap.add_argument("--no-write", action="store_true", help="print only, do not write --out")
    ap.add_argument("--work-dir", default=None, help="where the data dirs go (default: system temp)")
    ap.add_argument("--keep", action="store_true", help="keep the brokers' data dirs")
    args = ap.parse_args()
    if args.warmup is None:
        args.warmup = min(args.records // 10, 500_000)
    args.acks = [a.strip() for a in args.acks.split(",") if a.strip()]
    for a in args.acks:
        if a not in ("0", "1", "all", "-1"):
            ap.error(f"bad acks value {a!r}")

    bindir = kafka_bin_dir()
    kinds = [args.only] if args.only else ["fjord", "kafka"]
    results = {}
    for kind in kinds:
        results[kind] = bench_broker(kind, args, bindir)

    facts = machine_facts(bindir)
    if args.no_write:
        text = "\n".join(build_table(results, args)) + "\n"
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
