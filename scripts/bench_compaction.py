#!/usr/bin/env python3
"""Compaction benchmark: fjord-broker vs Apache Kafka 4.3.1 on the same keyed data, one broker
after the other on this machine (`cargo xtask bench --compaction`, i.e. `scripts/bench.py
--compaction`). Rewrites only the compaction section of docs/benchmarks.md.

Per broker (single node, the same settings for both):
1. produce N keyed records (K distinct keys, V-byte values, librdkafka via confluent-kafka,
   acks=1) to a `cleanup.policy=delete` topic: the baseline produce rate;
2. produce the same records to a `cleanup.policy=compact` topic whose cleaner runs while it is
   written (`min.compaction.lag.ms=0`, `min.cleanable.dirty.ratio=0.01`, 8 MiB segments): the
   produce rate with compaction running, as a ratio to 1.;
3. produce the same records to a compacted topic with `min.compaction.lag.ms` of an hour (nothing
   is cleaned), then set it to 0 (IncrementalAlterConfigs) and time until the partition's files
   stop shrinking: MB of log cleaned per second of that time, and the broker's CPU seconds per
   GB cleaned. Then read the topic back: every key must be there with its last value (a
   check, not a metric).
Both brokers poll for cleanable logs every second (`log.cleaner.backoff.ms=1000`; Kafka's default
is 15 s, fjord's too).
"""
from __future__ import annotations

import time
from pathlib import Path

import bench  # scripts/bench.py: the broker wrapper, CPU/RSS readers, the report file

SECTION_BEGIN, SECTION_END = "<!-- bench --compaction: begin -->", "<!-- bench --compaction: end -->"
SEGMENT_BYTES = 8 * 1024 * 1024
SETTINGS = {"log.cleaner.backoff.ms": "1000"}


def dir_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.glob("*.log") if f.is_file())


def partition_dir(b: bench.BenchBroker, topic: str) -> Path:
    return b.data / f"{topic}-0"


def produce(bootstrap: str, topic: str, records: int, keys: int, value_size: int) -> dict:
    from confluent_kafka import Producer

    p = Producer({"bootstrap.servers": bootstrap, "acks": "1", "linger.ms": 5, "batch.size": 262144,
                  "compression.type": "none", "queue.buffering.max.messages": 500000})
    failed = []
    value = b"v" * (value_size - 12)
    t0 = time.monotonic()
    for i in range(records):
        while True:
            try:
                p.produce(topic, value + b"%012d" % i, key=b"key-%08d" % (i % keys),
                          on_delivery=lambda e, _m: e and failed.append(e))
                break
            except BufferError:
                p.poll(0.01)
        if i % 10000 == 0:
            p.poll(0)
    p.flush(600)
    wall = time.monotonic() - t0
    if failed:
        raise bench.BenchError(f"{len(failed)} produce failures, first: {failed[0]}")
    return {"records_s": records / wall, "mb_s": records * (value_size + 12) / wall / 1e6, "wall_s": wall}


def create(b: bench.BenchBroker, topic: str, config: dict[str, str]) -> None:
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": b.bootstrap})
    admin.create_topics([NewTopic(topic, 1, 1, config=config)])[topic].result(60)


def alter(b: bench.BenchBroker, topic: str, key: str, value: str) -> None:
    from confluent_kafka.admin import (AdminClient, AlterConfigOpType, ConfigEntry, ConfigResource)

    admin = AdminClient({"bootstrap.servers": b.bootstrap})
    res = ConfigResource(ConfigResource.Type.TOPIC, topic,
                         incremental_configs=[ConfigEntry(key, value,
                                                          incremental_operation=AlterConfigOpType.SET)])
    admin.incremental_alter_configs([res])[res].result(60)


def last_values(bootstrap: str, topic: str) -> dict[bytes, bytes]:
    from confluent_kafka import Consumer, KafkaError, TopicPartition

    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "bench-compaction-check",
                  "enable.auto.commit": False, "enable.partition.eof": True})
    c.assign([TopicPartition(topic, 0, 0)])
    out: dict[bytes, bytes] = {}
    try:
        while True:
            m = c.poll(5)
            if m is None:
                raise bench.BenchError("reading the compacted topic back stalled")
            if m.error():
                if m.error().code() == KafkaError._PARTITION_EOF:
                    return out
                raise bench.BenchError(str(m.error()))
            out[m.key()] = m.value()
    finally:
        c.close()


def wait_until_stable(path: Path, quiet_s: float, timeout_s: float) -> tuple[float, int]:
    """Seconds until the partition's .log files stopped changing (the last change's time), and
    their size then."""
    t0 = time.monotonic()
    last_size, last_change = dir_bytes(path), t0
    while time.monotonic() - t0 < timeout_s:
        time.sleep(0.1)
        size = dir_bytes(path)
        if size != last_size:
            last_size, last_change = size, time.monotonic()
        elif time.monotonic() - last_change >= quiet_s:
            return last_change - t0, size
    raise bench.BenchError(f"{path} still changing after {timeout_s:.0f}s")


