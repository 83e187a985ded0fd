"""Transactions (KIP-98) as clients use them: librdkafka's transactional producer and
read_committed consumer (confluent-kafka), and the Java client through Kafka's own tools.

  test_committed_and_aborted_transactions   three transactions (commit, abort, commit) over
      three partitions: a read_committed consumer gets exactly the committed records, in order,
      and no control record; a read_uncommitted one gets all of them.
  test_an_open_transaction_holds_back_read_committed   records of an open transaction are
      visible to read_uncommitted only; the last stable offset (ListOffsets read_committed) stays
      at the transaction's first offset until the commit.
  test_consume_transform_produce_is_exactly_once   a consume-transform-produce loop commits its
      input offsets inside each transaction (AddOffsetsToTxn/TxnOffsetCommit) and aborts every
      third one (rewinding to the committed offsets): the output holds each input exactly once
      and the group's committed offsets end at the input's end.
  test_a_new_instance_fences_the_old_one   a second producer with the same transactional.id
      aborts the first one's open transaction and fences it: the first cannot commit, and none
      of its records are visible to read_committed.
  test_a_transaction_past_its_timeout_is_aborted   the coordinator aborts a transaction open
      longer than transaction.timeout.ms; its producer is fenced.
  test_java_transactional_producer_and_cli   kafka-producer-perf-test writes in transactions,
      kafka-console-consumer --isolation-level read_committed reads every record, and
      kafka-transactions list/describe show the transactional id, describe-producers the
      producer (DescribeProducers) and find-hanging no hanging transaction.
  test_java_transactional_message_copier   Kafka's own system-test tool
      (org.apache.kafka.tools.TransactionalMessageCopier): two copiers, one per input partition,
      copy 10,000 records in transactions of 100 with random aborts (a third of them), one copier
      SIGKILLed mid-way and restarted; read_committed output holds every input record exactly
      once, read_uncommitted shows the aborted copies were there.
"""
from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest
from confluent_kafka import (Consumer, ConsumerGroupTopicPartitions, IsolationLevel, KafkaError,
                             KafkaException, Producer, TopicPartition)
from confluent_kafka.admin import AdminClient, OffsetSpec

from conftest import Broker, create_topic, serve_module_broker, unique, wait_for

pytestmark = pytest.mark.timeout(240)


@pytest.fixture(scope="module")
def broker_proc(tmp_path_factory):
    # Timed-out transactions are looked for every 500 ms (Kafka's default is 10 s).
    b = Broker(tmp_path_factory.mktemp("broker-transactions"),
               extra={"transaction.abort.timed.out.transaction.cleanup.interval.ms": "500"})
    yield from serve_module_broker(b)


def txn_producer(bootstrap: str, txn_id: str, **extra) -> Producer:
    p = Producer({"bootstrap.servers": bootstrap, "transactional.id": txn_id, "linger.ms": 5, **extra})
    p.init_transactions(30)
    return p


