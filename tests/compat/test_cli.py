"""Apache Kafka's own CLI tools and Java client (4.3.1 jars from scripts/kafka-dist.sh) against the broker."""
from __future__ import annotations

import json
import re
import subprocess
import time

import pytest

from conftest import create_topic, end_offsets, unique, wait_for

pytestmark = pytest.mark.timeout(180)


def run(kafka_bin, tool: str, *args: str, input: str | None = None, timeout: float = 90,
        check: bool = True) -> subprocess.CompletedProcess:
    cmd = [str(kafka_bin / tool), *args]
    try:
        r = subprocess.run(cmd, input=input, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                           timeout=timeout)
    except subprocess.TimeoutExpired as e:
        raise AssertionError(f"{tool} timed out after {timeout}s: {' '.join(cmd)}\n"
                             f"stdout:\n{e.stdout}\nstderr:\n{e.stderr}") from None
    if check:
        assert r.returncode == 0, (f"{tool} exited {r.returncode}: {' '.join(cmd)}\n"
                                   f"stdout:\n{r.stdout[-3000:]}\nstderr:\n{r.stderr[-3000:]}")
    return r


def topics(kafka_bin, broker, *args, **kw):
    return run(kafka_bin, "kafka-topics", "--bootstrap-server", broker.bootstrap, *args, **kw)


def describe_partition_count(kafka_bin, broker, topic: str) -> int:
    out = topics(kafka_bin, broker, "--describe", "--topic", topic).stdout
    m = re.search(r"PartitionCount:\s*(\d+)", out)
    assert m, f"no PartitionCount in kafka-topics --describe output:\n{out}"
    rows = re.findall(rf"Topic:\s*{re.escape(topic)}\s+Partition:\s*(\d+)\s+Leader:\s*(-?\d+)", out)
    assert len(rows) == int(m.group(1)), f"PartitionCount {m.group(1)} but {len(rows)} partition rows:\n{out}"
    assert all(leader == "1" for _, leader in rows), f"partitions without leader 1:\n{out}"
    return int(m.group(1))


def test_topics_lifecycle(broker, kafka_bin):
    t = unique("cli-topic")
    out = topics(kafka_bin, broker, "--create", "--topic", t, "--partitions", "3", "--replication-factor", "1").stdout
    assert f"Created topic {t}." in out, out
    listed = topics(kafka_bin, broker, "--list").stdout.split()
    assert t in listed, f"{t} missing from --list: {listed}"
    assert describe_partition_count(kafka_bin, broker, t) == 3

    # Creating it again fails with TopicExistsException.
    r = topics(kafka_bin, broker, "--create", "--topic", t, "--partitions", "3", check=False)
    assert r.returncode != 0 and "already exists" in (r.stdout + r.stderr), r.stdout + r.stderr

    topics(kafka_bin, broker, "--alter", "--topic", t, "--partitions", "5")
    wait_for(lambda: describe_partition_count(kafka_bin, broker, t) == 5, 30, f"{t} to have 5 partitions")

    # Shrinking is refused.
    r = topics(kafka_bin, broker, "--alter", "--topic", t, "--partitions", "2", check=False)
    assert r.returncode != 0, f"partition decrease was accepted:\n{r.stdout}"

    topics(kafka_bin, broker, "--delete", "--topic", t)
    wait_for(lambda: t not in topics(kafka_bin, broker, "--list").stdout.split(), 30, f"{t} to disappear")
    r = topics(kafka_bin, broker, "--describe", "--topic", t, check=False)
    assert r.returncode != 0, f"--describe of a deleted topic succeeded:\n{r.stdout}"


def consumer_groups(kafka_bin, broker, *args, **kw):
    return run(kafka_bin, "kafka-consumer-groups", "--bootstrap-server", broker.bootstrap, *args, **kw)


