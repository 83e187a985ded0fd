"""Real applications, unmodified, against the broker: Kafka Streams in exactly_once_v2 and
Kafka Connect in distributed mode (Apache Kafka 4.3.1's own jars, from Maven).

  test_streams_word_count_is_exact_across_a_crash   Kafka's WordCountDemo (a KTable count
      with a state store, a repartition topic and a compacted changelog) runs with
      processing.guarantee=exactly_once_v2 and commits every 100 ms. It is SIGKILLed while
      input is flowing, its local state is wiped, and it is started again: it restores the
      store from the changelog and carries on. The last count per word (read_committed) equals
      the true count, and no word's counts ever go backwards or repeat a value (a double count
      after the crash would).
  test_connect_distributed_runs_a_connector_across_a_worker_restart   a distributed Connect
      worker starts against the broker (it checks its config/offset/status topics are
      compacted), runs FileStreamSource from a file into a topic through its REST API, is
      SIGKILLed and restarted, and then the connector carries on from its committed offset:
      the topic holds every line of the file, none lost.
"""
from __future__ import annotations

import json
import os
import signal
import struct
import subprocess
import time
import urllib.request
from collections import Counter
from pathlib import Path

import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, ConfigResource

from conftest import Broker, create_topic, free_port, serve_module_broker, tail, unique, wait_for

pytestmark = pytest.mark.timeout(420)


@pytest.fixture(scope="module")
def broker_proc(tmp_path_factory):
    b = Broker(tmp_path_factory.mktemp("broker-applications"),
               extra={"log.cleaner.backoff.ms": "1000"})
    yield from serve_module_broker(b)


def spawn(cmd: list[str], log: Path, env: dict | None = None) -> subprocess.Popen:
    out = open(log, "ab")
    return subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})},
                            start_new_session=True)


def kill(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(30)


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            kill(proc)


# --------------------------------------------------------------------------------------------
# Kafka Streams
# --------------------------------------------------------------------------------------------

WORDS = [f"w{i}" for i in range(25)]
INPUT, OUTPUT = "streams-plaintext-input", "streams-wordcount-output"


def produce_lines(bootstrap: str, start: int, n: int, counts: Counter) -> None:
    p = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True, "linger.ms": 5})
    for i in range(start, start + n):
        words = [WORDS[(i * 7 + j * 3) % len(WORDS)] for j in range(1 + i % 4)]
        counts.update(words)
        p.produce(INPUT, " ".join(words).encode(), key=str(i).encode())
        if i % 50 == 0:
            p.poll(0)
    assert p.flush(60) == 0