def read_all(bootstrap: str, topic: str, partitions: int, isolation: str, expect: int | None = None,
             timeout: float = 30) -> list[tuple[int, int, bytes]]:
    """Reads every partition from the start: (partition, offset, value) in arrival order.
    Stops at `expect` records, or after 3 s with nothing new."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": unique("reader"),
                  "isolation.level": isolation, "enable.auto.commit": False,
                  "auto.offset.reset": "earliest"})
    c.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
    out: list[tuple[int, int, bytes]] = []
    deadline = time.time() + timeout
    quiet_since = time.time()
    try:
        while time.time() < deadline:
            m = c.poll(0.2)
            if m is None:
                if expect is None and time.time() - quiet_since > 3:
                    break
                continue
            if m.error():
                if m.error().code() == KafkaError._PARTITION_EOF:
                    continue
                raise KafkaException(m.error())
            out.append((m.partition(), m.offset(), m.value()))
            quiet_since = time.time()
            if expect is not None and len(out) >= expect:
                # Linger briefly: anything beyond `expect` is a failure the caller sees.
                end = time.time() + 1.5
                while time.time() < end:
                    m = c.poll(0.2)
                    if m is not None and not m.error():
                        out.append((m.partition(), m.offset(), m.value()))
                break
    finally:
        c.close()
    return out


def test_committed_and_aborted_transactions(broker):
    topic = unique("txn")
    create_topic(broker.bootstrap, topic, 3)
    p = txn_producer(broker.bootstrap, unique("txn-id"))
    for label, commit in (("c1", True), ("a", False), ("c2", True)):
        p.begin_transaction()
        for i in range(30):
            p.produce(topic, b"%s-%d" % (label.encode(), i), key=b"k%d" % i)
        if commit:
            p.commit_transaction(30)
        else:
            p.flush(30)
            p.abort_transaction(30)
    committed = read_all(broker.bootstrap, topic, 3, "read_committed", expect=60)
    values = [v for _, _, v in committed]
    assert len(values) == 60, f"read_committed got {len(values)} records"
    assert not [v for v in values if v.startswith(b"a-")], "an aborted record was delivered"
    assert sorted(values) == sorted([b"c1-%d" % i for i in range(30)] + [b"c2-%d" % i for i in range(30)])
    # Per partition, offsets only grow (the markers in between are skipped, not delivered).
    for part in range(3):
        offs = [o for p_, o, _ in committed if p_ == part]
        assert offs == sorted(offs) and len(set(offs)) == len(offs)
    everything = read_all(broker.bootstrap, topic, 3, "read_uncommitted", expect=90)
    assert len(everything) == 90, f"read_uncommitted got {len(everything)} records"
    assert sum(1 for _, _, v in everything if v.startswith(b"a-")) == 30


def last_stable_offsets(bootstrap: str, topic: str, partitions: int, isolation) -> dict[int, int]:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    req = {TopicPartition(topic, p): OffsetSpec.latest() for p in range(partitions)}
    res = admin.list_offsets(req, isolation_level=isolation)
    return {tp.partition: f.result(30).offset for tp, f in res.items()}


def test_an_open_transaction_holds_back_read_committed(broker):
    topic = unique("txn-open")
    create_topic(broker.bootstrap, topic, 1)
    plain = Producer({"bootstrap.servers": broker.bootstrap})
    for i in range(5):
        plain.produce(topic, b"plain-%d" % i)
    assert plain.flush(30) == 0
    p = txn_producer(broker.bootstrap, unique("txn-open-id"))
    p.begin_transaction()
    for i in range(7):
        p.produce(topic, b"open-%d" % i)
    assert p.flush(30) == 0
    # The open transaction starts at offset 5: read_committed stops there.
    wait_for(lambda: last_stable_offsets(broker.bootstrap, topic, 1, IsolationLevel.READ_UNCOMMITTED)[0] == 12,
             30, "high watermark 12")
    assert last_stable_offsets(broker.bootstrap, topic, 1, IsolationLevel.READ_COMMITTED)[0] == 5
    got = [v for _, _, v in read_all(broker.bootstrap, topic, 1, "read_committed")]
    assert got == [b"plain-%d" % i for i in range(5)], got
    got = [v for _, _, v in read_all(broker.bootstrap, topic, 1, "read_uncommitted", expect=12)]
    assert len(got) == 12
    p.commit_transaction(30)
    # The commit marker takes offset 12; everything is stable now.
    wait_for(lambda: last_stable_offsets(broker.bootstrap, topic, 1, IsolationLevel.READ_COMMITTED)[0] == 13,
             30, "last stable offset 13 after the commit")
    got = [v for _, _, v in read_all(broker.bootstrap, topic, 1, "read_committed", expect=12)]
    assert got == [b"plain-%d" % i for i in range(5)] + [b"open-%d" % i for i in range(7)]


def test_consume_transform_produce_is_exactly_once(broker):
    source, sink, group = unique("eos-in"), unique("eos-out"), unique("eos-group")
    create_topic(broker.bootstrap, source, 2)
    create_topic(broker.bootstrap, sink, 2)
    plain = Producer({"bootstrap.servers": broker.bootstrap, "enable.idempotence": True})
    for i in range(120):
        plain.produce(source, b"%d" % i, key=b"%d" % i)
    assert plain.flush(30) == 0
    c = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": group, "enable.auto.commit": False,
                  "auto.offset.reset": "earliest", "isolation.level": "read_committed"})
    c.subscribe([source])
    p = txn_producer(broker.bootstrap, unique("eos-id"))
    seen = 0
    round_no = 0
    deadline = time.time() + 120
    done_total = 0
    try:
        while done_total < 120 and time.time() < deadline:
            batch = c.consume(num_messages=25, timeout=1.0)
            batch = [m for m in batch if not m.error()]
            if not batch:
                continue
            round_no += 1
            p.begin_transaction()
            for m in batch:
                p.produce(sink, b"out-" + m.value(), key=m.key())
            p.send_offsets_to_transaction(c.position(c.assignment()), c.consumer_group_metadata(), 30)
            if round_no % 3 == 0:
                p.abort_transaction(30)
                # Start again from what the group committed.
                committed = c.committed(c.assignment(), timeout=30)
                for tp in committed:
                    c.seek(TopicPartition(tp.topic, tp.partition, tp.offset if tp.offset >= 0 else 0))
            else:
                p.commit_transaction(30)
                done_total += len(batch)
            seen += len(batch)
    finally:
        c.close()
    assert done_total == 120, f"committed {done_total} of 120 inputs in time"
    assert seen > 120, "no transaction was aborted (the test must abort some)"
    out = read_all(broker.bootstrap, sink, 2, "read_committed", expect=120)
    values = sorted(v for _, _, v in out)
    assert values == sorted(b"out-%d" % i for i in range(120)), \
        f"{len(values)} outputs, {len(set(values))} distinct"
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    res = admin.list_consumer_group_offsets([ConsumerGroupTopicPartitions(group)])[group].result(30)
    assert sum(tp.offset for tp in res.topic_partitions) == 120, res.topic_partitions


def test_a_new_instance_fences_the_old_one(broker):
    topic, txn_id = unique("txn-fence"), unique("txn-fence-id")
    create_topic(broker.bootstrap, topic, 1)
    old = txn_producer(broker.bootstrap, txn_id)
    old.begin_transaction()
    for i in range(5):
        old.produce(topic, b"zombie-%d" % i)
    assert old.flush(30) == 0
    new = txn_producer(broker.bootstrap, txn_id)
    new.begin_transaction()
    new.produce(topic, b"fresh")
    new.commit_transaction(30)
    with pytest.raises(KafkaException) as raised:
        old.produce(topic, b"zombie-late")
        old.commit_transaction(30)
    err = raised.value.args[0]
    assert err.fatal() or err.code() in (KafkaError._FENCED, KafkaError.PRODUCER_FENCED,
                                         KafkaError.INVALID_PRODUCER_EPOCH), str(err)
    got = [v for _, _, v in read_all(broker.bootstrap, topic, 1, "read_committed", expect=1)]
    assert got == [b"fresh"], got


def test_a_transaction_past_its_timeout_is_aborted(broker):
    topic = unique("txn-timeout")
    create_topic(broker.bootstrap, topic, 1)
    p = txn_producer(broker.bootstrap, unique("txn-timeout-id"), **{"transaction.timeout.ms": 2000})
    p.begin_transaction()
    p.produce(topic, b"late")
    assert p.flush(30) == 0
    # The coordinator aborts it and writes the abort marker: the partition is stable again.
    wait_for(lambda: last_stable_offsets(broker.bootstrap, topic, 1, IsolationLevel.READ_COMMITTED)[0] == 2,
             30, "the abort marker after the timeout")
    with pytest.raises(KafkaException):
        p.commit_transaction(30)
    assert read_all(broker.bootstrap, topic, 1, "read_committed") == []


def run_tool(kafka_bin, tool: str, *args: str, timeout: float = 120) -> str:
    r = subprocess.run([str(kafka_bin / tool), *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       text=True, timeout=timeout)
    assert r.returncode == 0, f"{tool} exited {r.returncode}:\n{r.stdout[-2000:]}\n{r.stderr[-2000:]}"
    return r.stdout


def test_java_transactional_producer_and_cli(broker, kafka_bin):
    topic, txn_id = unique("txn-java"), unique("txn-java-id")
    create_topic(broker.bootstrap, topic, 3)
    run_tool(kafka_bin, "kafka-producer-perf-test", "--topic", topic, "--num-records", "3000",
             "--record-size", "100", "--throughput", "-1", "--transactional-id", txn_id,
             "--transaction-duration-ms", "200",
             "--producer-props", f"bootstrap.servers={broker.bootstrap}")
    out = run_tool(kafka_bin, "kafka-console-consumer", "--bootstrap-server", broker.bootstrap,
                   "--topic", topic, "--from-beginning", "--isolation-level", "read_committed",
                   "--max-messages", "3000", "--timeout-ms", "30000")
    assert len(out.splitlines()) == 3000
    listed = run_tool(kafka_bin, "kafka-transactions", "--bootstrap-server", broker.bootstrap, "list")
    line = next((l for l in listed.splitlines() if l.split() and l.split()[0] == txn_id), None)
    assert line is not None, listed
    assert "CompleteCommit" in line, line
    described = run_tool(kafka_bin, "kafka-transactions", "--bootstrap-server", broker.bootstrap,
                         "describe", "--transactional-id", txn_id)
    assert txn_id in described and "CompleteCommit" in described, described
    # Every partition leader that holds the producer's records knows it (DescribeProducers),
    # with no open transaction. (The sticky partitioner may leave a partition without records:
    # that one knows no producer.)
    ends = last_stable_offsets(broker.bootstrap, topic, 3, IsolationLevel.READ_UNCOMMITTED)
    assert sum(1 for end in ends.values() if end > 0) >= 2, ends
    for partition, end in ends.items():
        producers = run_tool(kafka_bin, "kafka-transactions", "--bootstrap-server", broker.bootstrap,
                             "describe-producers", "--topic", topic, "--partition", str(partition))
        rows = [l.split() for l in producers.splitlines()[1:] if l.split()]
        assert bool(rows) == (end > 0), f"partition {partition} ends at {end}:\n{producers}"
        assert all(r[-1] == "None" for r in rows), producers
    # No partition holds a transaction its coordinator does not know.
    hanging = run_tool(kafka_bin, "kafka-transactions", "--bootstrap-server", broker.bootstrap,
                       "find-hanging", "--broker-id", "1")
    assert len([l for l in hanging.splitlines()[1:] if l.strip()]) == 0, hanging


def test_an_open_transaction_survives_a_broker_crash(broker):
    """SIGKILL the broker while a transaction is open (its records written, not committed):
    after the restart the partition still holds the transaction back from read_committed (the
    open transaction is recovered from the log), and the same producer's commit then makes
    exactly its records visible."""
    topic = unique("txn-crash")
    create_topic(broker.bootstrap, topic, 2)
    p = txn_producer(broker.bootstrap, unique("txn-crash-id"), **{"transaction.timeout.ms": 120000})
    p.begin_transaction()
    for i in range(40):
        p.produce(topic, b"pending-%d" % i, key=b"k%d" % i)
    assert p.flush(30) == 0
    broker.kill()
    broker.start()
    assert read_all(broker.bootstrap, topic, 2, "read_committed") == []
    ends = last_stable_offsets(broker.bootstrap, topic, 2, IsolationLevel.READ_UNCOMMITTED)
    assert sum(ends.values()) == 40, ends
    assert sum(last_stable_offsets(broker.bootstrap, topic, 2, IsolationLevel.READ_COMMITTED).values()) == 0
    p.commit_transaction(60)
    got = sorted(v for _, _, v in read_all(broker.bootstrap, topic, 2, "read_committed", expect=40))
    assert got == sorted(b"pending-%d" % i for i in range(40))


def copier(kafka_bin: Path, bootstrap: str, source: str, partition: int, target: str,
           group: str, log: Path) -> subprocess.Popen:
    """Kafka's TransactionalMessageCopier for one input partition (random aborts on), its
    status lines (JSON) going to `log`."""
    libs = kafka_bin.parent / "libs"
    return subprocess.Popen(
        ["java", "-Xmx256m", "-cp", f"{libs}/*", "org.apache.kafka.tools.TransactionalMessageCopier",
         "--broker-list", bootstrap, "--input-topic", source, "--input-partition", str(partition),
         "--output-topic", target, "--consumer-group", group, "--transaction-size", "100",
         "--transactional-id", f"{group}-copier-{partition}", "--enable-random-aborts",
         "--use-group-metadata",
         # The tool reads its position (OffsetFetch, require_stable) *before* initTransactions,
         # so a restarted copier waits until the killed one's transaction is aborted on its
         # timeout. With the default 60 s that raced the consumer's own 60 s API timeout.
         "--transaction-timeout", "10000"],
        stdout=log.open("w"), stderr=subprocess.STDOUT)


def copier_status(line: str) -> dict:
    try:
        status = json.loads(line)
    except ValueError:
        return {}
    return status if isinstance(status, dict) else {}


def copier_processed(log: Path) -> int:
    """Records the copier has committed so far, from its last status line."""
    done = 0
    for line in log.read_text(errors="replace").splitlines():
        done = max(done, copier_status(line).get("totalProcessed", 0))
    return done


def test_java_transactional_message_copier(broker, kafka_bin, tmp_path):
    source, target, group = unique("copier-in"), unique("copier-out"), unique("copier")
    create_topic(broker.bootstrap, source, 2)
    create_topic(broker.bootstrap, target, 2)
    total = 10000
    p = Producer({"bootstrap.servers": broker.bootstrap, "enable.idempotence": True, "linger.ms": 5})
    for i in range(total):
        p.produce(source, b"%d" % i, partition=i % 2)
    assert p.flush(30) == 0
    inputs = sorted(v for _, _, v in read_all(broker.bootstrap, source, 2, "read_committed", total))
    assert len(inputs) == total

    # Copier 0 is SIGKILLed once it committed part of its partition, then restarted: the new
    # instance fences the old transactional id and resumes from the committed offsets.
    logs = [tmp_path / "copier-0.log", tmp_path / "copier-1.log", tmp_path / "copier-0-again.log"]
    first = copier(kafka_bin, broker.bootstrap, source, 0, target, group, logs[0])
    other = copier(kafka_bin, broker.bootstrap, source, 1, target, group, logs[1])
    procs = [first, other]
    try:
        wait_for(lambda: copier_processed(logs[0]) >= 1500 or first.poll() is not None, 120,
                 "copier 0 to commit 1,500 records")
        assert first.poll() is None, f"copier 0 ended before it was killed:\n{logs[0].read_text()[-3000:]}"
        first.kill()
        first.wait(30)
        again = copier(kafka_bin, broker.bootstrap, source, 0, target, group, logs[2])
        procs.append(again)
        for proc, log in ((again, logs[2]), (other, logs[1])):
            proc.wait(180)
            text = log.read_text(errors="replace")
            assert proc.returncode == 0, text[-3000:]
            # Kafka 4.3's copier says "stage":"ShutdownComplete" (older ones "shutdown_complete").
            assert "ShutdownComplete" in text or "shutdown_complete" in text, text[-3000:]
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()

    committed = read_all(broker.bootstrap, target, 2, "read_committed", total)
    values = sorted(v for _, _, v in committed)
    assert len(values) == total, f"{len(values)} records committed, {total} copied"
    assert values == inputs, "the committed output is not exactly the input"
    uncommitted = read_all(broker.bootstrap, target, 2, "read_uncommitted")
    assert len(uncommitted) > total, "no aborted copy reached the log: the aborts were not exercised"