def bench_one(kind: str, args, bindir: Path) -> dict:
    import tempfile

    work = Path(tempfile.mkdtemp(prefix=f"fjord-bench-compaction-{kind}-", dir=args.work_dir))
    b = bench.BenchBroker(kind, work, bindir, args.kafka_heap)
    saved = dict(bench.SHARED_SETTINGS)
    bench.SHARED_SETTINGS.update(SETTINGS)
    res: dict = {"kind": kind, "error": None, "log": str(b.log_path)}
    n, keys, size = args.records, args.keys, args.value_size
    compact = {"cleanup.policy": "compact", "segment.bytes": str(SEGMENT_BYTES),
               "min.cleanable.dirty.ratio": "0.01"}
    try:
        b.start()
        create(b, "bench-warmup", {})
        produce(b.bootstrap, "bench-warmup", min(n // 5, 200_000), keys, size)
        create(b, "bench-delete", {"cleanup.policy": "delete", "segment.bytes": str(SEGMENT_BYTES)})
        bench.log(f"{kind}: {n:,} keyed records to a delete-policy topic")
        cpu0 = bench.cpu_seconds(b.proc.pid)
        res["baseline"] = produce(b.bootstrap, "bench-delete", n, keys, size)
        res["baseline"]["cpu_s"] = bench.cpu_seconds(b.proc.pid) - cpu0
        create(b, "bench-compact", {**compact, "min.compaction.lag.ms": "0"})
        bench.log(f"{kind}: the same to a compacted topic, cleaner running")
        cpu0 = bench.cpu_seconds(b.proc.pid)
        res["while_cleaning"] = produce(b.bootstrap, "bench-compact", n, keys, size)
        res["while_cleaning"]["cpu_s"] = bench.cpu_seconds(b.proc.pid) - cpu0
        create(b, "bench-lagged", {**compact, "min.compaction.lag.ms": "3600000"})
        bench.log(f"{kind}: the same to a compacted topic held back by min.compaction.lag.ms")
        produce(b.bootstrap, "bench-lagged", n, keys, size)
        path = partition_dir(b, "bench-lagged")
        time.sleep(2)
        before = dir_bytes(path)
        bench.log(f"{kind}: releasing {before / 1e6:,.0f} MB to the cleaner")
        cpu0 = bench.cpu_seconds(b.proc.pid)
        alter(b, "bench-lagged", "min.compaction.lag.ms", "0")
        took, after = wait_until_stable(path, quiet_s=5.0, timeout_s=args.phase_timeout)
        cpu = bench.cpu_seconds(b.proc.pid) - cpu0
        if after >= before:
            raise bench.BenchError(f"nothing was cleaned ({before} bytes before, {after} after)")
        # The active segment is never cleaned; what was cleanable is everything before it.
        res["clean"] = {"bytes_before": before, "bytes_after": after, "seconds": took,
                        "mb_s": before / took / 1e6 if took > 0 else float("inf"),
                        "cpu_s_per_gb": cpu / (before / 1e9)}
        got = last_values(b.bootstrap, "bench-lagged")
        # Key k was last written by record k + keys * ((n - 1 - k) // keys).
        expect = {b"key-%08d" % k: k + keys * ((n - 1 - k) // keys) for k in range(min(keys, n))}
        wrong = [k for k, i in expect.items() if got.get(k, b"")[-12:] != b"%012d" % i]
        if wrong:
            raise bench.BenchError(f"{len(wrong)} keys lost or stale after compaction, e.g. {wrong[:3]}")
        res["rss_mib"] = bench.vm_hwm_mib(b.proc.pid)
    except Exception as e:  # noqa: BLE001
        import traceback
        res["error"] = f"{e}\n{traceback.format_exc()}\n{bench.tail(b.log_path)}"
        bench.log(f"{kind}: FAILED: {e}")
    finally:
        b.stop()
        bench.SHARED_SETTINGS.clear()
        bench.SHARED_SETTINGS.update(saved)
        if not args.keep:
            import shutil
            shutil.rmtree(b.data, ignore_errors=True)
    return res


ROWS = [
    ("produce, delete policy (baseline)", "records/s", lambda r: r["baseline"]["records_s"], "{:,.0f}"),
    ("produce, compacted, cleaner running", "records/s", lambda r: r["while_cleaning"]["records_s"], "{:,.0f}"),
    ("produce, compacted, cleaner running", "rate vs baseline",
     lambda r: r["while_cleaning"]["records_s"] / r["baseline"]["records_s"], "{:.2f}"),
    ("produce, compacted, cleaner running", "broker CPU s (vs baseline)",
     lambda r: r["while_cleaning"]["cpu_s"] / max(r["baseline"]["cpu_s"], 1e-9), "{:.2f}"),
    ("clean a backlog", "MB of log cleaned / s", lambda r: r["clean"]["mb_s"], "{:,.1f}"),
    ("clean a backlog", "seconds", lambda r: r["clean"]["seconds"], "{:,.1f}"),
    ("clean a backlog", "log MB before -> after",
     lambda r: f"{r['clean']['bytes_before'] / 1e6:,.0f} -> {r['clean']['bytes_after'] / 1e6:,.1f}", "{}"),
    ("clean a backlog", "broker CPU s/GB cleaned", lambda r: r["clean"]["cpu_s_per_gb"], "{:,.2f}"),
    ("whole run", "broker peak RSS MiB (VmHWM)", lambda r: r["rss_mib"], "{:,.0f}"),
]


def table(results: dict) -> list[str]:
    lines = ["| phase | metric | fjord | kafka | fjord/kafka |", "|---|---|---:|---:|---:|"]
    for phase, metric, get, f in ROWS:
        vals = {}
        for kind in ("fjord", "kafka"):
            r = results.get(kind)
            try:
                vals[kind] = get(r) if r and not r.get("error") else None
            except (KeyError, ZeroDivisionError):
                vals[kind] = None
        show = {k: (f.format(v) if v is not None else "—") for k, v in vals.items()}
        ratio = "—"
        if all(isinstance(v, (int, float)) for v in vals.values()) and vals["kafka"]:
            ratio = f"{vals['fjord'] / vals['kafka']:.2f}"
        lines.append(f"| {phase} | {metric} | {show['fjord']} | {show['kafka']} | {ratio} |")
    return lines


def write(results: dict, args, facts: dict, path: Path) -> str:
    lines = [
        SECTION_BEGIN,
        "## Compaction",
        "",
        "Generated by `cargo xtask bench --compaction` (`python3 scripts/bench.py --compaction`, "
        "`scripts/bench_compaction.py`); do not edit by hand. Only this section is rewritten by such a run.",
        "",
        f"- date: {facts['date']}",
        f"- machine: {facts['nproc']} cores ({facts['cpu']}), {facts['memory']} RAM, Linux {facts['kernel']}; "
        f"load average at start {facts['load']}",
        f"- versions: {facts['fjord']}; Apache Kafka {facts['kafka']} ({args.kafka_heap}); {facts['java']}",
        f"- data: {args.records:,} records per topic, {args.keys:,} distinct keys, {args.value_size}-byte values, "
        "one partition, produced with librdkafka (confluent-kafka, acks=1, linger.ms=5, no compression) from "
        "this machine; the client shares the 2 cores, so produce rates are the client's as much as the broker's",
        f"- topics: {SEGMENT_BYTES // (1024 * 1024)} MiB segments, `min.cleanable.dirty.ratio=0.01`; broker "
        f"settings for both: " + ", ".join(f"`{k}={v}`" for k, v in {**bench.SHARED_SETTINGS, **SETTINGS}.items()),
        "- clean a backlog: the topic is written with `min.compaction.lag.ms=3600000`, then set to 0; the "
        "time is until its `.log` files stop changing for 5 s (the last change counts); MB/s is the log's size "
        "before over that time; every key is then read back with its last value",
        "",
    ]
    lines += table(results)
    lines.append("")
    for kind in ("fjord", "kafka"):
        r = results.get(kind)
        if r is None:
            lines.append(f"- {kind}: not run (`--only`)")
        elif r.get("error"):
            lines.append(f"- {kind}: **failed**: {r['error'].strip().splitlines()[0]}")
    lines.append(SECTION_END)
    section = "\n".join(lines) + "\n"
    rest, _ = split_section(path.read_text() if path.exists() else "")
    path.write_text(rest.rstrip("\n") + "\n\n" + section)
    return section


def split_section(text: str) -> tuple[str, str]:
    """(the file without the compaction section, the section with its markers or "")."""
    return bench.split_section(text, SECTION_BEGIN, SECTION_END)


def run(args, bindir: Path) -> int:
    kinds = [args.only] if args.only else ["fjord", "kafka"]
    results = {kind: bench_one(kind, args, bindir) for kind in kinds}
    facts = bench.machine_facts(bindir)
    text = "\n".join(table(results)) + "\n" if args.no_write else write(results, args, facts, Path(args.out))
    print(text)
    failed = [k for k, r in results.items() if r.get("error")]
    for k in failed:
        print(f"{k}: FAILED -- {results[k]['error'].strip().splitlines()[0]} (log {results[k]['log']})")
    return 1 if failed else 0
