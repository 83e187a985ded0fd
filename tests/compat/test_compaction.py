"""Log compaction (`cleanup.policy=compact`) as clients see it, with confluent-kafka (librdkafka).

  test_only_the_latest_value_of_each_key_remains   five rounds of updates to 20 keys, each round
      in its own segment (`segment.ms`), two keys deleted (tombstones) in the last round: once
      the cleaner has run, reading the topic from the start yields each live key once, with its
      latest value, at the offset it was produced at; the deleted keys' tombstones are what
      remains of them; offsets only grow (gaps, never renumbering).
"""
from __future__ import annotations

import time

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from conftest import Broker, create_topic, serve_module_broker, unique

pytestmark = pytest.mark.timeout(180)

KEYS = 20
ROUNDS = 5
DELETED = {"k3", "k7"}


@pytest.fixture(scope="module")
def broker_proc(tmp_path_factory):
    """This module's broker, with a short pause between compaction passes."""
    b = Broker(tmp_path_factory.mktemp("broker-compaction"), extra={"log.cleaner.backoff.ms": "500"})
    yield from serve_module_broker(b)


def read_all(bootstrap: str, topic: str) -> list[tuple[int, str, str | None]]:
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": unique("reader"), "enable.auto.commit": False})
    try:
        _, high = c.get_watermark_offsets(TopicPartition(topic, 0), timeout=10)
        c.assign([TopicPartition(topic, 0, 0)])
        out = []
        deadline = time.monotonic() + 30
        while (not out or out[-1][0] < high - 1) and time.monotonic() < deadline:
            m = c.poll(0.5)
            if m is None or m.error():
                continue
            out.append((m.offset(), m.key().decode(), None if m.value() is None else m.value().decode()))
        return out
    finally:
        c.close()


def test_only_the_latest_value_of_each_key_remains(broker):
    topic = unique("compacted")
    create_topic(broker.bootstrap, topic, 1, config={
        "cleanup.policy": "compact", "segment.ms": "1000", "min.cleanable.dirty.ratio": "0.01",
        "delete.retention.ms": "600000"})
    p = Producer({"bootstrap.servers": broker.bootstrap, "enable.idempotence": True, "linger.ms": 0})
    produced: dict[str, tuple[int, str | None]] = {}
    failed = []

    def delivered(err, msg):
        if err:
            failed.append(err)
        else:
            produced[msg.key().decode()] = (msg.offset(), None if msg.value() is None else msg.value().decode())

    for r in range(ROUNDS):
        for k in range(KEYS):
            key = f"k{k}"
            value = None if (r == ROUNDS - 1 and key in DELETED) else f"r{r}-{key}"
            p.produce(topic, value.encode() if value else None, key=key.encode(), on_delivery=delivered)
        assert p.flush(30) == 0 and not failed, f"produce failed: {failed[:3]}"
        # The next round lands in a new segment (rolled on the first append after segment.ms).
        time.sleep(1.2)
    # One more record rolls the last round out of the active segment, so all of it is cleanable.
    p.produce(topic, b"end", key=b"zz", on_delivery=delivered)
    assert p.flush(30) == 0 and not failed
    total = ROUNDS * KEYS + 1

    expected = sorted((o, k, v) for k, (o, v) in produced.items())
    deadline = time.monotonic() + 60
    seen = read_all(broker.bootstrap, topic)
    while len(seen) > len(expected) and time.monotonic() < deadline:
        time.sleep(1)
        seen = read_all(broker.bootstrap, topic)
    assert len(seen) < total, f"nothing was compacted: {len(seen)} of {total} records remain"
    assert seen == expected, (
        f"after compaction expected each key's latest record at its offset:\n"
        f"expected {expected[:6]}...\nread     {seen[:6]}...")
    offsets = [o for o, _, _ in seen]
    assert offsets == sorted(offsets) and len(set(offsets)) == len(offsets)
    assert {k for _, k, v in seen if v is None} == DELETED, "tombstones stay within delete.retention.ms"


def test_a_compacted_topic_refuses_records_without_a_key(broker):
    """Compaction keeps the latest record per key, so a keyless record could never go: Kafka
    refuses it (INVALID_RECORD), and so does fjord; a keyed record in the same topic is fine."""
    from confluent_kafka import KafkaError, Producer

    topic = unique("compact-keyless")
    create_topic(broker.bootstrap, topic, 1, {"cleanup.policy": "compact"})
    results = []
    p = Producer({"bootstrap.servers": broker.bootstrap, "message.send.max.retries": 0,
                  "enable.idempotence": False})
    p.produce(topic, b"no key", on_delivery=lambda e, _m: results.append(("keyless", e)))
    p.flush(30)
    p.produce(topic, b"keyed", key=b"k", on_delivery=lambda e, _m: results.append(("keyed", e)))
    p.flush(30)
    outcome = dict(results)
    assert outcome["keyless"] is not None and outcome["keyless"].code() == KafkaError.INVALID_RECORD, outcome
    assert outcome["keyed"] is None, outcome