def group_rows(kafka_bin, broker, group: str) -> dict[int, tuple[int, int]]:
    """partition -> (current offset, log end offset) from kafka-consumer-groups --describe."""
    out = consumer_groups(kafka_bin, broker, "--describe", "--group", group).stdout
    rows = {}
    for line in out.splitlines():
        f = line.split()
        # GROUP TOPIC PARTITION CURRENT-OFFSET LOG-END-OFFSET LAG CONSUMER-ID HOST CLIENT-ID
        if len(f) >= 6 and f[0] == group and f[2].isdigit():
            cur = int(f[3]) if f[3].isdigit() else -1
            rows[int(f[2])] = (cur, int(f[4]))
    assert rows, f"no partition rows for {group}:\n{out}"
    return rows


def test_console_producer_consumer_and_groups(broker, kafka_bin):
    t, g = unique("cli-console"), unique("cli-group")
    create_topic(broker.bootstrap, t, 3)
    lines = [f"k{i % 7}:value-{i}" for i in range(60)]
    run(kafka_bin, "kafka-console-producer", "--bootstrap-server", broker.bootstrap, "--topic", t,
        "--reader-property", "parse.key=true", "--reader-property", "key.separator=:",
        input="\n".join(lines) + "\n")
    assert sum(end_offsets(broker.bootstrap, t, 3).values()) == 60

    def consume(*extra):
        r = run(kafka_bin, "kafka-console-consumer", "--bootstrap-server", broker.bootstrap, "--topic", t,
                "--group", g, "--max-messages", "60", "--timeout-ms", "30000",
                "--formatter-property", "print.key=true", "--formatter-property", "key.separator=:", *extra)
        return r.stdout.splitlines()

    got = consume("--from-beginning")
    assert sorted(got) == sorted(lines), f"console consumer got {len(got)} lines, e.g. {got[:5]}"

    listed = consumer_groups(kafka_bin, broker, "--list").stdout.split()
    assert g in listed, f"{g} not in kafka-consumer-groups --list: {listed}"
    rows = group_rows(kafka_bin, broker, g)
    assert set(rows) == {0, 1, 2}, rows
    assert all(cur == end for cur, end in rows.values()), f"committed != log end after consuming all: {rows}"
    assert sum(end for _, end in rows.values()) == 60

    out = consumer_groups(kafka_bin, broker, "--reset-offsets", "--group", g, "--topic", t,
                          "--to-earliest", "--execute").stdout
    new_offsets = [line.split() for line in out.splitlines() if line.split()[:2] == [g, t]]
    assert len(new_offsets) == 3 and all(f[-1] == "0" for f in new_offsets), out
    rows = group_rows(kafka_bin, broker, g)
    assert all(cur == 0 for cur, _ in rows.values()), f"offsets not reset to 0: {rows}"

    # The group now re-reads everything without --from-beginning.
    again = consume()
    assert sorted(again) == sorted(lines), f"after reset got {len(again)} lines"

    r = consumer_groups(kafka_bin, broker, "--delete", "--group", g)
    assert "was successful" in r.stdout, r.stdout
    wait_for(lambda: g not in consumer_groups(kafka_bin, broker, "--list").stdout.split(), 30, f"{g} deleted")


def configs(kafka_bin, broker, *args, **kw):
    return run(kafka_bin, "kafka-configs", "--bootstrap-server", broker.bootstrap, *args, **kw)