def read_counts(bootstrap: str) -> dict[str, list[int]]:
    """Every count the app published, per word, in order (read_committed)."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": unique("wc-reader"),
                  "isolation.level": "read_committed", "enable.auto.commit": False,
                  "enable.partition.eof": True, "auto.offset.reset": "earliest"})
    c.assign([TopicPartition(OUTPUT, p, 0) for p in range(2)])
    seen: dict[str, list[int]] = {}
    at_end: set[int] = set()
    deadline = time.time() + 60
    try:
        while len(at_end) < 2 and time.time() < deadline:
            m = c.poll(0.5)
            if m is None:
                continue
            if m.error():
                if m.error().code() == KafkaError._PARTITION_EOF:
                    at_end.add(m.partition())
                    continue
                raise KafkaException(m.error())
            at_end.discard(m.partition())
            seen.setdefault(m.key().decode(), []).append(struct.unpack(">q", m.value())[0])
    finally:
        c.close()
    return seen


def test_streams_word_count_is_exact_across_a_crash(broker, kafka_bin, tmp_path):
    create_topic(broker.bootstrap, INPUT, 2)
    create_topic(broker.bootstrap, OUTPUT, 2)
    app_id = unique("wordcount")
    state = tmp_path / "state"
    props = tmp_path / "streams.properties"
    props.write_text("\n".join([
        f"bootstrap.servers={broker.bootstrap}",
        f"application.id={app_id}",
        "processing.guarantee=exactly_once_v2",
        f"state.dir={state}",
        "commit.interval.ms=100",
        "replication.factor=1",
        "num.stream.threads=1",
    ]) + "\n")
    log = tmp_path / "streams.log"
    env = {"KAFKA_HEAP_OPTS": "-Xmx384m"}
    counts: Counter = Counter()
    produce_lines(broker.bootstrap, 0, 400, counts)
    app = spawn([str(kafka_bin / "kafka-streams-wordcount"), str(props)], log, env)
    try:
        wait_for(lambda: sum(v[-1] for v in read_counts(broker.bootstrap).values()) > 0, 120,
                 "the first counts")
        # Kill it while input flows.
        produce_lines(broker.bootstrap, 400, 300, counts)
        time.sleep(1.0)
        kill(app)
        # Start again from nothing local: the store comes back from its changelog.
        subprocess.run(["rm", "-rf", str(state)], check=True)
        app = spawn([str(kafka_bin / "kafka-streams-wordcount"), str(props)], log, env)
        produce_lines(broker.bootstrap, 700, 300, counts)

        def exact() -> bool:
            seen = read_counts(broker.bootstrap)
            return {w: v[-1] for w, v in seen.items()} == dict(counts)
        try:
            wait_for(exact, 180, "exact word counts")
        except Exception:
            seen = read_counts(broker.bootstrap)
            last = {w: v[-1] for w, v in seen.items()}
            diff = {w: (last.get(w), counts[w]) for w in counts if last.get(w) != counts[w]}
            raise AssertionError(f"counts (got, expected) that differ: {diff}\n{tail(log, 60)}")
        assert app.poll() is None, f"the app died:\n{tail(log)}"
        for word, values in read_counts(broker.bootstrap).items():
            assert values == sorted(set(values)), f"{word}: counts went back or repeated: {values}"
        # The changelog behind the store is compacted, as Streams asked.
        admin = AdminClient({"bootstrap.servers": broker.bootstrap})
        changelogs = [t for t in admin.list_topics(timeout=30).topics if t.startswith(app_id) and t.endswith("-changelog")]
        assert changelogs, "no changelog topic"
        res = ConfigResource(ConfigResource.Type.TOPIC, changelogs[0])
        cfg = admin.describe_configs([res])[res].result(30)
        assert cfg["cleanup.policy"].value == "compact"
    finally:
        stop(app)


# --------------------------------------------------------------------------------------------
# Kafka Connect
# --------------------------------------------------------------------------------------------

def rest(port: int, method: str, path: str, body: dict | None = None) -> tuple[int, object]:
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", method=method,
                                 data=json.dumps(body).encode() if body is not None else None,
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            text = r.read().decode()
            return r.status, (json.loads(text) if text else None)
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()
    except OSError as e:
        return 0, str(e)


def count_records(bootstrap: str, topic: str) -> list[bytes]:
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": unique("connect-reader"),
                  "enable.auto.commit": False, "enable.partition.eof": True,
                  "auto.offset.reset": "earliest"})
    c.assign([TopicPartition(topic, 0, 0)])
    out = []
    deadline = time.time() + 30
    try:
        while time.time() < deadline:
            m = c.poll(0.5)
            if m is None:
                continue
            if m.error():
                if m.error().code() == KafkaError._PARTITION_EOF:
                    break
                raise KafkaException(m.error())
            out.append(m.value())
    finally:
        c.close()
    return out


def test_connect_distributed_runs_a_connector_across_a_worker_restart(broker, kafka_bin, tmp_path):
    group = unique("connect")
    port = free_port()
    props = tmp_path / "worker.properties"
    props.write_text("\n".join([
        f"bootstrap.servers={broker.bootstrap}",
        f"group.id={group}",
        f"config.storage.topic={group}-configs",
        f"offset.storage.topic={group}-offsets",
        f"status.storage.topic={group}-status",
        "config.storage.replication.factor=1",
        "offset.storage.replication.factor=1",
        "status.storage.replication.factor=1",
        "key.converter=org.apache.kafka.connect.storage.StringConverter",
        "value.converter=org.apache.kafka.connect.storage.StringConverter",
        "offset.flush.interval.ms=500",
        f"listeners=http://127.0.0.1:{port}",
        "plugin.discovery=only_scan",
    ]) + "\n")
    log = tmp_path / "connect.log"
    env = {"KAFKA_HEAP_OPTS": "-Xmx384m -Xms128m"}
    source = tmp_path / "lines.txt"
    source.write_text("".join(f"line-{i}\n" for i in range(200)))
    topic = unique("connect-lines")
    create_topic(broker.bootstrap, topic, 1)
    worker = spawn([str(kafka_bin / "connect-distributed"), str(props)], log, env)
    try:
        wait_for(lambda: rest(port, "GET", "/connectors")[0] == 200, 180,
                 f"the Connect REST API (log {log})")
        # Its internal topics are compacted (Connect refuses to run otherwise).
        admin = AdminClient({"bootstrap.servers": broker.bootstrap})
        for suffix in ("configs", "offsets", "status"):
            res = ConfigResource(ConfigResource.Type.TOPIC, f"{group}-{suffix}")
            cfg = admin.describe_configs([res])[res].result(30)
            assert cfg["cleanup.policy"].value == "compact", suffix
        status, body = rest(port, "POST", "/connectors", {
            "name": "lines",
            "config": {"connector.class": "org.apache.kafka.connect.file.FileStreamSourceConnector",
                       "tasks.max": "1", "file": str(source), "topic": topic},
        })
        assert status == 201, (status, body)
        wait_for(lambda: len(count_records(broker.bootstrap, topic)) == 200, 90, "200 lines in the topic")
        # Let an offset flush happen, then kill the worker without warning.
        time.sleep(2)
        kill(worker)
        with source.open("a") as f:
            f.write("".join(f"line-{i}\n" for i in range(200, 300)))
        worker = spawn([str(kafka_bin / "connect-distributed"), str(props)], log, env)
        wait_for(lambda: rest(port, "GET", "/connectors/lines/status")[0] == 200, 180,
                 "the connector back after the restart")
        wait_for(lambda: len(set(count_records(broker.bootstrap, topic))) == 300, 120,
                 f"all 300 lines (log {log})")
        got = count_records(broker.bootstrap, topic)
        assert set(got) == {b"line-%d" % i for i in range(300)}
        status, body = rest(port, "GET", "/connectors/lines/status")
        assert body["connector"]["state"] == "RUNNING", body
        assert all(t["state"] == "RUNNING" for t in body["tasks"]), body
    finally:
        stop(worker)
