#!/usr/bin/env python3
"""Consume throughput run after run with librdkafka (confluent-kafka), fjord beside Kafka.

Issue 13 asked why librdkafka consume throughput from fjord was unstable (one run in five at
275k records/s where the others gave 800k-1,070k). This script produces N x 1 KiB records
(acks=all) once per broker, then reads them back several times with a fresh consumer group
each time and splits every read into the two parts a consumer goes through:

- join: from `subscribe` until the first record arrives (FindCoordinator, JoinGroup, SyncGroup,
  OffsetFetch, ListOffsets, first Fetch);
- fetch: from the first record to the last.

`records/s` over the whole read is what the earlier runs reported; `fetch records/s` is the
broker's serving rate once the group is formed. Usage (from the repo root, release broker built):

    ~/.cache/fjord/venv/bin/python scripts/rdkafka_consume_spread.py [--records 400000] [--runs 5]
"""

from __future__ import annotations

import argparse
import resource
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench  # noqa: E402  (scripts/bench.py: broker start/stop shared with the main bench)
from confluent_kafka import Consumer, Producer  # noqa: E402
from confluent_kafka.admin import AdminClient, NewTopic  # noqa: E402


def produce(bootstrap: str, topic: str, records: int, size: int) -> None:
    p = Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 5,
                  "enable.idempotence": True})
    payload = b"x" * size
    failed = []
    for i in range(records):
        while True:
            try:
                p.produce(topic, payload, key=str(i).encode(),
                          on_delivery=lambda err, _m: err and failed.append(err))
                break
            except BufferError:
                p.poll(0.05)
        if i % 10000 == 0:
            p.poll(0)
    if p.flush(120) != 0 or failed:
        raise RuntimeError(f"produce did not complete: {len(failed)} failed")


def machine_ticks() -> tuple[int, int, int]:
    """(busy, idle, steal) clock ticks of the whole machine from /proc/stat."""
    f = [int(x) for x in open("/proc/stat").readline().split()[1:]]
    user, nice, system, idle, iowait, irq, softirq, steal = f[:8]
    return user + nice + system + irq + softirq, idle + iowait, steal


def consume_once(bootstrap: str, topic: str, records: int, group: str, extra: dict) -> dict:
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": group,
                  "auto.offset.reset": "earliest", "enable.auto.commit": False, **extra})
    t0 = time.monotonic()
    ru0 = resource.getrusage(resource.RUSAGE_SELF)
    m0 = machine_ticks()
    c.subscribe([topic])
    got, first, last, calls, empty = 0, None, None, 0, 0
    deadline = t0 + 120
    while got < records and time.monotonic() < deadline:
        batch = c.consume(num_messages=10000, timeout=1.0)
        calls += 1
        empty += not batch
        for m in batch:
            if m.error():
                raise RuntimeError(str(m.error()))
        if batch:
            now = time.monotonic()
            first = first or now
            last = now
            got += len(batch)
    ru1 = resource.getrusage(resource.RUSAGE_SELF)
    busy, idle, steal = (b - a for a, b in zip(m0, machine_ticks()))
    c.close()
    if got < records:
        raise RuntimeError(f"read {got} of {records} records in 120 s")
    total = last - t0
    return {"join_s": first - t0, "fetch_s": last - first, "total_s": total,
            "records_per_s": records / total,
            "fetch_records_per_s": records / (last - first) if last > first else float("inf"),
            # The client's own CPU (Python and librdkafka's threads) during the read.
            "client_cpu_s": (ru1.ru_utime + ru1.ru_stime) - (ru0.ru_utime + ru0.ru_stime),
            "client_sys_s": ru1.ru_stime - ru0.ru_stime,
            "records_per_call": got / max(1, calls - empty),
            # Share of the machine's time (both cores) busy, idle, and stolen by the hypervisor.
            "machine_busy": busy / max(1, busy + idle + steal),
            "machine_steal": steal / max(1, busy + idle + steal)}


def run_broker(kind: str, args, bindir: Path) -> list[dict]:
    work = Path(tempfile.mkdtemp(prefix=f"fjord-rdk-{kind}-"))
    b = bench.BenchBroker(kind, work, bindir, "-Xmx2g -Xms2g")
    try:
        b.start()
        admin = AdminClient({"bootstrap.servers": b.bootstrap})
        for topic in ("warmup", "spread"):
            admin.create_topics([NewTopic(topic, args.partitions, 1)])["" + topic].result(30)
        produce(b.bootstrap, "warmup", args.records // 4, args.size)
        consume_once(b.bootstrap, "warmup", args.records // 4, "warmup-group", args.consumer)
        produce(b.bootstrap, "spread", args.records, args.size)
        out = []
        for run in range(args.runs):
            cpu0 = bench.cpu_seconds(b.proc.pid)
            r = consume_once(b.bootstrap, "spread", args.records, f"g-{run}", args.consumer)
            r["broker_cpu_s"] = bench.cpu_seconds(b.proc.pid) - cpu0
            out.append(r)
            print(f"{kind} run {run + 1}: {r['records_per_s']:,.0f} records/s over the read, "
                  f"join {r['join_s'] * 1000:.0f} ms, fetch {r['fetch_records_per_s']:,.0f} records/s, "
                  f"broker CPU {r['broker_cpu_s']:.2f} s, client CPU {r['client_cpu_s']:.2f} s, "
                  f"(sys {r['client_sys_s']:.2f}), machine busy {r['machine_busy']:.0%}, steal {r['machine_steal']:.0%}", flush=True)
        return out
    finally:
        b.stop()
        shutil.rmtree(work, ignore_errors=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--records", type=int, default=400_000)
    ap.add_argument("--size", type=int, default=1024)
    ap.add_argument("--partitions", type=int, default=6)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--only", choices=["fjord", "kafka"])
    ap.add_argument("--consumer", nargs="*", default=[], metavar="KEY=VALUE",
                    help="extra librdkafka consumer settings, e.g. fetch.queue.backoff.ms=10")
    args = ap.parse_args()
    args.consumer = dict(kv.split("=", 1) for kv in args.consumer)
    bindir = bench.kafka_bin_dir()
    results = {k: run_broker(k, args, bindir) for k in ("fjord", "kafka") if args.only in (None, k)}
    print("\n| broker | metric | min | median | max |\n|---|---|---:|---:|---:|")
    for kind, runs in results.items():
        for key, label in (("records_per_s", "records/s over the read"), ("join_s", "join s"),
                           ("fetch_records_per_s", "fetch records/s"), ("broker_cpu_s", "broker CPU s"),
                           ("client_cpu_s", "client CPU s"), ("records_per_call", "records per consume call"),
                           ("machine_steal", "machine steal share")):
            vals = [r[key] for r in runs]
            print(f"| {kind} | {label} | {min(vals):,.2f} | {statistics.median(vals):,.2f} | {max(vals):,.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