def test_configs(broker, kafka_bin):
    t = unique("cli-configs")
    create_topic(broker.bootstrap, t, 1)
    out = configs(kafka_bin, broker, "--describe", "--entity-type", "topics", "--entity-name", t).stdout
    assert f"Dynamic configs for topic {t} are:" in out, out
    assert "retention.ms=" not in out, f"fresh topic already has a dynamic retention.ms:\n{out}"

    configs(kafka_bin, broker, "--alter", "--entity-type", "topics", "--entity-name", t,
            "--add-config", "retention.ms=123456789,cleanup.policy=delete")

    def has_it():
        o = configs(kafka_bin, broker, "--describe", "--entity-type", "topics", "--entity-name", t).stdout
        return "retention.ms=123456789" in o and "cleanup.policy=delete" in o
    wait_for(has_it, 30, "retention.ms=123456789 in kafka-configs --describe")

    # Cross-check through a different client's DescribeConfigs.
    from confluent_kafka.admin import AdminClient, ConfigResource
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    res = ConfigResource(ConfigResource.Type.TOPIC, t)
    entries = admin.describe_configs([res])[res].result(30)
    assert entries["retention.ms"].value == "123456789"
    assert entries["segment.bytes"].value is not None and int(entries["segment.bytes"].value) > 0

    configs(kafka_bin, broker, "--alter", "--entity-type", "topics", "--entity-name", t,
            "--delete-config", "retention.ms")
    wait_for(lambda: "retention.ms=123456789" not in configs(
        kafka_bin, broker, "--describe", "--entity-type", "topics", "--entity-name", t).stdout,
        30, "retention.ms override removed")

    # Invalid values are rejected.
    r = configs(kafka_bin, broker, "--alter", "--entity-type", "topics", "--entity-name", t,
                "--add-config", "retention.ms=not-a-number", check=False)
    assert r.returncode != 0, f"retention.ms=not-a-number accepted:\n{r.stdout}"

    out = configs(kafka_bin, broker, "--describe", "--entity-type", "brokers", "--entity-name", "1").stdout
    assert "configs for broker 1 are:" in out, out
    out = configs(kafka_bin, broker, "--describe", "--entity-type", "brokers", "--entity-default").stdout
    assert "Default configs for brokers in the cluster are:" in out, out
    out = configs(kafka_bin, broker, "--describe", "--all", "--entity-type", "brokers", "--entity-name", "1").stdout
    for key in ("num.partitions=1", "auto.create.topics.enable=true", "log.dirs="):
        assert key in out, f"{key} missing from kafka-configs --describe --all for broker 1:\n{out[:3000]}"

    # A cluster-wide dynamic default in hours: described as set, in effect in milliseconds.
    configs(kafka_bin, broker, "--alter", "--entity-type", "brokers", "--entity-default",
            "--add-config", "log.retention.hours=170")
    try:
        wait_for(lambda: "log.retention.hours=170" in configs(
            kafka_bin, broker, "--describe", "--entity-type", "brokers", "--entity-default").stdout,
            30, "log.retention.hours=170 in the cluster default, as set")
        wait_for(lambda: "retention.ms=612000000" in configs(
            kafka_bin, broker, "--describe", "--all", "--entity-type", "topics", "--entity-name", t).stdout,
            30, "retention.ms=612000000 (170 h) in effect for the topic")
    finally:
        configs(kafka_bin, broker, "--alter", "--entity-type", "brokers", "--entity-default",
                "--delete-config", "log.retention.hours")


def test_broker_api_versions(broker, kafka_bin):
    out = run(kafka_bin, "kafka-broker-api-versions", "--bootstrap-server", broker.bootstrap).stdout
    assert re.search(rf"{re.escape(broker.bootstrap)} \(id: 1 rack: null", out), out
    problems = []
    for api in ("Produce(0)", "Fetch(1)", "ListOffsets(2)", "Metadata(3)", "OffsetCommit(8)", "OffsetFetch(9)",
                "FindCoordinator(10)", "JoinGroup(11)", "Heartbeat(12)", "LeaveGroup(13)", "SyncGroup(14)",
                "DescribeGroups(15)", "ListGroups(16)", "ApiVersions(18)", "CreateTopics(19)", "DeleteTopics(20)",
                "InitProducerId(22)", "DescribeConfigs(32)", "AlterConfigs(33)", "CreatePartitions(37)",
                "DeleteGroups(42)", "IncrementalAlterConfigs(44)"):
        line = next((ln for ln in out.splitlines() if ln.strip().startswith(api)), None)
        if line is None:
            problems.append(f"{api} missing")
        elif "usable:" not in line or "UNSUPPORTED" in line:
            problems.append(line.strip())
    assert not problems, ("APIs a 4.3.1 Java client cannot use:\n  " + "\n  ".join(problems)
                          + f"\nfull kafka-broker-api-versions output:\n{out}")


