"""SIGKILL the broker under an idempotent acks=all producer; every acknowledged record must survive.

A background thread produces continuously with confluent-kafka (enable.idempotence=true, which
implies acks=all) and records every acknowledged (partition, offset, value). After a few seconds
the broker is killed with SIGKILL, restarted on the same data dir, and must come back ready. The
producer keeps going through the outage and must resume after the restart. Then every partition is
read back from offset 0:
  * every acknowledged record is at its acknowledged offset with its value,
  * offsets are contiguous from 0 to the log end (no holes from recovery),
  * no value is stored twice (idempotent retries across the crash are de-duplicated),
  * an offset commit acknowledged before the crash is still there after it.
"""
from __future__ import annotations

import threading
import time

import pytest

from conftest import create_topic, end_offsets, unique

PARTITIONS = 3


class ProducerThread(threading.Thread):
    def __init__(self, bootstrap: str, topic: str):
        super().__init__(daemon=True, name="crash-producer")
        from confluent_kafka import Producer
        self.p = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True, "acks": "all",
                           "linger.ms": 5, "message.timeout.ms": 90000, "request.timeout.ms": 10000,
                           "reconnect.backoff.max.ms": 500, "retry.backoff.max.ms": 500})
        self.topic = topic
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.acked: list[tuple[int, int, bytes, float]] = []
        self.errors: list[str] = []
        self.sent = 0
        self.fatal = None

    def _cb(self, err, msg):
        with self.lock:
            if err is None:
                self.acked.append((msg.partition(), msg.offset(), msg.value(), time.monotonic()))
            else:
                self.errors.append(f"{err} (fatal={err.fatal()}) for {msg.value()[:30]!r}")

    def run(self):
        seq = 0
        while not self.stop.is_set():
            # Bounded in-flight: while the broker is down, wait instead of queueing without limit.
            if len(self.p) > 5000:
                self.p.poll(0.05)
                continue
            try:
                self.p.produce(self.topic, key=b"k%d" % (seq % 64), value=b"crash-%08d" % seq, on_delivery=self._cb)
                seq += 1
                self.sent = seq
            except BufferError:
                self.p.poll(0.05)
                continue
            self.p.poll(0)
            if seq % 200 == 0:
                time.sleep(0.01)  # ~10-20k records/s; keeps CPU for the broker on 2 cores
        self.remaining = self.p.flush(60)

    def acked_count(self) -> int:
        with self.lock:
            return len(self.acked)


def read_all(bootstrap: str, topic: str, ends: dict[int, int]) -> dict[int, list[tuple[int, bytes]]]:
    from confluent_kafka import Consumer, TopicPartition
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": unique("crash-reader"),
                  "enable.auto.commit": False, "enable.partition.eof": True})
    out = {p: [] for p in ends}
    try:
        c.assign([TopicPartition(topic, p, 0) for p in ends])
        done = {p for p, e in ends.items() if e == 0}
        deadline = time.monotonic() + 60
        while len(done) < len(ends) and time.monotonic() < deadline:
            for m in c.consume(1000, 0.5):
                if m.error():
                    if m.error().code() == -191:  # _PARTITION_EOF: keep waiting until the end offset
                        continue
                    raise AssertionError(f"consume error: {m.error()}")
                out[m.partition()].append((m.offset(), m.value()))
                if m.offset() + 1 >= ends[m.partition()]:
                    done.add(m.partition())
        assert len(done) == len(ends), f"read back incomplete after 60s: {[(p, len(v)) for p, v in out.items()]} of {ends}"
        return out
    finally:
        c.close()


@pytest.mark.timeout(240)
def test_sigkill_keeps_acknowledged_records(broker):
    from confluent_kafka import Consumer, KafkaException, TopicPartition
    topic = unique("crash")
    create_topic(broker.bootstrap, topic, PARTITIONS)

    # An offset commit acknowledged before the crash must survive it.
    group = unique("crash-group")
    gc = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": group, "enable.auto.commit": False})
    gc.commit(offsets=[TopicPartition(topic, 1, 0)], asynchronous=False)
    gc.close()

    prod = ProducerThread(broker.bootstrap, topic)
    prod.start()
    try:
        t0 = time.monotonic()
        while prod.acked_count() < 5000 and time.monotonic() - t0 < 30:
            time.sleep(0.1)
        time.sleep(2.0)
        before_kill = prod.acked_count()
        assert before_kill >= 5000, f"only {before_kill} records acknowledged before the crash"
        assert not prod.errors, f"delivery errors before the crash: {prod.errors[:3]}"

        # Offset commit right before the kill.
        gc = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": group, "enable.auto.commit": False})
        gc.commit(offsets=[TopicPartition(topic, 1, 1234)], asynchronous=False)
        gc.close()

        broker.kill()
        killed_at = time.monotonic()
        time.sleep(1.0)
        broker.start()  # asserts readiness within 30 s (with the log tail on failure)
        ready_at = time.monotonic()

        # The idempotent producer must recover and get new records acknowledged.
        deadline = time.monotonic() + 45
        while time.monotonic() < deadline:
            with prod.lock:
                after = sum(1 for a in prod.acked if a[3] > ready_at)
            if after >= 2000 or prod.errors:
                break
            time.sleep(0.1)
    finally:
        prod.stop.set()
        prod.join(90)
    assert not prod.is_alive(), "producer thread did not finish (flush hung)"
    assert not prod.errors, f"{len(prod.errors)} delivery errors across the crash, first: {prod.errors[:3]}"
    assert prod.remaining == 0, f"{prod.remaining} records never delivered"
    acked = prod.acked
    after_restart = sum(1 for a in acked if a[3] > ready_at)
    assert after_restart >= 2000, f"producer resumed with only {after_restart} acks after the restart"

    ends = end_offsets(broker.bootstrap, topic, PARTITIONS)
    log = read_all(broker.bootstrap, topic, ends)
    for p, recs in log.items():
        offs = [o for o, _ in recs]
        assert offs == list(range(ends[p])), f"partition {p}: offsets not contiguous 0..{ends[p] - 1}"
    stored = {(p, o): v for p, recs in log.items() for o, v in recs}
    lost = [(p, o, v) for p, o, v, _ in acked if stored.get((p, o)) != v]
    assert not lost, (f"{len(lost)} of {len(acked)} acknowledged records missing or different after SIGKILL, "
                      f"e.g. {[(p, o, v, stored.get((p, o))) for p, o, v in lost[:5]]}; "
                      f"{sum(1 for a in acked if a[3] <= killed_at)} were acked before the kill")
    values = [v for v in stored.values()]
    dups = len(values) - len(set(values))
    assert dups == 0, f"{dups} values stored twice: idempotent retries across the crash were not de-duplicated"
    assert len(stored) >= len(acked)

    c = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": group, "enable.auto.commit": False})
    try:
        deadline = time.monotonic() + 30
        while True:  # NOT_COORDINATOR / COORDINATOR_LOAD_IN_PROGRESS right after restart: retry
            try:
                committed = c.committed([TopicPartition(topic, 1)], timeout=20)[0].offset
                break
            except KafkaException as e:
                if e.args[0].code() not in (14, 15, 16) and not e.args[0].retriable() or time.monotonic() > deadline:
                    raise
                time.sleep(0.3)
    finally:
        c.close()
    assert committed == 1234, f"offset commit acknowledged before SIGKILL reads back as {committed}"