def test_java_producer_perf_and_consumer_perf(broker, kafka_bin):
    """Java producer with its default settings (acks=all, idempotence on) via kafka-producer-perf-test."""
    t = unique("cli-perf")
    create_topic(broker.bootstrap, t, 3)
    n = 50_000
    out = run(kafka_bin, "kafka-producer-perf-test", "--topic", t, "--num-records", str(n), "--record-size", "200",
              "--throughput", "-1", "--producer-props", f"bootstrap.servers={broker.bootstrap}").stdout
    final = out.strip().splitlines()[-1]
    m = re.match(r"(\d+) records sent, .* records/sec .*, ([\d.]+) ms avg latency", final)
    assert m and int(m.group(1)) == n, f"unexpected perf-test summary: {final!r}\n{out[-2000:]}"
    assert sum(end_offsets(broker.bootstrap, t, 3).values()) == n

    # The Java client's own batch encoding with each codec (the consumer below checks every CRC).
    for codec in ("gzip", "snappy", "lz4", "zstd"):
        out = run(kafka_bin, "kafka-producer-perf-test", "--topic", t, "--num-records", "5000", "--record-size", "200",
                  "--throughput", "-1", "--producer-props", f"bootstrap.servers={broker.bootstrap}",
                  f"compression.type={codec}").stdout
        assert out.strip().splitlines()[-1].startswith("5000 records sent"), f"{codec}: {out[-1000:]}"
    n += 4 * 5000

    offs = run(kafka_bin, "kafka-get-offsets", "--bootstrap-server", broker.bootstrap, "--topic", t).stdout
    counted = sum(int(line.rsplit(":", 1)[1]) for line in offs.split() if line.startswith(f"{t}:"))
    assert counted == n, f"kafka-get-offsets sums to {counted}, expected {n}:\n{offs}"

    out = run(kafka_bin, "kafka-consumer-perf-test", "--bootstrap-server", broker.bootstrap, "--topic", t,
              "--num-records", str(n), "--timeout", "30000").stdout
    # header: start.time, end.time, data.consumed.in.MB, MB.sec, data.consumed.in.nMsg, nMsg.sec, ...
    lines = [ln for ln in out.splitlines() if ln.strip()]
    hdr_at = next((i for i, ln in enumerate(lines) if ln.startswith("start.time")), None)
    assert hdr_at is not None and hdr_at + 1 < len(lines), out
    header = [h.strip() for h in lines[hdr_at].split(",")]
    assert "data.consumed.in.nMsg" in header, out
    row = [v.strip() for v in lines[-1].split(",")]
    consumed = int(row[header.index("data.consumed.in.nMsg")])
    assert consumed >= n, f"kafka-consumer-perf-test consumed {consumed} of {n}:\n{out}"


def test_java_verifiable_producer(broker, kafka_bin):
    t = unique("cli-verifiable")
    n = 2000
    # Auto-created topic (auto.create.topics.enable=true, num.partitions=1).
    out = run(kafka_bin, "kafka-verifiable-producer", "--bootstrap-server", broker.bootstrap, "--topic", t,
              "--max-messages", str(n), "--acks", "-1").stdout
    events = [json.loads(ln) for ln in out.splitlines() if ln.startswith("{")]
    ok = [e for e in events if e.get("name") == "producer_send_success"]
    errors = [e for e in events if e.get("name") == "producer_send_error"]
    assert not errors, f"{len(errors)} send errors, first: {errors[0]}"
    assert len(ok) == n, f"{len(ok)} of {n} sends acknowledged"
    offsets = sorted((e["partition"], e["offset"]) for e in ok)
    assert offsets == [(0, i) for i in range(n)], "acknowledged offsets are not 0..n-1 on partition 0"
    tool_data = [e for e in events if e.get("name") == "tool_data"]
    assert tool_data and tool_data[-1]["acked"] == n, tool_data
    assert end_offsets(broker.bootstrap, t, 1) == {0: n}
